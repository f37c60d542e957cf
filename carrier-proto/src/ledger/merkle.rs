//! The ledger's RFC 6962 Merkle tree: leaf hashes, roots at any size, and
//! the inclusion and consistency proofs that let anyone check, with the
//! log's public key alone, that an entry is in the log and that the log
//! only grew.
//!
//! The hashing and the proof algorithms are `tlog_tiles`'s (a port of Go's
//! `golang.org/x/mod/sumdb/tlog`); this module keeps every stored hash in
//! memory (two per entry: 64 bytes) and speaks [`EntryHash`]. The tests
//! check it against the transparency-dev/merkle test vectors.

use tlog_tiles::{Hash, HashReader};

use super::entry::EntryHash;

/// Why a proof could not be made or does not hold.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof does not prove what it claims.
    #[error("the Merkle proof does not hold")]
    Invalid,
    /// The sizes or the index asked about are outside the tree.
    #[error("no proof for {what}: the tree has {size} entries")]
    OutOfRange {
        /// What was asked.
        what: String,
        /// The tree's size.
        size: u64,
    },
}

/// SHA-256(0x00 || `encoded`): the RFC 6962 hash of one leaf.
pub fn leaf_hash(encoded: &[u8]) -> EntryHash {
    EntryHash(tlog_tiles::record_hash(encoded).0)
}

/// Root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> EntryHash {
    EntryHash(tlog_tiles::EMPTY_HASH.0)
}

/// Every hash of a growing tree, in `tlog_tiles`'s stored-hash order.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    size: u64,
    stored: Vec<Hash>,
}

/// Reads stored hashes from a tree, plus some not yet appended to it.
struct Reader<'a> {
    base: &'a [Hash],
    extra: &'a [Hash],
}

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                let i = usize::try_from(i).map_err(|_| tlog_tiles::Error::IndexesNotInTree)?;
                let hash = match i.checked_sub(self.base.len()) {
                    None => self.base.get(i),
                    Some(j) => self.extra.get(j),
                };
                hash.copied().ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// True for the empty tree.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    fn reader(&self) -> Reader<'_> {
        Reader { base: &self.stored, extra: &[] }
    }

    /// Appends a leaf by its hash.
    pub fn push(&mut self, leaf: EntryHash) {
        let reader = Reader { base: &self.stored, extra: &[] };
        // Reads only hashes this tree stores, so it cannot fail.
        let new = tlog_tiles::stored_hashes_for_record_hash(self.size, Hash(leaf.0), &reader).unwrap_or_default();
        self.stored.extend(new);
        self.size += 1;
    }

    /// The hash of leaf `index`.
    pub fn leaf(&self, index: u64) -> Option<EntryHash> {
        if index >= self.size {
            return None;
        }
        let at = usize::try_from(tlog_tiles::stored_hash_index(0, index)).ok()?;
        self.stored.get(at).map(|h| EntryHash(h.0))
    }

    /// The root of the whole tree.
    pub fn root(&self) -> EntryHash {
        self.root_at(self.size).unwrap_or_else(empty_root)
    }

    /// The root of the tree's first `size` leaves.
    pub fn root_at(&self, size: u64) -> Option<EntryHash> {
        if size > self.size {
            return None;
        }
        tlog_tiles::tree_hash(size, &self.reader()).ok().map(|h| EntryHash(h.0))
    }

    /// The root the tree would have with `more` leaves appended, without
    /// appending them.
    pub fn root_with(&self, more: &[EntryHash]) -> EntryHash {
        let mut extra = Vec::new();
        for (i, leaf) in more.iter().enumerate() {
            let reader = Reader { base: &self.stored, extra: &extra };
            let n = self.size + i as u64;
            let new = tlog_tiles::stored_hashes_for_record_hash(n, Hash(leaf.0), &reader).unwrap_or_default();
            extra.extend(new);
        }
        let size = self.size + more.len() as u64;
        let reader = Reader { base: &self.stored, extra: &extra };
        tlog_tiles::tree_hash(size, &reader).map(|h| EntryHash(h.0)).unwrap_or_else(|_| empty_root())
    }

    /// Proof that leaf `index` is in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<EntryHash>, ProofError> {
        if index >= size || size > self.size {
            return Err(ProofError::OutOfRange { what: format!("entry {index} in a tree of {size}"), size: self.size });
        }
        let proof = tlog_tiles::prove_record(size, index, &self.reader()).map_err(|_| ProofError::Invalid)?;
        Ok(proof.into_iter().map(|h| EntryHash(h.0)).collect())
    }

    /// Proof that the tree of the first `old` leaves is a prefix of the tree
    /// of the first `new` leaves. Empty when `old == new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<EntryHash>, ProofError> {
        if old == 0 || old > new || new > self.size {
            return Err(ProofError::OutOfRange { what: format!("from {old} to {new} entries"), size: self.size });
        }
        let proof = tlog_tiles::prove_tree(new, old, &self.reader()).map_err(|_| ProofError::Invalid)?;
        Ok(proof.into_iter().map(|h| EntryHash(h.0)).collect())
    }
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose
/// root is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: EntryHash,
    root: EntryHash,
    proof: &[EntryHash],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { what: format!("entry {index}"), size });
    }
    let proof: Vec<Hash> = proof.iter().map(|h| Hash(h.0)).collect();
    tlog_tiles::check_record(&proof, size, Hash(root.0), index, Hash(leaf.0)).map_err(|_| ProofError::Invalid)
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of
/// the tree of `new` leaves with root `new_root`.
pub fn verify_consistency(
    old: u64,
    old_root: EntryHash,
    new: u64,
    new_root: EntryHash,
    proof: &[EntryHash],
) -> Result<(), ProofError> {
    if old == 0 || old > new {
        return Err(ProofError::OutOfRange { what: format!("from {old} to {new} entries"), size: new });
    }
    let proof: Vec<Hash> = proof.iter().map(|h| Hash(h.0)).collect();
    tlog_tiles::check_tree(&proof, new, Hash(new_root.0), old, Hash(old_root.0)).map_err(|_| ProofError::Invalid)
}

#[cfg(test)]
#[path = "merkle_tests.rs"]
mod tests;
