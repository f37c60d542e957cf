//! Key files on disk: created with mode 0600, refused when anyone but the
//! owner can read them.
//!
//! This is the only filesystem code in `carrier-proto`. It lives here so the
//! daemon (device keys) and the SDK (app keys) share one implementation of
//! the rule; it is blocking `std::fs` and is called once at start-up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::identity::keyfile::{self, KeyFileError, MAX_KEY_FILE_SIZE};
use crate::identity::{Identity, IdentityKind};

/// Mode bits a key file must not have: any access for group or others.
const FORBIDDEN_MODE: u32 = 0o077;

/// Why a key file could not be created or loaded.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The operating system refused a file operation.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Creating a key where one exists already.
    #[error(
        "a key file already exists at {0}; refusing to overwrite it (move it away first if you really want a new identity)"
    )]
    Exists(PathBuf),
    /// No key file at the path.
    #[error("no key file at {0}")]
    Missing(PathBuf),
    /// Group or others may read the key file.
    #[error("key file {path} is readable by group or others (mode {mode:04o}); fix it with: chmod 600 {path}")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file's contents are not a key file.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why its bytes were refused.
        source: KeyFileError,
    },
    /// The key is of another kind than asked for.
    #[error("{path} holds a {found} key, but a {expected} key is needed here")]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// The kind asked for.
        expected: IdentityKind,
        /// The kind in the file.
        found: IdentityKind,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> KeyStoreError + 'a {
    move |source| KeyStoreError::Io { action, path: path.to_owned(), source }
}

/// Writes `identity` to a new key file at `path` (mode 0600), creating the
/// parent directory with mode 0700 if needed. Never overwrites: the file
/// appears whole or not at all.
pub fn create(path: &Path, identity: &Identity) -> Result<(), KeyStoreError> {
    if path.exists() {
        return Err(KeyStoreError::Exists(path.to_owned()));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error("creating directory", dir))?;

    let file_name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = write_new(&temp, &keyfile::encode(identity));
    let linked = written.and_then(|()| {
        // hard_link fails if `path` exists, so a racing writer never loses
        // its key to ours; the temp name is then removed either way.
        fs::hard_link(&temp, path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeyStoreError::Exists(path.to_owned()),
            _ => KeyStoreError::Io { action: "linking key file", path: path.to_owned(), source: e },
        })
    });
    let _ = fs::remove_file(&temp);
    linked?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("syncing directory", dir))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), KeyStoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("creating key file", path))?;
    file.write_all(bytes).map_err(io_error("writing key file", path))?;
    file.sync_all().map_err(io_error("syncing key file", path))
}

/// Loads the key file at `path`, refusing it if group or others can read it.
pub fn load(path: &Path) -> Result<Identity, KeyStoreError> {
    let mut file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => KeyStoreError::Missing(path.to_owned()),
        _ => KeyStoreError::Io { action: "opening key file", path: path.to_owned(), source: e },
    })?;
    let meta = file.metadata().map_err(io_error("reading key file metadata", path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & FORBIDDEN_MODE != 0 {
        return Err(KeyStoreError::InsecurePermissions { path: path.to_owned(), mode });
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    Read::by_ref(&mut file)
        .take(MAX_KEY_FILE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error("reading key file", path))?;
    keyfile::decode(&bytes).map_err(|source| KeyStoreError::Invalid { path: path.to_owned(), source })
}

/// Loads the key file at `path` and checks that it holds a `kind` key.
pub fn load_kind(path: &Path, kind: IdentityKind) -> Result<Identity, KeyStoreError> {
    let identity = load(path)?;
    if identity.kind() != kind {
        return Err(KeyStoreError::WrongKind { path: path.to_owned(), expected: kind, found: identity.kind() });
    }
    Ok(identity)
}

/// Loads the `kind` key at `path`, or makes and stores a new one if there is
/// no file. Returns whether it was created.
pub fn load_or_create(path: &Path, kind: IdentityKind) -> Result<(Identity, bool), KeyStoreError> {
    match load_kind(path, kind) {
        Err(KeyStoreError::Missing(_)) => {
            let identity = Identity::generate(kind);
            create(path, &identity)?;
            Ok((identity, true))
        }
        other => other.map(|identity| (identity, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "carrier-keystore-{}-{}",
            std::process::id(),
            Identity::generate(IdentityKind::App).did()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn creates_0600_and_loads_back() {
        let dir = temp_dir();
        let path = dir.join("keys/device.key");
        let id = Identity::generate(IdentityKind::Device);
        create(&path, &id).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(load(&path).unwrap().public_keys(), id.public_keys());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = temp_dir();
        let path = dir.join("device.key");
        let first = Identity::generate(IdentityKind::Device);
        create(&path, &first).unwrap();
        let err = create(&path, &Identity::generate(IdentityKind::Device)).unwrap_err();
        assert!(matches!(err, KeyStoreError::Exists(_)), "{err}");
        assert_eq!(load(&path).unwrap().did(), first.did());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_group_or_world_readable_files() {
        let dir = temp_dir();
        let path = dir.join("device.key");
        create(&path, &Identity::generate(IdentityKind::Device)).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = load(&path).unwrap_err();
            assert!(matches!(err, KeyStoreError::InsecurePermissions { .. }), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_missing_damaged_and_wrong_kind_files() {
        let dir = temp_dir();
        let path = dir.join("device.key");
        assert!(matches!(load(&path), Err(KeyStoreError::Missing(_))));
        write_new(&path, b"not a key").unwrap();
        assert!(matches!(load(&path), Err(KeyStoreError::Invalid { source: KeyFileError::NotAKeyFile, .. })));
        let app = dir.join("app.key");
        create(&app, &Identity::generate(IdentityKind::App)).unwrap();
        assert!(matches!(
            load_kind(&app, IdentityKind::Device),
            Err(KeyStoreError::WrongKind { found: IdentityKind::App, .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn load_or_create_creates_once() {
        let dir = temp_dir();
        let path = dir.join("app.key");
        let (first, created) = load_or_create(&path, IdentityKind::App).unwrap();
        assert!(created);
        let (second, created) = load_or_create(&path, IdentityKind::App).unwrap();
        assert!(!created);
        assert_eq!(first.did(), second.did());
        fs::remove_dir_all(dir).unwrap();
    }
}
