//! The app socket as the SDK sees it: framed reads and writes, and the
//! challenge every new connection starts with.
//!
//! ```text
//!  connect ─▶ AppChallenge ◀─ daemon
//!          ─▶ AppHello { app, sign(challenge), purpose } ─▶ daemon
//!          ◀─ AppWelcome (session) | StreamReady (stream) | AppError
//! ```

use std::path::Path;

use carrier_proto::frame::{self, FrameDecoder};
use carrier_proto::messaging::{NONCE_LEN, sign_challenge};
use carrier_proto::pb::{self, app_event::Event, app_hello::Purpose, app_request::Request};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{AppIdentity, SdkError};

pub(crate) use carrier_proto::messaging::FRAME_OVERHEAD;

/// The frame limit before the daemon says its message limit.
const HELLO_MAX_FRAME: usize = 64 * 1024;

/// Reads frames from the daemon: a driver over the codec's [`FrameDecoder`].
pub(crate) struct EventReader<R> {
    inner: R,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> EventReader<R> {
    pub(crate) fn new(inner: R, max_frame: usize) -> Self {
        Self { inner, decoder: FrameDecoder::new(max_frame) }
    }

    /// A reader that first yields what is in `rest` (bytes already read).
    pub(crate) fn with_rest(inner: R, max_frame: usize, rest: &[u8]) -> Self {
        let mut reader = Self::new(inner, max_frame);
        reader.decoder.push(rest);
        reader
    }

    /// The next event; `Disconnected` at the end of the stream.
    pub(crate) async fn read(&mut self) -> Result<pb::AppEvent, SdkError> {
        loop {
            if let Some(body) = self.decoder.next_body().map_err(|e| SdkError::Protocol(e.to_string()))? {
                return pb::AppEvent::decode(body).map_err(|e| SdkError::Protocol(e.to_string()));
            }
            let buf = self.decoder.read_buffer();
            buf.reserve(64 * 1024);
            if self.inner.read_buf(buf).await? == 0 {
                return Err(SdkError::Disconnected("the daemon closed the connection".into()));
            }
        }
    }

    /// The stream and the bytes that came after the last frame.
    pub(crate) fn into_parts(self) -> (R, Vec<u8>) {
        (self.inner, self.decoder.into_rest())
    }
}

/// Appends one request frame to `out`. The daemon's limit is checked by
/// the callers (a payload over `max_message` never gets here); this is only
/// the length field's own.
pub(crate) fn encode_request(request: &pb::AppRequest, out: &mut Vec<u8>) -> Result<(), SdkError> {
    frame::encode_message(request, usize::MAX, out).map_err(|e| SdkError::Protocol(e.to_string()))
}

/// Writes one request.
pub(crate) async fn write_request<W: AsyncWrite + Unpin>(
    writer: &mut W,
    request: &pb::AppRequest,
) -> Result<(), SdkError> {
    let mut frame = Vec::new();
    encode_request(request, &mut frame)?;
    writer.write_all(&frame).await?;
    Ok(())
}

/// Connects to the app socket and proves who we are; returns the
/// connection and the daemon's first answer after the hello.
pub(crate) async fn connect(
    socket: &Path,
    identity: &AppIdentity,
    purpose: Purpose,
) -> Result<(EventReader<UnixStream>, pb::AppEvent), SdkError> {
    let stream =
        UnixStream::connect(socket).await.map_err(|source| SdkError::Connect { path: socket.to_owned(), source })?;
    let mut reader = EventReader::new(stream, HELLO_MAX_FRAME);
    let challenge = match reader.read().await?.event {
        Some(Event::Challenge(challenge)) => challenge,
        Some(Event::Error(error)) => return Err(SdkError::Refused(error.message)),
        other => return Err(SdkError::Protocol(format!("expected a challenge, got {other:?}"))),
    };
    let nonce: [u8; NONCE_LEN] = challenge
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| SdkError::Protocol("challenge nonce is not 32 bytes".into()))?;
    let device = carrier_proto::identity::Did::parse(&challenge.device)
        .map_err(|e| SdkError::Protocol(format!("challenge device: {e}")))?;
    let signature = sign_challenge(identity.identity(), &nonce, &device);
    let hello = pb::AppHello { app: identity.did().to_string(), signature: signature.to_vec(), purpose: Some(purpose) };
    write_request(&mut reader.inner, &pb::AppRequest { id: 0, request: Some(Request::Hello(hello)) }).await?;
    let answer = reader.read().await?;
    if let Some(Event::Error(error)) = &answer.event {
        return Err(match pb::AppErrorCode::try_from(error.code) {
            Ok(pb::AppErrorCode::StreamFailed) => {
                SdkError::Stream(crate::Failure::from_wire(error.outcome, error.message.clone()))
            }
            _ => SdkError::Refused(error.message.clone()),
        });
    }
    Ok((reader, answer))
}
