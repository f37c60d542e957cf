//! The link handshake's state machines (`carrier_proto::handshake`) fed
//! hostile messages at every step, against the fixture ledger:
//!
//! - mode 0: raw hello to `Responder::read_hello`, then raw message 3 or
//!   verdict to the state it leads to;
//! - mode 1: raw message 2 to `Initiator::read_response` (IK or XX);
//! - modes 2–6: the harness plays the other side with Noise itself, so the
//!   fuzzer's bytes arrive as the *decrypted payload* of a well-formed
//!   message (IK message 1, XX message 3, XX or IK message 2) or as the
//!   plaintext of the verdict; this reaches the admission checks (DID, keys,
//!   signature, ledger standing, checkpoint note shape);
//! - mode 7: an honest handshake (IK and XX), which must admit both ends.
//!
//! Whatever the bytes: no panic; a peer is admitted only with the Noise key
//! it proved and the keys the ledger holds for an active device; a verdict
//! is taken only if it says "admitted".
//!
//! Input: mode (1 byte), which fixture identity the harness's side uses
//! (1 byte), then the mode's data.

#![no_main]

use carrier_fuzz::{BINDING, Fixture, Input, fixture};
use carrier_proto::handshake::frame::MAX_FRAME;
use carrier_proto::handshake::{
    Admitted, Initiator, InitiatorStep, PROTOCOL, Pattern, Responder, ResponderStep, VERSION,
};
use carrier_proto::identity::Identity;
use carrier_proto::ledger::Directory;
use carrier_proto::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use snow::{HandshakeState, TransportState};

const NOISE_IK: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
const NOISE_XX: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
const NOISE_MAX: usize = 65_535;

/// The harness's own end of a handshake with a fixture device.
fn noise(
    f: &Fixture,
    pattern: Pattern,
    local: &Identity,
    remote: Option<&[u8; 32]>,
    initiator: bool,
) -> HandshakeState {
    let name = if pattern == Pattern::Ik { NOISE_IK } else { NOISE_XX };
    let mut prologue = PROTOCOL.to_vec();
    prologue.extend_from_slice(&f.network.0);
    prologue.extend_from_slice(&BINDING.0);
    let secret = local.noise_secret();
    let mut builder =
        snow::Builder::new(name.parse().unwrap()).local_private_key(&secret[..]).unwrap().prologue(&prologue).unwrap();
    if let Some(remote) = remote {
        builder = builder.remote_public_key(remote).unwrap();
    }
    if initiator { builder.build_initiator().unwrap() } else { builder.build_responder().unwrap() }
}

fn write(state: &mut HandshakeState, payload: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; NOISE_MAX];
    let len = state.write_message(payload, &mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

fn read(state: &mut HandshakeState, message: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; NOISE_MAX];
    let len = state.read_message(message, &mut buf).expect("the fixture's own message decrypts");
    buf.truncate(len);
    buf
}

fn seal(transport: &mut TransportState, plaintext: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; NOISE_MAX];
    let len = transport.write_message(plaintext, &mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

fn open(transport: &mut TransportState, message: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; NOISE_MAX];
    let len = transport.read_message(message, &mut buf).expect("the fixture's own record opens");
    buf.truncate(len);
    buf
}

fn hello(f: &Fixture, pattern: Pattern, noise: Vec<u8>) -> Vec<u8> {
    let pattern = if pattern == Pattern::Ik { pb::NoisePattern::Ik } else { pb::NoisePattern::Xx };
    pb::Hello { version: VERSION, pattern: pattern.into(), network_id: f.network.0.to_vec(), noise }.encode_to_vec()
}

/// A payload as a fixture device sends it.
fn payload(did: &Identity, keys: &Identity, checkpoint: &[u8]) -> Vec<u8> {
    pb::HandshakePayload {
        did: did.did().to_string(),
        signing_key: keys.signing_key().as_bytes().to_vec(),
        noise_key_signature: keys.noise_key_signature().to_vec(),
        checkpoint: checkpoint.to_vec(),
    }
    .encode_to_vec()
}

/// The fixture dialer's payload (D1 with its rotated keys).
fn dialer_payload(f: &Fixture) -> Vec<u8> {
    payload(&f.d1, &f.d1b, f.base_checkpoint.note())
}

/// What admission promises: the peer proved `noise` and is an active device
/// whose keys the ledger holds.
fn check_admitted(f: &Fixture, peer: &Admitted, noise: &[u8; 32]) {
    assert_eq!(peer.keys.noise.as_bytes(), noise, "admitted with a Noise key it did not prove");
    let standing = f.state.standing(&peer.did).expect("admitted a DID the ledger lacks");
    assert!(standing.is_active_device(), "admitted {:?}, not an active device", peer.did);
    assert_eq!(standing.keys, peer.keys, "admitted with keys the ledger does not hold");
}

/// Whether a sealed message fits a handshake frame (larger ones never
/// arrive: `frame::body_len` refuses them).
fn fits(sealed: &[u8]) -> bool {
    sealed.len() <= MAX_FRAME
}

