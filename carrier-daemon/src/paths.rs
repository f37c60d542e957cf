//! Where the daemon keeps its files.
//!
//! User mode follows the platform's conventions through the
//! `directories` crate (on Linux `~/.local/share/carrier`); system mode uses
//! the FHS paths a packaged service runs with.

use std::path::{Path, PathBuf};

/// File name of the device key inside the data directory.
pub const DEVICE_KEY_FILE: &str = "device.key";
/// File name of the device card inside the data directory.
pub const DEVICE_CARD_FILE: &str = "device.card";
/// Directory name of the embedded ledger inside the data directory.
pub const LEDGER_DIR: &str = "ledger";

/// Why no default directory could be found.
#[derive(Debug, thiserror::Error)]
#[error("cannot find a home directory for the default data directory; pass --data-dir")]
pub struct NoHomeDir;

/// The data directory: `explicit` if given, else the user-mode default.
pub fn data_dir(explicit: Option<&Path>) -> Result<PathBuf, NoHomeDir> {
    match explicit {
        Some(dir) => Ok(dir.to_owned()),
        None => {
            directories::ProjectDirs::from("", "", "carrier").map(|dirs| dirs.data_dir().to_owned()).ok_or(NoHomeDir)
        }
    }
}

/// Files inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Wraps a data directory path.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The device's secret key file.
    pub fn device_key(&self) -> PathBuf {
        self.root.join(DEVICE_KEY_FILE)
    }

    /// The device's public card.
    pub fn device_card(&self) -> PathBuf {
        self.root.join(DEVICE_CARD_FILE)
    }

    /// The embedded ledger's directory.
    pub fn ledger(&self) -> PathBuf {
        self.root.join(LEDGER_DIR)
    }
}
