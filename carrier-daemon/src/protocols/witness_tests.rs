//! A witness remembers what it cosigned across restarts, and a state file
//! it cannot read stops it rather than letting it start over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;

use carrier_proto::identity::IdentityKind;
use carrier_proto::testing::TestNetwork;

use super::*;
use crate::ledger::EmbeddedLedger;
use crate::paths::WITNESS_STATE_FILE;

fn request(note: &[u8], old_size: u64, proof: &[EntryHash]) -> pb::AddCheckpoint {
    pb::AddCheckpoint { old_size, proof: proof.iter().map(|h| h.0.to_vec()).collect(), note: note.to_vec() }
}

#[test]
fn a_restarted_witness_remembers_what_it_cosigned() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(WITNESS_STATE_FILE);
    let mut net = TestNetwork::new("witnessed");
    net.register_device();
    let small = net.checkpoint();
    let ledger: Arc<dyn Ledger> = Arc::new(EmbeddedLedger::in_memory(net.ledger.clone()));
    let key = || Identity::from_secrets(IdentityKind::Witness, [7; 32], [8; 32]);
    let witness = Witness::open(key(), Arc::clone(&ledger), state.clone()).unwrap();
    assert!(matches!(witness.answer(&request(small.note(), 0, &[])), Answer::Cosignature(_)));
    drop(witness);

    // After a restart it still knows: a request from nothing is a conflict,
    // and a larger checkpoint needs the proof from what it cosigned.
    let witness = Witness::open(key(), ledger, state.clone()).unwrap();
    let (size, _) = (small.size(), net.register_device());
    let large = net.checkpoint();
    assert_eq!(witness.answer(&request(large.note(), 0, &[])), Answer::Conflict(size));
    assert!(matches!(witness.answer(&request(large.note(), size, &[])), Answer::Refused(_)), "no proof");
    let proof = net.ledger.tree().consistency_proof(size, large.size()).unwrap();
    assert!(matches!(witness.answer(&request(large.note(), size, &proof)), Answer::Cosignature(_)));
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn an_unreadable_state_stops_the_witness_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(WITNESS_STATE_FILE);
    std::fs::write(&state, b"short").unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(EmbeddedLedger::in_memory(TestNetwork::new("w").ledger));
    let error = Witness::open(Identity::generate(IdentityKind::Witness), ledger, state.clone()).unwrap_err();
    assert!(error.to_string().contains(&state.display().to_string()), "{error}");
}
