//! Handing sequencing to another device, under a new log key, when the
//! sequencer is lost (or retires): a ledger entry that registrars sign.
//!
//! ```text
//!  Handover { log_key, sequencer, approvals }   signed by a registrar
//!    approvals: each another registrar's, or the current log key's,
//!               signature over HANDOVER tag || network || log_key || sequencer
//!    taken when: author + approving registrars ≥ the genesis's handover
//!                quorum, or the current log key approves (a live sequencer
//!                countersigning); the new log key was never used; the
//!                sequencer is an active device
//!    from then:  checkpoints are signed by the new log key (same log, same
//!                tree), and the old key's no longer count
//! ```
//!
//! A change of the witnesses (`Op::Witnesses`) is approved the same way, by
//! registrars only (the log key cannot approve it: witnesses are what
//! keeps the log honest), and held the same way before the log holds it,
//! so checkpoints its new witnesses cosign count at once.
//!
//! The new sequencer sequences the handover itself, as its first entry, so
//! a daemon that is behind learns the new key from a checkpoint it cannot
//! check yet: every daemon holds the signed handover request as soon as it
//! is handed in (passed from peer to peer like a revocation, see
//! [`SeenHandovers`]) and checks checkpoints by the new key with it.

use super::entry::{Entry, Op};
use super::error::Rejection;
use super::genesis::WitnessPolicy;
use super::sequencer::{CLOCK_SKEW_MS, check_expiry};
use super::state::{LedgerState, Network};
use crate::domain;
use crate::identity::{Did, Identity, SigningPublicKey};

/// Most handover requests held at once, waiting for the log.
pub const MAX_SEEN_HANDOVERS: usize = 8;

/// One more signature on a handover: another registrar's, or the current
/// log key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Who approves.
    pub key: SigningPublicKey,
    /// Their signature over [`handover_message`].
    pub signature: [u8; 64],
}

/// What approvals sign: the network, the new log key, the new sequencer.
pub fn handover_message(network: &super::EntryHash, log_key: &SigningPublicKey, sequencer: &Did) -> Vec<u8> {
    let mut message = network.0.to_vec();
    message.extend_from_slice(log_key.as_bytes());
    message.extend_from_slice(sequencer.to_string().as_bytes());
    message
}

impl Approval {
    /// `signer`'s approval of handing `network`'s log to `log_key` at `sequencer`.
    pub fn sign(signer: &Identity, network: &super::EntryHash, log_key: &SigningPublicKey, sequencer: &Did) -> Self {
        let message = handover_message(network, log_key, sequencer);
        Self { key: signer.signing_key(), signature: signer.sign(domain::HANDOVER, &message) }
    }

    fn holds(&self, network: &super::EntryHash, log_key: &SigningPublicKey, sequencer: &Did) -> bool {
        self.key.verify(domain::HANDOVER, &handover_message(network, log_key, sequencer), &self.signature)
    }

    /// `signer`'s approval of `policy` as `network`'s witnesses in place of
    /// `replacing` (the witnesses in force).
    pub fn sign_witnesses(
        signer: &Identity,
        network: &super::EntryHash,
        replacing: &WitnessPolicy,
        policy: &WitnessPolicy,
    ) -> Self {
        let message = policy.approval_message(network, replacing);
        Self { key: signer.signing_key(), signature: signer.sign(domain::WITNESSES, &message) }
    }

    fn holds_witnesses(&self, network: &super::EntryHash, replacing: &WitnessPolicy, policy: &WitnessPolicy) -> bool {
        self.key.verify(domain::WITNESSES, &policy.approval_message(network, replacing), &self.signature)
    }
}

/// Checks a change of witnesses by `signer`: a registrar, approved by other
/// registrars up to the genesis's handover quorum (the log key's approval
/// does not count).
pub(crate) fn check_witness_change(
    network: &Network,
    signer: &SigningPublicKey,
    policy: &WitnessPolicy,
    approvals: &[Approval],
) -> Result<(), Rejection> {
    if !network.registrars.contains(signer) {
        return Err(Rejection::Unauthorized { signer: Did::from_signing_key(*signer) });
    }
    let mut registrars = vec![*signer];
    for approval in approvals {
        if !approval.holds_witnesses(&network.id, &network.witnesses, policy)
            || !network.registrars.contains(&approval.key)
            || registrars.contains(&approval.key)
        {
            return Err(Rejection::BadApproval(Did::from_signing_key(approval.key)));
        }
        registrars.push(approval.key);
    }
    let quorum = network.quotas.handover_quorum();
    if registrars.len() < quorum {
        return Err(Rejection::HandoverQuorum { have: registrars.len(), need: quorum });
    }
    Ok(())
}

