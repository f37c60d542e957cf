//! How the sending side is laid out in the message store: the messages a
//! transaction enqueued are one outbox record, and receipts are kept in
//! pages of 64 seqs. A message thus costs the store a part of one B-tree
//! insert, not three (its own row in, out, and its receipt's row in).
//!
//! ```text
//!  outbox_batches  first seq ─▶ (seq, StoredOutgoing)*   the messages one transaction enqueued,
//!                                                        until the last of them is settled
//!  receipt_pages   seq / 64  ─▶ (seq, StoredReceipt)*    appended as messages settle
//! ```
//!
//! Which messages of each outbox record are still pending is kept in
//! memory ([`Batches`]), rebuilt at start from the records and the
//! receipts. A value is a run of entries, each a varint seq and a
//! length-delimited protobuf message.

use std::collections::{BTreeMap, HashMap, HashSet};

use carrier_proto::pb;
use prost::Message;
use redb::{ReadableTable, TableDefinition};

/// Outbox records: first seq ─▶ entries.
pub(super) const OUTBOX: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("outbox_batches");
/// Receipt pages: seq >> [`PAGE_SHIFT`] ─▶ entries.
pub(super) const RECEIPTS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("receipt_pages");
/// One row per message: how stores were first laid out (moved at open).
pub(super) const OUTBOX_ROWS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("outbox");
pub(super) const RECEIPT_ROWS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("receipts");

/// Seqs per receipt page: the page of seq `s` is `s >> PAGE_SHIFT`.
pub(super) const PAGE_SHIFT: u32 = 6;

/// The most seqs one outbox record may span (a transaction holds at most
/// 8,192 ops); an entry past it is a damaged record's.
pub(super) const MAX_SPAN: u64 = 1 << 16;

/// Appends the entry `(seq, message)` to a value.
pub(super) fn push_entry(value: &mut Vec<u8>, seq: u64, message: &impl Message) -> Result<(), prost::EncodeError> {
    prost::encoding::encode_varint(seq, value);
    message.encode_length_delimited(value)
}

/// Appends the entry `(seq, message)` for a message already encoded.
fn push_encoded(value: &mut Vec<u8>, seq: u64, encoded: &[u8]) {
    prost::encoding::encode_varint(seq, value);
    prost::encoding::encode_varint(encoded.len() as u64, value);
    value.extend_from_slice(encoded);
}

/// The entries of a value, in order.
pub(super) fn entries<M: Message + Default>(value: &[u8]) -> Result<Vec<(u64, M)>, prost::DecodeError> {
    let mut rest = value;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let seq = prost::encoding::decode_varint(&mut rest)?;
        entries.push((seq, M::decode_length_delimited(&mut rest)?));
    }
    Ok(entries)
}

/// One outbox record: which of its seqs are still pending.
#[derive(Debug, Clone, Default)]
pub(super) struct Batch {
    /// Bit `s - first` set: seq `s` is pending.
    pending: Vec<u64>,
    left: usize,
}

impl Batch {
    /// Marks `offset` (its seq less the record's first) pending.
    pub(super) fn add(&mut self, offset: u64) {
        let (word, bit) = ((offset / 64) as usize, offset % 64);
        if self.pending.len() <= word {
            self.pending.resize(word + 1, 0);
        }
        if self.pending[word] & (1 << bit) == 0 {
            self.pending[word] |= 1 << bit;
            self.left += 1;
        }
    }

