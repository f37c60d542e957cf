//! Rule tests: a small ledger is built with real keys, then each rule is
//! attacked with an entry that breaks it.

use super::*;
use crate::identity::{Identity, IdentityKind};

/// A network with one registrar and helpers to sign the next entry.
struct Net {
    registrar: Identity,
    log: Identity,
    state: LedgerState,
    encoded: Vec<Vec<u8>>,
    clock: u64,
}

impl Net {
    fn new() -> Self {
        let registrar = Identity::generate(IdentityKind::Registrar);
        let log = Identity::generate(IdentityKind::Log);
        let genesis = genesis_op("test", vec![registrar.signing_key()], &log);
        let mut net = Net { state: LedgerState::new(), encoded: vec![], clock: 1_000, registrar, log };
        net.ok(genesis, None);
        net
    }

    fn entry(&mut self, op: Op, signer: Option<&Identity>) -> Entry {
        self.clock += 1;
        self.state.next_entry(op, self.clock, signer.unwrap_or(&self.registrar))
    }

    fn try_op(&mut self, op: Op, signer: Option<&Identity>) -> Result<(), Rejection> {
        let entry = self.entry(op, signer);
        let encoded = entry.encoded().to_vec();
        self.state.append(entry)?;
        self.encoded.push(encoded);
        Ok(())
    }

    fn ok(&mut self, op: Op, signer: Option<&Identity>) {
        self.try_op(op, signer).unwrap();
    }

    fn device(&mut self) -> Identity {
        let device = Identity::generate(IdentityKind::Device);
        self.ok(register_device(&device), None);
        device
    }

    fn app(&mut self, device: &Identity) -> Identity {
        let app = Identity::generate(IdentityKind::App);
        self.ok(self.app_op(&app, device), Some(device));
        app
    }

    /// `app` registered under `device`, with the app's consent.
    fn app_op(&self, app: &Identity, device: &Identity) -> Op {
        let network = self.state.network().expect("genesis").id;
        let consent = crate::ledger::Consent::sign(app, &device.did(), &network);
        Op::RegisterApp { did: app.did(), keys: app.public_keys(), device: device.did(), name: "chat".into(), consent }
    }
}

fn genesis_op(network: &str, registrars: Vec<crate::identity::SigningPublicKey>, log: &Identity) -> Op {
    Op::Genesis {
        network: network.into(),
        registrars,
        log_key: log.signing_key(),
        quotas: Quotas::default(),
        witnesses: WitnessPolicy::default(),
    }
}

fn register_device(device: &Identity) -> Op {
    Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec!["relay".into()] }
}

fn revoke(who: &Identity) -> Op {
    Op::Revoke { did: who.did(), reason: "lost".into() }
}

fn rotate(who: &Identity, to: &Identity) -> Op {
    Op::RotateKeys { did: who.did(), keys: to.public_keys() }
}

#[test]
fn resolves_devices_and_apps() {
    let mut net = Net::new();
    let device = net.device();
    let app = net.app(&device);
    let resolved = net.state.resolve(&app.did()).unwrap();
    assert!(resolved.is_active());
    assert_eq!(resolved.record.subject, Subject::App { device: device.did(), name: "chat".into() });
    assert_eq!(resolved.record.keys, app.public_keys());
    let resolved = net.state.resolve(&device.did()).unwrap();
    assert_eq!(resolved.record.subject, Subject::Device { roles: vec!["relay".into()] });
    assert_eq!(resolved.record.registered_at, 1);
    assert_eq!(net.state.head().height, 3);
    assert!(net.state.resolve(&Identity::generate(IdentityKind::App).did()).is_none());
    assert_eq!(net.state.network().unwrap().name, "test");
}

#[test]
fn replay_rebuilds_the_same_state() {
    let mut net = Net::new();
    let device = net.device();
    let app = net.app(&device);
    let new_keys = Identity::generate(IdentityKind::App);
    net.ok(rotate(&app, &new_keys), Some(&app));
    net.ok(revoke(&device), None);
    let replayed = replay(&net.encoded).unwrap();
    assert_eq!(replayed.head(), net.state.head());
    assert_eq!(replayed.tree().root(), replayed.head().root);
    assert_eq!(
        replayed.entry_hash(replayed.head().height - 1),
        Some(Entry::decode(net.encoded.last().unwrap()).unwrap().hash())
    );
    assert_eq!(replayed.entry_hash(0), Some(replayed.network().unwrap().id));
    assert_eq!(replayed.entry_hash(replayed.head().height), None);
    let resolved = replayed.resolve(&app.did()).unwrap();
    assert_eq!(resolved.record.keys, new_keys.public_keys());
    assert_eq!(resolved.status, Status::HostRevoked(device.did()));
}

