//! The message store: this device's outbox, inbox, receipts and replay
//! state in one redb database (`messages.redb`), changed in batches.
//!
//! ```text
//!  outbox_batches  first seq ─▶ (seq, StoredOutgoing)*  until every message in it is settled
//!  receipt_pages   seq / 64 ─▶ (seq, StoredReceipt)*    for 7 days, for apps that ask later
//!  sent_keys from_app ‖ key ─▶ seq        idempotent sends, as long as the receipt
//!  inbox_records  first delivery ─▶ (delivery, StoredIncoming)*  until its apps took them all
//!  inbox_left     first delivery ─▶ a bit per delivery not yet taken
//!  replay    from_app ‖ to_app ─▶ PairState   the messages taken per pair (a window per sender run)
//!  handed    to_app ─▶ delivery    every message up to it may have been handed to its app
//!  refused   from_app ‖ epoch ‖ seq ─▶ StoredReceipt   what we refused, for retries (an hour)
//!  mailbox   recipient ‖ blob id ─▶ StoredBlob   sealed blobs we keep for offline devices
//!  meta      "epoch", "epoch_started_ms", "next_seq", "next_delivery"
//! ```
//!
//! The sending side's two tables are laid out in [`super::sent`], the
//! receiving side's in [`super::received`]. Stores written with one row per
//! message (`outbox`, `receipts`, `inbox`) are moved to them when opened.
//!
//! [`MessageStore::apply`] runs a batch of [`Op`]s in one write transaction,
//! so one fsync covers thousands of messages. Within a batch, a message
//! held and taken in it never touches the inbox tables, and only the last
//! replay position of each pair is written: the transaction's outcome is
//! the same, with a fraction of the B-tree work. A record that does not decode
//! is skipped with a warning and left in place, never deleted.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashSet};
use std::path::Path;

use carrier_proto::identity::Did;
use carrier_proto::messaging::{MessageId, PairState};
use carrier_proto::pb;
use prost::Message as _;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

#[cfg(test)]
use super::received::INBOX_ROWS;
use super::received::{self, INBOX, InboxWrites, LEFT, load_inbox};
use super::sent::{
    self, BatchChanges, Batches, OUTBOX, PAGE_SHIFT, RECEIPTS, load_outbox, move_rows, prune_receipts, push_entry,
};
#[cfg(test)]
use super::sent::{OUTBOX_ROWS, RECEIPT_ROWS};

const META: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("meta");
const SENT_KEYS: TableDefinition<'static, &'static [u8], u64> = TableDefinition::new("sent_keys");
const REPLAY: TableDefinition<'static, &'static [u8], &'static [u8]> = TableDefinition::new("replay");
const REFUSED: TableDefinition<'static, &'static [u8], &'static [u8]> = TableDefinition::new("refused");
const MAILBOX: TableDefinition<'static, &'static [u8], &'static [u8]> = TableDefinition::new("mailbox");
const HANDED: TableDefinition<'static, &'static [u8], u64> = TableDefinition::new("handed");

/// A sealed blob's id (its SHA-256).
pub(crate) type BlobId = [u8; 32];
/// Blobs read back, with their ids.
pub(crate) type BlobList = Vec<(BlobId, Vec<u8>)>;

/// How long receipts are kept for apps that ask later.
pub(crate) const RECEIPT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// How long what we refused is kept, so a retry hears the same answer: far
/// longer than any courier waits between retries, short enough that a
/// refused sender cannot pile up rows.
pub(crate) const REFUSED_RETENTION_MS: u64 = 3600 * 1000;

/// Why the message store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or written.
    #[error("message store {path}: {source}; check the disk and the file's permissions")]
    Database {
        /// The database file.
        path: String,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
}

