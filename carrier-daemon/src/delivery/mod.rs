//! What apps get: the sessions directory, sending (with receipts), the
//! receiving rules and each app's access rules, over a durable store.
//!
//! ```text
//!  ipc (app session) ─Send─▶ Delivery::send ─▶ outbox (on disk) ─▶ accepted
//!      ─┬─ recipient on this device ─▶ local courier ─▶ Inbox::offer
//!       └─ Couriers (protocols::messages) ══▶ peer
//!  peer ══▶ protocols::messages::Inbound ─▶ Inbox::offer (here) ─▶ inbox (on disk) ─▶ session ─▶ app
//!  the app's ack ─▶ off the inbox ─▶ FINAL receipt ─▶ Settle::settle ─▶ the sending app
//!
//!  ipc ─OpenStream─▶ Delivery::open_stream ─┬─ local app: offer_stream
//!                                           └─ protocols::app_stream::open ══▶ peer
//!  peer ══▶ protocols::app_stream ─▶ StreamAcceptor::offer_stream (here) ─▶ the app takes it
//! ```
//!
//! The ledger decides who is who (one [`Policy`] question per decision):
//! a message's recipient app must be active and hosted by the receiving
//! device, and its sender app active and hosted by the device at the other
//! end of the link. The receiver keeps each pair of apps' messages at most
//! once and in order (a [`ReplayGuard`](carrier_proto::messaging::ReplayGuard)
//! kept on disk with the inbox) and applies the recipient's allow lists.
//! Message ids keep their epoch across restarts (it is the store's).

mod committer;
mod held;
mod inbox;
mod keeper;
mod live;
mod mailbox;
mod outbox;
mod quota;
mod received;
mod sent;
mod sessions;
mod store;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::messaging::FRAME_OVERHEAD;
use carrier_proto::pb::{self, Outcome};
use tokio::sync::mpsc;

pub(crate) use live::Parties;
pub use outbox::MAX_TTL;
pub(crate) use outbox::SendOptions;
pub(crate) use sessions::{Access, Incoming, Sessions};
pub use store::StoreError;

use crate::ledger::{Ledger, Party, Policy, Refused};
use crate::link::LinkContext;
use crate::overlay::Overlay;
use crate::protocols::app_stream::{self, AppEnd, StreamAcceptor, Streams};
use crate::protocols::mailbox::MailboxService;
use crate::protocols::messages::{self, Couriers, Inbound, Settle};
use crate::protocols::{self, Failure, PeerStream, ProtocolHandler, Router};

/// Default largest message payload.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;
/// Default time to live of a message.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default messages one app may have waiting in the outbox.
pub const DEFAULT_MAX_OUTBOX_MESSAGES: usize = 16_384;
/// Default bytes (payload and per-message overhead) one app may have
/// waiting in the outbox.
pub const DEFAULT_MAX_OUTBOX_BYTES: usize = 64 << 20;
/// Default messages held for one local app until it takes them.
pub const DEFAULT_MAX_INBOX_MESSAGES: usize = 16_384;
/// Default bytes held for one local app until it takes them.
pub const DEFAULT_MAX_INBOX_BYTES: usize = 32 << 20;
/// Default blobs a mailbox node keeps for one offline device.
pub const DEFAULT_MAILBOX_BLOBS_PER_RECIPIENT: usize = 4096;
/// Default bytes a mailbox node keeps for one offline device.
pub const DEFAULT_MAILBOX_BYTES_PER_RECIPIENT: usize = 16 << 20;
/// Default blobs a mailbox node keeps from one depositing device.
pub const DEFAULT_MAILBOX_BLOBS_PER_SENDER: usize = 16_384;
/// Default bytes a mailbox node keeps from one depositing device.
pub const DEFAULT_MAILBOX_BYTES_PER_SENDER: usize = 64 << 20;

/// What one record of `payload` bytes costs against a byte quota.
pub fn quota_cost(payload: usize) -> usize {
    quota::cost(payload)
}
pub use mailbox::COPIES as MAILBOX_COPIES;

