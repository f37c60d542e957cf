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
mod pending;
mod policy;

use std::fmt;

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::ledger::{
    BatchError, CheckpointError, Comparison, Directory, Entry, EntryHash, Head, LedgerError, Network, Rejection,
    SignedCheckpoint,
};
use carrier_proto::pb;
use tokio::sync::broadcast;

pub use embedded::{CHECKPOINT_FILE, EmbeddedLedger, LOG_FILE, LedgerStore, StoreError};
pub use pending::{MAX_PENDING, Pending, PendingError, PendingRequests};
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

/// Why the ledger did not sequence a request.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The entry breaks a ledger or sequencer rule (named).
    #[error("refused: {0}")]
    Rejected(Rejection),
    /// This daemon does not hold the log key: the request must travel to
    /// the sequencer.
    #[error("this daemon is not the network's sequencer")]
    NotSequencer,
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

/// Why entries fetched from a peer were not taken.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ExtendError {
    /// The checkpoint is not signed by this network's log key.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The batch does not prove out against the checkpoint (named entry).
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// An entry the checkpoint signs breaks a ledger rule: the sequencer
    /// signed what it should have refused.
    #[error("the sequencer signed an invalid entry: {0}")]
    Invalid(LedgerError),
    /// Our ledger moved while the batch was in flight; fetch again.
    #[error("the ledger moved on while the batch was fetched")]
    Moved,
    /// The entries could not be stored; the ledger is unchanged.
    #[error(transparent)]
    Store(StoreError),
}

/// Two validly signed checkpoints of our log that cannot both be true.
#[derive(Debug, Clone)]
pub struct Equivocation {
    /// Ours (or the one we hold).
    pub ours: SignedCheckpoint,
    /// The other.
    pub theirs: SignedCheckpoint,
    /// Where the other came from, for people.
    pub source: String,
}

impl Equivocation {
    /// The evidence as text: both signed notes, each checkable by anyone
    /// with the log's verifier key.
    pub fn evidence(&self) -> String {
        format!(
            "# Two checkpoints signed by this network's log key that cannot both be true.\n# The second came from {}.\n\n{}\n{}",
            self.source,
            self.ours.text(),
            self.theirs.text()
        )
    }
}

/// What the daemon asks of a ledger, whatever keeps it. The policy
/// questions built on these (who may link, who may message whom) are
/// provided methods in `policy.rs`.
pub trait Ledger: Directory + Send + Sync + fmt::Debug {
    /// The network this ledger belongs to, once its genesis is known.
    fn network(&self) -> Option<Network>;
    /// Size and root.
    fn head(&self) -> Head;
    /// The latest checkpoint signed by the log key (none for an in-memory
    /// ledger of tests and tools).
    fn checkpoint(&self) -> Option<SignedCheckpoint>;
    /// The leaf hash of entry `index`, if the ledger has it.
    fn entry_hash(&self, index: u64) -> Option<EntryHash>;
    /// Where the entry with leaf hash `hash` sits, if it is in the log.
    fn position(&self, hash: &EntryHash) -> Option<u64>;
    /// Up to `max` consecutive encoded entries from `from` on (fewer where
    /// this copy cannot serve them).
    fn entries(&self, from: u64, max: usize) -> Vec<Vec<u8>>;
    /// The Merkle root of the first `size` entries.
    fn root_at(&self, size: u64) -> Option<EntryHash>;
    /// A consistency proof from `old` to `new` entries.
    fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<EntryHash>>;
    /// An inclusion proof of entry `index` in the tree of `size` entries.
    fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<EntryHash>>;
    /// How a verified checkpoint stands to ours.
    fn compare(&self, theirs: &SignedCheckpoint) -> Option<Comparison>;
    /// The DID whose current signing key is `key`.
    fn did_of_key(&self, key: &SigningPublicKey) -> Option<Did>;
    /// The DID whose first key is `compact` (the 32 bytes messages carry).
    fn find_did(&self, compact: &[u8]) -> Option<Did>;
    /// The roles a device was registered with (none for apps).
    fn roles(&self, did: &Did) -> Vec<String>;
    /// Every active (unrevoked) device registered with `role`.
    fn devices_with_role(&self, role: &str) -> Vec<Did>;
    /// Every change from now on.
    fn subscribe(&self) -> broadcast::Receiver<LedgerUpdate>;
    /// True if this daemon holds the log key and sequences requests.
    fn is_sequencer(&self) -> bool;
    /// Sequences `entries` (one checkpoint for all) and tells subscribers;
    /// each gets its index or the rule it broke.
    fn submit(&self, entries: Vec<Entry>) -> Result<Vec<Result<u64, Rejection>>, SubmitError>;
    /// Takes `batch` (the entries from index `from` on, which must be our
    /// size), proven against `target` by `proof`, and stores `target` once
    /// the log reaches it; returns how many entries were applied.
    fn extend(
        &self,
        from: u64,
        batch: &[Vec<u8>],
        target: &SignedCheckpoint,
        proof: &[EntryHash],
    ) -> Result<u64, ExtendError>;
    /// Keeps `checkpoint` in place of ours if it signs the very same size
    /// and root (it may name the sequencing daemon where ours does not).
    fn adopt(&self, checkpoint: &SignedCheckpoint);
    /// Raises the equivocation alarm (logged as an error once; the
    /// evidence kept).
    fn raise_alarm(&self, equivocation: Equivocation);
    /// The equivocation alarm, if raised.
    fn alarm(&self) -> Option<String>;

    /// Checks a checkpoint note against this network's log key.
    fn verify_checkpoint(&self, note: &[u8]) -> Result<SignedCheckpoint, CheckpointError> {
        let network = self.network().ok_or(CheckpointError::NotSigned)?;
        SignedCheckpoint::verify(note, &network.trust())
    }
}

/// Up to `max` entries (at most `max_bytes` of them) from `from` on, never
/// past `tree_size` nor this ledger's end, with the consistency proof that
/// they lead to the tree of `tree_size` entries (empty when they reach it)
/// and this ledger's checkpoint: the answer to a peer's fetch (ledger sync)
/// or a newcomer's (join connections). Bounded whatever is asked.
pub fn sync_entries(ledger: &dyn Ledger, from: u64, max: u64, max_bytes: usize, tree_size: u64) -> pb::SyncEntries {
    let checkpoint = ledger.checkpoint().map(|c| c.note().to_vec()).unwrap_or_default();
    let size = tree_size.min(ledger.head().height);
    let wanted = size.saturating_sub(from).min(max);
    let mut entries = ledger.entries(from, usize::try_from(wanted).unwrap_or(usize::MAX));
    let mut bytes = 0;
    entries.retain(|e| {
        bytes += e.len();
        bytes <= max_bytes
    });
    let reached = from.saturating_add(entries.len() as u64);
    let proof = if entries.is_empty() || reached == tree_size {
        Vec::new()
    } else {
        ledger.consistency_proof(reached, tree_size).unwrap_or_default()
    };
    pb::SyncEntries { entries, proof: proof.iter().map(|h| h.0.to_vec()).collect(), checkpoint }
}

/// The 32-byte hashes of a proof as it travels, or `None` if any is
/// another length.
pub fn proof_hashes(raw: &[Vec<u8>]) -> Option<Vec<EntryHash>> {
    raw.iter().map(|h| h.as_slice().try_into().ok().map(EntryHash)).collect()
}