/// One change to the store.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new message from a local app: gets the next seq (or, if its key
    /// was used before, the earlier message's).
    Enqueue { outgoing: pb::StoredOutgoing, from_app: Did },
    /// A sent message's fate is known. `key` is its idempotency key (kept
    /// with the receipt so that pruning forgets it too).
    Settle { seq: u64, from_app: Did, outcome: pb::Outcome, detail: String, now_ms: u64, key: Vec<u8> },
    /// A message for a local app, taken into the inbox under `delivery`,
    /// with its pair's replay state after it (`replay`, encoded); with
    /// `handed`, its app's session is live and gets it at once, so the
    /// app's handed mark moves to it in the same transaction.
    Hold { delivery: u64, incoming: pb::StoredIncoming, from_app: Did, to_app: Did, replay: Vec<u8>, handed: bool },
    /// Messages up to `upto` may be handed to `app` from now on: after a
    /// crash each of them comes again marked redelivered.
    Handed { app: Did, upto: u64 },
    /// We refused a message; a retry gets the same answer.
    Refuse { from_app: Did, id: MessageId, outcome: pb::Outcome, detail: String, now_ms: u64 },
    /// The app took these inbox entries.
    Taken { deliveries: Vec<u64> },
    /// A sealed blob kept for offline device `recipient`.
    Deposit { recipient: Did, id: [u8; 32], stored: pb::StoredBlob },
    /// Blobs `recipient` took.
    RemoveBlobs { recipient: Did, ids: Vec<[u8; 32]> },
    /// Forgets receipts and refusals older than the retention, and inbox
    /// entries and blobs past their time to live.
    Prune { now_ms: u64 },
}

/// What an [`Op`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Enqueued under `seq`; `duplicate` if the key named an earlier one.
    Enqueued { seq: u64, duplicate: bool },
    /// Anything else.
    Done,
}

/// What the store holds at start.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub epoch: [u8; 16],
    /// When this store's epoch began (Unix milliseconds).
    pub epoch_started_ms: u64,
    /// The outbox, in seq order.
    pub outbox: Vec<(u64, pb::StoredOutgoing)>,
    /// The inbox, in delivery order.
    pub inbox: Vec<(u64, pb::StoredIncoming)>,
    /// What each (from app, to app) pair has taken.
    pub replay: HashMap<(Did, Did), PairState>,
    /// Above every delivery number used so far.
    pub next_delivery: u64,
    /// The mailbox: what each blob is, without the blob itself.
    pub mailbox: Vec<KeptBlob>,
    /// Per app, the last delivery that may have been handed to it.
    pub handed: HashMap<Did, u64>,
}

/// A blob in the mailbox, as the quotas see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeptBlob {
    pub recipient: Did,
    pub id: [u8; 32],
    pub len: usize,
    pub depositor: Did,
    pub expires_at_ms: u64,
}

/// A fate an app may ask for later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Known {
    Pending,
    Settled { from_app: Vec<u8>, outcome: i32, detail: String },
}

/// The open database.
pub(crate) struct MessageStore {
    db: Database,
    path: String,
    next_seq: u64,
    next_delivery: u64,
    /// Which messages of each outbox record are pending.
    batches: Batches,
    /// Which messages of each inbox record are held.
    held: Batches,
    /// Buffers for the records of the next transaction: kept, so that
    /// each one does not grow a new buffer (and fault in fresh pages).
    spare: (Vec<u8>, Vec<u8>),
}

/// The largest record buffer kept for the next transaction.
const MAX_SPARE: usize = 8 << 20;

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore").field("path", &self.path).finish()
    }
}

impl MessageStore {
    /// Opens (or creates) the store at `path`, and reads what it holds.
    /// The file is readable by its owner only (0600): it holds what apps
    /// and peers sent.
    pub(crate) fn open(path: &Path) -> Result<(Self, Loaded), StoreError> {
        let file = crate::paths::open_private(path).map_err(|e| database(path, redb::Error::Io(e)))?;
        let db = Database::builder().create_file(file).map_err(|e| database(path, e))?;
        Self::start(db, path.display().to_string())
    }

