//! The link handshake as sans-IO state machines: Noise (IK or XX) bound to
//! the QUIC connection and checked against the ledger.
//!
//! ```text
//!  dialer                                      listener
//!  Initiator::start ── Hello+msg1 ───────────▶ Responder::read_hello
//!     IK: ◀──────────── msg2 (payload) ─────── (listener checked dialer)
//!  read_response ─────── Verdict ────────────▶ AwaitVerdict::read_verdict
//!     XX: ◀──────────── msg2 (payload) ───────
//!  read_response ─────── msg3 (payload) ─────▶ AwaitPayload::read_payload
//!  AwaitVerdict::read_verdict ◀── Verdict ─── (listener checked dialer)
//! ```
//!
//! Each step is its own type, consumed by the call that takes the next
//! message, so an out-of-order message cannot be handled. Every failure is a
//! [`HandshakeError`] whose [`Refusal`] is the QUIC close code to send. The
//! wire format is `proto/carrier/v1/handshake.proto`; the caller frames
//! messages with [`frame`] and owns sockets and timers.

mod admission;
pub mod circuit;
pub mod frame;
mod refusal;
mod session;

pub use admission::{Admitted, Local};
pub use refusal::{HandshakeError, Refusal};
pub use session::{MAX_PLAINTEXT, MAX_RECORD, RECORD_HEADER, Session, SessionError};

use prost::Message;
use snow::{HandshakeState, TransportState};

use crate::identity::Did;
use crate::ledger::{Directory, EntryHash};
use crate::pb;

/// ALPN and prologue tag of this protocol.
pub const PROTOCOL: &[u8] = b"carrier/1";
/// Label for QUIC's keying-material exporter (RFC 5705 / RFC 8446 7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-carrier/1-noise-binding";
/// Handshake version in [`pb::Hello`].
pub const VERSION: u32 = 1;

const NOISE_IK: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
const NOISE_XX: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// 32 bytes of keying material exported from this QUIC connection. Both ends
/// get the same bytes only if they share one QUIC session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelBinding(pub [u8; 32]);

/// Which Noise pattern a handshake uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// One round trip; the dialer knows the listener's Noise key.
    Ik,
    /// Both sides learn each other's keys in the handshake.
    Xx,
}

fn err(reason: Refusal, detail: impl Into<String>) -> HandshakeError {
    HandshakeError::new(reason, detail)
}

/// Maps snow's errors: a failed decryption means the two sides do not share
/// a prologue or keys (relay, replay, stale key); anything else is a
/// malformed message.
fn noise_err(stage: &str, e: snow::Error) -> HandshakeError {
    match e {
        snow::Error::Decrypt => err(Refusal::BadBinding, format!("{stage}: Noise message did not decrypt")),
        other => err(Refusal::Malformed, format!("{stage}: {other}")),
    }
}

fn build(
    pattern: Pattern,
    local: &Local<'_>,
    binding: &ChannelBinding,
    remote: Option<&[u8; 32]>,
    initiator: bool,
) -> Result<HandshakeState, HandshakeError> {
    let name = match pattern {
        Pattern::Ik => NOISE_IK,
        Pattern::Xx => NOISE_XX,
    };
    let params = name.parse().map_err(|e| err(Refusal::Malformed, format!("noise params: {e}")))?;
    let mut prologue = Vec::with_capacity(PROTOCOL.len() + 64);
    prologue.extend_from_slice(PROTOCOL);
    prologue.extend_from_slice(&local.network_id.0);
    prologue.extend_from_slice(&binding.0);
    let secret = local.identity.noise_secret();
    let build = || -> Result<HandshakeState, snow::Error> {
        let mut builder = snow::Builder::new(params).local_private_key(&secret[..])?.prologue(&prologue)?;
        if let Some(remote) = remote {
            builder = builder.remote_public_key(remote)?;
        }
        if initiator { builder.build_initiator() } else { builder.build_responder() }
    };
    build().map_err(|e| err(Refusal::Malformed, format!("noise setup: {e}")))
}

fn write(state: &mut HandshakeState, payload: &[u8], stage: &str) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = vec![0u8; frame::MAX_FRAME];
    let len = state.write_message(payload, &mut buf).map_err(|e| noise_err(stage, e))?;
    buf.truncate(len);
    Ok(buf)
}

fn read(state: &mut HandshakeState, message: &[u8], stage: &str) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = vec![0u8; frame::MAX_FRAME];
    let len = state.read_message(message, &mut buf).map_err(|e| noise_err(stage, e))?;
    buf.truncate(len);
    Ok(buf)
}

fn remote_static(state: &HandshakeState) -> Result<Vec<u8>, HandshakeError> {
    state.get_remote_static().map(<[u8]>::to_vec).ok_or_else(|| err(Refusal::Malformed, "peer sent no static key"))
}

