//! The identity texts people paste: cards (`identity::Card::parse`), DIDs
//! (`identity::Did::parse`) and app consents (`ledger::Consent`'s
//! `FromStr`). Each that parses writes back (`Display`) to a text that
//! parses to the same value; a card's DID is its signing key's. Invalid
//! UTF-8 is read lossily.

#![no_main]

use carrier_proto::identity::{Card, Did};
use carrier_proto::ledger::Consent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(card) = Card::parse(&text) {
        assert_eq!(Card::parse(&card.to_string()).as_ref(), Ok(&card), "card text does not round-trip");
        assert_eq!(card.did(), Did::from_signing_key(card.keys().signing));
        assert_eq!(text.parse::<Card>().as_ref(), Ok(&card));
    }
    if let Ok(did) = Did::parse(&text) {
        assert_eq!(Did::parse(&did.to_string()), Ok(did), "DID text does not round-trip");
        assert_eq!(Did::from_key_bytes(&did.key_bytes()), Ok(did));
        assert_eq!(Did::from_peer_id(&did.peer_id()), Some(did));
    }
    if let Ok(consent) = text.parse::<Consent>() {
        assert_eq!(consent.to_string().parse::<Consent>(), Ok(consent), "consent text does not round-trip");
    }
});
