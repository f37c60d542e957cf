//! The receiving side, for messages and streams alike, whether they came
//! over a link or from an app on this same device: who the sender and
//! recipient are on the ledger, the size limit, at most once per pair, the
//! durable inbox (a message is on disk before the sender hears HELD, and
//! stays there until its app acknowledges it), the recipient's allow lists,
//! and handing over to the recipient's session.

use carrier_proto::identity::Did;
use carrier_proto::messaging::{MessageId, Seen};
use carrier_proto::pb::{self, Outcome};

use super::held::{Held, HeldMessage};
use super::outbox::{MAX_TTL, now_ms};
use super::quota::{Limit, first_over};
use super::store::{Loaded, Op};
use super::{Access, Delivery, Incoming};
use crate::ledger::{Denial, Party, Policy, Refused};
use crate::protocols::Failure;
use crate::protocols::app_stream::{ACCEPT_TIMEOUT, AppEnd, StreamAcceptor};
use crate::protocols::messages::{Inbox, Offered, Progress, Watcher};

impl Delivery {
    /// Checks `to_app` is ours and active, and `from_app` is an active app
    /// of `from_device` (the device at the other end of the link, or us).
    fn check_parties(&self, from_device: Did, from_app: &Did, to_app: &Did) -> Result<(), Failure> {
        self.ledger.may_deliver(&from_device, from_app, to_app, &self.device).map_err(|refused| {
            let detail = refused.to_string();
            match refused {
                Refused { party: Party::Sender, .. } => Failure::new(
                    Outcome::Refused,
                    format!("the sender is not an active app of {from_device}: {detail}"),
                ),
                Refused { denial: Denial::Revoked(..), .. } => {
                    Failure::new(Outcome::Revoked, format!("the recipient {to_app} is revoked"))
                }
                Refused { .. } => Failure::new(
                    Outcome::UnknownRecipient,
                    format!("{to_app} is not an app of {}: {detail}", self.device),
                ),
            }
        })
    }

    /// The rules every incoming message meets, whoever sent it: its parties
    /// on the ledger and the size limit.
    fn judge(&self, from_device: Did, envelope: &pb::Envelope) -> Result<(Did, Did, MessageId), Failure> {
        let bad = |what: &str| Failure::new(Outcome::Refused, format!("malformed envelope: {what}"));
        let sender =
            self.ledger.find_did(&envelope.from_app).ok_or_else(|| bad("the sending app is not on the ledger"))?;
        let recipient = self
            .ledger
            .find_did(&envelope.to_app)
            .ok_or_else(|| Failure::new(Outcome::UnknownRecipient, "the ledger has no app with that key"))?;
        let epoch: [u8; 16] = envelope.epoch.as_slice().try_into().map_err(|_| bad("epoch is not 16 bytes"))?;
        if envelope.payload.len() > self.config.max_message {
            let detail = format!(
                "message of {} bytes is over this daemon's limit of {}",
                envelope.payload.len(),
                self.config.max_message
            );
            return Err(Failure::new(Outcome::TooLarge, detail));
        }
        self.check_parties(from_device, &sender, &recipient)?;
        Ok((sender, recipient, MessageId { epoch, seq: envelope.seq }))
    }

    pub(super) fn lock_held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next message for `app`'s session after delivery `after`, as the
    /// app is to see it; one its access rules refuse is settled REFUSED
    /// and skipped.
    pub(crate) fn next_incoming(&self, app: &Did, after: u64, access: &Access) -> Option<Incoming> {
        let mut after = after;
        loop {
            let held = self.lock_held();
            let delivery = held.next_after(app, after)?;
            let message = held.apps.get(app)?.messages.get(&delivery)?;
            // Only what is on disk, in order: the next one waits for its write.
            if !message.stored {
                return None;
            }
            if !access.messages.permits(&message.from_app, true) {
                let (from_app, id) = (message.from_app, message.id);
                drop(held);
                let detail = format!("{app} does not take messages from {from_app}");
                self.refuse_held(*app, delivery, from_app, id, detail);
                after = delivery;
                continue;
            }
            return Some(Incoming::Message {
                delivery,
                id: message.id,
                from_app: message.from_app,
                from_device: message.from_device,
                payload: message.payload.clone(),
                received_at_ms: message.received_at_ms,
                redelivered: message.redelivered,
            });
        }
    }

