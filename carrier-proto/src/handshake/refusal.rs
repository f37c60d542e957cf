//! Why a link is refused, as one enum with one QUIC close code per reason.
//!
//! A refused peer learns only the bare code; the detail (which DID, which
//! key) stays in the local log, so strangers learn nothing about the ledger.

use std::fmt;

/// The reason a handshake or a live link ends. The discriminant is the QUIC
/// application close code.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Refusal {
    /// The DID is not on the ledger.
    UnknownIdentity = 1,
    /// The DID (or its hosting device) is revoked.
    Revoked = 2,
    /// The presented keys are not the keys the ledger holds for the DID.
    KeyMismatch = 3,
    /// The peer belongs to another network (another genesis).
    WrongNetwork = 4,
    /// The Noise handshake did not decrypt: relayed from another connection,
    /// replayed, or dialed with a stale key.
    BadBinding = 5,
    /// The handshake took too long.
    Timeout = 6,
    /// A handshake message is not well-formed (garbage, truncated, oversized).
    Malformed = 7,
    /// The peer speaks another handshake version.
    UnsupportedVersion = 8,
    /// The peer is registered, but not the one that was dialed.
    WrongPeer = 9,
    /// Too many handshakes in flight; try again later.
    Busy = 10,
    /// The daemon is shutting down.
    Shutdown = 11,
    /// The identity is registered, but not as a device (an app's key):
    /// only devices hold links.
    NotADevice = 12,
    /// The checkpoint note in the handshake is oversized or not a
    /// checkpoint of this network's log.
    BadCheckpoint = 13,
}

impl Refusal {
    const ALL: [Refusal; 13] = [
        Refusal::UnknownIdentity,
        Refusal::Revoked,
        Refusal::KeyMismatch,
        Refusal::WrongNetwork,
        Refusal::BadBinding,
        Refusal::Timeout,
        Refusal::Malformed,
        Refusal::UnsupportedVersion,
        Refusal::WrongPeer,
        Refusal::Busy,
        Refusal::Shutdown,
        Refusal::NotADevice,
        Refusal::BadCheckpoint,
    ];

    /// The QUIC application close code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The reason behind a close code, if it is one of ours.
    pub fn from_code(code: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|r| u64::from(r.code()) == code)
    }

    /// Short name for logs and close frames.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownIdentity => "unknown identity",
            Refusal::Revoked => "revoked",
            Refusal::KeyMismatch => "key mismatch",
            Refusal::WrongNetwork => "wrong network",
            Refusal::BadBinding => "bad channel binding",
            Refusal::Timeout => "handshake timeout",
            Refusal::Malformed => "malformed handshake",
            Refusal::UnsupportedVersion => "unsupported version",
            Refusal::WrongPeer => "wrong peer",
            Refusal::Busy => "busy",
            Refusal::Shutdown => "shutting down",
            Refusal::NotADevice => "not a device",
            Refusal::BadCheckpoint => "bad checkpoint note",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handshake failed: the reason (sent to the peer as a close code) and the
/// detail (for the local log only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct HandshakeError {
    /// What the peer is told.
    pub reason: Refusal,
    /// What only the local log says.
    pub detail: String,
}

impl HandshakeError {
    /// A refusal with its local detail.
    pub fn new(reason: Refusal, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for reason in Refusal::ALL {
            assert_eq!(Refusal::from_code(reason.code().into()), Some(reason));
        }
        let codes: std::collections::HashSet<u32> = Refusal::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Refusal::ALL.len());
        assert_eq!(Refusal::from_code(0), None);
        assert_eq!(Refusal::from_code(u64::MAX), None);
    }
}
