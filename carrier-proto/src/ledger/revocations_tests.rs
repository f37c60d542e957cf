#![allow(clippy::unwrap_used)]

use super::*;
use crate::identity::{Identity, IdentityKind};
use crate::ledger::{Consent, Entry};
use crate::testing::TestNetwork;

/// A network with one device hosting one app; the time now.
fn network() -> (TestNetwork, Identity, Identity, u64) {
    let mut net = TestNetwork::new("early");
    let device = net.register_device();
    let app = Identity::generate(IdentityKind::App);
    let consent = Consent::sign(&app, &device.did(), &net.ledger.network().unwrap().id);
    let op =
        Op::RegisterApp { did: app.did(), keys: app.public_keys(), device: device.did(), name: "a".into(), consent };
    net.append(op, &device);
    (net, device, app, 1_000)
}

fn revoke(net: &TestNetwork, did: Did, signer: &Identity, now_ms: u64) -> Entry {
    net.ledger.next_entry(Op::Revoke { did, reason: "lost".into() }, now_ms, signer)
}

#[test]
fn a_registrars_revocation_is_in_force_at_once_with_the_devices_apps_until_the_log_holds_it() {
    let (mut net, device, app, now) = network();
    let mut seen = SeenRevocations::default();
    let entry = revoke(&net, device.did(), &net.registrar, now);
    assert_eq!(seen.admit(&net.ledger, &entry, now), Ok(Admitted::New(device.did())));
    assert_eq!(seen.status(&net.ledger, &device.did()), Some(Status::RevokedUnsequenced { reason: "lost".into() }));
    assert_eq!(seen.status(&net.ledger, &app.did()), Some(Status::HostRevoked(device.did())));
    assert_eq!(seen.admit(&net.ledger, &entry, now), Ok(Admitted::Known), "the same request again");
    assert!(seen.holds(&entry.hash()));
    // Sequenced: the ledger says so itself, and it is forgotten here.
    assert_eq!(seen.settle(&net.ledger), 0);
    net.revoke(device.did());
    assert_eq!(seen.settle(&net.ledger), 1);
    assert!(seen.is_empty() && seen.status(&net.ledger, &device.did()).is_none());
}

#[test]
fn a_device_may_revoke_itself_but_no_other() {
    let (mut net, device, _, now) = network();
    let other = net.register_device();
    let mut seen = SeenRevocations::default();
    let theirs = revoke(&net, other.did(), &device, now);
    assert!(matches!(
        seen.admit(&net.ledger, &theirs, now),
        Err(RevocationRefusal::Rejected(Rejection::Unauthorized { .. }))
    ));
    assert_eq!(seen.status(&net.ledger, &other.did()), None);
    let own = revoke(&net, device.did(), &device, now);
    assert_eq!(seen.admit(&net.ledger, &own, now), Ok(Admitted::New(device.did())));
}

#[test]
fn anything_else_waits_for_the_log_and_stale_or_future_requests_are_refused() {
    let (net, device, _, now) = network();
    let mut seen = SeenRevocations::default();
    let stranger = Identity::generate(IdentityKind::Device);
    let register = net.ledger.next_entry(
        Op::RegisterDevice { did: stranger.did(), keys: stranger.public_keys(), roles: vec![] },
        now,
        &net.registrar,
    );
    assert_eq!(seen.admit(&net.ledger, &register, now), Err(RevocationRefusal::NotARevocation("register-device")));
    let unknown = revoke(&net, stranger.did(), &net.registrar, now);
    assert!(matches!(
        seen.admit(&net.ledger, &unknown, now),
        Err(RevocationRefusal::Rejected(Rejection::UnknownDid(_)))
    ));
    let old = revoke(&net, device.did(), &net.registrar, now);
    let later = now + 25 * 3600 * 1000;
    assert!(matches!(
        seen.admit(&net.ledger, &old, later),
        Err(RevocationRefusal::Rejected(Rejection::Expired { .. }))
    ));
    let future = revoke(&net, device.did(), &net.registrar, now + 10 * 60 * 1000);
    assert!(matches!(
        seen.admit(&net.ledger, &future, now),
        Err(RevocationRefusal::Rejected(Rejection::FromTheFuture { .. }))
    ));
    assert!(seen.is_empty());
}
