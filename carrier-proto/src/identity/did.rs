//! Decentralised identifiers: `did:carrier:z…`.
//!
//! A DID is the did:key form of an Ed25519 public key: multibase base58btc
//! (`z`) of the multicodec prefix `0xed 0x01` followed by the 32 key bytes.
//! The DID is fixed when an identity is registered; a later key rotation
//! changes the keys the ledger holds for it, never the DID itself.

use std::fmt;
use std::str::FromStr;

use libp2p_identity::PeerId;

use super::SigningPublicKey;

/// The text every DID starts with.
pub const DID_PREFIX: &str = "did:carrier:";
/// Multicodec varint for an Ed25519 public key.
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];
/// Longest accepted DID text; a real one is 60 characters.
const MAX_DID_LEN: usize = 128;

/// A Carrier decentralised identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Did(SigningPublicKey);

/// Why a text is not a DID.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DidError {
    /// The text does not start with `did:carrier:`.
    #[error("not a Carrier DID: it must start with \"did:carrier:z\"")]
    MissingPrefix,
    /// The identifier part is not multibase base58btc.
    #[error("DID identifier must be multibase base58btc (start with 'z')")]
    NotBase58btc,
    /// The identifier part has characters outside the base58 alphabet.
    #[error("DID identifier is not valid base58: {0}")]
    Base58(String),
    /// The multicodec prefix is not Ed25519.
    #[error("DID does not hold an Ed25519 key (multicodec 0xed01)")]
    WrongCodec,
    /// The key has the wrong number of bytes.
    #[error("DID key is {0} bytes long, expected 32")]
    WrongLength(usize),
    /// The bytes are not a valid Ed25519 point.
    #[error("DID key is not a valid Ed25519 public key")]
    InvalidKey,
    /// The text is longer than any DID.
    #[error("DID text is longer than {MAX_DID_LEN} characters")]
    TooLong,
}

impl Did {
    /// The DID of an Ed25519 public key.
    pub fn from_signing_key(key: SigningPublicKey) -> Self {
        Self(key)
    }

    /// The Ed25519 key this DID was made from (its key at registration).
    pub fn signing_key(&self) -> SigningPublicKey {
        self.0
    }

    /// The libp2p peer id of the key this DID names, so Kademlia distance is
    /// defined on ledger identities.
    pub fn peer_id(&self) -> PeerId {
        self.0.peer_id()
    }

    /// The DID of the key a libp2p peer id names, if it names an Ed25519 key.
    pub fn from_peer_id(peer: &PeerId) -> Option<Self> {
        SigningPublicKey::from_peer_id(peer).map(Self)
    }

