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
    /// Kept only in memory (tests, tools).
    Memory(LedgerState),
    /// Kept on disk; the store owns the state.
    Store(LedgerStore),
}

impl Backing {
    fn state(&self) -> &LedgerState {
        match self {
            Backing::Memory(state) => state,
            Backing::Store(store) => store.state(),
        }
    }
}

/// The daemon's ledger, shared between tasks.
pub struct SharedLedger {
    inner: RwLock<Backing>,
    updates: broadcast::Sender<LedgerUpdate>,
}

impl std::fmt::Debug for SharedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLedger").field("head", &self.head()).finish()
    }
}

impl SharedLedger {
    fn new(backing: Backing) -> Self {
        Self { inner: RwLock::new(backing), updates: broadcast::channel(256).0 }
    }

    /// A ledger kept in memory only.
    pub fn in_memory(state: LedgerState) -> Self {
        Self::new(Backing::Memory(state))
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
                Backing::Memory(state) => state.append(entry)?,
                Backing::Store(store) => store.append(entry)?,
            }
            guard.state().head()
        };
        // No subscribers is fine: nothing to tell.
        let _ = self.updates.send(LedgerUpdate { head, revoked });
        Ok(())
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LedgerUpdate> {
        self.updates.subscribe()
    }
}
