//! The sequencer: the one holder of the log key, which orders authors'
//! requests into the log and signs checkpoints. It adds rules of its own to
//! the ledger's, and it can author nothing (the ledger refuses any entry
//! the log key signs):
//!
//! - an author's clock may not run ahead of its clock;
//! - a request expires ([`Rejection::Expired`]), so one captured on the way
//!   cannot be played back later, and may not live longer than the genesis
//!   allows;
//! - quotas per *subject*, over a minute and a day: a device and its apps
//!   together, whichever of their keys signs (so rotating a key does not
//!   reset them), and each registrar on its own; rotations per DID per
//!   day. Revocations are never held back (they only remove rights, and
//!   each DID can be revoked once), but they count.
//!
//! Sans-IO like the rest: the caller passes the time and a `persist` step
//! that makes the entry durable before the state changes, and decides when
//! to sign a checkpoint (once per batch, so commits are grouped).

use std::collections::HashMap;

use super::checkpoint::{Checkpoint, SignedCheckpoint};
use super::entry::{Entry, EntryHash, Op};
use super::error::Rejection;
use super::promise::{SequencerAnswer, Word};
use super::state::{LedgerState, Network, Subject};
use crate::identity::{Did, Identity, SigningPublicKey};

/// How far ahead of the sequencer's clock an entry may be dated.
pub const CLOCK_SKEW_MS: u64 = 120_000;
const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 3600 * 1000;

/// Whom a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Quotaed {
    /// A device and its apps.
    Device(Did),
    /// A registrar's key.
    Registrar(SigningPublicKey),
}

/// Counts per key in the current window (a calendar minute or day, UTC).
#[derive(Debug)]
struct Window<K> {
    index: u64,
    counts: HashMap<K, u32>,
}

