//! Join connections: how a device that holds only an invitation fetches
//! the ledger before it is registered (a "sync-only link").
//!
//! ```text
//! newcomer ── QUIC, ALPN carrier-join/1 ──▶ bootstrap daemon
//!          ── JoinRequest {network id, from, max, tree_size} ──▶
//!          ◀── SyncEntries {entries, proof, checkpoint} ──
//! ```
//!
//! There is no Noise handshake: the newcomer is not on the ledger, so it
//! could not be admitted, and it needs nothing secret. What it fetches is
//! checked against the log key its invitation's genesis names, by the same
//! catch-up machine as ledger sync (checkpoint signature, consistency
//! proof, every entry's signature and rules), so a bootstrap daemon cannot
//! lie to it, only withhold.
//!
//! The daemon serves join connections only to those who name its network
//! id (from the invitation) in their first request, which must come within
//! [`FIRST_REQUEST_TIMEOUT`]. It holds at most [`MAX_JOIN_CONNECTIONS`] at
//! once; a newcomer that finds them all taken evicts the oldest one that
//! is not being served at that moment (silent, or idle between requests),
//! so idle connections can never keep a device from joining. Each
//! connection lasts at most [`JOIN_LIFETIME`], [`MAX_REQUESTS`] requests
//! and [`MAX_BYTES`] of entries, and gets nothing but ledger entries: no
//! Kademlia, no messages, no streams. (Anyone who knows the network id can
//! so read the ledger, which holds public keys and names but no secret.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use carrier_proto::ledger::{Fetch, Judgement};
use carrier_proto::pb;
use tokio_util::sync::CancellationToken;

use super::quic;
use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::ledger::{ExtendError, FollowError, Followed, Ledger, follow, sync_entries};

/// Join connections held at once.
pub const MAX_JOIN_CONNECTIONS: usize = 16;
/// How long a join connection may stay.
pub const JOIN_LIFETIME: Duration = Duration::from_secs(30);
/// How long a new join connection may take to name the network.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a join connection may wait between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests on one join connection.
const MAX_REQUESTS: usize = 128;
/// Entry bytes served on one join connection (a newcomer that needs more
/// connects again on its next poll).
const MAX_BYTES: usize = 64 << 20;
/// Entries per answer, and their bytes.
const BATCH: u32 = 512;
const BATCH_BYTES: usize = 256 << 10;
/// Largest request frame.
const REQUEST_FRAME: usize = 128;
/// Largest answer frame: a batch, its proof and a note.
const ANSWER_FRAME: usize =
    BATCH_BYTES + carrier_proto::ledger::MAX_ENTRY_SIZE + carrier_proto::ledger::MAX_NOTE_SIZE + 64 * 34 + 1024;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a join fetch failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The QUIC connection failed.
    #[error("cannot reach {addr}: {reason}")]
    Connect {
        /// The bootstrap address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A frame or stream failed.
    #[error(transparent)]
    Framed(#[from] FramedError),
    /// The daemon's entries or checkpoint did not prove out.
    #[error("refused what {addr} sent: {source}")]
    Refused {
        /// The bootstrap address.
        addr: SocketAddr,
        /// Why.
        source: ExtendError,
    },
    /// The daemon took too long or sent nothing.
    #[error("{0} did not answer")]
    Silent(SocketAddr),
    /// The daemon's checkpoint contradicts one we hold: the alarm is raised.
    #[error("{0} holds a checkpoint that contradicts ours; the alarm is raised")]
    Fork(SocketAddr),
}

/// One held join connection.
#[derive(Debug)]
struct Slot {
    /// A request is being answered: not to be evicted now.
    busy: bool,
    evict: CancellationToken,
}

/// The join connections a daemon holds, oldest first.
#[derive(Debug, Default)]
pub(crate) struct JoinServer {
    slots: Mutex<(u64, BTreeMap<u64, Slot>)>,
}

/// A held slot; freed on drop.
struct Held<'a> {
    server: &'a JoinServer,
    id: u64,
    evict: CancellationToken,
}

