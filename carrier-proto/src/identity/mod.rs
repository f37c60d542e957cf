//! Identities: an Ed25519 signing key plus an X25519 Noise static key.
//!
//! Devices, apps and registrars all have one. The Ed25519 key signs ledger
//! entries and handshakes and names the identity (its [`Did`] and libp2p
//! `PeerId`); the X25519 key is the Noise static key links are made with.
//! This module owns the key types and signing; [`keyfile`] and [`card`] own
//! the two encodings that leave the process.

pub mod card;
mod did;
pub mod keyfile;

use std::fmt;

use ed25519_zebra::{Signature, SigningKey, VerificationKey, VerificationKeyBytes};
use libp2p_identity::PeerId;
use rand_core::OsRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

pub use card::Card;
pub use did::{DID_PREFIX, Did, DidCache, DidError};

use crate::domain;
use crate::pb;

/// What an identity belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// A device running `carrierd`.
    Device,
    /// An app hosted on a device.
    App,
    /// A key allowed to register devices on a network.
    Registrar,
    /// A network's log key: orders its ledger and signs checkpoints.
    Log,
    /// A witness key: cosigns a network's checkpoints.
    Witness,
}

impl IdentityKind {
    /// Lower-case name for people and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Device => "device",
            IdentityKind::App => "app",
            IdentityKind::Registrar => "registrar",
            IdentityKind::Log => "log",
            IdentityKind::Witness => "witness",
        }
    }

    pub(crate) fn to_pb(self) -> pb::IdentityKind {
        match self {
            IdentityKind::Device => pb::IdentityKind::Device,
            IdentityKind::App => pb::IdentityKind::App,
            IdentityKind::Registrar => pb::IdentityKind::Registrar,
            IdentityKind::Log => pb::IdentityKind::Log,
            IdentityKind::Witness => pb::IdentityKind::Witness,
        }
    }

    pub(crate) fn from_pb(value: i32) -> Option<Self> {
        match pb::IdentityKind::try_from(value).ok()? {
            pb::IdentityKind::Device => Some(IdentityKind::Device),
            pb::IdentityKind::App => Some(IdentityKind::App),
            pb::IdentityKind::Registrar => Some(IdentityKind::Registrar),
            pb::IdentityKind::Log => Some(IdentityKind::Log),
            pb::IdentityKind::Witness => Some(IdentityKind::Witness),
            pb::IdentityKind::Unspecified => None,
        }
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why key material was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes do not decode to an Ed25519 point.
    #[error("not a valid Ed25519 public key")]
    InvalidSigningKey,
    /// A key field has the wrong length.
    #[error("{what} is {len} bytes long, expected {expected}")]
    WrongLength {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length it must have.
        expected: usize,
    },
}

/// Identity multihash (code 0, length 36) of libp2p's protobuf public key
/// (field 1 = Ed25519, field 2 = 32 bytes of key).
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
const PEER_ID_LEN: usize = PEER_ID_PREFIX.len() + 32;

/// An Ed25519 public key that is known to decode to a curve point.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SigningPublicKey([u8; 32]);

impl SigningPublicKey {
    /// Checks that `bytes` are an Ed25519 point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        VerificationKey::try_from(bytes).map_err(|_| KeyError::InvalidSigningKey)?;
        Ok(Self(bytes))
    }

    /// Wraps bytes without the curve-point check, for looking up keys
    /// that are only accepted if already known.
    pub(crate) fn unchecked(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses a field of a decoded message.
    pub fn from_slice(bytes: &[u8], what: &'static str) -> Result<Self, KeyError> {
        Self::from_bytes(array32(bytes, what)?)
    }

    /// Like [`from_slice`](Self::from_slice), without the curve-point
    /// check, for bytes that passed it before (see `Entry::decode_known`).
    pub(crate) fn known_slice(bytes: &[u8], what: &'static str) -> Result<Self, KeyError> {
        Ok(Self(array32(bytes, what)?))
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The libp2p peer id of this key: the identity multihash of libp2p's
    /// protobuf encoding of an Ed25519 public key.
    // The bytes follow a fixed layout, so parsing them cannot fail; the
    // `peer_id_comes_from_the_same_key` test checks the layout against
    // libp2p's own conversion.
    #[allow(clippy::expect_used)]
    pub fn peer_id(&self) -> PeerId {
        let mut bytes = [0u8; PEER_ID_LEN];
        bytes[..PEER_ID_PREFIX.len()].copy_from_slice(&PEER_ID_PREFIX);
        bytes[PEER_ID_PREFIX.len()..].copy_from_slice(&self.0);
        PeerId::from_bytes(&bytes).expect("identity multihash of a fixed-size key")
    }

    /// The key inside a peer id made by [`peer_id`](Self::peer_id), if
    /// `peer` is one (an Ed25519 key that is a valid point).
    pub fn from_peer_id(peer: &PeerId) -> Option<Self> {
        let bytes = peer.to_bytes();
        let key = bytes.strip_prefix(&PEER_ID_PREFIX)?;
        Self::from_bytes(key.try_into().ok()?).ok()
    }

    /// Verifies `signature` over `tag || message` (ZIP 215 rules, the same
    /// rules batch verification uses, so single and batch never disagree).
    pub fn verify(&self, tag: &[u8], message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerificationKey::try_from(self.0) else {
            return false;
        };
        key.verify(&Signature::from(*signature), &domain::tagged(tag, message)).is_ok()
    }

    /// Why this key cannot be trusted as an identity, if it cannot: a
    /// point of small order (it verifies signatures no one made), or a
    /// non-canonical encoding of a point (two byte strings, one key).
    pub fn weakness(&self) -> Option<&'static str> {
        let Some(point) = curve25519_dalek::edwards::CompressedEdwardsY(self.0).decompress() else {
            return Some("not a curve point");
        };
        if point.is_small_order() {
            return Some("a point of small order");
        }
        if point.compress().to_bytes() != self.0 {
            return Some("a non-canonical encoding");
        }
        None
    }

    pub(crate) fn zebra_bytes(&self) -> VerificationKeyBytes {
        VerificationKeyBytes::from(self.0)
    }
}

