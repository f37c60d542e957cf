//! A mailbox node's side of offline mailboxes: the sealed blobs this
//! device keeps for devices that are offline, within quotas (blobs and
//! bytes) per recipient, per depositing device, per depositor within one
//! recipient's box (a fair share), and for the whole node, until the
//! recipient collects and removes them or they expire. A blob is charged to
//! its origin (the device that sealed it and signed its deposit), not to a
//! node that moved it here. The blobs are on disk (the message store); this
//! keeps what the quotas and the order need in memory.
//!
//! ```text
//!  Deposit ─▶ active device? size, expiry, origin ─▶ quotas ─▶ Op::Deposit ─▶ Deposited
//!  Collect (the recipient's own link) ─▶ oldest first, one frame's worth ─▶ Blobs { more }
//!  Remove (the recipient's own link) ─▶ Op::RemoveBlobs
//! ```

use std::collections::{BTreeMap, HashMap};

use carrier_proto::identity::Did;
use carrier_proto::mailbox::blob_id;
use carrier_proto::messaging::FRAME_OVERHEAD;
use carrier_proto::pb::{self, mailbox_answer::Answer, mailbox_refused::Reason};

use super::Delivery;
use super::outbox::{MAX_TTL, now_ms};
use super::quota::{Limit, Tally, first_over};
use super::store::{BlobId, KeptBlob, Op};
use crate::protocols::ProtocolError;
use crate::protocols::mailbox::Keeper;

/// Blobs per Collect answer.
pub(super) const PER_ANSWER: u32 = 4096;
/// What one blob adds to an answer beyond its own bytes: its id and the
/// protobuf framing (an upper bound).
const BLOB_FRAMING: usize = 64;

/// What a node keeps, as the quotas see it.
#[derive(Debug, Default)]
pub(super) struct Mailbox {
    boxes: HashMap<Did, RecipientBox>,
    /// Deposit order, so blobs go back oldest first (a sender's messages
    /// in the order it sent them).
    next_order: u64,
    for_recipient: Tally<Did>,
    from_depositor: Tally<Did>,
    /// Per (recipient, depositor): a depositor's share of one box.
    pairs: Tally<(Did, Did)>,
    node: Tally<()>,
    /// The devices we last pushed each recipient's blobs to.
    pushed: HashMap<Did, Vec<Did>>,
}

/// The blobs kept for one device, oldest first.
#[derive(Debug, Default)]
struct RecipientBox {
    by_order: BTreeMap<u64, KeptBlob>,
    order_of: HashMap<BlobId, u64>,
}

impl RecipientBox {
    fn contains(&self, id: &BlobId) -> bool {
        self.order_of.contains_key(id)
    }

    fn len(&self) -> usize {
        self.by_order.len()
    }

    fn is_empty(&self) -> bool {
        self.by_order.is_empty()
    }

    fn oldest(&self) -> impl Iterator<Item = &KeptBlob> {
        self.by_order.values()
    }
}

impl Mailbox {
    /// The devices we keep blobs for.
    pub(super) fn recipients(&self) -> Vec<Did> {
        self.boxes.keys().copied().collect()
    }

    /// What we keep for `recipient`, oldest first.
    pub(super) fn kept_for(&self, recipient: &Did) -> Vec<KeptBlob> {
        self.boxes.get(recipient).map(|b| b.oldest().cloned().collect()).unwrap_or_default()
    }

    /// The devices `recipient`'s blobs were last pushed to.
    pub(super) fn pushed_to(&self, recipient: &Did) -> Option<&Vec<Did>> {
        self.pushed.get(recipient)
    }

    pub(super) fn set_pushed(&mut self, recipient: Did, to: Vec<Did>) {
        self.pushed.insert(recipient, to);
    }

    fn insert(&mut self, kept: KeptBlob) {
        self.for_recipient.add(kept.recipient, kept.len);
        self.from_depositor.add(kept.depositor, kept.len);
        self.pairs.add((kept.recipient, kept.depositor), kept.len);
        self.node.add((), kept.len);
        let order = self.next_order;
        self.next_order += 1;
        let keeping = self.boxes.entry(kept.recipient).or_default();
        keeping.order_of.insert(kept.id, order);
        keeping.by_order.insert(order, kept);
    }

