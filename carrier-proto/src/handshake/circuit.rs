//! The handshake over a relayed circuit: the binding that ties it to the
//! circuit, and the frames that replace QUIC's close codes.
//!
//! A circuit is a byte stream that a relay splices between two devices. It
//! has no keying material to export, so the Noise prologue binds what both
//! ends know of the circuit instead: the dialer and the listener, each by
//! its libp2p peer id (which names its ledger key). The listener knows the
//! dialer only from the relay's word, so a relay that reports another
//! source than the real dialer, or that splices the handshake onto a
//! circuit to someone else, breaks the first decryption. The relay itself
//! is left out: a listener cannot always tell which of its relays carried a
//! circuit, and a handshake moved from one relay's circuit to another's
//! between the same two devices gains an attacker nothing (the records
//! stay sealed end to end).
//!
//! A byte stream has no close code either, so each handshake frame's body
//! starts with a kind:
//!
//! ```text
//!  frame  = len: u16 BE ‖ kind: u8 ‖ …
//!  kind 0 = a handshake message follows
//!  kind 1 = refusal: code u32 BE (the QUIC close code of the same reason)
//! ```

use sha2::{Digest, Sha256};

use super::ChannelBinding;
use super::refusal::{HandshakeError, Refusal};

/// Domain tag of a circuit binding.
const CIRCUIT_TAG: &[u8] = b"carrier/1 relayed circuit";

const KIND_MESSAGE: u8 = 0;
const KIND_REFUSAL: u8 = 1;

/// The binding of a circuit from `dialer` to `listener` (each a peer id's
/// bytes). Both ends compute the same bytes only if they agree on both.
pub fn binding(dialer: &[u8], listener: &[u8]) -> ChannelBinding {
    let mut hash = Sha256::new();
    hash.update(CIRCUIT_TAG);
    for part in [dialer, listener] {
        hash.update((part.len() as u32).to_be_bytes());
        hash.update(part);
    }
    ChannelBinding(hash.finalize().into())
}

/// A handshake frame's body on a circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitFrame<'a> {
    /// The next handshake message.
    Message(&'a [u8]),
    /// The other side refused, for this reason.
    Refused(Refusal),
}

/// The body of a frame carrying handshake message `message`.
pub fn message(message: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(1 + message.len());
    body.push(KIND_MESSAGE);
    body.extend_from_slice(message);
    body
}

/// The body of a frame refusing with `reason`.
pub fn refusal(reason: Refusal) -> Vec<u8> {
    let mut body = vec![KIND_REFUSAL];
    body.extend_from_slice(&reason.code().to_be_bytes());
    body
}

/// Reads a frame body.
pub fn decode(body: &[u8]) -> Result<CircuitFrame<'_>, HandshakeError> {
    let malformed = |detail: String| HandshakeError::new(Refusal::Malformed, detail);
    match body.split_first() {
        Some((&KIND_MESSAGE, message)) if !message.is_empty() => Ok(CircuitFrame::Message(message)),
        Some((&KIND_REFUSAL, code)) => {
            let code: [u8; 4] =
                code.try_into().map_err(|_| malformed(format!("refusal frame of {} bytes", body.len())))?;
            let code = u32::from_be_bytes(code);
            Refusal::from_code(code.into())
                .map(CircuitFrame::Refused)
                .ok_or_else(|| malformed(format!("refusal with unknown code {code}")))
        }
        Some((kind, _)) => Err(malformed(format!("circuit frame of kind {kind}"))),
        None => Err(malformed("empty circuit frame".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        assert_eq!(decode(&message(b"noise")), Ok(CircuitFrame::Message(b"noise")));
        assert_eq!(decode(&refusal(Refusal::Revoked)), Ok(CircuitFrame::Refused(Refusal::Revoked)));
    }

    #[test]
    fn bad_frames_are_malformed() {
        for body in [&[][..], &[0], &[1, 0, 0], &[1, 0, 0, 0, 99], &[1, 0, 0, 0, 2, 0], &[7, 1, 2]] {
            assert_eq!(decode(body).map_err(|e| e.reason), Err(Refusal::Malformed), "{body:?}");
        }
    }

    #[test]
    fn the_binding_names_dialer_and_listener_in_order() {
        let b = binding(b"dialer", b"listener");
        assert_eq!(b, binding(b"dialer", b"listener"));
        assert_ne!(b, binding(b"other", b"listener"));
        assert_ne!(b, binding(b"listener", b"dialer"));
        // Lengths are prefixed, so parts cannot slide into each other.
        assert_ne!(binding(b"ab", b"c"), binding(b"a", b"bc"));
    }
}
