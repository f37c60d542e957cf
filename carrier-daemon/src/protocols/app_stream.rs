//! App streams (`/carrier/app-stream/1.0.0`): opening one to a remote app,
//! taking one from a peer, and joining the two ends' bytes.
//!
//! ```text
//!  opener daemon                                   receiver daemon
//!  open ─StreamOpen{from, to, service}─▶           Streams::handle ─▶ StreamAcceptor::offer_stream
//!       ◀─StreamAnswer{DELIVERED | why}─             (ledger, allow list, the app takes it)
//!  app ⇄ QUIC stream ⇄ app: raw bytes, each direction closed on its own
//! ```
//!
//! The app's end of a stream reaches this module as an [`AppEnd`]: bytes,
//! type-erased, so this layer never sees the socket behind them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::pb::{self, Outcome};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{Failure, Handling, PeerStream, ProtocolError, ProtocolHandler, Router, outcome_of, verdict_of};
use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::overlay::Overlay;

/// The protocol name.
pub(crate) const PROTOCOL: &str = "/carrier/app-stream/1.0.0";
/// Largest StreamOpen / StreamAnswer frame.
const MAX_HEADER_FRAME: usize = 4096;
/// Buffer per direction when joining two ends.
const PIPE_BUFFER: usize = 256 * 1024;
/// How long a listening app has to take an incoming stream.
pub(crate) const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes both ways.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// An app's end of a stream, ready for raw bytes (`early` came with its
/// last frame and goes first).
pub(crate) struct AppEnd {
    pub io: Box<dyn Duplex>,
    pub early: Vec<u8>,
    /// Cancelled when the ledger no longer allows the stream (its app or
    /// the other revoked, or rotated).
    pub cut: CancellationToken,
    /// Keeps the stream tracked for as long as it is joined.
    pub tracked: Box<dyn std::any::Any + Send>,
}

impl std::fmt::Debug for AppEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppEnd").field("early", &self.early.len()).finish_non_exhaustive()
    }
}

/// Who takes streams that peers open: implemented by the delivery layer.
pub(crate) trait StreamAcceptor: Send + Sync + 'static {
    /// Offers a stream from `from_app` on device `from_device` to `service`
    /// of local app `to_app`; resolves once the app has taken it.
    fn offer_stream(
        &self,
        from_device: Did,
        from_app: Did,
        to_app: Did,
        service: String,
    ) -> impl Future<Output = Result<AppEnd, Failure>> + Send;
}

/// Opens a stream to `service` of app `to` on device `host`, on behalf of
/// local app `from`; returns it with any bytes that came early.
pub(crate) async fn open(
    overlay: &Overlay,
    router: &Router,
    host: Did,
    open: pb::StreamOpen,
) -> Result<(PeerStream, Vec<u8>), Failure> {
    let unreachable = |detail: String| Failure::new(Outcome::Unreachable, detail);
    overlay.connect(host).await.map_err(|e| unreachable(format!("cannot reach {host}: {e}")))?;
    let stream = router.open(host, PROTOCOL).await.map_err(|e| unreachable(e.to_string()))?;
    let lost = |e: FramedError| Failure::new(Outcome::LinkLost, format!("the stream to {host} broke: {e}"));
    let mut writer = FrameWriter::new(stream, MAX_HEADER_FRAME);
    writer.send(&open).await.map_err(lost)?;
    // The far side waits up to ACCEPT_TIMEOUT for its app; allow for the trip.
    let mut reader = FrameReader::new(writer.into_inner(), MAX_HEADER_FRAME);
    let answer = tokio::time::timeout(ACCEPT_TIMEOUT + Duration::from_secs(5), reader.read::<pb::StreamAnswer>())
        .await
        .map_err(|_| unreachable(format!("{host} did not answer the stream request")))?
        .map_err(lost)?
        .ok_or_else(|| Failure::new(Outcome::LinkLost, format!("{host} closed the stream without an answer")))?;
    verdict_of(answer.outcome, answer.detail)?;
    Ok(reader.into_parts())
}

/// The receiving side of the protocol, handing streams to `A`.
#[derive(Debug)]
pub(crate) struct Streams<A> {
    acceptor: Arc<A>,
}

impl<A: StreamAcceptor> Streams<A> {
    /// Takes streams for `acceptor`.
    pub(crate) fn new(acceptor: Arc<A>) -> Self {
        Self { acceptor }
    }
}

impl<A: StreamAcceptor> ProtocolHandler for Streams<A> {
    fn handle(self: Arc<Self>, peer: Did, stream: PeerStream) -> Handling {
        Box::pin(async move {
            let mut reader = FrameReader::new(stream, MAX_HEADER_FRAME);
            let Some(open) = reader.read::<pb::StreamOpen>().await? else { return Ok(()) };
            let (stream, early) = reader.into_parts();
            let offered = match (Did::parse(&open.from_app), Did::parse(&open.to_app)) {
                (Ok(from), Ok(to)) => self.acceptor.offer_stream(peer, from, to, open.service).await,
                _ => Err(Failure::new(Outcome::Refused, "malformed stream request: an app is not a DID")),
            };
            let (verdict, accepted) = match offered {
                Ok(accepted) => (Ok(()), Some(accepted)),
                Err(failure) => (Err(failure), None),
            };
            let (outcome, detail) = outcome_of(verdict);
            let mut writer = FrameWriter::new(stream, MAX_HEADER_FRAME);
            writer.send(&pb::StreamAnswer { outcome, detail }).await?;
            let mut stream = writer.into_inner();
            match accepted {
                Some(AppEnd { io, early: app_early, cut, tracked }) => {
                    join(io, app_early, stream, early, cut.cancelled()).await;
                    drop(tracked);
                }
                None => stream.shutdown().await.map_err(|e| ProtocolError::Framed(e.into()))?,
            }
            Ok(())
        })
    }
}

/// Joins two byte streams until both directions are closed or `cut`
/// resolves (the ledger took the stream's right away: both ends are then
/// dropped at once, mid-transfer); bytes that were read early from one end
/// go to the other first.
pub(crate) async fn join<A, B>(mut a: A, a_early: Vec<u8>, mut b: B, b_early: Vec<u8>, cut: impl Future<Output = ()>)
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
    };
    tokio::select! {
        result = result => match result {
            Ok((a_to_b, b_to_a)) => tracing::debug!(a_to_b, b_to_a, "stream finished"),
            Err(error) => tracing::debug!(%error, "stream ended with an error"),
        },
        () = cut => tracing::info!("stream cut: the ledger no longer allows it"),
    }
}
