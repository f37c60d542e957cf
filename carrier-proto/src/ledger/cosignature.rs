//! C2SP tlog-cosignature (`cosignature/v1`, c2sp.org/tlog-cosignature):
//! a timestamped Ed25519 signature over a checkpoint, made by a witness (or
//! by the log itself, to date its checkpoint).
//!
//! ```text
//! signed message:  "cosignature/v1\n" "time <unix seconds>\n" <checkpoint note text>
//! note line:       — <name> base64(key id [4] || time, u64 big-endian [8] || Ed25519 signature [64])
//! key id:          SHA-256(<name> || "\n" || 0x04 || public key)[..4]
//! verifier key:    <name>+<key id, 8 hex digits>+base64(0x04 || public key)
//! ```
//!
//! A cosigner states that, as of its time, the largest tree of this log it
//! has seen is the one in the note. Witness keys are named in the genesis
//! as [`WitnessKey`]s; this module only signs and checks single lines.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::identity::{Identity, SigningPublicKey};

/// Signed-note signature type of a `cosignature/v1` key.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Longest witness name, in bytes.
pub const MAX_WITNESS_NAME: usize = 64;
/// Bytes a cosignature line carries after its key id: time and signature.
pub(super) const COSIGNATURE_LEN: usize = 8 + 64;

/// Why a witness verifier key was not accepted.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessKeyError {
    /// Not `name+id+key`.
    #[error("a witness key is name+keyid+base64key (as `carrierctl keygen --kind witness` prints it): {0}")]
    Format(&'static str),
    /// The name is empty, too long, or holds a space or a '+'.
    #[error("witness name {0:?} must be 1 to {MAX_WITNESS_NAME} bytes with no spaces or '+'")]
    Name(String),
    /// Not a cosignature/v1 Ed25519 key.
    #[error("the key is not a cosignature/v1 Ed25519 key (type 0x04)")]
    NotCosignatureKey,
    /// The key id does not match the name and key.
    #[error("the key id does not match the name and key")]
    KeyId,
    /// The key itself is unusable.
    #[error("the witness key is unusable: {0}")]
    Key(String),
}

/// A witness as the genesis names it: a key name and an Ed25519 key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WitnessKey {
    name: String,
    key: SigningPublicKey,
}

impl fmt::Debug for WitnessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WitnessKey({})", self.name)
    }
}

impl fmt::Display for WitnessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.vkey())
    }
}

/// True if `name` may name a key in a signed note (and is short enough).
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_WITNESS_NAME && signed_note::is_key_name_valid(name)
}

impl WitnessKey {
    /// A witness named `name` with `key`.
    pub fn new(name: &str, key: SigningPublicKey) -> Result<Self, WitnessKeyError> {
        if !valid_name(name) {
            return Err(WitnessKeyError::Name(name.chars().take(MAX_WITNESS_NAME + 8).collect()));
        }
        Ok(Self { name: name.to_owned(), key })
    }

    /// A witness named by its key as a DID (`did:carrier:z…`: no spaces or
    /// '+', at most 60 bytes, so always a valid name).
    pub fn of_did(key: SigningPublicKey) -> Self {
        Self { name: crate::identity::Did::from_signing_key(key).to_string(), key }
    }

    /// Its name in notes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its Ed25519 key.
    pub fn key(&self) -> SigningPublicKey {
        self.key
    }

    /// Its signed-note key id.
    pub fn key_id(&self) -> u32 {
        key_id(&self.name, &self.key)
    }

    /// The C2SP verifier key text.
    pub fn vkey(&self) -> String {
        let mut encoded = vec![ALG_COSIGNATURE_V1];
        encoded.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id(), BASE64.encode(encoded))
    }

    /// Reads a verifier key made by [`vkey`](Self::vkey).
    pub fn parse_vkey(text: &str) -> Result<Self, WitnessKeyError> {
        // Names hold no '+'; base64 may.
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(WitnessKeyError::Format("expected three parts"));
        };
        let encoded = BASE64.decode(key).map_err(|_| WitnessKeyError::Format("the key is not base64"))?;
        let Some((&ALG_COSIGNATURE_V1, raw)) = encoded.split_first() else {
            return Err(WitnessKeyError::NotCosignatureKey);
        };
        let raw: [u8; 32] = raw.try_into().map_err(|_| WitnessKeyError::NotCosignatureKey)?;
        let key = SigningPublicKey::from_bytes(raw).map_err(|e| WitnessKeyError::Key(e.to_string()))?;
        let witness = Self::new(name, key)?;
        if u32::from_str_radix(id, 16).ok() != Some(witness.key_id()) || id.len() != 8 {
            return Err(WitnessKeyError::KeyId);
        }
        Ok(witness)
    }
}