impl Held<'_> {
    fn set_busy(&self, busy: bool) {
        let mut slots = self.server.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.1.get_mut(&self.id) {
            slot.busy = busy;
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.server.slots.lock().unwrap_or_else(PoisonError::into_inner).1.remove(&self.id);
    }
}

impl JoinServer {
    /// A slot for a new connection, evicting the oldest one not being
    /// served if all are taken; `None` if every one is busy.
    fn take(&self) -> Option<Held<'_>> {
        let mut guard = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, slots) = &mut *guard;
        if slots.len() >= MAX_JOIN_CONNECTIONS {
            let oldest = slots.iter().find(|(_, s)| !s.busy).map(|(id, _)| *id)?;
            if let Some(slot) = slots.remove(&oldest) {
                slot.evict.cancel();
            }
        }
        let id = *next;
        *next += 1;
        let evict = CancellationToken::new();
        slots.insert(id, Slot { busy: false, evict: evict.clone() });
        Some(Held { server: self, id, evict })
    }

    /// Join connections held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).1.len()
    }

    /// Serves `connection` (a join connection) until it ends, goes quiet,
    /// is evicted, its lifetime runs out or it asked its share.
    pub(crate) async fn serve(&self, ledger: Arc<dyn Ledger>, connection: quinn::Connection) {
        let Some(held) = self.take() else {
            return connection.close(1u32.into(), b"busy");
        };
        let served = async {
            let network = ledger.network().map(|n| n.id.0.to_vec());
            let mut bytes = 0;
            for n in 0..MAX_REQUESTS {
                let wait = if n == 0 { FIRST_REQUEST_TIMEOUT } else { IDLE_TIMEOUT };
                let Ok(Some((send, request))) = tokio::time::timeout(wait, next_request(&connection)).await else {
                    return;
                };
                if Some(&request.network_id) != network.as_ref() {
                    return tracing::debug!(addr = %connection.remote_address(), "join request for another network");
                }
                held.set_busy(true);
                let reply = answer(&*ledger, &request);
                bytes += reply.entries.iter().map(Vec::len).sum::<usize>();
                let mut writer = FrameWriter::new(send, ANSWER_FRAME);
                let sent = async {
                    writer.send(&reply).await?;
                    writer.shutdown().await
                };
                if tokio::time::timeout(REQUEST_TIMEOUT, sent).await.map_or(true, |r| r.is_err()) || bytes >= MAX_BYTES
                {
                    return;
                }
                held.set_busy(false);
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(JOIN_LIFETIME, served) => connection.close(0u32.into(), b""),
            () = held.evict.cancelled() => connection.close(1u32.into(), b"busy"),
        }
    }
}

/// The next request on `connection`, with the stream to answer on.
async fn next_request(connection: &quinn::Connection) -> Option<(quinn::SendStream, pb::JoinRequest)> {
    let (send, recv) = connection.accept_bi().await.ok()?;
    let mut reader = FrameReader::new(recv, REQUEST_FRAME);
    let request = reader.read::<pb::JoinRequest>().await.ok()??;
    Some((send, request))
}

/// What a join request gets: entries proven to the asked (or our) checkpoint.
fn answer(ledger: &dyn Ledger, request: &pb::JoinRequest) -> pb::SyncEntries {
    let ours = ledger.checkpoint().map_or(0, |c| c.size());
    let tree_size = if request.tree_size == 0 { ours } else { request.tree_size.min(ours) };
    let fetch = Fetch { from: request.from, tree_size, prove_from: 0 };
    sync_entries(ledger, fetch, u64::from(request.max.min(BATCH)), BATCH_BYTES)
}

