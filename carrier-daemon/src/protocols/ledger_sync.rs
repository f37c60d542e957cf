//! Ledger replication over the overlay (`/carrier/ledger/2.0.0`): plain async
//! functions over one stream per exchange, framed like every other stream.
//!
//! - When a link comes up, the peer's handshake carried its checkpoint; when
//!   our ledger grows, we announce ours to every linked peer.
//! - A checkpoint counts only once it verifies under the log key. If it is
//!   ahead of ours, we fetch the entries we lack in bounded batches, each
//!   with a consistency proof to that checkpoint, and apply a batch only
//!   if it proves out (`Ledger::extend`); every entry's signature and rules
//!   are checked too.
//! - Two validly signed checkpoints that cannot both be true are the
//!   sequencer's equivocation: we keep our view and raise the alarm with
//!   both notes as evidence. A forged or unsigned note is dropped quietly.
//! - Work per catch-up is bounded whatever a peer claims: the number of
//!   exchanges follows from the signed size, each exchange has a timeout,
//!   and the whole catch-up a deadline. One catch-up runs at a time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::ledger::{Comparison, SignedCheckpoint};
use carrier_proto::pb::{self, sync_request::Request};
use tokio::sync::{Mutex, broadcast};

use super::{Handling, PeerStream, ProtocolError, ProtocolHandler, Router};
use crate::framed::{FrameReader, FrameWriter};
use crate::ledger::{Equivocation, ExtendError, Ledger, proof_hashes, sync_entries};
use crate::link::LinkContext;
use crate::observe::Counters;
use crate::overlay::{Overlay, OverlayEvent};
use crate::tasks::Tasks;

/// The protocol name.
pub(crate) const PROTOCOL: &str = "/carrier/ledger/2.0.0";
/// Largest sync frame.
const MAX_FRAME: usize = 4 << 20;
/// Most entries in one answer.
const BATCH: u32 = 1024;
/// Most entry bytes in one answer (under the frame limit with room for the
/// proof and the note).
const BATCH_BYTES: usize = 3 << 20;
/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one catch-up may take in all.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(300);

/// Serves the exchanges peers open, and keeps our ledger and theirs in step.
#[derive(Debug)]
pub(crate) struct LedgerSync {
    ledger: Arc<dyn Ledger>,
    router: Router,
    counters: Arc<Counters>,
    /// Held by the one catch-up that runs at a time.
    catching_up: Mutex<()>,
}

impl LedgerSync {
    /// Replication of `ctx`'s ledger over `router`'s streams.
    pub(crate) fn new(ctx: &LinkContext, router: Router) -> Arc<Self> {
        Arc::new(Self {
            ledger: Arc::clone(&ctx.ledger),
            router,
            counters: Arc::clone(ctx.counters()),
            catching_up: Mutex::new(()),
        })
    }

    /// Registers the protocol and starts the task that catches up with
    /// peers that are ahead and announces our growth to all. `events`
    /// should be the overlay's first receiver, so no early link is missed.
    pub(crate) fn start(
        self: &Arc<Self>,
        ctx: Arc<LinkContext>,
        overlay: Overlay,
        events: broadcast::Receiver<OverlayEvent>,
        tasks: &Tasks,
    ) {
        self.router.register(PROTOCOL, Arc::clone(self) as Arc<dyn ProtocolHandler>);
        tasks.spawn_until_stop(Arc::clone(self).drive(ctx, overlay, events));
    }

