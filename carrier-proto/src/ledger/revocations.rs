//! Revocations that take effect before the log holds them.
//!
//! A revocation can only remove rights, and only its author can sign it (a
//! registrar, or the subject or its device: the ledger's own rule). So a
//! daemon need not wait for the sequencer, nor for witnesses: a revocation
//! request that verifies against its ledger now is in force from the moment
//! the daemon sees it, and passed on. A dead sequencer, or one that drops
//! the request, delays the log, never the revocation.
//!
//! ```text
//!  signed Revoke request ─▶ admit: a revocation? signature and authority
//!                            (check_request), not expired, not from the future
//!                         ─▶ in force: standing() says RevokedUnsequenced
//!                            (and HostRevoked for the device's apps)
//!  the log sequences it  ─▶ settle: the ledger says Revoked; forgotten here
//! ```

use std::collections::HashMap;

use super::entry::{Entry, EntryHash, Op};
use super::error::Rejection;
use super::sequencer::{CLOCK_SKEW_MS, check_expiry};
use super::state::{LedgerState, Status, Subject};
use crate::identity::Did;

/// Most revocations held at once, waiting for the log. Each needs a
/// registrar's or the subject's own signature, so an insider fills this
/// only with revocations of itself and its apps.
pub const MAX_SEEN_REVOCATIONS: usize = 4096;

/// Why a revocation request was not put in force.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationRefusal {
    /// Only revocations take effect before they are sequenced.
    #[error("a {0} request waits for the log; only revocations take effect at once")]
    NotARevocation(&'static str),
    /// The ledger refuses it (signature, authority, subject unknown or
    /// revoked already, expired, from the future).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Too many revocations wait for the log.
    #[error("{MAX_SEEN_REVOCATIONS} revocations wait for the log already")]
    Full,
}

/// What [`SeenRevocations::admit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// In force from now on: this DID is revoked.
    New(Did),
    /// Already in force here.
    Known,
}

/// Revocation requests in force before the log holds them.
#[derive(Debug, Default, Clone)]
pub struct SeenRevocations {
    /// By the DID each revokes.
    by_did: HashMap<Did, Entry>,
}

impl SeenRevocations {
    /// Puts `entry` in force if it is a revocation the ledger `state` would
    /// take now (at `now_ms`).
    pub fn admit(&mut self, state: &LedgerState, entry: &Entry, now_ms: u64) -> Result<Admitted, RevocationRefusal> {
        let Op::Revoke { did, .. } = entry.op() else {
            return Err(RevocationRefusal::NotARevocation(entry.op().name()));
        };
        if self.by_did.get(did).is_some_and(|held| held.hash() == entry.hash()) {
            return Ok(Admitted::Known);
        }
        let body = entry.body();
        let ahead_ms = body.time_ms.saturating_sub(now_ms);
        if ahead_ms > CLOCK_SKEW_MS {
            return Err(Rejection::FromTheFuture { ahead_ms }.into());
        }
        if let Some(network) = state.network() {
            check_expiry(network, body.time_ms, body.expires_ms, now_ms)?;
        }
        state.check_request(entry)?;
        if self.by_did.contains_key(did) {
            return Ok(Admitted::Known); // another request revoking the same DID
        }
        if self.by_did.len() >= MAX_SEEN_REVOCATIONS {
            return Err(RevocationRefusal::Full);
        }
        self.by_did.insert(*did, entry.clone());
        Ok(Admitted::New(*did))
    }

    /// The status `did` has here, if a revocation in force changes what
    /// `state` says: revoked itself, or an app whose device is.
    pub fn status(&self, state: &LedgerState, did: &Did) -> Option<Status> {
        if let Some(entry) = self.by_did.get(did) {
            let reason = match entry.op() {
                Op::Revoke { reason, .. } => reason.clone(),
                _ => String::new(),
            };
            return Some(Status::RevokedUnsequenced { reason });
        }
        match &state.resolve(did)?.record.subject {
            Subject::App { device, .. } if self.by_did.contains_key(device) => Some(Status::HostRevoked(*device)),
            _ => None,
        }
    }

    /// Forgets the revocations `state` now holds in force itself (sequenced,
    /// or the DID revoked by another entry); returns how many.
    pub fn settle(&mut self, state: &LedgerState) -> usize {
        let before = self.by_did.len();
        self.by_did.retain(|did, _| state.resolve(did).is_some_and(|r| r.status == Status::Active));
        before - self.by_did.len()
    }

    /// The requests in force, to pass on and to send to the sequencer.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.by_did.values()
    }

    /// Whether the request with leaf hash `hash` is in force here.
    pub fn holds(&self, hash: &EntryHash) -> bool {
        self.by_did.values().any(|e| e.hash() == *hash)
    }

    /// How many wait for the log.
    pub fn len(&self) -> usize {
        self.by_did.len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.by_did.is_empty()
    }
}

#[cfg(test)]
#[path = "revocations_tests.rs"]
mod tests;
