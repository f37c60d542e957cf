//! The embedded ledger's rules: entry format, state, the Merkle log and its
//! checkpoints, and the sequencer.
//!
//! ```text
//!  author signs a request (Entry) ─▶ Sequencer: quotas, clock, rules ─▶ next leaf
//!                                     signs a Checkpoint (size, root)
//!  any node: bytes ─▶ Entry::decode ─▶ signature ─▶ LedgerState::append ─▶ index + tree
//!            checkpoint note ─▶ SignedCheckpoint::verify (log key) ─▶ proofs (merkle)
//! ```
//!
//! This module is sans-IO: storage and sync live in the daemon, which feeds
//! stored bytes to [`replay`] on start-up and new entries to
//! [`LedgerState::append`].
//!
//! Authority, in one place:
//! - genesis: entry 0 only, signed by one of the registrars it names; it
//!   names the log key, which is no registrar and authors nothing;
//! - register device: a registrar;
//! - register app: the hosting device's current key;
//! - rotate keys, revoke: the subject's current key, its hosting device (for
//!   apps), or a registrar. Revocation is final, and revoking a device
//!   revokes its apps. No key is ever used by two identities.

mod checkpoint;
mod consent;
mod directory;
mod entry;
mod error;
mod evidence;
mod invite;
pub mod merkle;
mod sequencer;
mod state;
mod verify;

pub use checkpoint::{
    Checkpoint, CheckpointError, MAX_NOTE_SIZE, SignedCheckpoint, origin, parse_verifier_key, verifier_key,
};
pub use consent::{CONSENT_PREFIX, Consent, ConsentError};
pub use directory::{Directory, Kind, Standing};
pub use entry::{
    DEFAULT_MAX_APPS_PER_DEVICE, DEFAULT_MAX_REQUESTS_PER_MINUTE, Entry, EntryBody, EntryError, EntryHash,
    MAX_ENTRY_SIZE, MAX_LIST_LEN, MAX_TEXT_LEN, Op, Quotas,
};
pub use error::{LedgerError, Rejection};
pub use evidence::{Comparison, compare};
pub use invite::{INVITE_PREFIX, Invite, InviteError, MAX_BOOTSTRAP};
pub use sequencer::{CLOCK_SKEW_MS, Sequencer};
pub use state::{Head, LedgerState, Network, Record, Resolution, Revocation, Status, Subject};
pub use verify::{BatchError, Replay, VerifiedBatch, check_batch, replay};

#[cfg(test)]
mod tests;
