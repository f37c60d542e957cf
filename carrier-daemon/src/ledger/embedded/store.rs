//! The embedded ledger on disk: an append-only log file in the ledger
//! directory, verified from genesis every time it is opened.
//!
//! One process at a time may write a ledger (an exclusive file lock says so).
//! Appends are checked against the ledger's rules first, then written and
//! synced, then applied to the in-memory index; a failed write is cut back,
//! so the file and the index never disagree. A torn last record left by a
//! crash is cut on open with a warning; [`LedgerStore::verify`] reports it
//! instead, and any other damage is a hard error naming the entry.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use carrier_proto::ledger::{Entry, LedgerError, LedgerState, Rejection, Replay};

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
    #[error("{path} is ledger format version {version}; this build reads version 1")]
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
    /// A new entry breaks a ledger rule; nothing was written.
    #[error("entry refused: {0}")]
    Rejected(#[from] Rejection),
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
}

impl LedgerStore {
    /// Makes a new ledger in `dir` whose first entry is `genesis`.
    pub fn create(dir: &Path, genesis: Entry) -> Result<Self, StoreError> {
        let path = dir.join(LOG_FILE);
        fs::create_dir_all(dir).map_err(io_error("creating ledger directory", dir))?;
        let file =
            OpenOptions::new().read(true).append(true).create_new(true).open(&path).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => StoreError::Exists(path.clone()),
                _ => StoreError::Io { action: "creating", path: path.clone(), source: e },
            })?;
        lock(&file, &path)?;
        let mut store = Self { path, file, state: LedgerState::new(), payloads: vec![], len: 0 };
        store.write_synced(log_format::HEADER)?;
        store.append(genesis)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("syncing directory", dir))?;
        Ok(store)
    }

    /// Opens and verifies the ledger in `dir`, cutting a torn last record
    /// (left by a crash) with a warning.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new().read(true).append(true).open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::Missing(path.clone()),
            _ => StoreError::Io { action: "opening", path: path.clone(), source: e },
        })?;
        lock(&file, &path)?;
        let bytes = fs::read(&path).map_err(io_error("reading", &path))?;
        let loaded = load(&path, &bytes)?;
        let len = match loaded.end {
            End::Torn { offset, detail } => {
                tracing::warn!(path = %path.display(), entry = loaded.payloads.len(), %detail,
                    "cutting a torn last ledger record left by an interrupted write");
                file.set_len(offset as u64).map_err(io_error("cutting torn record from", &path))?;
                file.sync_all().map_err(io_error("syncing", &path))?;
                offset as u64
            }
            _ => bytes.len() as u64,
        };
        Ok(Self { path, file, state: loaded.state, payloads: loaded.payloads, len })
    }

    /// Verifies the ledger in `dir` without changing it. Unlike
    /// [`open`](Self::open), a torn last record is an error.
    pub fn verify(dir: &Path) -> Result<LedgerState, StoreError> {
        Ok(load_strict(dir)?.1.state)
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

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks `entry` against the ledger, makes it durable, then applies it.
    /// A refused entry changes nothing, on disk or in memory.
    pub fn append(&mut self, entry: Entry) -> Result<(), StoreError> {
        let mut state = std::mem::take(&mut self.state);
        let result = state.append_with(entry, |entry| self.write_record(entry.encoded()));
        self.state = state;
        result
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

    fn write_record(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        let offset = self.len + log_format::RECORD_HEADER as u64;
        self.write_synced(&log_format::record(payload))?;
        self.payloads.push((offset, payload.len() as u32));
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
    let loaded = load(&path, &bytes)?;
    if let End::Torn { detail, .. } = &loaded.end {
        return Err(StoreError::Torn { path, index: loaded.payloads.len(), detail: detail.clone() });
    }
    Ok((bytes, loaded))
}

/// Checks the header and framing, then replays every entry.
fn load(path: &Path, bytes: &[u8]) -> Result<Loaded, StoreError> {
    log_format::check_header(bytes).map_err(|problem| match problem {
        HeaderProblem::NotALedger => StoreError::NotALedger(path.to_owned()),
        HeaderProblem::Version(version) => StoreError::UnsupportedVersion { path: path.to_owned(), version },
    })?;
    let scan = log_format::scan(bytes);
    let mut replay = Replay::new(LedgerState::new());
    for range in &scan.payloads {
        replay.push(&bytes[range.clone()]).map_err(|source| StoreError::Invalid { path: path.to_owned(), source })?;
    }
    let state = replay.finish().map_err(|source| StoreError::Invalid { path: path.to_owned(), source })?;
    if let End::Corrupt { index, detail } = scan.end {
        return Err(StoreError::Corrupt { path: path.to_owned(), index, detail });
    }
    let payloads = scan.payloads.iter().map(|r| (r.start as u64, r.len() as u32)).collect();
    Ok(Loaded { state, payloads, end: scan.end })
}

fn lock(file: &File, path: &Path) -> Result<(), StoreError> {
    file.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => StoreError::Locked(path.to_owned()),
        fs::TryLockError::Error(source) => StoreError::Io { action: "locking", path: path.to_owned(), source },
    })
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { action, path: path.to_owned(), source }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