impl<K> Default for Window<K> {
    fn default() -> Self {
        Self { index: 0, counts: HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq> Window<K> {
    /// The count of `key` in the window holding `now_ms` (`len_ms` long).
    fn count(&mut self, key: &K, now_ms: u64, len_ms: u64) -> u32 {
        let index = now_ms / len_ms;
        if self.index != index {
            *self = Self { index, counts: HashMap::new() };
        }
        self.counts.get(key).copied().unwrap_or(0)
    }

    fn add(&mut self, key: K) {
        *self.counts.entry(key).or_default() += 1;
    }
}

/// Orders requests and signs checkpoints.
pub struct Sequencer {
    log: Identity,
    /// The daemon that takes requests, named in every checkpoint; `None`
    /// for the admin's offline ledger directory.
    daemon: Option<Did>,
    per_minute: Window<Quotaed>,
    per_day: Window<Quotaed>,
    rotations: Window<Did>,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer").field("log_key", &self.log.did()).field("daemon", &self.daemon).finish()
    }
}

impl Sequencer {
    /// A sequencer signing with `log`, run by the daemon `daemon` (or by an
    /// offline ledger directory, `None`).
    pub fn new(log: Identity, daemon: Option<Did>) -> Self {
        Self { log, daemon, per_minute: Window::default(), per_day: Window::default(), rotations: Window::default() }
    }

    /// The log key.
    pub fn log_key(&self) -> SigningPublicKey {
        self.log.signing_key()
    }

    /// Checks `entry` against the sequencer's rules and the ledger's, runs
    /// `persist`, then appends it; returns its index. A refused entry
    /// changes nothing; one already in the log is refused with its place
    /// ([`Rejection::AlreadyInLog`]), so a retried request is never applied
    /// twice.
    pub fn sequence<E: From<Rejection>>(
        &mut self,
        state: &mut LedgerState,
        entry: Entry,
        now_ms: u64,
        persist: impl FnOnce(&Entry) -> Result<(), E>,
    ) -> Result<u64, E> {
        let body = entry.body();
        let ahead_ms = body.time_ms.saturating_sub(now_ms);
        if ahead_ms > CLOCK_SKEW_MS {
            return Err(Rejection::FromTheFuture { ahead_ms }.into());
        }
        let counted = match state.network() {
            Some(network) => {
                check_expiry(network, body.time_ms, body.expires_ms, now_ms)?;
                let subject = subject(state, network, &body.signer);
                let rotated = match entry.op() {
                    Op::RotateKeys { did, .. } => Some(*did),
                    _ => None,
                };
                if !matches!(entry.op(), Op::Revoke { .. }) {
                    self.check_quotas(network, subject, rotated, now_ms)?;
                }
                Some((subject, rotated))
            }
            None => None,
        };
        let index = state.height();
        state.append_with(entry, persist)?;
        if let Some((subject, rotated)) = counted {
            if let Some(subject) = subject {
                self.per_minute.add(subject);
                self.per_day.add(subject);
            }
            if let Some(did) = rotated {
                self.rotations.add(did);
            }
        }
        Ok(index)
    }

    fn check_quotas(
        &mut self,
        network: &Network,
        subject: Option<Quotaed>,
        rotated: Option<Did>,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        let quotas = &network.quotas;
        if let Some(subject) = subject {
            let (minute, day) = match subject {
                Quotaed::Device(_) => (quotas.max_requests_per_minute, quotas.requests_per_day()),
                Quotaed::Registrar(_) => (quotas.registrar_per_minute(), quotas.registrar_per_day()),
            };
            let who = match subject {
                Quotaed::Device(did) => did,
                Quotaed::Registrar(key) => Did::from_signing_key(key),
            };
            if self.per_minute.count(&subject, now_ms, MINUTE_MS) >= minute {
                return Err(Rejection::TooManyRequests { subject: who, quota: minute, per: "minute" });
            }
            if self.per_day.count(&subject, now_ms, DAY_MS) >= day {
                return Err(Rejection::TooManyRequests { subject: who, quota: day, per: "day" });
            }
        }
        if let Some(did) = rotated {
            let per_day = quotas.rotations_per_day();
            if self.rotations.count(&did, now_ms, DAY_MS) >= per_day {
                return Err(Rejection::TooManyRotations { did, per_day });
            }
        }
        Ok(())
    }

    /// Signs a checkpoint of `state` as it stands, dated `now_ms`.
    pub fn checkpoint(&self, state: &LedgerState, now_ms: u64) -> SignedCheckpoint {
        let network = state.network().map_or(EntryHash::ZERO, |n| n.id);
        let head = state.head();
        let checkpoint = Checkpoint { size: head.height, root: head.root, sequencer: self.daemon };
        SignedCheckpoint::sign(&network, checkpoint, &self.log, now_ms / 1000)
    }

    /// The log's signed answer on request `leaf` of `state`'s network.
    pub fn answer(&self, state: &LedgerState, leaf: EntryHash, word: Word, now_ms: u64) -> SequencerAnswer {
        let network = state.network().map_or(EntryHash::ZERO, |n| n.id);
        SequencerAnswer::sign(&self.log, network, leaf, word, now_ms)
    }
}

/// A request must name when it expires, not be past it, and not live
/// longer than the genesis allows.
pub(crate) fn check_expiry(network: &Network, time_ms: u64, expires_ms: u64, now_ms: u64) -> Result<(), Rejection> {
    if expires_ms == 0 {
        return Err(Rejection::NoExpiry);
    }
    if expires_ms <= now_ms {
        return Err(Rejection::Expired { ago_ms: now_ms - expires_ms });
    }
    let max_ms = network.quotas.request_lifetime_ms();
    if expires_ms.saturating_sub(time_ms) > max_ms {
        return Err(Rejection::LivesTooLong { max_s: max_ms / 1000 });
    }
    Ok(())
}

/// Whom a request signed by `signer` counts against: its registrar key, or
/// the device whose (or whose app's) current key it is. `None` for a key
/// the ledger does not know, which the rules refuse anyway.
fn subject(state: &LedgerState, network: &Network, signer: &SigningPublicKey) -> Option<Quotaed> {
    if network.registrars.contains(signer) {
        return Some(Quotaed::Registrar(*signer));
    }
    let did = state.did_of_key(signer)?;
    match &state.resolve(&did)?.record.subject {
        Subject::App { device, .. } => Some(Quotaed::Device(*device)),
        Subject::Device { .. } => Some(Quotaed::Device(did)),
    }
}

#[cfg(test)]
#[path = "sequencer_tests.rs"]
mod tests;
