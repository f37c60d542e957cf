//! One device's courier queue as plain state: which messages are waiting,
//! which are on the wire, which the receiver holds, and which pairs of apps
//! are paused because the recipient app's inbox is full.
//!
//! ```text
//!  push ─▶ Unsent ─next()─▶ Sent ─HELD─▶ Held
//!                  ▲          │ BUSY: this and later Sent of the pair, pair paused
//!                  └──────────┘ requeue_all (the stream broke): every Sent and Held
//!  FINAL (from any state) ─▶ gone
//! ```
//!
//! Pairs take turns (round robin), so one pair with much to send cannot
//! starve another, and a paused pair waits without holding up the rest.
//! Within a pair, messages always go out in seq order. No IO and no clock of
//! its own: the courier passes `now` in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use foldhash::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use carrier_proto::pb;

use super::{Pair, pair_of};

/// How long a pair waits after BUSY before its messages are offered again.
pub(super) const BUSY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unsent,
    Sent,
    Held,
}

#[derive(Debug)]
struct Entry {
    envelope: Arc<pb::Envelope>,
    pair: Pair,
    state: State,
    /// Handed over for the mailboxes (the device was unreachable).
    parked: bool,
}

#[derive(Debug, Default)]
struct PairState {
    /// Every queued message of the pair.
    all: BTreeSet<u64>,
    unsent: BTreeSet<u64>,
    sent: BTreeSet<u64>,
}

/// The messages for one device.
#[derive(Debug, Default)]
pub(super) struct Queue {
    entries: BTreeMap<u64, Entry>,
    pairs: HashMap<Pair, PairState>,
    /// Pairs with unsent messages, in turn order.
    ready: VecDeque<Pair>,
    in_ready: HashSet<Pair>,
    paused: HashMap<Pair, Instant>,
    /// Sent and not yet answered: count and payload bytes.
    in_flight: usize,
    in_flight_bytes: usize,
}

impl Queue {
    /// Adds `envelope` (its seq above any queued for its pair).
    pub(super) fn push(&mut self, envelope: pb::Envelope) {
        let (seq, pair) = (envelope.seq, pair_of(&envelope));
        if self.entries.contains_key(&seq) {
            return;
        }
        self.entries.insert(seq, Entry { envelope: Arc::new(envelope), pair, state: State::Unsent, parked: false });
        let state = self.pairs.entry(pair).or_default();
        state.all.insert(seq);
        state.unsent.insert(seq);
        self.make_ready(pair);
    }

