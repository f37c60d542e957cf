//! Handshake tests: two state machines wired together in memory, driven to
//! completion, and attacked at every step.

use proptest::prelude::*;

use super::*;
use crate::identity::{Identity, IdentityKind};
use crate::ledger::{LedgerState, Op};
use crate::testing::TestNetwork;

/// This side's handshake identity on `net`, carrying `net`'s checkpoint.
fn local<'a>(net: &TestNetwork, identity: &'a Identity) -> Local<'a> {
    with_note(net, identity, net.checkpoint().note().to_vec())
}

/// This side's handshake identity, carrying `note` as its checkpoint.
fn with_note<'a>(net: &TestNetwork, identity: &'a Identity, note: Vec<u8>) -> Local<'a> {
    let note: &'a [u8] = Box::leak(note.into_boxed_slice());
    Local { did: identity.did(), identity, network_id: net.ledger.network().unwrap().id, checkpoint: note }
}

const BINDING: ChannelBinding = ChannelBinding([7; 32]);

/// Outcome of a handshake run to the end: (dialer's view, listener's view).
type Outcome = (Result<Admitted, HandshakeError>, Result<Admitted, HandshakeError>);

/// Drives a full handshake between two sides with their own ledgers and
/// bindings. A side that refuses ends it; the other side then sees the
/// close code, which is what `refused_by_peer` stands for here.
fn run(
    dialer: (Local<'_>, &LedgerState, ChannelBinding),
    listener: (Local<'_>, &LedgerState, ChannelBinding),
    expected: Option<Did>,
) -> Outcome {
    let refused_by_peer = |e: &HandshakeError| Err(e.clone());
    let (initiator, hello) = Initiator::start(&dialer.0, &dialer.2, dialer.1, expected).unwrap();
    let step = match Responder::new(listener.0, listener.2).read_hello(&hello, listener.1) {
        Ok(step) => step,
        Err(e) => return (refused_by_peer(&e), Err(e)),
    };
    match step {
        ResponderStep::AwaitVerdict { next, message } => match initiator.read_response(&message, dialer.1) {
            Ok(InitiatorStep::Admitted { peer, verdict, .. }) => (Ok(peer), next.read_verdict(&verdict)),
            Ok(InitiatorStep::AwaitVerdict { .. }) => panic!("IK dialer asked for a verdict"),
            Err(e) => (Err(e.clone()), refused_by_peer(&e)),
        },
        ResponderStep::AwaitPayload { next, message } => match initiator.read_response(&message, dialer.1) {
            Ok(InitiatorStep::AwaitVerdict { next: waiting, message }) => match next.read_payload(&message, listener.1)
            {
                Ok((peer, verdict)) => (waiting.read_verdict(&verdict), Ok(peer)),
                Err(e) => (refused_by_peer(&e), Err(e)),
            },
            Ok(InitiatorStep::Admitted { .. }) => panic!("XX dialer admitted without message 3"),
            Err(e) => (Err(e.clone()), refused_by_peer(&e)),
        },
    }
}

fn reason(outcome: &Result<Admitted, HandshakeError>) -> Refusal {
    outcome.as_ref().expect_err("handshake should have failed").reason
}

#[test]
fn ik_admits_both_sides() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    let (initiator, _) = Initiator::start(&local(&net, &a), &BINDING, &net.ledger, Some(b.did())).unwrap();
    assert_eq!(initiator.pattern(), Pattern::Ik);
    let (at_a, at_b) =
        run((local(&net, &a), &net.ledger, BINDING), (local(&net, &b), &net.ledger, BINDING), Some(b.did()));
    assert_eq!(at_a.unwrap().did, b.did());
    let at_b = at_b.unwrap();
    assert_eq!(at_b.did, a.did());
    assert_eq!(at_b.keys, a.public_keys());
    assert_eq!(at_b.checkpoint, net.checkpoint().note());
}

#[test]
fn xx_admits_both_sides_when_dialing_an_address() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    let (initiator, _) = Initiator::start(&local(&net, &a), &BINDING, &net.ledger, None).unwrap();
    assert_eq!(initiator.pattern(), Pattern::Xx);
    let (at_a, at_b) = run((local(&net, &a), &net.ledger, BINDING), (local(&net, &b), &net.ledger, BINDING), None);
    assert_eq!(at_a.unwrap().did, b.did());
    assert_eq!(at_b.unwrap().did, a.did());
}