#[test]
fn rotation_moves_authority_to_the_new_key() {
    let mut net = Net::new();
    let device = net.device();
    let next = Identity::generate(IdentityKind::Device);
    net.ok(rotate(&device, &next), Some(&device));
    let app = Identity::generate(IdentityKind::App);
    // The old key no longer speaks for the device...
    assert!(matches!(net.try_op(net.app_op(&app, &device), Some(&device)), Err(Rejection::NotHostDevice { .. })));
    // ...the new one does, under the unchanged DID.
    net.ok(net.app_op(&app, &device), Some(&next));
    assert_eq!(net.state.resolve(&device.did()).unwrap().record.keys, next.public_keys());
    assert_eq!(net.state.did_of_key(&next.signing_key()), Some(device.did()));
    assert_eq!(net.state.did_of_key(&device.signing_key()), None);
    assert_eq!(net.state.did_of_key(&app.signing_key()), Some(app.did()));
}

#[test]
fn rejects_wrong_signer_on_genesis() {
    let registrar = Identity::generate(IdentityKind::Registrar);
    let stranger = Identity::generate(IdentityKind::Registrar);
    let genesis = genesis_op("x", vec![registrar.signing_key()], &Identity::generate(IdentityKind::Log));
    let mut state = LedgerState::new();
    let err = state.append(state.next_entry(genesis, 1, &stranger)).unwrap_err();
    assert!(matches!(err, Rejection::Unauthorized { .. }), "{err}");
}

#[test]
fn rejects_ledgers_that_do_not_start_with_genesis() {
    let registrar = Identity::generate(IdentityKind::Registrar);
    let device = Identity::generate(IdentityKind::Device);
    let mut state = LedgerState::new();
    let err = state.append(state.next_entry(register_device(&device), 1, &registrar)).unwrap_err();
    assert_eq!(err, Rejection::NotGenesis);
    let mut net = Net::new();
    let again = genesis_op("again", vec![net.registrar.signing_key()], &Identity::generate(IdentityKind::Log));
    assert_eq!(net.try_op(again, None), Err(Rejection::GenesisNotFirst));
}

#[test]
fn rejects_genesis_without_or_with_repeated_registrars() {
    let registrar = Identity::generate(IdentityKind::Registrar);
    let state = LedgerState::new();
    let log = Identity::generate(IdentityKind::Log);
    let none = genesis_op("x", vec![], &log);
    assert_eq!(state.clone().append(state.next_entry(none, 1, &registrar)), Err(Rejection::NoRegistrars));
    let twice = genesis_op("x", vec![registrar.signing_key(); 2], &log);
    assert_eq!(state.clone().append(state.next_entry(twice, 1, &registrar)), Err(Rejection::DuplicateRegistrar));
    let own_log = genesis_op("x", vec![registrar.signing_key()], &registrar);
    assert_eq!(state.clone().append(state.next_entry(own_log, 1, &registrar)), Err(Rejection::LogKeyIsRegistrar));
}

#[test]
fn rejects_signer_without_authority() {
    let mut net = Net::new();
    let device = net.device();
    let other = net.device();
    let newcomer = Identity::generate(IdentityKind::Device);
    // A device cannot register devices.
    assert!(matches!(net.try_op(register_device(&newcomer), Some(&device)), Err(Rejection::Unauthorized { .. })));
    // A device cannot revoke or rotate another device.
    assert!(matches!(net.try_op(revoke(&other), Some(&device)), Err(Rejection::Unauthorized { .. })));
    let keys = Identity::generate(IdentityKind::Device);
    assert!(matches!(net.try_op(rotate(&other, &keys), Some(&device)), Err(Rejection::Unauthorized { .. })));
    // An app cannot revoke its device.
    let app = net.app(&device);
    assert!(matches!(net.try_op(revoke(&device), Some(&app)), Err(Rejection::Unauthorized { .. })));
}

