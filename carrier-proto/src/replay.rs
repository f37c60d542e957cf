//! At most once per pair of apps: a sliding window of the message numbers
//! taken in each of the sender's recent runs (epochs), as IPsec and DTLS
//! keep theirs.
//!
//! ```text
//!  per (from app, to app): up to MAX_EPOCHS runs, newest first
//!    run: epoch (random), started (the sender's clock), top (highest seq taken),
//!         a bit for each of the WINDOW seqs at and below top: taken or not
//!  a message ─▶ its run known?   seq above top ─▶ fresh; in the window ─▶ its bit; below ─▶ seen
//!             ─▶ a run not kept:  started after the newest ─▶ fresh (the sender restarted)
//!                                 older, and fewer than MAX_EPOCHS kept ─▶ fresh
//!                                 older than every one of MAX_EPOCHS kept ─▶ stale
//! ```
//!
//! A message that arrives late but within the window is still taken; one
//! replayed (by a mailbox node re-serving an old blob, say) is seen or
//! stale, never taken twice, whatever run it claims. Runs with no start
//! time (senders from before it existed) replace the pair's state, as
//! before.

/// Message numbers remembered below the highest taken, per run.
pub const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;
/// Sender runs remembered per pair.
pub const MAX_EPOCHS: usize = 4;
/// Bytes of one encoded run.
const RUN_LEN: usize = 16 + 8 + 8 + WORDS * 8;

/// What a message's number says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never taken: deliver it.
    Fresh,
    /// Taken already (or so far below the newest taken that it counts so).
    Taken,
    /// From a sender run older than every one remembered: a replay.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    epoch: [u8; 16],
    started_ms: u64,
    top: u64,
    /// Bit i: seq `top - i` was taken.
    bits: [u64; WORDS],
}

impl Run {
    fn new(epoch: [u8; 16], started_ms: u64, seq: u64) -> Self {
        let mut run = Self { epoch, started_ms, top: seq, bits: [0; WORDS] };
        run.bits[0] = 1;
        run
    }

    fn check(&self, seq: u64) -> Seen {
        if seq > self.top {
            return Seen::Fresh;
        }
        let back = self.top - seq;
        if back >= WINDOW {
            return Seen::Taken;
        }
        if self.bits[(back / 64) as usize] & (1 << (back % 64)) != 0 { Seen::Taken } else { Seen::Fresh }
    }

    fn take(&mut self, seq: u64) {
        if seq > self.top {
            let shift = seq - self.top;
            self.shift(shift);
            self.top = seq;
        }
        let back = self.top - seq;
        if back < WINDOW {
            self.bits[(back / 64) as usize] |= 1 << (back % 64);
        }
    }

    /// Moves every bit `by` places older (dropping those past the window).
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.bits = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..WORDS).rev() {
            let from = i.checked_sub(words);
            let high = from.map_or(0, |f| self.bits[f]);
            let low = from.and_then(|f| f.checked_sub(1)).map_or(0, |f| self.bits[f]);
            self.bits[i] = if bits == 0 { high } else { (high << bits) | (low >> (64 - bits)) };
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.epoch);
        out.extend_from_slice(&self.started_ms.to_be_bytes());
        out.extend_from_slice(&self.top.to_be_bytes());
        for word in &self.bits {
            out.extend_from_slice(&word.to_be_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != RUN_LEN {
            return None;
        }
        let u64_at = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
        let mut bits = [0u64; WORDS];
        for (i, word) in bits.iter_mut().enumerate() {
            *word = u64_at(32 + i * 8)?;
        }
        Some(Self { epoch: bytes.get(..16)?.try_into().ok()?, started_ms: u64_at(16)?, top: u64_at(24)?, bits })
    }
}

/// What one pair of apps has taken: its sender's recent runs, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairState {
    runs: Vec<Run>,
}

impl PairState {
    /// What message `seq` of the run `epoch` (started at `started_ms`, 0 if
    /// unknown) is.
    pub(crate) fn check(&self, epoch: [u8; 16], seq: u64, started_ms: u64) -> Seen {
        if let Some(run) = self.runs.iter().find(|r| r.epoch == epoch) {
            return run.check(seq);
        }
        match self.runs.first() {
            None => Seen::Fresh,
            // No start time (an older sender): a new run, as it always was.
            _ if started_ms == 0 => Seen::Fresh,
            Some(newest) if started_ms > newest.started_ms => Seen::Fresh,
            _ if self.runs.len() < MAX_EPOCHS => Seen::Fresh,
            Some(_) if self.runs.iter().all(|r| started_ms < r.started_ms) => Seen::Stale,
            Some(_) => Seen::Fresh,
        }
    }

    /// Records message `seq` of run `epoch` as taken.
    pub(crate) fn take(&mut self, epoch: [u8; 16], seq: u64, started_ms: u64) {
        if let Some(run) = self.runs.iter_mut().find(|r| r.epoch == epoch) {
            return run.take(seq);
        }
        if started_ms == 0 {
            self.runs = vec![Run::new(epoch, 0, seq)];
            return;
        }
        self.runs.push(Run::new(epoch, started_ms, seq));
        self.runs.sort_by_key(|r| std::cmp::Reverse(r.started_ms));
        self.runs.truncate(MAX_EPOCHS);
    }

    /// Whether message `seq` of run `epoch` was taken (in a run remembered).
    pub(crate) fn taken(&self, epoch: [u8; 16], seq: u64) -> bool {
        self.runs.iter().find(|r| r.epoch == epoch).is_some_and(|run| run.check(seq) == Seen::Taken)
    }

    /// The encoded state, as the store keeps it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.runs.len() * RUN_LEN);
        for run in &self.runs {
            run.encode(&mut out);
        }
        out
    }

    /// Reads an encoded state; also the 24-byte form of the last message
    /// taken (stores from before the window), which counts every message at
    /// or below it in its run as taken.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() == 24 {
            let (epoch, seq) = (bytes[..16].try_into().ok()?, u64::from_be_bytes(bytes[16..].try_into().ok()?));
            let mut run = Run::new(epoch, 0, seq);
            run.bits = [u64::MAX; WORDS];
            return Some(Self { runs: vec![run] });
        }
        if bytes.is_empty() || !bytes.len().is_multiple_of(RUN_LEN) || bytes.len() / RUN_LEN > MAX_EPOCHS {
            return None;
        }
        let runs = bytes.chunks(RUN_LEN).map(Run::decode).collect::<Option<Vec<_>>>()?;
        Some(Self { runs })
    }
}
