//! The question every admission and delivery decision asks of a ledger,
//! whatever keeps it: "what is this DID now?". [`Directory`] is that one
//! question; [`Standing`] is its owned answer, so the caller holds no lock
//! or borrow of the ledger while it decides.
//!
//! The handshake takes a `&dyn Directory`, so it runs against the embedded
//! [`LedgerState`] here and against any other back-end the daemon has.

use super::state::{LedgerState, Status, Subject};
use crate::identity::{Did, PublicKeys};

/// Device or app, without the details only people read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A device running a daemon.
    Device,
    /// An app hosted by `host`.
    App {
        /// The hosting device.
        host: Did,
    },
}

/// What one DID is on the ledger now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The DID asked about.
    pub did: Did,
    /// Device or app (and its host).
    pub kind: Kind,
    /// Its current keys.
    pub keys: PublicKeys,
    /// Active, revoked, or revoked with its host.
    pub status: Status,
}

impl Standing {
    /// Registered, not revoked, and (for apps) hosted by an active device.
    pub fn is_active(&self) -> bool {
        self.status == Status::Active
    }

    /// An active device.
    pub fn is_active_device(&self) -> bool {
        self.kind == Kind::Device && self.is_active()
    }

    /// The device hosting this app; `None` for a device.
    pub fn host(&self) -> Option<Did> {
        match self.kind {
            Kind::App { host } => Some(host),
            Kind::Device => None,
        }
    }
}

/// Looks DIDs up on a ledger.
pub trait Directory {
    /// What `did` is now; `None` if the ledger never registered it.
    fn standing(&self, did: &Did) -> Option<Standing>;
}

impl Directory for LedgerState {
    fn standing(&self, did: &Did) -> Option<Standing> {
        let resolution = self.resolve(did)?;
        let kind = match &resolution.record.subject {
            Subject::Device { .. } => Kind::Device,
            Subject::App { device, .. } => Kind::App { host: *device },
        };
        Some(Standing { did: *did, kind, keys: resolution.record.keys, status: resolution.status })
    }
}
