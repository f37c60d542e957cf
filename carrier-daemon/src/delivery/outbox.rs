//! The sending side: a message from a local app is written to the outbox
//! before the app hears it was accepted, handed to its courier (or, for an
//! app on this device, to our own inbox), and settled once its fate is
//! known; the app's session hears the receipt, and later sessions can ask.
//!
//! ```text
//!  send ─▶ checks ─▶ Op::Enqueue ─(committed)─▶ accepted(id) ─▶ dispatch: Couriers | local
//!  Settle::settle(seq, verdict) ─▶ Op::Settle ─(committed)─▶ receipt to the waiting session
//! ```
//!
//! Each app may have [`MessagingConfig::max_outbox_messages`] messages and
//! [`MessagingConfig::max_outbox_bytes`] bytes (each message charged its
//! record overhead) waiting, and the whole device [`DEVICE_OUTBOX`]; past
//! that a send fails QUEUE_FULL at once.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::messaging::MessageId;
use carrier_proto::pb::{self, Outcome};

use super::quota::{Limit, Tally, first_over};
use super::store::{Applied, Known, Op};
use super::{Delivery, sending_failure};
use crate::ledger::Policy;
pub(super) use crate::protocols::messages::now_ms;
use crate::protocols::messages::{Offered, Pair, Progress, ReceiptSink, Settle, Watcher, WatcherFactory, pair_of};
use crate::protocols::{Failure, Verdict};

/// The longest time to live a send may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What the sender side keeps in memory per queued message.
#[derive(Debug)]
pub(super) struct Queued {
    from_app: Did,
    bytes: usize,
    /// The session waiting for the receipt, if any.
    sink: Option<ReceiptSink>,
    /// Mailbox nodes holding a sealed copy.
    copies: u32,
    /// Its idempotency key (usually none).
    key: Vec<u8>,
}

/// What the whole device may have waiting in its outbox, whatever its apps
/// ask: the sum of many apps' quotas stays within memory and disk.
pub(crate) const DEVICE_OUTBOX: Limit = Limit { records: 262_144, bytes: 1 << 30 };

/// The sender side's memory: queued messages, and what each app (and the
/// device) has waiting.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queued: HashMap<u64, Queued>,
    per_app: Tally<Did>,
    device: Tally<()>,
}

impl Outbox {
    fn add(&mut self, seq: u64, from_app: Did, bytes: usize, sink: Option<ReceiptSink>, key: Vec<u8>) {
        self.queued.insert(seq, Queued { from_app, bytes, sink, copies: 0, key });
    }

    fn charge(&mut self, app: Did, bytes: usize) {
        self.per_app.add(app, bytes);
        self.device.add((), bytes);
    }

    fn refund(&mut self, app: &Did, bytes: usize) {
        self.per_app.sub(app, bytes);
        self.device.sub(&(), bytes);
    }
}

/// How one send is to be made.
#[derive(Debug, Default, Clone)]
pub(crate) struct SendOptions {
    /// Time to live; `None` is the daemon's default.
    pub ttl: Option<Duration>,
    /// Idempotency key (up to 64 bytes).
    pub key: Vec<u8>,
}

