//! App streams: [`AppStream`], a full-duplex byte stream to another app's
//! service, and [`Listener`], which takes the streams opened to one of
//! this app's services.
//!
//! Each stream is its own connection to the daemon, which joins it to one
//! QUIC stream to the other device: backpressure is the sockets' own, and
//! `shutdown()` closes this direction only (the other side reads the end;
//! it can still write back).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use carrier_proto::identity::Did;
use carrier_proto::messaging::STREAM_SOCKET_BUFFER;
use carrier_proto::pb::{self, app_event::Event, app_hello::Purpose, app_request::Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::session::Shared;
use crate::{SdkError, wire};

/// A byte stream to (or from) another app's service.
#[derive(Debug)]
pub struct AppStream {
    stream: UnixStream,
    /// Bytes that arrived with the daemon's "ready", read first.
    early: Vec<u8>,
    early_pos: usize,
    peer_app: Did,
    peer_device: Did,
    service: String,
}

impl AppStream {
    /// Opens a new connection to the daemon for `purpose` and waits until
    /// the stream is up.
    pub(crate) async fn establish(shared: &Shared, purpose: Purpose) -> Result<Self, SdkError> {
        let (reader, answer) = wire::connect(&shared.socket, &shared.identity, purpose).await?;
        let Some(Event::StreamReady(ready)) = answer.event else {
            return Err(SdkError::Protocol(format!("expected stream ready, got {:?}", answer.event)));
        };
        let parse = |text: &str| Did::parse(text).map_err(|e| SdkError::Protocol(format!("stream ready: {e}")));
        let (peer_app, peer_device) = (parse(&ready.peer_app)?, parse(&ready.peer_device)?);
        let (stream, early) = reader.into_parts();
        // A larger send buffer lets bulk writes run ahead of the daemon (best
        // effort; the system may cap it).
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(STREAM_SOCKET_BUFFER);
        Ok(Self { stream, early, early_pos: 0, peer_app, peer_device, service: ready.service })
    }

    /// The app at the other end.
    pub fn peer_app(&self) -> Did {
        self.peer_app
    }

    /// The device hosting the app at the other end.
    pub fn peer_device(&self) -> Did {
        self.peer_device
    }

    /// The service this stream is for.
    pub fn service(&self) -> &str {
        &self.service
    }
}

impl AsyncRead for AppStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.early_pos < this.early.len() {
            let n = buf.remaining().min(this.early.len() - this.early_pos);
            buf.put_slice(&this.early[this.early_pos..this.early_pos + n]);
            this.early_pos += n;
            if this.early_pos == this.early.len() {
                this.early = Vec::new();
                this.early_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AppStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Closes this direction: the other app reads the end of the stream.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Takes the streams opened to one of this app's services. Dropping it
/// stops listening.
#[derive(Debug)]
pub struct Listener {
    shared: Arc<Shared>,
    service: String,
    incoming: mpsc::Receiver<pb::IncomingStream>,
}

impl Listener {
    pub(crate) fn new(shared: Arc<Shared>, service: String, incoming: mpsc::Receiver<pb::IncomingStream>) -> Self {
        Self { shared, service, incoming }
    }

    /// The service listened on.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The next stream opened to the service.
    pub async fn accept(&mut self) -> Result<AppStream, SdkError> {
        loop {
            let announced = self
                .incoming
                .recv()
                .await
                .ok_or_else(|| SdkError::Disconnected("the session with the daemon is closed".into()))?;
            let purpose = Purpose::AcceptStream(pb::AcceptStream { token: announced.token });
            match AppStream::establish(&self.shared, purpose).await {
                Ok(stream) => return Ok(stream),
                // The opener gave up or the token expired: wait for the next.
                Err(SdkError::Refused(_)) => continue,
                Err(error) => return Err(error),
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shared.listeners.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.service);
        self.shared.request_detached(Request::Unlisten(pb::Unlisten { service: self.service.clone() }));
    }
}
