//! The embedded ledger on disk: an append-only log file in the ledger
//! directory, and beside it the latest checkpoint the log key signed for it.
//!
//! One process at a time may write a ledger (an exclusive file lock says so).
//! Entries are checked against the ledger's rules first, then written and
//! synced (a batch with one sync), then applied to the in-memory index; a
//! failed write is cut back, so the file and the index never disagree. The
//! checkpoint is replaced atomically after the entries it covers are durable.
//!
//! Opening is fast: the entries are applied without their signatures and
//! the resulting root must equal the stored checkpoint's, which proves they
//! are the very entries verified when they were first appended. Entries a
//! crash left past the checkpoint are cut (they were never acknowledged).
//! [`LedgerStore::verify`] replays every signature instead. A torn last
//! record is cut on open with a warning; `verify` reports it, and any other
//! damage is a hard error naming the entry.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use carrier_proto::ledger::{
    CheckpointError, Entry, LedgerError, LedgerState, Rejection, Replay, Sequencer, SignedCheckpoint, VerifiedBatch,
};

use super::CHECKPOINT_FILE;
use super::checkpoint_file::{self, check_checkpoint, read_checkpoint, require_checkpoint};
use super::log_format::{self, End, HeaderProblem};

/// File name of the log inside the ledger directory.
pub const LOG_FILE: &str = "ledger.log";

/// Why the ledger store failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operating system refused a file operation.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// No ledger at the path.
    #[error("no ledger at {0}; make one with `carrierctl ledger genesis`")]
    Missing(PathBuf),
    /// Creating a ledger where one exists already.
    #[error("a ledger already exists at {0}")]
    Exists(PathBuf),
    /// Another process holds the ledger open for writing.
    #[error("ledger {0} is in use by another process (is carrierd running on it?)")]
    Locked(PathBuf),
    /// The file is not a ledger log.
    #[error("{0} is not a Carrier ledger log")]
    NotALedger(PathBuf),
    /// A ledger log of a format this build does not read.
    #[error(
        "{path} is ledger format version {version}; this build reads version 2 (a network made before the Merkle log must be made anew with `carrierctl ledger genesis`)"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u8,
    },
    /// A record is damaged and whole records follow it.
    #[error("{path}: ledger entry {index} is damaged on disk ({detail}); restore the ledger from a peer or a backup")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The damaged entry.
        index: usize,
        /// What is wrong.
        detail: String,
    },
    /// The last record is incomplete (found by a strict check).
    #[error("{path}: ledger entry {index} is incomplete ({detail}); opening the ledger will cut it")]
    Torn {
        /// The file.
        path: PathBuf,
        /// The incomplete entry.
        index: usize,
        /// What is wrong.
        detail: String,
    },
    /// A stored entry breaks a ledger rule.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The entry and the rule.
        source: LedgerError,
    },
    /// A batch checked against another size of the log than it now has.
    #[error("the ledger moved on while the batch was checked; fetch again")]
    Moved,
    /// A new entry breaks a ledger rule; nothing was written.
    #[error("entry refused: {0}")]
    Rejected(#[from] Rejection),
    /// The checkpoint file is gone but the log holds more than its genesis:
    /// it once had a checkpoint, and starting without one could sign
    /// another history.
    #[error(
        "{path} is missing but the log beside it holds {entries} entries; restore the checkpoint file from a backup (a sequencer never starts over on a log it once signed)"
    )]
    MissingCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Entries in the log.
        entries: u64,
    },
    /// A checkpoint smaller than the one stored: the store never goes back.
    #[error("refusing to replace the checkpoint of {stored} entries with one of {offered}: a ledger never goes back")]
    Rollback {
        /// Entries the stored checkpoint signs.
        stored: u64,
        /// Entries the offered one signs.
        offered: u64,
    },
    /// The stored checkpoint is missing, unsigned or for another log.
    #[error("{path}: {source}; check the ledger with `carrierctl ledger verify`")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        source: CheckpointError,
    },
    /// The log does not hold what its checkpoint signs.
    #[error("{path}: {detail}; restore the ledger from a peer or a backup")]
    Mismatch {
        /// The log file.
        path: PathBuf,
        /// How they differ.
        detail: String,
    },
}

