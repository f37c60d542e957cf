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

mod catchup;
mod checkpoint;
mod consent;
mod cosignature;
mod directory;
mod entry;
mod error;
mod evidence;
mod genesis;
mod handover;
mod invite;
pub mod merkle;
mod note;
mod promise;
mod revocations;
mod sequencer;
mod state;
mod verify;
mod witness;

pub use catchup::{Answer, CatchUp, CatchUpError, Checked, Fetch, Held, Judgement, judge, says_more};
pub use checkpoint::{
    Checkpoint, CheckpointError, Cosignature, LogTrust, SignedCheckpoint, check_note_shape, origin, parse_verifier_key,
    verifier_key,
};
pub use consent::{CONSENT_PREFIX, Consent, ConsentError};
pub use cosignature::{ALG_COSIGNATURE_V1, MAX_WITNESS_NAME, WitnessKey, WitnessKeyError};
pub use directory::{Directory, Kind, Standing};
pub use entry::{
    DEFAULT_REQUEST_LIFETIME_MS, Entry, EntryBody, EntryError, EntryHash, MAX_ENTRY_SIZE, MAX_LIST_LEN, MAX_TEXT_LEN,
    Op,
};
pub use error::{LedgerError, Rejection};
pub use evidence::{EVIDENCE_PREFIX, EvidenceError, Fork, MAX_EVIDENCE_SIZE};
pub use genesis::{
    DEFAULT_MAX_APPS_PER_DEVICE, DEFAULT_MAX_REQUEST_LIFETIME_S, DEFAULT_MAX_REQUESTS_PER_DAY,
    DEFAULT_MAX_REQUESTS_PER_MINUTE, DEFAULT_MAX_ROTATIONS_PER_DAY, DEFAULT_REGISTRAR_REQUESTS_PER_DAY,
    DEFAULT_REGISTRAR_REQUESTS_PER_MINUTE, MAX_WITNESSES, Quotas, WitnessPolicy,
};
pub use handover::{Approval, MAX_SEEN_HANDOVERS, SeenHandovers, handover_message};
pub use invite::{INVITE_PREFIX, Invite, InviteError, MAX_BOOTSTRAP};
pub use note::{MAX_NOTE_SIZE, MAX_SIGNATURE_LINES};
pub use promise::{
    BROKEN_PROMISE_PREFIX, BrokenPromise, MAX_ANSWER_SIZE, MAX_BROKEN_PROMISE_SIZE, MAX_PROMISE_DEADLINE_MS,
    PromiseError, SequencerAnswer, Verdict, Word,
};
pub use revocations::{Admitted, MAX_SEEN_REVOCATIONS, RevocationRefusal, SeenRevocations};
pub use sequencer::{CLOCK_SKEW_MS, Sequencer};
pub use state::{Head, LedgerState, Network, Record, Resolution, Revocation, Status, Subject};
pub use verify::{BatchError, Replay, VerifiedBatch, check_batch, replay};
pub use witness::{Cosigned, MAX_PROOF_HASHES, WitnessRefusal, WitnessedHead, add_checkpoint, witness_key_of};

#[cfg(test)]
mod tests;