/// Whether a verdict plaintext is one the state machines must take.
fn says_admitted(plaintext: &[u8]) -> bool {
    pb::Verdict::decode(plaintext).is_ok_and(|v| v.admitted)
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut input = Input(data);
    let mode = input.u8() % 8;
    let pool = f.pool();
    let pick = input.u8();
    let ours = pool[usize::from(pick) % pool.len()];
    let our_noise = ours.noise_key();
    let listener = f.listener();
    let dialer = f.dialer();

    match mode {
        // Raw hello, then raw message 3 or verdict.
        0 => {
            let (hello, next) = (input.part(), input.rest());
            match Responder::new(listener, BINDING).read_hello(hello, &f.state) {
                Ok(ResponderStep::AwaitPayload { next: state, .. }) => {
                    // Message 3 would have to decrypt under keys only we know.
                    assert!(state.read_payload(next, &f.state).is_err(), "forged message 3 accepted");
                }
                Ok(ResponderStep::AwaitVerdict { next: state, .. }) => {
                    assert!(state.read_verdict(next).is_err(), "forged verdict accepted");
                }
                Err(_) => {}
            }
        }
        // Raw message 2, then a raw verdict.
        1 => {
            let ik = pick & 0x80 != 0;
            let message = input.rest();
            let (initiator, _) = if ik {
                Initiator::start(&dialer, &BINDING, &f.state, Some(f.d0.did())).unwrap()
            } else {
                Initiator::start_xx(&dialer, &BINDING, None).unwrap()
            };
            // Message 2 would have to decrypt under our fresh ephemeral key.
            assert!(initiator.read_response(message, &f.state).is_err(), "forged message 2 accepted");
        }
        // IK message 1 carrying the fuzzer's payload, from `ours`.
        2 => {
            let mut state = noise(f, Pattern::Ik, ours, Some(f.d0.noise_key().as_bytes()), true);
            let (payload, verdict) = (input.part(), input.rest());
            let honest = ours.noise_key() == f.d1b.noise_key() && payload == dialer_payload(f);
            let Some(first) = write(&mut state, payload) else { return };
            let step = Responder::new(listener, BINDING).read_hello(&hello(f, Pattern::Ik, first), &f.state);
            assert!(!honest || step.is_ok(), "the honest dialer's IK payload was refused");
            match step {
                Ok(ResponderStep::AwaitVerdict { next, message }) => {
                    let theirs = read(&mut state, &message);
                    let theirs = pb::HandshakePayload::decode(theirs.as_slice()).expect("the listener's payload");
                    assert_eq!(theirs.did, f.d0.did().to_string());
                    let mut transport = state.into_transport_mode().unwrap();
                    let Some(sealed) = seal(&mut transport, verdict) else { return };
                    match next.read_verdict_keeping_session(&sealed) {
                        Ok((peer, _session)) => {
                            assert!(says_admitted(verdict), "took a verdict that does not admit");
                            check_admitted(f, &peer, our_noise.as_bytes());
                        }
                        Err(_) => assert!(!fits(&sealed) || !says_admitted(verdict), "refused a verdict that admits"),
                    }
                }
                Ok(ResponderStep::AwaitPayload { .. }) => panic!("an IK hello led to XX"),
                Err(_) => {}
            }
        }
        // XX message 3 carrying the fuzzer's payload, from `ours`.
        3 => {
            let mut state = noise(f, Pattern::Xx, ours, None, true);
            let first = write(&mut state, &[]).unwrap();
            let step = Responder::new(listener, BINDING).read_hello(&hello(f, Pattern::Xx, first), &f.state).unwrap();
            let ResponderStep::AwaitPayload { next, message } = step else { panic!("an XX hello led to IK") };
            let theirs = read(&mut state, &message);
            assert!(pb::HandshakePayload::decode(theirs.as_slice()).is_ok());
            let payload = input.rest();
            let honest = ours.noise_key() == f.d1b.noise_key() && payload == dialer_payload(f);
            let Some(third) = write(&mut state, payload) else { return };
            let taken = next.read_payload_keeping_session(&third, &f.state);
            assert!(!honest || taken.is_ok(), "the honest dialer's XX payload was refused");
            if let Ok((peer, verdict, _session)) = taken {
                check_admitted(f, &peer, our_noise.as_bytes());
                let mut transport = state.into_transport_mode().unwrap();
                assert!(says_admitted(&open(&mut transport, &verdict)));
            }
        }
        // XX message 2 carrying the fuzzer's payload, to the fixture dialer.
        4 => {
            let expected = (input.u8() & 1 == 1).then(|| f.d0.did());
            let (initiator, first) = Initiator::start_xx(&dialer, &BINDING, expected).unwrap();
            let first = pb::Hello::decode(first.as_slice()).unwrap();
            let mut state = noise(f, Pattern::Xx, ours, None, false);
            read(&mut state, &first.noise);
            let (payload, verdict) = (input.part(), input.rest());
            let Some(second) = write(&mut state, payload) else { return };
            match initiator.read_response(&second, &f.state) {
                Ok(InitiatorStep::AwaitVerdict { next, message }) => {
                    let theirs = read(&mut state, &message);
                    let theirs = pb::HandshakePayload::decode(theirs.as_slice()).expect("the dialer's payload");
                    assert_eq!(theirs.did, f.d1.did().to_string());
                    let mut transport = state.into_transport_mode().unwrap();
                    let Some(sealed) = seal(&mut transport, verdict) else { return };
                    match next.read_verdict(&sealed) {
                        Ok(peer) => {
                            assert!(says_admitted(verdict), "took a verdict that does not admit");
                            check_admitted(f, &peer, our_noise.as_bytes());
                            if let Some(expected) = expected {
                                assert_eq!(peer.did, expected, "admitted another peer than the one dialed");
                            }
                        }
                        Err(_) => assert!(!fits(&sealed) || !says_admitted(verdict), "refused a verdict that admits"),
                    }
                }
                Ok(InitiatorStep::Admitted { .. }) => panic!("an XX handshake finished in two messages"),
                Err(_) => {}
            }
        }
        // IK message 2 carrying the fuzzer's payload, to a dialer that
        // expects D0 (the harness must hold D0's Noise key to answer).
        5 => {
            let (initiator, first) = Initiator::start(&dialer, &BINDING, &f.state, Some(f.d0.did())).unwrap();
            assert_eq!(initiator.pattern(), Pattern::Ik);
            let first = pb::Hello::decode(first.as_slice()).unwrap();
            let mut state = noise(f, Pattern::Ik, &f.d0, None, false);
            let theirs = read(&mut state, &first.noise);
            assert!(pb::HandshakePayload::decode(theirs.as_slice()).is_ok());
            let Some(second) = write(&mut state, input.rest()) else { return };
            match initiator.read_response(&second, &f.state) {
                Ok(InitiatorStep::Admitted { peer, verdict, .. }) => {
                    check_admitted(f, &peer, f.d0.noise_key().as_bytes());
                    assert_eq!(peer.did, f.d0.did(), "admitted another peer than the one dialed");
                    let mut transport = state.into_transport_mode().unwrap();
                    assert!(says_admitted(&open(&mut transport, &verdict)));
                }
                Ok(InitiatorStep::AwaitVerdict { .. }) => panic!("an IK handshake asked for message 3"),
                Err(_) => {}
            }
        }
        // An honest IK dialer (D1), then the fuzzer's verdict plaintext.
        6 => {
            let mut state = noise(f, Pattern::Ik, &f.d1b, Some(f.d0.noise_key().as_bytes()), true);
            let first = write(&mut state, &dialer_payload(f)).unwrap();
            let step = Responder::new(listener, BINDING).read_hello(&hello(f, Pattern::Ik, first), &f.state).unwrap();
            let ResponderStep::AwaitVerdict { next, message } = step else { panic!("an IK hello led to XX") };
            read(&mut state, &message);
            let mut transport = state.into_transport_mode().unwrap();
            let verdict = input.rest();
            let Some(sealed) = seal(&mut transport, verdict) else { return };
            match next.read_verdict(&sealed) {
                Ok(peer) => {
                    assert!(says_admitted(verdict));
                    assert_eq!(peer.did, f.d1.did());
                }
                Err(_) => assert!(!fits(&sealed) || !says_admitted(verdict), "refused a verdict that admits"),
            }
        }
        // Honest handshakes, both patterns: both ends admit each other.
        _ => {
            let ik = input.u8() & 1 == 1;
            let (initiator, first) = if ik {
                Initiator::start(&dialer, &BINDING, &f.state, Some(f.d0.did())).unwrap()
            } else {
                Initiator::start_xx(&dialer, &BINDING, None).unwrap()
            };
            let step = Responder::new(listener, BINDING).read_hello(&first, &f.state).expect("honest hello");
            match step {
                ResponderStep::AwaitVerdict { next, message } => {
                    let InitiatorStep::Admitted { peer, verdict, .. } =
                        initiator.read_response(&message, &f.state).expect("honest message 2")
                    else {
                        panic!("IK asked for message 3")
                    };
                    assert_eq!(peer.did, f.d0.did());
                    assert_eq!(next.read_verdict(&verdict).expect("honest verdict").did, f.d1.did());
                }
                ResponderStep::AwaitPayload { next, message } => {
                    let InitiatorStep::AwaitVerdict { next: waiting, message: third } =
                        initiator.read_response(&message, &f.state).expect("honest message 2")
                    else {
                        panic!("XX finished in two messages")
                    };
                    let (peer, verdict) = next.read_payload(&third, &f.state).expect("honest message 3");
                    assert_eq!(peer.did, f.d1.did());
                    assert_eq!(waiting.read_verdict(&verdict).expect("honest verdict").did, f.d0.did());
                }
            }
        }
    }
});
