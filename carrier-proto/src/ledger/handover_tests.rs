#![allow(clippy::unwrap_used)]

use super::*;
use crate::identity::{Identity, IdentityKind};
use crate::ledger::{EntryError, Quotas, WitnessPolicy};

/// A ledger with two registrars (a handover needs `quorum` of them), its
/// log key, and one registered device.
struct Net {
    state: LedgerState,
    registrars: [Identity; 2],
    log: Identity,
    device: Identity,
}

fn net(quorum: u32) -> Net {
    let registrars = [Identity::generate(IdentityKind::Registrar), Identity::generate(IdentityKind::Registrar)];
    let log = Identity::generate(IdentityKind::Log);
    let mut state = LedgerState::new();
    let genesis = Op::Genesis {
        network: "handover".into(),
        registrars: registrars.iter().map(Identity::signing_key).collect(),
        log_key: log.signing_key(),
        quotas: Quotas { handover_quorum: quorum, ..Quotas::default() },
        witnesses: WitnessPolicy::default(),
    };
    state.append(state.next_entry(genesis, 1, &registrars[0])).unwrap();
    let device = Identity::generate(IdentityKind::Device);
    let op = Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
    state.append(state.next_entry(op, 2, &registrars[0])).unwrap();
    Net { state, registrars, log, device }
}

impl Net {
    fn handover(&self, to: &SigningPublicKey, by: &Identity, approvers: &[&Identity]) -> Entry {
        let network = self.state.network().unwrap().id;
        let mut approvals: Vec<Approval> =
            approvers.iter().map(|a| Approval::sign(a, &network, to, &self.device.did())).collect();
        approvals.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        let op = Op::Handover { log_key: *to, sequencer: self.device.did(), approvals };
        self.state.next_entry(op, 3, by)
    }
}

#[test]
fn a_registrar_hands_the_log_to_a_new_key_at_an_active_device() {
    let mut net = net(1);
    let new = Identity::generate(IdentityKind::Log);
    let entry = net.handover(&new.signing_key(), &net.registrars[1], &[]);
    // It travels and decodes as it was signed.
    assert_eq!(Entry::decode(entry.encoded()).unwrap(), entry);
    net.state.append(entry).unwrap();
    assert_eq!(net.state.network().unwrap().log_key, new.signing_key());
    // The old key, and the new one again, cannot be handed to.
    let again = net.handover(&new.signing_key(), &net.registrars[0], &[]);
    assert_eq!(net.state.check_request(&again), Err(Rejection::KeyReused));
}

#[test]
fn a_quorum_of_registrars_or_the_live_log_key_must_sign() {
    let net = net(2);
    let new = Identity::generate(IdentityKind::Log).signing_key();
    let alone = net.handover(&new, &net.registrars[0], &[]);
    assert_eq!(net.state.check_request(&alone), Err(Rejection::HandoverQuorum { have: 1, need: 2 }));
    let two = net.handover(&new, &net.registrars[0], &[&net.registrars[1]]);
    assert_eq!(net.state.check_request(&two), Ok(()));
    let countersigned = net.handover(&new, &net.registrars[0], &[&net.log]);
    assert_eq!(net.state.check_request(&countersigned), Ok(()));
    // The author approving itself counts once.
    let twice = net.handover(&new, &net.registrars[0], &[&net.registrars[0]]);
    assert!(matches!(net.state.check_request(&twice), Err(Rejection::BadApproval(_))));
}

#[test]
fn strangers_reused_keys_forged_approvals_and_odd_encodings_are_refused() {
    let net = net(2);
    let new = Identity::generate(IdentityKind::Log).signing_key();
    // A device is no registrar.
    let by_device = net.handover(&new, &net.device, &[&net.registrars[0], &net.registrars[1]]);
    assert!(matches!(net.state.check_request(&by_device), Err(Rejection::Unauthorized { .. })));
    // The new log key may not be a key some identity holds.
    let reused = net.handover(&net.device.signing_key(), &net.registrars[0], &[&net.registrars[1]]);
    assert_eq!(net.state.check_request(&reused), Err(Rejection::KeyReused));
    // An approval of another handover does not count.
    let network = net.state.network().unwrap().id;
    let other = Identity::generate(IdentityKind::Log).signing_key();
    let forged = Approval::sign(&net.registrars[1], &network, &other, &net.device.did());
    let op = Op::Handover { log_key: new, sequencer: net.device.did(), approvals: vec![forged] };
    let entry = net.state.next_entry(op, 3, &net.registrars[0]);
    assert!(matches!(net.state.check_request(&entry), Err(Rejection::BadApproval(_))));
    // A sequencer that is not an active device.
    let stranger = Identity::generate(IdentityKind::Device);
    let op = Op::Handover { log_key: new, sequencer: stranger.did(), approvals: vec![] };
    let entry = net.state.next_entry(op, 3, &net.registrars[0]);
    assert_eq!(net.state.check_request(&entry), Err(Rejection::NotADevice(stranger.did())));
    // Approvals out of order: not the one encoding.
    let mut approvals = vec![
        Approval::sign(&net.registrars[1], &network, &new, &net.device.did()),
        Approval::sign(&net.log, &network, &new, &net.device.did()),
    ];
    approvals.sort_by(|a, b| b.key.as_bytes().cmp(a.key.as_bytes()));
    let op = Op::Handover { log_key: new, sequencer: net.device.did(), approvals };
    let entry = net.state.next_entry(op, 3, &net.registrars[0]);
    assert_eq!(Entry::decode(entry.encoded()), Err(EntryError::NotCanonical));
}