#[test]
fn rejects_app_registered_by_another_device() {
    let mut net = Net::new();
    let host = net.device();
    let other = net.device();
    let app = Identity::generate(IdentityKind::App);
    let err = net.try_op(net.app_op(&app, &host), Some(&other)).unwrap_err();
    assert!(matches!(err, Rejection::NotHostDevice { .. }), "{err}");
    // Nor may a registrar register apps in a device's name.
    assert!(matches!(net.try_op(net.app_op(&app, &host), None), Err(Rejection::NotHostDevice { .. })));
    // An app cannot host apps.
    let first = net.app(&host);
    let nested = Identity::generate(IdentityKind::App);
    assert_eq!(net.try_op(net.app_op(&nested, &first), Some(&first)), Err(Rejection::NotADevice(first.did())));
}

#[test]
fn rejects_duplicate_registration_and_reused_keys() {
    let mut net = Net::new();
    let device = net.device();
    assert_eq!(net.try_op(register_device(&device), None), Err(Rejection::AlreadyRegistered(device.did())));
    // Another DID claiming the same Noise key.
    let thief = Identity::generate(IdentityKind::Device);
    let op = Op::RegisterDevice { did: thief.did(), keys: mixed_keys(&thief, &device), roles: vec![] };
    assert_eq!(net.try_op(op, None), Err(Rejection::KeyReused));
    // Rotating to a key somebody holds.
    let other = net.device();
    assert_eq!(net.try_op(rotate(&other, &device), Some(&other)), Err(Rejection::KeyReused));
    // A registrar key cannot become a device key.
    let op = Op::RotateKeys { did: other.did(), keys: mixed_keys(&net.registrar, &thief) };
    assert_eq!(net.try_op(op, Some(&other)), Err(Rejection::KeyReused));
}

#[test]
fn rejects_did_that_does_not_match_its_key() {
    let mut net = Net::new();
    let device = Identity::generate(IdentityKind::Device);
    let other = Identity::generate(IdentityKind::Device);
    let op = Op::RegisterDevice { did: other.did(), keys: device.public_keys(), roles: vec![] };
    assert_eq!(net.try_op(op, None), Err(Rejection::DidKeyMismatch(other.did())));
}

#[test]
fn rejects_every_operation_on_a_revoked_did() {
    let mut net = Net::new();
    let device = net.device();
    let app = net.app(&device);
    net.ok(revoke(&app), Some(&device));
    let keys = Identity::generate(IdentityKind::App);
    assert_eq!(net.try_op(rotate(&app, &keys), None), Err(Rejection::Revoked(app.did())));
    assert_eq!(net.try_op(revoke(&app), None), Err(Rejection::Revoked(app.did())));
    assert_eq!(net.try_op(net.app_op(&app, &device), Some(&device)), Err(Rejection::AlreadyRegistered(app.did())));
    assert_eq!(
        net.state.resolve(&app.did()).unwrap().status,
        Status::Revoked(Revocation { seq: 3, reason: "lost".into() })
    );

    // Revoking a device revokes its apps and ends what the device may do.
    let second = net.app(&device);
    net.ok(revoke(&device), None);
    assert_eq!(net.state.resolve(&second.did()).unwrap().status, Status::HostRevoked(device.did()));
    assert_eq!(net.try_op(revoke(&second), None), Err(Rejection::Revoked(device.did())));
    let third = Identity::generate(IdentityKind::App);
    assert_eq!(net.try_op(net.app_op(&third, &device), Some(&device)), Err(Rejection::Revoked(device.did())));
    assert_eq!(net.try_op(register_device(&device), None), Err(Rejection::AlreadyRegistered(device.did())));
}

#[test]
fn rejects_bad_signature() {
    let mut net = Net::new();
    let device = Identity::generate(IdentityKind::Device);
    let entry = net.entry(register_device(&device), None);
    let mut bytes = entry.encoded().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01; // last byte is inside the signature
    let forged = Entry::decode(&bytes).unwrap();
    assert_eq!(net.state.append(forged), Err(Rejection::BadSignature));
}