    /// Makes sure `app`'s handed mark on disk covers `delivery` before the
    /// message goes to the app (moving it as far as the messages on disk
    /// go, one write for a backlog). `false` if it could not be written:
    /// the message must not be handed then.
    pub(crate) async fn mark_handed(&self, app: Did, delivery: u64) -> bool {
        let upto = {
            let held = self.lock_held();
            if held.handed_mark.get(&app).is_some_and(|mark| *mark >= delivery) {
                return true;
            }
            held.newest_stored(&app, delivery)
        };
        let (done, written) = tokio::sync::oneshot::channel();
        let this = self.me();
        self.committer.submit(Op::Handed { app, upto }, move |applied| {
            let ok = applied.is_ok();
            if let (true, Some(this)) = (ok, this.upgrade()) {
                this.lock_held().raise_mark(app, upto);
            }
            let _ = done.send(ok);
        });
        written.await.unwrap_or(false)
    }

    /// What wakes `app`'s session when a message for it is stored.
    pub(crate) fn inbox_wake(&self, app: Did) -> std::sync::Arc<tokio::sync::Notify> {
        self.lock_held().wake(app)
    }

    /// `app`'s session ended, having been given messages up to `handed`.
    pub(crate) fn session_ended(&self, app: &Did, handed: u64) {
        self.lock_held().session_ended(app, handed);
    }

    /// `app` took these messages: off the disk, then their senders hear it.
    pub(crate) fn taken(&self, app: Did, deliveries: Vec<u64>) {
        let deliveries: Vec<u64> = {
            let held = self.lock_held();
            let Some(inbox) = held.apps.get(&app) else { return };
            deliveries.into_iter().filter(|d| inbox.messages.contains_key(d)).collect()
        };
        if deliveries.is_empty() {
            return;
        }
        let this = self.me();
        let taken = deliveries.clone();
        self.committer.submit(Op::Taken { deliveries }, move |applied| {
            let Some(this) = this.upgrade() else { return };
            if let Err(error) = applied {
                // Still on disk: given again after a restart, marked.
                tracing::warn!(%error, "could not record that an app took its messages");
            }
            let mut held = this.lock_held();
            for delivery in taken {
                for watcher in held.take(&app, delivery).into_iter().flat_map(|m| m.watchers) {
                    watcher.tell(Progress::Taken(Ok(())));
                }
            }
        });
    }

    /// Settles a held message as refused (recorded, so a retry hears the same).
    fn refuse_held(&self, app: Did, delivery: u64, from_app: Did, id: MessageId, detail: String) {
        let Some(message) = self.lock_held().take(&app, delivery) else { return };
        let failure = Failure::new(Outcome::Refused, detail.clone());
        let refuse = Op::Refuse { from_app, id, outcome: Outcome::Refused, detail, now_ms: now_ms() };
        self.committer.submit(refuse, |_| {});
        // Written after the message itself (the store keeps order): by the
        // time this is done, it was on disk, and is off it again.
        self.committer.submit(Op::Taken { deliveries: vec![delivery] }, move |_| {
            for watcher in message.watchers {
                watcher.tell(Progress::Taken(Err(failure.clone())));
            }
        });
    }

    /// Rebuilds the inbox's memory from what the store held at start.
    pub(super) fn resume_inbox(&self, loaded: &mut Loaded) {
        let mut held = self.lock_held();
        held.next_delivery = loaded.next_delivery;
        held.handed_mark = std::mem::take(&mut loaded.handed);
        for ((from, to), state) in loaded.replay.drain() {
            held.replay.restore(from, to, state);
        }
        for (delivery, incoming) in loaded.inbox.drain(..) {
            let Some(envelope) = incoming.envelope else { continue };
            let parsed = (|| {
                let from_app = Did::from_key_bytes(&envelope.from_app).ok()?;
                let to_app = Did::from_key_bytes(&envelope.to_app).ok()?;
                let from_device = Did::from_key_bytes(&incoming.from_device).ok()?;
                let epoch: [u8; 16] = envelope.epoch.as_slice().try_into().ok()?;
                Some((from_app, to_app, from_device, MessageId { epoch, seq: envelope.seq }))
            })();
            let Some((from_app, to_app, from_device, id)) = parsed else {
                tracing::warn!(delivery, "skipping an inbox record with a malformed DID or id");
                continue;
            };
            let cap = incoming.received_at_ms.saturating_add(MAX_EXPIRY_MS);
            let expires_at_ms = if envelope.expires_at_ms == 0 { cap } else { envelope.expires_at_ms.min(cap) };
            let message = HeldMessage {
                from_app,
                from_device,
                id,
                payload: envelope.payload,
                received_at_ms: incoming.received_at_ms,
                expires_at_ms,
                stored: true,
                // At or below its app's mark it may have reached the app
                // before the daemon stopped.
                redelivered: held.handed_mark.get(&to_app).is_some_and(|mark| delivery <= *mark),
                watchers: Vec::new(),
            };
            held.insert(to_app, delivery, message);
        }
    }
}

