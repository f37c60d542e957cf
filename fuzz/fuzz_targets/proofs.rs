//! RFC 6962 proofs (`carrier_proto::ledger::merkle`):
//!
//! - even mode byte: `verify_inclusion` and `verify_consistency` on sizes,
//!   indexes, roots and proof hashes all taken from the input; no panic, and
//!   a proof longer than any tree needs is refused;
//! - odd mode byte: a tree of up to 300 leaves from the input; the proofs it
//!   makes for fuzzer-chosen sizes verify (completeness), `root_at` and
//!   `root_with` agree with a tree of that many leaves, and flipping any bit
//!   of a proof, leaf or root makes it fail (soundness).

#![no_main]

use carrier_fuzz::Input;
use carrier_proto::ledger::EntryHash;
use carrier_proto::ledger::merkle::{self, MerkleTree, verify_consistency, verify_inclusion};
use libfuzzer_sys::fuzz_target;

fn flip(hash: EntryHash, bit: u16) -> EntryHash {
    let mut bytes = hash.0;
    bytes[usize::from(bit / 8) % 32] ^= 1 << (bit % 8);
    EntryHash(bytes)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    if input.u8() & 1 == 0 {
        let (index, size, old) = (input.u64(), input.u64(), input.u64());
        let (leaf, root, old_root) = (input.hash(), input.hash(), input.hash());
        let mut proof = Vec::new();
        while !input.is_empty() && proof.len() < 200 {
            proof.push(input.hash());
        }
        let included = verify_inclusion(index, size, leaf, root, &proof);
        let consistent = verify_consistency(old, old_root, size, root, &proof);
        // No tree of 2^64 leaves needs more hashes than these.
        if proof.len() > 64 {
            assert!(included.is_err(), "an inclusion proof longer than any tree needs held");
        }
        if proof.len() > 130 {
            assert!(consistent.is_err(), "a consistency proof longer than any tree needs held");
        }
        if index >= size {
            assert!(included.is_err());
        }
        if old == 0 || old > size {
            assert!(consistent.is_err());
        }
        return;
    }

    let leaves = usize::from(input.u16() % 300) + 1;
    let seed = input.hash();
    let mut tree = MerkleTree::new();
    let hashes: Vec<EntryHash> = (0..leaves)
        .map(|i| {
            let mut bytes = seed.0.to_vec();
            bytes.extend_from_slice(&(i as u64).to_be_bytes());
            merkle::leaf_hash(&bytes)
        })
        .collect();
    for &h in &hashes {
        tree.push(h);
    }
    let n = tree.len();
    let (a, b, c) = (input.u16(), input.u16(), input.u16());
    let size = u64::from(a) % n + 1;
    let index = u64::from(b) % size;
    let old = u64::from(c) % size + 1;
    let bit = input.u16();
    let root = tree.root_at(size).expect("a size within the tree");

    // root_at agrees with a tree of exactly that many leaves, and root_with
    // with the whole tree.
    let mut small = MerkleTree::new();
    for &h in &hashes[..size as usize] {
        small.push(h);
    }
    assert_eq!(small.root(), root);
    assert_eq!(small.root_with(&hashes[size as usize..]), tree.root());
    assert_eq!(tree.leaf(index), Some(hashes[index as usize]));

    let inclusion = tree.inclusion_proof(index, size).expect("an inclusion proof within the tree");
    assert_eq!(verify_inclusion(index, size, hashes[index as usize], root, &inclusion), Ok(()));
    assert!(verify_inclusion(index, size, flip(hashes[index as usize], bit), root, &inclusion).is_err());
    assert!(verify_inclusion(index, size, hashes[index as usize], flip(root, bit), &inclusion).is_err());
    if !inclusion.is_empty() {
        let mut bad = inclusion.clone();
        let at = usize::from(bit) % bad.len();
        bad[at] = flip(bad[at], bit);
        assert!(verify_inclusion(index, size, hashes[index as usize], root, &bad).is_err());
        bad = inclusion.clone();
        bad.pop();
        assert!(verify_inclusion(index, size, hashes[index as usize], root, &bad).is_err());
    }

    let old_root = tree.root_at(old).unwrap();
    let consistency = tree.consistency_proof(old, size).expect("a consistency proof within the tree");
    assert_eq!(verify_consistency(old, old_root, size, root, &consistency), Ok(()));
    if old < size {
        assert!(verify_consistency(old, flip(old_root, bit), size, root, &consistency).is_err());
        assert!(verify_consistency(old, old_root, size, flip(root, bit), &consistency).is_err());
        let mut bad = consistency.clone();
        let at = usize::from(bit) % bad.len();
        bad[at] = flip(bad[at], bit);
        assert!(verify_consistency(old, old_root, size, root, &bad).is_err());
    } else {
        assert!(consistency.is_empty());
    }
});
