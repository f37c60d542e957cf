//! Witnessing over the overlay (`/carrier/witness/1.0.0`): C2SP
//! tlog-witness's add-checkpoint, one stream per request.
//!
//! - A daemon with `[ledger] witness_key` serves it: it cosigns a checkpoint
//!   only if it extends the last one it cosigned (proven), and keeps what it
//!   cosigned on disk before it answers (`witness.state`), so a restart
//!   cannot make it cosign a fork.
//! - The sequencer asks every active device with role `witness` after each
//!   new checkpoint, all at once, and merges the cosignatures of the
//!   genesis's witnesses into its stored checkpoint; until the quorum has
//!   cosigned it asks again every [`RETRY`] (every [`RETRY_ALL`] while a
//!   witness beyond the quorum is missing). A re-dated checkpoint is asked
//!   for again. Daemons take a checkpoint only with the genesis's quorum of
//!   cosignatures.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use carrier_proto::identity::{Did, Identity};
use carrier_proto::ledger::{
    EntryHash, LogTrust, MAX_NOTE_SIZE, MAX_PROOF_HASHES, Op, SignedCheckpoint, WitnessRefusal, WitnessedHead,
    add_checkpoint, witness_key_of,
};
use carrier_proto::pb::{self, witness_answer::Answer};
use tokio::sync::broadcast;

use super::{Handling, PeerStream, ProtocolError, ProtocolHandler, Router};
use crate::framed::{FrameReader, FrameWriter};
use crate::ledger::{Ledger, proof_hashes};
use crate::tasks::Tasks;

/// The protocol name.
pub(crate) const PROTOCOL: &str = "/carrier/witness/1.0.0";
/// The ledger role of devices that hold a witness key.
pub(crate) const WITNESS_ROLE: &str = "witness";
/// Largest request: a note and the longest proof.
const REQUEST_FRAME: usize = MAX_NOTE_SIZE + MAX_PROOF_HASHES * 34 + 64;
/// Largest answer: one cosignature line, or a refusal.
const ANSWER_FRAME: usize = 1024;
/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How often the sequencer asks again while a checkpoint lacks its quorum.
const RETRY: Duration = Duration::from_secs(2);
/// How often it asks again when the quorum cosigned but some witness did not.
const RETRY_ALL: Duration = Duration::from_secs(30);

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A daemon's witness: its key and what it last cosigned.
pub(crate) struct Witness {
    key: Identity,
    ledger: Arc<dyn Ledger>,
    state_file: PathBuf,
    /// What it last cosigned; the lock makes check-and-keep atomic.
    last: Mutex<WitnessedHead>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness").field("state_file", &self.state_file).finish_non_exhaustive()
    }
}

/// Why the witness state could not be read or kept.
#[derive(Debug, thiserror::Error)]
#[error(
    "witness state {path}: {reason}; it records the last checkpoint this witness cosigned (restore it from a backup: starting over could cosign a fork)"
)]
pub(crate) struct WitnessStateError {
    path: PathBuf,
    reason: String,
}

