//! Encode/decode tests for entries: round trips for every op, and a
//! `rejects_*` test for each way bytes can be wrong.

use proptest::prelude::*;

use super::*;
use crate::identity::{Identity, IdentityKind};
use crate::ledger::{Quotas, WitnessPolicy};

fn identity(seed: u8) -> Identity {
    Identity::from_secrets(IdentityKind::Device, [seed; 32], [seed.wrapping_add(1); 32])
}

fn signed(body: &pb::EntryBody, signer: &Identity) -> Vec<u8> {
    let body = body.encode_to_vec();
    let signature = signer.sign(domain::LEDGER_ENTRY, &body).to_vec();
    pb::SignedEntry { body, signature }.encode_to_vec()
}

fn sample_body(signer: &Identity) -> pb::EntryBody {
    pb::EntryBody {
        network: vec![3; 32],
        time_ms: 42,
        expires_ms: 43,
        signer: signer.signing_key().as_bytes().to_vec(),
        op: Some(pb::entry_body::Op::Revoke(pb::Revoke { did: signer.did().to_string(), reason: String::new() })),
    }
}

#[test]
fn decodes_what_it_signs() {
    let signer = identity(1);
    let bytes = signed(&sample_body(&signer), &signer);
    let entry = Entry::decode(&bytes).unwrap();
    assert!(entry.verify_signature());
    assert_eq!(entry.encoded(), bytes.as_slice());
    assert_eq!(entry.op(), &Op::Revoke { did: signer.did(), reason: String::new() });
}

#[test]
fn rejects_truncated_entries() {
    let signer = identity(2);
    let bytes = signed(&sample_body(&signer), &signer);
    for len in 0..bytes.len() {
        assert!(Entry::decode(&bytes[..len]).is_err(), "accepted a {len}-byte prefix");
    }
}

#[test]
fn rejects_oversized_entries() {
    let bytes = vec![0; MAX_ENTRY_SIZE + 1];
    assert_eq!(Entry::decode(&bytes), Err(EntryError::TooLarge(MAX_ENTRY_SIZE + 1)));
}

#[test]
fn rejects_non_canonical_encodings() {
    let signer = identity(3);
    let mut bytes = signed(&sample_body(&signer), &signer);
    // An unknown field (number 31, varint 1) appended to the outer message.
    bytes.extend_from_slice(&[0xf8, 0x01, 0x01]);
    assert_eq!(Entry::decode(&bytes), Err(EntryError::NotCanonical));

    // An unknown field inside the signed body: validly signed, still refused.
    let mut body = sample_body(&signer).encode_to_vec();
    body.extend_from_slice(&[0xf8, 0x01, 0x01]);
    let signature = signer.sign(domain::LEDGER_ENTRY, &body).to_vec();
    let bytes = pb::SignedEntry { body, signature }.encode_to_vec();
    assert_eq!(Entry::decode(&bytes), Err(EntryError::NotCanonical));
}

/// Changes one field of a valid body.
type Mutation = Box<dyn Fn(&mut pb::EntryBody)>;
/// Says whether the error is the one the mutation must cause.
type Expectation = fn(&EntryError) -> bool;