    /// Settles `offset`; whether it was pending.
    pub(super) fn settle(&mut self, offset: u64) -> bool {
        let (word, bit) = ((offset / 64) as usize, offset % 64);
        match self.pending.get_mut(word) {
            Some(bits) if *bits & (1 << bit) != 0 => {
                *bits &= !(1 << bit);
                self.left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Whether `offset` is pending.
    pub(super) fn is_pending(&self, offset: u64) -> bool {
        self.pending.get((offset / 64) as usize).is_some_and(|bits| bits & (1 << (offset % 64)) != 0)
    }

    /// Pending messages left.
    pub(super) fn left(&self) -> usize {
        self.left
    }

    /// The pending bits, 64 offsets a word.
    pub(super) fn words(&self) -> &[u64] {
        &self.pending
    }
}

/// Every outbox record on disk, by first seq.
#[derive(Debug, Default)]
pub(super) struct Batches(BTreeMap<u64, Batch>);

impl Batches {
    /// The record holding `seq`, if any: its first seq.
    pub(super) fn holding(&self, seq: u64) -> Option<u64> {
        self.0.range(..=seq).next_back().filter(|(first, batch)| batch.is_pending(seq - **first)).map(|(f, _)| *f)
    }

    /// Whether `seq` is pending.
    pub(super) fn is_pending(&self, seq: u64) -> bool {
        self.holding(seq).is_some()
    }

    /// The first seq of the oldest record on disk.
    pub(super) fn oldest(&self) -> Option<u64> {
        self.0.keys().next().copied()
    }

    /// Record `first` as it is now.
    pub(super) fn get(&self, first: u64) -> Option<&Batch> {
        self.0.get(&first)
    }

    /// Replaces record `first` (removing it once nothing in it is pending).
    pub(super) fn put(&mut self, first: u64, batch: Batch) {
        match batch.left() {
            0 => self.0.remove(&first),
            _ => self.0.insert(first, batch),
        };
    }
}

/// What one transaction does to the outbox records, applied to
/// [`Batches`] once it committed.
#[derive(Debug, Default)]
pub(super) struct BatchChanges {
    /// Records touched, as they are after the transaction.
    pub touched: BTreeMap<u64, Batch>,
}

impl BatchChanges {
    /// Settles `seq` (in a record on disk or one this transaction
    /// writes); the record's first seq and whether nothing in it is
    /// pending any more, if `seq` was pending.
    pub(super) fn settle(&mut self, batches: &Batches, seq: u64) -> Option<(u64, bool)> {
        let first = match self.touched.range(..=seq).next_back() {
            Some((first, batch)) if batch.is_pending(seq - first) => *first,
            _ => batches.holding(seq)?,
        };
        let batch = match self.touched.entry(first) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(batches.get(first)?.clone()),
        };
        batch.settle(seq - first).then_some((first, batch.left() == 0))
    }

    /// Applies the transaction's changes.
    pub(super) fn apply(self, batches: &mut Batches) {
        for (first, batch) in self.touched {
            batches.put(first, batch);
        }
    }
}

/// Moves a store with one row per message to the layout of
/// [`super::sent`]: each outbox row becomes a record of its own, and the
/// receipts go to their pages.
pub(super) fn move_rows(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    let mut moved = rows_to_records(txn, OUTBOX_ROWS, OUTBOX)?;
    {
        let rows = txn.open_table(RECEIPT_ROWS)?;
        let mut pages: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for row in rows.iter()? {
            let (seq, value) = row?;
            push_encoded(pages.entry(seq.value() >> PAGE_SHIFT).or_default(), seq.value(), value.value());
            moved += 1;
        }
        let mut receipts = txn.open_table(RECEIPTS)?;
        for (page, value) in pages {
            receipts.insert(page, value.as_slice())?;
        }
    }
    txn.delete_table(OUTBOX_ROWS)?;
    txn.delete_table(RECEIPT_ROWS)?;
    if moved > 0 {
        tracing::info!(rows = moved, "moved the message store's outbox and receipts to batch records");
    }
    Ok(())
}

/// Makes each row of `rows` (key ─▶ one encoded message) a record of its
/// own in `records`, under the same key; how many.
pub(super) fn rows_to_records(
    txn: &redb::WriteTransaction,
    rows: TableDefinition<'static, u64, &'static [u8]>,
    records: TableDefinition<'static, u64, &'static [u8]>,
) -> Result<usize, redb::Error> {
    let (rows, mut records) = (txn.open_table(rows)?, txn.open_table(records)?);
    let mut moved = 0;
    for row in rows.iter()? {
        let (key, value) = row?;
        let mut record = Vec::new();
        push_encoded(&mut record, key.value(), value.value());
        records.insert(key.value(), record.as_slice())?;
        moved += 1;
    }
    Ok(moved)
}

/// The pending messages of every outbox record, in seq order, and which
/// ones they are; a record nothing in which is pending is removed.
pub(super) fn load_outbox(
    txn: &redb::WriteTransaction,
) -> Result<(Vec<(u64, pb::StoredOutgoing)>, Batches), redb::Error> {
    let mut outbox = txn.open_table(OUTBOX)?;
    let receipts = txn.open_table(RECEIPTS)?;
    let mut settled_pages: HashMap<u64, HashSet<u64>> = HashMap::new();
    let (mut pending, mut batches, mut spent) = (Vec::new(), Batches::default(), Vec::new());
    for row in outbox.iter()? {
        let (first, value) = row?;
        let first = first.value();
        let outgoing = match entries::<pb::StoredOutgoing>(value.value()) {
            Ok(outgoing) => outgoing,
            Err(error) => {
                tracing::warn!(first, %error, "skipping an outbox record that does not decode; left in place");
                continue;
            }
        };
        let mut batch = Batch::default();
        for (seq, mut outgoing) in outgoing {
            if seq < first || seq - first >= MAX_SPAN {
                tracing::warn!(first, seq, "skipping an outbox entry outside its record");
                continue;
            }
            let page = seq >> PAGE_SHIFT;
            let settled = match settled_pages.entry(page) {
                std::collections::hash_map::Entry::Occupied(seqs) => seqs.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let seqs = match receipts.get(page)? {
                        Some(v) => entries::<pb::StoredReceipt>(v.value()).unwrap_or_else(|error| {
                            // Its messages look pending and are offered
                            // again: the receiver answers what it answered.
                            tracing::warn!(page, %error, "a receipt page does not decode");
                            Vec::new()
                        }),
                        None => Vec::new(),
                    };
                    slot.insert(seqs.into_iter().map(|(s, _)| s).collect())
                }
            };
            if settled.contains(&seq) {
                continue;
            }
            if let Some(envelope) = outgoing.envelope.as_mut() {
                envelope.seq = seq;
            }
            batch.add(seq - first);
            pending.push((seq, outgoing));
        }
        match batch.left() {
            0 => spent.push(first),
            _ => batches.put(first, batch),
        }
    }
    for first in spent {
        outbox.remove(first)?;
    }
    pending.sort_by_key(|(seq, _)| *seq);
    Ok((pending, batches))
}

/// Forgets receipts settled before `cutoff`: the idempotency keys they
/// held, to forget too. Receipts of seqs from `keep_from` on stay
/// whatever their age: an outbox record still holds those seqs, and at
/// the next start their receipts are what tells the settled ones from the
/// pending (a message told of its end must never be sent again).
pub(super) fn prune_receipts(
    receipts: &mut redb::Table<'_, u64, &'static [u8]>,
    cutoff: u64,
    keep_from: Option<u64>,
) -> Result<Vec<Vec<u8>>, redb::Error> {
    let mut stale_keys = Vec::new();
    let mut pages = Vec::new();
    for row in receipts.iter()? {
        let (page, value) = row?;
        let Ok(kept) = entries::<pb::StoredReceipt>(value.value()) else {
            tracing::warn!(page = page.value(), "a receipt page does not decode; left in place");
            continue;
        };
        let held = |seq: u64| keep_from.is_some_and(|first| seq >= first);
        let (fresh, stale): (Vec<_>, Vec<_>) =
            kept.into_iter().partition(|(seq, r)| r.settled_at_ms >= cutoff || held(*seq));
        if !stale.is_empty() {
            let keyed = stale.into_iter().filter(|(_, r)| !r.key.is_empty());
            stale_keys.extend(keyed.map(|(_, r)| [r.from_app, r.key].concat()));
            pages.push((page.value(), fresh));
        }
    }
    for (page, fresh) in pages {
        if fresh.is_empty() {
            receipts.remove(page)?;
            continue;
        }
        let mut value = Vec::new();
        for (seq, receipt) in &fresh {
            push_entry(&mut value, *seq, receipt).map_err(|e| redb::Error::Io(std::io::Error::other(e)))?;
        }
        receipts.insert(page, value.as_slice())?;
    }
    Ok(stale_keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_cut_value_is_an_error() {
        let mut value = Vec::new();
        for seq in [1u64, 300, 70_000] {
            push_entry(&mut value, seq, &carrier_proto::pb::Pong { nonce: seq * 2 }).unwrap();
        }
        let read: Vec<(u64, carrier_proto::pb::Pong)> = entries(&value).unwrap();
        assert_eq!(
            read.iter().map(|(s, p)| (*s, p.nonce)).collect::<Vec<_>>(),
            vec![(1, 2), (300, 600), (70_000, 140_000)]
        );
        assert!(entries::<carrier_proto::pb::Pong>(&value[..value.len() - 1]).is_err());
    }

    #[test]
    fn a_record_is_dropped_when_its_last_message_settles_and_only_once() {
        let mut batches = Batches::default();
        let mut batch = Batch::default();
        for offset in 0..3 {
            batch.add(offset);
        }
        batches.put(10, batch);
        let mut changes = BatchChanges::default();
        assert_eq!(changes.settle(&batches, 11), Some((10, false)));
        assert_eq!(changes.settle(&batches, 11), None, "settled twice");
        assert_eq!(changes.settle(&batches, 13), None, "not in the record");
        assert_eq!(changes.settle(&batches, 9), None);
        assert_eq!(changes.settle(&batches, 10), Some((10, false)));
        assert!(batches.is_pending(10), "unchanged until the transaction commits");
        changes.apply(&mut batches);
        assert!(!batches.is_pending(10) && batches.is_pending(12));
        let mut changes = BatchChanges::default();
        assert_eq!(changes.settle(&batches, 12), Some((10, true)));
        changes.apply(&mut batches);
        assert!(batches.get(10).is_none());
    }
}