/// An open, verified, writable ledger.
#[derive(Debug)]
pub struct LedgerStore {
    path: PathBuf,
    /// Open for reading and appending; holds the exclusive lock.
    file: File,
    state: LedgerState,
    /// File offset and length of each entry's payload, for reading entries
    /// back without keeping them all in memory.
    payloads: Vec<(u64, u32)>,
    /// Length of the file up to the end of the last whole record.
    len: u64,
    /// The latest checkpoint, covering every entry; `None` in a replica
    /// that holds nothing but the genesis (made from an invitation, whose
    /// network id is the genesis's hash: nothing to sign yet), or whose log
    /// is behind its checkpoint (see `awaited`) or lost its checkpoint file.
    checkpoint: Option<SignedCheckpoint>,
    /// A checkpoint this store held whose entries it lacks (its log was cut
    /// short on disk): the entries are fetched from peers and proven
    /// against it before anything else is taken.
    awaited: Option<SignedCheckpoint>,
    /// Entries cut at open because no checkpoint covered them.
    cut_on_open: u64,
}

impl LedgerStore {
    /// Makes a new ledger in `dir` whose first entry is `genesis`, sequenced
    /// and checkpointed by `sequencer`.
    pub fn create(dir: &Path, genesis: Entry, sequencer: &mut Sequencer) -> Result<Self, StoreError> {
        let mut store = Self::new_log(dir)?;
        let mut state = LedgerState::new();
        let now = genesis.body().time_ms;
        sequencer.sequence(&mut state, genesis, now, |entry| store.write_records(&[entry.encoded()]))?;
        store.state = state;
        store.save_checkpoint(sequencer.checkpoint(&store.state, now))?;
        Ok(store)
    }

