//! Links over relayed circuits: the Carrier handshake run end to end over
//! the relay's byte stream, then every byte sealed in its session.
//!
//! ```text
//!  dialer ══ circuit through the relay ══ listener
//!   Initiator ── frame(kind 0, hello) ──▶ Responder        (binding = dialer ‖ listener)
//!     …the same messages as over QUIC…
//!   on refusal ── frame(kind 1, code) ──▶ and the stream ends
//!   then SealedStream<circuit> both ways (the relay sees only records)
//! ```
//!
//! The relay learns who talks to whom and how much, nothing else: it cannot
//! read the records, forge one, or pose as either end (the ledger keys are
//! checked end to end, as on a direct link). A relayed link is registered
//! beside the QUIC ones, so a revocation or a key rotation cuts it too.

use std::time::Duration;

use carrier_proto::handshake::circuit::{self, CircuitFrame};
use carrier_proto::handshake::{
    ChannelBinding, HandshakeError, Initiator, InitiatorStep, Refusal, Responder, ResponderStep, Session, frame,
};
use carrier_proto::identity::Did;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use super::handshake::Failure;
use super::sealed::{CircuitHandle, SealedStream};
use super::{LinkContext, LinkError, LinkHandle};
use carrier_proto::handshake::Admitted;

/// An admitted relayed link: the peer and its sealed stream.
pub struct RelayedLink<T> {
    /// Who is on the other end, as the ledger knows them.
    pub peer: Admitted,
    /// The circuit, sealed.
    pub stream: SealedStream<T>,
}

impl LinkContext {
    /// Runs the handshake as dialer over a circuit whose binding is
    /// `binding`; the peer must be `expected`.
    pub async fn dial_circuit<T>(
        &self,
        io: T,
        binding: ChannelBinding,
        expected: Did,
    ) -> Result<RelayedLink<T>, LinkError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let span = tracing::debug_span!("dial_relayed", peer = %expected);
        let result = self.circuit(io, binding, Some(expected)).instrument(span).await;
        self.finish_circuit(result, "outbound")
    }

    /// Runs the handshake as listener over a circuit; the relay said the
    /// dialer is `claimed` (the binding holds the claim, so a false one
    /// fails the handshake).
    pub async fn accept_circuit<T>(
        &self,
        io: T,
        binding: ChannelBinding,
        claimed: Option<Did>,
    ) -> Result<RelayedLink<T>, LinkError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let span = tracing::debug_span!("accept_relayed", peer = claimed.map(|d| d.to_string()));
        let result = self.circuit(io, binding, None).instrument(span).await;
        let result = match (result, claimed) {
            (Ok(link), Some(did)) if link.peer.did != did => {
                Err(LinkError::Refused(HandshakeError::new(Refusal::WrongPeer, "the relay named another dialer")))
            }
            (other, _) => other,
        };
        self.finish_circuit(result, "inbound")
    }

    async fn circuit<T>(
        &self,
        mut io: T,
        binding: ChannelBinding,
        dialing: Option<Did>,
    ) -> Result<RelayedLink<T>, LinkError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let timeout: Duration = self.limits.handshake_timeout;
        let run = async {
            match dialing {
                Some(expected) => initiate(self, binding, expected, &mut io).await,
                None => respond(self, binding, &mut io).await,
            }
        };
        let result = tokio::time::timeout(timeout, run).await.unwrap_or(Err(Failure::Remote(LinkError::Timeout)));
        match result {
            Ok((peer, session)) => {
                let handle = CircuitHandle::default();
                self.register_handle(&peer, LinkHandle::Relayed(handle.clone()));
                Ok(RelayedLink { peer, stream: SealedStream::new(io, session, handle) })
            }
            Err(Failure::Local(error)) => {
                // Best effort: the peer hears why, then the stream ends.
                let _ = write_frame(&mut io, &circuit::refusal(error.reason)).await;
                let _ = io.close().await;
                Err(LinkError::Refused(error))
            }
            Err(Failure::Remote(error)) => {
                let _ = io.close().await;
                Err(error)
            }
        }
    }

    fn finish_circuit<T>(
        &self,
        result: Result<RelayedLink<T>, LinkError>,
        direction: &str,
    ) -> Result<RelayedLink<T>, LinkError> {
        let name = |reason: Refusal| reason.as_str().replace(' ', "_");
        self.counters.count(match &result {
            Ok(link) => {
                tracing::debug!(peer = %link.peer.did, "relayed link admitted");
                format!("relayed_links_admitted_{direction}")
            }
            Err(LinkError::Refused(error)) => {
                tracing::warn!(reason = %error.reason, detail = %error.detail, "refused peer over a circuit");
                format!("refused_{}", name(error.reason))
            }
            Err(LinkError::RefusedByPeer(reason)) => {
                tracing::warn!(%reason, "peer refused us over a circuit");
                format!("refused_by_peer_{}", name(*reason))
            }
            Err(other) => {
                tracing::debug!(error = %other, "relayed link failed");
                format!("relayed_link_failures_{direction}")
            }
        });
        result
    }
}