/// Fetches what `addr` has of the ledger that `ledger` lacks, checking
/// every batch against the daemon's signed checkpoint; returns how many
/// entries were applied.
pub async fn fetch(ledger: &dyn Ledger, addr: SocketAddr) -> Result<u64, JoinError> {
    let connect_error = |reason: String| JoinError::Connect { addr, reason };
    let network = ledger.network().ok_or_else(|| connect_error("our ledger has no genesis".into()))?;
    let mut endpoint = quinn::Endpoint::client(unspecified(addr)).map_err(|e| connect_error(e.to_string()))?;
    endpoint.set_default_client_config(quic::join_client_config().map_err(|e| connect_error(e.to_string()))?);
    let connection = endpoint
        .connect(addr, quic::SERVER_NAME)
        .map_err(|e| connect_error(e.to_string()))?
        .await
        .map_err(|e| connect_error(e.to_string()))?;
    let ask = |from: u64, max: u32, tree_size: u64| {
        let request = pb::JoinRequest { network_id: network.id.0.to_vec(), from, max, tree_size };
        exchange(&connection, addr, request)
    };
    let result = async {
        // First only the daemon's checkpoint, to judge it.
        let first = ask(ledger.head().height, 0, 0).await?;
        let catch_up = match ledger.judge(&first.checkpoint) {
            Ok(Judgement::Fetch(catch_up)) => catch_up,
            Ok(Judgement::Adopt(theirs)) => {
                ledger.adopt(&theirs);
                return Ok(0);
            }
            Ok(Judgement::Nothing) => return Ok(0),
            Ok(Judgement::Fork(fork)) => {
                ledger.raise_alarm(&fork, &format!("bootstrap daemon {addr}"));
                return Err(JoinError::Fork(addr));
            }
            Err(e) => return Err(JoinError::Refused { addr, source: ExtendError::Checkpoint(e) }),
        };
        match follow(ledger, catch_up, |f| ask(f.from, BATCH, f.tree_size)).await {
            Ok(Followed::Reached(applied)) => Ok(applied),
            Ok(Followed::Fork(fork)) => {
                ledger.raise_alarm(&fork, &format!("bootstrap daemon {addr}"));
                Err(JoinError::Fork(addr))
            }
            Err(FollowError::Fetch(error)) => Err(error),
            Err(FollowError::Refused(source)) => Err(JoinError::Refused { addr, source }),
            Err(_) => Err(JoinError::Silent(addr)),
        }
    }
    .await;
    connection.close(0u32.into(), b"");
    result
}

/// One request and its answer, within [`REQUEST_TIMEOUT`].
async fn exchange(
    connection: &quinn::Connection,
    addr: SocketAddr,
    request: pb::JoinRequest,
) -> Result<pb::SyncEntries, JoinError> {
    let exchange = async {
        let (send, recv) =
            connection.open_bi().await.map_err(|e| JoinError::Connect { addr, reason: e.to_string() })?;
        let mut writer = FrameWriter::new(send, REQUEST_FRAME);
        writer.send(&request).await?;
        writer.shutdown().await?;
        let mut reader = FrameReader::new(recv, ANSWER_FRAME);
        reader.read::<pb::SyncEntries>().await?.ok_or(JoinError::Silent(addr))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| JoinError::Silent(addr))?
}

/// The wildcard address of `addr`'s family, port 0.
fn unspecified(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle or silent join connections never keep a newcomer out: the
    /// oldest one not being served gives way; only when every one is being
    /// served is a newcomer turned away.
    #[test]
    fn a_newcomer_evicts_the_oldest_connection_not_being_served() {
        let server = JoinServer::default();
        let held: Vec<Held<'_>> = (0..MAX_JOIN_CONNECTIONS).map(|_| server.take().unwrap()).collect();
        held[0].set_busy(true);
        let newcomer = server.take().unwrap();
        assert!(!held[0].evict.is_cancelled(), "a connection being served stays");
        assert!(held[1].evict.is_cancelled(), "the oldest idle one gives way");
        assert_eq!(server.held(), MAX_JOIN_CONNECTIONS);
        for h in &held[2..] {
            h.set_busy(true);
        }
        newcomer.set_busy(true);
        assert!(server.take().is_none(), "every connection is being served");
        drop(held);
        assert_eq!(server.held(), 1);
    }
}
