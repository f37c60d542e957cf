//! The embedded ledger: the verified log on disk (`store.rs`, with its
//! byte rules in `log_format.rs`) or in memory, one state behind a lock,
//! with a broadcast of every change so links can react to revocations.
//! This is the only module that sees the concrete [`LedgerState`]; the
//! daemon reaches it through the [`Ledger`] trait.

mod log_format;
mod store;

use std::sync::{PoisonError, RwLock};

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::ledger::{Directory, Entry, EntryHash, Head, LedgerState, Network, Op, Standing, Subject};
use tokio::sync::broadcast;

pub use store::{LOG_FILE, LedgerStore, StoreError};

use super::{Ledger, LedgerUpdate, SubmitError};

enum Backing {
    /// Kept only in memory (tests, tools): the state it started from and the
    /// encoded entries appended since, which it can hand to peers.
    Memory { state: LedgerState, base: u64, appended: Vec<Vec<u8>> },
    /// Kept on disk; the store owns the state and every entry.
    Store(LedgerStore),
}

impl Backing {
    fn state(&self) -> &LedgerState {
        match self {
            Backing::Memory { state, .. } => state,
            Backing::Store(store) => store.state(),
        }
    }

    fn entry(&self, seq: u64) -> Option<Vec<u8>> {
        match self {
            Backing::Memory { base, appended, .. } => {
                seq.checked_sub(*base).and_then(|i| appended.get(usize::try_from(i).ok()?)).cloned()
            }
            Backing::Store(store) => store.read_entry(seq).ok().flatten().map(|e| e.encoded().to_vec()),
        }
    }
}

/// The embedded ledger, shared between tasks.
pub struct EmbeddedLedger {
    inner: RwLock<Backing>,
    updates: broadcast::Sender<LedgerUpdate>,
    /// Set when a peer showed a ledger that forks from ours: two validly
    /// signed histories of one network. Shown in `status`; never cleared
    /// while the daemon runs.
    alarm: RwLock<Option<String>>,
}

impl std::fmt::Debug for EmbeddedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLedger").field("head", &self.head()).finish()
    }
}

impl EmbeddedLedger {
    fn new(backing: Backing) -> Self {
        Self { inner: RwLock::new(backing), updates: broadcast::channel(256).0, alarm: RwLock::new(None) }
    }

    /// A ledger kept in memory only.
    pub fn in_memory(state: LedgerState) -> Self {
        let base = state.head().height;
        Self::new(Backing::Memory { state, base, appended: Vec::new() })
    }

    /// A ledger kept on disk.
    pub fn with_store(store: LedgerStore) -> Self {
        Self::new(Backing::Store(store))
    }

    /// Runs `f` on the current state. Keep `f` short: appends wait for it.
    fn read<R>(&self, f: impl FnOnce(&LedgerState) -> R) -> R {
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f(guard.state())
    }

    /// Checks, stores (if on disk) and applies `entry`, then tells
    /// subscribers.
    pub fn append(&self, entry: Entry) -> Result<(), StoreError> {
        let (revoked, rotated) = match entry.op() {
            Op::Revoke { did, .. } => (Some(*did), None),
            Op::RotateKeys { did, .. } => (None, Some(*did)),
            _ => (None, None),
        };
        let head = {
            let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            match &mut *guard {
                Backing::Memory { state, appended, .. } => {
                    let encoded = entry.encoded().to_vec();
                    state.append(entry)?;
                    appended.push(encoded);
                }
                Backing::Store(store) => store.append(entry)?,
            }
            guard.state().head()
        };
        // No subscribers is fine: nothing to tell.
        let _ = self.updates.send(LedgerUpdate { head, revoked, rotated });
        Ok(())
    }
}

impl Directory for EmbeddedLedger {
    fn standing(&self, did: &Did) -> Option<Standing> {
        self.read(|l| l.standing(did))
    }
}

impl Ledger for EmbeddedLedger {
    fn network(&self) -> Option<Network> {
        self.read(|l| l.network().cloned())
    }

    fn head(&self) -> Head {
        self.read(LedgerState::head)
    }

    fn entry_hash(&self, seq: u64) -> Option<EntryHash> {
        self.read(|l| l.entry_hash(seq))
    }

    fn entries(&self, from: u64, max: usize) -> Vec<Vec<u8>> {
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let end = guard.state().head().height.min(from.saturating_add(max as u64));
        (from..end).map_while(|seq| guard.entry(seq)).collect()
    }

    fn did_of_key(&self, key: &SigningPublicKey) -> Option<Did> {
        self.read(|l| l.did_of_key(key))
    }

    fn find_did(&self, compact: &[u8]) -> Option<Did> {
        self.read(|l| l.find_did(compact))
    }

    fn roles(&self, did: &Did) -> Vec<String> {
        self.read(|l| match l.resolve(did).map(|r| &r.record.subject) {
            Some(Subject::Device { roles }) => roles.clone(),
            _ => Vec::new(),
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<LedgerUpdate> {
        self.updates.subscribe()
    }

    fn submit(&self, entry: Entry) -> Result<(), SubmitError> {
        Ok(self.append(entry)?)
    }

    fn raise_alarm(&self, message: String) {
        let mut alarm = self.alarm.write().unwrap_or_else(PoisonError::into_inner);
        if alarm.is_none() {
            tracing::error!(%message, "ledger equivocation: refusing the fork");
            *alarm = Some(message);
        }
    }

    fn alarm(&self) -> Option<String> {
        self.alarm.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
