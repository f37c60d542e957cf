//! The handshake's framing (`carrier_proto::handshake::frame`): a stream of
//! 2-byte-length frames read with `body_len`, which must refuse exactly the
//! empty and oversized frames before their bodies; every frame re-encodes to
//! its bytes. Each body is also decoded as each handshake message (hello,
//! payload, verdict), whose fields are then read as the handshake reads them
//! (DID, keys, checkpoint note shape); a message that decodes re-encodes to
//! one that decodes the same.

#![no_main]

use carrier_fuzz::fixture;
use carrier_proto::handshake::Refusal;
use carrier_proto::handshake::frame::{self, FRAME_HEADER, MAX_FRAME};
use carrier_proto::identity::{Did, NoisePublicKey, SigningPublicKey};
use carrier_proto::ledger::check_note_shape;
use carrier_proto::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn round_trips<M: Message + Default + PartialEq + std::fmt::Debug>(body: &[u8]) -> Option<M> {
    let message = M::decode(body).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, message);
    Some(message)
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut stream = data;
    while let Some(header) = stream.get(..FRAME_HEADER) {
        let header = [header[0], header[1]];
        let announced = u16::from_be_bytes(header) as usize;
        let len = match frame::body_len(header) {
            Ok(len) => {
                assert!(len == announced && len > 0 && len <= MAX_FRAME);
                len
            }
            Err(e) => {
                assert!(announced == 0 || announced > MAX_FRAME, "refused a frame of {announced} bytes");
                assert_eq!(e.reason, Refusal::Malformed);
                break;
            }
        };
        let Some(body) = stream.get(FRAME_HEADER..FRAME_HEADER + len) else { break };
        assert_eq!(frame::encode(body), &stream[..FRAME_HEADER + len]);
        stream = &stream[FRAME_HEADER + len..];

        if let Some(hello) = round_trips::<pb::Hello>(body) {
            let _ = pb::NoisePattern::try_from(hello.pattern);
        }
        if let Some(payload) = round_trips::<pb::HandshakePayload>(body) {
            if let Ok(did) = Did::parse(&payload.did) {
                assert_eq!(Did::parse(&did.to_string()), Ok(did));
            }
            let _ = SigningPublicKey::from_slice(&payload.signing_key, "signing key");
            let _ = NoisePublicKey::from_slice(&payload.noise_key_signature, "noise key");
            if !payload.checkpoint.is_empty() {
                let _ = check_note_shape(&payload.checkpoint, &f.network);
            }
        }
        let _ = round_trips::<pb::Verdict>(body);
    }
});
