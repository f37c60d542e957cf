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
mod follow;
mod freshness;
mod pending;
mod policy;

use std::fmt;

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::ledger::{
    Admitted, Answer, BrokenPromise, CatchUp, CatchUpError, CheckpointError, Cosignature, Directory, Entry, EntryHash,
    Fetch, Fork, Head, Judgement, LedgerError, Network, Rejection, RevocationRefusal, SequencerAnswer,
    SignedCheckpoint, Word,
};
use carrier_proto::pb;
use tokio::sync::broadcast;

pub use embedded::{CHECKPOINT_FILE, EmbeddedLedger, LOG_FILE, LedgerStore, StoreError};
pub use follow::{FollowError, Followed, follow};
pub use freshness::watch as watch_freshness;
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
    /// The log key signed two histories: the ledger is frozen until the
    /// admins settle which stands (see `carrierctl status`).
    #[error("the ledger is frozen: the log key signed two histories")]
    Frozen,
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
    /// The answer does not prove out against the checkpoint.
    #[error(transparent)]
    CatchUp(#[from] CatchUpError),
    /// An entry the checkpoint signs breaks a ledger rule: the sequencer
    /// signed what it should have refused.
    #[error("the sequencer signed an invalid entry: {0}")]
    Invalid(LedgerError),
    /// The log key signed two histories: the ledger takes nothing more.
    #[error("the ledger is frozen: the log key signed two histories")]
    Frozen,
    /// Our ledger moved while the batch was in flight; fetch again.
    #[error("the ledger moved on while the batch was fetched")]
    Moved,
    /// The entries could not be stored; the ledger is unchanged.
    #[error(transparent)]
    Store(StoreError),
}

