//! Ledger replication over the overlay (`/carrier/ledger/2.0.0`): plain async
//! functions over one stream per exchange, framed like every other stream.
//!
//! - When a link comes up, the peer's handshake carried its checkpoint; when
//!   our ledger grows, we announce ours to every linked peer.
//! - A checkpoint counts only once it verifies under the log key (and the
//!   network's witnesses). What to do about it is the catch-up machine's
//!   call (`carrier_proto::ledger::judge`): nothing, keep its note, fetch
//!   (proven to extend ours first, then in bounded batches, each with a
//!   consistency proof), or raise the alarm on two signed histories.
//! - A revocation request its author signed is passed to every linked peer
//!   (and to each new one) as soon as it is in force here, before the log
//!   holds it; each peer checks it against its own ledger.
//! - Evidence that the log key signed two histories is passed to every
//!   linked peer (and to each new one) once our ledger holds it; a peer's
//!   evidence is checked with the log key alone before it freezes ours.
//! - Evidence that the log broke a promise is passed on the same way, and
//!   checked with the network's log keys alone; it freezes nothing.
//! - Whatever a peer does, what it costs us is bounded: request frames fit
//!   a note, answers a batch; every read has a deadline; a peer has at most
//!   [`MAX_STREAMS_PER_PEER`] exchanges open with us; each peer has one
//!   catch-up at a time, at most [`MAX_CATCH_UPS`] run at once, each within
//!   [`CATCH_UP_DEADLINE`]. A peer that stalls holds only its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::ledger::{
    CatchUp, CheckpointError, EntryHash, Fetch, Judgement, MAX_BROKEN_PROMISE_SIZE, MAX_ENTRY_SIZE, MAX_EVIDENCE_SIZE,
    MAX_NOTE_SIZE, SignedCheckpoint,
};
use carrier_proto::pb::{self, sync_request::Request};
use tokio::sync::{Semaphore, broadcast};

use super::{Handling, PeerStream, ProtocolError, ProtocolHandler, Router};
use crate::framed::{FrameReader, FrameWriter};
use crate::ledger::{FollowError, Followed, Ledger, follow, sync_entries};
use crate::link::LinkContext;
use crate::observe::Counters;
use crate::overlay::{Overlay, OverlayEvent};
use crate::tasks::Tasks;

/// The protocol name.
pub(crate) const PROTOCOL: &str = "/carrier/ledger/2.0.0";
/// Most entries in one answer.
const BATCH: u32 = 512;
/// Most entry bytes in one answer (the first entry is always sent).
const BATCH_BYTES: usize = 256 << 10;
/// Largest request frame: a fetch, an announce carrying a note, evidence
/// (two notes and a proof), or a revocation request.
const REQUEST_FRAME: usize =
    max(max(max(MAX_EVIDENCE_SIZE, MAX_BROKEN_PROMISE_SIZE), MAX_NOTE_SIZE), LOGGED_CHANGE_SIZE) + 256;
/// Largest logged change: an entry, a note and an inclusion proof.
const LOGGED_CHANGE_SIZE: usize = MAX_ENTRY_SIZE + MAX_NOTE_SIZE + 64 * 34 + 64;

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}
/// Largest answer frame: a batch, the proofs (64 hashes each at most) and
/// a note.
const ANSWER_FRAME: usize = BATCH_BYTES + MAX_ENTRY_SIZE + MAX_NOTE_SIZE + 2 * 64 * 34 + 1024;
/// How long a peer may take to send its request once it opened a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one catch-up may take in all.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(120);
/// Exchanges one peer may have open with us at once; more are dropped.
pub(crate) const MAX_STREAMS_PER_PEER: usize = 4;
/// Catch-ups (each with another peer) that run at once.
pub(crate) const MAX_CATCH_UPS: usize = 4;