    /// Makes a replica in `dir` that holds only `genesis` (from an
    /// invitation); it fills up from peers, proven against checkpoints.
    pub fn create_replica(dir: &Path, genesis: Entry) -> Result<Self, StoreError> {
        let mut store = Self::new_log(dir)?;
        let mut state = LedgerState::new();
        state.append_with(genesis, |entry| store.write_records(&[entry.encoded()]))?;
        store.state = state;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("syncing directory", dir))?;
        Ok(store)
    }

    /// A new, locked log file in `dir` holding only the header; refuses to
    /// touch an existing one.
    fn new_log(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOG_FILE);
        fs::create_dir_all(dir).map_err(io_error("creating ledger directory", dir))?;
        let file =
            OpenOptions::new().read(true).append(true).create_new(true).mode(0o600).open(&path).map_err(|e| match e
                .kind()
            {
                io::ErrorKind::AlreadyExists => StoreError::Exists(path.clone()),
                _ => StoreError::Io { action: "creating", path: path.clone(), source: e },
            })?;
        lock(&file, &path)?;
        let mut store = Self {
            path,
            file,
            state: LedgerState::new(),
            payloads: vec![],
            len: 0,
            checkpoint: None,
            awaited: None,
            cut_on_open: 0,
        };
        store.write_synced(log_format::HEADER)?;
        Ok(store)
    }

    /// Verifies the ledger in `dir` without changing it: every signature
    /// and rule from genesis, and the root against the checkpoint. Unlike
    /// [`open`](Self::open), a torn last record is an error.
    pub fn verify(dir: &Path) -> Result<(LedgerState, SignedCheckpoint), StoreError> {
        let (_, loaded) = load_strict(dir)?;
        let note = match read_checkpoint(dir)? {
            None if loaded.state.height() == 1 => {
                return Err(StoreError::Mismatch {
                    path: dir.join(LOG_FILE),
                    detail: "it holds only the genesis of an invitation and no checkpoint yet; the daemon fetches \
                             the rest from its bootstrap daemons"
                        .into(),
                });
            }
            None => {
                return Err(StoreError::MissingCheckpoint {
                    path: dir.join(CHECKPOINT_FILE),
                    entries: loaded.state.height(),
                });
            }
            Some(note) => note,
        };
        let checkpoint = check_checkpoint(dir, &loaded.state, note)?;
        if checkpoint.size() != loaded.state.height() {
            return Err(StoreError::Mismatch {
                path: dir.join(LOG_FILE),
                detail: format!(
                    "it holds {} entries but its checkpoint signs {}",
                    loaded.state.height(),
                    checkpoint.size()
                ),
            });
        }
        Ok((loaded.state, checkpoint))
    }

    /// The checkpoint stored in `dir`, checked against the log's genesis.
    pub fn read_checkpoint(dir: &Path) -> Result<SignedCheckpoint, StoreError> {
        let (_, loaded) = load_strict(dir)?;
        check_checkpoint(dir, &loaded.state, require_checkpoint(dir, loaded.state.height())?)
    }

    /// Every encoded entry of the ledger in `dir`, verified, without
    /// taking the writer's lock (for handing them to a daemon).
    pub fn read_all(dir: &Path) -> Result<Vec<Vec<u8>>, StoreError> {
        let (bytes, loaded) = load_strict(dir)?;
        Ok(loaded.payloads.iter().map(|&(offset, len)| bytes[offset as usize..][..len as usize].to_vec()).collect())
    }

    /// The verified state.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// What this store holds, as catch-up judges it.
    pub fn held(&self) -> carrier_proto::ledger::Held<'_> {
        carrier_proto::ledger::Held {
            state: &self.state,
            checkpoint: self.checkpoint.as_ref(),
            awaited: self.awaited.as_ref(),
        }
    }

    /// The latest checkpoint (none in a genesis-only replica).
    pub fn checkpoint(&self) -> Option<&SignedCheckpoint> {
        self.checkpoint.as_ref()
    }

    /// A checkpoint this store holds whose entries its log lacks (cut
    /// short on disk), to be fetched from peers and proven against it.
    pub fn awaited(&self) -> Option<&SignedCheckpoint> {
        self.awaited.as_ref()
    }

    /// Whether a sequencer may sign new checkpoints on this log: it must
    /// hold every entry its last checkpoint signs, and have one (a log that
    /// lost its checkpoint file may not be the whole log the key signed).
    pub fn may_sequence(&self) -> Result<(), StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let checkpoint = dir.join(super::CHECKPOINT_FILE);
        if let Some(awaited) = &self.awaited {
            let detail = format!(
                "it holds {} entries but its checkpoint {} signs {}: a sequencer that lost entries would sign another history; restore the log from a backup or let it catch up as a replica first",
                self.state.height(),
                checkpoint.display(),
                awaited.size()
            );
            return Err(StoreError::Mismatch { path: self.path.clone(), detail });
        }
        if self.checkpoint.is_none() && self.state.height() > 1 {
            return Err(StoreError::MissingCheckpoint { path: checkpoint, entries: self.state.height() });
        }
        if self.cut_on_open > super::MAX_SEQUENCED_AT_ONCE {
            let detail = format!(
                "{} entries past its checkpoint were cut at open, more than one batch: the checkpoint file is older than the log (restored from a backup?); a sequencer would sign another history",
                self.cut_on_open
            );
            return Err(StoreError::Mismatch { path: self.path.clone(), detail });
        }
        Ok(())
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sequences `entries` with `sequencer` (each checked against its rules
    /// and the ledger's, and made durable before it applies), then stores
    /// one new checkpoint for them all. Returns each entry's index or why
    /// it was refused; a refused entry changes nothing.
    pub fn sequence(
        &mut self,
        sequencer: &mut Sequencer,
        entries: Vec<Entry>,
        now_ms: u64,
    ) -> Result<Vec<Result<u64, Rejection>>, StoreError> {
        let mut state = std::mem::take(&mut self.state);
        let mut results = Vec::with_capacity(entries.len());
        let mut failed = None;
        for entry in entries {
            let result = sequencer.sequence(&mut state, entry, now_ms, |e| self.write_records(&[e.encoded()]));
            match result {
                Ok(index) => results.push(Ok(index)),
                Err(StoreError::Rejected(rejection)) => results.push(Err(rejection)),
                Err(other) => {
                    failed = Some(other);
                    break;
                }
            }
        }
        self.state = state;
        if results.iter().any(Result::is_ok) {
            self.save_checkpoint(sequencer.checkpoint(&self.state, now_ms))?;
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(results),
        }
    }

    /// Applies a batch proven against a signed checkpoint (see
    /// `carrier_proto::ledger::check_batch`), written with one sync; stores
    /// `checkpoint` once the log reaches it. Returns how many were applied.
    pub fn extend(&mut self, batch: VerifiedBatch, checkpoint: &SignedCheckpoint) -> Result<u64, StoreError> {
        let before = self.state.height();
        if batch.from() != before {
            return Err(StoreError::Moved);
        }
        let mut state = std::mem::take(&mut self.state);
        let applied = batch.apply(&mut state);
        let count = state.height() - before;
        let payloads: Vec<&[u8]> = batch.entries()[..count as usize].iter().map(Entry::encoded).collect();
        let written = self.write_records(&payloads);
        self.state = state;
        if let Err(error) = written {
            // The file is as it was; make the index agree with it again.
            self.state = load(&self.path, &fs::read(&self.path).map_err(io_error("reading", &self.path))?, None)?.state;
            return Err(error);
        }
        if let Err(source) = applied {
            return Err(StoreError::Invalid { path: self.path.clone(), source });
        }
        if self.state.height() == checkpoint.size() {
            self.save_checkpoint(checkpoint.clone())?;
        }
        Ok(count)
    }

    /// Replaces the stored checkpoint (atomically: a new file renamed over
    /// the old, both synced).
    pub fn save_checkpoint(&mut self, checkpoint: SignedCheckpoint) -> Result<(), StoreError> {
        let stored = self.checkpoint.as_ref().or(self.awaited.as_ref()).map_or(0, SignedCheckpoint::size);
        if checkpoint.size() < stored {
            return Err(StoreError::Rollback { stored, offered: checkpoint.size() });
        }
        checkpoint_file::write(self.path.parent().unwrap_or(Path::new(".")), &checkpoint)?;
        if self.awaited.as_ref().is_some_and(|a| a.size() <= checkpoint.size()) {
            self.awaited = None;
        }
        self.checkpoint = Some(checkpoint);
        Ok(())
    }

    /// Reads the encoded entry at `index`.
    pub fn read_entry(&self, index: u64) -> Result<Option<Entry>, StoreError> {
        let Some(&(offset, len)) = usize::try_from(index).ok().and_then(|i| self.payloads.get(i)) else {
            return Ok(None);
        };
        let mut bytes = vec![0; len as usize];
        self.file.read_exact_at(&mut bytes, offset).map_err(io_error("reading", &self.path))?;
        // The file is ours and was verified on open; a failure here means it
        // changed underneath us.
        Entry::decode(&bytes).map(Some).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            index: index as usize,
            detail: e.to_string(),
        })
    }

    /// The encoded entry at `index`, as sent to peers: read back and
    /// checked against its leaf hash in the tree (not decoded).
    pub fn read_encoded(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(&(offset, len)) = usize::try_from(index).ok().and_then(|i| self.payloads.get(i)) else {
            return Ok(None);
        };
        let mut bytes = vec![0; len as usize];
        self.file.read_exact_at(&mut bytes, offset).map_err(io_error("reading", &self.path))?;
        if self.state.entry_hash(index) != Some(carrier_proto::ledger::merkle::leaf_hash(&bytes)) {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                index: index as usize,
                detail: "it changed on disk since it was verified".into(),
            });
        }
        Ok(Some(bytes))
    }

    /// Writes records for `payloads` with one sync.
    fn write_records(&mut self, payloads: &[&[u8]]) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        let mut placed = Vec::with_capacity(payloads.len());
        for payload in payloads {
            placed.push((self.len + bytes.len() as u64 + log_format::RECORD_HEADER as u64, payload.len() as u32));
            bytes.extend_from_slice(&log_format::record(payload));
        }
        self.write_synced(&bytes)?;
        self.payloads.extend(placed);
        Ok(())
    }

    /// Appends `bytes` and syncs; on failure cuts the file back to where it
    /// was, so a half-written record never stays behind.
    fn write_synced(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let written = self.file.write_all(bytes).and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            let _ = self.file.set_len(self.len);
            return Err(StoreError::Io { action: "appending to", path: self.path.clone(), source });
        }
        self.len += bytes.len() as u64;
        Ok(())
    }
}