    /// A store in memory: nothing survives the process (benchmarks and tests).
    pub(crate) fn in_memory() -> Result<(Self, Loaded), StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| database(Path::new("(memory)"), e))?;
        Self::start(db, "(memory)".into())
    }

    fn start(db: Database, path: String) -> Result<(Self, Loaded), StoreError> {
        let mut store = Self {
            db,
            path,
            next_seq: 1,
            next_delivery: 1,
            batches: Batches::default(),
            held: Batches::default(),
            spare: Default::default(),
        };
        let loaded = store.load().map_err(|e| store.error(e))?;
        Ok((store, loaded))
    }

    fn error(&self, source: impl Into<redb::Error>) -> StoreError {
        StoreError::Database { path: self.path.clone(), source: Box::new(source.into()) }
    }

    fn load(&mut self) -> Result<Loaded, redb::Error> {
        let txn = self.db.begin_write()?;
        let mut loaded = Loaded::default();
        {
            let mut meta = txn.open_table(META)?;
            let epoch = meta.get("epoch")?.and_then(|v| <[u8; 16]>::try_from(v.value()).ok());
            loaded.epoch = match epoch {
                Some(epoch) => epoch,
                None => {
                    let mut epoch = [0u8; 16];
                    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut epoch);
                    meta.insert("epoch", epoch.as_slice())?;
                    epoch
                }
            };
            let started = meta.get("epoch_started_ms")?.and_then(|v| <[u8; 8]>::try_from(v.value()).ok());
            loaded.epoch_started_ms = match started {
                Some(started) => u64::from_be_bytes(started),
                // An epoch from before this was kept: it started no later than now.
                None => {
                    let now = super::outbox::now_ms();
                    meta.insert("epoch_started_ms", now.to_be_bytes().as_slice())?;
                    now
                }
            };
            let counter = |name: &str| -> Result<u64, redb::Error> {
                Ok(meta.get(name)?.and_then(|v| <[u8; 8]>::try_from(v.value()).ok()).map_or(1, u64::from_be_bytes))
            };
            self.next_seq = counter("next_seq")?;
            self.next_delivery = counter("next_delivery")?;
            // Opened here so that later read transactions find every table.
            txn.open_table(SENT_KEYS)?;
            txn.open_table(REFUSED)?;
            for row in txn.open_table(HANDED)?.iter()? {
                let (app, upto) = row?;
                match Did::from_key_bytes(app.value()) {
                    Ok(app) => {
                        loaded.handed.insert(app, upto.value());
                    }
                    Err(_) => tracing::warn!("skipping a handed record that does not decode"),
                }
            }
            for row in txn.open_table(MAILBOX)?.iter()? {
                let (key, value) = row?;
                let parsed = (|| {
                    let key = key.value();
                    let recipient = Did::from_key_bytes(key.get(..32)?).ok()?;
                    let id: [u8; 32] = key.get(32..)?.try_into().ok()?;
                    let stored = pb::StoredBlob::decode(value.value()).ok()?;
                    let depositor = Did::from_key_bytes(&stored.depositor).ok()?;
                    Some(KeptBlob {
                        recipient,
                        id,
                        len: stored.blob.len(),
                        depositor,
                        expires_at_ms: stored.expires_at_ms,
                    })
                })();
                match parsed {
                    Some(kept) => loaded.mailbox.push(kept),
                    None => tracing::warn!("skipping a mailbox record that does not decode"),
                }
            }
            move_rows(&txn)?;
            let (outbox, batches) = load_outbox(&txn)?;
            (loaded.outbox, self.batches) = (outbox, batches);
            received::move_rows(&txn)?;
            (loaded.inbox, self.held) = load_inbox(&txn)?;
            for row in txn.open_table(REPLAY)?.iter()? {
                let (pair, last) = row?;
                let (pair, last) = (pair.value(), last.value());
                let parsed = (|| {
                    let from = Did::from_key_bytes(pair.get(..32)?).ok()?;
                    let to = Did::from_key_bytes(pair.get(32..)?).ok()?;
                    Some(((from, to), PairState::decode(last)?))
                })();
                match parsed {
                    Some((pair, id)) => {
                        loaded.replay.insert(pair, id);
                    }
                    None => tracing::warn!("skipping a replay record that does not decode"),
                }
            }
        }
        txn.commit()?;
        loaded.next_delivery = self.next_delivery;
        Ok(loaded)
    }

    /// Applies `ops` in one transaction: all of them, or (on error) none.
    pub(crate) fn apply<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a Op, IntoIter: Clone>,
    ) -> Result<Vec<Applied>, StoreError> {
        let (mut next_seq, mut next_delivery) = (self.next_seq, self.next_delivery);
        let (mut record, spare) = std::mem::take(&mut self.spare);
        record.clear();
        let (mut changes, mut held) = (BatchChanges::default(), InboxWrites::reusing(spare));
        let written = self.write(ops, &mut next_seq, &mut next_delivery, &mut record, &mut changes, &mut held);
        let keep = |mut buffer: Vec<u8>| {
            buffer.clear();
            if buffer.capacity() > MAX_SPARE { Vec::new() } else { buffer }
        };
        self.spare = (keep(record), keep(held.spare()));
        let applied = written.map_err(|e| self.error(e))?;
        (self.next_seq, self.next_delivery) = (next_seq, next_delivery);
        changes.apply(&mut self.batches);
        held.changes.apply(&mut self.held);
        Ok(applied)
    }

    fn write<'a>(
        &self,
        ops: impl IntoIterator<Item = &'a Op, IntoIter: Clone>,
        next_seq: &mut u64,
        next_delivery: &mut u64,
        record: &mut Vec<u8>,
        changes: &mut BatchChanges,
        held: &mut InboxWrites,
    ) -> Result<Vec<Applied>, redb::Error> {
        let ops = ops.into_iter();
        // The messages this transaction enqueues: one outbox record.
        let mut record_first = None;
        // Receipts to append, per page.
        let mut receipt_entries: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let txn = self.db.begin_write()?;
        let mut applied = Vec::with_capacity(ops.size_hint().0);
        let batch = Coalesced::of(ops.clone());
        {
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut receipts = txn.open_table(RECEIPTS)?;
            let mut keys = txn.open_table(SENT_KEYS)?;
            let mut inbox = txn.open_table(INBOX)?;
            let mut left = txn.open_table(LEFT)?;
            let mut replay = txn.open_table(REPLAY)?;
            let mut refused = txn.open_table(REFUSED)?;
            let mut mailbox = txn.open_table(MAILBOX)?;
            let mut handed = txn.open_table(HANDED)?;
            let mut buf = Vec::new();
            for op in ops {
                buf.clear();
                applied.push(match op {
                    Op::Enqueue { outgoing, from_app } => {
                        let key = (!outgoing.key.is_empty()).then(|| pair_key(from_app.key_bytes(), &outgoing.key));
                        let earlier = match &key {
                            Some(key) => keys.get(key.as_slice())?.map(|seq| seq.value()),
                            None => None,
                        };
                        match earlier {
                            Some(seq) => Applied::Enqueued { seq, duplicate: true },
                            None => {
                                let seq = *next_seq;
                                *next_seq += 1;
                                // Stored with the seq it is sent with
                                // unset: the entry carries it.
                                push_entry(record, seq, outgoing).map_err(io_error)?;
                                let first = *record_first.get_or_insert(seq);
                                changes.touched.entry(first).or_default().add(seq - first);
                                if let Some(key) = key {
                                    keys.insert(key.as_slice(), seq)?;
                                }
                                Applied::Enqueued { seq, duplicate: false }
                            }
                        }
                    }
                    Op::Settle { seq, from_app, outcome, detail, now_ms, key } => {
                        // Settled before (or never enqueued): its receipt,
                        // if any, stands.
                        if let Some((first, spent)) = changes.settle(&self.batches, *seq) {
                            if spent && Some(first) != record_first {
                                outbox.remove(first)?;
                            }
                            let receipt = pb::StoredReceipt {
                                from_app: from_app.key_bytes(),
                                outcome: *outcome as i32,
                                detail: detail.clone(),
                                settled_at_ms: *now_ms,
                                key: key.clone(),
                            };
                            let page = receipt_entries.entry(*seq >> PAGE_SHIFT).or_default();
                            push_entry(page, *seq, &receipt).map_err(io_error)?;
                        }
                        Applied::Done
                    }
                    Op::Hold { delivery, incoming, from_app, to_app, replay: state, handed: live, .. } => {
                        *next_delivery = (*next_delivery).max(delivery + 1);
                        if *live {
                            raise_mark(&mut handed, to_app, *delivery)?;
                        }
                        if !batch.taken.contains(delivery) {
                            held.hold(*delivery, incoming).map_err(io_error)?;
                        }
                        if batch.last_of_pair.get(&(*from_app, *to_app)) == Some(delivery) {
                            let pair = pair_key(from_app.key_bytes(), &to_app.key_bytes());
                            replay.insert(pair.as_slice(), state.as_slice())?;
                        }
                        Applied::Done
                    }
                    Op::Handed { app, upto } => {
                        raise_mark(&mut handed, app, *upto)?;
                        Applied::Done
                    }
                    Op::Refuse { from_app, id, outcome, detail, now_ms } => {
                        let receipt = pb::StoredReceipt {
                            from_app: from_app.key_bytes(),
                            outcome: *outcome as i32,
                            detail: detail.clone(),
                            settled_at_ms: *now_ms,
                            key: Vec::new(),
                        };
                        receipt.encode(&mut buf).map_err(io_error)?;
                        refused.insert(pair_key(from_app.key_bytes(), &id.to_bytes()).as_slice(), buf.as_slice())?;
                        Applied::Done
                    }
                    Op::Taken { deliveries } => {
                        for delivery in deliveries.iter().filter(|d| !batch.held.contains(d)) {
                            held.take(&self.held, *delivery);
                        }
                        Applied::Done
                    }
                    Op::Deposit { recipient, id, stored } => {
                        stored.encode(&mut buf).map_err(io_error)?;
                        mailbox.insert(pair_key(recipient.key_bytes(), id).as_slice(), buf.as_slice())?;
                        Applied::Done
                    }
                    Op::RemoveBlobs { recipient, ids } => {
                        for id in ids {
                            mailbox.remove(pair_key(recipient.key_bytes(), id).as_slice())?;
                        }
                        Applied::Done
                    }
                    Op::Prune { now_ms } => {
                        let cutoff = now_ms.saturating_sub(RECEIPT_RETENTION_MS);
                        let refused_cutoff = now_ms.saturating_sub(REFUSED_RETENTION_MS);
                        let old =
                            |v: &[u8]| pb::StoredReceipt::decode(v).is_ok_and(|r| r.settled_at_ms < refused_cutoff);
                        let stale_keys = prune_receipts(&mut receipts, cutoff, self.batches.oldest())?;
                        for key in stale_keys {
                            keys.remove(key.as_slice())?;
                        }
                        refused.retain(|_, v| !old(v))?;
                        mailbox.retain(|_, v| pb::StoredBlob::decode(v).is_ok_and(|b| b.expires_at_ms > *now_ms))?;
                        for delivery in received::expired(&inbox, &self.held, *now_ms)? {
                            held.take(&self.held, delivery);
                        }
                        Applied::Done
                    }
                });
            }
            if let Some(first) = record_first
                && changes.touched.get(&first).is_some_and(|b| b.left() > 0)
            {
                outbox.insert(first, record.as_slice())?;
            }
            for (page, appended) in receipt_entries {
                let mut value = receipts.get(page)?.map(|v| v.value().to_vec()).unwrap_or_default();
                value.extend_from_slice(&appended);
                receipts.insert(page, value.as_slice())?;
            }
            held.write(&mut inbox, &mut left)?;
            let mut meta = txn.open_table(META)?;
            meta.insert("next_seq", next_seq.to_be_bytes().as_slice())?;
            meta.insert("next_delivery", next_delivery.to_be_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(applied)
    }

    /// What became of our message `seq` sent by `from_app`, if known.
    pub(crate) fn sent(&self, seq: u64) -> Result<Option<Known>, StoreError> {
        if self.batches.is_pending(seq) {
            return Ok(Some(Known::Pending));
        }
        let read = || -> Result<Option<Known>, redb::Error> {
            let txn = self.db.begin_read()?;
            let Some(page) = txn.open_table(RECEIPTS)?.get(seq >> PAGE_SHIFT)? else { return Ok(None) };
            let receipts = sent::entries::<pb::StoredReceipt>(page.value()).unwrap_or_default();
            let receipt = receipts.into_iter().rev().find(|(s, _)| *s == seq).map(|(_, r)| r);
            Ok(receipt.map(|r| Known::Settled { from_app: r.from_app, outcome: r.outcome, detail: r.detail }))
        };
        read().map_err(|e| self.error(e))
    }

    /// Outbox records on disk.
    #[cfg(test)]
    pub(crate) fn outbox_records(&self) -> u64 {
        let txn = self.db.begin_read().unwrap();
        redb::ReadableTableMetadata::len(&txn.open_table(OUTBOX).unwrap()).unwrap()
    }

    /// Inbox records and rows of their bits on disk.
    #[cfg(test)]
    pub(crate) fn inbox_records(&self) -> (u64, u64) {
        let txn = self.db.begin_read().unwrap();
        let count = |table| redb::ReadableTableMetadata::len(&txn.open_table(table).unwrap()).unwrap();
        (count(INBOX), count(LEFT))
    }

    /// The blobs `ids` kept for `recipient` (those still there).
    pub(crate) fn blobs(&self, recipient: &Did, ids: &[BlobId]) -> Result<BlobList, StoreError> {
        Ok(self.stored_blobs(recipient, ids)?.into_iter().map(|(id, stored)| (id, stored.blob)).collect())
    }

    /// The records of blobs `ids` kept for `recipient` (those still there),
    /// with their origins.
    pub(crate) fn stored_blobs(
        &self,
        recipient: &Did,
        ids: &[BlobId],
    ) -> Result<Vec<(BlobId, pb::StoredBlob)>, StoreError> {
        let read = || -> Result<Vec<(BlobId, pb::StoredBlob)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(MAILBOX)?;
            let mut blobs = Vec::with_capacity(ids.len());
            for id in ids {
                let stored = table.get(pair_key(recipient.key_bytes(), id).as_slice())?;
                if let Some(stored) = stored.and_then(|v| pb::StoredBlob::decode(v.value()).ok()) {
                    blobs.push((*id, stored));
                }
            }
            Ok(blobs)
        };
        read().map_err(|e| self.error(e))
    }

    /// The answer we gave when we refused message `id` from `from_app`.
    pub(crate) fn refusal(&self, from_app: &Did, id: &MessageId) -> Result<Option<(i32, String)>, StoreError> {
        let read = || -> Result<Option<(i32, String)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let key = pair_key(from_app.key_bytes(), &id.to_bytes());
            let receipt = txn.open_table(REFUSED)?.get(key.as_slice())?;
            Ok(receipt.and_then(|v| pb::StoredReceipt::decode(v.value()).ok()).map(|r| (r.outcome, r.detail)))
        };
        read().map_err(|e| self.error(e))
    }
}