fn into_transport(state: HandshakeState) -> Result<TransportState, HandshakeError> {
    state.into_transport_mode().map_err(|e| err(Refusal::Malformed, format!("handshake not finished: {e}")))
}

fn verdict(transport: &mut TransportState) -> Result<Vec<u8>, HandshakeError> {
    let message = pb::Verdict { admitted: true }.encode_to_vec();
    let mut buf = vec![0u8; 64];
    let len = transport.write_message(&message, &mut buf).map_err(|e| noise_err("verdict", e))?;
    buf.truncate(len);
    Ok(buf)
}

/// The dialer's first state.
pub struct Initiator {
    state: HandshakeState,
    network: EntryHash,
    pattern: Pattern,
    expected: Option<Did>,
    payload: Vec<u8>,
}

/// What the dialer does after the listener's reply.
pub enum InitiatorStep {
    /// IK: the listener is checked and has checked us. Send the verdict
    /// frame; the link is up.
    Admitted {
        /// The listener.
        peer: Admitted,
        /// The verdict to send.
        verdict: Vec<u8>,
        /// The transport keys, for a link QUIC does not encrypt.
        session: Session,
    },
    /// XX: send our payload (msg3) and wait for the listener's verdict.
    AwaitVerdict {
        /// The next state.
        next: AwaitVerdict,
        /// Message 3, to send.
        message: Vec<u8>,
    },
}

impl Initiator {
    /// Starts a handshake. With `expected` set and the ledger holding its
    /// Noise key, uses IK; otherwise XX. Returns the first message.
    pub fn start(
        local: &Local<'_>,
        binding: &ChannelBinding,
        ledger: &dyn Directory,
        expected: Option<Did>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let remote = expected.and_then(|did| ledger.standing(&did)).map(|s| *s.keys.noise.as_bytes());
        match remote {
            Some(key) => Self::begin(local, binding, Pattern::Ik, Some(&key), expected),
            None => Self::begin(local, binding, Pattern::Xx, None, expected),
        }
    }

    /// Starts an XX handshake: for a bare address, or to retry after IK
    /// failed because the peer rotated its Noise key.
    pub fn start_xx(
        local: &Local<'_>,
        binding: &ChannelBinding,
        expected: Option<Did>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        Self::begin(local, binding, Pattern::Xx, None, expected)
    }

    fn begin(
        local: &Local<'_>,
        binding: &ChannelBinding,
        pattern: Pattern,
        remote: Option<&[u8; 32]>,
        expected: Option<Did>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let mut state = build(pattern, local, binding, remote, true)?;
        let payload = local.payload();
        // IK carries our payload in message 1; XX's message 1 is in clear,
        // so the payload waits for message 3.
        let first = write(&mut state, if pattern == Pattern::Ik { &payload } else { &[] }, "message 1")?;
        let hello = pb::Hello {
            version: VERSION,
            pattern: match pattern {
                Pattern::Ik => pb::NoisePattern::Ik,
                Pattern::Xx => pb::NoisePattern::Xx,
            }
            .into(),
            network_id: local.network_id.0.to_vec(),
            noise: first,
        };
        Ok((Self { state, network: local.network_id, pattern, expected, payload }, hello.encode_to_vec()))
    }

    /// Which pattern this handshake uses.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Takes the listener's reply (message 2) and checks the listener.
    pub fn read_response(mut self, message: &[u8], ledger: &dyn Directory) -> Result<InitiatorStep, HandshakeError> {
        let payload = read(&mut self.state, message, "message 2")?;
        let peer =
            admission::admit(ledger, &self.network, &payload, &remote_static(&self.state)?, self.expected.as_ref())?;
        match self.pattern {
            Pattern::Ik => {
                let mut transport = into_transport(self.state)?;
                let verdict = verdict(&mut transport)?;
                Ok(InitiatorStep::Admitted { peer, verdict, session: Session::new(Box::new(transport)) })
            }
            Pattern::Xx => {
                let message = write(&mut self.state, &self.payload, "message 3")?;
                let transport = into_transport(self.state)?;
                Ok(InitiatorStep::AwaitVerdict { next: AwaitVerdict { transport: Box::new(transport), peer }, message })
            }
        }
    }
}

/// Waiting for the other side's verdict; the peer is already checked.
pub struct AwaitVerdict {
    /// Boxed: Noise states are large, and steps are moved around.
    transport: Box<TransportState>,
    peer: Admitted,
}

impl AwaitVerdict {
    /// Takes the verdict; the link is up.
    pub fn read_verdict(self, message: &[u8]) -> Result<Admitted, HandshakeError> {
        self.read_verdict_keeping_session(message).map(|(peer, _)| peer)
    }

