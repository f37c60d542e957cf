//! What apps get: the sessions directory, sending (with receipts), the
//! receiving rules and each app's access rules.
//!
//! ```text
//!  ipc (app session) ─Send─▶ Delivery::send ─┬─ recipient on this device ─▶ offer_message
//!                                            └─ Couriers (protocols::messages) ══▶ peer
//!  peer ══▶ protocols::messages::Inbound ─▶ Inbox::offer (here) ─▶ offer_message ─▶ session ─▶ app
//!  receipts flow back the same way: the app's ack, or the reason it failed
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
//! once and in order ([`ReplayGuard`]) and applies the recipient's allow
//! lists.

mod inbox;
mod sessions;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use carrier_proto::identity::Did;
use carrier_proto::messaging::{FRAME_OVERHEAD, MessageId, ReplayGuard};
use carrier_proto::pb::{self, Outcome};
use rand_core::{OsRng, RngCore};

pub(crate) use sessions::{Access, Incoming, Sessions};

use crate::ledger::{Ledger, Party, Policy, Refused};
use crate::overlay::Overlay;
use crate::protocols::app_stream::{self, AppEnd, StreamAcceptor, Streams};
use crate::protocols::messages::{self, Couriers, Inbound, Outgoing, ReceiptSink, await_verdict};
use crate::protocols::{Failure, PeerStream, ProtocolHandler, Router};

/// Default largest message payload.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// Messaging settings.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// Largest message payload carried or accepted.
    pub max_message: usize,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self { max_message: DEFAULT_MAX_MESSAGE }
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
    /// This run's message-id epoch.
    epoch: [u8; 16],
    seq: AtomicU64,
    replay: Mutex<ReplayGuard>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("device", &self.device).field("config", &self.config).finish()
    }
}

impl Delivery {
    /// Delivery for device `device`, taking messages and streams from peers
    /// through `router`.
    pub(crate) fn start(
        device: Did,
        ledger: Arc<dyn Ledger>,
        overlay: Overlay,
        router: Router,
        config: MessagingConfig,
    ) -> Arc<Self> {
        let mut epoch = [0u8; 16];
        OsRng.fill_bytes(&mut epoch);
        let couriers = Arc::new(Couriers::new(overlay.clone(), router.clone(), config.max_message + FRAME_OVERHEAD));
        let delivery = Arc::new(Self {
            device,
            ledger,
            overlay,
            router: router.clone(),
            couriers,
            sessions: Sessions::default(),
            config,
            epoch,
            seq: AtomicU64::new(0),
            replay: Mutex::new(ReplayGuard::new()),
        });
        let max_frame = delivery.max_frame();
        let inbound = Arc::new(Inbound::new(Arc::clone(&delivery), max_frame));
        router.register(messages::PROTOCOL, inbound as Arc<dyn ProtocolHandler>);
        let streams = Arc::new(Streams::new(Arc::clone(&delivery)));
        router.register(app_stream::PROTOCOL, streams as Arc<dyn ProtocolHandler>);
        delivery
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

    /// Sends `payload` from local app `from` to app `to`; the receipt goes
    /// to `sink`. Waits only while the recipient's queue is full.
    pub(crate) async fn send(&self, from: Did, to: Did, payload: Vec<u8>, sink: ReceiptSink) {
        if payload.len() > self.config.max_message {
            let detail = format!(
                "message of {} bytes is over the limit of {} bytes; send bulk data over a stream",
                payload.len(),
                self.config.max_message
            );
            return sink.resolve(None, Err(Failure::new(Outcome::TooLarge, detail)));
        }
        let host = match self.ledger.route(&from, &to) {
            Ok(host) => host,
            Err(refused) => return sink.resolve(None, Err(sending_failure(refused))),
        };
        let id = MessageId { epoch: self.epoch, seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1 };
        if host == self.device {
            match self.offer_message(host, from, to, id, payload).await {
                Ok(taken) => self.tasks().spawn(async move { sink.resolve(Some(id), await_verdict(taken).await) }),
                Err(failure) => sink.resolve(Some(id), Err(failure)),
            }
            return;
        }
        let envelope = pb::Envelope {
            epoch: id.epoch.to_vec(),
            seq: id.seq,
            from_app: from.key_bytes(),
            to_app: to.key_bytes(),
            payload,
        };
        self.couriers.send(host, Outgoing { envelope, sink }).await;
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
