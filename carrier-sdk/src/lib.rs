//! Client library for apps that talk through their local Carrier daemon.
//!
//! An app on Carrier has an identity of its own: an Ed25519 key and an
//! X25519 Noise key, made on first use and kept (mode 0600) in the app's own
//! data directory. The device that hosts the app registers it on the ledger
//! from the app's card; from then on the app is addressed by its DID.
//!
//! ```text
//!   app ──AppIdentity::load_or_create──▶ <app data dir>/app.key (0600)
//!        └─ card() ──▶ admin/device: carrierctl ledger register-app …
//! ```
//!
//! ```
//! # fn main() -> Result<(), carrier_sdk::SdkError> {
//! # let dir = std::env::temp_dir().join(format!("carrier-sdk-doc-{}", std::process::id()));
//! use carrier_sdk::AppIdentity;
//!
//! let app = AppIdentity::load_or_create(&dir)?;
//! println!("my DID is {}", app.did());
//! println!("register me with: carrierctl ledger register-app --name chat {}", app.card());
//! // The same directory gives back the same identity.
//! assert_eq!(AppIdentity::load_or_create(&dir)?.did(), app.did());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use carrier_proto::identity::{Card, Did, Identity, IdentityKind};
use carrier_proto::keystore::{self, KeyStoreError};

/// File name of the app key inside the app's data directory.
pub const APP_KEY_FILE: &str = "app.key";

/// What went wrong in the SDK.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The app's key file could not be created or loaded.
    #[error("app identity: {0}")]
    Identity(#[from] KeyStoreError),
    /// No data directory could be found for the app.
    #[error("cannot find a data directory for app {0:?}; pass one explicitly")]
    NoDataDir(String),
}

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
}
