//! Relayed circuits: the handshake frame kinds (`handshake::circuit::decode`)
//! and the sealed records every byte of a circuit travels in
//! (`handshake::Session::record_len` / `open`).
//!
//! - even mode byte: the rest is a circuit frame body; `decode` must not
//!   panic, a message or refusal re-encodes to the same bytes;
//! - odd mode byte: an honest IK handshake between the fixture devices gives
//!   both ends' sessions; the input is a list of operations: seal a
//!   plaintext on one end and open it on the other (it must round-trip, in
//!   order, both ways), seal and alter one byte (it must not open), or
//!   present raw bytes as a record (they must not open). After a refused
//!   record the session is spent, as on a real link; sessions whose records
//!   all opened are kept for the next input (a handshake per input would
//!   cost more than everything else).

#![no_main]

use carrier_fuzz::{BINDING, Input, fixture};
use carrier_proto::handshake::circuit::{self, CircuitFrame};
use carrier_proto::handshake::{
    Initiator, InitiatorStep, MAX_PLAINTEXT, RECORD_HEADER, Responder, ResponderStep, Session, SessionError,
};
use libfuzzer_sys::fuzz_target;

/// Opens the first record in `bytes`, as a circuit reader does: header,
/// then exactly the body it announces.
fn open_record(session: &mut Session, bytes: &[u8]) -> Result<Vec<u8>, SessionError> {
    let header: [u8; RECORD_HEADER] = bytes.get(..RECORD_HEADER).ok_or(SessionError::Forged)?.try_into().unwrap();
    let len = Session::record_len(header)?;
    let body = bytes.get(RECORD_HEADER..RECORD_HEADER + len).ok_or(SessionError::Forged)?;
    let mut out = b"kept".to_vec();
    let opened = session.open(body, &mut out);
    match opened {
        Ok(()) => {
            assert_eq!(&out[..4], b"kept", "open overwrote what was in its output");
            Ok(out[4..].to_vec())
        }
        Err(e) => {
            assert_eq!(out, b"kept", "a refused record left bytes behind");
            Err(e)
        }
    }
}

thread_local! {
    static SESSIONS: std::cell::RefCell<Option<(Session, Session)>> = const { std::cell::RefCell::new(None) };
}

fn sessions() -> (Session, Session) {
    let f = fixture();
    let (initiator, hello) = Initiator::start(&f.dialer(), &BINDING, &f.state, Some(f.d0.did())).unwrap();
    let Ok(ResponderStep::AwaitVerdict { next, message }) =
        Responder::new(f.listener(), BINDING).read_hello(&hello, &f.state)
    else {
        panic!("honest IK hello refused")
    };
    let Ok(InitiatorStep::Admitted { verdict, session, .. }) = initiator.read_response(&message, &f.state) else {
        panic!("honest IK message 2 refused")
    };
    let (_, theirs) = next.read_verdict_keeping_session(&verdict).expect("honest verdict");
    (session, theirs)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    if input.u8() & 1 == 0 {
        let body = input.rest();
        match circuit::decode(body) {
            Ok(CircuitFrame::Message(m)) => assert_eq!(circuit::message(m), body),
            Ok(CircuitFrame::Refused(reason)) => assert_eq!(circuit::refusal(reason), body),
            Err(_) => {}
        }
        return;
    }

    // A handshake costs far more than a record, so a pair of sessions is
    // kept while every record on it opens; a refused record spends it.
    let (mut dialer, mut listener) = SESSIONS.with(|kept| kept.borrow_mut().take()).unwrap_or_else(sessions);
    while !input.is_empty() {
        let op = input.u8();
        let (from, to) = if op & 0x80 == 0 { (&mut dialer, &mut listener) } else { (&mut listener, &mut dialer) };
        match op % 3 {
            // Seal and open: the plaintext comes back.
            0 => {
                let plaintext = input.part();
                let mut record = Vec::new();
                match from.seal(plaintext, &mut record) {
                    Ok(()) => assert_eq!(open_record(to, &record).expect("an honest record opens"), plaintext),
                    Err(SessionError::TooLarge(n)) => {
                        assert!(n > MAX_PLAINTEXT);
                        assert!(record.is_empty());
                    }
                    Err(e) => panic!("seal failed: {e}"),
                }
            }
            // Seal and alter one byte: it does not open.
            1 => {
                let plaintext = input.part();
                let (at, flip) = (usize::from(input.u16()), input.u8() | 1);
                let mut record = Vec::new();
                if from.seal(plaintext, &mut record).is_err() {
                    continue;
                }
                let at = at % record.len();
                record[at] ^= flip;
                assert!(open_record(to, &record).is_err(), "an altered record opened");
                return;
            }
            // Raw bytes as a record: they do not open.
            _ => {
                let record = input.part();
                assert!(open_record(to, record).is_err(), "a forged record opened");
                return;
            }
        }
    }
    SESSIONS.with(|kept| *kept.borrow_mut() = Some((dialer, listener)));
});
