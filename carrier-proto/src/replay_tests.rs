#![allow(clippy::unwrap_used)]

//! The replay window, attacked: replays, late arrivals, interleaved runs.

use super::*;
use crate::identity::{Identity, IdentityKind};

/// Bytes of one encoded run: epoch, start, top, and the window's bits.
const RUN_LEN: usize = 32 + WINDOW as usize / 8;

fn pair() -> (Did, Did) {
    (Identity::generate(IdentityKind::App).did(), Identity::generate(IdentityKind::App).did())
}

fn id(epoch: u8, seq: u64) -> MessageId {
    MessageId { epoch: [epoch; 16], seq }
}

#[test]
fn each_message_passes_once_and_late_ones_within_the_window_still_pass() {
    let (a, b) = pair();
    let mut guard = ReplayGuard::new();
    assert_eq!(guard.admit(a, b, id(1, 10), 100), Seen::Fresh);
    assert_eq!(guard.admit(a, b, id(1, 10), 100), Seen::Taken, "a replay");
    assert_eq!(guard.admit(a, b, id(1, 14), 100), Seen::Fresh);
    // 12 arrives after 14 (another path): not lost, taken once.
    assert_eq!(guard.admit(a, b, id(1, 12), 100), Seen::Fresh);
    assert_eq!(guard.admit(a, b, id(1, 12), 100), Seen::Taken);
    assert!(guard.seen(a, b, id(1, 12)) && !guard.seen(a, b, id(1, 13)));
    // Far below the newest taken: counted as taken, never delivered again.
    assert_eq!(guard.admit(a, b, id(1, 14 + WINDOW), 100), Seen::Fresh);
    assert_eq!(guard.check(a, b, id(1, 13), 100), Seen::Taken);
    // Other pairs are their own.
    let (c, _) = pair();
    assert_eq!(guard.admit(c, b, id(1, 10), 100), Seen::Fresh);
}

#[test]
fn the_window_shifts_bit_exactly() {
    let (a, b) = pair();
    let mut guard = ReplayGuard::new();
    let taken: Vec<u64> = (0..3 * WINDOW).step_by(7).collect();
    for seq in &taken {
        assert_eq!(guard.admit(a, b, id(1, *seq), 1), Seen::Fresh, "{seq}");
    }
    let top = *taken.last().unwrap();
    for seq in top.saturating_sub(WINDOW - 1)..=top {
        let expected = if taken.contains(&seq) { Seen::Taken } else { Seen::Fresh };
        assert_eq!(guard.check(a, b, id(1, seq), 1), expected, "{seq}");
    }
}

/// A replayed message from an older run of the sender is not taken again,
/// however the runs interleave: the old behaviour (a new epoch wipes the
/// pair) let old and new runs re-admit each other.
#[test]
fn older_runs_stay_remembered_and_older_still_are_stale() {
    let (a, b) = pair();
    let mut guard = ReplayGuard::new();
    assert_eq!(guard.admit(a, b, id(1, 5), 100), Seen::Fresh);
    assert_eq!(guard.admit(a, b, id(2, 1), 200), Seen::Fresh, "the sender restarted");
    assert_eq!(guard.admit(a, b, id(1, 5), 100), Seen::Taken, "the old run's message, replayed");
    assert_eq!(guard.admit(a, b, id(1, 6), 100), Seen::Fresh, "a late one of the old run");
    for (epoch, started) in [(3, 300), (4, 400), (5, 500)] {
        assert_eq!(guard.admit(a, b, id(epoch, 1), started), Seen::Fresh);
    }
    // Run 1 is forgotten now (four newer ones): it is stale, not fresh.
    assert_eq!(guard.admit(a, b, id(1, 7), 100), Seen::Stale);
    assert_eq!(guard.admit(a, b, id(9, 1), 50), Seen::Stale, "an unknown run older than all");
    assert_eq!(guard.admit(a, b, id(2, 1), 200), Seen::Taken);
}

#[test]
fn states_round_trip_and_old_records_read_as_everything_up_to_them() {
    let (a, b) = pair();
    let mut guard = ReplayGuard::new();
    for (epoch, seq, started) in [(1, 5, 100), (1, 9, 100), (2, 3, 200)] {
        guard.admit(a, b, id(epoch, seq), started);
    }
    let state = guard.state(a, b).unwrap().clone();
    let decoded = PairState::decode(&state.encode()).unwrap();
    assert_eq!(decoded, state);
    let mut back = ReplayGuard::new();
    back.restore(a, b, decoded);
    assert_eq!(back.check(a, b, id(1, 9), 100), Seen::Taken);
    assert_eq!(back.check(a, b, id(1, 7), 100), Seen::Fresh);
    let old = PairState::decode(&id(7, 40).to_bytes()).unwrap();
    back.restore(a, b, old);
    assert_eq!(back.check(a, b, id(7, 40), 0), Seen::Taken);
    assert_eq!(back.check(a, b, id(7, 1), 0), Seen::Taken);
    assert_eq!(back.check(a, b, id(7, 41), 0), Seen::Fresh);
    for bad in [&[][..], &[1, 2, 3][..], &vec![0; RUN_LEN * (MAX_EPOCHS + 1)][..], &vec![0; RUN_LEN + 1][..]] {
        assert!(PairState::decode(bad).is_none(), "{} bytes", bad.len());
    }
}