#[test]
fn rejects_unregistered_dialer_with_valid_keys() {
    let mut net = TestNetwork::new("n");
    let b = net.register_device();
    let stranger = Identity::generate(IdentityKind::Device);
    for expected in [Some(b.did()), None] {
        let (at_s, at_b) =
            run((local(&net, &stranger), &net.ledger, BINDING), (local(&net, &b), &net.ledger, BINDING), expected);
        assert_eq!(reason(&at_b), Refusal::UnknownIdentity);
        assert!(at_s.is_err());
    }
}

#[test]
fn rejects_unregistered_listener() {
    let mut net = TestNetwork::new("n");
    let a = net.register_device();
    let stranger = Identity::generate(IdentityKind::Device);
    // The stranger's own ledger (a copy) lists the dialer, so only the
    // dialer's check can stop it.
    let (at_a, _) = run((local(&net, &a), &net.ledger, BINDING), (local(&net, &stranger), &net.ledger, BINDING), None);
    assert_eq!(reason(&at_a), Refusal::UnknownIdentity);
}

#[test]
fn rejects_an_app_key_presented_as_a_device() {
    let mut net = TestNetwork::new("n");
    let b = net.register_device();
    let (seed, noise) = ([3; 32], [4; 32]);
    let app = Identity::from_secrets(IdentityKind::App, seed, noise);
    let consent = crate::ledger::Consent::sign(&app, &b.did(), &net.ledger.network().unwrap().id);
    let op = Op::RegisterApp { did: app.did(), keys: app.public_keys(), device: b.did(), name: "app".into(), consent };
    net.append(op, &b);
    // The same keys with the key file's kind rewritten to "device".
    let posing = Identity::from_secrets(IdentityKind::Device, seed, noise);
    assert_eq!(posing.did(), app.did());
    for expected in [Some(b.did()), None] {
        let (_, at_b) =
            run((local(&net, &posing), &net.ledger, BINDING), (local(&net, &b), &net.ledger, BINDING), expected);
        assert_eq!(reason(&at_b), Refusal::NotADevice);
    }
    // Nor can a device be made to link to an app by dialing it.
    let (at_b, _) = run((local(&net, &b), &net.ledger, BINDING), (local(&net, &posing), &net.ledger, BINDING), None);
    assert_eq!(reason(&at_b), Refusal::NotADevice);
}

#[test]
fn rejects_revoked_peer() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    net.revoke(a.did());
    for expected in [Some(b.did()), None] {
        let (_, at_b) = run((local(&net, &a), &net.ledger, BINDING), (local(&net, &b), &net.ledger, BINDING), expected);
        assert_eq!(reason(&at_b), Refusal::Revoked);
    }
}

#[test]
fn rejects_registered_did_with_foreign_keys() {
    let mut net = TestNetwork::new("n");
    let (victim, b) = (net.register_device(), net.register_device());
    let impostor = Identity::generate(IdentityKind::Device);
    // The impostor claims the victim's DID but holds only its own keys.
    let claim = Local { did: victim.did(), ..local(&net, &impostor) };
    for expected in [Some(b.did()), None] {
        let (_, at_b) = run((claim, &net.ledger, BINDING), (local(&net, &b), &net.ledger, BINDING), expected);
        assert_eq!(reason(&at_b), Refusal::KeyMismatch);
    }
}

