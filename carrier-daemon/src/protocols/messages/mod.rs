//! App messages between daemons (`/carrier/msg/2.0.0`).
//!
//! ```text
//!  sender daemon                                        receiver daemon
//!  Couriers::queue ─▶ courier (one per device) ══Envelope══▶ inbound ─▶ Inbox::offer
//!                   ◀══ HELD (on its disk), then FINAL (the app took it, or why not)
//!                   ◀══ BUSY (the app's inbox is full: offer it again later)
//!  FINAL ─▶ Settle::settle (the delivery layer tells the sending app)
//! ```
//!
//! One stream per device pair carries every envelope in the order it was
//! queued; receipts come back on the same stream, in any order. A courier
//! keeps each message until its FINAL receipt, offering it again on a new
//! stream whenever one breaks: the receiver keeps each pair of apps'
//! messages at most once, so that is harmless. What either side keeps on
//! disk, and what the apps hear, is the delivery layer's business, behind
//! [`Inbox`] and [`Settle`].

mod courier;
mod inbound;
mod queue;

use carrier_proto::identity::Did;
use carrier_proto::messaging::MessageId;
use carrier_proto::pb;
use tokio::sync::mpsc;

pub(crate) use courier::{Couriers, now_ms};
pub(crate) use inbound::Inbound;

use super::Verdict;

/// The protocol name.
pub(crate) const PROTOCOL: &str = "/carrier/msg/2.0.0";

/// What the receiving side made of an offered envelope.
#[derive(Debug)]
pub(crate) enum Offered {
    /// Its fate is known now (delivered before, or refused).
    Final(Verdict),
    /// Taken: its watcher hears [`Progress`].
    Held,
    /// The recipient app's inbox is full.
    Busy,
}

/// How far a held message got.
#[derive(Debug)]
pub(crate) enum Progress {
    /// It is on disk.
    Stored,
    /// Its app took it (or why not; a message that could not be stored
    /// ends here without `Stored`).
    Taken(Verdict),
}

/// Who hears a held message's [`Progress`]: a channel shared by every
/// message of one stream (or one local courier), each tagged with the
/// sender's seq. Hearing is one channel send: no task, no future, no
/// allocation per message.
#[derive(Debug, Clone)]
pub(crate) struct Watcher {
    tx: mpsc::UnboundedSender<(u64, Progress)>,
    seq: u64,
}

/// The receiving end of watchers: `(seq, progress)` as it happens.
pub(crate) type ProgressRx = mpsc::UnboundedReceiver<(u64, Progress)>;

impl Watcher {
    /// A new channel, and what makes watchers on it.
    pub(crate) fn channel() -> (WatcherFactory, ProgressRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        (WatcherFactory(tx), rx)
    }

    /// Tells that the message reached `progress`.
    pub(crate) fn tell(&self, progress: Progress) {
        let _ = self.tx.send((self.seq, progress));
    }

    /// Whether `other` reports to the same place about the same message
    /// (an offer made again on the same stream or courier).
    pub(crate) fn same_sink(&self, other: &Watcher) -> bool {
        self.seq == other.seq && self.tx.same_channel(&other.tx)
    }
}

/// Makes watchers on one channel.
#[derive(Debug, Clone)]
pub(crate) struct WatcherFactory(mpsc::UnboundedSender<(u64, Progress)>);

impl WatcherFactory {
    /// A watcher for the message the sender calls `seq`.
    pub(crate) fn watch(&self, seq: u64) -> Watcher {
        Watcher { tx: self.0.clone(), seq }
    }
}

/// Where an incoming envelope goes: implemented by the delivery layer.
pub(crate) trait Inbox: Send + Sync + 'static {
    /// Offers `envelope`, which arrived from device `from`; called in
    /// arrival order. If it is held, `watcher` hears how far it gets.
    fn offer(&self, from: Did, envelope: pb::Envelope, watcher: Watcher) -> Offered;

    /// The largest payload taken.
    fn max_message(&self) -> usize;
}

/// Where couriers report each message's fate: implemented by the delivery
/// layer.
pub(crate) trait Settle: Send + Sync + 'static {
    /// Message `seq` (of our epoch) reached its end: `verdict`.
    fn settle(&self, seq: u64, verdict: Verdict);

    /// `device` cannot be reached: these messages (each with the seq of
    /// the one before it in its pair, 0 for none) may go to its mailboxes.
    /// The courier goes on trying to deliver them itself.
    fn unreachable(&self, device: Did, parked: Vec<(std::sync::Arc<pb::Envelope>, u64)>);
}

/// An answer on its way back to the sending app.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The message is on disk under `id`.
    Accepted { request: u64, id: MessageId, duplicate: bool },
    /// The message is sealed on `copies` mailbox nodes (its device is offline).
    Stored { request: u64, id: MessageId, copies: u32 },
    /// The message's fate.
    Receipt { request: u64, id: Option<MessageId>, verdict: Verdict },
}

/// Where the answers to one send go.
#[derive(Debug)]
pub(crate) struct ReceiptSink {
    pub tx: mpsc::UnboundedSender<Answer>,
    pub request: u64,
}

impl ReceiptSink {
    /// Tells the app the message is on disk.
    pub(crate) fn accepted(&self, id: MessageId, duplicate: bool) {
        let _ = self.tx.send(Answer::Accepted { request: self.request, id, duplicate });
    }

    /// Tells the app the message waits in mailboxes.
    pub(crate) fn stored(&self, id: MessageId, copies: u32) {
        let _ = self.tx.send(Answer::Stored { request: self.request, id, copies });
    }

    /// Hands the receipt back; a gone session has nobody to tell.
    pub(crate) fn resolve(self, id: Option<MessageId>, verdict: Verdict) {
        let _ = self.tx.send(Answer::Receipt { request: self.request, id, verdict });
    }
}

/// The compact DIDs of the apps a message is between: a pair keeps its order.
pub(crate) type Pair = ([u8; 32], [u8; 32]);

/// The pair `envelope` is between (a malformed key, padded or cut, still
/// names some pair; the receiver refuses it anyway).
pub(crate) fn pair_of(envelope: &pb::Envelope) -> Pair {
    let key = |bytes: &[u8]| {
        let mut key = [0u8; 32];
        let n = bytes.len().min(32);
        key[..n].copy_from_slice(&bytes[..n]);
        key
    };
    (key(&envelope.from_app), key(&envelope.to_app))
}
