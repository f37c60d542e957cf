//! The local sockets: the only code that sees a `UnixStream`.
//!
//! - [`app`]: the app socket (0660) local apps message and stream through;
//! - [`control`]: the control socket (0600) `carrierctl` talks to.
//!
//! Both are served the mini-redis way: one accept loop (an owned task that
//! stops when the daemon stops accepting), one task per client, frames
//! through [`crate::framed`], and a misbehaving client closed alone with a
//! named error.

pub mod app;
pub mod control;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

/// Binds a Unix socket at `path` with `mode`, making its directory if
/// needed and replacing a stale socket left by a daemon that did not stop
/// cleanly; anything else at `path` is left alone and is an error.
pub fn bind_socket(path: &Path, mode: u32) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; refusing to replace it", path.display()),
            ));
        }
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}