impl Witness {
    /// The witness with key `key`, keeping its state in `state_file`.
    pub(crate) fn open(
        key: Identity,
        ledger: Arc<dyn Ledger>,
        state_file: PathBuf,
    ) -> Result<Arc<Self>, WitnessStateError> {
        let err = |reason: String| WitnessStateError { path: state_file.clone(), reason };
        let last = match std::fs::read(&state_file) {
            Ok(bytes) => {
                let (size, root) = bytes.split_at_checked(8).ok_or_else(|| err("not a witness state".into()))?;
                let size = u64::from_be_bytes(size.try_into().map_err(|_| err("not a witness state".into()))?);
                let root = EntryHash(root.try_into().map_err(|_| err("not a witness state".into()))?);
                WitnessedHead { size, root }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => WitnessedHead::default(),
            Err(e) => return Err(err(e.to_string())),
        };
        let named = ledger.network().is_some_and(|n| n.witnesses.witnesses.contains(&witness_key_of(&key)));
        if !named {
            tracing::warn!(vkey = %witness_key_of(&key).vkey(), "the ledger does not name this witness key (yet): its cosignatures count once the genesis or a change of witnesses names it");
        }
        Ok(Arc::new(Self { key, ledger, state_file, last: Mutex::new(last) }))
    }

    /// Keeps `head` on disk (atomically, synced) before it is answered.
    fn keep(&self, head: WitnessedHead) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = self.state_file.with_extension("tmp");
        let mut bytes = head.size.to_be_bytes().to_vec();
        bytes.extend_from_slice(&head.root.0);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        crate::paths::make_private(&tmp)?;
        std::fs::rename(&tmp, &self.state_file)?;
        if let Some(dir) = self.state_file.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn answer(&self, request: &pb::AddCheckpoint) -> Answer {
        let Some(network) = self.ledger.network() else { return Answer::Refused("no genesis yet".into()) };
        let Some(proof) = proof_hashes(&request.proof) else {
            return Answer::Refused("a proof hash is not 32 bytes".into());
        };
        // The log key that signed it: the ledger's, or that of a handover
        // we hold (the new sequencer's first checkpoint).
        let handed: Vec<_> = self
            .ledger
            .handovers_seen()
            .iter()
            .filter_map(|e| match e.op() {
                Op::Handover { log_key, .. } => Some(*log_key),
                _ => None,
            })
            .collect();
        let trust = handed
            .into_iter()
            .map(|log_key| LogTrust { log_key, ..network.trust() })
            .find(|trust| SignedCheckpoint::open(&request.note, trust).is_ok())
            .unwrap_or(network.trust());
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match add_checkpoint(&self.key, &trust, *last, request.old_size, &proof, &request.note, now_s()) {
            Ok(cosigned) => {
                if let Err(error) = self.keep(cosigned.state) {
                    tracing::error!(%error, "cannot keep the witness state; not cosigning");
                    return Answer::Refused("the witness cannot keep its state".into());
                }
                *last = cosigned.state;
                tracing::debug!(size = cosigned.state.size, "cosigned a checkpoint");
                Answer::Cosignature(cosigned.cosignature.to_line())
            }
            Err(WitnessRefusal::Conflict(size)) => Answer::Conflict(size),
            Err(refusal) => {
                tracing::warn!(%refusal, "refused to cosign a checkpoint");
                Answer::Refused(refusal.to_string())
            }
        }
    }
}

impl ProtocolHandler for Witness {
    fn handle(self: Arc<Self>, _peer: Did, stream: PeerStream) -> Handling {
        Box::pin(async move {
            let exchange = async {
                let mut reader = FrameReader::new(stream, REQUEST_FRAME);
                let request: pb::AddCheckpoint =
                    reader.read().await?.ok_or_else(|| ProtocolError::Violation("empty witness request".into()))?;
                let answer = pb::WitnessAnswer { answer: Some(self.answer(&request)) };
                let mut writer = FrameWriter::new(reader.into_parts().0, ANSWER_FRAME);
                writer.send(&answer).await?;
                writer.shutdown().await?;
                Ok(())
            };
            tokio::time::timeout(TIMEOUT, exchange).await.unwrap_or(Err(ProtocolError::Timeout("witness request")))
        })
    }
}

/// Serves witnessing with `witness` on `router`.
pub(crate) fn serve(router: &Router, witness: Arc<Witness>) {
    router.register(PROTOCOL, witness as Arc<dyn ProtocolHandler>);
}

/// The sequencer's side: collects cosignatures for every new checkpoint.
/// Run by a daemon that holds a log key, whether it sequences now or stands
/// by for a handover: it asks only while it sequences.
pub(crate) fn collect(ledger: Arc<dyn Ledger>, router: Router, tasks: &Tasks) {
    tasks.spawn_until_stop(async move {
        let mut updates = ledger.subscribe();
        // What each witness device last cosigned, as far as we know.
        let known: Arc<Mutex<HashMap<Did, u64>>> = Arc::default();
        loop {
            // Witnesses may be named later (a change of witnesses).
            let witnessed = ledger.network().is_some_and(|n| !n.witnesses.witnesses.is_empty());
            if ledger.is_sequencer() && witnessed {
                ask_all(&*ledger, &router, &known).await;
            }
            let wait = match cosigned(&*ledger).filter(|_| ledger.is_sequencer()) {
                Some((have, quorum, _)) if have < quorum => RETRY,
                Some((have, _, all)) if have < all => RETRY_ALL,
                _ => Duration::MAX,
            };
            tokio::select! {
                update = updates.recv() => if let Err(broadcast::error::RecvError::Closed) = update { return },
                () = tokio::time::sleep(wait.min(Duration::from_secs(3600))) => {}
            }
        }
    });
}

/// How many witnesses cosigned our checkpoint as the log last dated it, the
/// quorum, and how many witnesses there are.
fn cosigned(ledger: &dyn Ledger) -> Option<(usize, usize, usize)> {
    let (checkpoint, network) = (ledger.checkpoint()?, ledger.network()?);
    let dated = checkpoint.log_time_s().unwrap_or(0);
    let current = checkpoint.cosignatures().iter().filter(|c| c.time_s >= dated).count();
    Some((current, network.witnesses.quorum(), network.witnesses.witnesses.len()))
}

/// Whether a witness has not cosigned our checkpoint as the log last dated
/// it (none yet, or only an older date).
fn wanting(ledger: &dyn Ledger) -> bool {
    cosigned(ledger).is_some_and(|(have, _, all)| have < all)
}

/// Asks every witness device for its cosignature of our checkpoint, and
/// keeps those that verify.
async fn ask_all(ledger: &dyn Ledger, router: &Router, known: &Mutex<HashMap<Did, u64>>) {
    let (Some(checkpoint), Some(network)) = (ledger.checkpoint(), ledger.network()) else { return };
    let witnesses = network.witnesses.witnesses.clone();
    if !wanting(ledger) {
        return;
    }
    let asks = ledger.devices_with_role(WITNESS_ROLE).into_iter().map(|device| {
        let (checkpoint, witnesses) = (checkpoint.clone(), witnesses.clone());
        async move {
            for _ in 0..2 {
                let old = known.lock().unwrap_or_else(PoisonError::into_inner).get(&device).copied().unwrap_or(0);
                let proof = match old {
                    0 => Vec::new(),
                    n if n >= checkpoint.size() => Vec::new(),
                    n => ledger.consistency_proof(n, checkpoint.size()).unwrap_or_default(),
                };
                let request = pb::AddCheckpoint {
                    old_size: old,
                    proof: proof.iter().map(|h| h.0.to_vec()).collect(),
                    note: checkpoint.note().to_vec(),
                };
                match ask(router, device, &request).await {
                    Ok(Answer::Cosignature(line)) => {
                        known.lock().unwrap_or_else(PoisonError::into_inner).insert(device, checkpoint.size());
                        return checkpoint.read_cosignatures(&line, &witnesses);
                    }
                    Ok(Answer::Conflict(size)) if size != old => {
                        known.lock().unwrap_or_else(PoisonError::into_inner).insert(device, size);
                    }
                    Ok(other) => {
                        tracing::warn!(%device, ?other, "a witness did not cosign our checkpoint");
                        return Vec::new();
                    }
                    Err(error) => {
                        tracing::debug!(%device, %error, "a witness could not be asked");
                        return Vec::new();
                    }
                }
            }
            Vec::new()
        }
    });
    let cosignatures: Vec<_> = futures::future::join_all(asks).await.into_iter().flatten().collect();
    if !cosignatures.is_empty() && ledger.cosign(&cosignatures) > 0 {
        let have = ledger.checkpoint().map_or(0, |c| c.cosignatures().len());
        tracing::info!(
            size = checkpoint.size(),
            have,
            quorum = network.witnesses.quorum,
            "witnesses cosigned our checkpoint"
        );
    }
}

async fn ask(router: &Router, device: Did, request: &pb::AddCheckpoint) -> Result<Answer, ProtocolError> {
    let exchange = async {
        let stream = router.open(device, PROTOCOL).await?;
        let mut writer = FrameWriter::new(stream, REQUEST_FRAME);
        writer.send(request).await?;
        writer.shutdown().await?;
        let mut reader = FrameReader::new(writer.into_inner(), ANSWER_FRAME);
        let answer: pb::WitnessAnswer =
            reader.read().await?.ok_or_else(|| ProtocolError::Violation("no witness answer".into()))?;
        answer.answer.ok_or_else(|| ProtocolError::Violation("an empty witness answer".into()))
    };
    tokio::time::timeout(TIMEOUT, exchange).await.unwrap_or(Err(ProtocolError::Timeout("witness answer")))
}

#[cfg(test)]
#[path = "witness_tests.rs"]
mod tests;