#[test]
fn rejects_forged_payload_signature() {
    let mut net = TestNetwork::new("n");
    let a = net.register_device();
    let mut forged = pb::HandshakePayload::decode(local(&net, &a).payload().as_slice()).unwrap();
    forged.noise_key_signature[0] ^= 1;
    let network = net.ledger.network().unwrap().id;
    let err =
        admission::admit(&net.ledger, &network, &forged.encode_to_vec(), a.noise_key().as_bytes(), None).unwrap_err();
    assert_eq!(err.reason, Refusal::KeyMismatch);
}

/// `net`'s checkpoint padded with one line of an unknown key to exactly
/// `size` bytes: well-formed, but not what any log wrote.
fn padded_note(net: &TestNetwork, size: usize) -> Vec<u8> {
    use base64::Engine;
    let mut note = net.checkpoint().note().to_vec();
    // "— " name " " base64 "\n": pick the name's length so the base64 run
    // is whole groups of four.
    let mut name = "pad".to_owned();
    while !(size - note.len() - "\u{2014} ".len() - name.len() - 2).is_multiple_of(4) {
        name.push('d');
    }
    let chars = size - note.len() - "\u{2014} ".len() - name.len() - 2;
    let base64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; chars / 4 * 3]);
    note.extend_from_slice(format!("\u{2014} {name} {base64}\n").as_bytes());
    note
}

/// Both sides carry the largest note a peer may send: the handshake still
/// fits its frames (it once did not, and one padded note shut a node out).
#[test]
fn the_largest_note_fits_the_handshake_frames() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    let note = padded_note(&net, crate::ledger::MAX_NOTE_SIZE);
    assert_eq!(note.len(), crate::ledger::MAX_NOTE_SIZE);
    let (big_a, big_b) = (with_note(&net, &a, note.clone()), with_note(&net, &b, note.clone()));
    for expected in [Some(b.did()), None] {
        let (at_a, at_b) = run((big_a, &net.ledger, BINDING), (big_b, &net.ledger, BINDING), expected);
        assert_eq!(at_a.unwrap().checkpoint, note);
        assert_eq!(at_b.unwrap().checkpoint, note);
    }
}

/// An oversized note, garbage, or another log's checkpoint is a named
/// refusal, whichever side carries it.
#[test]
fn rejects_oversized_and_malformed_notes() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    let other = TestNetwork::new("other").checkpoint().note().to_vec();
    let oversized = padded_note(&net, crate::ledger::MAX_NOTE_SIZE + 1);
    for note in [oversized, b"garbage".to_vec(), other] {
        for expected in [Some(b.did()), None] {
            let bad = with_note(&net, &a, note.clone());
            let (_, at_b) = run((bad, &net.ledger, BINDING), (local(&net, &b), &net.ledger, BINDING), expected);
            assert_eq!(reason(&at_b), Refusal::BadCheckpoint);
            let bad = with_note(&net, &b, note.clone());
            let (at_a, _) = run((local(&net, &a), &net.ledger, BINDING), (bad, &net.ledger, BINDING), expected);
            assert_eq!(reason(&at_a), Refusal::BadCheckpoint);
        }
    }
}

#[test]
fn rejects_other_network() {
    let mut home = TestNetwork::new("home");
    let mut other = TestNetwork::new("other");
    let a = other.register_device();
    let b = home.register_device();
    let (_, at_b) = run((local(&other, &a), &other.ledger, BINDING), (local(&home, &b), &home.ledger, BINDING), None);
    assert_eq!(reason(&at_b), Refusal::WrongNetwork);
}

#[test]
fn rejects_relay_through_a_man_in_the_middle() {
    // The relay terminates QUIC on both sides, so each side exports
    // different keying material; the Noise messages it relays cannot verify.
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    for expected in [Some(b.did()), None] {
        let (at_a, at_b) = run(
            (local(&net, &a), &net.ledger, ChannelBinding([1; 32])),
            (local(&net, &b), &net.ledger, ChannelBinding([2; 32])),
            expected,
        );
        assert!(at_a.is_err() && at_b.is_err());
        let reasons = [at_a.unwrap_err().reason, at_b.unwrap_err().reason];
        assert!(reasons.contains(&Refusal::BadBinding), "{reasons:?}");
    }
}

