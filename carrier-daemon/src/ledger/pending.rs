//! Requests this daemon took for the sequencer and has not yet seen
//! sequenced: one file each in the ledger directory's `pending/`, written
//! atomically (a temporary file, synced, renamed), so a request survives a
//! crash or a restart until the sequencer takes it or refuses it.
//!
//! ```text
//! pending/<since ms, 16 digits>-<leaf hash>.entry     the encoded entry
//! pending/<since ms, 16 digits>-<leaf hash>.refused   the rule it broke
//! pending/<since ms, 16 digits>-<leaf hash>.promise   the sequencer's signed
//!                                                     promise, until a
//!                                                     checkpoint shows it kept
//! ```
//!
//! File names sort in the order the requests came, which is the order they
//! are forwarded in (an author's register-then-revoke stays in order).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use carrier_proto::ledger::{Entry, EntryHash};
use tokio::sync::Notify;

/// Most requests held at once; more are refused until some are sequenced.
pub const MAX_PENDING: usize = 1024;

/// Why a request could not be held.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
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
    /// [`MAX_PENDING`] requests wait already.
    #[error("{MAX_PENDING} requests wait for the sequencer already; try again once it is back")]
    Full,
}

/// One request held for the sequencer.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The signed request.
    pub entry: Entry,
    /// When this daemon took it (ms since the Unix epoch).
    pub since_ms: u64,
    /// The rule it broke, once the sequencer refused it.
    pub refused: Option<String>,
    /// The sequencer's signed promise to put it in the log (an encoded
    /// `SequencerAnswer`), once it gave one.
    pub promise: Option<Vec<u8>>,
}

/// The durable queue of requests for the sequencer.
#[derive(Debug)]
pub struct PendingRequests {
    dir: PathBuf,
    /// Serialises changes, so two adds never race on one name.
    lock: Mutex<()>,
    changed: Notify,
}

impl PendingRequests {
    /// The queue in `dir` (made if missing).
    pub fn open(dir: &Path) -> Result<Self, PendingError> {
        fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        Ok(Self { dir: dir.to_owned(), lock: Mutex::new(()), changed: Notify::new() })
    }

    /// Holds `entry` (once: holding it again changes nothing).
    pub fn add(&self, entry: &Entry) -> Result<(), PendingError> {
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let held = self.names()?;
        let hash = entry.hash().to_hex();
        if held.iter().any(|name| name.contains(&hash)) {
            return Ok(());
        }
        if held.iter().filter(|n| n.ends_with(".entry")).count() >= MAX_PENDING {
            return Err(PendingError::Full);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        self.write(&format!("{now:016}-{hash}.entry"), entry.encoded())?;
        drop(guard);
        self.changed.notify_one();
        Ok(())
    }

    /// Every held request, oldest first. Files that do not parse (a crash
    /// mid-write leaves only temporary files, which are skipped) are
    /// logged and left alone.
    pub fn list(&self) -> Vec<Pending> {
        let names = self.names().unwrap_or_default();
        let mut out = Vec::new();
        for name in names.iter().filter(|n| n.ends_with(".entry")) {
            let path = self.dir.join(name);
            let Some(since_ms) = name.split('-').next().and_then(|s| s.parse().ok()) else { continue };
            let entry = match fs::read(&path).map(|bytes| Entry::decode(&bytes)) {
                Ok(Ok(entry)) => entry,
                Ok(Err(error)) => {
                    tracing::warn!(path = %path.display(), %error, "a pending request does not decode; leaving it");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot read a pending request");
                    continue;
                }
            };
            let refused = fs::read_to_string(path.with_extension("refused")).ok();
            let promise = fs::read(path.with_extension("promise")).ok();
            out.push(Pending { entry, since_ms, refused, promise });
        }
        out
    }

    /// Requests neither refused nor promised, oldest first: those to send.
    pub fn waiting(&self) -> Vec<Entry> {
        self.list().into_iter().filter(|p| p.refused.is_none() && p.promise.is_none()).map(|p| p.entry).collect()
    }

    /// Requests the sequencer promised, with its promise, oldest first.
    pub fn promised(&self) -> Vec<(Entry, Vec<u8>)> {
        self.list().into_iter().filter_map(|p| Some((p.entry, p.promise?))).collect()
    }

    /// Keeps the sequencer's `promise` for the request with leaf hash
    /// `hash`: it is no longer sent, but held until the log shows it.
    pub fn promise(&self, hash: &EntryHash, promise: &[u8]) {
        // The first promise stands: a sequencer cannot push its deadline
        // on by promising again.
        if self.promised().iter().any(|(entry, _)| entry.hash() == *hash) {
            return;
        }
        self.mark(hash, "promise", promise);
    }

    /// Drops the promise for `hash` (broken): the request is sent again.
    pub fn unpromise(&self, hash: &EntryHash) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let hex = hash.to_hex();
        for name in self.names().unwrap_or_default().into_iter().filter(|n| n.contains(&hex) && n.ends_with(".promise"))
        {
            if let Err(error) = fs::remove_file(self.dir.join(&name)) {
                tracing::warn!(file = %name, %error, "cannot drop a broken promise");
            }
        }
        self.changed.notify_one();
    }

