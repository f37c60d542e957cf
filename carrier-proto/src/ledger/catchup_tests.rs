//! The catch-up machine against honest, lagging, lying and forking peers,
//! with every log built from real signed entries.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::identity::{Identity, IdentityKind};
use crate::ledger::{EntryHash, LogTrust, MAX_EVIDENCE_SIZE, Op};
use crate::testing::TestNetwork;

const NOW: u64 = 1_000_000;

/// Entries, their proof, and the prefix root and proof, as a peer sends them.
type HonestAnswer = (Vec<Vec<u8>>, Vec<EntryHash>, Option<(EntryHash, Vec<EntryHash>)>);

/// A network whose log has `size` entries, and a copy of its state at every size.
struct Log {
    net: TestNetwork,
    states: Vec<LedgerState>,
}

impl Log {
    fn new(size: u64) -> Self {
        let net = TestNetwork::new("catchup");
        let mut log = Self { states: vec![LedgerState::new(), net.ledger.clone()], net };
        while log.net.ledger.height() < size {
            log.net.register_device();
            log.states.push(log.net.ledger.clone());
        }
        log
    }

    fn at(&self, size: u64) -> &LedgerState {
        &self.states[size as usize]
    }

    fn checkpoint(&self, size: u64) -> SignedCheckpoint {
        self.net.sequencer.checkpoint(self.at(size), NOW)
    }

    /// What an honest peer holding the whole log answers to `fetch`.
    fn answer(&self, fetch: Fetch, max: u64) -> HonestAnswer {
        let full = self.at(fetch.tree_size);
        let end = fetch.tree_size.min(fetch.from + max);
        let entries = (fetch.from..end).map(|i| self.encoded(i)).collect();
        let proof =
            if end == fetch.tree_size { vec![] } else { full.tree().consistency_proof(end, fetch.tree_size).unwrap() };
        let prefix = (fetch.prove_from > 0).then(|| {
            let root = full.tree().root_at(fetch.prove_from).unwrap();
            let proof = if fetch.prove_from == fetch.tree_size {
                vec![]
            } else {
                full.tree().consistency_proof(fetch.prove_from, fetch.tree_size).unwrap()
            };
            (root, proof)
        });
        (entries, proof, prefix)
    }

    fn encoded(&self, index: u64) -> Vec<u8> {
        self.net.entries[index as usize].clone()
    }

    fn trust(&self) -> LogTrust<'_> {
        self.net.ledger.network().unwrap().trust()
    }
}

fn held<'a>(state: &'a LedgerState, checkpoint: Option<&'a SignedCheckpoint>) -> Held<'a> {
    Held { state, checkpoint, awaited: None }
}

/// Drives `catch_up` to its target against `log`'s honest answers, `max`
/// entries at a time, starting from `state`.
fn run(log: &Log, mut state: LedgerState, mut catch_up: Box<CatchUp>, max: u64) -> LedgerState {
    while let Some(fetch) = catch_up.fetch(state.height()) {
        let (entries, proof, prefix) = log.answer(fetch, max);
        let prefix = prefix.as_ref().map(|(r, p)| (*r, p.as_slice()));
        match catch_up.check(&state, Answer { entries: &entries, proof: &proof, prefix }).unwrap() {
            Checked::Batch(batch) => batch.apply(&mut state).unwrap(),
            Checked::Fork(fork) => panic!("an honest log is no fork: {fork:?}"),
        }
    }
    state
}

#[test]
fn an_older_or_equal_checkpoint_needs_nothing_and_a_fuller_note_is_adopted() {
    let log = Log::new(6);
    let ours = log.checkpoint(6);
    let state = log.at(6);
    assert!(matches!(judge(held(state, Some(&ours)), log.checkpoint(3)), Judgement::Nothing));
    assert!(matches!(judge(held(state, Some(&ours)), ours.clone()), Judgement::Nothing));
    let later = log.net.sequencer.checkpoint(state, NOW + 60_000);
    assert!(matches!(judge(held(state, Some(&ours)), later.clone()), Judgement::Adopt(c) if *c == later));
    assert!(matches!(judge(held(state, Some(&later)), ours), Judgement::Nothing), "never an older note");
}

#[test]
fn a_larger_checkpoint_is_proven_to_extend_ours_then_fetched() {
    let log = Log::new(40);
    let ours = log.checkpoint(9);
    let Judgement::Fetch(catch_up) = judge(held(log.at(9), Some(&ours)), log.checkpoint(40)) else { panic!() };
    assert_eq!(catch_up.fetch(9), Some(Fetch { from: 9, tree_size: 40, prove_from: 9 }));
    let state = run(&log, log.at(9).clone(), catch_up, 7);
    assert_eq!(state.head(), log.at(40).head());
}

#[test]
fn a_newcomer_catches_up_from_its_genesis() {
    let log = Log::new(20);
    let Judgement::Fetch(catch_up) = judge(held(log.at(1), None), log.checkpoint(20)) else { panic!() };
    assert_eq!(catch_up.fetch(1).unwrap().prove_from, 0, "nothing signed to prove from");
    assert_eq!(run(&log, log.at(1).clone(), catch_up, 5).head(), log.at(20).head());
    // With its own log whole, the same checkpoint is adopted.
    assert!(matches!(judge(held(log.at(20), None), log.checkpoint(20)), Judgement::Adopt(_)));
}

