//! Evidence that the log key signed two histories: two checkpoints that
//! cannot both be true, with what it takes for anyone holding the log's
//! public key (and nothing else) to check it.
//!
//! ```text
//! first  (size m, root r)     signed by the log key
//! second (size n ≥ m, root s) signed by the log key
//! root_at_first  r'           the second tree's root at size m
//! proof                       RFC 6962 consistency proof (m, r') → (n, s)
//! ```
//!
//! The proof binds `r'` to the second tree, so `r' ≠ r` shows the first
//! checkpoint is not a prefix of the second: a fork. For equal sizes the
//! proof is empty and `r'` is `s`. Nothing unsigned can make evidence.

use prost::Message;

use super::checkpoint::{CheckpointError, LogTrust, SignedCheckpoint};
use super::entry::EntryHash;
use super::merkle::verify_consistency;
use crate::pb;

/// Longest consistency proof in evidence (a tree of 2^64 entries needs
/// fewer hashes).
const MAX_PROOF: usize = 130;
/// Largest encoded evidence: two notes and a proof.
pub const MAX_EVIDENCE_SIZE: usize = 2 * super::note::MAX_NOTE_SIZE + MAX_PROOF * 34 + 64;
/// Prefix of evidence written as one line of text.
pub const EVIDENCE_PREFIX: &str = "carrier-evidence:";

/// Why evidence does not hold.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// Not encoded evidence.
    #[error("not evidence: {0}")]
    Malformed(String),
    /// One of the notes is not signed by the log key.
    #[error("a checkpoint in the evidence does not verify: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The notes are consistent after all, or the proof does not hold.
    #[error("the evidence does not show two histories: {0}")]
    NoConflict(&'static str),
}

/// Two checkpoints signed by one log key that cannot both be true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    first: SignedCheckpoint,
    second: SignedCheckpoint,
    root_at_first: EntryHash,
    proof: Vec<EntryHash>,
}

impl Fork {
    /// Evidence from two checkpoints and the second tree's root at the
    /// first's size with its consistency proof; `None` unless it holds.
    pub fn new(
        first: SignedCheckpoint,
        second: SignedCheckpoint,
        root_at_first: EntryHash,
        proof: Vec<EntryHash>,
    ) -> Option<Self> {
        let fork = Self { first, second, root_at_first, proof };
        fork.holds().ok().map(|()| fork)
    }

    /// Two checkpoints of one size with different roots.
    pub fn same_size(first: SignedCheckpoint, second: SignedCheckpoint) -> Option<Self> {
        let root = second.root();
        Self::new(first, second, root, Vec::new())
    }

    fn holds(&self) -> Result<(), EvidenceError> {
        let (m, n) = (self.first.size(), self.second.size());
        if m > n {
            return Err(EvidenceError::NoConflict("the first checkpoint is the larger"));
        }
        if m == n {
            if !self.proof.is_empty() || self.root_at_first != self.second.root() {
                return Err(EvidenceError::NoConflict("equal sizes take no proof"));
            }
        } else if m == 0 || verify_consistency(m, self.root_at_first, n, self.second.root(), &self.proof).is_err() {
            return Err(EvidenceError::NoConflict("the consistency proof does not hold"));
        }
        if self.root_at_first == self.first.root() {
            return Err(EvidenceError::NoConflict("the first checkpoint is a prefix of the second"));
        }
        Ok(())
    }

    /// The smaller (or equal) checkpoint.
    pub fn first(&self) -> &SignedCheckpoint {
        &self.first
    }

    /// The larger checkpoint.
    pub fn second(&self) -> &SignedCheckpoint {
        &self.second
    }

    /// The evidence as it travels.
    pub fn encode(&self) -> Vec<u8> {
        pb::ForkEvidence {
            first: self.first.note().to_vec(),
            second: self.second.note().to_vec(),
            root_at_first: self.root_at_first.0.to_vec(),
            proof: self.proof.iter().map(|h| h.0.to_vec()).collect(),
        }
        .encode_to_vec()
    }

    /// Reads and checks evidence: both notes signed by `trust`'s log key
    /// (cosignatures are not needed to blame the log), and in conflict.
    pub fn decode(bytes: &[u8], trust: &LogTrust<'_>) -> Result<Self, EvidenceError> {
        if bytes.len() > MAX_EVIDENCE_SIZE {
            return Err(EvidenceError::Malformed(format!("{} bytes, over {MAX_EVIDENCE_SIZE}", bytes.len())));
        }
        let message = pb::ForkEvidence::decode(bytes).map_err(|e| EvidenceError::Malformed(e.to_string()))?;
        if message.proof.len() > MAX_PROOF {
            return Err(EvidenceError::Malformed("the proof is too long".into()));
        }
        let hash = |raw: &[u8]| {
            raw.try_into().map(EntryHash).map_err(|_| EvidenceError::Malformed("a hash is not 32 bytes".into()))
        };
        let fork = Self {
            first: SignedCheckpoint::open(&message.first, trust)?,
            second: SignedCheckpoint::open(&message.second, trust)?,
            root_at_first: hash(&message.root_at_first)?,
            proof: message.proof.iter().map(|h| hash(h)).collect::<Result<_, _>>()?,
        };
        fork.holds()?;
        Ok(fork)
    }

    /// The evidence as a file: both notes for people, and one line that
    /// `decode_text` reads.
    pub fn to_text(&self) -> String {
        use base64::Engine;
        let line = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.encode());
        let quote = |note: &str| note.lines().map(|l| format!("#   {l}\n")).collect::<String>();
        format!(
            "# Two checkpoints signed by this network's log key that cannot both be true.\n# The first ({} entries):\n{}# The second ({} entries), whose tree has another root at {} entries:\n{}{EVIDENCE_PREFIX}{line}\n",
            self.first.size(),
            quote(self.first.text()),
            self.second.size(),
            self.first.size(),
            quote(self.second.text()),
        )
    }

    /// Reads evidence written by [`to_text`](Self::to_text) (lines starting
    /// with `#` are for people and skipped).
    pub fn decode_text(text: &str, trust: &LogTrust<'_>) -> Result<Self, EvidenceError> {
        use base64::Engine;
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(EVIDENCE_PREFIX))
            .ok_or_else(|| EvidenceError::Malformed(format!("no line starting with {EVIDENCE_PREFIX}")))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(line)
            .map_err(|_| EvidenceError::Malformed("the evidence line is not base64url".into()))?;
        Self::decode(&bytes, trust)
    }
}
