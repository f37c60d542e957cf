//! A witness (c2sp.org/tlog-witness): cosigns a log's checkpoint only if it
//! is consistent with the last one it cosigned, so a log cannot show two
//! histories to two halves of a network once its checkpoints need
//! witnesses' cosignatures.
//!
//! ```text
//!  add-checkpoint(old size, consistency proof, note)
//!    note signed by the log key?                    no ─▶ NotSigned
//!    old size > the note's size?                   yes ─▶ Malformed
//!    old size = the last size this witness signed? no ─▶ Conflict(its size)
//!    old size 0: no proof; else the proof from (old size, the root it signed) holds? no ─▶ BadProof
//!  ─▶ cosignature (cosignature/v1, its time), and the new (size, root) to keep
//! ```
//!
//! Sans-IO: the caller persists [`Cosigned::state`] *before* it answers
//! (a witness that forgot what it cosigned could be made to cosign a fork),
//! and passes the time.

use super::checkpoint::{CheckpointError, Cosignature, LogTrust, SignedCheckpoint};
use super::cosignature::WitnessKey;
use super::entry::EntryHash;
use super::merkle::verify_consistency;
use crate::identity::Identity;

/// Longest consistency proof a request may carry (C2SP: 63 lines).
pub const MAX_PROOF_HASHES: usize = 63;

/// The last checkpoint a witness cosigned for a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WitnessedHead {
    /// Its size (0: none yet).
    pub size: u64,
    /// Its root.
    pub root: EntryHash,
}

/// Why a witness did not cosign.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessRefusal {
    /// The note is not the log's (not signed by its key, or not a checkpoint).
    #[error("not a checkpoint of this log: {0}")]
    NotSigned(#[from] CheckpointError),
    /// The request is not well-formed (old size past the note's, a proof
    /// where none belongs, too long a proof).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The old size is not the last one this witness cosigned: ask again
    /// from that size.
    #[error("this witness last cosigned a checkpoint of {0} entries")]
    Conflict(u64),
    /// The consistency proof does not hold: the checkpoint does not extend
    /// the one this witness cosigned.
    #[error("the checkpoint does not extend the one this witness cosigned")]
    BadProof,
}

/// A cosignature, and what the witness must keep before it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// The cosignature line to answer with.
    pub cosignature: Cosignature,
    /// The witness's new head.
    pub state: WitnessedHead,
}

/// The witness key of `identity`, named by its key as a DID (a key alone
/// says its name, so nothing is kept beside the key file).
pub fn witness_key_of(identity: &Identity) -> WitnessKey {
    WitnessKey::of_did(identity.signing_key())
}

/// Checks an add-checkpoint request against what the witness last cosigned
/// (`last`) and, if it holds, cosigns the note at `now_s`.
pub fn add_checkpoint(
    witness: &Identity,
    trust: &LogTrust<'_>,
    last: WitnessedHead,
    old_size: u64,
    proof: &[EntryHash],
    note: &[u8],
    now_s: u64,
) -> Result<Cosigned, WitnessRefusal> {
    let checkpoint = SignedCheckpoint::open(note, trust)?;
    if proof.len() > MAX_PROOF_HASHES {
        return Err(WitnessRefusal::Malformed("too long a proof"));
    }
    if old_size > checkpoint.size() {
        return Err(WitnessRefusal::Malformed("the old size is past the checkpoint's"));
    }
    if old_size != last.size {
        return Err(WitnessRefusal::Conflict(last.size));
    }
    let consistent = match old_size {
        0 if !proof.is_empty() => return Err(WitnessRefusal::Malformed("a proof from nothing")),
        0 => true,
        n if n == checkpoint.size() => proof.is_empty() && last.root == checkpoint.root(),
        n => verify_consistency(n, last.root, checkpoint.size(), checkpoint.root(), proof).is_ok(),
    };
    if !consistent {
        return Err(WitnessRefusal::BadProof);
    }
    let key = witness_key_of(witness);
    let cosignature = checkpoint.cosign(witness, &key, now_s);
    Ok(Cosigned { cosignature, state: WitnessedHead { size: checkpoint.size(), root: checkpoint.root() } })
}

#[cfg(test)]
#[path = "witness_tests.rs"]
mod tests;
