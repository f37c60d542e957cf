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
    /// Refused by the sequencer: the author sent too many requests this minute.
    #[error("{author} has had {per_minute} requests sequenced this minute, the most the genesis allows; retry later")]
    TooManyRequests {
        /// The author's key, as a DID.
        author: Did,
        /// The quota.
        per_minute: u32,
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
