//! What a handshake leaves behind when the link itself does not encrypt:
//! the Noise transport keys, sealing and opening length-prefixed records.
//!
//! Over QUIC the session is dropped (QUIC encrypts, bound to the handshake
//! by the exporter). Over a relayed circuit it is the only encryption: every
//! byte between the two devices is a [`Session`] record, so the relay in the
//! middle carries records it can neither read nor forge.
//!
//! ```text
//!  record = len: u16 BE (16..=65535) ‖ ChaCha20-Poly1305(plaintext)
//! ```

use snow::TransportState;

/// Bytes of a record's length prefix.
pub const RECORD_HEADER: usize = 2;
/// Largest sealed record body (Noise's message limit).
pub const MAX_RECORD: usize = 65535;
/// Bytes the AEAD tag adds to a plaintext.
const TAG_LEN: usize = 16;
/// Largest plaintext one record carries.
pub const MAX_PLAINTEXT: usize = MAX_RECORD - TAG_LEN;

/// Why a record could not be sealed or opened.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A plaintext over [`MAX_PLAINTEXT`] was handed to `seal`.
    #[error("plaintext of {0} bytes is over the record limit of {MAX_PLAINTEXT}")]
    TooLarge(usize),
    /// A record's length prefix is below the tag size: not a sealed record.
    #[error("record of {0} bytes is shorter than its tag; the stream is corrupt")]
    TooShort(usize),
    /// A record did not decrypt: altered, reordered, replayed or injected
    /// on the way. The link must end.
    #[error("record did not decrypt: altered or injected on the way")]
    Forged,
    /// The Noise nonce is exhausted (2^64 records); the link must be made
    /// again.
    #[error("session exhausted; link again")]
    Exhausted,
}

/// The transport keys of one admitted link.
pub struct Session {
    /// Boxed: a Noise transport state is large and moves with the link.
    transport: Box<TransportState>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    pub(super) fn new(transport: Box<TransportState>) -> Self {
        Self { transport }
    }

    /// Appends one record sealing `plaintext` to `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SessionError::TooLarge(plaintext.len()));
        }
        let start = out.len();
        let sealed = plaintext.len() + TAG_LEN;
        out.extend_from_slice(&(sealed as u16).to_be_bytes());
        out.resize(start + RECORD_HEADER + sealed, 0);
        match self.transport.write_message(plaintext, &mut out[start + RECORD_HEADER..]) {
            Ok(_) => Ok(()),
            Err(_) => {
                out.truncate(start);
                Err(SessionError::Exhausted)
            }
        }
    }

    /// The body length a record header announces, checked before its bytes
    /// are read.
    pub fn record_len(header: [u8; RECORD_HEADER]) -> Result<usize, SessionError> {
        let len = u16::from_be_bytes(header) as usize;
        if len < TAG_LEN {
            return Err(SessionError::TooShort(len));
        }
        Ok(len)
    }

    /// Opens one record body (without its header), appending the plaintext
    /// to `out`. Records open only in the order they were sealed; after an
    /// error the session is spent and the link must end.
    pub fn open(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        if body.len() < TAG_LEN {
            return Err(SessionError::TooShort(body.len()));
        }
        let start = out.len();
        out.resize(start + body.len() - TAG_LEN, 0);
        match self.transport.read_message(body, &mut out[start..]) {
            Ok(len) => {
                out.truncate(start + len);
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(SessionError::Forged)
            }
        }
    }
}