/// What the whole device holds for its apps, whatever each may hold: the
/// sum of many apps' inboxes stays within memory and disk.
pub(crate) const DEVICE_INBOX: Limit = Limit { records: 262_144, bytes: 1 << 30 };
/// The longest a message may be held: the longest time to live a sender
/// may ask, and the clocks' skew.
const MAX_EXPIRY_MS: u64 = MAX_TTL.as_millis() as u64 + CLOCK_SKEW_MS;
/// How far a sender's clock may run ahead of ours.
const CLOCK_SKEW_MS: u64 = 120_000;

/// When a message that names `expires_at_ms` (0: none) and arrives at
/// `now_ms` is dropped untaken: always set, never past [`MAX_EXPIRY_MS`]
/// from now; `None` if it is past already.
pub(super) fn expiry(expires_at_ms: u64, now_ms: u64) -> Option<u64> {
    let cap = now_ms.saturating_add(MAX_EXPIRY_MS);
    let at = if expires_at_ms == 0 { cap } else { expires_at_ms.min(cap) };
    (at > now_ms).then_some(at)
}

impl Delivery {
    /// Drops held messages whose time to live passed: their senders hear
    /// EXPIRED, and they go from the disk too.
    pub(super) fn expire_inbox(&self, now_ms: u64) {
        let expired = self.lock_held().expire(now_ms);
        if expired.is_empty() {
            return;
        }
        let deliveries = expired.iter().map(|(_, delivery, _)| *delivery).collect();
        self.committer.submit(Op::Taken { deliveries }, move |_| {
            let failure = Failure::new(Outcome::Expired, "its time to live passed before its app took it");
            for (_, _, message) in expired {
                for watcher in message.watchers {
                    watcher.tell(Progress::Taken(Err(failure.clone())));
                }
            }
        });
    }
}

