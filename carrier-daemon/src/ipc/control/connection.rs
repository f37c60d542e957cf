//! One control-socket client: the only code that reads and writes its
//! socket, one frame at a time through the shared codec (`crate::framed`),
//! with the frame limit applied from the header before a frame's body is
//! read. Shared by the daemon and `carrierctl`, as mini-redis shares its
//! `Connection`.

use prost::Message;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::framed::{FrameReader, FrameWriter, FramedError};

/// Largest control frame, either way.
pub const MAX_FRAME: usize = 1 << 20;

/// Why a control connection failed: the socket, a frame over the limit or
/// cut short, or a frame that holds no valid message.
pub type ConnectionError = FramedError;

/// A framed connection carrying `carrier.v1` control messages.
#[derive(Debug)]
pub struct Connection {
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
}

impl Connection {
    /// Wraps a connected socket.
    pub fn new(stream: UnixStream) -> Self {
        let (read, write) = stream.into_split();
        Self { reader: FrameReader::new(read, MAX_FRAME), writer: FrameWriter::new(write, MAX_FRAME) }
    }

    /// Reads the next message; `None` at a clean end of stream.
    pub async fn read<M: Message + Default>(&mut self) -> Result<Option<M>, ConnectionError> {
        self.reader.read().await
    }

    /// Writes one message.
    pub async fn write<M: Message>(&mut self, message: &M) -> Result<(), ConnectionError> {
        self.writer.send(message).await
    }
}