/// What one step of a catch-up did.
#[derive(Debug)]
pub enum Taken {
    /// This many entries were proven and applied.
    Applied(u64),
    /// The target does not extend our checkpoint: the log key signed two
    /// histories. The evidence is kept and the alarm raised.
    Fork(Box<Fork>),
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
    /// Verifies another node's checkpoint note and judges it against what
    /// this ledger holds (see `carrier_proto::ledger::judge`).
    fn judge(&self, note: &[u8]) -> Result<Judgement, CheckpointError>;
    /// One step of `catch_up`: checks `answer` (the entries from our size
    /// on) and applies what proves out, atomically; stores the target once
    /// the log reaches it.
    fn take(&self, catch_up: &mut CatchUp, answer: Answer<'_>) -> Result<Taken, ExtendError>;
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
    /// Keeps `checkpoint` in place of ours if it signs the very same size
    /// and root (it may name the sequencing daemon where ours does not).
    fn adopt(&self, checkpoint: &SignedCheckpoint);
    /// Adds witnesses' cosignatures to our checkpoint (those that verify
    /// over it, by the genesis's witnesses) and tells subscribers; returns
    /// how many were new.
    fn cosign(&self, cosignatures: &[Cosignature]) -> usize;
    /// Raises the equivocation alarm with `fork` as evidence, naming where
    /// it came from (logged as an error once; the evidence kept), and
    /// freezes the ledger: from then on it takes no checkpoint and
    /// sequences nothing. Subscribers are told.
    fn raise_alarm(&self, fork: &Fork, source: &str);
    /// The sequencer dates its checkpoint anew (same tree; the witnesses'
    /// cosignatures kept until they cosign the new date) and tells
    /// subscribers; false where this daemon does not sequence.
    fn redate(&self) -> bool;
    /// How old our checkpoint is, in seconds, by the newest time anyone
    /// signed it with, and whether that is stale; none if undated.
    fn freshness(&self) -> Option<(u64, bool)>;
    /// Puts a revocation request its author signed in force now, before the
    /// log holds it (it can only remove rights; see
    /// `carrier_proto::ledger::SeenRevocations`); subscribers are told of a
    /// new one as of a sequenced revocation.
    fn admit_revocation(&self, entry: &Entry) -> Result<Admitted, RevocationRefusal>;
    /// The revocation requests in force that the log does not hold yet.
    fn revocations_in_force(&self) -> Vec<Entry>;
    /// Holds a handover request its registrars signed (checked against the
    /// ledger), so checkpoints by its new log key count before the log
    /// holds it, and a sequencer it hands away from stops; true if new.
    fn admit_handover(&self, entry: &Entry) -> Result<bool, Rejection>;
    /// The handover requests held that the log does not hold yet.
    fn handovers_seen(&self) -> Vec<Entry>;
    /// The latest changes of the log's trust (handovers, changes of
    /// witnesses) the log holds, with their indices, for peers that were away.
    fn handovers_in_log(&self) -> Vec<(u64, Entry)>;
    /// Holds a change of the log's trust that a peer's log holds (the
    /// caller proved it against that log's checkpoint), however old; true
    /// if new.
    fn admit_logged_change(&self, entry: &Entry) -> Result<bool, Rejection>;
    /// The equivocation alarm, if raised.
    fn alarm(&self) -> Option<String>;
    /// The evidence behind the alarm, to pass on to peers.
    fn evidence(&self) -> Option<Fork>;
    /// Every log key this network has had, and those of handovers held:
    /// whose promises and checkpoints are the log's word.
    fn log_keys(&self) -> Vec<SigningPublicKey>;
    /// The log's signed `word` on request `leaf` (a promise or a refusal);
    /// none unless this daemon sequences.
    fn answer(&self, leaf: EntryHash, word: Word) -> Option<SequencerAnswer>;
    /// Keeps evidence that the log broke a promise (saved, logged, told to
    /// subscribers, so ledger sync passes it on); true if new here.
    fn keep_broken_promise(&self, broken: &BrokenPromise, source: &str) -> bool;
    /// The broken promises known here.
    fn broken_promises(&self) -> Vec<BrokenPromise>;

    /// Checks a checkpoint note against this network's log key.
    fn verify_checkpoint(&self, note: &[u8]) -> Result<SignedCheckpoint, CheckpointError> {
        let network = self.network().ok_or(CheckpointError::NotSigned)?;
        SignedCheckpoint::verify(note, &network.trust())
    }
}

/// The answer to a peer's fetch (ledger sync) or a newcomer's (join
/// connections): up to `max` entries (at most `max_bytes` of them, but
/// always one) from `fetch.from` on, never past `fetch.tree_size` nor this
/// ledger's end, with the consistency proof that they lead to the tree of
/// `tree_size` entries (empty when they reach it), the prefix proof asked
/// for, and this ledger's checkpoint. Bounded whatever is asked.
pub fn sync_entries(ledger: &dyn Ledger, fetch: Fetch, max: u64, max_bytes: usize) -> pb::SyncEntries {
    let checkpoint = ledger.checkpoint().map(|c| c.note().to_vec()).unwrap_or_default();
    let tree_size = fetch.tree_size;
    let size = tree_size.min(ledger.head().height);
    let wanted = size.saturating_sub(fetch.from).min(max);
    let mut entries = ledger.entries(fetch.from, usize::try_from(wanted).unwrap_or(usize::MAX));
    let mut bytes = 0;
    let mut kept = 0;
    entries.retain(|e| {
        bytes += e.len();
        kept += 1;
        kept == 1 || bytes <= max_bytes
    });
    let reached = fetch.from.saturating_add(entries.len() as u64);
    let proof = if entries.is_empty() || reached == tree_size {
        Vec::new()
    } else {
        ledger.consistency_proof(reached, tree_size).unwrap_or_default()
    };
    let hashes = |p: Vec<EntryHash>| p.iter().map(|h| h.0.to_vec()).collect();
    let (prefix_root, prefix_proof) = match (fetch.prove_from, ledger.root_at(fetch.prove_from)) {
        (0, _) | (_, None) => (Vec::new(), Vec::new()),
        (from, Some(root)) if from >= tree_size => (root.0.to_vec(), Vec::new()),
        (from, Some(root)) => {
            (root.0.to_vec(), ledger.consistency_proof(from, tree_size).map(hashes).unwrap_or_default())
        }
    };
    pb::SyncEntries { entries, proof: hashes(proof), checkpoint, prefix_root, prefix_proof }
}

/// The 32-byte hashes of a proof as it travels, or `None` if any is
/// another length.
pub fn proof_hashes(raw: &[Vec<u8>]) -> Option<Vec<EntryHash>> {
    raw.iter().map(|h| h.as_slice().try_into().ok().map(EntryHash)).collect()
}

/// The proofs of an answer, parsed: the batch's proof, and the prefix
/// (root and proof) when one was sent.
pub type ParsedProofs = (Vec<EntryHash>, Option<(EntryHash, Vec<EntryHash>)>);

/// Parses the proofs in `reply`; `None` if a hash is not 32 bytes.
pub fn answer_proofs(proof: &[Vec<u8>], prefix_root: &[u8], prefix_proof: &[Vec<u8>]) -> Option<ParsedProofs> {
    let proof = proof_hashes(proof)?;
    let prefix = match prefix_root {
        [] => None,
        root => Some((EntryHash(root.try_into().ok()?), proof_hashes(prefix_proof)?)),
    };
    Some((proof, prefix))
}
