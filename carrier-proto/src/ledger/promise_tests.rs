#![allow(clippy::unwrap_used)]

use super::*;
use crate::identity::IdentityKind;
use crate::ledger::{Entry, Op, Rejection};
use crate::testing::TestNetwork;

/// A network with one device, and a revocation of it signed but not
/// sequenced: what a sequencer could promise and drop.
fn net() -> (TestNetwork, Entry) {
    let mut net = TestNetwork::new("promises");
    let device = net.register_device();
    let revocation = net.ledger.next_entry(Op::Revoke { did: device.did(), reason: "lost".into() }, 50, &net.registrar);
    (net, revocation)
}

fn keys(net: &TestNetwork) -> Vec<SigningPublicKey> {
    net.ledger.log_keys()
}

fn promise(net: &TestNetwork, leaf: EntryHash, index: u64, deadline_ms: u64) -> SequencerAnswer {
    net.sequencer.answer(&net.ledger, leaf, Word::Promise { index, deadline_ms }, 1_000)
}

fn proof_at(net: &TestNetwork, index: u64, size: u64) -> Option<(EntryHash, Vec<EntryHash>)> {
    let tree = net.ledger.tree();
    Some((tree.leaf(index).unwrap(), tree.inclusion_proof(index, size).unwrap()))
}

#[test]
fn a_promise_kept_is_judged_kept_and_travels_as_signed() {
    let (mut net, revocation) = net();
    let index = net.ledger.height();
    let answer = promise(&net, revocation.hash(), index, 60_000);
    let network = net.ledger.network().unwrap().id;
    let read = SequencerAnswer::decode(answer.encoded(), &network, &keys(&net)).unwrap();
    assert_eq!(read, answer);
    assert_eq!(read.word(), &Word::Promise { index, deadline_ms: 60_000 });
    net.sequencer.sequence(&mut net.ledger, revocation, 60, |_: &Entry| Ok::<(), Rejection>(())).unwrap();
    let checkpoint = net.sequencer.checkpoint(&net.ledger, 90_000);
    assert_eq!(answer.judge(&checkpoint, proof_at(&net, index, checkpoint.size())), Verdict::Kept);
}

#[test]
fn a_dropped_request_shows_as_another_leaf_at_the_promised_index() {
    let (mut net, revocation) = net();
    let index = net.ledger.height();
    let answer = promise(&net, revocation.hash(), index, 60_000);
    // The sequencer puts another request where it promised the revocation.
    net.register_device();
    let checkpoint = net.sequencer.checkpoint(&net.ledger, 2_000);
    let Verdict::Broken(broken) = answer.judge(&checkpoint, proof_at(&net, index, checkpoint.size())) else {
        panic!("not judged broken")
    };
    // Anyone with the log key checks it, even before the deadline.
    let network = net.ledger.network().unwrap().id;
    let read = BrokenPromise::decode(&broken.encode(), &network, &keys(&net)).unwrap();
    assert_eq!(read, *broken);
    let text = broken.to_text();
    assert!(text.contains("holds another request"), "{text}");
    assert_eq!(BrokenPromise::decode_text(&text, &network, &keys(&net)).unwrap(), *broken);
    // A wrong proof shows nothing.
    let wrong = Some((net.ledger.tree().leaf(index).unwrap(), vec![EntryHash::ZERO]));
    assert_eq!(answer.judge(&checkpoint, wrong), Verdict::Waiting);
}

#[test]
fn a_log_that_stops_short_of_the_index_breaks_the_promise_only_after_the_deadline() {
    let (net, revocation) = net();
    let index = net.ledger.height();
    let answer = promise(&net, revocation.hash(), index, 60_000);
    let before = net.sequencer.checkpoint(&net.ledger, 59_000);
    assert_eq!(answer.judge(&before, None), Verdict::Waiting);
    let network = net.ledger.network().unwrap().id;
    let early = BrokenPromise::new(&answer, &before, None).encode();
    assert!(matches!(BrokenPromise::decode(&early, &network, &keys(&net)), Err(PromiseError::NotBroken(_))));
    let after = net.sequencer.checkpoint(&net.ledger, 61_000);
    let Verdict::Broken(broken) = answer.judge(&after, None) else { panic!("not judged broken") };
    assert!(BrokenPromise::decode(&broken.encode(), &network, &keys(&net)).is_ok());
}

