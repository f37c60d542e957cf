//! Every quota on what others make this device keep, as plain counting:
//! records and bytes, each record charged [`RECORD_OVERHEAD`] bytes on top
//! of its payload, so a flood of empty messages costs what it costs us in
//! memory and on disk, not nothing. Admission rules are pure functions over
//! these counts, tested without IO; ages are the callers' (every kept
//! record has an expiry).
//!
//! A party's fair share of one box (a sending app's of a recipient's inbox,
//! a depositor's of a recipient's mailbox) is a [`SHARE`]th of it, so one
//! party never fills a box and shuts out the rest.

use std::collections::HashMap;
use std::hash::Hash;

/// Bytes charged per record in every byte quota: about what one costs in
/// memory (its index entries and bookkeeping) and on disk (its key and
/// record framing), whatever its payload.
pub(crate) const RECORD_OVERHEAD: usize = 256;
/// One party's share of a box is this fraction of the box's limits.
pub(crate) const SHARE: usize = 4;

/// Records and bytes (with their overhead) held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Records.
    pub records: usize,
    /// Payload bytes plus [`RECORD_OVERHEAD`] per record.
    pub bytes: usize,
}

/// The most one party or box may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    /// Records.
    pub records: usize,
    /// Payload bytes plus [`RECORD_OVERHEAD`] per record.
    pub bytes: usize,
}

/// What a record of `payload` bytes costs against a byte limit.
pub(crate) fn cost(payload: usize) -> usize {
    payload.saturating_add(RECORD_OVERHEAD)
}

impl Usage {
    /// Whether one more record of `payload` bytes stays within `limit`.
    pub(crate) fn fits(&self, limit: Limit, payload: usize) -> bool {
        self.records < limit.records && self.bytes.saturating_add(cost(payload)) <= limit.bytes
    }

    fn add(&mut self, payload: usize) {
        self.records += 1;
        self.bytes = self.bytes.saturating_add(cost(payload));
    }

    fn sub(&mut self, payload: usize) {
        self.records = self.records.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(cost(payload));
    }

    fn is_empty(&self) -> bool {
        self.records == 0
    }
}

impl Limit {
    /// Limits of `records` records and `bytes` bytes (overhead included).
    pub(crate) fn new(records: usize, bytes: usize) -> Self {
        Self { records, bytes }
    }

    /// One party's fair share of a box with these limits (at least one
    /// record, and room for one record of `max_payload`).
    pub(crate) fn share(self, max_payload: usize) -> Self {
        Self { records: (self.records / SHARE).max(1), bytes: (self.bytes / SHARE).max(cost(max_payload)) }
    }
}

/// Usage per party; a party at zero is forgotten.
#[derive(Debug)]
pub(crate) struct Tally<K> {
    usage: HashMap<K, Usage>,
}

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self { usage: HashMap::new() }
    }
}

impl<K: Hash + Eq + Copy> Tally<K> {
    /// What `key` holds.
    pub(crate) fn get(&self, key: &K) -> Usage {
        self.usage.get(key).copied().unwrap_or_default()
    }

    /// `key` keeps one more record of `payload` bytes.
    pub(crate) fn add(&mut self, key: K, payload: usize) {
        self.usage.entry(key).or_default().add(payload);
    }

    /// `key` gave up one record of `payload` bytes.
    pub(crate) fn sub(&mut self, key: &K, payload: usize) {
        if let Some(usage) = self.usage.get_mut(key) {
            usage.sub(payload);
            if usage.is_empty() {
                self.usage.remove(key);
            }
        }
    }
}

/// The first of `checks` (a party's usage and its limit, and a name for
/// the refusal) that one more record of `payload` bytes would pass: its
/// name and limit.
pub(crate) fn first_over<'a>(payload: usize, checks: &[(Usage, Limit, &'a str)]) -> Option<(&'a str, Limit)> {
    checks.iter().find(|(usage, limit, _)| !usage.fits(*limit, payload)).map(|(_, limit, name)| (*name, *limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_records_count_against_both_limits() {
        let limit = Limit::new(3, 10 * RECORD_OVERHEAD);
        let mut tally: Tally<u8> = Tally::default();
        for _ in 0..3 {
            assert!(tally.get(&1).fits(limit, 0));
            tally.add(1, 0);
        }
        assert!(!tally.get(&1).fits(limit, 0), "a fourth empty record is one too many");
        assert_eq!(tally.get(&1).bytes, 3 * RECORD_OVERHEAD, "empty records still cost their overhead");
        let bytes = Limit::new(100, 2 * RECORD_OVERHEAD + 10);
        let mut big: Tally<u8> = Tally::default();
        big.add(1, 10);
        assert!(big.get(&1).fits(bytes, 0));
        assert!(!big.get(&1).fits(bytes, 1));
    }

    #[test]
    fn a_party_at_zero_is_forgotten_and_counts_never_go_below_zero() {
        let mut tally: Tally<u8> = Tally::default();
        tally.add(7, 5);
        tally.sub(&7, 5);
        tally.sub(&7, 5);
        assert_eq!(tally.get(&7), Usage::default());
        assert!(tally.usage.is_empty());
    }

    #[test]
    fn a_share_is_a_fraction_but_always_room_for_one() {
        let limit = Limit::new(4096, 16 << 20);
        assert_eq!(limit.share(1 << 20), Limit::new(1024, 4 << 20));
        assert_eq!(Limit::new(2, 100).share(1000), Limit::new(1, cost(1000)));
    }

    #[test]
    fn first_over_names_the_limit_passed() {
        let full = Usage { records: 2, bytes: 0 };
        let checks = [(Usage::default(), Limit::new(5, 5000), "box"), (full, Limit::new(2, 5000), "share")];
        assert_eq!(first_over(0, &checks), Some(("share", Limit::new(2, 5000))));
        assert_eq!(first_over(0, &checks[..1]), None);
    }
}
