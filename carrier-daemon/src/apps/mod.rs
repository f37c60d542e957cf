//! The app socket: a Unix socket (mode 0660: the daemon's user and group;
//! in system mode, group `carrier`) on which local apps send and receive
//! messages and open streams through this daemon.
//!
//! ```text
//!  accept ─▶ auth (challenge, hello signed by the app key, ledger check)
//!         ├─ session:        session::run (requests ⇄ events) until closed
//!         ├─ open_stream:    Messaging::open_stream ─▶ StreamReady ─▶ raw bytes
//!         └─ accept_stream:  hand the connection to the stream that waits for it
//! ```
//!
//! Every client has its own tasks: a malformed or oversized frame closes
//! that client with an error event, and nobody else notices.

mod auth;
mod registry;
mod session;

use std::path::Path;
use std::sync::Arc;

use carrier_proto::identity::Did;
use carrier_proto::messaging::STREAM_SOCKET_BUFFER;
use carrier_proto::pb::{self, AppErrorCode, app_event::Event, app_hello::Purpose};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

pub(crate) use registry::{AcceptedConnection, Apps, Incoming};

use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::messaging::{FRAME_OVERHEAD, Messaging, StreamEnd, app_stream_join};

/// Why an app client was closed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AppSocketError {
    /// The connection or a frame failed.
    #[error(transparent)]
    Framed(#[from] FramedError),
    /// The app did not prove it is a registered, active app of this device.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// A request out of place.
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// Binds the app socket at `path` with mode 0660 (the daemon's user and
/// group), replacing a stale socket left by a daemon that did not stop cleanly.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    crate::paths::bind_socket(path, 0o660)
}

/// Accepts app clients until the listener fails; each is served in its own task.
pub async fn serve(listener: UnixListener, messaging: Arc<Messaging>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let messaging = Arc::clone(&messaging);
                tokio::spawn(async move {
                    if let Err(error) = serve_client(stream, messaging).await {
                        tracing::debug!(%error, "app client closed");
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "app socket accept failed"),
        }
    }
}

/// The framed halves of one app connection.
pub(crate) type Reader = FrameReader<OwnedReadHalf>;
pub(crate) type Writer = FrameWriter<OwnedWriteHalf>;

async fn serve_client(stream: UnixStream, messaging: Arc<Messaging>) -> Result<(), AppSocketError> {
    let max_frame = messaging.config.max_message + FRAME_OVERHEAD;
    let (read, write) = stream.into_split();
    let (mut reader, mut writer) = (FrameReader::new(read, max_frame), FrameWriter::new(write, max_frame));
    let hello = match auth::authenticate(&messaging, &mut reader, &mut writer).await {
        Ok(hello) => hello,
        Err(error) => {
            let code = match error {
                AppSocketError::Unauthenticated(_) => AppErrorCode::Unauthenticated,
                _ => AppErrorCode::BadRequest,
            };
            let _ = writer.send(&error_event(0, code, error.to_string())).await;
            return Err(error);
        }
    };
    let span = tracing::debug_span!("app", app = %hello.app);
    let serve = async move {
        match hello.purpose {
            Purpose::Session(_) => session::run(messaging, hello.app, reader, writer).await,
            Purpose::OpenStream(open) => open_stream(&messaging, hello.app, open, reader, writer).await,
            Purpose::AcceptStream(accept) => {
                let (read, early) = reader.into_parts();
                let stream =
                    read.reunite(writer.into_inner()).map_err(|e| FramedError::Io(std::io::Error::other(e)))?;
                widen_stream_socket(&stream);
                let connection = AcceptedConnection { stream, leftover: early };
                match messaging.apps().take_stream(&hello.app, accept.token, connection) {
                    Ok(()) => Ok(()),
                    Err(connection) => {
                        let (_, write) = connection.stream.into_split();
                        let mut writer = FrameWriter::new(write, max_frame);
                        let message = format!("no stream waits for token {} (expired or not yours)", accept.token);
                        writer.send(&error_event(0, AppErrorCode::UnknownToken, message.clone())).await?;
                        Err(AppSocketError::BadRequest(message))
                    }
                }
            }
        }
    };
    tracing::Instrument::instrument(serve, span).await
}

async fn open_stream(
    messaging: &Messaging,
    app: Did,
    open: pb::OpenStream,
    reader: Reader,
    mut writer: Writer,
) -> Result<(), AppSocketError> {
    let service = open.service.clone();
    let opened = match Did::parse(&open.to) {
        Ok(to) => messaging.open_stream(app, to, open.service).await.map(|end| (to, end)),
        Err(e) => Err(crate::messaging::Failure::new(pb::Outcome::UnknownRecipient, format!("{:?}: {e}", open.to))),
    };
    let (to, end) = match opened {
        Ok(opened) => opened,
        Err(failure) => {
            let mut event = error_event(0, AppErrorCode::StreamFailed, failure.detail.clone());
            if let Some(Event::Error(error)) = &mut event.event {
                error.outcome = failure.outcome as i32;
            }
            writer.send(&event).await?;
            return Ok(());
        }
    };
    let device = messaging.host_of(&to).map(|d| d.to_string()).unwrap_or_default();
    let ready = pb::StreamReady { peer_app: to.to_string(), peer_device: device, service: service.clone() };
    writer.send(&pb::AppEvent { id: 0, event: Some(Event::StreamReady(ready)) }).await?;
    let (read, early) = reader.into_parts();
    let ours = read.reunite(writer.into_inner()).map_err(|e| FramedError::Io(std::io::Error::other(e)))?;
    widen_stream_socket(&ours);
    match end {
        StreamEnd::Remote(theirs, their_early) => app_stream_join(ours, early, theirs, their_early).await,
        StreamEnd::Local(mut theirs) => {
            // Tell the accepting app who opened it, then join the two apps.
            announce_ready(&mut theirs.stream, app, messaging.device(), service).await.map_err(FramedError::Io)?;
            app_stream_join(ours, early, theirs.stream, theirs.leftover).await
        }
    }
    Ok(())
}

/// Tells an app that took a stream who is at the other end; raw bytes follow.
pub(crate) async fn announce_ready(
    stream: &mut UnixStream,
    peer_app: Did,
    peer_device: Did,
    service: String,
) -> std::io::Result<()> {
    let ready = pb::StreamReady { peer_app: peer_app.to_string(), peer_device: peer_device.to_string(), service };
    let event = pb::AppEvent { id: 0, event: Some(Event::StreamReady(ready)) };
    let frame = carrier_proto::frame::encode(&prost::Message::encode_to_vec(&event));
    tokio::io::AsyncWriteExt::write_all(stream, &frame).await
}

/// Gives a connection that carries a stream's raw bytes a larger send
/// buffer. Best effort: the system may cap it, and nothing depends on it.
pub(crate) fn widen_stream_socket(stream: &UnixStream) {
    let _ = socket2::SockRef::from(stream).set_send_buffer_size(STREAM_SOCKET_BUFFER);
}

/// An error event for the app.
pub(crate) fn error_event(id: u64, code: AppErrorCode, message: String) -> pb::AppEvent {
    let error = pb::AppError { code: code as i32, message, outcome: 0 };
    pb::AppEvent { id, event: Some(Event::Error(error)) }
}