/// Serves the exchanges peers open, and keeps our ledger and theirs in step.
#[derive(Debug)]
pub(crate) struct LedgerSync {
    ledger: Arc<dyn Ledger>,
    router: Router,
    counters: Arc<Counters>,
    /// Exchanges each peer has open with us.
    streams: Mutex<HashMap<Did, usize>>,
    /// Peers we are catching up from (one catch-up each).
    catching_up: Mutex<HashSet<Did>>,
    /// The newest note each peer announced while we were catching up from
    /// it: judged again once that catch-up ends, so none is lost.
    deferred: Mutex<HashMap<Did, Vec<u8>>>,
    /// Each linked peer's latest checkpoint that a key we cannot check yet
    /// signed: judged again once a handover to that key is held here.
    unchecked: Mutex<HashMap<Did, Vec<u8>>>,
    /// Catch-ups running at once.
    catch_ups: Semaphore,
}

/// Holds one of a peer's stream (or catch-up) places; frees it on drop.
struct Place<'a> {
    sync: &'a LedgerSync,
    peer: Did,
    catch_up: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.catch_up {
            self.sync.catching_up.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.peer);
            return;
        }
        let mut streams = self.sync.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = streams.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.peer);
            }
        }
    }
}

impl LedgerSync {
    /// Replication of `ctx`'s ledger over `router`'s streams.
    pub(crate) fn new(ctx: &LinkContext, router: Router) -> Arc<Self> {
        Arc::new(Self {
            ledger: Arc::clone(&ctx.ledger),
            router,
            counters: Arc::clone(ctx.counters()),
            streams: Mutex::default(),
            catching_up: Mutex::default(),
            deferred: Mutex::default(),
            unchecked: Mutex::default(),
            catch_ups: Semaphore::new(MAX_CATCH_UPS),
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
        let mut announced = self.ledger.checkpoint().map(|c| c.note().to_vec()).unwrap_or_default();
        // The revocations and handovers held here that went to every linked peer.
        let mut revocations_sent: HashSet<EntryHash> = HashSet::new();
        // The broken promises that went to every linked peer.
        let mut promises_sent: HashSet<EntryHash> = HashSet::new();
        // Whether our evidence (if any) went to every linked peer; evidence
        // kept from before a restart goes to each peer as its link comes up.
        let mut spread = self.ledger.evidence().is_some();
        if spread {
            self.counters.count("ledger_frozen");
        }
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(OverlayEvent::PeerUp(did)) => {
                        peers.insert(did);
                        if let Some(fork) = self.ledger.evidence() {
                            self.send_evidence(&HashSet::from([did]), &fork);
                        }
                        for entry in self.ledger.revocations_in_force().iter().chain(&self.ledger.handovers_seen()) {
                            self.send_urgent(&HashSet::from([did]), entry);
                        }
                        // The trust changes our log holds go too, proven: a
                        // peer that was away checks our checkpoint with them.
                        self.send_logged_changes(did);
                        for broken in self.ledger.broken_promises() {
                            self.send_broken_promise(&HashSet::from([did]), &broken);
                        }
                        self.peer_up(&ctx, did);
                    }
                    Ok(OverlayEvent::PeerDown(did)) => {
                        peers.remove(&did);
                        self.unchecked.lock().unwrap_or_else(PoisonError::into_inner).remove(&did);
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
                        for entry in self.ledger.revocations_in_force().iter().chain(&self.ledger.handovers_seen()) {
                            if revocations_sent.insert(entry.hash()) {
                                self.send_urgent(&peers, entry);
                            }
                        }
                        for broken in self.ledger.broken_promises() {
                            if promises_sent.insert(broken.promise().leaf()) {
                                self.counters.count("ledger_promises_broken");
                                self.send_broken_promise(&peers, &broken);
                            }
                        }
                        if !spread && let Some(fork) = self.ledger.evidence() {
                            spread = true;
                            self.counters.count("ledger_frozen");
                            self.send_evidence(&peers, &fork);
                        }
                        let Some(checkpoint) = self.ledger.checkpoint() else { continue };
                        if checkpoint.note() == announced.as_slice() {
                            continue;
                        }
                        announced = checkpoint.note().to_vec();
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
        self.tell(peers, announce, "ledger announce");
    }

    /// Sends `request` to each of `peers` on a stream of its own.
    fn tell(&self, peers: &HashSet<Did>, request: pb::SyncRequest, what: &'static str) {
        let announce = request;
        for &peer in peers {
            let (router, announce) = (self.router.clone(), announce.clone());
            self.router.handlers().spawn_until_stop(async move {
                let sent = async {
                    let stream = router.open(peer, PROTOCOL).await?;
                    write(stream, &announce, REQUEST_FRAME).await
                };
                let sent =
                    tokio::time::timeout(EXCHANGE_TIMEOUT, sent).await.unwrap_or(Err(ProtocolError::Timeout(what)));
                if let Err(error) = sent {
                    tracing::debug!(%peer, %error, "{what} failed");
                }
            });
        }
    }

    /// A peer's link is up: act on the checkpoint its handshake carried
    /// (or, if our log awaits entries, on our own awaited checkpoint).
    fn peer_up(self: &Arc<Self>, ctx: &LinkContext, did: Did) {
        let Some(note) = ctx.peer_checkpoint(&did) else { return };
        self.consider(did, note);
    }

    /// Judges `note` from `peer` and, if it is ahead, catches up from that
    /// peer in a task of its own (one per peer at a time).
    fn consider(self: &Arc<Self>, peer: Did, note: Vec<u8>) {
        let catch_up = match self.ledger.judge(&note) {
            Ok(Judgement::Nothing) => return,
            Ok(Judgement::Adopt(theirs)) => return self.ledger.adopt(&theirs),
            Ok(Judgement::Fork(fork)) => return self.ledger.raise_alarm(&fork, &format!("peer {peer}")),
            Ok(Judgement::Fetch(catch_up)) => catch_up,
            Err(error) => {
                self.counters.count("ledger_checkpoints_refused");
                // Signed by a key we cannot check yet: kept, to judge again
                // once a handover to that key is held here.
                if matches!(
                    error,
                    CheckpointError::NotSigned | CheckpointError::BadSignature | CheckpointError::Unwitnessed { .. }
                ) {
                    self.unchecked.lock().unwrap_or_else(PoisonError::into_inner).insert(peer, note);
                }
                return tracing::debug!(%peer, %error, "ignoring a peer's checkpoint");
            }
        };
        if !self.catching_up.lock().unwrap_or_else(PoisonError::into_inner).insert(peer) {
            // One catch-up per peer: the running one goes on, and this note
            // is judged again when it ends.
            self.deferred.lock().unwrap_or_else(PoisonError::into_inner).insert(peer, note);
            return;
        }
        let sync = Arc::clone(self);
        self.router.handlers().spawn_until_stop(async move {
            sync.catch_up(peer, catch_up).await;
            let deferred = sync.deferred.lock().unwrap_or_else(PoisonError::into_inner).remove(&peer);
            if let Some(note) = deferred {
                sync.consider(peer, note);
            }
        });
    }

    /// Follows `catch_up` with `peer`'s answers, within the deadline; holds
    /// the peer's catch-up place until it returns.
    async fn catch_up(&self, peer: Did, catch_up: Box<CatchUp>) {
        let _place = Place { sync: self, peer, catch_up: true };
        let Ok(_permit) = self.catch_ups.acquire().await else { return };
        let size = catch_up.target().size();
        let ledger = Arc::clone(&self.ledger);
        let caught_up = follow(&*ledger, catch_up, |fetch| self.fetch(peer, fetch));
        match tokio::time::timeout(CATCH_UP_DEADLINE, caught_up).await {
            Ok(Ok(Followed::Reached(applied))) if applied > 0 => {
                tracing::info!(%peer, applied, height = ledger.head().height, "applied ledger entries from a peer");
            }
            Ok(Ok(Followed::Reached(_))) => {}
            Ok(Ok(Followed::Fork(fork))) => ledger.raise_alarm(&fork, &format!("peer {peer}")),
            Ok(Err(FollowError::Refused(error))) => {
                self.counters.count("ledger_batches_refused");
                tracing::warn!(%peer, %error, "refused ledger entries from a peer");
            }
            Ok(Err(error)) => tracing::debug!(%peer, %error, "ledger fetch failed"),
            Err(_) => {
                tracing::warn!(%peer, size, "ledger catch-up ran past its deadline; will retry on the next announce")
            }
        }
    }

    async fn fetch(&self, peer: Did, fetch: Fetch) -> Result<pb::SyncEntries, ProtocolError> {
        let exchange = async {
            let stream = self.router.open(peer, PROTOCOL).await?;
            let request =
                pb::Fetch { from: fetch.from, max: BATCH, tree_size: fetch.tree_size, prove_from: fetch.prove_from };
            let stream =
                write(stream, &pb::SyncRequest { request: Some(Request::Fetch(request)) }, REQUEST_FRAME).await?;
            read::<pb::SyncEntries>(stream, ANSWER_FRAME).await
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await.unwrap_or(Err(ProtocolError::Timeout("ledger fetch")))
    }

    /// Takes one of `peer`'s stream places, if it has one left.
    fn place(&self, peer: Did) -> Option<Place<'_>> {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let open = streams.entry(peer).or_insert(0);
        if *open >= MAX_STREAMS_PER_PEER {
            return None;
        }
        *open += 1;
        Some(Place { sync: self, peer, catch_up: false })
    }
}

/// Entries from `from` on, never past `tree_size` nor our log, with the
/// proofs asked for. Bounded whatever the request says.
fn serve(ledger: &dyn Ledger, fetch: pb::Fetch) -> pb::SyncEntries {
    let asked = Fetch { from: fetch.from, tree_size: fetch.tree_size, prove_from: fetch.prove_from };
    sync_entries(ledger, asked, u64::from(fetch.max.min(BATCH)), BATCH_BYTES)
}

impl ProtocolHandler for LedgerSync {
    /// Answers one exchange a peer opened.
    fn handle(self: Arc<Self>, peer: Did, stream: PeerStream) -> Handling {
        Box::pin(async move {
            let Some(_place) = self.place(peer) else {
                self.counters.count("ledger_sync_streams_refused");
                return Err(ProtocolError::Violation(format!("{peer} has {MAX_STREAMS_PER_PEER} sync exchanges open")));
            };
            let read = tokio::time::timeout(REQUEST_TIMEOUT, read_request(stream)).await;
            let (stream, request) = read.unwrap_or(Err(ProtocolError::Timeout("ledger sync request")))?;
            match request.request {
                Some(Request::Fetch(fetch)) => {
                    let answer = serve(&*self.ledger, fetch);
                    tokio::time::timeout(EXCHANGE_TIMEOUT, write(stream, &answer, ANSWER_FRAME))
                        .await
                        .unwrap_or(Err(ProtocolError::Timeout("ledger sync answer")))?;
                    Ok(())
                }
                Some(Request::Announce(note)) => {
                    self.consider(peer, note);
                    Ok(())
                }
                Some(Request::Evidence(evidence)) => {
                    self.evidence_from(peer, &evidence);
                    Ok(())
                }
                Some(Request::Revocation(bytes)) => self.revocation_from(peer, &bytes),
                Some(Request::Handover(bytes)) => self.handover_from(peer, &bytes),
                Some(Request::LoggedChange(change)) => self.logged_change_from(peer, change),
                Some(Request::BrokenPromise(bytes)) => {
                    self.broken_promise_from(peer, &bytes);
                    Ok(())
                }
                None => Err(ProtocolError::Violation("empty sync request".into())),
            }
        })
    }
}

/// Sends one message and ends our side of the stream; returns the stream
/// for the answer.
async fn write<M: prost::Message>(stream: PeerStream, message: &M, max: usize) -> Result<PeerStream, ProtocolError> {
    let mut writer = FrameWriter::new(stream, max);
    writer.send(message).await?;
    writer.shutdown().await?;
    Ok(writer.into_inner())
}

/// Reads the one message the peer sends.
async fn read<M: prost::Message + Default>(stream: PeerStream, max: usize) -> Result<M, ProtocolError> {
    let mut reader = FrameReader::new(stream, max);
    reader.read::<M>().await?.ok_or_else(|| ProtocolError::Violation("the stream ended before the message".into()))
}

/// Reads the request that opens an exchange; returns the stream for the answer.
async fn read_request(stream: PeerStream) -> Result<(PeerStream, pb::SyncRequest), ProtocolError> {
    let mut reader = FrameReader::new(stream, REQUEST_FRAME);
    let request = reader.read().await?.ok_or_else(|| ProtocolError::Violation("empty sync stream".into()))?;
    Ok((reader.into_parts().0, request))
}

#[path = "ledger_gossip.rs"]
mod gossip;

#[cfg(test)]
#[path = "ledger_sync_tests.rs"]
mod tests;
