//! App messages and app streams between daemons.
//!
//! ```text
//!  app ─Send─▶ session ─▶ Messaging::send ─┬─ recipient on this device ─▶ offer_message
//!                                          └─ courier (one per device) ══/carrier/msg/1.0.0══▶
//!  peer ══/carrier/msg/1.0.0══▶ inbound ─▶ offer_message ─▶ recipient's session ─▶ app
//!  receipts flow back the same way: the app's ack, or the reason it failed
//!
//!  app ─OpenStream─▶ open_stream ══/carrier/app-stream/1.0.0══▶ offer_stream ─▶ listening app
//!       then raw bytes: app socket ⇄ one QUIC stream ⇄ app socket
//! ```
//!
//! The ledger decides who is who: a message's recipient app must be active
//! and hosted by the receiving device, and its sender app active and hosted
//! by the device at the other end of the link. The receiver keeps each pair
//! of apps' messages at most once and in order ([`ReplayGuard`]) and applies
//! the recipient's allow lists.

mod app_stream;
mod courier;
mod inbound;
mod inbox;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::ledger::Subject;
use carrier_proto::messaging::{MessageId, ReplayGuard};
use carrier_proto::pb;
use libp2p::{PeerId, StreamProtocol};
use rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;

use crate::apps::Apps;
use crate::link::LinkContext;
use crate::overlay::Overlay;

pub(crate) use app_stream::StreamEnd;
pub(crate) use app_stream::join as app_stream_join;

/// Messages between devices.
pub(crate) const MSG_PROTOCOL: StreamProtocol = StreamProtocol::new("/carrier/msg/1.0.0");
/// App streams between devices.
pub(crate) const APP_STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new("/carrier/app-stream/1.0.0");
/// Default largest message payload.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;
pub use carrier_proto::messaging::FRAME_OVERHEAD;

/// Why a message or stream did not reach its app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind, as the app sees it.
    pub outcome: pb::Outcome,
    /// For people.
    pub detail: String,
}

impl Failure {
    pub(crate) fn new(outcome: pb::Outcome, detail: impl Into<String>) -> Self {
        Self { outcome, detail: detail.into() }
    }

    pub(crate) fn from_wire(outcome: i32, detail: String) -> Self {
        let outcome = pb::Outcome::try_from(outcome).unwrap_or(pb::Outcome::Unspecified);
        Self { outcome, detail }
    }
}

/// `Ok` once the recipient app took the message.
pub type Verdict = Result<(), Failure>;

/// A finished send, on its way back to the sending app.
#[derive(Debug)]
pub(crate) struct Receipt {
    /// The app's request id.
    pub request: u64,
    /// The id the message travelled under, once it had one.
    pub message_id: Option<MessageId>,
    pub verdict: Verdict,
}

/// Where the receipt of one send goes.
#[derive(Debug)]
pub(crate) struct ReceiptSink {
    pub tx: mpsc::UnboundedSender<Receipt>,
    pub request: u64,
}

impl ReceiptSink {
    /// Hands the receipt back; a gone session has nobody to tell.
    pub(crate) fn resolve(self, message_id: Option<MessageId>, verdict: Verdict) {
        let receipt = Receipt { request: self.request, message_id, verdict };
        let _ = self.tx.send(receipt);
    }
}

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

/// The daemon's messaging: shared by the app socket and the overlay
/// protocols.
pub struct Messaging {
    pub(crate) ctx: Arc<LinkContext>,
    pub(crate) overlay: Overlay,
    pub(crate) apps: Apps,
    pub(crate) config: MessagingConfig,
    /// This run's message-id epoch.
    epoch: [u8; 16],
    seq: AtomicU64,
    couriers: Mutex<HashMap<Did, courier::Handle>>,
    pub(crate) replay: Mutex<ReplayGuard>,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging").field("did", &self.ctx.did()).field("config", &self.config).finish()
    }
}

impl Messaging {
    /// Starts taking messages and streams from peers.
    pub fn start(ctx: Arc<LinkContext>, overlay: Overlay, config: MessagingConfig) -> Arc<Self> {
        let mut epoch = [0u8; 16];
        OsRng.fill_bytes(&mut epoch);
        let messaging = Arc::new(Self {
            ctx,
            overlay,
            apps: Apps::default(),
            config,
            epoch,
            seq: AtomicU64::new(0),
            couriers: Mutex::new(HashMap::new()),
            replay: Mutex::new(ReplayGuard::new()),
        });
        serve_protocol(
            &messaging,
            MSG_PROTOCOL,
            |m, peer, stream| async move { inbound::serve(&m, peer, stream).await },
        );
        serve_protocol(&messaging, APP_STREAM_PROTOCOL, |m, peer, stream| async move {
            app_stream::serve(&m, peer, stream).await
        });
        messaging
    }

    /// Our device DID.
    pub fn device(&self) -> Did {
        self.ctx.did()
    }

    /// The apps with a session now, sorted.
    pub fn connected_apps(&self) -> Vec<Did> {
        self.apps.connected()
    }

