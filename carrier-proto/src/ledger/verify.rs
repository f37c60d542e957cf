//! Replaying a whole ledger from genesis, with batch signature verification,
//! or (for a store re-opening entries it verified before) without it.
//!
//! Entries are decoded and their signatures checked a batch at a time
//! (ed25519-zebra's ZIP 215 rules make batch and single verification agree
//! exactly, so a batch can never accept what [`LedgerState::append`] would
//! refuse). When a batch fails, its entries are checked one by one so the
//! error names the first bad entry. Errors are reported in ledger order: a
//! bad signature at entry 7 wins over a broken rule at entry 9.
//!
//! [`Replay::known`] skips the signatures but applies every rule and builds
//! the tree: a store that kept a signed checkpoint compares the root with it,
//! which proves the entries are the very ones verified before (a root is a
//! commitment to every entry's bytes), at a fraction of the cost.

use ed25519_zebra::{Signature, batch};
use rand_core::OsRng;

use super::entry::{Entry, EntryError, EntryHash};
use super::error::{LedgerError, Rejection};
use super::state::LedgerState;

/// Entries whose signatures are checked together.
const BATCH: usize = 256;

/// Replays encoded entries from genesis and returns the verified state, or
/// the first entry that breaks a rule.
pub fn replay<I, B>(entries: I) -> Result<LedgerState, LedgerError>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let mut replay = Replay::new(LedgerState::new());
    for bytes in entries {
        replay.push(bytes.as_ref())?;
    }
    replay.finish()
}

/// Incremental replay: push encoded entries in order, then finish.
#[derive(Debug)]
pub struct Replay {
    state: LedgerState,
    pending: Vec<Entry>,
    /// Index of the next entry pushed.
    next_index: u64,
    /// False for entries verified before (see [`Replay::known`]).
    check_signatures: bool,
}

impl Replay {
    /// Starts replaying on top of `state` (usually empty).
    pub fn new(state: LedgerState) -> Self {
        let next_index = state.height();
        Self { state, pending: Vec::with_capacity(BATCH), next_index, check_signatures: true }
    }

    /// Replays entries that were verified when they were first appended,
    /// applying every rule but checking no signature (nor the curve points
    /// of keys, which depend on the bytes alone). Only for a caller that
    /// then checks the resulting root against a signed checkpoint.
    pub fn known(state: LedgerState) -> Self {
        Self { check_signatures: false, ..Self::new(state) }
    }

    /// Takes the next encoded entry.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), LedgerError> {
        let index = self.next_index;
        self.next_index += 1;
        let decoded = if self.check_signatures { Entry::decode(bytes) } else { Entry::decode_known(bytes) };
        match decoded {
            Ok(entry) => {
                self.pending.push(entry);
                if self.pending.len() == BATCH {
                    self.flush()?;
                }
                Ok(())
            }
            Err(e) => {
                // Earlier entries may hide an earlier error: report that first.
                self.flush()?;
                Err(LedgerError { index, reason: Rejection::Malformed(e) })
            }
        }
    }

    /// Checks what is still pending and returns the verified state.
    pub fn finish(mut self) -> Result<LedgerState, LedgerError> {
        self.flush()?;
        Ok(self.state)
    }

    fn flush(&mut self) -> Result<(), LedgerError> {
        let entries = std::mem::take(&mut self.pending);
        let first_bad = if self.check_signatures { first_bad_signature(&entries) } else { None };
        for (offset, entry) in entries.iter().enumerate() {
            let index = self.state.height();
            if first_bad == Some(offset) {
                return Err(LedgerError { index, reason: Rejection::BadSignature });
            }
            let applied =
                if self.check_signatures { self.state.apply_signed(entry) } else { self.state.apply_known(entry) };
            applied.map_err(|reason| LedgerError { index, reason })?;
        }
        self.pending = entries;
        self.pending.clear();
        Ok(())
    }
}

/// Offset of the first entry whose signature fails, if any.
fn first_bad_signature(entries: &[Entry]) -> Option<usize> {
    let mut verifier = batch::Verifier::new();
    for entry in entries {
        let key = entry.body().signer.zebra_bytes();
        let signature = Signature::from(*entry.signature());
        verifier.queue((key, signature, &entry.signed_message()));
    }
    if verifier.verify(OsRng).is_ok() {
        return None;
    }
    entries.iter().position(|entry| !entry.verify_signature())
}

