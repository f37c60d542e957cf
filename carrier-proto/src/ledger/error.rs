//! Why a ledger entry was refused: one variant per broken rule, and the
//! entry's position with it.

use super::entry::{EntryError, EntryHash};
use crate::identity::Did;

/// A ledger failed verification at one entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ledger entry {index}: {reason}")]
pub struct LedgerError {
    /// Position of the offending entry (0 is genesis).
    pub index: u64,
    /// The rule it broke.
    pub reason: Rejection,
}

/// The rule an entry broke.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The bytes are not a well-formed entry.
    #[error("malformed: {0}")]
    Malformed(#[from] EntryError),
    /// The signature does not verify against the signer key.
    #[error("bad signature: the entry was altered or not signed by its signer")]
    BadSignature,
    /// Signed for another network (or a genesis naming a network).
    #[error("the entry is for network {found}, not this one ({expected})")]
    WrongNetwork {
        /// This network's id.
        expected: EntryHash,
        /// The entry's.
        found: EntryHash,
    },
    /// The very same entry is in the log already (a retried request).
    #[error("the entry is in the log already, at {0}")]
    AlreadyInLog(u64),
    /// The log key signed an entry: the sequencer orders, it never authors.
    #[error("the log key may only sign checkpoints, never author an entry")]
    LogKeyAuthors,
    /// A genesis whose log key is also a registrar.
    #[error("the genesis log key must not also be a registrar")]
    LogKeyIsRegistrar,
    /// A device registered as many apps as the genesis allows.
    #[error("{device} has registered {max} apps, the most the genesis allows")]
    TooManyApps {
        /// The device.
        device: Did,
        /// The quota.
        max: u32,
    },
    /// Refused by the sequencer: the entry's time is too far in its future.
    #[error("the entry is dated {ahead_ms} ms ahead of the sequencer's clock; check the author's clock")]
    FromTheFuture {
        /// How far ahead.
        ahead_ms: u64,
    },
    /// Refused by the sequencer: the subject (a device with its apps, or a
    /// registrar) had its quota of requests sequenced this minute or day.
    #[error("{subject} has had {quota} requests sequenced this {per}, the most the genesis allows; retry later")]
    TooManyRequests {
        /// The device (for itself or its apps) or registrar, as a DID.
        subject: Did,
        /// The quota.
        quota: u32,
        /// "minute" or "day".
        per: &'static str,
    },
    /// Refused by the sequencer: the DID's keys were rotated as often today
    /// as the genesis allows.
    #[error("{did} has had its keys rotated {per_day} times today, the most the genesis allows; retry tomorrow")]
    TooManyRotations {
        /// Whose keys.
        did: Did,
        /// The quota.
        per_day: u32,
    },
    /// Refused by the sequencer: the request names no expiry.
    #[error("the request names no expiry; sign it again with this version's tools")]
    NoExpiry,
    /// Refused by the sequencer: the request expired (a replay, or it
    /// waited too long); the author must sign it again.
    #[error("the request expired {ago_ms} ms ago; its author must sign it again")]
    Expired {
        /// How long ago.
        ago_ms: u64,
    },
    /// Refused by the sequencer: the request would live longer than the
    /// genesis allows.
    #[error("the request would live longer than the {max_s} s the genesis allows")]
    LivesTooLong {
        /// The limit, in seconds.
        max_s: u64,
    },
    /// The first entry is not a genesis.
    #[error("the first entry must be a genesis")]
    NotGenesis,
    /// A genesis after the first entry.
    #[error("genesis may only be the first entry")]
    GenesisNotFirst,
    /// A genesis with no registrar keys.
    #[error("genesis names no registrar")]
    NoRegistrars,
    /// A genesis naming one witness twice, or a witness key that is also
    /// the log key or a registrar's.
    #[error("genesis names a witness twice, or a witness key that is also the log key or a registrar's")]
    DuplicateWitness,
    /// A genesis naming one key twice.
    #[error("genesis names a registrar twice")]
    DuplicateRegistrar,
    /// The signer has no authority for this operation.
    #[error("signer {signer} has no authority for this operation")]
    Unauthorized {
        /// The signer's key, as a DID.
        signer: Did,
    },
    /// An app registered by a device other than its host.
    #[error("app must be registered by its hosting device {device}, not by {signer}")]
    NotHostDevice {
        /// The signer's key, as a DID.
        signer: Did,
        /// The named host.
        device: Did,
    },
    /// An app's named host is an app.
    #[error("{0} is not a device and cannot host apps")]
    NotADevice(Did),
    /// The DID is registered already.
    #[error("{0} is already registered")]
    AlreadyRegistered(Did),
    /// The DID is not the DID of the registered signing key.
    #[error("{0} is not the DID of the signing key it is registered with")]
    DidKeyMismatch(Did),
    /// A key that some identity holds or held.
    #[error("a key in this entry is already used by another identity")]
    KeyReused,
    /// A handover approval that does not verify, or is not a registrar's
    /// (other than the author) or the current log key's.
    #[error("the handover approval by {0} does not count: not a valid signature by another registrar or the log key")]
    BadApproval(Did),
    /// A handover handed to a sequencer other than the one it names (under
    /// its new log key), or not first in its batch.
    #[error("a handover is sequenced first thing by the sequencer it names, under its new log key")]
    HandoverElsewhere,
    /// A handover signed by too few registrars, and not countersigned by
    /// the current log key.
    #[error("a handover needs {need} registrars' signatures (or the current log key's), found {have}")]
    HandoverQuorum {
        /// Registrars that signed.
        have: usize,
        /// The genesis's handover quorum.
        need: usize,
    },
    /// The app did not consent to this host in this network.
    #[error("{0} did not consent to this device in this network; register it with the app's own consent")]
    NoConsent(Did),
    /// A key in the entry cannot be trusted as an identity's key.
    #[error("the {which} key is unusable: {why}")]
    UntrustedKey {
        /// Which key: "signing" or "noise".
        which: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The DID is not registered.
    #[error("{0} is not registered")]
    UnknownDid(Did),
    /// The DID (or its hosting device) is revoked; revocation is final.
    #[error("{0} is revoked; revocation is final")]
    Revoked(Did),
}