    /// [`read_verdict`](Self::read_verdict), keeping the transport keys for
    /// a link QUIC does not encrypt.
    pub fn read_verdict_keeping_session(mut self, message: &[u8]) -> Result<(Admitted, Session), HandshakeError> {
        let mut buf = vec![0u8; frame::MAX_FRAME];
        let len = self.transport.read_message(message, &mut buf).map_err(|e| noise_err("verdict", e))?;
        let verdict = pb::Verdict::decode(&buf[..len]).map_err(|e| err(Refusal::Malformed, format!("verdict: {e}")))?;
        if !verdict.admitted {
            return Err(err(Refusal::Malformed, "peer sent a negative verdict instead of closing"));
        }
        Ok((self.peer, Session::new(self.transport)))
    }
}

/// The listener's first state.
pub struct Responder<'a> {
    local: Local<'a>,
    binding: ChannelBinding,
}

/// What the listener does after the dialer's hello.
pub enum ResponderStep {
    /// IK: the dialer is checked; send message 2 and wait for its verdict.
    AwaitVerdict {
        /// The next state.
        next: AwaitVerdict,
        /// Message 2, to send.
        message: Vec<u8>,
    },
    /// XX: send message 2 and wait for the dialer's payload.
    AwaitPayload {
        /// The next state.
        next: AwaitPayload,
        /// Message 2, to send.
        message: Vec<u8>,
    },
}

impl<'a> Responder<'a> {
    /// A listener on one connection.
    pub fn new(local: Local<'a>, binding: ChannelBinding) -> Self {
        Self { local, binding }
    }

    /// Takes the dialer's hello and first Noise message.
    pub fn read_hello(self, message: &[u8], ledger: &dyn Directory) -> Result<ResponderStep, HandshakeError> {
        let hello = pb::Hello::decode(message).map_err(|e| err(Refusal::Malformed, format!("hello: {e}")))?;
        if hello.version != VERSION {
            return Err(err(Refusal::UnsupportedVersion, format!("handshake version {}", hello.version)));
        }
        if hello.network_id != self.local.network_id.0 {
            return Err(err(Refusal::WrongNetwork, "dialer's network id is not ours"));
        }
        let pattern = match pb::NoisePattern::try_from(hello.pattern) {
            Ok(pb::NoisePattern::Ik) => Pattern::Ik,
            Ok(pb::NoisePattern::Xx) => Pattern::Xx,
            _ => return Err(err(Refusal::Malformed, format!("unknown pattern {}", hello.pattern))),
        };
        let mut state = build(pattern, &self.local, &self.binding, None, false)?;
        let payload = read(&mut state, &hello.noise, "message 1")?;
        let own = self.local.payload();
        match pattern {
            Pattern::Ik => {
                let peer = admission::admit(ledger, &self.local.network_id, &payload, &remote_static(&state)?, None)?;
                let message = write(&mut state, &own, "message 2")?;
                let transport = into_transport(state)?;
                Ok(ResponderStep::AwaitVerdict { next: AwaitVerdict { transport: Box::new(transport), peer }, message })
            }
            Pattern::Xx => {
                if !payload.is_empty() {
                    return Err(err(Refusal::Malformed, "XX message 1 carries a payload"));
                }
                let message = write(&mut state, &own, "message 2")?;
                let next = AwaitPayload { state: Box::new(state), network: self.local.network_id };
                Ok(ResponderStep::AwaitPayload { next, message })
            }
        }
    }
}

/// XX listener waiting for the dialer's payload (message 3).
pub struct AwaitPayload {
    /// Boxed: a Noise handshake state is large, and steps are moved around.
    state: Box<HandshakeState>,
    network: EntryHash,
}

impl AwaitPayload {
    /// Takes message 3, checks the dialer, and returns it with the verdict
    /// to send.
    pub fn read_payload(self, message: &[u8], ledger: &dyn Directory) -> Result<(Admitted, Vec<u8>), HandshakeError> {
        self.read_payload_keeping_session(message, ledger).map(|(peer, verdict, _)| (peer, verdict))
    }

    /// [`read_payload`](Self::read_payload), keeping the transport keys for
    /// a link QUIC does not encrypt.
    pub fn read_payload_keeping_session(
        mut self,
        message: &[u8],
        ledger: &dyn Directory,
    ) -> Result<(Admitted, Vec<u8>, Session), HandshakeError> {
        let payload = read(&mut self.state, message, "message 3")?;
        let peer = admission::admit(ledger, &self.network, &payload, &remote_static(&self.state)?, None)?;
        let mut transport = into_transport(*self.state)?;
        let verdict = verdict(&mut transport)?;
        Ok((peer, verdict, Session::new(Box::new(transport))))
    }
}

#[cfg(test)]
mod tests;