    /// The apps connected to this daemon.
    pub(crate) fn apps(&self) -> &Apps {
        &self.apps
    }

    /// Sends `payload` from local app `from` to app `to`; the receipt goes
    /// to `sink`. Waits only while the recipient's queue is full.
    pub(crate) async fn send(self: &Arc<Self>, from: Did, to: Did, payload: Vec<u8>, sink: ReceiptSink) {
        if payload.len() > self.config.max_message {
            let detail = format!(
                "message of {} bytes is over the limit of {} bytes; send bulk data over a stream",
                payload.len(),
                self.config.max_message
            );
            return sink.resolve(None, Err(Failure::new(pb::Outcome::TooLarge, detail)));
        }
        let host = match self.sender_check(&from).and_then(|()| self.host_of(&to)) {
            Ok(host) => host,
            Err(failure) => return sink.resolve(None, Err(failure)),
        };
        let id = MessageId { epoch: self.epoch, seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1 };
        if host == self.device() {
            let offered = self.offer_message(host, from, to, id, payload).await;
            match offered {
                Ok(taken) => {
                    tokio::spawn(async move { sink.resolve(Some(id), inbox::await_verdict(taken).await) });
                }
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
        let mut outgoing = courier::Outgoing { envelope, sink };
        // A courier that died (its link broke) is replaced once.
        for _ in 0..2 {
            let handle = self.courier(host);
            match handle.send(outgoing).await {
                Ok(()) => return,
                Err(back) => {
                    self.forget_courier(host, &handle);
                    outgoing = back;
                }
            }
        }
        let detail = format!("no courier to {host} could be started");
        outgoing.sink.resolve(Some(id), Err(Failure::new(pb::Outcome::Unreachable, detail)));
    }

    fn courier(self: &Arc<Self>, device: Did) -> courier::Handle {
        let mut couriers = self.couriers.lock().unwrap_or_else(|p| p.into_inner());
        couriers.entry(device).or_insert_with(|| courier::spawn(Arc::clone(self), device)).clone()
    }

    fn forget_courier(&self, device: Did, dead: &courier::Handle) {
        let mut couriers = self.couriers.lock().unwrap_or_else(|p| p.into_inner());
        if couriers.get(&device).is_some_and(|h| h.same(dead)) {
            couriers.remove(&device);
        }
    }

    /// A local sender must still be active (its app key could have been
    /// revoked while it is connected).
    fn sender_check(&self, from: &Did) -> Result<(), Failure> {
        let active = self.ctx.ledger.read(|l| l.resolve(from).is_some_and(|r| r.is_active()));
        if active {
            Ok(())
        } else {
            Err(Failure::new(pb::Outcome::Revoked, format!("the sending app {from} is revoked on the ledger")))
        }
    }

    /// The device hosting active app `app`.
    pub(crate) fn host_of(&self, app: &Did) -> Result<Did, Failure> {
        self.ctx.ledger.read(|l| {
            let Some(resolution) = l.resolve(app) else {
                return Err(Failure::new(pb::Outcome::UnknownRecipient, format!("the ledger has no app {app}")));
            };
            let Subject::App { device, .. } = &resolution.record.subject else {
                return Err(Failure::new(pb::Outcome::UnknownRecipient, format!("{app} is a device, not an app")));
            };
            if !resolution.is_active() {
                return Err(Failure::new(pb::Outcome::Revoked, format!("{app} is revoked ({:?})", resolution.status)));
            }
            Ok(*device)
        })
    }

    /// The libp2p peer id of device `did` now (its current key).
    pub(crate) fn peer_of(&self, did: &Did) -> Option<PeerId> {
        self.ctx.ledger.read(|l| l.resolve(did).map(|r| r.record.keys.signing.peer_id()))
    }

    /// The device DID of a linked peer.
    pub(crate) fn device_of(&self, peer: &PeerId) -> Option<Did> {
        let key = SigningPublicKey::from_peer_id(peer)?;
        self.ctx.ledger.read(|l| l.did_of_key(&key))
    }
}

/// Takes every stream of `protocol` from every peer, each in its own task.
fn serve_protocol<F, Fut, E>(messaging: &Arc<Messaging>, protocol: StreamProtocol, serve: F)
where
    F: Fn(Arc<Messaging>, PeerId, libp2p::Stream) -> Fut + Send + Copy + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let mut control = messaging.overlay.stream_control();
    let mut incoming = match control.accept(protocol.clone()) {
        Ok(incoming) => incoming,
        Err(error) => return tracing::error!(%error, %protocol, "protocol already taken"),
    };
    let messaging = Arc::clone(messaging);
    tokio::spawn(async move {
        while let Some((peer, stream)) = futures::StreamExt::next(&mut incoming).await {
            let (messaging, protocol) = (Arc::clone(&messaging), protocol.clone());
            tokio::spawn(async move {
                if let Err(error) = serve(messaging, peer, stream).await {
                    tracing::debug!(%peer, %protocol, %error, "stream ended with an error");
                }
            });
        }
    });
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
