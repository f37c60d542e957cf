//! Where the daemon keeps its files, and how its local sockets are made.
//!
//! User mode follows the platform's conventions through the `directories`
//! crate (on Linux `~/.config/carrier`, `~/.local/share/carrier`,
//! `$XDG_RUNTIME_DIR/carrier`); system mode uses the FHS paths a packaged
//! service runs with (`/etc/carrier`, `/var/lib/carrier`, `/run/carrier`).

use std::path::{Path, PathBuf};

/// File name of the device key inside the data directory.
pub const DEVICE_KEY_FILE: &str = "device.key";
/// File name of the device card inside the data directory.
pub const DEVICE_CARD_FILE: &str = "device.card";
/// Directory name of the embedded ledger inside the data directory.
pub const LEDGER_DIR: &str = "ledger";
/// File name of the peer cache inside the data directory.
pub const PEER_CACHE_FILE: &str = "peers.cache";
/// The message store (outbox, inbox, receipts) in the data directory.
pub const MESSAGE_STORE_FILE: &str = "messages.redb";
/// File (in the data directory) of the last checkpoint this daemon cosigned
/// as a witness.
pub const WITNESS_STATE_FILE: &str = "witness.state";
/// File name of the control socket inside the runtime directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// File name of the app socket inside the runtime directory.
pub const APP_SOCKET: &str = "app.sock";

/// Why no default directory could be found.
#[derive(Debug, thiserror::Error)]
#[error("cannot find a home directory for the default data directory; pass --data-dir")]
pub struct NoHomeDir;

/// User mode (a person runs the daemon) or system mode (a service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Paths under the user's home and runtime directories.
    User,
    /// FHS paths: /etc/carrier, /var/lib/carrier, /run/carrier.
    System,
}

/// The three places the daemon uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The configuration file.
    pub config_file: PathBuf,
    /// Identity and ledger.
    pub data_dir: PathBuf,
    /// Sockets.
    pub runtime_dir: PathBuf,
}

impl Paths {
    /// The default paths of `mode`.
    pub fn for_mode(mode: Mode) -> Result<Self, NoHomeDir> {
        match mode {
            Mode::System => Ok(Self {
                config_file: PathBuf::from("/etc/carrier/carrierd.toml"),
                data_dir: PathBuf::from("/var/lib/carrier"),
                runtime_dir: PathBuf::from("/run/carrier"),
            }),
            Mode::User => {
                let dirs = directories::ProjectDirs::from("", "", "carrier").ok_or(NoHomeDir)?;
                let data_dir = dirs.data_dir().to_owned();
                // Without $XDG_RUNTIME_DIR, sockets go beside the data.
                let runtime_dir = dirs.runtime_dir().map(Path::to_owned).unwrap_or_else(|| data_dir.join("run"));
                Ok(Self { config_file: dirs.config_dir().join("carrierd.toml"), data_dir, runtime_dir })
            }
        }
    }
}

/// The data directory: `explicit` if given, else the user-mode default.
pub fn data_dir(explicit: Option<&Path>) -> Result<PathBuf, NoHomeDir> {
    match explicit {
        Some(dir) => Ok(dir.to_owned()),
        None => Paths::for_mode(Mode::User).map(|paths| paths.data_dir),
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

    /// The routing table's peers, kept between runs.
    pub fn peer_cache(&self) -> PathBuf {
        self.root.join(PEER_CACHE_FILE)
    }

    /// The message store (outbox, inbox, receipts).
    pub fn message_store(&self) -> PathBuf {
        self.root.join(MESSAGE_STORE_FILE)
    }

    /// The embedded ledger's directory.
    pub fn ledger(&self) -> PathBuf {
        self.root.join(LEDGER_DIR)
    }

    /// What this daemon last cosigned as a witness.
    pub fn witness_state(&self) -> PathBuf {
        self.root.join(WITNESS_STATE_FILE)
    }
}

/// Makes `path` readable and writable by its owner only (0600): every file
/// the daemon keeps in its data directory holds what peers and apps sent
/// it, or keys.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Creates (or opens) `path` for reading and writing with mode 0600, and
/// narrows an existing file's mode to 0600.
pub fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
    make_private(path)?;
    Ok(file)
}