/// What a batch's ops cancel or overwrite among themselves.
#[derive(Default)]
struct Coalesced {
    /// Deliveries held in this batch.
    held: HashSet<u64>,
    /// Deliveries taken in this batch (a Taken always follows its Hold).
    taken: HashSet<u64>,
    /// Per pair, the delivery of its last Hold in this batch: the replay
    /// position written.
    last_of_pair: HashMap<(Did, Did), u64>,
}

impl Coalesced {
    fn of<'a>(ops: impl Iterator<Item = &'a Op>) -> Self {
        let mut batch = Self::default();
        for op in ops {
            match op {
                Op::Hold { delivery, from_app, to_app, .. } => {
                    batch.held.insert(*delivery);
                    batch.last_of_pair.insert((*from_app, *to_app), *delivery);
                }
                Op::Taken { deliveries } => batch.taken.extend(deliveries.iter().filter(|d| batch.held.contains(d))),
                _ => {}
            }
        }
        batch
    }
}

/// Moves `app`'s handed mark up to `upto` (never down).
fn raise_mark(handed: &mut redb::Table<'_, &'static [u8], u64>, app: &Did, upto: u64) -> Result<(), redb::Error> {
    let key = app.key_bytes();
    let current = handed.get(key.as_slice())?.map(|v| v.value()).unwrap_or(0);
    if upto > current {
        handed.insert(key.as_slice(), upto)?;
    }
    Ok(())
}

fn pair_key(mut first: Vec<u8>, second: &[u8]) -> Vec<u8> {
    first.extend_from_slice(second);
    first
}

fn io_error(error: prost::EncodeError) -> redb::Error {
    redb::Error::Io(std::io::Error::other(error))
}

fn database(path: &Path, source: impl Into<redb::Error>) -> StoreError {
    StoreError::Database { path: path.display().to_string(), source: Box::new(source.into()) }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
