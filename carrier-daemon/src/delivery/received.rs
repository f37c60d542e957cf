//! How the receiving side is laid out in the message store: the messages
//! one transaction holds are one inbox record, and which of them their apps
//! have not yet taken is one bit each. A message thus costs the store a
//! part of one B-tree insert, not an insert and a remove of its own.
//!
//! ```text
//!  inbox_records  first delivery ─▶ (delivery, StoredIncoming)*   until the last of them is taken
//!  inbox_left     first delivery ─▶ bit per delivery, set: not taken yet
//!                                   (no row: none of the record is taken)
//! ```
//!
//! Which deliveries of each record are still held is kept in memory
//! ([`Batches`], as for the outbox), rebuilt at start from the records and
//! their bits. A transaction that takes some of a record's messages writes
//! its bits once; one that takes the last removes the record and its bits.

use std::collections::{BTreeMap, BTreeSet};

use carrier_proto::pb;
use redb::{ReadableTable, TableDefinition};

use super::sent::{Batch, BatchChanges, Batches, MAX_SPAN, entries, push_entry, rows_to_records};

/// Inbox records: first delivery ─▶ entries.
pub(super) const INBOX: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("inbox_records");
/// Which deliveries of a record are still held: little-endian 64-bit words.
pub(super) const LEFT: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("inbox_left");
/// One row per message: how the inbox was first laid out (moved at open).
pub(super) const INBOX_ROWS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("inbox");

/// What one transaction does to the inbox, written at its end.
#[derive(Debug, Default)]
pub(super) struct InboxWrites {
    /// Records this transaction starts: first delivery ─▶ value.
    records: BTreeMap<u64, Vec<u8>>,
    /// The record holds are being appended to.
    current: Option<u64>,
    /// Records some of whose messages were taken.
    taken_from: BTreeSet<u64>,
    /// A buffer for the next record to start.
    spare: Vec<u8>,
    /// The records' held deliveries, as they are after the transaction.
    pub changes: BatchChanges,
}

impl InboxWrites {
    /// Writes that start their first record in `buffer` (emptied).
    pub(super) fn reusing(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        Self { spare: buffer, ..Self::default() }
    }

    /// The largest buffer, to reuse.
    pub(super) fn spare(&mut self) -> Vec<u8> {
        let records = std::mem::take(&mut self.records).into_values();
        records.chain([std::mem::take(&mut self.spare)]).max_by_key(Vec::capacity).unwrap_or_default()
    }

    /// Holds `delivery` (deliveries come in rising order; one out of it
    /// starts a record of its own).
    pub(super) fn hold(&mut self, delivery: u64, incoming: &pb::StoredIncoming) -> Result<(), prost::EncodeError> {
        let first = match self.current {
            Some(first) if delivery >= first && delivery - first < MAX_SPAN => first,
            _ => *self.current.insert(delivery),
        };
        let record = self.records.entry(first).or_insert_with(|| std::mem::take(&mut self.spare));
        push_entry(record, delivery, incoming)?;
        self.changes.touched.entry(first).or_default().add(delivery - first);
        Ok(())
    }

    /// `delivery` was taken (nothing happens if it is not held).
    pub(super) fn take(&mut self, on_disk: &Batches, delivery: u64) {
        if let Some((first, _)) = self.changes.settle(on_disk, delivery) {
            self.taken_from.insert(first);
        }
    }

    /// Writes the transaction's records, bits and removals.
    pub(super) fn write(
        &self,
        inbox: &mut redb::Table<'_, u64, &'static [u8]>,
        left: &mut redb::Table<'_, u64, &'static [u8]>,
    ) -> Result<(), redb::Error> {
        let held = |first: &u64| self.changes.touched.get(first).map_or(0, Batch::left);
        for (first, value) in &self.records {
            if held(first) > 0 {
                inbox.insert(*first, value.as_slice())?;
            }
        }
        for first in &self.taken_from {
            match self.changes.touched.get(first) {
                Some(batch) if batch.left() > 0 => {
                    let bits: Vec<u8> = batch.words().iter().flat_map(|w| w.to_le_bytes()).collect();
                    left.insert(*first, bits.as_slice())?;
                }
                _ => {
                    inbox.remove(*first)?;
                    left.remove(*first)?;
                }
            }
        }
        Ok(())
    }
}

/// The held messages of every inbox record, in delivery order, and which
/// ones they are; a record none of which is held any more is removed.
pub(super) fn load_inbox(
    txn: &redb::WriteTransaction,
) -> Result<(Vec<(u64, pb::StoredIncoming)>, Batches), redb::Error> {
    let mut inbox = txn.open_table(INBOX)?;
    let mut left = txn.open_table(LEFT)?;
    let (mut held, mut batches, mut spent) = (Vec::new(), Batches::default(), Vec::new());
    for row in inbox.iter()? {
        let (first, value) = row?;
        let first = first.value();
        let incoming = match entries::<pb::StoredIncoming>(value.value()) {
            Ok(incoming) => incoming,
            Err(error) => {
                tracing::warn!(first, %error, "skipping an inbox record that does not decode; left in place");
                continue;
            }
        };
        // No bits: none of it was taken.
        let words: Option<Vec<u64>> = left.get(first)?.map(|bits| {
            bits.value().chunks(8).map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0xff; 8]))).collect()
        });
        let mut batch = Batch::default();
        for (delivery, incoming) in incoming {
            if delivery < first || delivery - first >= MAX_SPAN {
                tracing::warn!(first, delivery, "skipping an inbox entry outside its record");
                continue;
            }
            let offset = delivery - first;
            let still_held = words.as_ref().is_none_or(|words| {
                words.get((offset / 64) as usize).is_some_and(|word| word & (1 << (offset % 64)) != 0)
            });
            if still_held {
                batch.add(offset);
                held.push((delivery, incoming));
            }
        }
        match batch.left() {
            0 => spent.push(first),
            _ => batches.put(first, batch),
        }
    }
    for first in spent {
        inbox.remove(first)?;
        left.remove(first)?;
    }
    held.sort_by_key(|(delivery, _)| *delivery);
    Ok((held, batches))
}

/// The held deliveries whose messages are past their time to live.
pub(super) fn expired(
    inbox: &redb::Table<'_, u64, &'static [u8]>,
    batches: &Batches,
    now_ms: u64,
) -> Result<Vec<u64>, redb::Error> {
    let mut expired = Vec::new();
    for row in inbox.iter()? {
        let (_, value) = row?;
        let Ok(incoming) = entries::<pb::StoredIncoming>(value.value()) else { continue };
        for (delivery, incoming) in incoming {
            let expires_at_ms = incoming.envelope.map_or(0, |e| e.expires_at_ms);
            if expires_at_ms != 0 && expires_at_ms <= now_ms && batches.is_pending(delivery) {
                expired.push(delivery);
            }
        }
    }
    Ok(expired)
}

/// Moves an inbox with one row per message to records: each row becomes
/// a record of its own.
pub(super) fn move_rows(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    let moved = rows_to_records(txn, INBOX_ROWS, INBOX)?;
    txn.delete_table(INBOX_ROWS)?;
    if moved > 0 {
        tracing::info!(rows = moved, "moved the message store's inbox to batch records");
    }
    Ok(())
}