impl fmt::Debug for SigningPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningPublicKey({})", bs58::encode(self.0).into_string())
    }
}

/// An X25519 public key: a Noise static key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoisePublicKey([u8; 32]);

impl NoisePublicKey {
    /// Wraps raw key bytes (every 32-byte string is an X25519 public key).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Whether Diffie-Hellman with this key depends on our secret: a point
    /// of small order gives the same (all-zero) shared secret to everyone,
    /// so a handshake with it would prove nothing.
    pub fn is_contributory(&self) -> bool {
        // A point on the curve (every honest key is one) maps to an Edwards
        // point; a clamped scalar is a multiple of the cofactor and not of
        // the group order, so Diffie-Hellman gives zero exactly when that
        // point has small order. Checking that costs a few field operations
        // where the ladder below costs a full scalar multiplication.
        match curve25519_dalek::montgomery::MontgomeryPoint(self.0).to_edwards(0) {
            Some(point) => !point.is_small_order(),
            None => self.is_contributory_by_dh(),
        }
    }

    /// The same question, answered by Diffie-Hellman itself: any clamped
    /// scalar sends a small-order point (in any encoding, on the curve or
    /// its twist) to zero.
    fn is_contributory_by_dh(&self) -> bool {
        x25519_dalek::x25519([0x5a; 32], self.0) != [0; 32]
    }

    /// Parses a field of a decoded message.
    pub fn from_slice(bytes: &[u8], what: &'static str) -> Result<Self, KeyError> {
        Ok(Self(array32(bytes, what)?))
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for NoisePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for NoisePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoisePublicKey({self})")
    }
}

/// The public keys the ledger holds for an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKeys {
    /// Ed25519: signs entries and handshakes.
    pub signing: SigningPublicKey,
    /// X25519: the Noise static key.
    pub noise: NoisePublicKey,
}

/// A secret identity: both private keys. Never printed, zeroed on drop.
pub struct Identity {
    kind: IdentityKind,
    signing: SigningKey,
    noise: StaticSecret,
    public: PublicKeys,
    /// Signature by the signing key over the Noise key; made once, sent in
    /// every handshake and card.
    noise_key_signature: [u8; 64],
}

impl Identity {
    /// Makes fresh keys from the operating system's random source.
    pub fn generate(kind: IdentityKind) -> Self {
        let signing = SigningKey::new(OsRng);
        let noise = StaticSecret::random_from_rng(OsRng);
        Self::from_keys(kind, signing, noise)
    }

    /// Rebuilds an identity from its two 32-byte secrets.
    pub fn from_secrets(kind: IdentityKind, signing_seed: [u8; 32], noise_secret: [u8; 32]) -> Self {
        Self::from_keys(kind, SigningKey::from(signing_seed), StaticSecret::from(noise_secret))
    }

    fn from_keys(kind: IdentityKind, signing: SigningKey, noise: StaticSecret) -> Self {
        let verification = VerificationKey::from(&signing);
        let public = PublicKeys {
            signing: SigningPublicKey(verification.into()),
            noise: NoisePublicKey(x25519_dalek::PublicKey::from(&noise).to_bytes()),
        };
        let message = domain::tagged(domain::NOISE_KEY, public.noise.as_bytes());
        let noise_key_signature = signing.sign(&message).into();
        Self { kind, signing, noise, public, noise_key_signature }
    }

    /// Device, app or registrar.
    pub fn kind(&self) -> IdentityKind {
        self.kind
    }

    /// The DID naming this identity's signing key.
    pub fn did(&self) -> Did {
        Did::from_signing_key(self.public.signing)
    }