impl Delivery {
    /// Sends `payload` from local app `from` to app `to`: answers on `sink`
    /// (accepted once on disk, then the receipt). Never waits.
    pub(crate) fn send(&self, from: Did, to: Did, payload: Vec<u8>, options: SendOptions, sink: ReceiptSink) {
        if payload.len() > self.config.max_message {
            let detail = format!(
                "message of {} bytes is over the limit of {} bytes; send bulk data over a stream",
                payload.len(),
                self.config.max_message
            );
            return sink.resolve(None, Err(Failure::new(Outcome::TooLarge, detail)));
        }
        if options.key.len() > 64 {
            let detail = format!("a send key is at most 64 bytes, not {}", options.key.len());
            return sink.resolve(None, Err(Failure::new(Outcome::Refused, detail)));
        }
        let host = match self.ledger.route(&from, &to) {
            Ok(host) => host,
            Err(refused) => return sink.resolve(None, Err(sending_failure(refused))),
        };
        let bytes = payload.len();
        {
            let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
            let app_limit = Limit::new(self.config.max_outbox_messages, self.config.max_outbox_bytes);
            let waiting = outbox.per_app.get(&from);
            let checks = [(waiting, app_limit, "this app's"), (outbox.device.get(&()), DEVICE_OUTBOX, "this device's")];
            if let Some((whose, _)) = first_over(bytes, &checks) {
                let detail = format!(
                    "{whose} outbox is full: {from} has {} messages ({} bytes with their overhead) waiting for delivery, and the limit is {} bytes or {} messages per app; send again once receipts come",
                    waiting.records, waiting.bytes, app_limit.bytes, app_limit.records
                );
                drop(outbox);
                return sink.resolve(None, Err(Failure::new(Outcome::QueueFull, detail)));
            }
            outbox.charge(from, bytes);
        }
        let ttl = options.ttl.unwrap_or(self.config.default_ttl).min(MAX_TTL);
        let envelope = pb::Envelope {
            epoch: self.epoch.to_vec(),
            seq: 0,
            from_app: from.key_bytes(),
            to_app: to.key_bytes(),
            payload,
            expires_at_ms: now_ms().saturating_add(ttl.as_millis() as u64),
            epoch_started_ms: self.epoch_started_ms,
        };
        let outgoing = pb::StoredOutgoing { envelope: Some(envelope), to_device: host.key_bytes(), key: options.key };
        let this = self.me();
        self.committer.submit_returning(Op::Enqueue { outgoing, from_app: from }, move |op, applied| {
            let Some(this) = this.upgrade() else { return };
            let Op::Enqueue { outgoing, .. } = op else { return };
            match applied {
                Ok(Applied::Enqueued { seq, duplicate: false }) => {
                    let id = MessageId { epoch: this.epoch, seq };
                    sink.accepted(id, false);
                    this.lock_outbox().add(seq, from, bytes, Some(sink), outgoing.key);
                    if let Some(mut envelope) = outgoing.envelope {
                        envelope.seq = seq;
                        this.dispatch(host, envelope);
                    }
                }
                Ok(Applied::Enqueued { seq, duplicate: true }) => {
                    this.lock_outbox().refund(&from, bytes);
                    let id = MessageId { epoch: this.epoch, seq };
                    sink.accepted(id, true);
                    this.answer_duplicate(seq, sink);
                }
                Ok(Applied::Done) => {}
                Err(error) => {
                    this.lock_outbox().refund(&from, bytes);
                    let detail = format!("the message could not be stored: {error}");
                    sink.resolve(None, Err(Failure::new(Outcome::QueueFull, detail)));
                }
            }
        });
    }

    fn lock_outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A resend with a known key: the receipt, now or when it comes.
    fn answer_duplicate(&self, seq: u64, sink: ReceiptSink) {
        let id = MessageId { epoch: self.epoch, seq };
        let mut outbox = self.lock_outbox();
        if let Some(queued) = outbox.queued.get_mut(&seq) {
            // Still on its way: this session hears the receipt instead.
            queued.sink = Some(sink);
            return;
        }
        drop(outbox);
        match self.committer.read(|store| store.sent(seq)) {
            Ok(Some(Known::Settled { outcome, detail, .. })) => {
                sink.resolve(Some(id), crate::protocols::verdict_of(outcome, detail))
            }
            Ok(_) => {
                sink.resolve(Some(id), Err(Failure::new(Outcome::Unspecified, "the earlier message is not known")))
            }
            Err(error) => sink.resolve(Some(id), Err(Failure::new(Outcome::Unspecified, error.to_string()))),
        }
    }

    /// Hands a stored message to whoever carries it to `device`.
    pub(super) fn dispatch(&self, device: Did, envelope: pb::Envelope) {
        if device != self.device {
            return self.couriers.queue(device, envelope);
        }
        // For an app on this device: our own inbox, in order.
        if self.local.send(envelope).is_err() {
            tracing::debug!("the local courier has stopped");
        }
    }

    /// Starts the local courier and requeues what the outbox held at start.
    pub(super) fn resume_outbox(self: &Arc<Self>, outbox: Vec<(u64, pb::StoredOutgoing)>) {
        for (seq, outgoing) in outbox {
            let Some(mut envelope) = outgoing.envelope else { continue };
            let (Ok(device), Ok(from)) =
                (Did::from_key_bytes(&outgoing.to_device), Did::from_key_bytes(&envelope.from_app))
            else {
                tracing::warn!(seq, "skipping an outbox record with a malformed DID");
                continue;
            };
            envelope.seq = seq;
            let mut outbox = self.lock_outbox();
            outbox.charge(from, envelope.payload.len());
            outbox.add(seq, from, envelope.payload.len(), None, outgoing.key);
            drop(outbox);
            self.dispatch(device, envelope);
        }
    }

    /// What is known of message `id` sent by `app`.
    pub(crate) fn receipt_state(&self, app: &Did, id: &MessageId) -> pb::ReceiptState {
        use pb::receipt_state::State;
        let mut state = pb::ReceiptState { message_id: id.to_bytes().to_vec(), ..Default::default() };
        if id.epoch != self.epoch {
            return state;
        }
        if let Some(queued) = self.lock_outbox().queued.get(&id.seq).filter(|q| q.from_app == *app) {
            state.state = if queued.copies > 0 { State::Stored } else { State::Pending } as i32;
            return state;
        }
        if let Ok(Some(Known::Settled { from_app, outcome, detail })) = self.committer.read(|s| s.sent(id.seq))
            && from_app == app.key_bytes()
        {
            (state.state, state.outcome, state.detail) = (State::Final as i32, outcome, detail);
        }
        state
    }
}