#[test]
fn forged_answers_and_evidence_are_refused_by_name() {
    let (net, revocation) = net();
    let network = net.ledger.network().unwrap().id;
    let index = net.ledger.height();
    // Signed by a key that is no log key of this network.
    let stranger = Identity::generate(IdentityKind::Log);
    let forged = SequencerAnswer::sign(&stranger, network, revocation.hash(), Word::Refused("no".into()), 1);
    assert_eq!(SequencerAnswer::decode(forged.encoded(), &network, &keys(&net)), Err(PromiseError::NotTheLog));
    // For another network.
    let other = TestNetwork::new("other");
    let elsewhere = promise(&other, revocation.hash(), index, 60_000);
    let mut other_keys = keys(&net);
    other_keys.extend(keys(&other));
    assert_eq!(SequencerAnswer::decode(elsewhere.encoded(), &network, &other_keys), Err(PromiseError::OtherNetwork));
    // A signature that does not match the body.
    let answer = promise(&net, revocation.hash(), index, 60_000);
    let mut signed = pb::SequencerAnswer::decode(answer.encoded()).unwrap();
    let last = signed.body.len() - 1;
    signed.body[last] ^= 1;
    assert_eq!(
        SequencerAnswer::decode(&signed.encode_to_vec(), &network, &keys(&net)),
        Err(PromiseError::BadSignature)
    );
    // Garbage and oversized input.
    assert!(matches!(SequencerAnswer::decode(&[0xff; 9], &network, &keys(&net)), Err(PromiseError::Malformed(_))));
    let big = vec![0u8; MAX_BROKEN_PROMISE_SIZE + 1];
    assert!(matches!(BrokenPromise::decode(&big, &network, &keys(&net)), Err(PromiseError::Malformed(_))));
    // A refusal is no promise, and cannot be shown broken.
    let refusal = net.sequencer.answer(&net.ledger, revocation.hash(), Word::Refused("quota".into()), 1);
    let checkpoint = net.sequencer.checkpoint(&net.ledger, 99_000);
    assert_eq!(refusal.judge(&checkpoint, None), Verdict::NotAPromise);
    let evidence = BrokenPromise::new(&refusal, &checkpoint, None).encode();
    assert!(matches!(BrokenPromise::decode(&evidence, &network, &keys(&net)), Err(PromiseError::NotBroken(_))));
}

#[test]
fn a_checkpoint_by_a_later_log_key_shows_the_earlier_keys_promise_broken() {
    let (mut net, revocation) = net();
    let index = net.ledger.height();
    let answer = promise(&net, revocation.hash(), index, 60_000);
    // Registrars hand the log to a new key; its first entry is the handover,
    // at the index the old key promised the revocation.
    let new = Identity::generate(IdentityKind::Log);
    let device = net.register_device();
    let op = Op::Handover { log_key: new.signing_key(), sequencer: device.did(), approvals: vec![] };
    let index_after = net.ledger.height();
    net.append_by_registrar(op);
    let successor = crate::ledger::Sequencer::new(new, None);
    let checkpoint = successor.checkpoint(&net.ledger, 70_000);
    assert_eq!(net.ledger.log_keys().len(), 2);
    let Verdict::Broken(broken) = answer.judge(&checkpoint, proof_at(&net, index, checkpoint.size())) else {
        panic!("not judged broken")
    };
    let network = net.ledger.network().unwrap().id;
    assert!(BrokenPromise::decode(&broken.encode(), &network, &keys(&net)).is_ok());
    // Without the old key, the promise is no log's word.
    let only_new = vec![net.ledger.network().unwrap().log_key];
    assert_eq!(BrokenPromise::decode(&broken.encode(), &network, &only_new), Err(PromiseError::NotTheLog));
    assert!(index_after > index);
}

#[test]
fn a_checkpoint_by_an_earlier_key_than_the_promises_shows_nothing() {
    let (mut net, revocation) = net();
    let old_key = net.sequencer.log_key();
    let index = net.ledger.height();
    // The log is handed to a new key, which promises the revocation...
    let new = Identity::generate(IdentityKind::Log);
    let device = net.register_device();
    let op = Op::Handover { log_key: new.signing_key(), sequencer: device.did(), approvals: vec![] };
    net.append_by_registrar(op);
    let successor = crate::ledger::Sequencer::new(new, None);
    let answer = successor.answer(&net.ledger, revocation.hash(), Word::Promise { index, deadline_ms: 1 }, 1);
    // ... and the retired key signs a checkpoint that would show it broken.
    let retired = net.sequencer.checkpoint(&net.ledger, 99_000);
    assert_eq!(retired.log_key(), old_key);
    let Verdict::Broken(broken) = answer.judge(&retired, proof_at(&net, index, retired.size())) else {
        panic!("judged on its face")
    };
    let network = net.ledger.network().unwrap().id;
    assert!(matches!(BrokenPromise::decode(&broken.encode(), &network, &keys(&net)), Err(PromiseError::Checkpoint(_))));
}