#[test]
fn rejects_entries_for_another_network_and_retried_ones() {
    let mut net = Net::new();
    let device = Identity::generate(IdentityKind::Device);
    let head = net.state.head();
    let elsewhere = Entry::sign(EntryHash([7; 32]), 5_000, register_device(&device), &net.registrar);
    assert!(matches!(net.state.append(elsewhere), Err(Rejection::WrongNetwork { .. })));
    assert_eq!(net.state.head(), head);
    // The same signed request twice: the second is known, not applied again.
    let entry = net.entry(register_device(&device), None);
    net.state.append(entry.clone()).unwrap();
    assert_eq!(net.state.append(entry.clone()), Err(Rejection::AlreadyInLog(1)));
    assert_eq!(net.state.position(&entry.hash()), Some(1));
}

#[test]
fn the_log_key_authors_nothing() {
    let mut net = Net::new();
    let device = Identity::generate(IdentityKind::Device);
    let by_log = net.state.next_entry(register_device(&device), 5_000, &net.log);
    assert_eq!(net.state.append(by_log), Err(Rejection::LogKeyAuthors));
    // Nor can anyone register the log key as a device key.
    let op = Op::RegisterDevice {
        did: net.log.did(),
        keys: crate::identity::PublicKeys { signing: net.log.signing_key(), noise: device.noise_key() },
        roles: vec![],
    };
    assert_eq!(net.try_op(op, None), Err(Rejection::KeyReused));
}

#[test]
fn a_device_registers_at_most_the_genesis_quota_of_apps() {
    let mut net = Net::new();
    let device = net.device();
    for _ in 0..DEFAULT_MAX_APPS_PER_DEVICE {
        let app = net.app(&device);
        // Revoking does not give a slot back: the quota bounds the ledger.
        net.ok(revoke(&app), Some(&device));
    }
    let one_more = Identity::generate(IdentityKind::App);
    assert_eq!(
        net.try_op(net.app_op(&one_more, &device), Some(&device)),
        Err(Rejection::TooManyApps { device: device.did(), max: DEFAULT_MAX_APPS_PER_DEVICE })
    );
}

/// The split the hash chain had: two authors sign against the same state
/// at the same moment. Both requests join the log, in either order.
#[test]
fn two_authors_signing_at_once_both_join_in_either_order() {
    let mut net = Net::new();
    let owner = net.device();
    let newcomer = Identity::generate(IdentityKind::Device);
    let app = Identity::generate(IdentityKind::App);
    let by_registrar = net.entry(register_device(&newcomer), None);
    let by_device = net.entry(net.app_op(&app, &owner), Some(&owner));
    for order in [[&by_registrar, &by_device], [&by_device, &by_registrar]] {
        let mut state = net.state.clone();
        for entry in order {
            state.append((*entry).clone()).unwrap();
        }
        assert!(state.resolve(&newcomer.did()).unwrap().is_active());
        assert!(state.resolve(&app.did()).unwrap().is_active());
    }
}

#[test]
fn known_replay_builds_the_same_tree_without_signatures() {
    let mut net = Net::new();
    let device = net.device();
    net.app(&device);
    let checked = replay(&net.encoded).unwrap();
    let mut known = Replay::known(LedgerState::new());
    for bytes in &net.encoded {
        known.push(bytes).unwrap();
    }
    assert_eq!(known.finish().unwrap().head(), checked.head());
}

#[test]
fn replay_names_the_first_bad_entry_for_any_flipped_byte() {
    let mut net = Net::new();
    let device = net.device();
    let app = net.app(&device);
    net.ok(revoke(&app), None);
    for index in 0..net.encoded.len() {
        for position in 0..net.encoded[index].len() {
            let mut tampered = net.encoded.clone();
            tampered[index][position] ^= 0x01;
            let err = replay(&tampered).expect_err("a flipped byte must not verify");
            assert_eq!(err.index, index as u64, "byte {position}: {err}");
        }
    }
}

#[test]
fn replay_reports_earliest_error_across_batches() {
    let mut net = Net::new();
    for _ in 0..600 {
        net.device();
    }
    let mut tampered = net.encoded.clone();
    let last = tampered[300].len() - 1;
    tampered[300][last] ^= 0x80; // bad signature at 300
    tampered[450] = vec![0xff; 3]; // malformed at 450
    let err = replay(&tampered).unwrap_err();
    assert_eq!(err, LedgerError { index: 300, reason: Rejection::BadSignature });
    // Two independent entries swapped break no rule: order is the
    // sequencer's to sign, and the root (which a checkpoint holds) changes.
    let mut swapped = net.encoded.clone();
    swapped.swap(10, 11);
    assert_ne!(replay(&swapped).unwrap().head().root, net.state.head().root);
}