    fn make_ready(&mut self, pair: Pair) {
        if !self.paused.contains_key(&pair) && self.in_ready.insert(pair) {
            self.ready.push_back(pair);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Messages on the wire without an answer yet.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The next message to write, if the window (`max` messages,
    /// `max_bytes` payload bytes on the wire) has room; marked Sent.
    pub(super) fn next(&mut self, max: usize, max_bytes: usize) -> Option<Arc<pb::Envelope>> {
        if self.in_flight >= max || self.in_flight_bytes >= max_bytes {
            return None;
        }
        while let Some(pair) = self.ready.pop_front() {
            self.in_ready.remove(&pair);
            if self.paused.contains_key(&pair) {
                continue;
            }
            let Some(state) = self.pairs.get_mut(&pair) else { continue };
            let Some(seq) = state.unsent.pop_first() else { continue };
            state.sent.insert(seq);
            if !state.unsent.is_empty() {
                self.in_ready.insert(pair);
                self.ready.push_back(pair);
            }
            let entry = self.entries.get_mut(&seq)?;
            entry.state = State::Sent;
            self.in_flight += 1;
            self.in_flight_bytes += entry.envelope.payload.len();
            return Some(Arc::clone(&entry.envelope));
        }
        None
    }

    fn unflight(&mut self, seq: u64) {
        if let Some(entry) = self.entries.get(&seq)
            && entry.state == State::Sent
        {
            self.in_flight -= 1;
            self.in_flight_bytes -= entry.envelope.payload.len();
        }
    }

    /// The receiver has `seq` on disk.
    pub(super) fn held(&mut self, seq: u64) {
        self.unflight(seq);
        if let Some(entry) = self.entries.get_mut(&seq)
            && entry.state == State::Sent
        {
            entry.state = State::Held;
            if let Some(pair) = self.pairs.get_mut(&entry.pair) {
                pair.sent.remove(&seq);
            }
        }
    }

    /// The recipient app's inbox is full: `seq` and every later message of
    /// its pair on the wire go back, and the pair waits until `now` +
    /// [`BUSY_PAUSE`]. A BUSY for a message not on the wire (sent back
    /// already) changes nothing.
    pub(super) fn busy(&mut self, seq: u64, now: Instant) {
        let Some(entry) = self.entries.get(&seq).filter(|e| e.state == State::Sent) else { return };
        let pair = entry.pair;
        let back: Vec<u64> = self.pairs.get(&pair).map(|p| p.sent.range(seq..).copied().collect()).unwrap_or_default();
        for seq in back {
            self.unsend(seq);
        }
        self.paused.insert(pair, now + BUSY_PAUSE);
    }

    fn unsend(&mut self, seq: u64) {
        self.unflight(seq);
        let Some(entry) = self.entries.get_mut(&seq) else { return };
        entry.state = State::Unsent;
        let pair = entry.pair;
        let state = self.pairs.entry(pair).or_default();
        state.sent.remove(&seq);
        state.unsent.insert(seq);
        self.make_ready(pair);
    }

    /// Paused pairs whose pause is over take turns again.
    pub(super) fn resume(&mut self, now: Instant) {
        let due: Vec<Pair> = self.paused.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
        for pair in due {
            self.paused.remove(&pair);
            if self.pairs.get(&pair).is_some_and(|p| !p.unsent.is_empty()) {
                self.make_ready(pair);
            }
        }
    }

    /// When the next pause ends.
    pub(super) fn next_resume(&self) -> Option<Instant> {
        self.paused.values().min().copied()
    }

    /// `seq` reached its end; its envelope, if it was queued.
    pub(super) fn finish(&mut self, seq: u64) -> Option<Arc<pb::Envelope>> {
        self.unflight(seq);
        let entry = self.entries.remove(&seq)?;
        if let Some(state) = self.pairs.get_mut(&entry.pair) {
            state.all.remove(&seq);
            state.unsent.remove(&seq);
            state.sent.remove(&seq);
            if state.all.is_empty() {
                self.pairs.remove(&entry.pair);
                self.paused.remove(&entry.pair);
            }
        }
        Some(entry.envelope)
    }

    /// The messages not yet handed over for the mailboxes, now marked so,
    /// each with the seq of the message before it in its pair (0: none).
    pub(super) fn park_new(&mut self) -> Vec<(Arc<pb::Envelope>, u64)> {
        let mut parked = Vec::new();
        for (seq, entry) in self.entries.iter_mut().filter(|(_, e)| !e.parked) {
            entry.parked = true;
            let prev = self.pairs.get(&entry.pair).and_then(|p| p.all.range(..*seq).next_back().copied());
            parked.push((Arc::clone(&entry.envelope), prev.unwrap_or(0)));
        }
        parked
    }

    /// `seq` could not be left in any mailbox: hand it over again next time.
    pub(super) fn unpark(&mut self, seq: u64) {
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.parked = false;
        }
    }

    /// The stream broke: everything on the wire or held is to be sent again.
    pub(super) fn requeue_all(&mut self) {
        let back: Vec<u64> = self.entries.iter().filter(|(_, e)| e.state != State::Unsent).map(|(s, _)| *s).collect();
        for seq in back {
            self.unsend(seq);
        }
        self.paused.clear();
        let pairs: Vec<Pair> = self.pairs.keys().copied().collect();
        for pair in pairs {
            self.make_ready(pair);
        }
    }

    /// Removes the messages `doomed` picks (expired, or too large for the
    /// receiver), for the courier to settle.
    pub(super) fn drop_if(&mut self, mut doomed: impl FnMut(&pb::Envelope) -> bool) -> Vec<u64> {
        let gone: Vec<u64> = self.entries.iter().filter(|(_, e)| doomed(&e.envelope)).map(|(s, _)| *s).collect();
        for seq in &gone {
            self.finish(*seq);
        }
        gone
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