impl Inbox for Delivery {
    fn offer(&self, from: Did, envelope: pb::Envelope, watcher: Watcher) -> Offered {
        let (sender, recipient, id) = match self.judge(from, &envelope) {
            Ok(parties) => parties,
            Err(failure) => return Offered::Final(Err(failure)),
        };
        let mut held = self.lock_held();
        let started_ms = envelope.epoch_started_ms;
        match held.replay.check(sender, recipient, id, started_ms) {
            Seen::Fresh => {}
            Seen::Stale => {
                let detail = "from a run of the sending daemon older than any this device remembers: a replay";
                return Offered::Final(Err(Failure::new(Outcome::Refused, detail)));
            }
            Seen::Taken => {
                if held.watch(&sender, &id, watcher) {
                    return Offered::Held;
                }
                drop(held);
                // Taken before (its sender missed the receipt), or refused.
                return match self.committer.read(|store| store.refusal(&sender, &id)) {
                    Ok(Some((outcome, detail))) => Offered::Final(Err(Failure::from_wire(outcome, detail))),
                    Ok(None) => Offered::Final(Ok(())),
                    Err(error) => Offered::Final(Err(Failure::new(Outcome::Unspecified, error.to_string()))),
                };
            }
        }
        let received_at_ms = now_ms();
        let Some(expires_at_ms) = expiry(envelope.expires_at_ms, received_at_ms) else {
            let detail = "its time to live passed before it reached the recipient's device";
            return Offered::Final(Err(Failure::new(Outcome::Expired, detail)));
        };
        let (usage, from_sender) = held.usage_of(&recipient, &sender);
        let inbox = Limit::new(self.config.max_inbox_messages, self.config.max_inbox_bytes);
        let checks = [
            (usage, inbox, "the recipient's inbox"),
            (from_sender, inbox.share(self.config.max_message), "the sending app's share of it"),
            (held.device.get(&()), DEVICE_INBOX, "this device's inbox"),
        ];
        if first_over(envelope.payload.len(), &checks).is_some() {
            // The sender waits and offers it again; other pairs go on.
            return Offered::Busy;
        }
        held.replay.admit(sender, recipient, id, started_ms);
        let replay = held.replay.state(sender, recipient).map(|s| s.encode()).unwrap_or_default();
        let delivery = held.next_delivery;
        held.next_delivery += 1;
        let mut envelope = envelope;
        envelope.expires_at_ms = expires_at_ms;
        let message = HeldMessage {
            from_app: sender,
            from_device: from,
            id,
            payload: envelope.payload.clone(),
            received_at_ms,
            expires_at_ms,
            stored: false,
            redelivered: false,
            watchers: vec![watcher],
        };
        held.insert(recipient, delivery, message);
        let incoming = pb::StoredIncoming { envelope: Some(envelope), from_device: from.key_bytes(), received_at_ms };
        // A connected app gets it as soon as it is on disk: the handed mark
        // moves in the same write.
        let handed = self.sessions.session(&recipient).is_some();
        let op = Op::Hold { delivery, incoming, from_app: sender, to_app: recipient, replay, handed };
        let this = self.me();
        // Queued under the lock: the app may take it as soon as the lock is
        // released, and its acknowledgement must be written after it.
        self.committer.submit(op, move |applied| {
            let Some(this) = this.upgrade() else { return };
            match applied {
                Ok(_) => {
                    let mut held = this.lock_held();
                    if handed {
                        held.raise_mark(recipient, delivery);
                    }
                    held.stored(&recipient, delivery);
                }
                Err(error) => {
                    let failure =
                        Failure::new(Outcome::Unreachable, format!("the receiver could not store it: {error}"));
                    let message = this.lock_held().take(&recipient, delivery);
                    for watcher in message.into_iter().flat_map(|m| m.watchers) {
                        watcher.tell(Progress::Taken(Err(failure.clone())));
                    }
                }
            }
        });
        drop(held);
        Offered::Held
    }

    fn max_message(&self) -> usize {
        self.config.max_message
    }
}

impl StreamAcceptor for Delivery {
    /// Offers a stream to `service` of local app `to_app`, and waits (up to
    /// [`ACCEPT_TIMEOUT`]) for the app to take it.
    async fn offer_stream(
        &self,
        from_device: Did,
        from_app: Did,
        to_app: Did,
        service: String,
    ) -> Result<AppEnd, Failure> {
        self.check_parties(from_device, &from_app, &to_app)?;
        let session = self
            .sessions
            .session(&to_app)
            .ok_or_else(|| Failure::new(Outcome::AppNotRunning, format!("{to_app} is not connected to its daemon")))?;
        let permitted =
            session.access.read().ok().and_then(|a| a.services.get(&service).map(|l| l.permits(&from_app, true)));
        match permitted {
            None => {
                let detail = format!("{to_app} does not listen on service {service:?}");
                return Err(Failure::new(Outcome::AppNotRunning, detail));
            }
            Some(false) => {
                let detail = format!("{to_app} does not let {from_app} open service {service:?}");
                return Err(Failure::new(Outcome::Refused, detail));
            }
            Some(true) => {}
        }
        let (token, accepted) = self.sessions.expect_stream(to_app, from_app, from_device, service.clone());
        let announce = Incoming::Stream { token, from_app, from_device, service };
        // Never wait for room: an app with that many offers unanswered is
        // not taking streams now.
        if let Err(full) = session.incoming.try_send(announce) {
            self.sessions.forget_stream(token);
            let detail = match full {
                tokio::sync::mpsc::error::TrySendError::Full(_) => {
                    format!("{to_app} has too many stream offers unanswered")
                }
                tokio::sync::mpsc::error::TrySendError::Closed(_) => format!("{to_app} disconnected"),
            };
            return Err(Failure::new(Outcome::AppNotRunning, detail));
        }
        match tokio::time::timeout(ACCEPT_TIMEOUT, accepted).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(_)) | Err(_) => {
                self.sessions.forget_stream(token);
                let detail = format!("{to_app} did not take the stream within {}s", ACCEPT_TIMEOUT.as_secs());
                Err(Failure::new(Outcome::AppNotRunning, detail))
            }
        }
    }
}