/// The signed-note key id of a cosignature/v1 key.
pub(super) fn key_id(name: &str, key: &SigningPublicKey) -> u32 {
    let mut encoded = vec![ALG_COSIGNATURE_V1];
    encoded.extend_from_slice(key.as_bytes());
    signed_note::key_id(name, &encoded)
}

/// The message a cosigner signs for `text` (a checkpoint note's text,
/// ending in a newline) at `time_s`.
pub(super) fn message(text: &str, time_s: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {time_s}\n{text}").into_bytes()
}

/// The bytes after the key id in a cosignature line: time and signature.
pub(super) fn sign(identity: &Identity, text: &str, time_s: u64) -> [u8; COSIGNATURE_LEN] {
    let signature = identity.sign(crate::domain::COSIGNATURE, &message(text, time_s));
    let mut out = [0u8; COSIGNATURE_LEN];
    out[..8].copy_from_slice(&time_s.to_be_bytes());
    out[8..].copy_from_slice(&signature);
    out
}

/// Checks the bytes after a cosignature line's key id against `key` and
/// `text`; returns the cosigner's time if the signature holds. A zero time
/// (which C2SP witnesses never send) or one past 2^63 - 1 is refused.
pub(super) fn verify(key: &SigningPublicKey, text: &str, bytes: &[u8]) -> Option<u64> {
    let bytes: &[u8; COSIGNATURE_LEN] = bytes.try_into().ok()?;
    let time_s = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    if time_s == 0 || time_s > i64::MAX as u64 {
        return None;
    }
    let signature: [u8; 64] = bytes[8..].try_into().ok()?;
    key.verify(crate::domain::COSIGNATURE, &message(text, time_s), &signature).then_some(time_s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::identity::IdentityKind;

    /// A vector made outside this code (Python `cryptography`, seed bytes
    /// 00..1f), with an extension line in the cosigned text.
    #[test]
    fn an_outside_vector_verifies() {
        let vkey = "witness.example/w1+e75f6532+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4";
        let witness = WitnessKey::parse_vkey(vkey).unwrap();
        assert_eq!(witness.vkey(), vkey);
        let text = "example.com/log\n5\nLXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE=\next-line\n";
        let line =
            "519lMgAAAABlU/EA10rsR1X0nnHMj2w7Rs0WdZeNgY5SG7zZG+Wq7BXXMDsk16gCkHApiSKHj9pSmJEw8cPvLG0T4yoOzlWQId26CA==";
        let bytes = BASE64.decode(line).unwrap();
        assert_eq!(u32::from_be_bytes(bytes[..4].try_into().unwrap()), witness.key_id());
        assert_eq!(verify(&witness.key(), text, &bytes[4..]), Some(1_700_000_000));
        // The extension line is signed: without it the signature fails.
        let three_lines = "example.com/log\n5\nLXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE=\n";
        assert_eq!(verify(&witness.key(), three_lines, &bytes[4..]), None);
    }

    #[test]
    fn signs_and_verifies_and_refuses_altered_lines() {
        let id = Identity::generate(IdentityKind::Log);
        let text = "carrier/00\n1\nAAAA\n";
        let bytes = sign(&id, text, 1234);
        assert_eq!(verify(&id.signing_key(), text, &bytes), Some(1234));
        let mut later = bytes;
        later[7] ^= 1;
        assert_eq!(verify(&id.signing_key(), text, &later), None, "the time is signed");
        assert_eq!(verify(&id.signing_key(), "carrier/00\n2\nAAAA\n", &bytes), None);
        assert_eq!(verify(&id.signing_key(), text, &bytes[1..]), None, "wrong length");
        let zero = sign(&id, text, 0);
        assert_eq!(verify(&id.signing_key(), text, &zero), None, "a zero time");
    }

    #[test]
    fn rejects_bad_verifier_keys() {
        let id = Identity::generate(IdentityKind::Log);
        let good = WitnessKey::new("w", id.signing_key()).unwrap().vkey();
        assert!(WitnessKey::parse_vkey(&good).is_ok());
        let mut parts: Vec<&str> = good.splitn(3, '+').collect();
        parts[1] = "00000000";
        assert_eq!(WitnessKey::parse_vkey(&parts.join("+")), Err(WitnessKeyError::KeyId));
        // A signed-note (type 0x01) key is not a cosignature key.
        let note_key = format!("w+{:08x}+{}", 0, BASE64.encode([&[1u8][..], id.signing_key().as_bytes()].concat()));
        assert_eq!(WitnessKey::parse_vkey(&note_key), Err(WitnessKeyError::NotCosignatureKey));
        assert!(matches!(WitnessKey::new("two words", id.signing_key()), Err(WitnessKeyError::Name(_))));
        assert!(matches!(WitnessKey::new(&"w".repeat(65), id.signing_key()), Err(WitnessKeyError::Name(_))));
        assert!(WitnessKey::parse_vkey("garbage").is_err());
    }
}
