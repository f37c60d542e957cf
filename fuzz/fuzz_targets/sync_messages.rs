//! Ledger sync and join between daemons (`proto/carrier/v1/sync.proto`):
//!
//! - selector 0, `pb::SyncRequest` (what a peer asks): a fetch is served as
//!   the daemon serves it (`ledger::sync_entries` with the protocol's
//!   bounds) from the fixture log; the answer is bounded, a slice of the log,
//!   and when asked as a node at the fixture base asks it, the catch-up
//!   takes it (completeness). An announced checkpoint is verified and
//!   judged against the base; a fetch it leads to, served honestly, proves
//!   out. Gossiped evidence, revocations, handovers and broken promises are
//!   checked as the receiving daemon checks them.
//! - selector 1, `pb::SyncEntries` (what a peer answers): its proofs parsed
//!   (`ledger::answer_proofs`), its entries checked by the catch-up from the
//!   base towards the full checkpoint (only the log's real next entries may
//!   prove out; no fork evidence against honest checkpoints), and its
//!   checkpoint note verified and judged, the answer checked against the
//!   catch-up that gives.
//! - selector 2, `pb::JoinRequest` (a newcomer's ask): answered as the join
//!   listener answers it (for a daemon whose checkpoint is the full one);
//!   the answer is a slice of the log that a newcomer holding the entries
//!   before it takes.

#![no_main]

use carrier_daemon::ledger::{Ledger, sync_entries};
use carrier_fuzz::{Input, check_answer, fixture, served};
use carrier_proto::ledger::{CatchUp, Fetch, Judgement, SignedCheckpoint, judge};
use carrier_proto::pb::{self, sync_request::Request};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The sync protocol's bounds on one answer.
const BATCH: u32 = 512;
const BATCH_BYTES: usize = 256 << 10;

/// An answer is bounded and a slice of the log from where it was asked.
fn check_served(answer: &pb::SyncEntries, fetch: Fetch, max: u64) {
    let f = fixture();
    assert!(answer.entries.len() as u64 <= max.max(1));
    let from = usize::try_from(fetch.from).unwrap_or(usize::MAX).min(f.entries.len());
    assert!(answer.entries.len() <= f.entries.len() - from);
    assert_eq!(answer.entries, f.entries[from..from + answer.entries.len()], "served entries are not the log's");
    assert!(fetch.from.saturating_add(answer.entries.len() as u64) <= fetch.tree_size.max(fetch.from));
}

/// Serves `fetch` as the sync protocol does.
fn serve(fetch: Fetch, max: u32) -> pb::SyncEntries {
    let max = u64::from(max.min(BATCH));
    let answer = sync_entries(served(), fetch, max, BATCH_BYTES);
    check_served(&answer, fetch, max);
    answer
}

/// Checks an answer as a node holding the fixture base does.
fn take(catch_up: &mut CatchUp, answer: &pb::SyncEntries) -> Option<usize> {
    let base = &fixture().base_state;
    check_answer(catch_up, base, &answer.entries, &answer.proof, &answer.prefix_root, &answer.prefix_proof)
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut input = Input(data);
    let selector = input.u8();
    let bytes = input.rest();
    match selector % 3 {
        0 => match pb::SyncRequest::decode(bytes).ok().and_then(|r| r.request) {
            Some(Request::Fetch(asked)) => {
                let fetch = Fetch { from: asked.from, tree_size: asked.tree_size, prove_from: asked.prove_from };
                let answer = serve(fetch, asked.max);
                let base = f.base_state.height();
                let size = f.entries.len() as u64;
                if (fetch.from, fetch.tree_size, fetch.prove_from) == (base, size, base) && asked.max > 0 {
                    let mut catch_up = f.catch_up();
                    let taken = take(&mut catch_up, &answer);
                    assert!(taken.is_some_and(|n| n > 0), "an honest answer was refused");
                }
            }
            Some(Request::Announce(note)) => {
                let Ok(theirs) = SignedCheckpoint::verify(&note, &f.trust()) else { return };
                let honest = theirs.checkpoint() == f.checkpoint.checkpoint();
                if let Judgement::Fetch(mut catch_up) = judge(f.held_base(), theirs) {
                    let fetch = catch_up.fetch(f.base_state.height()).expect("judged to fetch");
                    let answer = serve(fetch, BATCH);
                    let taken = take(&mut catch_up, &answer);
                    if honest {
                        assert_eq!(taken, Some(f.entries.len() - f.base_state.height() as usize));
                    }
                }
            }
            // Gossip: checked as the receiving daemon checks it.
            Some(Request::Evidence(evidence)) => {
                let log_only = carrier_proto::ledger::LogTrust::log_only(f.network, f.log.signing_key());
                let _ = carrier_proto::ledger::Fork::decode(&evidence, &log_only);
            }
            Some(Request::Revocation(entry) | Request::Handover(entry)) => {
                if let Ok(entry) = carrier_proto::ledger::Entry::decode(&entry) {
                    let _ = f.state.check_request(&entry);
                }
            }
            Some(Request::LoggedChange(change)) => {
                if let Ok(entry) = carrier_proto::ledger::Entry::decode(&change.entry) {
                    let _ = f.state.check_request(&entry);
                }
                let log_only = carrier_proto::ledger::LogTrust::log_only(f.network, f.log.signing_key());
                let _ = SignedCheckpoint::open(&change.checkpoint, &log_only);
            }
            Some(Request::BrokenPromise(evidence)) => {
                let keys = [f.log.signing_key()];
                let _ = carrier_proto::ledger::BrokenPromise::decode(&evidence, &f.network, &keys);
            }
            None => {}
        },
        1 => {
            let Ok(answer) = pb::SyncEntries::decode(bytes) else { return };
            let _ = take(&mut f.catch_up(), &answer);
            if let Ok(theirs) = served().verify_checkpoint(&answer.checkpoint)
                && let Judgement::Fetch(mut catch_up) = judge(f.held_base(), theirs)
            {
                let _ = take(&mut catch_up, &answer);
            }
            let _ = SignedCheckpoint::open(&answer.checkpoint, &f.trust());
        }
        _ => {
            let Ok(request) = pb::JoinRequest::decode(bytes) else { return };
            let _ = request.network_id == f.network.0;
            // The join listener's answer, for a daemon holding the full checkpoint.
            let ours = f.checkpoint.size();
            let tree_size = if request.tree_size == 0 { ours } else { request.tree_size.min(ours) };
            let fetch = Fetch { from: request.from, tree_size, prove_from: 0 };
            let answer = serve(fetch, request.max);
            let from = usize::try_from(request.from).unwrap_or(usize::MAX);
            if tree_size == ours && from < f.entries.len() && !answer.entries.is_empty() {
                let mut catch_up = CatchUp::towards(f.checkpoint.clone());
                let held = &f.prefixes[from];
                let taken = check_answer(
                    &mut catch_up,
                    held,
                    &answer.entries,
                    &answer.proof,
                    &answer.prefix_root,
                    &answer.prefix_proof,
                );
                assert_eq!(taken, Some(answer.entries.len()), "a newcomer refused an honest answer");
            }
        }
    }
});
