//! The app socket: a Unix socket (mode 0660: the daemon's user and group;
//! in system mode, group `carrier`) on which local apps send and receive
//! messages and open streams through this daemon.
//!
//! ```text
//!  accept ─▶ auth (challenge, hello signed by the app key, ledger check)
//!         ├─ session:        session::run (requests ⇄ events) until closed
//!         ├─ open_stream:    Delivery::open_stream ─▶ StreamReady ─▶ raw bytes
//!         └─ accept_stream:  StreamReady, then hand the connection to the
//!                            stream that waits for it
//! ```
//!
//! Every client has its own tasks: a malformed or oversized frame closes
//! that client with an error event, and nobody else notices.

mod auth;
mod session;
mod waiting;

use std::path::Path;
use std::sync::Arc;

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::messaging::STREAM_SOCKET_BUFFER;
use carrier_proto::pb::{self, AppErrorCode, app_event::Event, app_hello::Purpose};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

use crate::delivery::{Delivery, Parties, StreamEnd};
use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::observe::Counters;
use crate::protocols::Failure;
use crate::protocols::app_stream::{AppEnd, join};
use crate::tasks::Tasks;

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
    /// Evicted before its hello: too many connections were waiting.
    #[error("closed before the hello: more than {} connections were waiting to authenticate", waiting::MAX_WAITING)]
    Busy,
}

/// Binds the app socket at `path` with mode 0660 (the daemon's user and
/// group), replacing a stale socket left by a daemon that did not stop cleanly.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    super::bind_socket(path, 0o660)
}

/// Accepts app clients until `accepting` stops; each is served in its own
/// task of `handlers`, which ends when the client closes or the daemon stops.
pub fn serve(
    listener: UnixListener,
    delivery: Arc<Delivery>,
    counters: Arc<Counters>,
    accepting: &Tasks,
    handlers: &Tasks,
) {
    let (stop, handlers) = (accepting.clone(), handlers.clone());
    let waiting = Arc::new(waiting::Waiting::new(counters));
    accepting.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.stopping() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let (delivery, slot) = (Arc::clone(&delivery), waiting.admit());
                    handlers.spawn_until_stop(async move {
                        if let Err(error) = serve_client(stream, delivery, slot).await {
                            tracing::debug!(%error, "app client closed");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "app socket accept failed"),
            }
        }
    });
}

/// The framed halves of one app connection.
pub(crate) type Reader = FrameReader<OwnedReadHalf>;
pub(crate) type Writer = FrameWriter<OwnedWriteHalf>;

/// Largest frame before the hello: a hello is well under 1 KiB.
const HELLO_MAX_FRAME: usize = 4096;

async fn serve_client(
    stream: UnixStream,
    delivery: Arc<Delivery>,
    mut slot: waiting::Slot,
) -> Result<(), AppSocketError> {
    let max_frame = delivery.max_frame();
    let (read, write) = stream.into_split();
    let (mut reader, mut writer) = (FrameReader::new(read, HELLO_MAX_FRAME), FrameWriter::new(write, max_frame));
    // Authentication first: every connection gets its challenge before any
    // eviction, so what a client sees does not depend on scheduling.
    let authenticated = tokio::select! {
        biased;
        hello = auth::authenticate(&delivery, &mut reader, &mut writer) => hello,
        _ = slot.evicted() => Err(AppSocketError::Busy),
    };
    drop(slot);
    reader.set_max(max_frame);
    let hello = match authenticated {
        Ok(hello) => hello,
        Err(error) => {
            let code = match error {
                AppSocketError::Unauthenticated(_) => AppErrorCode::Unauthenticated,
                AppSocketError::Busy => AppErrorCode::Busy,
                _ => AppErrorCode::BadRequest,
            };
            let _ = writer.send(&error_event(0, code, error.to_string())).await;
            return Err(error);
        }
    };
    let span = tracing::debug_span!("app", app = %hello.app);
    let serve = async move {
        match hello.purpose {
            Purpose::Session(_) => session::run(delivery, hello.app, hello.key, reader, writer).await,
            Purpose::OpenStream(open) => open_stream(&delivery, hello.app, hello.key, open, reader, writer).await,
            Purpose::AcceptStream(accept) => {
                let Some(claim) = delivery.sessions().claim_stream(&hello.app, accept.token) else {
                    let message = format!("no stream waits for token {} (expired or not yours)", accept.token);
                    writer.send(&error_event(0, AppErrorCode::UnknownToken, message.clone())).await?;
                    return Err(AppSocketError::BadRequest(message));
                };
                // Tell the app who is at the other end; raw bytes follow.
                let ready = pb::StreamReady {
                    peer_app: claim.from_app.to_string(),
                    peer_device: claim.from_device.to_string(),
                    service: claim.service,
                };
                writer.send(&pb::AppEvent { id: 0, event: Some(Event::StreamReady(ready)) }).await?;
                // Tracked, so a revocation or rotation of either app cuts it.
                let Some(remote_key) = delivery.ledger().standing(&claim.from_app).map(|s| s.keys.signing) else {
                    return Ok(());
                };
                let parties = Parties {
                    local_app: hello.app,
                    local_key: hello.key,
                    remote_app: claim.from_app,
                    remote_device: claim.from_device,
                    remote_key,
                };
                let guard = delivery.track_stream(parties);
                let (stream, early) = into_stream(reader, writer)?;
                let end = AppEnd { io: Box::new(stream), early, cut: guard.cut(), tracked: Box::new(guard) };
                // The opener may have given up meanwhile: then the connection just closes.
                let _ = claim.deliver.send(end);
                Ok(())
            }
        }
    };
    tracing::Instrument::instrument(serve, span).await
}