/// Keys that mix two identities, for key-reuse attacks.
fn mixed_keys(signing_from: &Identity, noise_from: &Identity) -> crate::identity::PublicKeys {
    crate::identity::PublicKeys { signing: signing_from.signing_key(), noise: noise_from.noise_key() }
}

#[test]
fn find_did_knows_only_registered_keys() {
    let mut net = crate::testing::TestNetwork::new("t");
    let device = net.register_device();
    assert_eq!(net.ledger.find_did(&device.did().key_bytes()), Some(device.did()));
    let stranger = Identity::generate(IdentityKind::Device);
    assert_eq!(net.ledger.find_did(&stranger.did().key_bytes()), None);
    assert_eq!(net.ledger.find_did(&[0u8; 31]), None);
}

/// 2^255 - 19 + `k`, little-endian: a non-canonical encoding of `k`.
fn p_plus(k: u8) -> [u8; 32] {
    let mut bytes = [0xff; 32];
    bytes[0] = 0xed + k;
    bytes[31] = 0x7f;
    bytes
}

/// Registers a device whose keys are `keys`, with a DID that matches them.
fn register_with(net: &mut Net, keys: crate::identity::PublicKeys) -> Result<(), Rejection> {
    let op = Op::RegisterDevice { did: crate::identity::Did::from_signing_key(keys.signing), keys, roles: vec![] };
    net.try_op(op, None)
}

#[test]
fn rejects_small_order_signing_keys() {
    let mut net = Net::new();
    let honest = Identity::generate(IdentityKind::Device);
    // The identity point, and a point of order 2 (y = -1).
    let mut minus_one = p_plus(0);
    minus_one[0] -= 1;
    for bytes in [[1; 1].iter().copied().chain([0; 31]).collect::<Vec<u8>>(), minus_one.to_vec()] {
        let bytes: [u8; 32] = bytes.try_into().unwrap();
        let signing = crate::identity::SigningPublicKey::from_bytes(bytes).expect("zebra takes small-order points");
        let keys = crate::identity::PublicKeys { signing, noise: honest.noise_key() };
        assert_eq!(
            register_with(&mut net, keys),
            Err(Rejection::UntrustedKey { which: "signing", why: "a point of small order" })
        );
    }
    // Nor may a device rotate to one.
    let device = net.device();
    let signing = crate::identity::SigningPublicKey::from_bytes(minus_one).unwrap();
    let op =
        Op::RotateKeys { did: device.did(), keys: crate::identity::PublicKeys { signing, noise: honest.noise_key() } };
    assert!(matches!(net.try_op(op, Some(&device)), Err(Rejection::UntrustedKey { which: "signing", .. })));
}

#[test]
fn rejects_non_canonical_signing_keys() {
    let mut net = Net::new();
    let honest = Identity::generate(IdentityKind::Device);
    // y = p + k for the small k whose point is on the curve and not of
    // small order: the same point as y = k, spelled differently.
    let non_canonical = (2..19)
        .map(p_plus)
        .find(|bytes| {
            curve25519_dalek::edwards::CompressedEdwardsY(*bytes).decompress().is_some_and(|p| !p.is_small_order())
        })
        .expect("some y = p + k is a point of large order");
    let signing = crate::identity::SigningPublicKey::from_bytes(non_canonical).expect("zebra takes it (ZIP 215)");
    let keys = crate::identity::PublicKeys { signing, noise: honest.noise_key() };
    assert_eq!(
        register_with(&mut net, keys),
        Err(Rejection::UntrustedKey { which: "signing", why: "a non-canonical encoding" })
    );
}