    fn remove(&mut self, recipient: &Did, id: &BlobId) -> Option<KeptBlob> {
        let keeping = self.boxes.get_mut(recipient)?;
        let order = keeping.order_of.remove(id)?;
        let kept = keeping.by_order.remove(&order)?;
        self.for_recipient.sub(recipient, kept.len);
        self.from_depositor.sub(&kept.depositor, kept.len);
        self.pairs.sub(&(*recipient, kept.depositor), kept.len);
        self.node.sub(&(), kept.len);
        if self.boxes.get(recipient).is_some_and(RecipientBox::is_empty) {
            self.boxes.remove(recipient);
        }
        Some(kept)
    }
}

fn refused(reason: Reason, detail: String) -> pb::MailboxAnswer {
    pb::MailboxAnswer { answer: Some(Answer::Refused(pb::MailboxRefused { reason: reason as i32, detail })) }
}

impl Delivery {
    pub(super) fn lock_mailbox(&self) -> std::sync::MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store's mailbox at start.
    pub(super) fn resume_mailbox(&self, mut kept: Vec<KeptBlob>) {
        // The order they came in is not on disk; their expiry is close to it.
        kept.sort_by_key(|k| (k.expires_at_ms, k.id));
        let mut mailbox = self.lock_mailbox();
        for kept in kept {
            mailbox.insert(kept);
        }
    }

    /// Largest blob a node keeps: a message at the limit, sealed.
    pub(super) fn max_blob(&self) -> usize {
        self.config.max_message + FRAME_OVERHEAD / 2
    }

    pub(super) async fn remove_blobs(&self, recipient: Did, ids: Vec<[u8; 32]>) -> Result<u32, ProtocolError> {
        let ids: Vec<[u8; 32]> = {
            let mut mailbox = self.lock_mailbox();
            ids.into_iter().filter(|id| mailbox.remove(&recipient, id).is_some()).collect()
        };
        let count = ids.len() as u32;
        let (done, written) = tokio::sync::oneshot::channel();
        self.committer.submit(Op::RemoveBlobs { recipient, ids }, move |applied| {
            let _ = done.send(applied.is_ok());
        });
        let _ = written.await;
        Ok(count)
    }

    /// Forgets blobs past their time to live (the store drops them too).
    pub(super) fn prune_mailbox(&self, now_ms: u64) {
        let mut mailbox = self.lock_mailbox();
        let expired: Vec<(Did, [u8; 32])> = mailbox
            .boxes
            .values()
            .flat_map(|b| b.oldest())
            .filter(|k| k.expires_at_ms <= now_ms)
            .map(|k| (k.recipient, k.id))
            .collect();
        for (recipient, id) in expired {
            mailbox.remove(&recipient, &id);
        }
    }
}

/// What a whole mailbox node keeps, whatever each recipient and depositor
/// may: the sum of many quotas stays within memory and disk.
pub(super) const NODE_MAILBOX: Limit = Limit { records: 262_144, bytes: 1 << 30 };

impl Delivery {
    /// Whom a deposit is charged to: its origin, if the origin (an active
    /// device) signed it; else the device that pushed it here.
    fn charged(&self, pusher: Did, recipient: &Did, id: &BlobId, deposit: &pb::Deposit) -> Did {
        let Some(network) = self.ledger.network() else { return pusher };
        let Ok(origin) = Did::from_key_bytes(&deposit.origin) else { return pusher };
        let Some(standing) = self.ledger.standing(&origin).filter(|s| s.is_active_device()) else { return pusher };
        let signed = carrier_proto::mailbox::verify_deposit(
            &standing.keys.signing,
            &network.id,
            recipient,
            id,
            deposit.expires_at_ms,
            &deposit.origin_signature,
        );
        if signed { origin } else { pusher }
    }

    /// Refuses a deposit of `len` bytes for `recipient` charged to
    /// `depositor` if it would pass a quota, naming it.
    fn over_quota(&self, mailbox: &Mailbox, recipient: &Did, depositor: &Did, len: usize) -> Option<String> {
        let config = &self.config;
        let per_recipient = Limit::new(config.mailbox_blobs_per_recipient, config.mailbox_bytes_per_recipient);
        let per_sender = Limit::new(config.mailbox_blobs_per_sender, config.mailbox_bytes_per_sender);
        let (for_it, from_it) = (format!("for {recipient}"), format!("from {depositor}"));
        let pair = format!("from {depositor} for {recipient} (its fair share)");
        let checks = [
            (mailbox.for_recipient.get(recipient), per_recipient, for_it.as_str()),
            (mailbox.pairs.get(&(*recipient, *depositor)), per_recipient.share(self.max_blob()), pair.as_str()),
            (mailbox.from_depositor.get(depositor), per_sender, from_it.as_str()),
            (mailbox.node.get(&()), NODE_MAILBOX, "in all"),
        ];
        let (which, limit) = first_over(len, &checks)?;
        Some(format!("this node keeps at most {} bytes or {} blobs {which}", limit.bytes, limit.records))
    }
}

