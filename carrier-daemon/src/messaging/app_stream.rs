//! App streams (`/carrier/app-stream/1.0.0`): opening one to a remote app,
//! taking one from a peer, and joining the two ends' bytes.
//!
//! ```text
//!  opener daemon                                   receiver daemon
//!  open_stream ─StreamOpen{from, to, service}─▶    offer_stream (ledger, allow list,
//!              ◀─StreamAnswer{DELIVERED | why}─     app takes it on a new connection)
//!  app socket ⇄ QUIC stream ⇄ app socket: raw bytes, each direction closed on its own
//! ```

use std::time::Duration;

use carrier_proto::frame;
use carrier_proto::identity::Did;
use carrier_proto::pb::{self, Outcome};
use libp2p::PeerId;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use super::inbox::ACCEPT_TIMEOUT;
use super::{APP_STREAM_PROTOCOL, Failure, Messaging};
use crate::apps::{AcceptedConnection, announce_ready};
use crate::framed::{FrameReader, FramedError};

/// Largest StreamOpen / StreamAnswer frame.
const MAX_HEADER_FRAME: usize = 4096;
/// Buffer per direction when joining two ends.
const PIPE_BUFFER: usize = 256 * 1024;

/// The far end of an app stream, ready for bytes.
#[derive(Debug)]
pub(crate) enum StreamEnd {
    /// A QUIC stream to the remote daemon, with bytes that came early.
    Remote(Compat<libp2p::Stream>, Vec<u8>),
    /// A local app's connection (both apps on this device).
    Local(AcceptedConnection),
}

impl Messaging {
    /// Opens a stream from local app `from` to `service` of app `to`.
    pub(crate) async fn open_stream(&self, from: Did, to: Did, service: String) -> Result<StreamEnd, Failure> {
        let host = self.host_of(&to)?;
        if host == self.device() {
            return self.offer_stream(host, from, to, service).await.map(StreamEnd::Local);
        }
        let unreachable = |detail: String| Failure::new(Outcome::Unreachable, detail);
        self.overlay.connect(host).await.map_err(|e| unreachable(format!("cannot reach {host}: {e}")))?;
        let peer = self.peer_of(&host).ok_or_else(|| unreachable(format!("{host} is not on the ledger")))?;
        let mut control = self.overlay.stream_control();
        let stream = control
            .open_stream(peer, APP_STREAM_PROTOCOL)
            .await
            .map_err(|e| unreachable(format!("cannot open a stream to {host}: {e}")))?;
        let mut stream = stream.compat();
        let open = pb::StreamOpen { from_app: from.to_string(), to_app: to.to_string(), service };
        let lost = |e: FramedError| Failure::new(Outcome::LinkLost, format!("the stream to {host} broke: {e}"));
        stream.write_all(&frame::encode(&open.encode_to_vec())).await.map_err(|e| lost(e.into()))?;
        // The far side waits up to ACCEPT_TIMEOUT for its app; allow for the trip.
        let mut reader = FrameReader::new(stream, MAX_HEADER_FRAME);
        let answer = tokio::time::timeout(ACCEPT_TIMEOUT + Duration::from_secs(5), reader.read::<pb::StreamAnswer>())
            .await
            .map_err(|_| unreachable(format!("{host} did not answer the stream request")))?
            .map_err(lost)?
            .ok_or_else(|| Failure::new(Outcome::LinkLost, format!("{host} closed the stream without an answer")))?;
        if answer.outcome != Outcome::Delivered as i32 {
            return Err(Failure::from_wire(answer.outcome, answer.detail));
        }
        let (stream, early) = reader.into_parts();
        Ok(StreamEnd::Remote(stream, early))
    }
}

/// Takes one stream from `peer`: checks, hands it to the app, joins them.
pub(super) async fn serve(messaging: &Messaging, peer: PeerId, stream: libp2p::Stream) -> Result<(), FramedError> {
    let Some(device) = messaging.device_of(&peer) else { return Ok(()) };
    let mut reader = FrameReader::new(stream.compat(), MAX_HEADER_FRAME);
    let Some(open) = reader.read::<pb::StreamOpen>().await? else { return Ok(()) };
    let (mut stream, early) = reader.into_parts();
    let offered = match (Did::parse(&open.from_app), Did::parse(&open.to_app)) {
        (Ok(from), Ok(to)) => match messaging.offer_stream(device, from, to, open.service.clone()).await {
            Ok(mut accepted) => match announce_ready(&mut accepted.stream, from, device, open.service).await {
                Ok(()) => Ok(accepted),
                Err(e) => Err(Failure::new(Outcome::AppNotRunning, format!("the app dropped the stream: {e}"))),
            },
            Err(failure) => Err(failure),
        },
        _ => Err(Failure::new(Outcome::Refused, "malformed stream request: an app is not a DID")),
    };
    let (answer, accepted) = match offered {
        Ok(accepted) => {
            (pb::StreamAnswer { outcome: Outcome::Delivered as i32, detail: String::new() }, Some(accepted))
        }
        Err(failure) => (pb::StreamAnswer { outcome: failure.outcome as i32, detail: failure.detail }, None),
    };
    stream.write_all(&frame::encode(&answer.encode_to_vec())).await?;
    match accepted {
        Some(app) => {
            join(app.stream, app.leftover, stream, early).await;
            Ok(())
        }
        None => Ok(stream.shutdown().await?),
    }
}

/// Joins two byte streams until both directions are closed; bytes that
/// were read early from one end go to the other first.
pub(crate) async fn join<A, B>(mut a: A, a_early: Vec<u8>, mut b: B, b_early: Vec<u8>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let result = async {
        if !a_early.is_empty() {
            b.write_all(&a_early).await?;
        }
        if !b_early.is_empty() {
            a.write_all(&b_early).await?;
        }
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, PIPE_BUFFER, PIPE_BUFFER).await
    }
    .await;
    match result {
        Ok((a_to_b, b_to_a)) => tracing::debug!(a_to_b, b_to_a, "stream finished"),
        Err(error) => tracing::debug!(%error, "stream ended with an error"),
    }
}