#[test]
fn rejects_replayed_messages() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    // Record a full IK session on one connection...
    let (_, hello) = Initiator::start(&local(&net, &a), &BINDING, &net.ledger, Some(b.did())).unwrap();
    // ...and replay the dialer's first message on a new connection.
    let fresh = ChannelBinding([9; 32]);
    let err = Responder::new(local(&net, &b), fresh).read_hello(&hello, &net.ledger).err().unwrap();
    assert_eq!(err.reason, Refusal::BadBinding);

    // XX: replay message 3 of one session into another session.
    let (initiator, hello) = Initiator::start(&local(&net, &a), &BINDING, &net.ledger, None).unwrap();
    let ResponderStep::AwaitPayload { message, .. } =
        Responder::new(local(&net, &b), BINDING).read_hello(&hello, &net.ledger).unwrap()
    else {
        panic!("expected XX");
    };
    let Ok(InitiatorStep::AwaitVerdict { message: msg3, .. }) = initiator.read_response(&message, &net.ledger) else {
        panic!("expected message 3");
    };
    let (_, hello2) = Initiator::start(&local(&net, &a), &BINDING, &net.ledger, None).unwrap();
    let ResponderStep::AwaitPayload { next, .. } =
        Responder::new(local(&net, &b), BINDING).read_hello(&hello2, &net.ledger).unwrap()
    else {
        panic!("expected XX");
    };
    assert_eq!(next.read_payload(&msg3, &net.ledger).err().unwrap().reason, Refusal::BadBinding);
}

#[test]
fn rejects_the_wrong_peer_behind_an_address() {
    let mut net = TestNetwork::new("n");
    let (a, b, c) = (net.register_device(), net.register_device(), net.register_device());
    // Dialing b by DID but reaching c (registered, valid): refused by a.
    let (initiator, hello) = Initiator::start_xx(&local(&net, &a), &BINDING, Some(b.did())).unwrap();
    let ResponderStep::AwaitPayload { message, .. } =
        Responder::new(local(&net, &c), BINDING).read_hello(&hello, &net.ledger).unwrap()
    else {
        panic!("expected XX");
    };
    assert_eq!(initiator.read_response(&message, &net.ledger).err().unwrap().reason, Refusal::WrongPeer);
}

#[test]
fn stale_ik_key_fails_and_xx_recovers() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    let dialer_view = net.ledger.clone();
    // b rotates; the dialer's ledger has not caught up yet.
    let b_new = Identity::generate(IdentityKind::Device);
    net.append(Op::RotateKeys { did: b.did(), keys: b_new.public_keys() }, &b);
    let b_local = Local { did: b.did(), ..local(&net, &b_new) };
    let (at_a, _) = run((local(&net, &a), &dialer_view, BINDING), (b_local, &net.ledger, BINDING), Some(b.did()));
    assert!(at_a.is_err());
    // Retrying with XX reaches b, and a admits it once its ledger has caught up.
    let (initiator, hello) = Initiator::start_xx(&local(&net, &a), &BINDING, Some(b.did())).unwrap();
    let ResponderStep::AwaitPayload { next, message } =
        Responder::new(b_local, BINDING).read_hello(&hello, &net.ledger).unwrap()
    else {
        panic!("expected XX");
    };
    let Ok(InitiatorStep::AwaitVerdict { next: waiting, message }) = initiator.read_response(&message, &net.ledger)
    else {
        panic!("expected message 3");
    };
    let (peer, verdict) = next.read_payload(&message, &net.ledger).unwrap();
    assert_eq!(peer.did, a.did());
    assert_eq!(waiting.read_verdict(&verdict).unwrap().keys, b_new.public_keys());
}

