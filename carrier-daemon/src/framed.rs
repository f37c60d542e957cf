//! Length-prefixed prost frames over any byte stream (the app socket, and
//! the messaging protocols over QUIC), read and written in halves so a
//! reader task and a writer task can share one connection.
//!
//! The reader refuses a frame over its limit from the header, before the
//! body is buffered, and keeps whatever followed the last frame so a
//! connection can switch from frames to raw bytes ([`FrameReader::into_parts`]).
//! The writer buffers: [`FrameWriter::feed`] adds a frame and
//! [`FrameWriter::flush`] sends what is buffered, so a burst of messages
//! costs one system call.

use carrier_proto::frame::{self, FrameDecoder, FrameError};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a framed connection failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FramedError {
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame was over the limit or cut short.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame held no valid message.
    #[error("message does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Reads frames from `R`: a driver over the codec's [`FrameDecoder`].
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader refusing frames over `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        Self { inner, decoder: FrameDecoder::new(max) }
    }

    /// The next message; `None` at a clean end of stream. Cancel-safe: a
    /// partly read frame stays buffered for the next call.
    pub async fn read<M: Message + Default>(&mut self) -> Result<Option<M>, FramedError> {
        loop {
            if let Some(body) = self.decoder.next_body()? {
                return Ok(Some(M::decode(body)?));
            }
            let buf = self.decoder.read_buffer();
            buf.reserve(READ_CHUNK);
            if self.inner.read_buf(buf).await? == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
        }
    }

    /// The stream, and the bytes read past the last frame.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.inner, self.decoder.into_rest())
    }

    /// Changes the limit for the frames still to come.
    pub fn set_max(&mut self, max: usize) {
        self.decoder.set_max(max);
    }
}

/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 16 * 1024;

/// Writes frames to `W`, buffered.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    max: usize,
    buf: Vec<u8>,
}

/// Buffered bytes above which `feed` writes them out by itself.
const WRITE_BATCH: usize = 64 * 1024;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer refusing to send frames over `max` bytes.
    pub fn new(inner: W, max: usize) -> Self {
        Self { inner, max, buf: Vec::with_capacity(WRITE_BATCH) }
    }

    /// Adds `message` to the buffer, writing the buffer out once it is big.
    pub async fn feed<M: Message>(&mut self, message: &M) -> Result<(), FramedError> {
        frame::encode_message(message, self.max, &mut self.buf)?;
        if self.buf.len() >= WRITE_BATCH {
            self.write_out().await?;
        }
        Ok(())
    }

    /// Writes everything buffered and flushes the stream.
    pub async fn flush(&mut self) -> Result<(), FramedError> {
        self.write_out().await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// `feed` then `flush`.
    pub async fn send<M: Message>(&mut self, message: &M) -> Result<(), FramedError> {
        self.feed(message).await?;
        self.flush().await
    }

    async fn write_out(&mut self) -> Result<(), FramedError> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flushes, then ends the write side.
    pub async fn shutdown(&mut self) -> Result<(), FramedError> {
        self.write_out().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    /// The stream (call [`flush`](Self::flush) first).
    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carrier_proto::pb;

    fn receipt(seq: u64) -> pb::EnvelopeReceipt {
        pb::EnvelopeReceipt { seq, outcome: pb::Outcome::Delivered as i32, ..Default::default() }
    }

    #[tokio::test]
    async fn frames_round_trip_in_order_and_leftovers_are_kept() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut writer = FrameWriter::new(a, 1024);
        for seq in 0..100 {
            writer.feed(&receipt(seq)).await.unwrap();
        }
        writer.flush().await.unwrap();
        let mut inner = writer.into_inner();
        inner.write_all(b"raw bytes").await.unwrap();
        drop(inner);
        let mut reader = FrameReader::new(b, 1024);
        for seq in 0..100 {
            assert_eq!(reader.read::<pb::EnvelopeReceipt>().await.unwrap(), Some(receipt(seq)));
        }
        let (mut rest, leftover) = reader.into_parts();
        let mut tail = Vec::new();
        rest.read_to_end(&mut tail).await.unwrap();
        assert_eq!([leftover, tail].concat(), b"raw bytes");
    }

    #[tokio::test]
    async fn an_oversized_header_is_refused_before_its_body() {
        let (mut a, b) = tokio::io::duplex(64);
        // Announces 1 MiB and sends none of it: refused from the header alone.
        a.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
        let mut reader = FrameReader::new(b, 1024);
        let err = reader.read::<pb::EnvelopeReceipt>().await.unwrap_err();
        assert!(matches!(err, FramedError::Frame(FrameError::TooLarge { len: 1_048_576, max: 1024 })), "{err}");
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_named_errors() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        a.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(a);
        let mut reader = FrameReader::new(b, 1024);
        assert!(matches!(reader.read::<pb::EnvelopeReceipt>().await, Err(FramedError::Decode(_))));
        let (a, b) = tokio::io::duplex(64);
        let mut a = a;
        a.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(a);
        let mut reader = FrameReader::new(b, 1024);
        let err = reader.read::<pb::EnvelopeReceipt>().await.unwrap_err();
        assert!(matches!(err, FramedError::Frame(FrameError::Truncated { have: 5, want: 13 })), "{err}");
    }

    #[tokio::test]
    async fn the_writer_refuses_an_oversized_message() {
        let (a, _b) = tokio::io::duplex(64);
        let mut writer = FrameWriter::new(a, 8);
        let big = pb::EnvelopeReceipt { seq: 1, outcome: 1, detail: "x".repeat(100), ..Default::default() };
        assert!(matches!(writer.feed(&big).await, Err(FramedError::Frame(FrameError::TooLarge { .. }))));
    }
}