    /// Forgets the request with leaf hash `hash` (sequenced).
    pub fn remove(&self, hash: &EntryHash) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let hex = hash.to_hex();
        for name in self.names().unwrap_or_default().into_iter().filter(|n| n.contains(&hex)) {
            if let Err(error) = fs::remove_file(self.dir.join(&name)) {
                tracing::warn!(file = %name, %error, "cannot remove a sequenced request");
            }
        }
    }

    /// Marks the request with leaf hash `hash` refused for `reason`; it is
    /// kept (for `carrierctl ledger pending`) but no longer forwarded.
    pub fn refuse(&self, hash: &EntryHash, reason: &str) {
        self.mark(hash, "refused", reason.as_bytes());
    }

    /// Writes `what` beside the request with leaf hash `hash`, as `.{kind}`.
    fn mark(&self, hash: &EntryHash, kind: &str, what: &[u8]) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let hex = hash.to_hex();
        let names = self.names().unwrap_or_default();
        if let Some(name) = names.iter().find(|n| n.contains(&hex) && n.ends_with(".entry"))
            && let Err(error) = self.write(&name.replace(".entry", &format!(".{kind}")), what)
        {
            tracing::warn!(%error, kind, "cannot record what the sequencer said of a request");
        }
    }

    /// Resolves when a request is added.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn names(&self) -> Result<Vec<String>, PendingError> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .map_err(io_error("listing", &self.dir))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), PendingError> {
        let (tmp, path) = (self.dir.join(format!(".{name}.tmp")), self.dir.join(name));
        fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
            .and_then(|()| crate::paths::make_private(&tmp))
            .and_then(|()| fs::rename(&tmp, &path))
            .and_then(|()| fs::File::open(&self.dir).and_then(|d| d.sync_all()))
            .map_err(io_error("writing", &path))
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PendingError + 'a {
    move |source| PendingError::Io { action, path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use carrier_proto::identity::{Identity, IdentityKind};
    use carrier_proto::ledger::Op;
    use carrier_proto::testing::TestNetwork;

    use super::*;

    fn request(net: &TestNetwork) -> Entry {
        let device = Identity::generate(IdentityKind::Device);
        let op = Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
        net.ledger.next_entry(op, 5, &net.registrar)
    }

    #[test]
    fn requests_survive_reopening_in_order_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let net = TestNetwork::new("pending");
        let (first, second) = (request(&net), request(&net));
        let queue = PendingRequests::open(dir.path()).unwrap();
        queue.add(&first).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        queue.add(&second).unwrap();
        queue.add(&first).unwrap();
        drop(queue);
        let queue = PendingRequests::open(dir.path()).unwrap();
        let waiting = queue.waiting();
        assert_eq!(waiting.iter().map(Entry::hash).collect::<Vec<_>>(), [first.hash(), second.hash()]);
        queue.refuse(&first.hash(), "not registered");
        assert_eq!(queue.waiting().len(), 1);
        assert_eq!(queue.list()[0].refused.as_deref(), Some("not registered"));
        queue.remove(&second.hash());
        queue.remove(&first.hash());
        assert!(queue.list().is_empty());
    }

    #[test]
    fn a_promised_request_is_held_unsent_until_its_promise_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let net = TestNetwork::new("pending");
        let entry = request(&net);
        let queue = PendingRequests::open(dir.path()).unwrap();
        queue.add(&entry).unwrap();
        queue.promise(&entry.hash(), b"signed promise");
        drop(queue);
        let queue = PendingRequests::open(dir.path()).unwrap();
        assert!(queue.waiting().is_empty());
        assert_eq!(queue.promised(), vec![(entry.clone(), b"signed promise".to_vec())]);
        queue.unpromise(&entry.hash());
        assert!(queue.promised().is_empty());
        assert_eq!(queue.waiting(), vec![entry.clone()]);
        queue.promise(&entry.hash(), b"again");
        queue.remove(&entry.hash());
        assert!(queue.list().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
