//! The ledger as the daemon asks it: the [`Ledger`] trait, and its
//! back-ends. The rules themselves live in `carrier_proto::ledger`.
//!
//! ```text
//!  link (admission) · overlay (gate) · protocols · delivery · ipc
//!        │  one question per decision (policy.rs)
//!        ▼
//!  trait Ledger ──▶ embedded/ (the verified log on disk, or in memory)
//! ```
//!
//! Only `embedded/` sees the concrete ledger state; everything else holds an
//! `Arc<dyn Ledger>`.

mod embedded;
mod policy;

use std::fmt;

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::ledger::{Directory, Entry, EntryHash, Head, Network, Rejection};
use tokio::sync::broadcast;

pub use embedded::{EmbeddedLedger, LOG_FILE, LedgerStore, StoreError};
pub use policy::{Denial, Party, Policy, Refused};

/// A change to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerUpdate {
    /// The head after the change.
    pub head: Head,
    /// The DID the new entry revoked, if it was a revocation.
    pub revoked: Option<Did>,
    /// The DID whose keys the new entry rotated, if it was a rotation.
    pub rotated: Option<Did>,
}

/// Why the ledger did not take an entry.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The entry breaks a ledger rule (named).
    #[error("refused: {0}")]
    Rejected(Rejection),
    /// The entry could not be stored; the ledger is unchanged.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for SubmitError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Rejected(rejection) => SubmitError::Rejected(rejection),
            other => SubmitError::Store(other),
        }
    }
}

/// What the daemon asks of a ledger, whatever keeps it. The policy
/// questions built on these (who may link, who may message whom) are
/// provided methods in `policy.rs`.
pub trait Ledger: Directory + Send + Sync + fmt::Debug {
    /// The network this ledger belongs to, once its genesis is known.
    fn network(&self) -> Option<Network>;
    /// Height and last hash.
    fn head(&self) -> Head;
    /// The hash of entry `seq`, if the ledger has it.
    fn entry_hash(&self, seq: u64) -> Option<EntryHash>;
    /// Up to `max` consecutive encoded entries from `from` on (fewer where
    /// this copy cannot serve them).
    fn entries(&self, from: u64, max: usize) -> Vec<Vec<u8>>;
    /// The DID whose current signing key is `key`.
    fn did_of_key(&self, key: &SigningPublicKey) -> Option<Did>;
    /// The DID whose first key is `compact` (the 32 bytes messages carry).
    fn find_did(&self, compact: &[u8]) -> Option<Did>;
    /// The roles a device was registered with (none for apps).
    fn roles(&self, did: &Did) -> Vec<String>;
    /// Every change from now on.
    fn subscribe(&self) -> broadcast::Receiver<LedgerUpdate>;
    /// Checks `entry` against every rule, keeps it, and tells subscribers.
    fn submit(&self, entry: Entry) -> Result<(), SubmitError>;
    /// Raises the equivocation alarm (logged as an error once).
    fn raise_alarm(&self, message: String);
    /// The equivocation alarm, if raised.
    fn alarm(&self) -> Option<String>;
}
