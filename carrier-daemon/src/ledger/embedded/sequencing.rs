//! The embedded ledger as the sequencer: it orders submitted requests and
//! signs their checkpoint with the log key the ledger names, dates a quiet
//! checkpoint anew, and takes over from a lost sequencer.
//!
//! A daemon configured with a log key the ledger does not name (yet) stands
//! by: the only request it sequences is a handover naming its key, as the
//! first entry it signs; from then on it is the sequencer. A sequencer that
//! sees a valid handover away from it stops at once, before the log holds
//! the handover.

use std::sync::PoisonError;

use carrier_proto::ledger::{Entry, Op, Rejection, Sequencer};

use super::{Backing, EmbeddedLedger, now_ms, update_for};
use crate::ledger::{Ledger, SubmitError};

impl EmbeddedLedger {
    /// Gives this daemon a log key: it sequences if the ledger names that
    /// key, and stands by for a handover to it otherwise.
    pub fn with_sequencer(mut self, sequencer: Sequencer) -> Result<Self, String> {
        let named = self.network().map(|n| n.log_key);
        if let Backing::Store(store) = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner) {
            store.may_sequence().map_err(|e| e.to_string())?;
            if named == Some(sequencer.log_key()) {
                // A checkpoint that names this daemon, so peers learn where
                // to send requests.
                let checkpoint = sequencer.checkpoint(store.state(), now_ms());
                store.save_checkpoint(checkpoint).map_err(|e| e.to_string())?;
            } else {
                tracing::warn!(
                    "the ledger does not name this log key: standing by until a handover names it (if this key should sequence now, it is the wrong file)"
                );
            }
        }
        self.sequencer = Some(std::sync::Mutex::new(sequencer));
        Ok(self)
    }

    /// Whether this daemon sequences now: it holds the log key the ledger
    /// names, and has seen no handover away from it.
    pub(super) fn sequencing(&self) -> bool {
        let Some(sequencer) = &self.sequencer else { return false };
        let key = sequencer.lock().unwrap_or_else(PoisonError::into_inner).log_key();
        let Some(network) = self.network() else { return false };
        network.log_key == key
            && self
                .handovers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .live_log_keys(&network, now_ms())
                .all(|k| k == key)
    }

    /// The log key this daemon holds, whether it sequences or stands by.
    fn held_key(&self) -> Option<carrier_proto::identity::SigningPublicKey> {
        Some(self.sequencer.as_ref()?.lock().unwrap_or_else(PoisonError::into_inner).log_key())
    }

    /// Sequences `entries` and signs one checkpoint for them: as the
    /// sequencer, or (standing by) a batch that opens with a handover to
    /// our key. A handover to another key is the new sequencer's to
    /// sequence, and is refused here.
    pub(super) fn sequence(&self, entries: Vec<Entry>) -> Result<Vec<Result<u64, Rejection>>, SubmitError> {
        let (Some(sequencer), Some(key)) = (&self.sequencer, self.held_key()) else {
            return Err(SubmitError::NotSequencer);
        };
        if self.frozen() {
            return Err(SubmitError::Frozen);
        }
        let handover_to = |entry: &Entry| match entry.op() {
            Op::Handover { log_key, .. } => Some(*log_key),
            _ => None,
        };
        let taking_over = entries.first().and_then(handover_to) == Some(key);
        if !self.sequencing() && !taking_over {
            return Err(SubmitError::NotSequencer);
        }
        let (mut results, mut taken) = (Vec::with_capacity(entries.len()), Vec::new());
        for entry in entries {
            match handover_to(&entry) {
                Some(to) if to != key || !taken.is_empty() => results.push(Some(Err(Rejection::HandoverElsewhere))),
                _ => {
                    results.push(None);
                    taken.push(entry);
                }
            }
        }
        let updates: Vec<_> = taken.iter().map(update_for).collect();
        let sequenced = {
            let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            let Backing::Store(store) = &mut *guard else { return Err(SubmitError::NotSequencer) };
            let mut sequencer = sequencer.lock().unwrap_or_else(PoisonError::into_inner);
            store.sequence(&mut sequencer, taken, now_ms())?
        };
        if taking_over && sequenced.first().is_some_and(Result::is_ok) {
            tracing::info!("took over sequencing: the handover to our log key is in the log");
        }
        let applied = sequenced.iter().zip(updates).filter(|(r, _)| r.is_ok()).map(|(_, u)| u).collect();
        self.tell(applied);
        let mut sequenced = sequenced.into_iter();
        Ok(results
            .into_iter()
            .map(|r| r.or_else(|| sequenced.next()).unwrap_or(Err(Rejection::HandoverElsewhere)))
            .collect())
    }

    /// Dates our checkpoint anew (same tree; the witnesses' cosignatures
    /// kept until they cosign the new date).
    pub(super) fn redate_checkpoint(&self) -> bool {
        let Some(sequencer) = &self.sequencer else { return false };
        if self.frozen() || !self.sequencing() {
            return false;
        }
        {
            let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            let Backing::Store(store) = &mut *guard else { return false };
            let sequencer = sequencer.lock().unwrap_or_else(PoisonError::into_inner);
            let mut redated = sequencer.checkpoint(store.state(), now_ms());
            if let (Some(ours), Some(network)) = (store.checkpoint(), store.state().network()) {
                if ours.body() != redated.body() {
                    return false;
                }
                redated.add_cosignatures(ours.cosignatures(), &network.witnesses.witnesses);
            }
            if let Err(error) = store.save_checkpoint(redated) {
                tracing::warn!(%error, "cannot date our checkpoint anew");
                return false;
            }
        }
        self.tell(vec![(None, None)]);
        true
    }

    /// The latest handovers in the log (at most
    /// [`MAX_SEEN_HANDOVERS`](carrier_proto::ledger::MAX_SEEN_HANDOVERS)),
    /// oldest first: what a daemon that was away needs to check the
    /// checkpoints of the keys they handed to.
    pub(super) fn logged_handovers(&self) -> Vec<(u64, Entry)> {
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let indices = guard.state().handover_indices();
        let latest = &indices[indices.len().saturating_sub(carrier_proto::ledger::MAX_SEEN_HANDOVERS)..];
        latest.iter().filter_map(|&i| Some((i, Entry::decode(&guard.entry(i)?).ok()?))).collect()
    }

    /// Holds a change of the log's trust (a handover, a change of
    /// witnesses) before our log does: handed in or gossiped (its expiry
    /// asked), or from a peer's log (`logged`, proven by the caller; taken
    /// however old). Subscribers hear of a new one.
    pub(super) fn hold_change(&self, entry: &Entry, logged: bool) -> Result<bool, Rejection> {
        let new = self.read(|state| {
            let mut held = self.handovers.write().unwrap_or_else(PoisonError::into_inner);
            if logged { held.admit_logged(state, entry, now_ms()) } else { held.admit(state, entry, now_ms()) }
        })?;
        if new {
            tracing::warn!(
                op = entry.op().name(),
                logged,
                "a change of the log's trust is signed; held until the log holds it"
            );
            self.tell(vec![(None, None)]);
        }
        Ok(new)
    }
}
