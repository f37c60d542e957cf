#![allow(clippy::unwrap_used)]

use super::*;
use crate::identity::IdentityKind;
use crate::testing::TestNetwork;

/// A log and the checkpoints of each of its sizes.
fn log(size: u64) -> (TestNetwork, Vec<SignedCheckpoint>) {
    let mut net = TestNetwork::new("witnessed");
    let mut checkpoints = vec![net.checkpoint()];
    while net.ledger.height() < size {
        net.register_device();
        checkpoints.push(net.checkpoint());
    }
    (net, checkpoints)
}

#[test]
fn cosigns_a_first_checkpoint_then_only_what_extends_it() {
    let (net, cps) = log(6);
    let trust = net.network_trust();
    let witness = Identity::generate(IdentityKind::Witness);
    let first = add_checkpoint(&witness, &trust, WitnessedHead::default(), 0, &[], cps[2].note(), 100).unwrap();
    assert_eq!(first.state, WitnessedHead { size: 3, root: cps[2].root() });
    assert_eq!(first.cosignature.time_s, 100);
    // The cosignature verifies, as a line, for the witness's key.
    let key = witness_key_of(&witness);
    assert_eq!(cps[2].read_cosignatures(&first.cosignature.to_line(), std::slice::from_ref(&key)).len(), 1);
    // Extending it, with a proof: cosigned.
    let proof = net.ledger.tree().consistency_proof(3, 6).unwrap();
    let next = add_checkpoint(&witness, &trust, first.state, 3, &proof, cps[5].note(), 101).unwrap();
    assert_eq!(next.state.size, 6);
    // The same again, with no proof: fine.
    assert!(add_checkpoint(&witness, &trust, next.state, 6, &[], cps[5].note(), 102).is_ok());
}

#[test]
fn refuses_stale_old_sizes_bad_proofs_forks_and_strangers() {
    let (net, cps) = log(6);
    let trust = net.network_trust();
    let witness = Identity::generate(IdentityKind::Witness);
    let last = WitnessedHead { size: 3, root: cps[2].root() };
    // Asked from another size than the one it cosigned: it says which.
    assert_eq!(add_checkpoint(&witness, &trust, last, 0, &[], cps[5].note(), 1), Err(WitnessRefusal::Conflict(3)));
    assert_eq!(add_checkpoint(&witness, &trust, last, 4, &[], cps[5].note(), 1), Err(WitnessRefusal::Conflict(3)));
    // A smaller checkpoint than the one it cosigned: never.
    assert!(matches!(
        add_checkpoint(&witness, &trust, last, 3, &[], cps[1].note(), 1),
        Err(WitnessRefusal::Malformed(_))
    ));
    // A proof that does not hold.
    let mut proof = net.ledger.tree().consistency_proof(3, 6).unwrap();
    proof.reverse();
    assert_eq!(add_checkpoint(&witness, &trust, last, 3, &proof, cps[5].note(), 1), Err(WitnessRefusal::BadProof));
    // A fork: another history of the same size, signed by the same log key.
    let mut other = net.ledger.clone();
    let device = Identity::generate(IdentityKind::Device);
    let op = crate::ledger::Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
    let _ = other.append(other.next_entry(op, 5, &net.registrar));
    let forked_prefix = WitnessedHead { size: 6, root: cps[5].root() };
    let fork = net.sequencer.checkpoint(&other, 5);
    let proof = other.tree().consistency_proof(6, 7).unwrap();
    assert!(add_checkpoint(&witness, &trust, forked_prefix, 6, &proof, fork.note(), 1).is_ok(), "it extends");
    let same_size_other_root = WitnessedHead { size: 7, root: cps[5].root() };
    assert_eq!(
        add_checkpoint(&witness, &trust, same_size_other_root, 7, &[], fork.note(), 1),
        Err(WitnessRefusal::BadProof)
    );
    // A note not signed by this log's key.
    let stranger = TestNetwork::new("stranger");
    assert!(matches!(
        add_checkpoint(&witness, &trust, WitnessedHead::default(), 0, &[], stranger.checkpoint().note(), 1),
        Err(WitnessRefusal::NotSigned(_))
    ));
    // A proof from nothing, and an overlong one.
    let proof = net.ledger.tree().consistency_proof(3, 6).unwrap();
    assert!(matches!(
        add_checkpoint(&witness, &trust, WitnessedHead::default(), 0, &proof, cps[5].note(), 1),
        Err(WitnessRefusal::Malformed(_))
    ));
    let long = vec![EntryHash([1; 32]); MAX_PROOF_HASHES + 1];
    assert!(matches!(
        add_checkpoint(&witness, &trust, last, 3, &long, cps[5].note(), 1),
        Err(WitnessRefusal::Malformed(_))
    ));
}
