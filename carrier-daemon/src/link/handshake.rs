//! Runs the sans-IO handshake (`carrier_proto::handshake`) over the first
//! bidirectional stream of a QUIC connection.
//!
//! This is the only code that moves handshake bytes; the state machines
//! decide. On a refusal the connection is closed with the refusal's code and
//! no reason text, and the detail is logged here.

use carrier_proto::handshake::{
    Admitted, ChannelBinding, EXPORTER_LABEL, HandshakeError, Initiator, InitiatorStep, Refusal, Responder,
    ResponderStep, frame,
};
use carrier_proto::identity::Did;
use quinn::{RecvStream, SendStream};

use super::{LinkContext, LinkError};

/// Our side of a handshake: which state machine to run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// We dialed; `expected` is the DID we meant to reach, if known.
    Dialer {
        /// The peer we meant to reach.
        expected: Option<Did>,
        /// Force XX (after IK failed on a stale key).
        force_xx: bool,
    },
    /// We accepted.
    Listener,
}

/// Runs the handshake on `connection`; closes it with a code on failure.
/// A listener calls `spoke` once the dialer's first Noise message is in.
pub(crate) async fn run(
    ctx: &LinkContext,
    connection: &quinn::Connection,
    role: Role,
    spoke: &(dyn Fn() + Sync),
) -> Result<Admitted, LinkError> {
    let result = match role {
        Role::Dialer { expected, force_xx } => dial(ctx, connection, expected, force_xx).await,
        Role::Listener => listen(ctx, connection, spoke).await,
    };
    match result {
        Ok(peer) => Ok(peer),
        Err(Failure::Local(error)) => {
            connection.close(error.reason.code().into(), b"");
            Err(LinkError::Refused(error))
        }
        Err(Failure::Remote(error)) => Err(error),
    }
}

/// Who ended the handshake (over QUIC or over a circuit).
pub(super) enum Failure {
    /// We refused the peer (we close with the code, or send a refusal).
    Local(HandshakeError),
    /// The peer refused us, or the connection broke.
    Remote(LinkError),
}

impl From<HandshakeError> for Failure {
    fn from(error: HandshakeError) -> Self {
        Failure::Local(error)
    }
}

fn binding(connection: &quinn::Connection) -> Result<ChannelBinding, Failure> {
    let mut out = [0u8; 32];
    connection
        .export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| HandshakeError::new(Refusal::BadBinding, "QUIC keying material export failed"))?;
    Ok(ChannelBinding(out))
}

async fn dial(
    ctx: &LinkContext,
    connection: &quinn::Connection,
    expected: Option<Did>,
    force_xx: bool,
) -> Result<Admitted, Failure> {
    let binding = binding(connection)?;
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| Failure::Remote(LinkError::from(e)))?;
    let result = initiate(ctx, binding, expected, force_xx, &mut send, &mut recv).await;
    end_stream(connection, send, result)
}

async fn initiate(
    ctx: &LinkContext,
    binding: ChannelBinding,
    expected: Option<Did>,
    force_xx: bool,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<Admitted, Failure> {
    let (initiator, hello) = ctx.with_local(|local, ledger| match force_xx {
        true => Initiator::start_xx(local, &binding, expected),
        false => Initiator::start(local, &binding, ledger, expected),
    })??;
    write_frame(send, &hello).await?;
    let reply = read_frame(recv).await?;
    match initiator.read_response(&reply, ctx.directory())? {
        InitiatorStep::Admitted { peer, verdict, .. } => {
            write_frame(send, &verdict).await?;
            Ok(peer)
        }
        InitiatorStep::AwaitVerdict { next, message } => {
            write_frame(send, &message).await?;
            Ok(next.read_verdict(&read_frame(recv).await?)?)
        }
    }
}

async fn listen(
    ctx: &LinkContext,
    connection: &quinn::Connection,
    spoke: &(dyn Fn() + Sync),
) -> Result<Admitted, Failure> {
    let binding = binding(connection)?;
    let (mut send, mut recv) = connection.accept_bi().await.map_err(|e| Failure::Remote(LinkError::from(e)))?;
    let result = respond(ctx, binding, spoke, &mut send, &mut recv).await;
    end_stream(connection, send, result)
}

async fn respond(
    ctx: &LinkContext,
    binding: ChannelBinding,
    spoke: &(dyn Fn() + Sync),
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<Admitted, Failure> {
    let hello = read_frame(recv).await?;
    spoke();
    let step = ctx.with_local(|local, ledger| Responder::new(*local, binding).read_hello(&hello, ledger))??;
    match step {
        ResponderStep::AwaitVerdict { next, message } => {
            write_frame(send, &message).await?;
            Ok(next.read_verdict(&read_frame(recv).await?)?)
        }
        ResponderStep::AwaitPayload { next, message } => {
            write_frame(send, &message).await?;
            let message3 = read_frame(recv).await?;
            let (peer, verdict) = next.read_payload(&message3, ctx.directory())?;
            write_frame(send, &verdict).await?;
            Ok(peer)
        }
    }
}

/// Ends the handshake stream. On our refusal the connection is closed
/// *before* the stream is dropped: dropping a send stream finishes it, and a
/// peer that saw that end first would hear "stream ended" instead of the
/// refusal's code.
fn end_stream(
    connection: &quinn::Connection,
    mut send: SendStream,
    result: Result<Admitted, Failure>,
) -> Result<Admitted, Failure> {
    match &result {
        Ok(_) => {
            let _ = send.finish();
        }
        Err(Failure::Local(error)) => connection.close(error.reason.code().into(), b""),
        Err(Failure::Remote(_)) => {
            let _ = send.reset(0u32.into());
        }
    }
    result
}

async fn write_frame(send: &mut SendStream, message: &[u8]) -> Result<(), Failure> {
    send.write_all(&frame::encode(message)).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(e) => Failure::Remote(LinkError::from(e)),
        other => Failure::Remote(LinkError::Stream(other.to_string())),
    })
}

async fn read_frame(recv: &mut RecvStream) -> Result<Vec<u8>, Failure> {
    let mut header = [0u8; frame::FRAME_HEADER];
    read_exact(recv, &mut header).await?;
    let mut body = vec![0u8; frame::body_len(header)?];
    read_exact(recv, &mut body).await?;
    Ok(body)
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), Failure> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(n) => {
            Failure::Local(HandshakeError::new(Refusal::Malformed, format!("handshake stream ended after {n} bytes")))
        }
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e)) => Failure::Remote(LinkError::from(e)),
        quinn::ReadExactError::ReadError(other) => Failure::Remote(LinkError::Stream(other.to_string())),
    })
}
