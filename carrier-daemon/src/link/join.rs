//! Join connections: how a device that holds only an invitation fetches
//! the ledger before it is registered (a "sync-only link").
//!
//! ```text
//! newcomer ── QUIC, ALPN carrier-join/1 ──▶ bootstrap daemon
//!          ── JoinRequest {network id, from, max} ──▶
//!          ◀── SyncEntries {entries, proof, checkpoint} ──
//! ```
//!
//! There is no Noise handshake: the newcomer is not on the ledger, so it
//! could not be admitted, and it needs nothing secret. What it fetches is
//! checked against the log key its invitation's genesis names (checkpoint
//! signature, consistency proof, every entry's signature and rules), so a
//! bootstrap daemon cannot lie to it, only withhold. The daemon serves
//! join connections only to those who name its network id (from the
//! invitation), at most [`MAX_JOIN_CONNECTIONS`] at once, each for at most
//! [`JOIN_LIFETIME`], [`MAX_REQUESTS`] requests and [`MAX_BYTES`] of
//! entries, and never anything but ledger entries: no Kademlia, no
//! messages, no streams. (Anyone who knows the network id can so read the
//! ledger, which holds public keys and names but no secret: a revoked
//! device still knows the id, and so may still read who is registered.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use carrier_proto::pb;
use tokio::sync::Semaphore;

use super::quic;
use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::ledger::{ExtendError, Ledger, proof_hashes, sync_entries};

/// Join connections served at once.
pub const MAX_JOIN_CONNECTIONS: usize = 16;
/// How long a join connection may stay.
pub const JOIN_LIFETIME: Duration = Duration::from_secs(30);
/// Requests on one join connection.
const MAX_REQUESTS: usize = 128;
/// Entry bytes served on one join connection (a newcomer that needs more
/// connects again on its next poll).
const MAX_BYTES: usize = 64 << 20;
/// Entries per answer, and their bytes.
const BATCH: u32 = 1024;
const BATCH_BYTES: usize = 3 << 20;
/// Largest frame either way.
const MAX_FRAME: usize = 4 << 20;
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
}

/// Limits shared by every join connection a daemon serves.
#[derive(Debug)]
pub(crate) struct JoinServer {
    slots: Arc<Semaphore>,
}

impl Default for JoinServer {
    fn default() -> Self {
        Self { slots: Arc::new(Semaphore::new(MAX_JOIN_CONNECTIONS)) }
    }
}

impl JoinServer {
    /// Serves `connection` (a join connection) until it ends, its lifetime
    /// runs out or it asked its share; refused at once when all slots are
    /// taken.
    pub(crate) async fn serve(&self, ledger: Arc<dyn Ledger>, connection: quinn::Connection) {
        let Ok(_slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            return connection.close(1u32.into(), b"busy");
        };
        let network = ledger.network().map(|n| n.id);
        let served = async {
            let mut bytes = 0;
            for _ in 0..MAX_REQUESTS {
                if bytes >= MAX_BYTES {
                    return;
                }
                let Ok((send, recv)) = connection.accept_bi().await else { return };
                let mut reader = FrameReader::new(recv, 1024);
                let Ok(Some(request)) = reader.read::<pb::JoinRequest>().await else { return };
                if Some(request.network_id.as_slice()) != network.as_ref().map(|n| &n.0[..]) {
                    tracing::debug!(addr = %connection.remote_address(), "join request for another network");
                    return;
                }
                let size = ledger.checkpoint().map_or(0, |c| c.size());
                let max = u64::from(request.max.min(BATCH));
                let reply = sync_entries(&*ledger, request.from, max, BATCH_BYTES, size);
                bytes += reply.entries.iter().map(Vec::len).sum::<usize>();
                let mut writer = FrameWriter::new(send, MAX_FRAME);
                if writer.send(&reply).await.is_err() || writer.shutdown().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(JOIN_LIFETIME, served).await;
        connection.close(0u32.into(), b"");
    }
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
    let mut applied = 0;
    let result = async {
        loop {
            let from = ledger.head().height;
            let request = pb::JoinRequest { network_id: network.id.0.to_vec(), from, max: BATCH };
            let exchange = async {
                let (send, recv) = connection.open_bi().await.map_err(|e| connect_error(e.to_string()))?;
                let mut writer = FrameWriter::new(send, 1024);
                writer.send(&request).await?;
                writer.shutdown().await?;
                let mut reader = FrameReader::new(recv, MAX_FRAME);
                reader.read::<pb::SyncEntries>().await?.ok_or(JoinError::Silent(addr))
            };
            let reply =
                tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| JoinError::Silent(addr))??;
            let target = ledger
                .verify_checkpoint(&reply.checkpoint)
                .map_err(|e| JoinError::Refused { addr, source: ExtendError::Checkpoint(e) })?;
            if reply.entries.is_empty() {
                // Nothing newer: keep the checkpoint if it signs what we hold.
                ledger.adopt(&target);
                return Ok(());
            }
            let proof = proof_hashes(&reply.proof).ok_or(JoinError::Silent(addr))?;
            applied += ledger
                .extend(from, &reply.entries, &target, &proof)
                .map_err(|source| JoinError::Refused { addr, source })?;
        }
    }
    .await;
    connection.close(0u32.into(), b"");
    result.map(|()| applied)
}

/// The wildcard address of `addr`'s family, port 0.
fn unspecified(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}