/// Messaging settings.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// Largest message payload carried or accepted.
    pub max_message: usize,
    /// How long a message is retried when its app names no time to live.
    pub default_ttl: Duration,
    /// Messages one sending app may have waiting for delivery.
    pub max_outbox_messages: usize,
    /// Bytes (payload and overhead) one sending app may have waiting.
    pub max_outbox_bytes: usize,
    /// Messages held for one local app until it takes them; past that (or
    /// a sending app past its share) its senders wait (their other pairs
    /// do not).
    pub max_inbox_messages: usize,
    /// Bytes held for one local app until it takes them.
    pub max_inbox_bytes: usize,
    /// Sealed blobs this device keeps, as a mailbox node, for one offline
    /// device (one depositor: a share of it).
    pub mailbox_blobs_per_recipient: usize,
    /// Bytes of sealed blobs kept for one offline device.
    pub mailbox_bytes_per_recipient: usize,
    /// Sealed blobs this device keeps from one depositing device.
    pub mailbox_blobs_per_sender: usize,
    /// Bytes of sealed blobs kept from one depositing device.
    pub mailbox_bytes_per_sender: usize,
    /// The message store; `None` keeps it in memory (nothing survives).
    pub store: Option<PathBuf>,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_MAX_MESSAGE,
            default_ttl: DEFAULT_TTL,
            max_outbox_messages: DEFAULT_MAX_OUTBOX_MESSAGES,
            max_outbox_bytes: DEFAULT_MAX_OUTBOX_BYTES,
            max_inbox_messages: DEFAULT_MAX_INBOX_MESSAGES,
            max_inbox_bytes: DEFAULT_MAX_INBOX_BYTES,
            mailbox_blobs_per_recipient: DEFAULT_MAILBOX_BLOBS_PER_RECIPIENT,
            mailbox_bytes_per_recipient: DEFAULT_MAILBOX_BYTES_PER_RECIPIENT,
            mailbox_blobs_per_sender: DEFAULT_MAILBOX_BLOBS_PER_SENDER,
            mailbox_bytes_per_sender: DEFAULT_MAILBOX_BYTES_PER_SENDER,
            store: None,
        }
    }
}

/// The far end of a stream an app opened, ready for bytes.
#[derive(Debug)]
pub(crate) enum StreamEnd {
    /// A stream to the remote daemon, with bytes that came early.
    Remote(PeerStream, Vec<u8>),
    /// A local app's end (both apps on this device).
    Local(AppEnd),
}

/// The daemon's delivery: shared by the app socket and the network
/// protocols it registers.
pub struct Delivery {
    device: Did,
    ledger: Arc<dyn Ledger>,
    overlay: Overlay,
    router: Router,
    couriers: Arc<Couriers>,
    sessions: Sessions,
    config: MessagingConfig,
    /// The message-id epoch: the store's, kept across restarts.
    epoch: [u8; 16],
    /// When it began, sent with every message so receivers order runs.
    epoch_started_ms: u64,
    committer: committer::Committer,
    outbox: Mutex<outbox::Outbox>,
    held: Mutex<held::Held>,
    mailbox: Mutex<keeper::Mailbox>,
    /// The app streams joined now, cut when the ledger takes their right.
    live: Arc<live::LiveStreams>,
    /// A rebalance of the mailbox is running.
    rebalancing: std::sync::atomic::AtomicBool,
    /// Our keys (sealing and opening mailbox blobs).
    ctx: Arc<LinkContext>,
    /// Messages between apps of this device, to the local courier.
    local: mpsc::UnboundedSender<pb::Envelope>,
    this: Weak<Delivery>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("device", &self.device).field("config", &self.config).finish()
    }
}

impl Delivery {
    /// Delivery for device `device`, taking messages and streams from peers
    /// through `router`; picks up what the message store held.
    pub(crate) fn start(
        ctx: Arc<LinkContext>,
        overlay: Overlay,
        router: Router,
        config: MessagingConfig,
    ) -> Result<Arc<Self>, StoreError> {
        let (device, ledger) = (ctx.did(), Arc::clone(&ctx.ledger));
        let (store, mut loaded) = match &config.store {
            Some(path) => store::MessageStore::open(path)?,
            None => store::MessageStore::in_memory()?,
        };
        let committer = committer::Committer::start(store, router.handlers());
        let (local, local_queue) = mpsc::unbounded_channel();
        let max_frame = config.max_message + FRAME_OVERHEAD;
        let delivery = Arc::new_cyclic(|this: &Weak<Delivery>| {
            let settle: Weak<dyn Settle> = this.clone();
            let couriers = Couriers::new(overlay.clone(), router.clone(), Arc::new(WeakSettle(settle)), max_frame);
            Self {
                device,
                ledger,
                overlay,
                router: router.clone(),
                couriers,
                sessions: Sessions::default(),
                config,
                epoch: loaded.epoch,
                epoch_started_ms: loaded.epoch_started_ms,
                committer,
                outbox: Mutex::default(),
                held: Mutex::default(),
                mailbox: Mutex::default(),
                rebalancing: std::sync::atomic::AtomicBool::new(false),
                live: Arc::default(),
                ctx,
                local,
                this: this.clone(),
            }
        });
        delivery.tasks().spawn_until_stop(outbox::local_courier(Arc::downgrade(&delivery), local_queue));
        delivery.resume_inbox(&mut loaded);
        delivery.resume_outbox(std::mem::take(&mut loaded.outbox));
        delivery.resume_mailbox(std::mem::take(&mut loaded.mailbox));
        delivery.tasks().spawn_until_stop(prune(Arc::downgrade(&delivery)));
        delivery.tasks().spawn_until_stop(mailbox::run(Arc::downgrade(&delivery)));
        delivery.tasks().spawn_until_stop(cut_streams(Arc::downgrade(&delivery)));
        let keeper = Arc::new(MailboxService::new(Arc::clone(&delivery), max_frame));
        router.register(protocols::mailbox::PROTOCOL, keeper as Arc<dyn ProtocolHandler>);
        let inbound = Arc::new(Inbound::new(Arc::clone(&delivery), max_frame));
        router.register(messages::PROTOCOL, inbound as Arc<dyn ProtocolHandler>);
        let streams = Arc::new(Streams::new(Arc::clone(&delivery)));
        router.register(app_stream::PROTOCOL, streams as Arc<dyn ProtocolHandler>);
        Ok(delivery)
    }

