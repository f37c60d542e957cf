//! What ledger sync passes from peer to peer besides checkpoints and
//! entries: evidence of a fork, revocations and trust changes (handovers,
//! changes of witnesses) before the log holds them, trust changes a log
//! holds (proven, for peers that were away), and broken promises. Each is
//! checked by the receiver against its own ledger before it counts, and
//! passed on from there.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError};

use carrier_proto::identity::Did;
use carrier_proto::ledger::merkle::verify_inclusion;
use carrier_proto::ledger::{Admitted, BrokenPromise, Entry, Fork, LogTrust, Op, Rejection, SignedCheckpoint};
use carrier_proto::pb::{self, sync_request::Request};

use super::LedgerSync;
use crate::ledger::proof_hashes;
use crate::protocols::ProtocolError;

impl LedgerSync {
    /// Passes evidence of a fork on to `peers`.
    pub(super) fn send_evidence(&self, peers: &HashSet<Did>, fork: &Fork) {
        tracing::info!(peers = peers.len(), "passing on the evidence that the log key signed two histories");
        self.tell(peers, pb::SyncRequest { request: Some(Request::Evidence(fork.encode())) }, "ledger evidence");
    }

    /// Sends `peer` the latest changes of the log's trust our log holds,
    /// each with our checkpoint and its inclusion proof.
    pub(super) fn send_logged_changes(&self, peer: Did) {
        let Some(checkpoint) = self.ledger.checkpoint() else { return };
        for (index, entry) in self.ledger.handovers_in_log() {
            let Some(proof) = self.ledger.inclusion_proof(index, checkpoint.size()) else { continue };
            let change = pb::LoggedChange {
                entry: entry.encoded().to_vec(),
                index,
                checkpoint: checkpoint.note().to_vec(),
                proof: proof.iter().map(|h| h.0.to_vec()).collect(),
            };
            let request = pb::SyncRequest { request: Some(Request::LoggedChange(change)) };
            self.tell(&HashSet::from([peer]), request, "logged trust change");
        }
    }

    /// Checks a change of the log's trust a peer's log holds: its
    /// checkpoint is signed by a log key we know (or the handover's own new
    /// key) and holds the entry; then the entry is held however old, and
    /// peers' checkpoints we could not check are judged again.
    pub(super) fn logged_change_from(
        self: &Arc<Self>,
        peer: Did,
        change: pb::LoggedChange,
    ) -> Result<(), ProtocolError> {
        let entry = Entry::decode(&change.entry)
            .map_err(|e| ProtocolError::Violation(format!("a logged change that does not decode: {e}")))?;
        let new_key = match entry.op() {
            Op::Handover { log_key, .. } => Some(*log_key),
            Op::Witnesses { .. } => None,
            _ => return Err(ProtocolError::Violation("a logged change that changes no trust".into())),
        };
        let Some(network) = self.ledger.network() else { return Ok(()) };
        let proof = proof_hashes(&change.proof)
            .filter(|p| p.len() <= 64)
            .ok_or_else(|| ProtocolError::Violation("a logged change's proof is malformed".into()))?;
        let shown = self.ledger.log_keys().into_iter().chain(new_key).any(|key| {
            SignedCheckpoint::open(&change.checkpoint, &LogTrust::log_only(network.id, key)).is_ok_and(|checkpoint| {
                verify_inclusion(change.index, checkpoint.size(), entry.hash(), checkpoint.root(), &proof).is_ok()
            })
        });
        if !shown {
            self.counters.count("ledger_handovers_refused");
            tracing::debug!(%peer, "a peer's logged change is not shown in its checkpoint");
            return Ok(());
        }
        match self.ledger.admit_logged_change(&entry) {
            Ok(true) => self.reconsider(),
            Ok(false) | Err(Rejection::AlreadyInLog(_)) => {}
            Err(rejection) => {
                self.counters.count("ledger_handovers_refused");
                tracing::debug!(%peer, %rejection, "a peer's logged change does not hold here");
            }
        }
        Ok(())
    }

