//! Catch-up: what a node does with another node's checkpoint, as one
//! sans-IO machine that ledger sync, join and `carrierctl ledger publish`
//! all drive.
//!
//! ```text
//!  their note ─▶ SignedCheckpoint::verify (log key, witnesses) ─▶ judge(held, theirs)
//!      Nothing   ours already, or an older prefix of ours
//!      Adopt     the same tree, with a note that says more (later time, more cosignatures)
//!      Fork      two signed checkpoints that cannot both be true: evidence
//!      Fetch ─▶ CatchUp: fetch(height) ─▶ peer ─▶ check(answer)
//!                  1. prove the target extends our checkpoint (a consistency
//!                     proof from our size; a valid proof to another root is a Fork)
//!                  2. check the batch against the target (Merkle proof, signatures)
//!                  ─▶ VerifiedBatch, applied by the caller; repeat until the target
//! ```
//!
//! A larger checkpoint is never taken on its size alone: it is proven to
//! extend the checkpoint we hold before any entry of it is applied. A log
//! cut short on disk awaits its own checkpoint: entries are proven against
//! that (or a larger one shown to extend it), so healing never rolls back.

use super::checkpoint::SignedCheckpoint;
use super::entry::EntryHash;
use super::evidence::Fork;
use super::merkle::verify_consistency;
use super::state::LedgerState;
use super::verify::{BatchError, VerifiedBatch, check_batch};

/// What a node holds of the log: its entries and the checkpoints it keeps.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// The entries (their tree).
    pub state: &'a LedgerState,
    /// The checkpoint covering every entry, if any.
    pub checkpoint: Option<&'a SignedCheckpoint>,
    /// A checkpoint whose entries it lacks (a log cut short), if any.
    pub awaited: Option<&'a SignedCheckpoint>,
}

/// What to do about another node's (verified) checkpoint.
#[derive(Debug)]
pub enum Judgement {
    /// Ours already, or an older prefix of ours.
    Nothing,
    /// The same tree; this note says more (keep it in place of ours).
    Adopt(Box<SignedCheckpoint>),
    /// Ahead of ours: fetch and prove.
    Fetch(Box<CatchUp>),
    /// The log key signed two histories.
    Fork(Box<Fork>),
}

/// Judges `theirs` (verified under the log key) against what `held` holds.
pub fn judge(held: Held<'_>, theirs: SignedCheckpoint) -> Judgement {
    let tree = held.state.tree();
    let height = held.state.height();
    match (held.awaited, held.checkpoint) {
        // A log cut short: only its own checkpoint, or one that extends it, helps.
        (Some(awaited), _) => match theirs.size().cmp(&awaited.size()) {
            std::cmp::Ordering::Less => Judgement::Nothing,
            std::cmp::Ordering::Equal if theirs.root() != awaited.root() => fork_same_size(awaited, theirs),
            _ => Judgement::Fetch(Box::new(CatchUp::new(theirs, Some(awaited.clone())))),
        },
        (None, Some(ours)) => match theirs.size().cmp(&ours.size()) {
            std::cmp::Ordering::Greater => Judgement::Fetch(Box::new(CatchUp::new(theirs, Some(ours.clone())))),
            std::cmp::Ordering::Equal if theirs.root() != ours.root() => fork_same_size(ours, theirs),
            std::cmp::Ordering::Equal if says_more(&theirs, ours) => Judgement::Adopt(Box::new(theirs)),
            std::cmp::Ordering::Equal => Judgement::Nothing,
            std::cmp::Ordering::Less => match tree.root_at(theirs.size()) {
                Some(root) if root == theirs.root() => Judgement::Nothing,
                Some(root) => {
                    let proof = tree.consistency_proof(theirs.size(), ours.size()).unwrap_or_default();
                    Fork::new(theirs, ours.clone(), root, proof)
                        .map_or(Judgement::Nothing, |f| Judgement::Fork(Box::new(f)))
                }
                None => Judgement::Nothing,
            },
        },
        // No checkpoint yet (a genesis-only replica, or a lost checkpoint
        // file): nothing signed to hold it against but the entries.
        (None, None) if theirs.size() > height => Judgement::Fetch(Box::new(CatchUp::new(theirs, None))),
        (None, None) if tree.root_at(theirs.size()) == Some(theirs.root()) && theirs.size() == height => {
            Judgement::Adopt(Box::new(theirs))
        }
        (None, None) => Judgement::Nothing,
    }
}

fn fork_same_size(ours: &SignedCheckpoint, theirs: SignedCheckpoint) -> Judgement {
    Fork::same_size(ours.clone(), theirs).map_or(Judgement::Nothing, |f| Judgement::Fork(Box::new(f)))
}