#[test]
fn without_a_prefix_proof_or_with_a_bad_one_nothing_is_taken() {
    let log = Log::new(12);
    let ours = log.checkpoint(5);
    let Judgement::Fetch(mut catch_up) = judge(held(log.at(5), Some(&ours)), log.checkpoint(12)) else { panic!() };
    let fetch = catch_up.fetch(5).unwrap();
    let (entries, proof, prefix) = log.answer(fetch, 100);
    let state = log.at(5);
    let no_prefix = Answer { entries: &entries, proof: &proof, prefix: None };
    assert_eq!(catch_up.check(state, no_prefix).unwrap_err(), CatchUpError::NoPrefixProof);
    let (root, mut bad) = prefix.unwrap();
    bad.reverse();
    let lying = Answer { entries: &entries, proof: &proof, prefix: Some((root, &bad)) };
    assert_eq!(catch_up.check(state, lying).unwrap_err(), CatchUpError::BadPrefixProof);
    // A proof to another root that does not hold is not evidence either.
    let other = Answer { entries: &entries, proof: &proof, prefix: Some((EntryHash([1; 32]), &bad)) };
    assert_eq!(catch_up.check(state, other).unwrap_err(), CatchUpError::BadPrefixProof);
}

/// Two histories from one genesis, both signed by the log key.
fn forked(at: u64, size: u64) -> (Log, LedgerState) {
    let log = Log::new(size);
    let mut other = log.at(at).clone();
    while other.height() < size {
        let device = Identity::generate(IdentityKind::Device);
        let op = Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec!["other".into()] };
        let entry = other.next_entry(op, NOW, &log.net.registrar);
        other.append(entry).unwrap();
    }
    (log, other)
}

#[test]
fn two_signed_histories_are_evidence_anyone_can_check() {
    let (log, other) = forked(4, 10);
    let theirs_same = log.net.sequencer.checkpoint(&other, NOW);
    let ours = log.checkpoint(10);
    // One size, two roots.
    let Judgement::Fork(fork) = judge(held(log.at(10), Some(&ours)), theirs_same.clone()) else { panic!() };
    assert_eq!(Fork::decode(&fork.encode(), &log.trust()).unwrap(), *fork);
    // A smaller checkpoint that is not our prefix: our tree proves it.
    let mut shorter = log.at(4).clone();
    let device = Identity::generate(IdentityKind::Device);
    let op = Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
    shorter.append(shorter.next_entry(op, NOW, &log.net.registrar)).unwrap();
    let theirs_small = log.net.sequencer.checkpoint(&shorter, NOW);
    let Judgement::Fork(fork) = judge(held(log.at(10), Some(&ours)), theirs_small) else { panic!() };
    let text = fork.to_text();
    assert_eq!(Fork::decode_text(&text, &log.trust()).unwrap(), *fork);
    // A larger one on the other branch: its own tree's prefix proof shows it.
    let mut longer = other.clone();
    let device = Identity::generate(IdentityKind::Device);
    let op = Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
    longer.append(longer.next_entry(op, NOW, &log.net.registrar)).unwrap();
    let theirs_large = log.net.sequencer.checkpoint(&longer, NOW);
    let ours_small = log.checkpoint(8);
    let Judgement::Fetch(mut catch_up) = judge(held(log.at(8), Some(&ours_small)), theirs_large) else { panic!() };
    let root = longer.tree().root_at(8).unwrap();
    let proof = longer.tree().consistency_proof(8, 11).unwrap();
    let answer = Answer { entries: &[], proof: &[], prefix: Some((root, &proof)) };
    let Checked::Fork(fork) = catch_up.check(log.at(8), answer).unwrap() else { panic!("not evidence") };
    assert_eq!(Fork::decode(&fork.encode(), &log.trust()).unwrap(), *fork);
}

#[test]
fn evidence_that_does_not_hold_is_refused() {
    let (log, other) = forked(4, 10);
    let ours = log.checkpoint(10);
    let theirs = log.net.sequencer.checkpoint(&other, NOW);
    let fork = Fork::same_size(ours.clone(), theirs).unwrap();
    // Not evidence: the same checkpoint twice, or a prefix of it.
    assert!(Fork::same_size(ours.clone(), ours.clone()).is_none());
    let prefix = log.checkpoint(6);
    let proof = log.at(10).tree().consistency_proof(6, 10).unwrap();
    assert!(Fork::new(prefix, ours.clone(), log.at(6).tree().root(), proof).is_none());
    // Notes not signed by this log's key.
    let stranger = TestNetwork::new("catchup");
    let foreign = stranger.network_trust();
    assert!(Fork::decode(&fork.encode(), &foreign).is_err());
    assert!(Fork::decode(b"garbage", &log.trust()).is_err());
    assert!(Fork::decode(&vec![0; MAX_EVIDENCE_SIZE + 1], &log.trust()).is_err());
}

#[test]
fn a_short_log_heals_against_its_own_checkpoint_and_refuses_another() {
    let (log, other) = forked(4, 10);
    let awaited = log.checkpoint(10);
    let short = log.at(6);
    let held = Held { state: short, checkpoint: None, awaited: Some(&awaited) };
    assert!(matches!(judge(held, log.checkpoint(8)), Judgement::Nothing), "a smaller one cannot help");
    let theirs = log.net.sequencer.checkpoint(&other, NOW);
    assert!(matches!(judge(held, theirs), Judgement::Fork(_)));
    let Judgement::Fetch(catch_up) = judge(held, log.checkpoint(10)) else { panic!() };
    assert_eq!(run(&log, short.clone(), catch_up, 3).head(), log.at(10).head());
}