    /// A handle on ourselves, for work that completes later.
    fn me(&self) -> Weak<Delivery> {
        self.this.clone()
    }

    /// Our device DID.
    pub fn device(&self) -> Did {
        self.device
    }

    /// The ledger every decision is checked against.
    pub(crate) fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// Largest message payload carried or accepted.
    pub(crate) fn max_message(&self) -> usize {
        self.config.max_message
    }

    /// Largest frame on the app socket and the message protocol.
    pub(crate) fn max_frame(&self) -> usize {
        self.config.max_message + FRAME_OVERHEAD
    }

    /// The apps with a session now, sorted.
    pub fn connected_apps(&self) -> Vec<Did> {
        self.sessions.connected()
    }

    /// The connected apps' sessions, and streams waiting for their app.
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Where work that outlives one request runs.
    pub(crate) fn tasks(&self) -> &crate::tasks::Tasks {
        self.router.handlers()
    }

    /// The default time to live of a message.
    pub(crate) fn default_ttl(&self) -> Duration {
        self.config.default_ttl
    }

    /// The device hosting active app `app`.
    pub(crate) fn host_of(&self, app: &Did) -> Result<Did, Failure> {
        self.ledger
            .standing(app)
            .and_then(|s| s.host())
            .ok_or_else(|| Failure::new(Outcome::UnknownRecipient, format!("the ledger has no app {app}")))
    }

    /// Opens a stream from local app `from` to `service` of app `to`.
    pub(crate) async fn open_stream(&self, from: Did, to: Did, service: String) -> Result<StreamEnd, Failure> {
        let host = self.ledger.route(&from, &to).map_err(sending_failure)?;
        if host == self.device {
            return self.offer_stream(host, from, to, service).await.map(StreamEnd::Local);
        }
        let open = pb::StreamOpen { from_app: from.to_string(), to_app: to.to_string(), service };
        let (stream, early) = app_stream::open(&self.overlay, &self.router, host, open).await?;
        Ok(StreamEnd::Remote(stream, early))
    }
}

/// Couriers hold the delivery layer weakly: it owns them.
struct WeakSettle(Weak<dyn Settle>);

impl Settle for WeakSettle {
    fn settle(&self, seq: u64, verdict: crate::protocols::Verdict) {
        if let Some(settle) = self.0.upgrade() {
            settle.settle(seq, verdict);
        }
    }

    fn unreachable(&self, device: Did, parked: Vec<(Arc<pb::Envelope>, u64)>) {
        if let Some(settle) = self.0.upgrade() {
            settle.unreachable(device, parked);
        }
    }
}

/// Cuts the app streams a ledger change no longer allows, as it comes.
async fn cut_streams(delivery: Weak<Delivery>) {
    let Some(mut updates) = delivery.upgrade().map(|d| d.ledger.subscribe()) else { return };
    loop {
        match updates.recv().await {
            // Revocations and rotations change who may hold a stream; a
            // lagging feed may have missed one.
            Ok(update) if update.revoked.is_none() && update.rotated.is_none() => continue,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
        let Some(this) = delivery.upgrade() else { return };
        this.live.enforce(&*this.ledger, &this.device);
    }
}

impl Delivery {
    /// Tracks a stream between `parties` until the guard drops; its cut
    /// token fires if the ledger takes their right to it.
    pub(crate) fn track_stream(&self, parties: live::Parties) -> live::LiveGuard {
        let guard = self.live.track(parties);
        // A change that came before it was tracked counts too.
        if !parties.allowed(&*self.ledger, &self.device) {
            guard.cut().cancel();
        }
        guard
    }

    /// App streams joined now.
    pub fn live_streams(&self) -> usize {
        self.live.len()
    }
}

/// How often old receipts and refusals are forgotten and expired messages
/// and blobs dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// Every [`PRUNE_EVERY`], forgets old receipts and refusals and drops
/// expired inbox entries and blobs.
async fn prune(delivery: Weak<Delivery>) {
    loop {
        let Some(this) = delivery.upgrade() else { return };
        let now_ms = outbox::now_ms();
        this.expire_inbox(now_ms);
        this.committer.submit(store::Op::Prune { now_ms }, |_| {});
        this.prune_mailbox(now_ms);
        drop(this);
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

/// A refusal of the ledger, as the sending app hears it.
fn sending_failure(refused: Refused) -> Failure {
    let detail = refused.to_string();
    match refused {
        Refused { party: Party::Sender, .. } => {
            Failure::new(Outcome::Revoked, format!("the sending app is not active on the ledger: {detail}"))
        }
        Refused { denial: crate::ledger::Denial::Revoked(..), .. } => Failure::new(Outcome::Revoked, detail),
        Refused { .. } => Failure::new(Outcome::UnknownRecipient, detail),
    }
}