impl Keeper for Delivery {
    async fn deposit(&self, pusher: Did, deposit: pb::Deposit) -> pb::MailboxAnswer {
        let Ok(recipient) = Did::from_key_bytes(&deposit.recipient) else {
            return refused(Reason::NotADevice, "the recipient is not a DID".into());
        };
        if !self.ledger.standing(&recipient).is_some_and(|s| s.is_active_device()) {
            return refused(Reason::NotADevice, format!("{recipient} is not an active device"));
        }
        let (len, now) = (deposit.blob.len(), now_ms());
        if len > self.max_blob() || deposit.expires_at_ms > now.saturating_add(MAX_TTL.as_millis() as u64 + 120_000) {
            return refused(Reason::TooLarge, format!("at most {} bytes, for at most 30 days", self.max_blob()));
        }
        if deposit.expires_at_ms <= now {
            return refused(Reason::Expired, "its time to live has passed".into());
        }
        let id = blob_id(&deposit.blob);
        let depositor = self.charged(pusher, &recipient, &id, &deposit);
        let kept = KeptBlob { recipient, id, len, depositor, expires_at_ms: deposit.expires_at_ms };
        {
            let mut mailbox = self.lock_mailbox();
            if mailbox.boxes.get(&recipient).is_some_and(|b| b.contains(&id)) {
                return pb::MailboxAnswer { answer: Some(Answer::Deposited(pb::Deposited { duplicate: true })) };
            }
            if let Some(detail) = self.over_quota(&mailbox, &recipient, &depositor, len) {
                return refused(Reason::Quota, detail);
            }
            mailbox.insert(kept);
        }
        let stored = pb::StoredBlob {
            blob: deposit.blob,
            expires_at_ms: deposit.expires_at_ms,
            depositor: depositor.key_bytes(),
            origin: deposit.origin,
            origin_signature: deposit.origin_signature,
        };
        let (done, written) = tokio::sync::oneshot::channel();
        self.committer.submit(Op::Deposit { recipient, id, stored }, move |applied| {
            let _ = done.send(applied.map(|_| ()).map_err(|e| e.to_string()));
        });
        let error = match written.await {
            Ok(Ok(())) => {
                return pb::MailboxAnswer { answer: Some(Answer::Deposited(pb::Deposited { duplicate: false })) };
            }
            Ok(Err(error)) => error,
            Err(_) => "the node is stopping".into(),
        };
        self.lock_mailbox().remove(&recipient, &id);
        refused(Reason::Unspecified, format!("could not store it: {error}"))
    }

    fn collect(&self, recipient: Did, max_blobs: u32) -> pb::MailboxAnswer {
        let (ids, more) = {
            let mailbox = self.lock_mailbox();
            let Some(kept) = mailbox.boxes.get(&recipient) else {
                return pb::MailboxAnswer { answer: Some(Answer::Blobs(pb::Blobs::default())) };
            };
            let budget = self.max_blob();
            let (mut ids, mut bytes) = (Vec::new(), 0usize);
            for k in kept.oldest().take(max_blobs.clamp(1, PER_ANSWER) as usize) {
                // The blob, its id and the framing around them.
                let cost = k.len + BLOB_FRAMING;
                if !ids.is_empty() && bytes + cost > budget {
                    break;
                }
                bytes += cost;
                ids.push(k.id);
            }
            let more = ids.len() < kept.len();
            (ids, more)
        };
        let blobs = match self.committer.read(|store| store.blobs(&recipient, &ids)) {
            Ok(blobs) => blobs.into_iter().map(|(id, blob)| pb::Blob { id: id.to_vec(), blob }).collect(),
            Err(error) => return refused(Reason::Unspecified, error.to_string()),
        };
        pb::MailboxAnswer { answer: Some(Answer::Blobs(pb::Blobs { blobs, more })) }
    }

    async fn remove(&self, recipient: Did, ids: Vec<Vec<u8>>) -> pb::MailboxAnswer {
        let ids: Vec<[u8; 32]> = ids.iter().filter_map(|id| <[u8; 32]>::try_from(id.as_slice()).ok()).collect();
        let count = self.remove_blobs(recipient, ids).await.unwrap_or(0);
        pb::MailboxAnswer { answer: Some(Answer::Removed(pb::Removed { count })) }
    }
}
