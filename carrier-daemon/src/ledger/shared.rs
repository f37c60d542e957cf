//! The ledger as the running daemon shares it: one state behind a lock,
//! read by every handshake, appended to by the control plane and by sync,
//! with a broadcast of every change so links can react to revocations.

use std::sync::{PoisonError, RwLock};

use carrier_proto::identity::Did;
use carrier_proto::ledger::{Entry, Head, LedgerState, Op};
use tokio::sync::broadcast;

use super::{LedgerStore, StoreError};

/// A change to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerUpdate {
    /// The head after the change.
    pub head: Head,
    /// The DID the new entry revoked, if it was a revocation.
    pub revoked: Option<Did>,
}

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

/// The daemon's ledger, shared between tasks.
pub struct SharedLedger {
    inner: RwLock<Backing>,
    updates: broadcast::Sender<LedgerUpdate>,
    /// Set when a peer showed a ledger that forks from ours: two validly
    /// signed histories of one network. Shown in `status`; never cleared
    /// while the daemon runs.
    alarm: RwLock<Option<String>>,
}

impl std::fmt::Debug for SharedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLedger").field("head", &self.head()).finish()
    }
}

impl SharedLedger {
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
    pub fn read<R>(&self, f: impl FnOnce(&LedgerState) -> R) -> R {
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f(guard.state())
    }

    /// The current head.
    pub fn head(&self) -> Head {
        self.read(LedgerState::head)
    }

    /// Checks, stores (if on disk) and applies `entry`, then tells
    /// subscribers.
    pub fn append(&self, entry: Entry) -> Result<(), StoreError> {
        let revoked = match entry.op() {
            Op::Revoke { did, .. } => Some(*did),
            _ => None,
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
        let _ = self.updates.send(LedgerUpdate { head, revoked });
        Ok(())
    }

    /// Up to `max` consecutive encoded entries from `from` on (fewer where
    /// this copy cannot serve them).
    pub fn entries(&self, from: u64, max: usize) -> Vec<Vec<u8>> {
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let end = guard.state().head().height.min(from.saturating_add(max as u64));
        (from..end).map_while(|seq| guard.entry(seq)).collect()
    }

    /// Raises the fork alarm (logged as an error once).
    pub fn raise_alarm(&self, message: String) {
        let mut alarm = self.alarm.write().unwrap_or_else(PoisonError::into_inner);
        if alarm.is_none() {
            tracing::error!(%message, "ledger equivocation: refusing the fork");
            *alarm = Some(message);
        }
    }

    /// The fork alarm, if raised.
    pub fn alarm(&self) -> Option<String> {
        self.alarm.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LedgerUpdate> {
        self.updates.subscribe()
    }
}
