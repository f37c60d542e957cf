//! A protocol stream that counts itself on its link, so a link that is on
//! its way out (a relayed one a direct link replaced, a reachability
//! dial-back) is closed only once the streams it carries have ended.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

/// How many streams are open on one link; shared with its streams.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpenStreams(Arc<AtomicUsize>);

impl OpenStreams {
    /// Streams open now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// `stream`, counted until it is dropped.
    pub(crate) fn count(&self, stream: libp2p::Stream) -> CountedStream {
        self.0.fetch_add(1, Ordering::Relaxed);
        CountedStream { inner: stream, open: self.clone() }
    }
}

/// A negotiated stream of one of the daemon's protocols.
#[derive(Debug)]
pub struct CountedStream {
    inner: libp2p::Stream,
    open: OpenStreams,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.open.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