    /// The libp2p peer id of the signing key.
    pub fn peer_id(&self) -> PeerId {
        self.public.signing.peer_id()
    }

    /// The Ed25519 public key.
    pub fn signing_key(&self) -> SigningPublicKey {
        self.public.signing
    }

    /// The X25519 public key.
    pub fn noise_key(&self) -> NoisePublicKey {
        self.public.noise
    }

    /// Both public keys.
    pub fn public_keys(&self) -> PublicKeys {
        self.public
    }

    /// Signs `tag || message`. Tags come from [`crate::domain`].
    pub fn sign(&self, tag: &[u8], message: &[u8]) -> [u8; 64] {
        self.signing.sign(&domain::tagged(tag, message)).into()
    }

    /// The signing seed, for writing a key file.
    pub(crate) fn signing_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.into())
    }

    /// The Noise static secret, for the Noise handshake and key files.
    pub fn noise_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.noise.to_bytes())
    }

    /// Signature by the signing key over `NOISE_KEY || noise key`: proves one
    /// holder owns both keys.
    pub fn noise_key_signature(&self) -> [u8; 64] {
        self.noise_key_signature
    }

    /// This identity's signing key as a libp2p keypair (for the overlay's
    /// own protocols, such as identify).
    // A 32-byte seed is exactly what ed25519_from_bytes takes, so it cannot
    // fail.
    #[allow(clippy::expect_used)]
    pub fn libp2p_keypair(&self) -> libp2p_identity::Keypair {
        let mut seed = self.signing_secret();
        libp2p_identity::Keypair::ed25519_from_bytes(&mut seed[..]).expect("a 32-byte Ed25519 seed")
    }

    /// The public card for registering this identity.
    pub fn card(&self) -> Card {
        Card::for_identity(self)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("kind", &self.kind).field("did", &self.did()).finish_non_exhaustive()
    }
}

fn array32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], KeyError> {
    bytes.try_into().map_err(|_| KeyError::WrongLength { what, len: bytes.len(), expected: 32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_bound_to_their_domain() {
        let id = Identity::generate(IdentityKind::Device);
        let sig = id.sign(domain::LEDGER_ENTRY, b"hello");
        assert!(id.signing_key().verify(domain::LEDGER_ENTRY, b"hello", &sig));
        assert!(!id.signing_key().verify(domain::NOISE_KEY, b"hello", &sig));
        assert!(!id.signing_key().verify(domain::LEDGER_ENTRY, b"hellO", &sig));
    }

    #[test]
    fn libp2p_keypair_has_our_peer_id() {
        let id = Identity::generate(IdentityKind::Device);
        assert_eq!(id.libp2p_keypair().public().to_peer_id(), id.peer_id());
    }

    #[test]
    fn same_secrets_give_same_identity() {
        let a = Identity::from_secrets(IdentityKind::App, [5; 32], [6; 32]);
        let b = Identity::from_secrets(IdentityKind::App, [5; 32], [6; 32]);
        assert_eq!(a.public_keys(), b.public_keys());
        assert_eq!(a.did(), b.did());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let id = Identity::from_secrets(IdentityKind::Device, [0xab; 32], [0xcd; 32]);
        let shown = format!("{id:?}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains("did:carrier:"));
    }

    /// The fast contributory check agrees with Diffie-Hellman itself on
    /// every small-order point (each of the eight torsion points, in
    /// canonical and non-canonical encodings, with the top bit set and
    /// not), on points of the twist, and on random bytes.
    #[test]
    fn the_fast_contributory_check_agrees_with_diffie_hellman() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let mut cases: Vec<[u8; 32]> = Vec::new();
        for point in EIGHT_TORSION {
            let u = point.to_montgomery().to_bytes();
            cases.push(u);
            let mut high = u;
            high[31] |= 0x80;
            cases.push(high);
        }
        // p - 1, p, p + 1 (0 and 1 spelled non-canonically), 2^255 - 1.
        for low in [0xec, 0xed, 0xee, 0xff] {
            let mut bytes = [0xff; 32];
            bytes[0] = low;
            bytes[31] = 0x7f;
            cases.push(bytes);
        }
        let mut seed = [0u8; 32];
        for i in 0..4000u32 {
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let hashed: [u8; 32] =
                sha2::Digest::finalize(sha2::Digest::chain_update(<sha2::Sha256 as sha2::Digest>::new(), seed)).into();
            cases.push(hashed);
            cases.push(Identity::from_secrets(IdentityKind::Device, hashed, hashed).noise_key().0);
        }
        let mut small = 0;
        for bytes in cases {
            let key = NoisePublicKey(bytes);
            assert_eq!(key.is_contributory(), key.is_contributory_by_dh(), "{bytes:02x?}");
            small += usize::from(!key.is_contributory());
        }
        assert!(small >= 16, "the torsion points must be caught: {small}");
    }
}
