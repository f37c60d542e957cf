//! The embedded ledger's rules: entry format, state, and verification.
//!
//! ```text
//!  bytes ─▶ Entry::decode ─▶ signature check ─▶ LedgerState::apply ─▶ index
//!           (shape)          (batch on replay)   (chain, authority)
//! ```
//!
//! This module is sans-IO: storage lives in the daemon, which feeds stored
//! bytes to [`replay`] on start-up and new entries to [`LedgerState::append`].
//!
//! Authority, in one place:
//! - genesis: entry 0 only, signed by one of the registrars it names;
//! - register device: a registrar;
//! - register app: the hosting device's current key;
//! - rotate keys, revoke: the subject's current key, its hosting device (for
//!   apps), or a registrar. Revocation is final, and revoking a device
//!   revokes its apps. No key is ever used by two identities.

mod consent;
mod directory;
mod entry;
mod error;
mod state;
mod verify;

pub use consent::{CONSENT_PREFIX, Consent, ConsentError};
pub use directory::{Directory, Kind, Standing};
pub use entry::{Entry, EntryBody, EntryError, EntryHash, MAX_ENTRY_SIZE, MAX_LIST_LEN, MAX_TEXT_LEN, Op};
pub use error::{LedgerError, Rejection};
pub use state::{Head, LedgerState, Network, Record, Resolution, Revocation, Status, Subject};
pub use verify::{Replay, replay};

#[cfg(test)]
mod tests;
