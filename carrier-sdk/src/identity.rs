//! The app's own identity: an Ed25519 key and an X25519 Noise key, made on
//! first use and kept (mode 0600) in the app's data directory.

use std::path::{Path, PathBuf};

use carrier_proto::identity::{Card, Did, Identity, IdentityKind};
use carrier_proto::keystore;
use carrier_proto::ledger::{Consent, EntryHash};

use crate::SdkError;

/// File name of the app key inside the app's data directory.
pub const APP_KEY_FILE: &str = "app.key";

/// An app's identity, kept in its data directory.
#[derive(Debug)]
pub struct AppIdentity {
    identity: Identity,
    key_file: PathBuf,
}

impl AppIdentity {
    /// Loads the app key in `dir`, or makes one on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, SdkError> {
        let key_file = dir.join(APP_KEY_FILE);
        let (identity, created) = keystore::load_or_create(&key_file, IdentityKind::App)?;
        if created {
            announce_new_identity(&key_file, &identity);
        }
        Ok(Self { identity, key_file })
    }

    /// The default data directory for an app named `app_name` (on Linux
    /// `~/.local/share/<app_name>/carrier`).
    pub fn default_dir(app_name: &str) -> Result<PathBuf, SdkError> {
        directories::ProjectDirs::from("", "", app_name)
            .map(|dirs| dirs.data_dir().join("carrier"))
            .ok_or_else(|| SdkError::NoDataDir(app_name.to_owned()))
    }

    /// The app's DID, by which other apps address it.
    pub fn did(&self) -> Did {
        self.identity.did()
    }

    /// The card its hosting device registers it with.
    pub fn card(&self) -> Card {
        self.identity.card()
    }

    /// This app's consent to be hosted by `device` in the network whose id
    /// is `network` (64 hex digits, as `carrierctl status` shows it). The
    /// device's owner registers the app with it and the card:
    /// `carrierctl ledger register-app --consent CONSENT CARD`. No other
    /// device can register the app with it.
    pub fn consent(&self, device: &Did, network: &str) -> Result<Consent, SdkError> {
        let network = EntryHash::from_hex(network)
            .ok_or_else(|| SdkError::InvalidArgument(format!("{network:?} is not a network id (64 hex digits)")))?;
        Ok(Consent::sign(&self.identity, device, &network))
    }

    /// The key, for signing the daemon's challenge.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Where the key is kept.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }
}

/// The SDK does not impose a logging framework on apps; a new identity is the
/// one event worth telling the developer about, on stderr in debug builds.
fn announce_new_identity(key_file: &Path, identity: &Identity) {
    if cfg!(debug_assertions) {
        eprintln!("carrier-sdk: created app identity {} in {}", identity.did(), key_file.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carrier_proto::keystore::KeyStoreError;

    #[test]
    fn creates_once_and_keeps_the_identity() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("chat");
        let first = AppIdentity::load_or_create(&dir).unwrap();
        let second = AppIdentity::load_or_create(&dir).unwrap();
        assert_eq!(first.did(), second.did());
        assert_eq!(first.card().kind(), IdentityKind::App);
        assert_eq!(first.card().did(), first.did());
    }

    #[test]
    fn refuses_a_device_key_in_place_of_an_app_key() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        keystore::create(&dir.join(APP_KEY_FILE), &Identity::generate(IdentityKind::Device)).unwrap();
        let err = AppIdentity::load_or_create(dir).unwrap_err();
        assert!(matches!(err, SdkError::Identity(KeyStoreError::WrongKind { .. })), "{err}");
    }

    #[test]
    fn consents_to_one_device_in_one_network() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppIdentity::load_or_create(dir.path()).unwrap();
        let device = Identity::generate(IdentityKind::Device).did();
        let network = "ab".repeat(32);
        let consent = app.consent(&device, &network).unwrap();
        let id = EntryHash::from_hex(&network).unwrap();
        assert!(consent.verify(&app.did().signing_key(), &device, &id));
        assert!(!consent.verify(&app.did().signing_key(), &Identity::generate(IdentityKind::Device).did(), &id));
        assert!(matches!(app.consent(&device, "not hex"), Err(SdkError::InvalidArgument(_))));
    }
}
