//! Ledger replication over the overlay (`/carrier/ledger/1.0.0`): plain async
//! functions over one stream per exchange.
//!
//! - When a link comes up and the peer's handshake showed a longer ledger,
//!   we fetch the entries we lack from it, a batch at a time.
//! - When our ledger grows (a publish, or entries fetched), we push the new
//!   entries to every linked peer; a peer that is further behind fetches.
//! - Every entry is verified before it is applied (`SharedLedger::append`).
//!   A peer whose entry at a height we have differs from ours shows a forked
//!   history: we raise the equivocation alarm and refuse the fork.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use carrier_proto::frame;
use carrier_proto::identity::Did;
use carrier_proto::ledger::{Entry, Head, Rejection};
use carrier_proto::pb::{self, sync_request::Request};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::Control;
use prost::Message;
use tokio::sync::{broadcast, mpsc};

use crate::ledger::{SharedLedger, StoreError};
use crate::link::LinkContext;

/// The replication protocol.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/carrier/ledger/1.0.0");
/// Largest sync frame.
const MAX_FRAME: usize = 4 << 20;
/// Entries asked for per fetch.
const BATCH: u32 = 512;
/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the overlay actor tells the sync task.
#[derive(Debug)]
pub(crate) enum SyncEvent {
    /// A peer's first link is up.
    PeerUp { peer: PeerId, did: Did },
    /// A peer's last link is down.
    PeerDown { peer: PeerId },
}

/// Starts replication; the returned sender takes link events.
pub(crate) fn spawn(mut control: Control, ctx: Arc<LinkContext>) -> mpsc::UnboundedSender<SyncEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    match control.accept(PROTOCOL) {
        Ok(mut incoming) => {
            let (control, ledger) = (control.clone(), Arc::clone(&ctx.ledger));
            tokio::spawn(async move {
                while let Some((peer, stream)) = incoming.next().await {
                    let (control, ledger) = (control.clone(), Arc::clone(&ledger));
                    tokio::spawn(async move {
                        if let Err(error) = serve(stream, peer, control, &ledger).await {
                            tracing::debug!(%peer, %error, "ledger sync exchange failed");
                        }
                    });
                }
            });
        }
        Err(error) => tracing::error!(%error, "ledger sync protocol already taken"),
    }
    tokio::spawn(drive(control, ctx, rx));
    tx
}

/// Pulls from new peers that are ahead and pushes our new entries to all.
async fn drive(control: Control, ctx: Arc<LinkContext>, mut events: mpsc::UnboundedReceiver<SyncEvent>) {
    let ledger = Arc::clone(&ctx.ledger);
    let mut updates = ledger.subscribe();
    let mut peers: HashMap<PeerId, Did> = HashMap::new();
    let mut pushed = ledger.head().height;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(SyncEvent::PeerUp { peer, did }) => {
                    peers.insert(peer, did);
                    let theirs = ctx.peer_head(&did).unwrap_or_default();
                    if theirs.height > ledger.head().height {
                        let (control, ledger) = (control.clone(), Arc::clone(&ledger));
                        tokio::spawn(async move { fetch_from(control, peer, &ledger).await });
                    } else if theirs.height > 0 && ledger.read(|l| l.entry_hash(theirs.height - 1)) != Some(theirs.hash) {
                        // Both ledgers are verified, so two heads that
                        // disagree at one height are two signed histories.
                        ledger.raise_alarm(format!("{did}'s ledger differs from ours at entry {}", theirs.height - 1));
                    }
                }
                Some(SyncEvent::PeerDown { peer }) => {
                    peers.remove(&peer);
                }
                None => return,
            },
            update = updates.recv() => match update {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let entries = ledger.entries(pushed, BATCH as usize);
                    pushed += entries.len() as u64;
                    if entries.is_empty() {
                        continue;
                    }
                    let push = pb::SyncRequest { request: Some(Request::Push(entries_message(entries, ledger.head()))) };
                    for &peer in peers.keys() {
                        let (mut control, push) = (control.clone(), push.clone());
                        tokio::spawn(async move {
                            let sent = async {
                                let mut stream = control.open_stream(peer, PROTOCOL).await.map_err(|e| e.to_string())?;
                                write(&mut stream, &push).await
                            };
                            if let Err(error) = tokio::time::timeout(EXCHANGE_TIMEOUT, sent).await.unwrap_or(Err("timed out".into())) {
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

/// Answers one incoming exchange.
async fn serve(
    mut stream: libp2p::Stream,
    peer: PeerId,
    control: Control,
    ledger: &SharedLedger,
) -> Result<(), String> {
    let request: pb::SyncRequest = read(&mut stream).await?;
    match request.request {
        Some(Request::Fetch(fetch)) => {
            let entries = ledger.entries(fetch.from, fetch.max.min(BATCH) as usize);
            write(&mut stream, &entries_message(entries, ledger.head())).await
        }
        Some(Request::Push(push)) => {
            if apply(peer, &push.entries, ledger) == Applied::Behind {
                fetch_from(control, peer, ledger).await;
            }
            Ok(())
        }
        None => Err("empty sync request".into()),
    }
}

/// Fetches from `peer` until we have everything it has.
async fn fetch_from(mut control: Control, peer: PeerId, ledger: &SharedLedger) {
    loop {
        let from = ledger.head().height;
        let exchange = async {
            let mut stream = control.open_stream(peer, PROTOCOL).await.map_err(|e| e.to_string())?;
            let fetch = pb::SyncRequest { request: Some(Request::Fetch(pb::Fetch { from, max: BATCH })) };
            write(&mut stream, &fetch).await?;
            read::<pb::SyncEntries>(&mut stream).await
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

fn apply(peer: PeerId, entries: &[Vec<u8>], ledger: &SharedLedger) -> Applied {
    let before = ledger.head().height;
    let outcome = apply_each(peer, entries, ledger);
    let applied = ledger.head().height - before;
    if applied > 0 {
        tracing::info!(%peer, applied, height = before + applied, "applied ledger entries from a peer");
    }
    outcome
}

fn apply_each(peer: PeerId, entries: &[Vec<u8>], ledger: &SharedLedger) -> Applied {
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
            if ledger.read(|l| l.entry_hash(entry.seq())) != Some(entry.hash()) && entry.verify_signature() {
                ledger.raise_alarm(format!("peer {peer} has a different, validly signed entry {}", entry.seq()));
                return Applied::Refused;
            }
            continue;
        }
        match ledger.append(entry) {
            Ok(()) => {}
            Err(StoreError::Rejected(Rejection::BrokenChain { .. })) => {
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

async fn write<M: Message>(stream: &mut libp2p::Stream, message: &M) -> Result<(), String> {
    let bytes = message.encode_to_vec();
    stream.write_all(&frame::encode(&bytes)).await.map_err(|e| e.to_string())?;
    stream.close().await.map_err(|e| e.to_string())
}

async fn read<M: Message + Default>(stream: &mut libp2p::Stream) -> Result<M, String> {
    let mut header = [0u8; frame::HEADER];
    stream.read_exact(&mut header).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(format!("sync frame of {len} bytes is over the limit"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    M::decode(body.as_slice()).map_err(|e| e.to_string())
}
