//! A byte stream whose every byte is sealed in a handshake's [`Session`]:
//! how a relayed link carries data the relay can neither read nor forge.
//!
//! Writes are gathered into records of up to [`MAX_PLAINTEXT`] bytes and
//! sealed on flush (or when a record is full); reads open one record at a
//! time. A record that does not open ends the stream with an error, and so
//! does a [`CircuitHandle::close`] (a revocation): either way the link
//! above it closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use carrier_proto::handshake::{MAX_PLAINTEXT, RECORD_HEADER, Refusal, Session, SessionError};
use futures::{AsyncRead, AsyncWrite, FutureExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The registry's hold on one relayed link: to cut it and to measure it.
#[derive(Debug, Clone, Default)]
pub struct CircuitHandle {
    cut: CancellationToken,
    traffic: Arc<Traffic>,
}

#[derive(Debug, Default)]
struct Traffic {
    rx: AtomicU64,
    tx: AtomicU64,
}

impl CircuitHandle {
    /// Ends the link: its stream fails on the next poll, and at once if it
    /// is waiting.
    pub fn close(&self, reason: Refusal) {
        tracing::debug!(%reason, "cutting a relayed link");
        self.cut.cancel();
    }

    /// Whether the link has ended (cut, or its stream dropped).
    pub fn is_closed(&self) -> bool {
        self.cut.is_cancelled()
    }

    /// Sealed bytes received and sent so far.
    pub fn traffic(&self) -> (u64, u64) {
        (self.traffic.rx.load(Ordering::Relaxed), self.traffic.tx.load(Ordering::Relaxed))
    }
}

/// `inner`, sealed with `session`.
pub struct SealedStream<T> {
    inner: T,
    session: Session,
    handle: CircuitHandle,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Plaintext written and not yet sealed.
    plain_out: Vec<u8>,
    /// Sealed records not yet written to `inner`, from `sealed_pos`.
    sealed_out: Vec<u8>,
    sealed_pos: usize,
    /// Bytes read from `inner`, opened up to `raw_pos`.
    raw_in: Vec<u8>,
    raw_pos: usize,
    /// Opened plaintext not yet read, from `plain_pos`.
    plain_in: Vec<u8>,
    plain_pos: usize,
    scratch: Box<[u8]>,
}

impl<T> SealedStream<T> {
    /// Seals `inner` with `session`; `handle` can cut it.
    pub fn new(inner: T, session: Session, handle: CircuitHandle) -> Self {
        let cut = Box::pin(handle.cut.clone().cancelled_owned());
        Self {
            inner,
            session,
            handle,
            cut,
            plain_out: Vec::new(),
            sealed_out: Vec::new(),
            sealed_pos: 0,
            raw_in: Vec::new(),
            raw_pos: 0,
            plain_in: Vec::new(),
            plain_pos: 0,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }

    fn check_cut(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.cut.poll_unpin(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "relayed link cut")),
            Poll::Pending => Ok(()),
        }
    }

    fn seal_pending(&mut self) -> io::Result<()> {
        if self.plain_out.is_empty() {
            return Ok(());
        }
        if self.sealed_pos == self.sealed_out.len() {
            self.sealed_out.clear();
            self.sealed_pos = 0;
        }
        self.session.seal(&self.plain_out, &mut self.sealed_out).map_err(broken)?;
        self.plain_out.clear();
        Ok(())
    }
}

/// Records one read may open without handing on any plaintext before it
/// yields (a peer sending empty records must not hold the task).
const MAX_RECORDS_PER_POLL: usize = 64;

fn broken(error: SessionError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl<T: AsyncWrite + Unpin> SealedStream<T> {
    /// Writes out every sealed record.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sealed_pos < self.sealed_out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.sealed_out[self.sealed_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sealed_pos += n;
            self.handle.traffic.tx.fetch_add(n as u64, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SealedStream<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_cut(cx)?;
        let mut opened = 0;
        loop {
            if this.plain_pos < this.plain_in.len() {
                let n = buf.len().min(this.plain_in.len() - this.plain_pos);
                buf[..n].copy_from_slice(&this.plain_in[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                return Poll::Ready(Ok(n));
            }
            let pending = &this.raw_in[this.raw_pos..];
            if pending.len() >= RECORD_HEADER {
                let len = Session::record_len([pending[0], pending[1]]).map_err(broken)?;
                if pending.len() >= RECORD_HEADER + len {
                    this.plain_in.clear();
                    this.plain_pos = 0;
                    let body = &pending[RECORD_HEADER..RECORD_HEADER + len];
                    this.session.open(body, &mut this.plain_in).map_err(broken)?;
                    this.raw_pos += RECORD_HEADER + len;
                    opened += 1;
                    if opened == MAX_RECORDS_PER_POLL && this.plain_in.is_empty() {
                        // A run of empty records: let other tasks run.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    continue;
                }
            }
            // Keep only the unopened tail before reading more: one move per
            // read, not one per record.
            this.raw_in.drain(..this.raw_pos);
            this.raw_pos = 0;
            let n = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.scratch))?;
            if n == 0 {
                return match this.raw_in.is_empty() {
                    true => Poll::Ready(Ok(0)),
                    false => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "relayed link ended inside a record",
                    ))),
                };
            }
            this.handle.traffic.rx.fetch_add(n as u64, Ordering::Relaxed);
            this.raw_in.extend_from_slice(&this.scratch[..n]);
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SealedStream<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_cut(cx)?;
        if this.plain_out.len() == MAX_PLAINTEXT {
            ready!(this.poll_drain(cx))?;
            this.seal_pending()?;
        }
        let n = buf.len().min(MAX_PLAINTEXT - this.plain_out.len());
        this.plain_out.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_cut(cx)?;
        ready!(this.poll_drain(cx))?;
        this.seal_pending()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.seal_pending()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

impl<T> Drop for SealedStream<T> {
    fn drop(&mut self) {
        // A dropped stream is a closed link, as the registry sees it.
        self.handle.cut.cancel();
    }
}