    /// The DID whose key is these 32 bytes (the compact form messages
    /// carry), checked to be a curve point.
    pub fn from_key_bytes(bytes: &[u8]) -> Result<Self, DidError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| DidError::WrongLength(bytes.len()))?;
        Ok(Self(SigningPublicKey::from_bytes(key).map_err(|_| DidError::InvalidKey)?))
    }

    /// The compact form: the key's 32 bytes.
    pub fn key_bytes(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }

    /// A DID for looking up `bytes` in a map of known DIDs; never handed out
    /// unless the lookup finds it.
    pub(crate) fn unchecked(bytes: [u8; 32]) -> Self {
        Self(SigningPublicKey::unchecked(bytes))
    }

    /// Parses `did:carrier:z…`.
    pub fn parse(text: &str) -> Result<Self, DidError> {
        let key = Self::parse_key_bytes(text)?;
        let key = SigningPublicKey::from_bytes(key).map_err(|_| DidError::InvalidKey)?;
        Ok(Self(key))
    }

    /// Parses `text` as a DID whose key is expected to be one of `known`
    /// (keys already checked). Skips the curve-point check when it is, which
    /// halves the cost of decoding ledger entries.
    pub(crate) fn parse_expecting(text: &str, known: &[SigningPublicKey]) -> Result<Self, DidError> {
        let key = Self::parse_key_bytes(text)?;
        match known.iter().find(|k| *k.as_bytes() == key) {
            Some(known) => Ok(Self(*known)),
            None => Ok(Self(SigningPublicKey::from_bytes(key).map_err(|_| DidError::InvalidKey)?)),
        }
    }

    /// Parses a DID whose key passed the curve-point check before (see
    /// `Entry::decode_known`): the syntax only.
    pub(crate) fn parse_known(text: &str) -> Result<Self, DidError> {
        Ok(Self(SigningPublicKey::unchecked(Self::parse_key_bytes(text)?)))
    }

    /// The DID syntax: prefix, multibase, multicodec and length.
    fn parse_key_bytes(text: &str) -> Result<[u8; 32], DidError> {
        if text.len() > MAX_DID_LEN {
            return Err(DidError::TooLong);
        }
        let rest = text.strip_prefix(DID_PREFIX).ok_or(DidError::MissingPrefix)?;
        let encoded = rest.strip_prefix('z').ok_or(DidError::NotBase58btc)?;
        let bytes = bs58::decode(encoded).into_vec().map_err(|e| DidError::Base58(e.to_string()))?;
        let key = bytes.strip_prefix(&ED25519_MULTICODEC).ok_or(DidError::WrongCodec)?;
        key.try_into().map_err(|_| DidError::WrongLength(key.len()))
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = [0u8; 34];
        bytes[..2].copy_from_slice(&ED25519_MULTICODEC);
        bytes[2..].copy_from_slice(self.0.as_bytes());
        write!(f, "{DID_PREFIX}z{}", bs58::encode(bytes).into_string())
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Did {
    type Err = DidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compact_form_round_trips_and_is_checked_once_per_key() {
        let did = crate::identity::Identity::generate(crate::identity::IdentityKind::App).did();
        assert_eq!(Did::from_key_bytes(&did.key_bytes()), Ok(did));
        assert_eq!(Did::from_key_bytes(&did.key_bytes()[..31]), Err(DidError::WrongLength(31)));
        let mut cache = DidCache::new();
        assert_eq!(cache.get(&did.key_bytes()), Ok(did));
        assert_eq!(cache.get(&did.key_bytes()), Ok(did));
        // Not a curve point (y = 2 has no x on edwards25519): refused, and not remembered.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        assert_eq!(cache.get(&bad), Err(DidError::InvalidKey));
        assert_eq!(cache.get(&bad), Err(DidError::InvalidKey));
    }
    use crate::identity::{Identity, IdentityKind};
    use proptest::prelude::*;

    #[test]
    fn formats_as_did_key_form() {
        let id = Identity::from_secrets(IdentityKind::Device, [7; 32], [9; 32]);
        let text = id.did().to_string();
        assert!(text.starts_with("did:carrier:z6Mk"), "{text}");
        assert_eq!(Did::parse(&text), Ok(id.did()));
    }

    #[test]
    fn peer_id_comes_from_the_same_key() {
        let id = Identity::from_secrets(IdentityKind::Device, [1; 32], [2; 32]);
        let expected = libp2p_identity::PublicKey::from(
            libp2p_identity::ed25519::PublicKey::try_from_bytes(id.signing_key().as_bytes()).unwrap(),
        )
        .to_peer_id();
        assert_eq!(id.did().peer_id(), expected);
        assert_eq!(Did::from_peer_id(&expected), Some(id.did()));
        // A sha2-256 multihash peer id (as for RSA keys) names no DID.
        let mut hashed = vec![0x12, 0x20];
        hashed.extend([5; 32]);
        assert_eq!(Did::from_peer_id(&PeerId::from_bytes(&hashed).unwrap()), None);
    }

    #[test]
    fn rejects_malformed_dids() {
        let good = Identity::from_secrets(IdentityKind::Device, [3; 32], [4; 32]).did().to_string();
        let id_part = &good[DID_PREFIX.len() + 1..];
        let cases = [
            ("did:key:z6Mk", DidError::MissingPrefix),
            ("", DidError::MissingPrefix),
            (&format!("{DID_PREFIX}m{id_part}"), DidError::NotBase58btc),
            (&format!("{DID_PREFIX}z0OIl"), DidError::Base58(String::new())),
            (&format!("{DID_PREFIX}z{}", bs58::encode([0x12, 0x00, 1]).into_string()), DidError::WrongCodec),
            (&format!("{DID_PREFIX}z{}", bs58::encode([0xed, 0x01, 1, 2]).into_string()), DidError::WrongLength(2)),
            (&format!("{good}{}", "1".repeat(200)), DidError::TooLong),
        ];
        for (text, want) in cases {
            let got = Did::parse(text).unwrap_err();
            match (&got, &want) {
                (DidError::Base58(_), DidError::Base58(_)) => {}
                _ => assert_eq!(got, want, "{text}"),
            }
        }
    }

    #[test]
    fn rejects_key_that_is_not_a_point() {
        // y = 2 has no matching x on the curve.
        let mut bytes = vec![0xed, 0x01, 2];
        bytes.extend_from_slice(&[0; 31]);
        let text = format!("{DID_PREFIX}z{}", bs58::encode(bytes).into_string());
        assert_eq!(Did::parse(&text), Err(DidError::InvalidKey));
    }

    proptest! {
        #[test]
        fn round_trips(seed in any::<[u8; 32]>()) {
            let id = Identity::from_secrets(IdentityKind::App, seed, [0; 32]);
            let did = id.did();
            prop_assert_eq!(Did::parse(&did.to_string()), Ok(did));
        }

        #[test]
        fn never_panics_on_text(text in "\\PC{0,80}") {
            let _ = Did::parse(&text);
            let _ = Did::parse(&format!("{DID_PREFIX}z{text}"));
        }
    }
}

/// Remembers the DIDs of compact keys already checked, so a stream of
/// messages from a few senders pays the curve-point check once per sender.
#[derive(Debug, Default)]
pub struct DidCache {
    known: foldhash::HashMap<[u8; 32], Did>,
}

impl DidCache {
    /// Most DIDs remembered; past it the cache starts afresh.
    const CAPACITY: usize = 4096;

    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`Did::from_key_bytes`], remembered.
    pub fn get(&mut self, bytes: &[u8]) -> Result<Did, DidError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| DidError::WrongLength(bytes.len()))?;
        if let Some(did) = self.known.get(&key) {
            return Ok(*did);
        }
        let did = Did::from_key_bytes(&key)?;
        if self.known.len() >= Self::CAPACITY {
            self.known.clear();
        }
        self.known.insert(key, did);
        Ok(did)
    }
}