impl Delivery {
    /// Message `seq` is sealed on `copies` mailbox nodes.
    pub(super) fn mark_stored(&self, seq: u64, copies: u32) {
        let mut outbox = self.lock_outbox();
        let Some(queued) = outbox.queued.get_mut(&seq) else { return };
        queued.copies = copies;
        if let Some(sink) = &queued.sink {
            sink.stored(MessageId { epoch: self.epoch, seq }, copies);
        }
    }
}

impl Settle for Delivery {
    fn unreachable(&self, device: Did, parked: Vec<(Arc<pb::Envelope>, u64)>) {
        let Some(this) = self.me().upgrade() else { return };
        self.tasks().spawn(this.deposit_for(device, parked));
    }

    fn settle(&self, seq: u64, verdict: Verdict) {
        let Some((from_app, key)) = self.lock_outbox().queued.get(&seq).map(|q| (q.from_app, q.key.clone())) else {
            return;
        };
        let (outcome, detail) = match &verdict {
            Ok(()) => (Outcome::Delivered, String::new()),
            Err(failure) => (failure.outcome, failure.detail.clone()),
        };
        let op = Op::Settle { seq, from_app, outcome, detail, now_ms: now_ms(), key };
        let this = self.me();
        self.committer.submit(op, move |applied| {
            let Some(this) = this.upgrade() else { return };
            if let Err(error) = applied {
                // Still in the outbox on disk: after a restart it is sent
                // again and the receiver answers the same.
                tracing::warn!(seq, %error, "could not record a receipt");
            }
            let queued = {
                let mut outbox = this.lock_outbox();
                let Some(queued) = outbox.queued.remove(&seq) else { return };
                outbox.refund(&queued.from_app, queued.bytes);
                queued
            };
            if let Some(sink) = queued.sink {
                sink.resolve(Some(MessageId { epoch: this.epoch, seq }), verdict);
            }
        });
    }
}

/// Carries messages between apps of this device, in order per pair of
/// apps: each is offered to our inbox and settled once the recipient took
/// it. A pair whose recipient's inbox is full waits (offered again every
/// [`LOCAL_RETRY`]) without holding up the other pairs.
pub(super) async fn local_courier(
    delivery: std::sync::Weak<Delivery>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<pb::Envelope>,
) {
    let (watchers, mut progress) = Watcher::channel();
    let mut waiting: HashMap<Pair, std::collections::VecDeque<pb::Envelope>> = HashMap::new();
    let mut open = true;
    // When the waiting pairs are next tried: set when one starts waiting,
    // and kept through whatever else happens meanwhile.
    let mut retry_at: Option<tokio::time::Instant> = None;
    while open || !waiting.is_empty() {
        if waiting.is_empty() {
            retry_at = None;
        } else if retry_at.is_none() {
            retry_at = Some(tokio::time::Instant::now() + LOCAL_RETRY);
        }
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        // `None`: time to try the waiting pairs again.
        let arrived = tokio::select! {
            envelope = queue.recv(), if open => match envelope {
                Some(envelope) => Some(envelope),
                None => {
                    open = false;
                    continue;
                }
            },
            Some((seq, step)) = progress.recv() => {
                if let (Progress::Taken(verdict), Some(this)) = (step, delivery.upgrade()) {
                    this.settle(seq, verdict);
                }
                continue;
            }
            () = retry => None,
        };
        let Some(this) = delivery.upgrade() else { return };
        match arrived {
            Some(envelope) => match waiting.get_mut(&pair_of(&envelope)) {
                // Behind earlier messages of its pair.
                Some(queued) => queued.push_back(envelope),
                None => {
                    if let Some(busy) = this.offer_locally(envelope, &watchers) {
                        waiting.entry(pair_of(&busy)).or_default().push_back(busy);
                    }
                }
            },
            None => {
                retry_at = None;
                // Each waiting pair again, from its oldest, until one is busy.
                for queued in waiting.values_mut() {
                    while let Some(envelope) = queued.pop_front() {
                        if let Some(busy) = this.offer_locally(envelope, &watchers) {
                            queued.push_front(busy);
                            break;
                        }
                    }
                }
                waiting.retain(|_, queued| !queued.is_empty());
            }
        }
    }
}

/// How often a local pair whose recipient's inbox was full is tried again.
const LOCAL_RETRY: Duration = Duration::from_millis(50);

impl Delivery {
    /// Offers `envelope` to our own inbox; gives it back if the recipient's
    /// inbox is full.
    fn offer_locally(&self, envelope: pb::Envelope, watchers: &WatcherFactory) -> Option<pb::Envelope> {
        let seq = envelope.seq;
        match crate::protocols::messages::Inbox::offer(self, self.device, envelope.clone(), watchers.watch(seq)) {
            Offered::Busy => return Some(envelope),
            Offered::Final(verdict) => self.settle(seq, verdict),
            // Settled when its watcher hears Taken.
            Offered::Held => {}
        }
        None
    }
}
