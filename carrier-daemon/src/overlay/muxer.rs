//! libp2p's `StreamMuxer` over an admitted QUIC link: every libp2p
//! substream is one QUIC bidirectional stream, so there is no second
//! multiplexer and no second encryption layer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};

type StreamPair = Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>;

/// One admitted link as libp2p sees it.
pub struct LinkMuxer {
    connection: quinn::Connection,
    /// In-progress `accept_bi`, kept across polls.
    inbound: Option<BoxFuture<'static, StreamPair>>,
    /// In-progress `open_bi`, kept across polls.
    outbound: Option<BoxFuture<'static, StreamPair>>,
    /// In-progress close.
    closing: Option<BoxFuture<'static, quinn::ConnectionError>>,
}

impl LinkMuxer {
    /// Wraps a connection whose handshake stream is done.
    pub fn new(connection: quinn::Connection) -> Self {
        Self { connection, inbound: None, outbound: None, closing: None }
    }
}

/// Error of a link as libp2p sees it.
#[derive(Debug, thiserror::Error)]
#[error("link: {0}")]
pub struct MuxerError(#[from] quinn::ConnectionError);

impl StreamMuxer for LinkMuxer {
    type Substream = Substream;
    type Error = MuxerError;

    fn poll_inbound(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Substream, MuxerError>> {
        let this = self.get_mut();
        let connection = this.connection.clone();
        let pending = this.inbound.get_or_insert_with(|| async move { connection.accept_bi().await }.boxed());
        let result = ready!(pending.poll_unpin(cx));
        this.inbound = None;
        let (send, recv) = result?;
        Poll::Ready(Ok(Substream::new(send, recv)))
    }

    fn poll_outbound(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Substream, MuxerError>> {
        let this = self.get_mut();
        let connection = this.connection.clone();
        let pending = this.outbound.get_or_insert_with(|| async move { connection.open_bi().await }.boxed());
        let result = ready!(pending.poll_unpin(cx));
        this.outbound = None;
        let (send, recv) = result?;
        Poll::Ready(Ok(Substream::new(send, recv)))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), MuxerError>> {
        let this = self.get_mut();
        let connection = this.connection.clone();
        let closing = this.closing.get_or_insert_with(|| {
            // Code 0: an orderly close, not a refusal.
            connection.close(0u32.into(), b"");
            async move { connection.closed().await }.boxed()
        });
        match ready!(closing.poll_unpin(cx)) {
            quinn::ConnectionError::LocallyClosed => Poll::Ready(Ok(())),
            other => Poll::Ready(Err(other.into())),
        }
    }

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, MuxerError>> {
        // Connection migration is off, so the remote address never changes.
        Poll::Pending
    }
}

/// One libp2p substream: a QUIC bidirectional stream.
pub struct Substream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// Outcome of the first `poll_close`, repeated on later calls.
    closed: Option<Result<(), io::ErrorKind>>,
}

impl Substream {
    fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        Self { send, recv, closed: None }
    }
}

impl AsyncRead for Substream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Substream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.send).poll_write(cx, buf).map_err(io::Error::from)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(done) = self.closed {
            return Poll::Ready(done.map_err(io::Error::from));
        }
        let result = ready!(Pin::new(&mut self.send).poll_close(cx));
        self.closed = Some(result.as_ref().map(|_| ()).map_err(io::Error::kind));
        Poll::Ready(result)
    }
}