async fn open_stream(
    delivery: &Delivery,
    app: Did,
    key: SigningPublicKey,
    open: pb::OpenStream,
    reader: Reader,
    mut writer: Writer,
) -> Result<(), AppSocketError> {
    let service = open.service.clone();
    let opened = match Did::parse(&open.to) {
        Ok(to) => delivery.open_stream(app, to, open.service).await.map(|end| (to, end)),
        Err(e) => Err(Failure::new(pb::Outcome::UnknownRecipient, format!("{:?}: {e}", open.to))),
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
    let (Ok(host), Some(remote_key)) = (delivery.host_of(&to), delivery.ledger().standing(&to).map(|s| s.keys.signing))
    else {
        return Ok(());
    };
    // Tracked, so a revocation or rotation of either app cuts it.
    let guard = delivery.track_stream(Parties {
        local_app: app,
        local_key: key,
        remote_app: to,
        remote_device: host,
        remote_key,
    });
    let ready = pb::StreamReady { peer_app: to.to_string(), peer_device: host.to_string(), service };
    writer.send(&pb::AppEvent { id: 0, event: Some(Event::StreamReady(ready)) }).await?;
    let (ours, early) = into_stream(reader, writer)?;
    let ours_cut = guard.cut();
    match end {
        StreamEnd::Remote(theirs, their_early) => join(ours, early, theirs, their_early, ours_cut.cancelled()).await,
        StreamEnd::Local(theirs) => {
            // Two apps here: either one's revocation cuts it.
            let theirs_cut = theirs.cut.clone();
            let cut = async move {
                tokio::select! {
                    () = ours_cut.cancelled() => {}
                    () = theirs_cut.cancelled() => {}
                }
            };
            join(ours, early, theirs.io, theirs.early, cut).await;
            drop(theirs.tracked);
        }
    }
    drop(guard);
    Ok(())
}

/// The connection behind a finished hello, for raw bytes from here on, and
/// the bytes that came after the hello. Its send buffer is widened (best
/// effort: the system may cap it, and nothing depends on it).
fn into_stream(reader: Reader, writer: Writer) -> Result<(UnixStream, Vec<u8>), FramedError> {
    let (read, early) = reader.into_parts();
    let stream = read.reunite(writer.into_inner()).map_err(|e| FramedError::Io(std::io::Error::other(e)))?;
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(STREAM_SOCKET_BUFFER);
    Ok((stream, early))
}

/// An error event for the app.
pub(crate) fn error_event(id: u64, code: AppErrorCode, message: String) -> pb::AppEvent {
    let error = pb::AppError { code: code as i32, message, outcome: 0 };
    pb::AppEvent { id, event: Some(Event::Error(error)) }
}