#[test]
fn rejects_non_contributory_noise_keys() {
    let mut net = Net::new();
    // u = 0, u = 1, u = p (0 spelled non-canonically), and the point of order 8
    // (325606250916557431795983626356110631294008115727848805560023387167927233504).
    let order8: [u8; 32] = [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
        0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
    ];
    let mut one = [0; 32];
    one[0] = 1;
    for noise in [[0; 32], one, p_plus(0), order8] {
        let device = Identity::generate(IdentityKind::Device);
        let keys = crate::identity::PublicKeys {
            signing: device.signing_key(),
            noise: crate::identity::NoisePublicKey::from_bytes(noise),
        };
        assert!(
            matches!(register_with(&mut net, keys), Err(Rejection::UntrustedKey { which: "noise", .. })),
            "{noise:02x?}"
        );
    }
    // An honest key passes.
    let device = Identity::generate(IdentityKind::Device);
    assert_eq!(register_with(&mut net, device.public_keys()), Ok(()));
}

#[test]
fn rejects_an_app_registered_without_its_consent_to_that_device_and_network() {
    let mut net = Net::new();
    let (mine, theirs) = (net.device(), net.device());
    let app = Identity::generate(IdentityKind::App);
    // The app consented to `mine`; `theirs` adopts its card with that consent.
    let Op::RegisterApp { consent, .. } = net.app_op(&app, &mine) else { unreachable!() };
    let adopted =
        Op::RegisterApp { did: app.did(), keys: app.public_keys(), device: theirs.did(), name: "x".into(), consent };
    assert_eq!(net.try_op(adopted, Some(&theirs)), Err(Rejection::NoConsent(app.did())));
    // A consent made for another network.
    let elsewhere = crate::ledger::Consent::sign(&app, &mine.did(), &EntryHash([9; 32]));
    let op = Op::RegisterApp {
        did: app.did(),
        keys: app.public_keys(),
        device: mine.did(),
        name: "x".into(),
        consent: elsewhere,
    };
    assert_eq!(net.try_op(op, Some(&mine)), Err(Rejection::NoConsent(app.did())));
    // Signed by the device, not the app.
    let forged = crate::ledger::Consent::sign(&mine, &mine.did(), &net.state.network().unwrap().id);
    let op = Op::RegisterApp {
        did: app.did(),
        keys: app.public_keys(),
        device: mine.did(),
        name: "x".into(),
        consent: forged,
    };
    assert_eq!(net.try_op(op, Some(&mine)), Err(Rejection::NoConsent(app.did())));
    // With its own consent it is registered.
    net.ok(net.app_op(&app, &mine), Some(&mine));
}

/// A node that is behind takes entries in batches, each proven against the
/// sequencer's checkpoint; an altered or substituted entry is named.
#[test]
fn batches_are_proven_against_the_checkpoint_and_tampering_is_named() {
    let mut net = Net::new();
    for _ in 0..9 {
        net.device();
    }
    let (size, root) = (net.state.head().height, net.state.head().root);
    let mut behind = replay(&net.encoded[..1]).unwrap();
    // Two batches: entries 1..6 with a proof to the target, then the rest.
    let proof = net.state.tree().consistency_proof(6, size).unwrap();
    check_batch(&behind, &net.encoded[1..6], size, root, &proof).unwrap().apply(&mut behind).unwrap();
    assert_eq!(behind.head().height, 6);
    let rest = &net.encoded[6..].to_vec();
    // A flipped byte in a signature: named by its index.
    let mut altered = rest.to_vec();
    let last = altered[2].len() - 1;
    altered[2][last] ^= 1;
    assert_eq!(check_batch(&behind, &altered, size, root, &[]).unwrap_err(), BatchError::BadSignature { index: 8 });
    // A validly signed entry that is not the sequenced one.
    let mut substituted = rest.to_vec();
    let stranger = Identity::generate(IdentityKind::Device);
    substituted[0] = net.entry(register_device(&stranger), None).encoded().to_vec();
    assert_eq!(
        check_batch(&behind, &substituted, size, root, &[]).unwrap_err(),
        BatchError::NotInCheckpoint { first: 6, last: 9 }
    );
    // A wrong proof, and more entries than the checkpoint holds.
    assert!(check_batch(&behind, &rest[..2], size, root, &[EntryHash([1; 32])]).is_err());
    assert!(matches!(check_batch(&behind, rest, size - 1, root, &[]), Err(BatchError::PastCheckpoint { .. })));
    check_batch(&behind, rest, size, root, &[]).unwrap().apply(&mut behind).unwrap();
    assert_eq!(behind.head(), net.state.head());
}