/// Why a batch of entries fetched from a peer was not taken.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Entry `index` is not a well-formed entry.
    #[error("entry {index} is malformed: {error}")]
    Malformed {
        /// Its place in the log.
        index: u64,
        /// What is wrong.
        error: EntryError,
    },
    /// Entry `index`'s author signature does not verify: it was altered.
    #[error("entry {index} was altered: its signature does not verify")]
    BadSignature {
        /// Its place in the log.
        index: u64,
    },
    /// The entries, appended to ours, do not make a prefix of the
    /// checkpoint's tree: they are not the entries the sequencer signed.
    #[error("entries {first} to {last} are not the ones the checkpoint signs (the Merkle proof fails)")]
    NotInCheckpoint {
        /// First entry of the batch.
        first: u64,
        /// Last entry of the batch.
        last: u64,
    },
    /// More entries than the checkpoint holds.
    #[error("the batch reaches entry {last}, past the checkpoint's {size} entries")]
    PastCheckpoint {
        /// Last entry of the batch.
        last: u64,
        /// The checkpoint's size.
        size: u64,
    },
}

/// Entries proven to be the next ones of a signed checkpoint's tree, each
/// with a valid author signature; [`apply`](Self::apply) checks the rules.
#[derive(Debug)]
pub struct VerifiedBatch {
    /// Index of the first entry: the batch applies only to a log of that size.
    from: u64,
    entries: Vec<Entry>,
}

/// Decodes `batch` (the entries after `state`'s last) and checks that
/// appended to `state`'s tree they are a prefix of the tree of
/// `target_size` entries with root `target_root`, by `proof` (a consistency
/// proof from the grown size to the target; empty when they are equal), and
/// that every signature holds. Changes nothing.
pub fn check_batch(
    state: &LedgerState,
    batch: &[Vec<u8>],
    target_size: u64,
    target_root: EntryHash,
    proof: &[EntryHash],
) -> Result<VerifiedBatch, BatchError> {
    let first = state.height();
    let last = first + batch.len().saturating_sub(1) as u64;
    let grown = first + batch.len() as u64;
    if grown > target_size {
        return Err(BatchError::PastCheckpoint { last, size: target_size });
    }
    let entries = batch
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            Entry::decode(bytes).map_err(|error| BatchError::Malformed { index: first + i as u64, error })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leaves: Vec<EntryHash> = entries.iter().map(Entry::hash).collect();
    let root = state.tree().root_with(&leaves);
    let proven = if grown == target_size {
        root == target_root && proof.is_empty()
    } else {
        super::merkle::verify_consistency(grown, root, target_size, target_root, proof).is_ok()
    };
    if !proven {
        // Name an altered entry if its signature shows it.
        return Err(match entries.iter().position(|e| !e.verify_signature()) {
            Some(i) => BatchError::BadSignature { index: first + i as u64 },
            None => BatchError::NotInCheckpoint { first, last },
        });
    }
    if let Some(i) = bad_signature(&entries) {
        return Err(BatchError::BadSignature { index: first + i as u64 });
    }
    Ok(VerifiedBatch { from: first, entries })
}

impl VerifiedBatch {
    /// Index of the first entry.
    pub fn from(&self) -> u64 {
        self.from
    }

    /// The entries, in log order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Applies the entries in order. An entry that breaks a rule stops the
    /// batch there (the sequencer signed an entry it should have refused);
    /// the error names it, and the entries before it stay applied.
    pub fn apply(&self, state: &mut LedgerState) -> Result<(), LedgerError> {
        for entry in &self.entries {
            let index = state.height();
            state.apply_signed(entry).map_err(|reason| LedgerError { index, reason })?;
        }
        Ok(())
    }
}

/// Offset of the first entry whose signature fails, checked as a batch.
fn bad_signature(entries: &[Entry]) -> Option<usize> {
    entries.chunks(BATCH).enumerate().find_map(|(n, chunk)| first_bad_signature(chunk).map(|i| n * BATCH + i))
}
