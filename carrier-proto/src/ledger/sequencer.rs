//! The sequencer: the one holder of the log key, which orders authors'
//! requests into the log and signs checkpoints. It adds rules of its own
//! (an author's clock may not run ahead of its clock; an author other than
//! a registrar may have only so many requests sequenced a minute) to the
//! ledger's, and it can
//! author nothing: the ledger refuses any entry the log key signs.
//!
//! Sans-IO like the rest: the caller passes the time and a `persist` step
//! that makes the entry durable before the state changes, and decides when
//! to sign a checkpoint (once per batch, so commits are grouped).

use std::collections::HashMap;

use super::checkpoint::{Checkpoint, SignedCheckpoint};
use super::entry::{Entry, EntryHash};
use super::error::Rejection;
use super::state::LedgerState;
use crate::identity::{Did, Identity, SigningPublicKey};

/// How far ahead of the sequencer's clock an entry may be dated.
pub const CLOCK_SKEW_MS: u64 = 120_000;
const MINUTE_MS: u64 = 60_000;

/// Orders requests and signs checkpoints.
pub struct Sequencer {
    log: Identity,
    /// The daemon that takes requests, named in every checkpoint; `None`
    /// for the admin's offline ledger directory.
    daemon: Option<Did>,
    /// Requests sequenced per author in the current minute.
    window: (u64, HashMap<SigningPublicKey, u32>),
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
        Self { log, daemon, window: (0, HashMap::new()) }
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
        let author = body.signer;
        // Registrars are the network's authority: only other authors are
        // held to the per-minute quota.
        if let Some(network) = state.network().filter(|n| !n.registrars.contains(&author)) {
            let per_minute = network.quotas.max_requests_per_minute;
            let minute = now_ms / MINUTE_MS;
            if self.window.0 != minute {
                self.window = (minute, HashMap::new());
            }
            if self.window.1.get(&author).copied().unwrap_or(0) >= per_minute {
                return Err(Rejection::TooManyRequests { author: Did::from_signing_key(author), per_minute }.into());
            }
        }
        let index = state.height();
        state.append_with(entry, persist)?;
        *self.window.1.entry(author).or_default() += 1;
        Ok(index)
    }

    /// Signs a checkpoint of `state` as it stands.
    pub fn checkpoint(&self, state: &LedgerState) -> SignedCheckpoint {
        let network = state.network().map_or(EntryHash::ZERO, |n| n.id);
        let head = state.head();
        let checkpoint = Checkpoint { size: head.height, root: head.root, sequencer: self.daemon };
        SignedCheckpoint::sign(&network, checkpoint, &self.log)
    }
}
