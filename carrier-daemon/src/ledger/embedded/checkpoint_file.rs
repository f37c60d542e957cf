//! The checkpoint file beside the ledger log: the latest C2SP signed note
//! the log key made for it, replaced atomically (a temporary file, synced,
//! renamed, the directory synced), and checked against the log's genesis
//! and tree whenever it is read.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use carrier_proto::ledger::{CheckpointError, LedgerState, MAX_NOTE_SIZE, SignedCheckpoint};

use super::store::{LOG_FILE, StoreError, io_error};

/// File name of the latest checkpoint (a C2SP signed note) beside the log.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// Replaces the checkpoint in `dir` with `checkpoint`.
pub(super) fn write(dir: &Path, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
    let (tmp, path) = (dir.join(".checkpoint.tmp"), dir.join(CHECKPOINT_FILE));
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(checkpoint.note()).and_then(|()| f.sync_all()))
        .and_then(|()| crate::paths::make_private(&tmp))
        .and_then(|()| fs::rename(&tmp, &path))
        .and_then(|()| File::open(dir).and_then(|d| d.sync_all()));
    written.map_err(io_error("writing checkpoint", &path))
}

/// Reads the checkpoint file in `dir` (not yet checked); `None` if there is
/// none. A file larger than any note is refused before it is read whole.
pub(super) fn read_checkpoint(dir: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let path = dir.join(CHECKPOINT_FILE);
    let len = match fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io { action: "reading", path, source: e }),
    };
    if len > MAX_NOTE_SIZE as u64 {
        let source = CheckpointError::TooLarge(usize::try_from(len).unwrap_or(usize::MAX));
        return Err(StoreError::Checkpoint { path, source });
    }
    fs::read(&path).map(Some).map_err(|e| StoreError::Io { action: "reading", path: path.clone(), source: e })
}

/// Reads the checkpoint file in `dir`, which must be there.
pub(super) fn require_checkpoint(dir: &Path, entries: u64) -> Result<Vec<u8>, StoreError> {
    read_checkpoint(dir)?.ok_or_else(|| StoreError::MissingCheckpoint { path: dir.join(CHECKPOINT_FILE), entries })
}

/// Checks `note` is signed by the log key `state`'s genesis names. The
/// witnesses' quorum is not asked of our own file: what a replica stored it
/// took with its quorum, and a sequencer stores its checkpoint before the
/// witnesses cosign it (peers take it only once they have).
pub(super) fn verify_note(dir: &Path, state: &LedgerState, note: &[u8]) -> Result<SignedCheckpoint, StoreError> {
    let Some(network) = state.network() else {
        return Err(StoreError::Mismatch { path: dir.join(LOG_FILE), detail: "the log has no genesis".into() });
    };
    SignedCheckpoint::open(note, &network.trust())
        .map_err(|source| StoreError::Checkpoint { path: dir.join(CHECKPOINT_FILE), source })
}

/// Checks `note` is signed by `state`'s log key and matches its tree.
pub(super) fn check_checkpoint(dir: &Path, state: &LedgerState, note: Vec<u8>) -> Result<SignedCheckpoint, StoreError> {
    let checkpoint = verify_note(dir, state, &note)?;
    if state.tree().root_at(checkpoint.size()) != Some(checkpoint.root()) {
        return Err(StoreError::Mismatch {
            path: dir.join(LOG_FILE),
            detail: format!("its first {} entries do not have the root its checkpoint signs", checkpoint.size()),
        });
    }
    Ok(checkpoint)
}