struct Loaded {
    state: LedgerState,
    payloads: Vec<(u64, u32)>,
    end: End,
}

/// Reads and verifies the ledger in `dir` without changing it; a torn last
/// record is an error here.
fn load_strict(dir: &Path) -> Result<(Vec<u8>, Loaded), StoreError> {
    let path = dir.join(LOG_FILE);
    let bytes = fs::read(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => StoreError::Missing(path.clone()),
        _ => StoreError::Io { action: "reading", path: path.clone(), source: e },
    })?;
    let loaded = load(&path, &bytes, None)?;
    if let End::Torn { detail, .. } = &loaded.end {
        return Err(StoreError::Torn { path, index: loaded.payloads.len(), detail: detail.clone() });
    }
    Ok((bytes, loaded))
}

/// Checks the header and framing, then replays every entry: all of them
/// with their signatures, or (`known`: a checkpoint signs the first that
/// many) those without, the root being checked against the checkpoint after.
fn load(path: &Path, bytes: &[u8], known: Option<usize>) -> Result<Loaded, StoreError> {
    replay(path, bytes, &check_framing(path, bytes)?, known)
}

/// Checks the header and finds every record (one pass over the file).
fn check_framing(path: &Path, bytes: &[u8]) -> Result<log_format::Scan, StoreError> {
    log_format::check_header(bytes).map_err(|problem| match problem {
        HeaderProblem::NotALedger => StoreError::NotALedger(path.to_owned()),
        HeaderProblem::Version(version) => StoreError::UnsupportedVersion { path: path.to_owned(), version },
    })?;
    Ok(log_format::scan(bytes))
}

