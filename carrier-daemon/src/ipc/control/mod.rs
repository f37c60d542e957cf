//! The control socket: a Unix socket (mode 0600, owner only) on which
//! `carrierctl` asks the running daemon for its status, peers, routes and
//! ledger, and tells it to connect, disconnect or take new ledger entries.
//!
//! ```text
//!  accept ─▶ same uid? ─▶ Connection::read ─▶ handler::answer ─▶ Connection::write
//! ```
//!
//! Every client has its own task: a malformed or oversized frame closes that
//! client with an error message, and nobody else notices.

mod connection;
mod handler;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use carrier_proto::pb;
use tokio::net::UnixListener;

pub use connection::{Connection, ConnectionError, MAX_FRAME};

use crate::tasks::Tasks;
pub use handler::{ControlError, Handler};

/// Binds the control socket at `path` with mode 0600, replacing a stale
/// socket left by a daemon that did not stop cleanly.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    super::bind_socket(path, 0o600)
}

/// Accepts clients until `accepting` stops; each is served in its own task
/// of `handlers`, which ends when the client closes or the daemon stops.
pub fn serve(listener: UnixListener, path: PathBuf, handler: Arc<Handler>, accepting: &Tasks, handlers: &Tasks) {
    let (stop, handlers) = (accepting.clone(), handlers.clone());
    accepting.spawn(async move { accept(listener, path, handler, stop, handlers).await });
}

async fn accept(listener: UnixListener, path: PathBuf, handler: Arc<Handler>, accepting: Tasks, handlers: Tasks) {
    // The socket file belongs to whoever runs the daemon; only that uid may
    // talk to it (the mode already says so; this also covers the moment
    // between bind and chmod, and file systems that ignore socket modes).
    let owner = std::fs::metadata(&path).map(|m| m.uid()).ok();
    loop {
        let accepted = tokio::select! {
            _ = accepting.stopping() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "control socket accept failed");
                continue;
            }
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if owner.is_none() || uid != owner {
            tracing::warn!(?uid, "refused a control client of another user");
            continue;
        }
        let handler = Arc::clone(&handler);
        handlers.spawn_until_stop(async move { serve_client(Connection::new(stream), handler).await });
    }
}

async fn serve_client(mut connection: Connection, handler: Arc<Handler>) {
    loop {
        let request: pb::ControlRequest = match connection.read().await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "closing control client");
                let reply = pb::ControlResponse {
                    id: 0,
                    response: Some(pb::control_response::Response::Error(format!("{error}; closing this connection"))),
                };
                let _ = connection.write(&reply).await;
                return;
            }
        };
        if let Some(pb::control_request::Request::Watch(_)) = request.request {
            return handler.watch(&mut connection, request.id).await;
        }
        let reply = handler.answer(request).await;
        if connection.write(&reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
