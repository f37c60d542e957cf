//! Port-guessing messages between devices (`carrier_proto::nat`): a
//! `GuessOffer` read with `Offer::from_pb` and a `GuessAnswer` read with
//! `read_answer`, after prost decoding. What is taken is an address probes
//! may go to (`check_target`) and round-trips through its writer; probe
//! datagrams are recognised only for their own nonce.
//!
//! Input: a selector byte, then the message.

#![no_main]

use carrier_fuzz::Input;
use carrier_proto::nat::{self, NONCE_LEN, Offer};
use carrier_proto::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let selector = input.u8();
    let bytes = input.rest();
    match selector % 3 {
        0 => {
            let Ok(message) = pb::GuessOffer::decode(bytes) else { return };
            let Ok(offer) = Offer::from_pb(&message) else { return };
            assert!(nat::check_target(offer.ip).is_ok());
            assert_eq!(Offer::from_pb(&offer.to_pb()).as_ref(), Ok(&offer), "offer does not round-trip");
            let probe = nat::probe(&offer.nonce);
            assert!(nat::is_probe(&probe, &offer.nonce));
            let mut other = offer.nonce;
            other[0] ^= 1;
            assert!(!nat::is_probe(&probe, &other));
        }
        1 => {
            let Ok(message) = pb::GuessAnswer::decode(bytes) else { return };
            let Ok(addr) = nat::read_answer(&message) else { return };
            assert!(nat::check_target(addr.ip()).is_ok());
            assert_eq!(nat::read_answer(&nat::answer(Ok(addr))).ok(), Some(addr), "answer does not round-trip");
        }
        _ => {
            // A datagram that arrives on a probing socket.
            let nonce: [u8; NONCE_LEN] = [7; NONCE_LEN];
            if nat::is_probe(bytes, &nonce) {
                assert_eq!(bytes, nat::probe(&nonce));
            }
        }
    }
});
