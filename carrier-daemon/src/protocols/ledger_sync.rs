//! Ledger replication over the overlay (`/carrier/ledger/1.0.0`): plain async
//! functions over one stream per exchange, framed like every other stream.
//!
//! - When a link comes up and the peer's handshake showed a longer ledger,
//!   we fetch the entries we lack from it, a batch at a time.
//! - When our ledger grows (a publish, or entries fetched), we push the new
//!   entries to every linked peer; a peer that is further behind fetches.
//! - Every entry is verified before it is applied (`Ledger::submit`).
//!   A peer whose entry at a height we have differs from ours shows a forked
//!   history: we raise the equivocation alarm and refuse the fork.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::ledger::{Entry, Head, Rejection};
use carrier_proto::pb::{self, sync_request::Request};
use tokio::sync::broadcast;

use super::{Handling, PeerStream, ProtocolError, ProtocolHandler, Router};
use crate::framed::{FrameReader, FrameWriter};
use crate::ledger::{Ledger, SubmitError};
use crate::link::LinkContext;
use crate::overlay::{Overlay, OverlayEvent};
use crate::tasks::Tasks;

/// The protocol name.
pub(crate) const PROTOCOL: &str = "/carrier/ledger/1.0.0";
/// Largest sync frame.
const MAX_FRAME: usize = 4 << 20;
/// Entries asked for per fetch.
const BATCH: u32 = 512;
/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the exchanges peers open, and keeps our ledger and theirs in step.
#[derive(Debug)]
pub(crate) struct LedgerSync {
    ledger: Arc<dyn Ledger>,
    router: Router,
}

impl LedgerSync {
    /// Replication of `ctx`'s ledger over `router`'s streams.
    pub(crate) fn new(ctx: &LinkContext, router: Router) -> Arc<Self> {
        Arc::new(Self { ledger: Arc::clone(&ctx.ledger), router })
    }

    /// Registers the protocol and starts the task that pulls from peers
    /// that are ahead and pushes our new entries to all. `events` should
    /// be the overlay's first receiver, so no early link is missed.
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

    /// Pulls from new peers that are ahead and pushes our new entries to all.
    async fn drive(
        self: Arc<Self>,
        ctx: Arc<LinkContext>,
        overlay: Overlay,
        mut events: broadcast::Receiver<OverlayEvent>,
    ) {
        let ledger = Arc::clone(&self.ledger);
        let mut updates = ledger.subscribe();
        let mut peers: HashSet<Did> = HashSet::new();
        let mut pushed = ledger.head().height;
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
                        let entries = ledger.entries(pushed, BATCH as usize);
                        pushed += entries.len() as u64;
                        if entries.is_empty() {
                            continue;
                        }
                        let push = pb::SyncRequest { request: Some(Request::Push(entries_message(entries, ledger.head()))) };
                        for &peer in &peers {
                            let (router, push) = (self.router.clone(), push.clone());
                            self.router.handlers().spawn_until_stop(async move {
                                let sent = async {
                                    let stream = router.open(peer, PROTOCOL).await?;
                                    write(stream, &push).await
                                };
                                let sent = tokio::time::timeout(EXCHANGE_TIMEOUT, sent).await.unwrap_or(Err(ProtocolError::Timeout("ledger push")));
                                if let Err(error) = sent {
                                    tracing::debug!(%peer, %error, "ledger push failed");
                                }
                            });
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// A peer's first link is up: fetch if it is ahead, raise the alarm if
    /// its head disagrees with ours at its height.
    fn peer_up(self: &Arc<Self>, ctx: &LinkContext, did: Did) {
        let ledger = &self.ledger;
        let theirs = ctx.peer_head(&did).unwrap_or_default();
        if theirs.height > ledger.head().height {
            let sync = Arc::clone(self);
            self.router.handlers().spawn_until_stop(async move { sync.fetch_from(did).await });
        } else if theirs.height > 0 && ledger.entry_hash(theirs.height - 1) != Some(theirs.hash) {
            // Both ledgers are verified, so two heads that disagree at one
            // height are two signed histories.
            ledger.raise_alarm(format!("{did}'s ledger differs from ours at entry {}", theirs.height - 1));
        }
    }

    /// Fetches from `peer` until we have everything it has.
    async fn fetch_from(&self, peer: Did) {
        let ledger = &*self.ledger;
        loop {
            let from = ledger.head().height;
            let exchange = async {
                let stream = self.router.open(peer, PROTOCOL).await?;
                let fetch = pb::SyncRequest { request: Some(Request::Fetch(pb::Fetch { from, max: BATCH })) };
                let stream = write(stream, &fetch).await?;
                read::<pb::SyncEntries>(stream).await
            };
            let reply = match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "ledger fetch failed"),
                Err(_) => return tracing::debug!(%peer, "ledger fetch timed out"),
            };
            let theirs = reply.head.map(|h| h.height).unwrap_or(0);
            if reply.entries.is_empty() || apply(peer, &reply.entries, ledger) != Applied::UpToDate {
                return;
            }
            if ledger.head().height >= theirs {
                tracing::info!(%peer, height = ledger.head().height, "ledger caught up");
                return;
            }
        }
    }
}

