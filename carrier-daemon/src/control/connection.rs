//! One control-socket client: the only code that reads and writes its
//! socket, one frame at a time, with the frame limit applied before a
//! frame's body is read.

use carrier_proto::frame::{self, FrameDecoder, FrameError};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest control frame, either way.
pub const MAX_FRAME: usize = 1 << 20;

/// Why a control connection failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame was too large or cut short.
    #[error("control frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame held no valid message.
    #[error("control message does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// A framed connection carrying `carrier.v1` control messages.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    decoder: FrameDecoder,
}

impl Connection {
    /// Wraps a connected socket.
    pub fn new(stream: UnixStream) -> Self {
        Self { stream, decoder: FrameDecoder::new(MAX_FRAME) }
    }

    /// The socket, for credentials.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Reads the next message; `None` at a clean end of stream.
    pub async fn read<M: Message + Default>(&mut self) -> Result<Option<M>, ConnectionError> {
        let mut buf = vec![0u8; 8192];
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(M::decode(frame.as_slice())?));
            }
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.decoder.push(&buf[..n]);
        }
    }

    /// Writes one message.
    pub async fn write<M: Message>(&mut self, message: &M) -> Result<(), ConnectionError> {
        let bytes = message.encode_to_vec();
        if bytes.len() > MAX_FRAME {
            return Err(FrameError::TooLarge { len: bytes.len(), max: MAX_FRAME }.into());
        }
        self.stream.write_all(&frame::encode(&bytes)).await?;
        Ok(())
    }
}
