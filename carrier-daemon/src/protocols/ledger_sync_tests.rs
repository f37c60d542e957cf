//! What a hostile peer can make ledger sync do: forged, unsigned and
//! huge checkpoints are dropped without an alarm; a request for entries
//! past any end is answered with bounded work; only a validly signed,
//! contradicting checkpoint is equivocation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::ledger::{Checkpoint, EntryHash, Op, Quotas, Sequencer, SignedCheckpoint};

use super::*;
use crate::ledger::{EmbeddedLedger, LedgerStore};

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: EmbeddedLedger,
}

/// The log key, rebuilt from its seed wherever a test signs as the
/// sequencer (or as an equivocating one).
fn log_key() -> Identity {
    Identity::from_secrets(IdentityKind::Log, [42; 32], [9; 32])
}

/// A stored ledger of six entries, sequenced with [`log_key`].
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registrar = Identity::generate(IdentityKind::Registrar);
    let genesis = Op::Genesis {
        network: "sync".into(),
        registrars: vec![registrar.signing_key()],
        log_key: log_key().signing_key(),
        quotas: Quotas::default(),
        witnesses: Default::default(),
    };
    let entry = carrier_proto::ledger::LedgerState::new().next_entry(genesis, 1, &registrar);
    let mut sequencer = Sequencer::new(log_key(), None);
    let mut store = LedgerStore::create(dir.path(), entry, &mut sequencer).unwrap();
    for _ in 0..5 {
        let device = Identity::generate(IdentityKind::Device);
        let op = Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
        let entry = store.state().next_entry(op, 2, &registrar);
        store.sequence(&mut sequencer, vec![entry], 2).unwrap();
    }
    Fixture { _dir: dir, ledger: EmbeddedLedger::with_store(store) }
}

fn signed(f: &Fixture, size: u64, root: EntryHash, log: &Identity) -> SignedCheckpoint {
    let network = f.ledger.network().unwrap().id;
    SignedCheckpoint::sign(&network, Checkpoint { size, root, sequencer: None }, log, 1)
}

#[test]
fn forged_unsigned_and_huge_notes_are_dropped_without_an_alarm() {
    let f = fixture();
    let stranger = Identity::generate(IdentityKind::Log);
    let huge = signed(&f, u64::MAX, EntryHash([1; 32]), &stranger);
    let ours = f.ledger.checkpoint().unwrap();
    let unsigned = ours.text().split("\n\n").next().unwrap().to_owned() + "\n";
    let altered = ours.text().replacen("\n6\n", &format!("\n{}\n", u64::MAX), 1);
    for note in [huge.note().to_vec(), unsigned.into_bytes(), altered.into_bytes(), b"garbage".to_vec(), vec![]] {
        assert!(f.ledger.judge(&note).is_err(), "{note:?}");
    }
    assert_eq!(f.ledger.alarm(), None);
}

#[test]
fn only_a_signed_contradiction_is_evidence() {
    let f = fixture();
    let log = log_key();
    let ours = f.ledger.checkpoint().unwrap();
    assert!(matches!(f.ledger.judge(ours.note()), Ok(Judgement::Nothing)), "the same note");
    let older = signed(&f, 3, f.ledger.root_at(3).unwrap(), &log);
    assert!(matches!(f.ledger.judge(older.note()), Ok(Judgement::Nothing)));
    let newer = signed(&f, 9, EntryHash([3; 32]), &log);
    assert!(matches!(f.ledger.judge(newer.note()), Ok(Judgement::Fetch(_))), "fetch to check it");
    for (size, root) in [(6, EntryHash([4; 32])), (2, EntryHash([4; 32]))] {
        let other = signed(&f, size, root, &log);
        assert!(matches!(f.ledger.judge(other.note()), Ok(Judgement::Fork(_))), "size {size}");
    }
}

#[test]
fn fetches_past_any_end_get_bounded_answers() {
    let f = fixture();
    let cases = [(u64::MAX, u64::MAX, u32::MAX, u64::MAX), (0, u64::MAX, u32::MAX, 3), (3, 2, 10, 9), (6, 6, 10, 6)];
    for (from, tree_size, max, prove_from) in cases {
        let reply = serve(&f.ledger, pb::Fetch { from, max, tree_size, prove_from });
        assert!(reply.entries.len() <= 6, "({from}, {tree_size}): {} entries", reply.entries.len());
        assert!(reply.proof.len() <= 64 && reply.prefix_proof.len() <= 64);
    }
    let reply = serve(&f.ledger, pb::Fetch { from: 1, max: 2, tree_size: 6, prove_from: 2 });
    assert_eq!(reply.entries.len(), 2);
    let proof: Vec<EntryHash> = crate::ledger::proof_hashes(&reply.proof).unwrap();
    let ours = f.ledger.checkpoint().unwrap();
    let root_at_3 = f.ledger.root_at(3).unwrap();
    carrier_proto::ledger::merkle::verify_consistency(3, root_at_3, 6, ours.root(), &proof).unwrap();
    let prefix: Vec<EntryHash> = crate::ledger::proof_hashes(&reply.prefix_proof).unwrap();
    assert_eq!(reply.prefix_root, f.ledger.root_at(2).unwrap().0.to_vec());
    carrier_proto::ledger::merkle::verify_consistency(2, f.ledger.root_at(2).unwrap(), 6, ours.root(), &prefix)
        .unwrap();
}

/// Answers hold at most a batch's bytes, however many entries are asked.
#[test]
fn answers_fit_their_frame() {
    let f = fixture();
    let reply = serve(&f.ledger, pb::Fetch { from: 0, max: u32::MAX, tree_size: 6, prove_from: 1 });
    assert!(prost::Message::encoded_len(&reply) <= ANSWER_FRAME);
}
