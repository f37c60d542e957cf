//! Opening a stored ledger: the log checked against its checkpoint, what a
//! crash left behind cut, and what cannot be proven named, never dropped.
//!
//! - The usual case: the checkpoint signs a prefix of the log. The entries
//!   it covers are applied without their signatures and the root must equal
//!   the checkpoint's (a root commits to every entry's bytes); entries past
//!   it were never acknowledged (an interrupted sequencing) or not yet
//!   proven complete (a catch-up in progress), and are cut with a warning.
//! - The log is shorter than its checkpoint (a torn or truncated disk):
//!   every held entry is checked with its signature, and the checkpoint is
//!   kept as *awaited*: the missing entries are fetched from peers and
//!   proven against it. Nothing is rolled back.
//! - No checkpoint file beside more than a genesis: every entry is checked
//!   with its signature and kept, and the store says so; a sequencer
//!   refuses to sign on such a log ([`LedgerStore::may_sequence`]).
//! - A checkpoint file in another form than we write (padded with lines of
//!   unknown keys, say) is written anew.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;

use carrier_proto::ledger::SignedCheckpoint;

use super::super::checkpoint_file::{self, check_checkpoint, read_checkpoint, verify_note};
use super::{LedgerStore, StoreError, check_framing, io_error, lock, log_format, replay};
use crate::ledger::embedded::log_format::End;

impl LedgerStore {
    /// Opens the ledger in `dir` and checks it against its checkpoint, as
    /// the module doc says.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(super::LOG_FILE);
        let file = OpenOptions::new().read(true).append(true).open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::Missing(path.clone()),
            _ => StoreError::Io { action: "opening", path: path.clone(), source: e },
        })?;
        lock(&file, &path)?;
        let bytes = fs::read(&path).map_err(io_error("reading", &path))?;
        // The genesis names the log key, which the checkpoint must verify
        // under before its size is believed.
        let scan = check_framing(&path, &bytes)?;
        let genesis = replay(&path, &bytes, &scan, Some(1))?;
        let stored = read_checkpoint(dir)?;
        let checkpoint = match &stored {
            Some(note) => Some(match verify_note(dir, &genesis.state, note) {
                Ok(checkpoint) => checkpoint,
                // After a handover, a later log key signs: one the log names.
                Err(error) => by_later_key(&replay(&path, &bytes, &scan, None)?.state, note).ok_or(error)?,
            }),
            None => None,
        };
        let held = genesis.payloads.len();
        let size = checkpoint.as_ref().map(|c| usize::try_from(c.size()).unwrap_or(usize::MAX));
        let (mut loaded, checkpoint, awaited) = match (checkpoint, size) {
            (Some(c), Some(size)) if held >= size => {
                let loaded = replay(&path, &bytes, &scan, Some(size))?;
                let checked = check_checkpoint(dir, &loaded.state, c.note().to_vec())?;
                (loaded, Some(checked), None)
            }
            (Some(c), _) => {
                tracing::warn!(path = %path.display(), held, signed = c.size(),
                    "the log is shorter than its checkpoint (cut on disk?): the missing entries will be fetched from peers and proven against it");
                (replay(&path, &bytes, &scan, None)?, None, Some(c))
            }
            (None, _) if held > 1 => {
                tracing::warn!(path = %path.display(), held,
                    "no checkpoint file beside the log: every entry was checked by its signature and kept; this log cannot be sequenced until the file is restored");
                (replay(&path, &bytes, &scan, None)?, None, None)
            }
            // A replica made from an invitation, before its first checkpoint.
            (None, _) => (genesis, None, None),
        };
        let mut len = match loaded.end {
            End::Torn { offset, .. } => offset as u64,
            _ => bytes.len() as u64,
        };
        if let End::Torn { detail, .. } = &loaded.end {
            tracing::warn!(path = %path.display(), entry = loaded.payloads.len(), %detail,
                "cutting a torn last ledger record left by an interrupted write");
        }
        let covered = checkpoint.as_ref().map_or(loaded.payloads.len(), |c| c.size() as usize);
        let mut cut_on_open = 0;
        if let Some(&(offset, _)) = loaded.payloads.get(covered) {
            cut_on_open = (loaded.payloads.len() - covered) as u64;
            tracing::warn!(path = %path.display(), cut = cut_on_open,
                "cutting ledger entries past the checkpoint: never acknowledged (an interrupted sequencing) or not yet proven (a catch-up); peers will send them again");
            len = offset - log_format::RECORD_HEADER as u64;
            loaded.payloads.truncate(covered);
        }
        if len < bytes.len() as u64 {
            file.set_len(len).map_err(io_error("cutting the tail of", &path))?;
            file.sync_all().map_err(io_error("syncing", &path))?;
        }
        let kept = checkpoint.as_ref().or(awaited.as_ref());
        if let (Some(kept), Some(stored)) = (kept, &stored) {
            repair(dir, kept, stored)?;
        }
        Ok(Self { path, file, state: loaded.state, payloads: loaded.payloads, len, checkpoint, awaited, cut_on_open })
    }
}

/// `note` opened under one of the later log keys `state` names (handed
/// over to); the checkpoint is then checked against the tree at its size,
/// where that key is in force.
fn by_later_key(state: &carrier_proto::ledger::LedgerState, note: &[u8]) -> Option<SignedCheckpoint> {
    let network = state.network()?;
    state.log_keys().into_iter().skip(1).find_map(|log_key| {
        SignedCheckpoint::open(note, &carrier_proto::ledger::LogTrust { log_key, ..network.trust() }).ok()
    })
}

/// Writes the checkpoint file anew if it holds more than the note we keep
/// (lines of unknown keys, repeated lines).
fn repair(dir: &Path, kept: &SignedCheckpoint, stored: &[u8]) -> Result<(), StoreError> {
    if kept.note() == stored {
        return Ok(());
    }
    tracing::warn!(dir = %dir.display(), was = stored.len(), now = kept.note().len(),
        "rewrote the checkpoint file with only the signatures of known keys");
    checkpoint_file::write(dir, kept)
}
