//! Cards: the public half of an identity, as one line of text.
//!
//! `carrierd init` prints a device's card; an admin copies it and signs a
//! `register-device` entry from it. A card carries both public keys and a
//! signature by the Ed25519 key over the Noise key, so a card cannot pair a
//! stranger's Noise key with somebody's DID.
//!
//! Text form: `carrier-card:` followed by base58btc of the `pb::Card` message.

use std::fmt;
use std::str::FromStr;

use prost::Message;

use super::{Did, Identity, IdentityKind, KeyError, NoisePublicKey, PublicKeys, SigningPublicKey};
use crate::{domain, pb};

/// The text every card starts with.
pub const CARD_PREFIX: &str = "carrier-card:";
/// Card format version this build writes and reads.
const CARD_VERSION: u32 = 1;
/// Longest accepted card text; a real card is about 200 characters.
const MAX_CARD_LEN: usize = 512;

/// The public half of an identity, checked to belong together.
#[derive(Clone, PartialEq, Eq)]
pub struct Card {
    kind: IdentityKind,
    keys: PublicKeys,
    noise_key_signature: [u8; 64],
}

/// Why a text is not a valid card.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// The text does not start with `carrier-card:`.
    #[error("not a Carrier card: it must start with \"{CARD_PREFIX}\"")]
    MissingPrefix,
    /// The text is longer than any card.
    #[error("card text is longer than {MAX_CARD_LEN} characters")]
    TooLong,
    /// The text after the prefix is not base58.
    #[error("card is not valid base58: {0}")]
    Base58(String),
    /// The bytes are not a card message.
    #[error("card does not decode: {0}")]
    Decode(String),
    /// The card was written by a newer format.
    #[error("card format version {0} is not supported (this build reads version {CARD_VERSION})")]
    UnsupportedVersion(u32),
    /// The kind field is missing or unknown.
    #[error("card does not say whether it is a device, app or registrar")]
    UnknownKind,
    /// A key field is malformed.
    #[error("card key: {0}")]
    Key(#[from] KeyError),
    /// The signature does not tie the Noise key to the signing key.
    #[error("card signature does not verify: the card was altered or forged")]
    BadSignature,
}

impl Card {
    pub(super) fn for_identity(identity: &Identity) -> Self {
        let keys = identity.public_keys();
        Self { kind: identity.kind(), keys, noise_key_signature: identity.noise_key_signature() }
    }

    /// Device, app or registrar.
    pub fn kind(&self) -> IdentityKind {
        self.kind
    }

    /// The DID of the card's signing key.
    pub fn did(&self) -> Did {
        Did::from_signing_key(self.keys.signing)
    }

    /// Both public keys.
    pub fn keys(&self) -> PublicKeys {
        self.keys
    }

    /// Parses and checks a card's text form.
    pub fn parse(text: &str) -> Result<Self, CardError> {
        let text = text.trim();
        if text.len() > MAX_CARD_LEN {
            return Err(CardError::TooLong);
        }
        let encoded = text.strip_prefix(CARD_PREFIX).ok_or(CardError::MissingPrefix)?;
        let bytes = bs58::decode(encoded).into_vec().map_err(|e| CardError::Base58(e.to_string()))?;
        let card = pb::Card::decode(bytes.as_slice()).map_err(|e| CardError::Decode(e.to_string()))?;
        if card.version != CARD_VERSION {
            return Err(CardError::UnsupportedVersion(card.version));
        }
        let kind = IdentityKind::from_pb(card.kind).ok_or(CardError::UnknownKind)?;
        let keys = PublicKeys {
            signing: SigningPublicKey::from_slice(&card.signing_key, "signing key")?,
            noise: NoisePublicKey::from_slice(&card.noise_key, "noise key")?,
        };
        let noise_key_signature: [u8; 64] = card.noise_key_signature.as_slice().try_into().map_err(|_| {
            KeyError::WrongLength { what: "noise key signature", len: card.noise_key_signature.len(), expected: 64 }
        })?;
        if !keys.signing.verify(domain::NOISE_KEY, keys.noise.as_bytes(), &noise_key_signature) {
            return Err(CardError::BadSignature);
        }
        Ok(Self { kind, keys, noise_key_signature })
    }

    fn to_pb(&self) -> pb::Card {
        pb::Card {
            version: CARD_VERSION,
            kind: self.kind.to_pb().into(),
            signing_key: self.keys.signing.as_bytes().to_vec(),
            noise_key: self.keys.noise.as_bytes().to_vec(),
            noise_key_signature: self.noise_key_signature.to_vec(),
        }
    }
}

impl fmt::Display for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_pb().encode_to_vec();
        write!(f, "{CARD_PREFIX}{}", bs58::encode(bytes).into_string())
    }
}

impl fmt::Debug for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Card")
            .field("kind", &self.kind)
            .field("did", &self.did())
            .field("noise", &self.keys.noise)
            .finish()
    }
}

impl FromStr for Card {
    type Err = CardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(card: &pb::Card) -> String {
        format!("{CARD_PREFIX}{}", bs58::encode(card.encode_to_vec()).into_string())
    }

    #[test]
    fn round_trips() {
        let id = Identity::generate(IdentityKind::Device);
        let card = id.card();
        let parsed = Card::parse(&card.to_string()).unwrap();
        assert_eq!(parsed, card);
        assert_eq!(parsed.did(), id.did());
        assert_eq!(parsed.keys(), id.public_keys());
    }

    #[test]
    fn rejects_a_swapped_noise_key() {
        let id = Identity::generate(IdentityKind::Device);
        let other = Identity::generate(IdentityKind::Device);
        let mut forged = id.card().to_pb();
        forged.noise_key = other.noise_key().as_bytes().to_vec();
        assert_eq!(Card::parse(&encode(&forged)), Err(CardError::BadSignature));
    }

    #[test]
    fn rejects_malformed_cards() {
        let good = Identity::generate(IdentityKind::App).card().to_pb();
        let mut newer = good.clone();
        newer.version = 2;
        let mut no_kind = good.clone();
        no_kind.kind = 0;
        let mut short_key = good.clone();
        short_key.noise_key.pop();
        let mut short_sig = good.clone();
        short_sig.noise_key_signature.truncate(10);
        assert_eq!(Card::parse("did:carrier:z"), Err(CardError::MissingPrefix));
        assert!(matches!(Card::parse("carrier-card:0OIl"), Err(CardError::Base58(_))));
        assert!(matches!(Card::parse("carrier-card:zzzz"), Err(CardError::Decode(_))));
        assert_eq!(Card::parse(&"x".repeat(600)), Err(CardError::TooLong));
        assert_eq!(Card::parse(&encode(&newer)), Err(CardError::UnsupportedVersion(2)));
        assert_eq!(Card::parse(&encode(&no_kind)), Err(CardError::UnknownKind));
        assert!(matches!(Card::parse(&encode(&short_key)), Err(CardError::Key(KeyError::WrongLength { len: 31, .. }))));
        assert!(matches!(Card::parse(&encode(&short_sig)), Err(CardError::Key(KeyError::WrongLength { len: 10, .. }))));
    }

    proptest! {
        #[test]
        fn round_trips_any_keys(seed in any::<[u8; 32]>(), noise in any::<[u8; 32]>()) {
            let id = Identity::from_secrets(IdentityKind::Registrar, seed, noise);
            let card = id.card();
            prop_assert_eq!(Card::parse(&card.to_string()), Ok(card));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Card::parse(&format!("{CARD_PREFIX}{}", bs58::encode(bytes).into_string()));
        }
    }
}
