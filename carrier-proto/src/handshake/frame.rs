//! Handshake framing: a 2-byte big-endian length, then the message.

use super::refusal::{HandshakeError, Refusal};
use crate::ledger::MAX_NOTE_SIZE;

/// Largest handshake message: the largest checkpoint note any node may
/// hold, with room for the rest of the payload (DID, key, signature:
/// about 180 bytes) and Noise's keys and tags (112 bytes). A test checks a
/// payload with the largest note fits.
pub const MAX_FRAME: usize = MAX_NOTE_SIZE + 512;
/// Bytes of the length prefix.
pub const FRAME_HEADER: usize = 2;

/// Prefixes `message` with its length.
pub fn encode(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + message.len());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Reads the length prefix, refusing frames over [`MAX_FRAME`] before any of
/// their bytes are read.
pub fn body_len(header: [u8; FRAME_HEADER]) -> Result<usize, HandshakeError> {
    let len = u16::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(HandshakeError::new(Refusal::Malformed, format!("frame of {len} bytes, limit {MAX_FRAME}")));
    }
    if len == 0 {
        return Err(HandshakeError::new(Refusal::Malformed, "empty frame"));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let framed = encode(b"hello");
        assert_eq!(body_len([framed[0], framed[1]]), Ok(5));
        assert_eq!(&framed[2..], b"hello");
    }

    #[test]
    fn rejects_oversized_and_empty_frames() {
        let oversized = ((MAX_FRAME + 1) as u16).to_be_bytes();
        assert_eq!(body_len(oversized).unwrap_err().reason, Refusal::Malformed);
        assert_eq!(body_len([0xff, 0xff]).unwrap_err().reason, Refusal::Malformed);
        assert_eq!(body_len([0, 0]).unwrap_err().reason, Refusal::Malformed);
    }
}
