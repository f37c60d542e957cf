//! An app's consent to its host: the app's own signature over the DID of
//! the device that will host it and the network's id. A register-app entry
//! must carry it, so no device can adopt an app card another device
//! published, and a consent made for one network is worth nothing in another.
//!
//! Signed bytes: `carrier/v1/app-consent\0`, the host device's DID as UTF-8
//! text (`did:carrier:z…`), then the 32-byte network id (the genesis
//! entry's hash). Text form: `carrier-consent:` + base58btc of the 64-byte
//! signature.

use std::fmt;
use std::str::FromStr;

use super::EntryHash;
use crate::domain;
use crate::identity::{Did, Identity, SigningPublicKey};

/// Prefix of a consent's text form.
pub const CONSENT_PREFIX: &str = "carrier-consent:";

/// An app's signature over its host device and network.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Consent(pub [u8; 64]);

/// Why a consent's text does not parse.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    /// It does not start with `carrier-consent:`.
    #[error("a consent starts with {CONSENT_PREFIX:?}")]
    Prefix,
    /// The rest is not base58 of 64 bytes.
    #[error("a consent is base58 of 64 bytes after {CONSENT_PREFIX:?}")]
    Encoding,
}

fn message(device: &Did, network: &EntryHash) -> Vec<u8> {
    let mut bytes = device.to_string().into_bytes();
    bytes.extend_from_slice(&network.0);
    bytes
}

impl Consent {
    /// `app`'s consent to be hosted by `device` in network `network`.
    pub fn sign(app: &Identity, device: &Did, network: &EntryHash) -> Self {
        Self(app.sign(domain::APP_CONSENT, &message(device, network)))
    }

    /// Whether the app with signing key `app` gave this consent for
    /// `device` in `network`.
    pub fn verify(&self, app: &SigningPublicKey, device: &Did, network: &EntryHash) -> bool {
        app.verify(domain::APP_CONSENT, &message(device, network), &self.0)
    }
}

impl fmt::Display for Consent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{CONSENT_PREFIX}{}", bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for Consent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Consent({}…)", &self.to_string()[..CONSENT_PREFIX.len() + 8])
    }
}

impl FromStr for Consent {
    type Err = ConsentError;

    fn from_str(text: &str) -> Result<Self, ConsentError> {
        let encoded = text.trim().strip_prefix(CONSENT_PREFIX).ok_or(ConsentError::Prefix)?;
        let bytes = bs58::decode(encoded).into_vec().map_err(|_| ConsentError::Encoding)?;
        Ok(Self(bytes.try_into().map_err(|_| ConsentError::Encoding)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKind;

    #[test]
    fn a_consent_holds_only_for_its_app_device_and_network() {
        let (app, device, other) = (
            Identity::generate(IdentityKind::App),
            Identity::generate(IdentityKind::Device).did(),
            Identity::generate(IdentityKind::Device).did(),
        );
        let network = EntryHash([7; 32]);
        let consent = Consent::sign(&app, &device, &network);
        assert!(consent.verify(&app.signing_key(), &device, &network));
        assert!(!consent.verify(&app.signing_key(), &other, &network), "another device");
        assert!(!consent.verify(&app.signing_key(), &device, &EntryHash([8; 32])), "another network");
        let stranger = Identity::generate(IdentityKind::App);
        assert!(!consent.verify(&stranger.signing_key(), &device, &network), "another app");
        assert_eq!(consent.to_string().parse::<Consent>(), Ok(consent));
    }

    #[test]
    fn rejects_malformed_consent_text() {
        assert_eq!("carrier-card:z1".parse::<Consent>(), Err(ConsentError::Prefix));
        assert_eq!("carrier-consent:0OIl".parse::<Consent>(), Err(ConsentError::Encoding));
        assert_eq!("carrier-consent:2g".parse::<Consent>(), Err(ConsentError::Encoding), "too short");
    }
}
