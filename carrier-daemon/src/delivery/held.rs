//! The receiving side's memory of its inbox: per local app, the messages
//! it has not acknowledged yet (each also on disk), who waits on each, and
//! the last message taken per pair of apps.
//!
//! ```text
//!  insert (its write to disk queued) ─▶ handed to the app ─▶ the app's ack ─▶ take
//!         └─▶ stored (on disk: watchers hear Stored)       (off disk too) ─▶ watchers hear Taken
//! ```
//!
//! A message is handed to its app only once it is on disk, and only at or
//! below its app's *handed mark*, which is on disk too: after a crash,
//! every message that may have reached the app comes again marked
//! `redelivered`, and none that did is handed unmarked. The mark moves in
//! the same write as a message that arrives for a connected app, and once
//! for a whole backlog when an app connects.
//!
//! Plain state, no IO: `Delivery` holds it under one lock.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;
use std::sync::Arc;

use carrier_proto::identity::Did;
use carrier_proto::messaging::{MessageId, ReplayGuard};
use tokio::sync::Notify;

use super::quota::{Tally, Usage};
use crate::protocols::messages::{Progress, Watcher};

/// Watchers one held message keeps: a sender that offers it again and
/// again replaces its own, it does not pile them up.
const MAX_WATCHERS: usize = 4;

/// One message waiting for its app.
#[derive(Debug)]
pub(super) struct HeldMessage {
    pub from_app: Did,
    pub from_device: Did,
    pub id: MessageId,
    pub payload: Vec<u8>,
    pub received_at_ms: u64,
    /// When it is dropped untaken (always set: capped on arrival).
    pub expires_at_ms: u64,
    /// On disk yet.
    pub stored: bool,
    /// Given to a session that ended without acknowledging it.
    pub redelivered: bool,
    /// Who hears how far it got (one per time it was offered).
    pub watchers: Vec<Watcher>,
}

/// One local app's inbox.
#[derive(Debug, Default)]
pub(super) struct AppInbox {
    pub messages: BTreeMap<u64, HeldMessage>,
    /// What it holds in all, and from each sending app.
    pub usage: Tally<()>,
    pub senders: Tally<Did>,
    /// Woken when a message comes.
    pub wake: Arc<Notify>,
}

/// Every local app's inbox.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub replay: ReplayGuard,
    pub apps: HashMap<Did, AppInbox>,
    /// (from app, id) ─▶ (to app, delivery).
    by_id: HashMap<(Did, MessageId), (Did, u64)>,
    pub next_delivery: u64,
    /// What every local app's inbox holds together.
    pub device: Tally<()>,
    /// (expires at, app, delivery), soonest first.
    expiry: BTreeSet<(u64, Did, u64)>,
    /// Per app, the handed mark as it is on disk.
    pub handed_mark: HashMap<Did, u64>,
}

impl Held {
    /// Adds `message` for `to_app` under `delivery`.
    pub(super) fn insert(&mut self, to_app: Did, delivery: u64, message: HeldMessage) {
        self.by_id.insert((message.from_app, message.id), (to_app, delivery));
        self.expiry.insert((message.expires_at_ms, to_app, delivery));
        self.device.add((), message.payload.len());
        let inbox = self.apps.entry(to_app).or_default();
        inbox.usage.add((), message.payload.len());
        inbox.senders.add(message.from_app, message.payload.len());
        inbox.messages.insert(delivery, message);
        inbox.wake.notify_one();
    }

    /// The message is on disk: its waiters hear it, its app may have it.
    pub(super) fn stored(&mut self, to_app: &Did, delivery: u64) {
        let Some(inbox) = self.apps.get_mut(to_app) else { return };
        let Some(message) = inbox.messages.get_mut(&delivery) else { return };
        message.stored = true;
        for watcher in &message.watchers {
            watcher.tell(Progress::Stored);
        }
        // Its app may have it now.
        inbox.wake.notify_one();
    }

    /// `app`'s handed mark on disk reached `upto`.
    pub(super) fn raise_mark(&mut self, app: Did, upto: u64) {
        let mark = self.handed_mark.entry(app).or_insert(0);
        *mark = (*mark).max(upto);
    }

    /// The newest message on disk for `app`, at or after `from`: how far
    /// one move of the handed mark may reach.
    pub(super) fn newest_stored(&self, app: &Did, from: u64) -> u64 {
        let Some(inbox) = self.apps.get(app) else { return from };
        inbox.messages.range(from..).take_while(|(_, m)| m.stored).last().map_or(from, |(d, _)| *d)
    }

    /// Adds `watcher` to a message held already (offered again); `false`
    /// if there is none. It hears Stored at once if the message is on disk.
    pub(super) fn watch(&mut self, from_app: &Did, id: &MessageId, watcher: Watcher) -> bool {
        let Some((to_app, delivery)) = self.by_id.get(&(*from_app, *id)) else { return false };
        let Some(message) = self.apps.get_mut(to_app).and_then(|i| i.messages.get_mut(delivery)) else {
            return false;
        };
        if message.stored {
            watcher.tell(Progress::Stored);
        }
        message.watchers.retain(|w| !w.same_sink(&watcher));
        if message.watchers.len() >= MAX_WATCHERS {
            message.watchers.remove(0);
        }
        message.watchers.push(watcher);
        true
    }

    /// Removes `to_app`'s message `delivery`.
    pub(super) fn take(&mut self, to_app: &Did, delivery: u64) -> Option<HeldMessage> {
        let inbox = self.apps.get_mut(to_app)?;
        let message = inbox.messages.remove(&delivery)?;
        let len = message.payload.len();
        inbox.usage.sub(&(), len);
        inbox.senders.sub(&message.from_app, len);
        self.device.sub(&(), len);
        self.expiry.remove(&(message.expires_at_ms, *to_app, delivery));
        self.by_id.remove(&(message.from_app, message.id));
        Some(message)
    }

    /// What waits for `app`: in all, and from `sender`.
    pub(super) fn usage_of(&self, app: &Did, sender: &Did) -> (Usage, Usage) {
        self.apps.get(app).map_or_else(Default::default, |i| (i.usage.get(&()), i.senders.get(sender)))
    }

    /// Takes every message whose time to live has passed at `now_ms`.
    pub(super) fn expire(&mut self, now_ms: u64) -> Vec<(Did, u64, HeldMessage)> {
        let due: Vec<(u64, Did, u64)> = self.expiry.iter().take_while(|(at, ..)| *at <= now_ms).copied().collect();
        due.into_iter().filter_map(|(_, app, delivery)| self.take(&app, delivery).map(|m| (app, delivery, m))).collect()
    }

    /// The first message for `app` after `after`: its number.
    pub(super) fn next_after(&self, app: &Did, after: u64) -> Option<u64> {
        let inbox = self.apps.get(app)?;
        inbox.messages.range(after + 1..).next().map(|(d, _)| *d)
    }

    /// The wake-up for `app`'s session.
    pub(super) fn wake(&mut self, app: Did) -> Arc<Notify> {
        Arc::clone(&self.apps.entry(app).or_default().wake)
    }

    /// `app`'s session ended: what it was given up to `handed` and did
    /// not acknowledge comes again, marked.
    pub(super) fn session_ended(&mut self, app: &Did, handed: u64) {
        if let Some(inbox) = self.apps.get_mut(app) {
            for (_, message) in inbox.messages.range_mut(..=handed) {
                message.redelivered = true;
            }
        }
    }
}