#[test]
fn rejects_malformed_fields() {
    let signer = identity(4);
    let cases: Vec<(Mutation, Expectation)> = vec![
        (Box::new(|b| b.op = None), |e| *e == EntryError::MissingOp),
        (Box::new(|b| b.network.pop().map(drop).unwrap_or(())), |e| *e == EntryError::NetworkLength(31)),
        (Box::new(|b| b.network.clear()), |e| *e == EntryError::NetworkLength(0)),
        (Box::new(|b| b.signer = vec![1; 5]), |e| matches!(e, EntryError::Key(_))),
        (
            Box::new(|b| {
                b.op = Some(pb::entry_body::Op::Revoke(pb::Revoke { did: "did:web:x".into(), reason: String::new() }))
            }),
            |e| matches!(e, EntryError::Did(_)),
        ),
        (
            Box::new(|b| {
                b.network.clear();
                b.op = Some(pb::entry_body::Op::Genesis(genesis_pb(String::new(), vec![])))
            }),
            |e| matches!(e, EntryError::TextLength { what: "network name", len: 0 }),
        ),
        (
            Box::new(|b| {
                b.network.clear();
                b.op = Some(pb::entry_body::Op::Genesis(genesis_pb("n".into(), vec![vec![9; 32]; 17])))
            }),
            |e| matches!(e, EntryError::ListLength { len: 17, .. }),
        ),
        (
            // A genesis naming a network.
            Box::new(|b| b.op = Some(pb::entry_body::Op::Genesis(genesis_pb("n".into(), vec![vec![9; 32]])))),
            |e| *e == EntryError::NetworkLength(32),
        ),
        (
            Box::new(|b| {
                b.network.clear();
                let mut genesis = genesis_pb("n".into(), vec![vec![9; 32]]);
                genesis.max_apps_per_device = 0;
                b.op = Some(pb::entry_body::Op::Genesis(genesis))
            }),
            |e| *e == EntryError::ZeroQuota("max_apps_per_device"),
        ),
        (
            Box::new(|b| {
                b.op = Some(pb::entry_body::Op::Revoke(pb::Revoke {
                    did: identity(9).did().to_string(),
                    reason: "r".repeat(300),
                }))
            }),
            |e| matches!(e, EntryError::TextLength { what: "reason", len: 300 }),
        ),
    ];
    for (i, (mutate, expected)) in cases.iter().enumerate() {
        let mut body = sample_body(&signer);
        mutate(&mut body);
        let err = Entry::decode(&signed(&body, &signer)).unwrap_err();
        assert!(expected(&err), "case {i}: {err}");
    }
    let short_signature = pb::SignedEntry { body: sample_body(&signer).encode_to_vec(), signature: vec![0; 63] };
    assert_eq!(Entry::decode(&short_signature.encode_to_vec()), Err(EntryError::SignatureLength(63)));
    assert!(matches!(Entry::decode(&[0xff, 0xff, 0xff]), Err(EntryError::Decode(_))));
}

fn genesis_pb(network: String, registrars: Vec<Vec<u8>>) -> pb::Genesis {
    pb::Genesis {
        network,
        registrars,
        log_key: identity(77).signing_key().as_bytes().to_vec(),
        max_apps_per_device: 64,
        max_requests_per_minute: 60,
        ..Default::default()
    }
}

fn arb_text() -> impl Strategy<Value = String> {
    "[a-z0-9 -]{1,40}"
}

fn arb_op() -> impl Strategy<Value = Op> {
    let keys = (any::<u8>(), any::<u8>()).prop_map(|(a, b)| identity(a).public_keys_with_noise(b));
    prop_oneof![
        (arb_text(), proptest::collection::vec(any::<u8>(), 1..4)).prop_map(|(network, seeds)| {
            Op::Genesis {
                network,
                registrars: seeds.iter().map(|s| identity(*s).signing_key()).collect(),
                log_key: identity(200).signing_key(),
                quotas: Quotas {
                    max_apps_per_device: 3,
                    max_requests_per_minute: 7,
                    max_rotations_per_day: 2,
                    ..Quotas::default()
                },
                witnesses: WitnessPolicy::default(),
            }
        }),
        (keys.clone(), proptest::collection::vec(arb_text(), 0..3))
            .prop_map(|(keys, roles)| { Op::RegisterDevice { did: Did::from_signing_key(keys.signing), keys, roles } }),
        (keys.clone(), any::<u8>(), arb_text(), any::<[u8; 32]>()).prop_map(|(keys, host, name, half)| {
            let mut consent = [0u8; 64];
            consent[..32].copy_from_slice(&half);
            Op::RegisterApp {
                did: Did::from_signing_key(keys.signing),
                keys,
                device: identity(host).did(),
                name,
                consent: crate::ledger::Consent(consent),
            }
        }),
        (keys.clone(), any::<u8>()).prop_map(|(keys, who)| Op::RotateKeys { did: identity(who).did(), keys }),
        (any::<u8>(), "[a-z ]{0,40}").prop_map(|(who, reason)| Op::Revoke { did: identity(who).did(), reason }),
    ]
}

impl Identity {
    fn public_keys_with_noise(&self, noise: u8) -> PublicKeys {
        PublicKeys { signing: self.signing_key(), noise: NoisePublicKey::from_bytes([noise; 32]) }
    }
}

proptest! {
    #[test]
    fn round_trips_every_op(op in arb_op(), time in any::<u64>(), network in any::<[u8; 32]>(), signer in any::<u8>()) {
        let signer = identity(signer);
        let network = if matches!(op, Op::Genesis { .. }) { EntryHash::ZERO } else { EntryHash(network) };
        let entry = Entry::sign(network, time, op.clone(), &signer);
        let decoded = Entry::decode(entry.encoded()).unwrap();
        prop_assert_eq!(decoded.op(), &op);
        prop_assert_eq!(decoded.body(), entry.body());
        prop_assert_eq!(decoded.hash(), entry.hash());
        prop_assert!(decoded.verify_signature());
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Entry::decode(&bytes);
    }
}