    async fn drive(
        self: Arc<Self>,
        ctx: Arc<LinkContext>,
        overlay: Overlay,
        mut events: broadcast::Receiver<OverlayEvent>,
    ) {
        let mut updates = self.ledger.subscribe();
        let mut peers: HashSet<Did> = HashSet::new();
        let mut announced = self.ledger.checkpoint().map(|c| c.size()).unwrap_or(0);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(OverlayEvent::PeerUp(did)) => {
                        peers.insert(did);
                        self.peer_up(&ctx, did);
                    }
                    Ok(OverlayEvent::PeerDown(did)) => {
                        peers.remove(&did);
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Some link events were missed: take the peer list afresh.
                        tracing::debug!(missed, "ledger sync fell behind the overlay's events");
                        peers = overlay.peers().await.map(|p| p.into_iter().map(|p| p.did).collect()).unwrap_or_default();
                        for &did in &peers {
                            self.peer_up(&ctx, did);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                update = updates.recv() => match update {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        let Some(checkpoint) = self.ledger.checkpoint() else { continue };
                        if checkpoint.size() == announced {
                            continue;
                        }
                        announced = checkpoint.size();
                        self.announce(&peers, checkpoint);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Tells every peer our checkpoint; those behind fetch from us.
    fn announce(&self, peers: &HashSet<Did>, checkpoint: SignedCheckpoint) {
        let announce = pb::SyncRequest { request: Some(Request::Announce(checkpoint.note().to_vec())) };
        for &peer in peers {
            let (router, announce) = (self.router.clone(), announce.clone());
            self.router.handlers().spawn_until_stop(async move {
                let sent = async {
                    let stream = router.open(peer, PROTOCOL).await?;
                    write(stream, &announce).await
                };
                let sent = tokio::time::timeout(EXCHANGE_TIMEOUT, sent)
                    .await
                    .unwrap_or(Err(ProtocolError::Timeout("ledger announce")));
                if let Err(error) = sent {
                    tracing::debug!(%peer, %error, "ledger announce failed");
                }
            });
        }
    }

    /// A peer's link is up: act on the checkpoint its handshake carried.
    fn peer_up(self: &Arc<Self>, ctx: &LinkContext, did: Did) {
        let Some(note) = ctx.peer_checkpoint(&did) else { return };
        let sync = Arc::clone(self);
        self.router.handlers().spawn_until_stop(async move { sync.catch_up(did, &note).await });
    }

    /// Verifies `note` and, if it is ahead of ours, fetches from `peer`
    /// until we reach it; raises the alarm if it contradicts ours.
    async fn catch_up(&self, peer: Did, note: &[u8]) {
        let theirs = match assess(&*self.ledger, peer, note) {
            Assessment::Act(theirs) => *theirs,
            Assessment::Ignore(error) => {
                self.counters.count("ledger_checkpoints_refused");
                return tracing::debug!(%peer, %error, "ignoring a peer's checkpoint");
            }
            Assessment::Equivocation(equivocation) => return self.ledger.raise_alarm(*equivocation),
            Assessment::Nothing => return,
        };
        let _one_at_a_time = self.catching_up.lock().await;
        let caught_up = tokio::time::timeout(CATCH_UP_DEADLINE, self.fetch_until(peer, &theirs)).await;
        if caught_up.is_err() {
            tracing::warn!(%peer, size = theirs.size(), "ledger catch-up ran past its deadline; will retry on the next announce");
        }
    }

    async fn fetch_until(&self, peer: Did, theirs: &SignedCheckpoint) {
        let ledger = &*self.ledger;
        let start = ledger.head().height;
        // Each useful exchange brings at least one entry, and a batch at
        // most BATCH: this many rounds suffice for an honest peer.
        let rounds = theirs.size().saturating_sub(start) / u64::from(BATCH) + 2;
        for _ in 0..rounds {
            match ledger.compare(theirs) {
                Some(Comparison::Same) => {
                    // Same log; theirs may name the sequencer where ours does not.
                    if theirs.checkpoint().sequencer.is_some() {
                        ledger.adopt(theirs);
                    }
                    break;
                }
                None | Some(Comparison::Older) => break,
                Some(Comparison::Equivocation) => {
                    if let Some(ours) = ledger.checkpoint() {
                        let source = format!("peer {peer}");
                        ledger.raise_alarm(Equivocation { ours, theirs: theirs.clone(), source });
                    }
                    return;
                }
                Some(Comparison::Newer) => {}
            }
            let from = ledger.head().height;
            let reply = match self.fetch(peer, from, theirs.size()).await {
                Ok(reply) => reply,
                Err(error) => return tracing::debug!(%peer, %error, "ledger fetch failed"),
            };
            if reply.entries.is_empty() {
                return tracing::debug!(%peer, from, "peer served no entries for its own checkpoint");
            }
            let Some(proof) = proof_hashes(&reply.proof) else {
                return tracing::warn!(%peer, "peer sent a malformed Merkle proof");
            };
            match ledger.extend(from, &reply.entries, theirs, &proof) {
                Ok(applied) => tracing::info!(%peer, from, applied, "applied ledger entries from a peer"),
                Err(ExtendError::Moved) => {}
                Err(error) => {
                    self.counters.count("ledger_batches_refused");
                    return tracing::warn!(%peer, %error, "refused ledger entries from a peer");
                }
            }
        }
        let height = ledger.head().height;
        if height > start {
            tracing::info!(%peer, height, applied = height - start, "ledger caught up");
        }
    }

    async fn fetch(&self, peer: Did, from: u64, tree_size: u64) -> Result<pb::SyncEntries, ProtocolError> {
        let exchange = async {
            let stream = self.router.open(peer, PROTOCOL).await?;
            let fetch = pb::SyncRequest { request: Some(Request::Fetch(pb::Fetch { from, max: BATCH, tree_size })) };
            let stream = write(stream, &fetch).await?;
            read::<pb::SyncEntries>(stream).await
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await.unwrap_or(Err(ProtocolError::Timeout("ledger fetch")))
    }
}

/// What to do about a peer's checkpoint note.
#[derive(Debug)]
enum Assessment {
    /// Not signed by the log key (forged, unsigned, malformed): drop it.
    Ignore(carrier_proto::ledger::CheckpointError),
    /// Ours already, or older: nothing to fetch.
    Nothing,
    /// Signed, and it contradicts ours.
    Equivocation(Box<Equivocation>),
    /// Signed and ahead of ours (or of the same log; act on it).
    Act(Box<SignedCheckpoint>),
}

/// Checks `note` under the log key and against our checkpoint. Only a
/// validly signed note that contradicts ours is equivocation.
fn assess(ledger: &dyn Ledger, peer: Did, note: &[u8]) -> Assessment {
    let theirs = match ledger.verify_checkpoint(note) {
        Ok(theirs) => theirs,
        Err(error) => return Assessment::Ignore(error),
    };
    match (ledger.compare(&theirs), ledger.checkpoint()) {
        (Some(Comparison::Equivocation), Some(ours)) => {
            Assessment::Equivocation(Box::new(Equivocation { ours, theirs, source: format!("peer {peer}") }))
        }
        (Some(Comparison::Older) | None, _) => Assessment::Nothing,
        _ => Assessment::Act(Box::new(theirs)),
    }
}

/// Entries from `from` on, never past `tree_size` nor our log, with the
/// proof that they lead to it. Bounded whatever the request says.
fn serve(ledger: &dyn Ledger, fetch: pb::Fetch) -> pb::SyncEntries {
    sync_entries(ledger, fetch.from, u64::from(fetch.max.min(BATCH)), BATCH_BYTES, fetch.tree_size)
}

impl ProtocolHandler for LedgerSync {
    /// Answers one exchange a peer opened.
    fn handle(self: Arc<Self>, peer: Did, stream: PeerStream) -> Handling {
        Box::pin(async move {
            let (stream, request) = read_request(stream).await?;
            match request.request {
                Some(Request::Fetch(fetch)) => {
                    write(stream, &serve(&*self.ledger, fetch)).await?;
                    Ok(())
                }
                Some(Request::Announce(note)) => {
                    self.catch_up(peer, &note).await;
                    Ok(())
                }
                None => Err(ProtocolError::Violation("empty sync request".into())),
            }
        })
    }
}

/// Sends one message and ends our side of the stream; returns the stream
/// for the answer.
async fn write<M: prost::Message>(stream: PeerStream, message: &M) -> Result<PeerStream, ProtocolError> {
    let mut writer = FrameWriter::new(stream, MAX_FRAME);
    writer.send(message).await?;
    writer.shutdown().await?;
    Ok(writer.into_inner())
}

/// Reads the one message the peer sends.
async fn read<M: prost::Message + Default>(stream: PeerStream) -> Result<M, ProtocolError> {
    let mut reader = FrameReader::new(stream, MAX_FRAME);
    reader.read::<M>().await?.ok_or_else(|| ProtocolError::Violation("the stream ended before the message".into()))
}

/// Reads the request that opens an exchange; returns the stream for the answer.
async fn read_request(stream: PeerStream) -> Result<(PeerStream, pb::SyncRequest), ProtocolError> {
    let mut reader = FrameReader::new(stream, MAX_FRAME);
    let request = reader.read().await?.ok_or_else(|| ProtocolError::Violation("empty sync stream".into()))?;
    Ok((reader.into_parts().0, request))
}

#[cfg(test)]
#[path = "ledger_sync_tests.rs"]
mod tests;