impl ProtocolHandler for LedgerSync {
    /// Answers one exchange a peer opened.
    fn handle(self: Arc<Self>, peer: Did, stream: PeerStream) -> Handling {
        Box::pin(async move {
            let (stream, request) = read_request(stream).await?;
            match request.request {
                Some(Request::Fetch(fetch)) => {
                    let entries = self.ledger.entries(fetch.from, fetch.max.min(BATCH) as usize);
                    write(stream, &entries_message(entries, self.ledger.head())).await?;
                    Ok(())
                }
                Some(Request::Push(push)) => {
                    if apply(peer, &push.entries, &*self.ledger) == Applied::Behind {
                        self.fetch_from(peer).await;
                    }
                    Ok(())
                }
                None => Err(ProtocolError::Violation("empty sync request".into())),
            }
        })
    }
}

/// Outcome of applying a batch.
#[derive(Debug, PartialEq, Eq)]
enum Applied {
    /// Every entry was applied or already known.
    UpToDate,
    /// The batch starts past our head: fetch what lies between.
    Behind,
    /// An entry was refused (logged; a fork raises the alarm).
    Refused,
}

fn apply(peer: Did, entries: &[Vec<u8>], ledger: &dyn Ledger) -> Applied {
    let before = ledger.head().height;
    let outcome = apply_each(peer, entries, ledger);
    let applied = ledger.head().height - before;
    if applied > 0 {
        tracing::info!(%peer, applied, height = before + applied, "applied ledger entries from a peer");
    }
    outcome
}

fn apply_each(peer: Did, entries: &[Vec<u8>], ledger: &dyn Ledger) -> Applied {
    for bytes in entries {
        let entry = match Entry::decode(bytes) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(%peer, %error, "peer sent a malformed ledger entry");
                return Applied::Refused;
            }
        };
        let height = ledger.head().height;
        if entry.seq() > height {
            return Applied::Behind;
        }
        if entry.seq() < height {
            if ledger.entry_hash(entry.seq()) != Some(entry.hash()) && entry.verify_signature() {
                ledger.raise_alarm(format!("peer {peer} has a different, validly signed entry {}", entry.seq()));
                return Applied::Refused;
            }
            continue;
        }
        match ledger.submit(entry) {
            Ok(()) => {}
            Err(SubmitError::Rejected(Rejection::BrokenChain { .. })) => {
                ledger.raise_alarm(format!("peer {peer}'s ledger forks from ours at entry {height}"));
                return Applied::Refused;
            }
            Err(error) => {
                tracing::warn!(%peer, %error, "refused a ledger entry from a peer");
                return Applied::Refused;
            }
        }
    }
    Applied::UpToDate
}

fn entries_message(entries: Vec<Vec<u8>>, head: Head) -> pb::SyncEntries {
    pb::SyncEntries { entries, head: Some(pb::LedgerHead { height: head.height, hash: head.hash.0.to_vec() }) }
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
