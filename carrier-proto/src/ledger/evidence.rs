//! Comparing two checkpoints of one log: is the other side ahead, behind,
//! or has the sequencer signed two histories?
//!
//! Both checkpoints must have been verified against the log key first: only
//! two validly signed, inconsistent notes are evidence of equivocation, so
//! nothing unsigned can ever raise the alarm.

use super::checkpoint::SignedCheckpoint;
use super::state::LedgerState;

/// How another checkpoint stands to ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// The very same size and root.
    Same,
    /// A prefix of our log: we are ahead.
    Older,
    /// Larger than ours: fetch the entries and check them against it.
    Newer,
    /// The sequencer signed both, and they cannot both be true: either
    /// one size with two roots, or a smaller size whose root is not our
    /// log's root at that size.
    Equivocation,
}

/// Compares `theirs` with `ours` (both verified), using `state`'s tree for
/// the roots of earlier sizes.
pub fn compare(state: &LedgerState, ours: &SignedCheckpoint, theirs: &SignedCheckpoint) -> Comparison {
    use std::cmp::Ordering;
    match theirs.size().cmp(&ours.size()) {
        Ordering::Equal if theirs.root() == ours.root() => Comparison::Same,
        Ordering::Equal => Comparison::Equivocation,
        Ordering::Less if state.tree().root_at(theirs.size()) == Some(theirs.root()) => Comparison::Older,
        Ordering::Less => Comparison::Equivocation,
        Ordering::Greater => Comparison::Newer,
    }
}