#[test]
fn rejects_garbage_truncated_and_unknown_hellos() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    let listener = || Responder::new(local(&net, &b), BINDING);
    assert_eq!(listener().read_hello(&[0xff; 40], &net.ledger).err().unwrap().reason, Refusal::Malformed);
    let (_, hello) = Initiator::start(&local(&net, &a), &BINDING, &net.ledger, Some(b.did())).unwrap();
    for cut in [1, hello.len() / 2, hello.len() - 1] {
        let err = listener().read_hello(&hello[..cut], &net.ledger).err().unwrap();
        assert!(matches!(err.reason, Refusal::Malformed | Refusal::BadBinding | Refusal::WrongNetwork), "{err}");
    }
    let mut newer = pb::Hello::decode(hello.as_slice()).unwrap();
    newer.version = 2;
    assert_eq!(
        listener().read_hello(&newer.encode_to_vec(), &net.ledger).err().unwrap().reason,
        Refusal::UnsupportedVersion
    );
    let mut unknown = pb::Hello::decode(hello.as_slice()).unwrap();
    unknown.pattern = 9;
    assert_eq!(listener().read_hello(&unknown.encode_to_vec(), &net.ledger).err().unwrap().reason, Refusal::Malformed);
}

#[test]
fn rejects_a_tampered_verdict() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    let (initiator, hello) = Initiator::start(&local(&net, &a), &BINDING, &net.ledger, Some(b.did())).unwrap();
    let ResponderStep::AwaitVerdict { next, message } =
        Responder::new(local(&net, &b), BINDING).read_hello(&hello, &net.ledger).unwrap()
    else {
        panic!("expected IK");
    };
    let Ok(InitiatorStep::Admitted { mut verdict, .. }) = initiator.read_response(&message, &net.ledger) else {
        panic!("expected admission");
    };
    verdict[0] ^= 1;
    assert_eq!(next.read_verdict(&verdict).err().unwrap().reason, Refusal::BadBinding);
}

#[test]
fn rotated_device_keeps_its_did() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    let a_new = Identity::generate(IdentityKind::Device);
    net.append(Op::RotateKeys { did: a.did(), keys: a_new.public_keys() }, &a);
    let a_local = Local { did: a.did(), ..local(&net, &a_new) };
    let (_, at_b) = run((a_local, &net.ledger, BINDING), (local(&net, &b), &net.ledger, BINDING), Some(b.did()));
    assert_eq!(at_b.unwrap().did, a.did());
    // The old keys no longer get in.
    let (_, at_b) =
        run((local(&net, &a), &net.ledger, BINDING), (local(&net, &b), &net.ledger, BINDING), Some(b.did()));
    assert_eq!(reason(&at_b), Refusal::KeyMismatch);
}

#[test]
fn handshake_messages_fit_the_frame_limit() {
    let mut net = TestNetwork::new("a network name that is rather long for a network name");
    let (a, b) = (net.register_device(), net.register_device());
    let (_, hello) = Initiator::start(&local(&net, &a), &BINDING, &net.ledger, Some(b.did())).unwrap();
    assert!(hello.len() < frame::MAX_FRAME / 2, "{}", hello.len());
}

proptest! {
    #[test]
    fn hello_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut net = TestNetwork::new("n");
        let b = net.register_device();
        let _ = Responder::new(local(&net, &b), BINDING).read_hello(&bytes, &net.ledger);
    }
}

/// Both sessions of an IK or XX handshake, dialer's first.
fn sessions(pattern: Pattern) -> (Session, Session) {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    let (dialer, listener) = (local(&net, &a), local(&net, &b));
    let (initiator, hello) = match pattern {
        Pattern::Ik => Initiator::start(&dialer, &BINDING, &net.ledger, Some(b.did())).unwrap(),
        Pattern::Xx => Initiator::start_xx(&dialer, &BINDING, Some(b.did())).unwrap(),
    };
    match Responder::new(listener, BINDING).read_hello(&hello, &net.ledger).unwrap() {
        ResponderStep::AwaitVerdict { next, message } => {
            let Ok(InitiatorStep::Admitted { verdict, session, .. }) = initiator.read_response(&message, &net.ledger)
            else {
                panic!("expected IK admission");
            };
            (session, next.read_verdict_keeping_session(&verdict).unwrap().1)
        }
        ResponderStep::AwaitPayload { next, message } => {
            let Ok(InitiatorStep::AwaitVerdict { next: waiting, message }) =
                initiator.read_response(&message, &net.ledger)
            else {
                panic!("expected XX message 3");
            };
            let (_, verdict, listener) = next.read_payload_keeping_session(&message, &net.ledger).unwrap();
            (waiting.read_verdict_keeping_session(&verdict).unwrap().1, listener)
        }
    }
}