/// Replays the records `scan` found, as [`load`] says.
fn replay(path: &Path, bytes: &[u8], scan: &log_format::Scan, known: Option<usize>) -> Result<Loaded, StoreError> {
    let (mut replay, replayed) = match known {
        Some(size) => (Replay::known(LedgerState::new()), size.min(scan.payloads.len())),
        None => (Replay::new(LedgerState::new()), scan.payloads.len()),
    };
    for range in &scan.payloads[..replayed] {
        replay.push(&bytes[range.clone()]).map_err(|source| StoreError::Invalid { path: path.to_owned(), source })?;
    }
    let state = replay.finish().map_err(|source| StoreError::Invalid { path: path.to_owned(), source })?;
    if let End::Corrupt { index, detail } = &scan.end {
        return Err(StoreError::Corrupt { path: path.to_owned(), index: *index, detail: detail.clone() });
    }
    let payloads = scan.payloads.iter().map(|r| (r.start as u64, r.len() as u32)).collect();
    Ok(Loaded { state, payloads, end: scan.end.clone() })
}

fn lock(file: &File, path: &Path) -> Result<(), StoreError> {
    file.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => StoreError::Locked(path.to_owned()),
        fs::TryLockError::Error(source) => StoreError::Io { action: "locking", path: path.to_owned(), source },
    })
}

pub(super) fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { action, path: path.to_owned(), source }
}

#[path = "store_open.rs"]
mod open;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
