//! The sequencer's own rules, each attacked: clocks, expiry, and quotas by
//! subject that a key rotation cannot shake off.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::identity::IdentityKind;
use crate::ledger::{Consent, Quotas, WitnessPolicy};

const NOW: u64 = 10_000_000;

struct Fixture {
    registrar: Identity,
    sequencer: Sequencer,
    state: LedgerState,
}

fn persist(_: &Entry) -> Result<(), Rejection> {
    Ok(())
}

impl Fixture {
    fn new(quotas: Quotas) -> Self {
        let registrar = Identity::generate(IdentityKind::Registrar);
        let log = Identity::generate(IdentityKind::Log);
        let genesis = Op::Genesis {
            network: "quotas".into(),
            registrars: vec![registrar.signing_key()],
            log_key: log.signing_key(),
            quotas,
            witnesses: WitnessPolicy::default(),
        };
        let mut state = LedgerState::new();
        let mut sequencer = Sequencer::new(log, None);
        let entry = state.next_entry(genesis, NOW, &registrar);
        sequencer.sequence(&mut state, entry, NOW, persist).unwrap();
        Self { registrar, sequencer, state }
    }

    fn submit(&mut self, op: Op, signer: &Identity, now: u64) -> Result<u64, Rejection> {
        let entry = self.state.next_entry(op, now, signer);
        self.sequencer.sequence(&mut self.state, entry, now, persist)
    }

    fn by_registrar(&mut self, op: Op, now: u64) -> Result<u64, Rejection> {
        let entry = self.state.next_entry(op, now, &self.registrar);
        self.sequencer.sequence(&mut self.state, entry, now, persist)
    }

    fn device(&mut self) -> Identity {
        let device = Identity::generate(IdentityKind::Device);
        self.by_registrar(register(&device), NOW).unwrap();
        device
    }

    fn app_op(&self, device: &Identity) -> Op {
        let app = Identity::generate(IdentityKind::App);
        let network = self.state.network().unwrap().id;
        let consent = Consent::sign(&app, &device.did(), &network);
        Op::RegisterApp { did: app.did(), keys: app.public_keys(), device: device.did(), name: "a".into(), consent }
    }
}

fn register(device: &Identity) -> Op {
    Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] }
}

#[test]
fn a_rotation_loop_is_stopped_by_the_quota_of_its_did_not_of_its_key() {
    let quotas = Quotas { max_requests_per_minute: 5, max_rotations_per_day: 3, ..Quotas::default() };
    let mut f = Fixture::new(quotas);
    let device = f.device();
    let did = device.did();
    // The device rotates its own key again and again, each time signing
    // with the key it just moved to.
    let mut current = device;
    let mut sequenced = 0;
    for _ in 0..50 {
        let next = Identity::generate(IdentityKind::Device);
        let op = Op::RotateKeys { did, keys: next.public_keys() };
        match f.submit(op, &current, NOW) {
            Ok(_) => {
                sequenced += 1;
                current = next;
            }
            Err(Rejection::TooManyRotations { did: refused, per_day: 3 }) => assert_eq!(refused, did),
            Err(other) => panic!("unexpected refusal {other}"),
        }
    }
    assert_eq!(sequenced, 3, "three rotations a day, whichever key signs");
    // The next day it may rotate again.
    let next = Identity::generate(IdentityKind::Device);
    assert!(f.submit(Op::RotateKeys { did, keys: next.public_keys() }, &current, NOW + 24 * 3600 * 1000).is_ok());
}

#[test]
fn a_device_and_its_apps_share_one_quota_per_minute_and_per_day() {
    let quotas = Quotas { max_requests_per_minute: 4, max_requests_per_day: 6, ..Quotas::default() };
    let mut f = Fixture::new(quotas);
    let device = f.device();
    let mut app_ids = Vec::new();
    for _ in 0..4 {
        let op = f.app_op(&device);
        let Op::RegisterApp { did, .. } = &op else { unreachable!() };
        app_ids.push(*did);
        f.submit(op, &device, NOW).unwrap();
    }
    // An app of that device, signing with its own key, counts against the
    // device: the minute is used up.
    let op = f.app_op(&device);
    assert!(matches!(
        f.submit(op, &device, NOW),
        Err(Rejection::TooManyRequests { per: "minute", quota: 4, subject }) if subject == device.did()
    ));
    // Another device is not held back.
    let other = f.device();
    assert!(f.submit(f.app_op(&other), &other, NOW).is_ok());
    // Next minute: two more, then the day's six are used up.
    for _ in 0..2 {
        assert!(f.submit(f.app_op(&device), &device, NOW + 60_000).is_ok());
    }
    assert!(matches!(
        f.submit(f.app_op(&device), &device, NOW + 120_000),
        Err(Rejection::TooManyRequests { per: "day", quota: 6, .. })
    ));
    // A revocation is never held back by a quota.
    let revoke = Op::Revoke { did: app_ids[0], reason: "done".into() };
    assert!(f.submit(revoke, &device, NOW + 120_000).is_ok());
}

#[test]
fn registrars_have_a_quota_of_their_own() {
    let quotas = Quotas { registrar_requests_per_minute: 3, ..Quotas::default() };
    let mut f = Fixture::new(quotas);
    for _ in 0..3 {
        f.device();
    }
    let op = register(&Identity::generate(IdentityKind::Device));
    assert!(matches!(f.by_registrar(op.clone(), NOW), Err(Rejection::TooManyRequests { per: "minute", .. })));
    assert!(f.by_registrar(op, NOW + 60_000).is_ok());
}

#[test]
fn requests_expire_and_may_not_live_too_long() {
    let quotas = Quotas { max_request_lifetime_s: 3600, ..Quotas::default() };
    let mut f = Fixture::new(quotas);
    let op = register(&Identity::generate(IdentityKind::Device));
    let network = f.state.network().unwrap().id;
    let sign = |expires: u64| Entry::sign_until(network, NOW, expires, op.clone(), &f.registrar);
    let (none, late, long, fine) = (sign(0), sign(NOW + 1_000), sign(NOW + 3_600_001), sign(NOW + 3_600_000));
    let mut state = f.state.clone();
    assert_eq!(f.sequencer.sequence(&mut state, none, NOW, persist), Err(Rejection::NoExpiry));
    // Played back after it expired: refused, whoever sends it.
    assert_eq!(f.sequencer.sequence(&mut state, late, NOW + 1_500, persist), Err(Rejection::Expired { ago_ms: 500 }));
    assert_eq!(f.sequencer.sequence(&mut state, long, NOW, persist), Err(Rejection::LivesTooLong { max_s: 3600 }));
    assert_eq!(f.sequencer.sequence(&mut state, fine, NOW, persist), Ok(1));
}

#[test]
fn future_dates_are_refused_and_checkpoints_sign_what_it_holds() {
    let mut f = Fixture::new(Quotas::default());
    let op = register(&Identity::generate(IdentityKind::Device));
    let ahead = NOW + CLOCK_SKEW_MS + 1;
    let entry = f.state.next_entry(op, ahead, &f.registrar);
    assert_eq!(
        f.sequencer.sequence(&mut f.state, entry, NOW, persist),
        Err(Rejection::FromTheFuture { ahead_ms: CLOCK_SKEW_MS + 1 })
    );
    let checkpoint = f.sequencer.checkpoint(&f.state, NOW);
    assert_eq!((checkpoint.size(), checkpoint.root()), (f.state.head().height, f.state.head().root));
    assert_eq!(checkpoint.log_time_s(), Some(NOW / 1000));
}
