//! Key files: the on-disk form of a secret [`Identity`].
//!
//! Layout: the 8-byte magic `CARRKEY\n`, then a `pb::KeyFile` message whose
//! `version` says how to read the rest. This module only turns bytes into
//! identities and back; [`crate::keystore`] owns the file and its mode.

use prost::Message;
use zeroize::{Zeroize, Zeroizing};

use super::{Identity, IdentityKind, KeyError};
use crate::pb;

/// First bytes of every key file.
pub const MAGIC: &[u8; 8] = b"CARRKEY\n";
/// Key file version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest key file accepted; a real one is under 100 bytes.
pub const MAX_KEY_FILE_SIZE: usize = 1024;

/// Why bytes are not a usable key file.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The file does not start with the key file magic.
    #[error("not a Carrier key file (it does not start with the CARRKEY header)")]
    NotAKeyFile,
    /// The file is larger than any key file.
    #[error("key file is {0} bytes, larger than any key file ({MAX_KEY_FILE_SIZE})")]
    TooLarge(usize),
    /// The message after the magic does not decode.
    #[error("key file is damaged: {0}")]
    Decode(String),
    /// Written by a newer build.
    #[error("key file version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u32),
    /// The kind field is missing or unknown.
    #[error("key file does not say whether it is a device, app or registrar key")]
    UnknownKind,
    /// A secret has the wrong length.
    #[error("key file secret: {0}")]
    Key(#[from] KeyError),
}

/// Encodes `identity` as key file bytes (secret: keep them 0600).
pub fn encode(identity: &Identity) -> Zeroizing<Vec<u8>> {
    let mut message = pb::KeyFile {
        version: VERSION,
        kind: identity.kind().to_pb().into(),
        signing_secret: identity.signing_secret().to_vec(),
        noise_secret: identity.noise_secret().to_vec(),
    };
    let encoded = Zeroizing::new(message.encode_to_vec());
    message.signing_secret.zeroize();
    message.noise_secret.zeroize();
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAGIC.len() + encoded.len()));
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&encoded);
    bytes
}

/// Decodes key file bytes.
pub fn decode(bytes: &[u8]) -> Result<Identity, KeyFileError> {
    if bytes.len() > MAX_KEY_FILE_SIZE {
        return Err(KeyFileError::TooLarge(bytes.len()));
    }
    let body = bytes.strip_prefix(MAGIC.as_slice()).ok_or(KeyFileError::NotAKeyFile)?;
    let mut message = pb::KeyFile::decode(body).map_err(|e| KeyFileError::Decode(e.to_string()))?;
    let identity = identity_from(&message);
    message.signing_secret.zeroize();
    message.noise_secret.zeroize();
    identity
}

fn identity_from(message: &pb::KeyFile) -> Result<Identity, KeyFileError> {
    if message.version != VERSION {
        return Err(KeyFileError::UnsupportedVersion(message.version));
    }
    let kind = IdentityKind::from_pb(message.kind).ok_or(KeyFileError::UnknownKind)?;
    let signing = Zeroizing::new(secret(&message.signing_secret, "signing secret")?);
    let noise = Zeroizing::new(secret(&message.noise_secret, "noise secret")?);
    Ok(Identity::from_secrets(kind, *signing, *noise))
}

fn secret(bytes: &[u8], what: &'static str) -> Result<[u8; 32], KeyError> {
    bytes.try_into().map_err(|_| KeyError::WrongLength { what, len: bytes.len(), expected: 32 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_magic(message: &pb::KeyFile) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(message.encode_to_vec());
        bytes
    }

    fn sample() -> pb::KeyFile {
        pb::KeyFile {
            version: VERSION,
            kind: pb::IdentityKind::Device.into(),
            signing_secret: vec![1; 32],
            noise_secret: vec![2; 32],
        }
    }

    #[test]
    fn round_trips() {
        let id = Identity::generate(IdentityKind::Registrar);
        let back = decode(&encode(&id)).unwrap();
        assert_eq!(back.public_keys(), id.public_keys());
        assert_eq!(back.kind(), IdentityKind::Registrar);
    }

    #[test]
    fn rejects_malformed_files() {
        let mut newer = sample();
        newer.version = 9;
        let mut no_kind = sample();
        no_kind.kind = 42;
        let mut short = sample();
        short.noise_secret.truncate(31);
        assert_eq!(decode(b"hello").unwrap_err(), KeyFileError::NotAKeyFile);
        assert_eq!(decode(&[0; 2000]).unwrap_err(), KeyFileError::TooLarge(2000));
        assert!(matches!(decode(b"CARRKEY\n\xff\xff").unwrap_err(), KeyFileError::Decode(_)));
        assert_eq!(decode(&with_magic(&newer)).unwrap_err(), KeyFileError::UnsupportedVersion(9));
        assert_eq!(decode(&with_magic(&no_kind)).unwrap_err(), KeyFileError::UnknownKind);
        assert!(matches!(
            decode(&with_magic(&short)).unwrap_err(),
            KeyFileError::Key(KeyError::WrongLength { len: 31, .. })
        ));
        assert!(decode(&with_magic(&sample())).is_ok());
    }

    proptest! {
        #[test]
        fn round_trips_any_secrets(seed in any::<[u8; 32]>(), noise in any::<[u8; 32]>()) {
            let id = Identity::from_secrets(IdentityKind::App, seed, noise);
            let back = decode(&encode(&id)).unwrap();
            prop_assert_eq!(back.public_keys(), id.public_keys());
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut file = MAGIC.to_vec();
            file.extend(bytes);
            let _ = decode(&file);
        }
    }
}