    /// Judges again the peers' checkpoints we could not check.
    pub(super) fn reconsider(self: &Arc<Self>) {
        let unchecked: Vec<_> = self.unchecked.lock().unwrap_or_else(PoisonError::into_inner).drain().collect();
        for (from, note) in unchecked {
            self.consider(from, note);
        }
    }

    /// Passes evidence of a broken promise on to `peers`.
    pub(super) fn send_broken_promise(&self, peers: &HashSet<Did>, broken: &BrokenPromise) {
        let request = Request::BrokenPromise(broken.encode());
        self.tell(peers, pb::SyncRequest { request: Some(request) }, "broken promise");
    }

    /// Passes a revocation in force here, or a handover held here, on to
    /// `peers`.
    pub(super) fn send_urgent(&self, peers: &HashSet<Did>, entry: &Entry) {
        let bytes = entry.encoded().to_vec();
        let request = match entry.op() {
            Op::Handover { .. } | Op::Witnesses { .. } => Request::Handover(bytes),
            _ => Request::Revocation(bytes),
        };
        self.tell(peers, pb::SyncRequest { request: Some(request) }, "revocation gossip");
    }

    /// Checks a peer's evidence of a fork with the log key alone and, if it
    /// holds, freezes our ledger (which passes it on).
    pub(super) fn evidence_from(&self, peer: Did, evidence: &[u8]) {
        if self.ledger.evidence().is_some() {
            return; // frozen already; ours went out
        }
        let Some(network) = self.ledger.network() else { return };
        match Fork::decode(evidence, &network.trust()) {
            Ok(fork) => self.ledger.raise_alarm(&fork, &format!("evidence from peer {peer}")),
            Err(error) => {
                self.counters.count("ledger_evidence_refused");
                tracing::warn!(%peer, %error, "a peer's evidence of a fork does not hold");
            }
        }
    }

    /// Checks a peer's evidence of a broken promise with the network's log
    /// keys and, if it holds, keeps it (which passes it on).
    pub(super) fn broken_promise_from(&self, peer: Did, bytes: &[u8]) {
        let Some(network) = self.ledger.network() else { return };
        match BrokenPromise::decode(bytes, &network.id, &self.ledger.log_keys()) {
            Ok(broken) => {
                self.ledger.keep_broken_promise(&broken, &format!("peer {peer}"));
            }
            Err(error) => {
                self.counters.count("ledger_broken_promises_refused");
                tracing::debug!(%peer, %error, "a peer's evidence of a broken promise does not hold");
            }
        }
    }

    /// Checks a peer's revocation request against our ledger and puts it in
    /// force (which passes it on).
    pub(super) fn revocation_from(&self, peer: Did, bytes: &[u8]) -> Result<(), ProtocolError> {
        let entry = Entry::decode(bytes)
            .map_err(|e| ProtocolError::Violation(format!("a revocation that does not decode: {e}")))?;
        match self.ledger.admit_revocation(&entry) {
            Ok(Admitted::New(did)) => tracing::info!(%peer, %did, "a peer passed on a revocation; in force here"),
            Ok(_) => {}
            Err(refusal) => {
                self.counters.count("ledger_revocations_refused");
                tracing::debug!(%peer, %refusal, "a peer's revocation request is not in force here");
            }
        }
        Ok(())
    }

    /// Checks a peer's handover request against our ledger and holds it
    /// (which passes it on).
    pub(super) fn handover_from(self: &Arc<Self>, peer: Did, bytes: &[u8]) -> Result<(), ProtocolError> {
        let entry = Entry::decode(bytes)
            .map_err(|e| ProtocolError::Violation(format!("a handover that does not decode: {e}")))?;
        match self.ledger.admit_handover(&entry) {
            Ok(true) => {
                tracing::info!(%peer, "a peer passed on a handover of sequencing; held here");
                self.reconsider();
            }
            Ok(false) | Err(Rejection::AlreadyInLog(_)) => {}
            Err(rejection) => {
                self.counters.count("ledger_handovers_refused");
                tracing::debug!(%peer, %rejection, "a peer's handover request does not hold here");
            }
        }
        Ok(())
    }
}
