//! The rules of app messaging that need no socket: how an app proves its
//! key on the app socket, what a message id is, how a receiver keeps
//! messages at most once and in order, and who an allow list lets in.
//!
//! ```text
//!  daemon ──challenge(nonce, device)──▶ app
//!  app ──hello(app DID, sign(APP_AUTH, nonce ‖ device))──▶ daemon: verify with the
//!        app's key from the ledger
//!
//!  sender daemon: MessageId { epoch (random per run), seq (increasing) }
//!  receiver daemon: ReplayGuard per (from app, to app): seq must grow
//! ```

use std::collections::{HashMap, HashSet};

use std::fmt;

use crate::domain;
use crate::identity::{Did, Identity, SigningPublicKey};

/// Bytes of an app-socket challenge nonce.
pub const NONCE_LEN: usize = 32;
/// Room for the rest of a frame around a message payload: a frame on the
/// app socket or a message stream may be the message limit plus this.
pub const FRAME_OVERHEAD: usize = 64 * 1024;
/// Send buffer each end of an app stream's socket asks for. The default
/// (about 200 KiB) makes a bulk writer wait on its reader every few hundred
/// kilobytes, each wait a context switch on both sides.
pub const STREAM_SOCKET_BUFFER: usize = 1 << 20;

/// The bytes an app signs to answer a challenge: the nonce, then the
/// daemon's device DID (so an answer for one daemon is useless at another).
fn challenge_message(nonce: &[u8; NONCE_LEN], device: &Did) -> Vec<u8> {
    let mut message = nonce.to_vec();
    message.extend_from_slice(device.to_string().as_bytes());
    message
}

/// The app's answer to a challenge.
pub fn sign_challenge(app: &Identity, nonce: &[u8; NONCE_LEN], device: &Did) -> [u8; 64] {
    app.sign(domain::APP_AUTH, &challenge_message(nonce, device))
}

/// Whether `signature` answers the challenge with the key `app_key`.
pub fn verify_challenge(app_key: &SigningPublicKey, nonce: &[u8; NONCE_LEN], device: &Did, signature: &[u8]) -> bool {
    let Ok(signature) = <[u8; 64]>::try_from(signature) else { return false };
    app_key.verify(domain::APP_AUTH, &challenge_message(nonce, device), &signature)
}

/// A message's id: the sending daemon's run (`epoch`, random) and the
/// message's place in that run (`seq`, increasing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// Random per sending daemon run.
    pub epoch: [u8; 16],
    /// Increasing within the epoch.
    pub seq: u64,
}

/// Bytes of an encoded [`MessageId`].
pub const MESSAGE_ID_LEN: usize = 24;

impl MessageId {
    /// The 24-byte form: epoch, then seq big-endian.
    pub fn to_bytes(&self) -> [u8; MESSAGE_ID_LEN] {
        let mut out = [0u8; MESSAGE_ID_LEN];
        out[..16].copy_from_slice(&self.epoch);
        out[16..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// Reads the 24-byte form; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let epoch: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        let seq: [u8; 8] = bytes.get(16..)?.try_into().ok()?;
        Some(Self { epoch, seq: u64::from_be_bytes(seq) })
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.epoch[..4] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "-{}", self.seq)
    }
}

pub use crate::replay::{MAX_EPOCHS, PairState, Seen, WINDOW};

/// Keeps a receiver's messages at most once per pair of apps.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    pairs: HashMap<(Did, Did), PairState>,
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// What `id` (of a run that started at `started_ms`, 0 if unknown)
    /// from `from` to `to` is.
    pub fn check(&self, from: Did, to: Did, id: MessageId, started_ms: u64) -> Seen {
        self.pairs.get(&(from, to)).map_or(Seen::Fresh, |pair| pair.check(id.epoch, id.seq, started_ms))
    }

    /// Whether `id` from `from` to `to` was taken (in a run remembered).
    pub fn seen(&self, from: Did, to: Did, id: MessageId) -> bool {
        self.pairs.get(&(from, to)).is_some_and(|pair| pair.taken(id.epoch, id.seq))
    }

    /// Records `id` as taken if it is fresh; returns what it was.
    pub fn admit(&mut self, from: Did, to: Did, id: MessageId, started_ms: u64) -> Seen {
        let seen = self.check(from, to, id, started_ms);
        if seen == Seen::Fresh {
            self.pairs.entry((from, to)).or_default().take(id.epoch, id.seq, started_ms);
        }
        seen
    }

    /// The pair's state, to store.
    pub fn state(&self, from: Did, to: Did) -> Option<&PairState> {
        self.pairs.get(&(from, to))
    }

    /// Sets a pair's state (from disk, at start).
    pub fn restore(&mut self, from: Did, to: Did, state: PairState) {
        self.pairs.insert((from, to), state);
    }
}

/// Who may message an app or open one of its services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    /// Any app the ledger shows as active.
    pub any_active: bool,
    /// These apps.
    pub dids: HashSet<Did>,
}

impl Default for AllowList {
    /// Any active app: the default for messages and services.
    fn default() -> Self {
        Self::any_active()
    }
}

impl AllowList {
    /// Any active app.
    pub fn any_active() -> Self {
        Self { any_active: true, dids: HashSet::new() }
    }

    /// Only these apps.
    pub fn only(dids: impl IntoIterator<Item = Did>) -> Self {
        Self { any_active: false, dids: dids.into_iter().collect() }
    }

    /// Whether `sender` may come in; `sender_active` is what the ledger says
    /// of it now. A revoked sender never passes, whatever the list says.
    pub fn permits(&self, sender: &Did, sender_active: bool) -> bool {
        sender_active && (self.any_active || self.dids.contains(sender))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKind;

    fn did() -> Did {
        Identity::generate(IdentityKind::App).did()
    }

    #[test]
    fn a_challenge_answer_verifies_only_for_its_nonce_device_and_key() {
        let app = Identity::generate(IdentityKind::App);
        let device = did();
        let nonce = [7u8; NONCE_LEN];
        let signature = sign_challenge(&app, &nonce, &device);
        assert!(verify_challenge(&app.signing_key(), &nonce, &device, &signature));
        assert!(!verify_challenge(&app.signing_key(), &[8u8; NONCE_LEN], &device, &signature), "other nonce");
        assert!(!verify_challenge(&app.signing_key(), &nonce, &did(), &signature), "other daemon");
        let other = Identity::generate(IdentityKind::App);
        assert!(!verify_challenge(&other.signing_key(), &nonce, &device, &signature), "other key");
        assert!(!verify_challenge(&app.signing_key(), &nonce, &device, &signature[..63]), "short signature");
    }

    #[test]
    fn message_ids_round_trip_and_reject_other_lengths() {
        let id = MessageId { epoch: [3; 16], seq: 0x0102_0304_0506_0708 };
        assert_eq!(MessageId::from_bytes(&id.to_bytes()), Some(id));
        assert_eq!(MessageId::from_bytes(&id.to_bytes()[..23]), None);
        assert_eq!(MessageId::from_bytes(&[0; 25]), None);
        assert_eq!(id.to_string(), "03030303-72623859790382856");
    }

    #[test]
    fn allow_lists_never_let_a_revoked_sender_in() {
        let (friend, stranger) = (did(), did());
        let any = AllowList::default();
        assert!(any.permits(&stranger, true));
        assert!(!any.permits(&stranger, false));
        let only = AllowList::only([friend]);
        assert!(only.permits(&friend, true));
        assert!(!only.permits(&stranger, true));
        assert!(!only.permits(&friend, false));
        assert!(!AllowList::only([]).permits(&friend, true), "an empty list lets nobody in");
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod replay_tests;