/// Seals `plaintext` and returns the record's body (without its header).
fn sealed_body(session: &mut Session, plaintext: &[u8]) -> Vec<u8> {
    let mut record = Vec::new();
    session.seal(plaintext, &mut record).unwrap();
    let len = Session::record_len([record[0], record[1]]).unwrap();
    assert_eq!(len, record.len() - RECORD_HEADER);
    record.split_off(RECORD_HEADER)
}

#[test]
fn sessions_of_both_patterns_carry_records_both_ways() {
    for pattern in [Pattern::Ik, Pattern::Xx] {
        let (mut dialer, mut listener) = sessions(pattern);
        for round in 0..2 {
            let (from, to) = if round == 0 { (&mut dialer, &mut listener) } else { (&mut listener, &mut dialer) };
            for plaintext in [&b""[..], b"hello", &[9u8; MAX_PLAINTEXT][..]] {
                let mut opened = Vec::new();
                to.open(&sealed_body(from, plaintext), &mut opened).unwrap();
                assert_eq!(opened, plaintext, "{pattern:?}");
            }
        }
    }
}

#[test]
fn a_session_refuses_altered_replayed_and_oversized_records() {
    let (mut dialer, mut listener) = sessions(Pattern::Ik);
    let mut out = Vec::new();
    let mut altered = sealed_body(&mut dialer, b"pay 10");
    altered[0] ^= 1;
    assert_eq!(listener.open(&altered, &mut out), Err(SessionError::Forged));
    assert!(out.is_empty(), "nothing of a forged record is handed on");

    let (mut dialer, mut listener) = sessions(Pattern::Xx);
    let first = sealed_body(&mut dialer, b"one");
    listener.open(&first, &mut out).unwrap();
    // The same record again (a replay by the relay) is under a used nonce.
    assert_eq!(listener.open(&first, &mut Vec::new()), Err(SessionError::Forged));

    assert_eq!(dialer.seal(&[0; MAX_PLAINTEXT + 1], &mut Vec::new()), Err(SessionError::TooLarge(MAX_PLAINTEXT + 1)));
    assert_eq!(Session::record_len([0, 15]), Err(SessionError::TooShort(15)));
    assert_eq!(listener.open(&[0; 8], &mut Vec::new()), Err(SessionError::TooShort(8)));
}

#[test]
fn a_record_from_another_sessions_keys_does_not_open() {
    let (mut dialer, _) = sessions(Pattern::Ik);
    let (_, mut stranger) = sessions(Pattern::Ik);
    assert_eq!(stranger.open(&sealed_body(&mut dialer, b"hi"), &mut Vec::new()), Err(SessionError::Forged));
}

#[test]
fn a_circuit_binding_that_names_another_dialer_breaks_the_handshake() {
    let mut net = TestNetwork::new("n");
    let (a, b) = (net.register_device(), net.register_device());
    let (pa, pb) = (a.public_keys().signing.peer_id(), b.public_keys().signing.peer_id());
    let dialer_view = circuit::binding(&pa.to_bytes(), &pb.to_bytes());
    // The relay told the listener someone else dialed.
    let listener_view = circuit::binding(b"someone else", &pb.to_bytes());
    let outcome =
        run((local(&net, &a), &net.ledger, dialer_view), (local(&net, &b), &net.ledger, listener_view), Some(b.did()));
    assert_eq!(reason(&outcome.1), Refusal::BadBinding);
}