/// Checks a handover by `signer` against `network` (the rules above);
/// `used` says whether a key was ever used on the ledger, `active_device`
/// whether a DID is an active device.
pub(crate) fn check(
    network: &Network,
    signer: &SigningPublicKey,
    op: (&SigningPublicKey, &Did, &[Approval]),
    used: impl Fn(&SigningPublicKey) -> bool,
    active_device: impl Fn(&Did) -> bool,
) -> Result<(), Rejection> {
    let (log_key, sequencer, approvals) = op;
    if !network.registrars.contains(signer) {
        return Err(Rejection::Unauthorized { signer: Did::from_signing_key(*signer) });
    }
    if used(log_key) || *log_key == network.log_key {
        return Err(Rejection::KeyReused);
    }
    if !active_device(sequencer) {
        return Err(Rejection::NotADevice(*sequencer));
    }
    let mut registrars = vec![*signer];
    let mut countersigned = false;
    for approval in approvals {
        if !approval.holds(&network.id, log_key, sequencer) {
            return Err(Rejection::BadApproval(Did::from_signing_key(approval.key)));
        }
        if approval.key == network.log_key {
            countersigned = true;
        } else if network.registrars.contains(&approval.key) && !registrars.contains(&approval.key) {
            registrars.push(approval.key);
        } else {
            return Err(Rejection::BadApproval(Did::from_signing_key(approval.key)));
        }
    }
    let quorum = network.quotas.handover_quorum();
    if !countersigned && registrars.len() < quorum {
        return Err(Rejection::HandoverQuorum { have: registrars.len(), need: quorum });
    }
    Ok(())
}

/// Handover requests a daemon holds before the log does: their new log keys
/// sign checkpoints it may take (the new sequencer's first is the one that
/// sequences the handover).
#[derive(Debug, Default, Clone)]
pub struct SeenHandovers {
    held: Vec<Entry>,
}

impl SeenHandovers {
    /// Holds `entry`, a handover or a change of witnesses handed in or
    /// passed on before the log holds it, if `state` would take it now
    /// (its expiry included); true if it is new here.
    pub fn admit(&mut self, state: &LedgerState, entry: &Entry, now_ms: u64) -> Result<bool, Rejection> {
        if let Some(network) = state.network() {
            let body = entry.body();
            check_expiry(network, body.time_ms, body.expires_ms, now_ms)?;
        }
        self.hold(state, entry, now_ms)
    }

    /// Holds `entry`, a change a peer's log holds (the caller checked it
    /// against a checkpoint of that log), however old: a daemon that was
    /// away when it was sequenced takes it, on its registrars' signatures.
    pub fn admit_logged(&mut self, state: &LedgerState, entry: &Entry, now_ms: u64) -> Result<bool, Rejection> {
        self.hold(state, entry, now_ms)
    }

    fn hold(&mut self, state: &LedgerState, entry: &Entry, now_ms: u64) -> Result<bool, Rejection> {
        if !matches!(entry.op(), Op::Handover { .. } | Op::Witnesses { .. }) {
            return Err(Rejection::Unauthorized { signer: Did::from_signing_key(entry.body().signer) });
        }
        if self.held.iter().any(|held| held.hash() == entry.hash()) {
            return Ok(false);
        }
        let ahead_ms = entry.body().time_ms.saturating_sub(now_ms);
        if ahead_ms > CLOCK_SKEW_MS {
            return Err(Rejection::FromTheFuture { ahead_ms });
        }
        state.check_request(entry)?;
        if self.held.len() >= MAX_SEEN_HANDOVERS {
            self.held.remove(0);
        }
        self.held.push(entry.clone());
        Ok(true)
    }

    /// The new log keys of the held handovers that are still live requests
    /// (not past their expiry): only such a handover makes the sequencer
    /// it hands away from stand down.
    pub fn live_log_keys<'a>(
        &'a self,
        network: &'a Network,
        now_ms: u64,
    ) -> impl Iterator<Item = SigningPublicKey> + 'a {
        self.held.iter().filter_map(move |e| match e.op() {
            Op::Handover { log_key, .. }
                if check_expiry(network, e.body().time_ms, e.body().expires_ms, now_ms).is_ok() =>
            {
                Some(*log_key)
            }
            _ => None,
        })
    }

    /// The new log keys the held handovers name.
    pub fn log_keys(&self) -> impl Iterator<Item = SigningPublicKey> + '_ {
        self.held.iter().filter_map(|e| match e.op() {
            Op::Handover { log_key, .. } => Some(*log_key),
            _ => None,
        })
    }

    /// The witness policies the held changes of witnesses name.
    pub fn policies(&self) -> impl Iterator<Item = &WitnessPolicy> + '_ {
        self.held.iter().filter_map(|e| match e.op() {
            Op::Witnesses { policy, .. } => Some(policy),
            _ => None,
        })
    }

    /// The held requests, to pass on and to send to their new sequencer.
    pub fn entries(&self) -> &[Entry] {
        &self.held
    }

    /// Forgets the requests `state` holds, or would no longer take.
    pub fn settle(&mut self, state: &LedgerState) {
        self.held.retain(|e| state.position(&e.hash()).is_none() && state.check_request(e).is_ok());
    }
}

#[cfg(test)]
#[path = "handover_tests.rs"]
mod tests;