async fn initiate<T>(
    ctx: &LinkContext,
    binding: ChannelBinding,
    expected: Did,
    io: &mut T,
) -> Result<(Admitted, Session), Failure>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // The dialer always names the device it wants, so IK whenever the
    // ledger has its key.
    let (initiator, hello) =
        ctx.with_local(|local, ledger| Initiator::start(local, &binding, ledger, Some(expected)))??;
    write_frame(io, &circuit::message(&hello)).await?;
    let reply = read_message(io).await?;
    match initiator.read_response(&reply, ctx.directory())? {
        InitiatorStep::Admitted { peer, verdict, session } => {
            write_frame(io, &circuit::message(&verdict)).await?;
            Ok((peer, session))
        }
        InitiatorStep::AwaitVerdict { next, message } => {
            write_frame(io, &circuit::message(&message)).await?;
            Ok(next.read_verdict_keeping_session(&read_message(io).await?)?)
        }
    }
}

async fn respond<T>(ctx: &LinkContext, binding: ChannelBinding, io: &mut T) -> Result<(Admitted, Session), Failure>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let hello = read_message(io).await?;
    let step = ctx.with_local(|local, ledger| Responder::new(*local, binding).read_hello(&hello, ledger))??;
    match step {
        ResponderStep::AwaitVerdict { next, message } => {
            write_frame(io, &circuit::message(&message)).await?;
            Ok(next.read_verdict_keeping_session(&read_message(io).await?)?)
        }
        ResponderStep::AwaitPayload { next, message } => {
            write_frame(io, &circuit::message(&message)).await?;
            let message3 = read_message(io).await?;
            let (peer, verdict, session) = next.read_payload_keeping_session(&message3, ctx.directory())?;
            write_frame(io, &circuit::message(&verdict)).await?;
            Ok((peer, session))
        }
    }
}

async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, body: &[u8]) -> Result<(), Failure> {
    let stream = |e: std::io::Error| Failure::Remote(LinkError::Stream(e.to_string()));
    io.write_all(&frame::encode(body)).await.map_err(stream)?;
    io.flush().await.map_err(stream)
}

/// Reads the next handshake message; a refusal frame is the peer's refusal.
async fn read_message<T: AsyncRead + Unpin>(io: &mut T) -> Result<Vec<u8>, Failure> {
    let mut header = [0u8; frame::FRAME_HEADER];
    read_exact(io, &mut header).await?;
    let mut body = vec![0u8; frame::body_len(header)?];
    read_exact(io, &mut body).await?;
    match circuit::decode(&body)? {
        CircuitFrame::Message(message) => Ok(message.to_vec()),
        CircuitFrame::Refused(reason) => Err(Failure::Remote(LinkError::RefusedByPeer(reason))),
    }
}

async fn read_exact<T: AsyncRead + Unpin>(io: &mut T, buf: &mut [u8]) -> Result<(), Failure> {
    io.read_exact(buf).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            Failure::Local(HandshakeError::new(Refusal::Malformed, "circuit ended inside the handshake"))
        }
        _ => Failure::Remote(LinkError::Stream(e.to_string())),
    })
}

#[cfg(test)]
#[path = "circuit_tests.rs"]
mod tests;