/// Whether `theirs` (the same tree as `ours`) carries more: more witness
/// cosignatures; or as many and a later time; or the same time and the
/// sequencing daemon named where ours names none.
pub fn says_more(theirs: &SignedCheckpoint, ours: &SignedCheckpoint) -> bool {
    let key =
        |c: &SignedCheckpoint| (c.cosignatures().len(), c.time_s().unwrap_or(0), c.checkpoint().sequencer.is_some());
    key(theirs) > key(ours)
}

/// One catch-up towards a target checkpoint.
#[derive(Debug)]
pub struct CatchUp {
    target: SignedCheckpoint,
    /// The signed checkpoint we held when it began, which the target must
    /// be proven to extend.
    base: Option<SignedCheckpoint>,
    proven: bool,
}

/// What to ask the peer for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    /// First entry wanted.
    pub from: u64,
    /// The target's size: entries come with a proof to that tree.
    pub tree_size: u64,
    /// Also prove the target extends the tree of this many entries (0: no
    /// need, done already).
    pub prove_from: u64,
}

/// A peer's answer to a [`Fetch`].
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// Encoded entries from the fetch's `from` on.
    pub entries: &'a [Vec<u8>],
    /// Consistency proof from where the entries end to the target.
    pub proof: &'a [EntryHash],
    /// The target tree's root at `prove_from`, and the proof from there.
    pub prefix: Option<(EntryHash, &'a [EntryHash])>,
}

/// What an answer gave.
#[derive(Debug)]
pub enum Checked {
    /// Entries proven to be the target's next ones; apply them.
    Batch(VerifiedBatch),
    /// The target does not extend our checkpoint: the log key signed both.
    Fork(Box<Fork>),
}

/// Why an answer was not taken (the peer's fault or bad luck, never evidence).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatchUpError {
    /// The batch does not prove out.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The peer did not prove the target extends our checkpoint.
    #[error("the peer did not prove its checkpoint extends ours")]
    NoPrefixProof,
    /// The prefix proof does not hold.
    #[error("the peer's consistency proof from our checkpoint does not hold")]
    BadPrefixProof,
    /// The peer served no entries for its own checkpoint.
    #[error("the peer served no entries for its own checkpoint")]
    Empty,
}

impl CatchUp {
    fn new(target: SignedCheckpoint, base: Option<SignedCheckpoint>) -> Self {
        // Nothing to prove from a base of the same size (the roots match).
        let proven = base.as_ref().is_none_or(|b| b.size() >= target.size());
        Self { target, base, proven }
    }

    /// Towards `target`, from a node holding no checkpoint (a newcomer, or
    /// a tool handing entries to a daemon that checks them).
    pub fn towards(target: SignedCheckpoint) -> Self {
        Self::new(target, None)
    }

    /// The checkpoint this catch-up leads to.
    pub fn target(&self) -> &SignedCheckpoint {
        &self.target
    }

    /// What to fetch when we hold `height` entries; `None` once we hold the target.
    pub fn fetch(&self, height: u64) -> Option<Fetch> {
        if height >= self.target.size() {
            return None;
        }
        let prove_from = match (&self.base, self.proven) {
            (Some(base), false) => base.size(),
            _ => 0,
        };
        Some(Fetch { from: height, tree_size: self.target.size(), prove_from })
    }

    /// Checks `answer` against `state` (which must hold the entries up to
    /// the fetch's `from`): first that the target extends our checkpoint,
    /// then the batch. Changes nothing; the caller applies the batch.
    pub fn check(&mut self, state: &LedgerState, answer: Answer<'_>) -> Result<Checked, CatchUpError> {
        if let (Some(base), false) = (&self.base, self.proven) {
            let (root, proof) = answer.prefix.ok_or(CatchUpError::NoPrefixProof)?;
            verify_consistency(base.size(), root, self.target.size(), self.target.root(), proof)
                .map_err(|_| CatchUpError::BadPrefixProof)?;
            if root != base.root() {
                let fork = Fork::new(base.clone(), self.target.clone(), root, proof.to_vec());
                return fork.map(|f| Checked::Fork(Box::new(f))).ok_or(CatchUpError::BadPrefixProof);
            }
            self.proven = true;
        }
        if answer.entries.is_empty() {
            return Err(CatchUpError::Empty);
        }
        let batch = check_batch(state, answer.entries, self.target.size(), self.target.root(), answer.proof)?;
        Ok(Checked::Batch(batch))
    }
}

#[cfg(test)]
#[path = "catchup_tests.rs"]
mod tests;