#[test]
fn a_seen_handover_names_the_key_to_check_checkpoints_with_until_the_log_holds_it() {
    let mut net = net(1);
    let new = Identity::generate(IdentityKind::Log).signing_key();
    let entry = net.handover(&new, &net.registrars[0], &[]);
    let mut seen = SeenHandovers::default();
    let now = 10_000;
    assert_eq!(seen.admit(&net.state, &entry, now), Ok(true));
    assert_eq!(seen.admit(&net.state, &entry, now), Ok(false));
    assert_eq!(seen.log_keys().collect::<Vec<_>>(), vec![new]);
    net.state.append(entry).unwrap();
    seen.settle(&net.state);
    assert!(seen.entries().is_empty());
}

#[test]
fn a_daemon_that_was_away_takes_a_logged_handover_however_old_but_no_stale_request() {
    let net = net(1);
    let new = Identity::generate(IdentityKind::Log).signing_key();
    let entry = net.handover(&new, &net.registrars[0], &[]);
    // Months after it was signed (long past its request expiry), from a
    // peer's log: its registrars' signatures are its authority.
    let months_later = entry.body().expires_ms + 90 * 24 * 3_600_000;
    let mut seen = SeenHandovers::default();
    // Handed in or gossiped that late, it is refused (a stale request
    // replayed); from a peer's log, it is taken.
    assert!(matches!(seen.admit(&net.state, &entry, months_later), Err(Rejection::Expired { .. })));
    assert_eq!(seen.admit_logged(&net.state, &entry, months_later), Ok(true));
    // Taken, it names the key to check checkpoints with, but does not
    // make a sequencer stand down: it is no live request.
    let network = net.state.network().unwrap();
    assert_eq!(seen.log_keys().collect::<Vec<_>>(), vec![new]);
    assert_eq!(seen.live_log_keys(network, months_later).count(), 0);
    assert_eq!(seen.live_log_keys(network, 10).count(), 1);
    // Dated far ahead of our clock: refused.
    let op = entry.op().clone();
    let ahead = net.state.next_entry(op, 10 * crate::ledger::CLOCK_SKEW_MS, &net.registrars[0]);
    let mut seen = SeenHandovers::default();
    assert!(matches!(seen.admit_logged(&net.state, &ahead, 0), Err(Rejection::FromTheFuture { .. })));
    // Not signed by a registrar: refused, however it came.
    let forged = net.handover(&new, &net.device, &[]);
    assert!(seen.admit_logged(&net.state, &forged, months_later).is_err());
}

fn policy() -> WitnessPolicy {
    let witness = Identity::generate(IdentityKind::Witness);
    WitnessPolicy { witnesses: vec![crate::ledger::witness_key_of(&witness)], quorum: 1 }
}

#[test]
fn registrars_replace_the_witnesses_with_their_quorum_and_the_log_key_cannot_help() {
    let mut net = net(2);
    let network = net.state.network().unwrap().id;
    let current = net.state.network().unwrap().witnesses.clone();
    let new = policy();
    let change = |approvers: &[&Identity], by: &Identity, state: &LedgerState| {
        let mut approvals: Vec<Approval> =
            approvers.iter().map(|a| Approval::sign_witnesses(a, &network, &current, &new)).collect();
        approvals.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        state.next_entry(Op::Witnesses { policy: new.clone(), approvals }, 3, by)
    };
    // One registrar of the two the quorum asks: refused; the log key's
    // approval does not count; a device cannot sign it.
    let alone = change(&[], &net.registrars[0], &net.state);
    assert_eq!(net.state.check_request(&alone), Err(Rejection::HandoverQuorum { have: 1, need: 2 }));
    let with_log = change(&[&net.log], &net.registrars[0], &net.state);
    assert!(matches!(net.state.check_request(&with_log), Err(Rejection::BadApproval(_))));
    let by_device = change(&[&net.registrars[1]], &net.device, &net.state);
    assert!(matches!(net.state.check_request(&by_device), Err(Rejection::Unauthorized { .. })));
    // An approval of another policy does not hold for this one.
    let wrong = vec![Approval::sign_witnesses(&net.registrars[1], &network, &current, &policy())];
    let entry = net.state.next_entry(Op::Witnesses { policy: new.clone(), approvals: wrong }, 3, &net.registrars[0]);
    assert!(matches!(net.state.check_request(&entry), Err(Rejection::BadApproval(_))));
    // Two registrars: taken; it travels as signed, and the witnesses change.
    let both = change(&[&net.registrars[1]], &net.registrars[0], &net.state);
    assert_eq!(Entry::decode(both.encoded()).unwrap(), both);
    let mut seen = SeenHandovers::default();
    assert_eq!(seen.admit(&net.state, &both, 10_000), Ok(true));
    assert_eq!(seen.policies().collect::<Vec<_>>(), vec![&new]);
    net.state.append(both).unwrap();
    assert_eq!(net.state.network().unwrap().witnesses, new);
    assert_eq!(net.state.handover_indices(), &[2]);
    // The approval of that change does not bring the old witnesses back.
    let back = vec![Approval::sign_witnesses(&net.registrars[1], &network, &current, &new)];
    let op = Op::Witnesses { policy: current.clone(), approvals: back };
    let undo = net.state.next_entry(op, 4, &net.registrars[0]);
    assert!(matches!(net.state.check_request(&undo), Err(Rejection::BadApproval(_))));
}
