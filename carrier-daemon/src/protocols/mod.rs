//! The daemon's network protocols, one small module each, over streams of
//! the overlay's links:
//!
//! - [`ledger_sync`] (`/carrier/ledger/2.0.0`): ledger replication, proven
//!   against signed checkpoints;
//! - [`ledger_submit`] (`/carrier/ledger-submit/1.0.0`): authors' requests
//!   on their way to the sequencer;
//! - [`messages`] (`/carrier/msg/1.0.0`): app messages and their receipts;
//! - [`app_stream`] (`/carrier/app-stream/1.0.0`): app byte streams;
//! - [`witness`] (`/carrier/witness/1.0.0`): checkpoints cosigned by the
//!   network's witnesses.
//!
//! ```text
//!  peer opens a stream ─▶ Router (accept loop per protocol, owned task)
//!                      ─▶ ProtocolHandler::handle(peer DID, stream)   (one owned task each)
//!  we open a stream    ─▶ Router::open(DID, protocol)
//! ```
//!
//! libp2p stops here: a protocol sees a peer's [`Did`] and a
//! [`PeerStream`], never a `PeerId`. What a protocol hands to the layer
//! above (a message for an app, a stream for an app) goes through a trait
//! that layer implements ([`messages::Inbox`], [`app_stream::StreamAcceptor`]),
//! so this module never imports it.

pub(crate) mod app_stream;
pub(crate) mod ledger_submit;
pub(crate) mod ledger_sync;
pub(crate) mod mailbox;
pub(crate) mod messages;
pub(crate) mod witness;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use carrier_proto::identity::Did;
use carrier_proto::pb::Outcome;
use libp2p::StreamProtocol;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::framed::FramedError;
use crate::ledger::Ledger;
use crate::overlay::Overlay;
use crate::tasks::Tasks;

/// A stream of one of our protocols to or from a linked peer.
pub(crate) type PeerStream = Compat<crate::overlay::streams::CountedStream>;

/// Why a protocol exchange failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A frame or the stream under it failed.
    #[error(transparent)]
    Framed(#[from] FramedError),
    /// The peer could not be given a stream.
    #[error("cannot open a {protocol} stream to {did}: {reason}")]
    Open {
        /// The peer.
        did: Did,
        /// The protocol.
        protocol: &'static str,
        /// Why.
        reason: String,
    },
    /// The peer could not be found or linked.
    #[error(transparent)]
    Unreachable(#[from] crate::overlay::OverlayError),
    /// The peer took too long.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The peer sent something the protocol does not allow.
    #[error("{0}")]
    Violation(String),
}

/// Why a message or stream did not reach its app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind, as the app sees it.
    pub outcome: Outcome,
    /// For people.
    pub detail: String,
}

impl Failure {
    pub(crate) fn new(outcome: Outcome, detail: impl Into<String>) -> Self {
        Self { outcome, detail: detail.into() }
    }

    /// A failure as a peer or the wire reported it.
    pub(crate) fn from_wire(outcome: i32, detail: String) -> Self {
        let outcome = Outcome::try_from(outcome).unwrap_or(Outcome::Unspecified);
        Self { outcome, detail }
    }
}

/// `Ok` once the recipient app took the message or stream.
pub type Verdict = Result<(), Failure>;

/// A verdict as the wire and the app socket carry it: the outcome code and
/// its detail (empty when delivered). The one place this mapping is made.
pub(crate) fn outcome_of(verdict: Verdict) -> (i32, String) {
    match verdict {
        Ok(()) => (Outcome::Delivered as i32, String::new()),
        Err(failure) => (failure.outcome as i32, failure.detail),
    }
}

/// The verdict a wire outcome code stands for.
pub(crate) fn verdict_of(outcome: i32, detail: String) -> Verdict {
    if outcome == Outcome::Delivered as i32 { Ok(()) } else { Err(Failure::from_wire(outcome, detail)) }
}

/// The future a handler returns for one stream.
pub(crate) type Handling = Pin<Box<dyn Future<Output = Result<(), ProtocolError>> + Send>>;

/// Serves the streams peers open for one protocol.
pub(crate) trait ProtocolHandler: Send + Sync + 'static {
    /// Serves one stream `peer` opened.
    fn handle(self: Arc<Self>, peer: Did, stream: PeerStream) -> Handling;
}

/// Hands each protocol's incoming streams to its handler, and opens
/// streams to peers by DID.
#[derive(Clone)]
pub(crate) struct Router {
    streams: crate::overlay::streams::StreamControl,
    ledger: Arc<dyn Ledger>,
    /// Where accept loops run (stopped first at shutdown).
    accepting: Tasks,
    /// Where each stream's handler runs.
    handlers: Tasks,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    /// A router over `overlay`'s links.
    pub(crate) fn new(overlay: &Overlay, ledger: Arc<dyn Ledger>, accepting: Tasks, handlers: Tasks) -> Self {
        Self { streams: overlay.stream_control(), ledger, accepting, handlers }
    }

    /// Where handlers run, for work a handler hands on.
    pub(crate) fn handlers(&self) -> &Tasks {
        &self.handlers
    }

    /// Serves `protocol` with `handler` until the daemon stops accepting.
    pub(crate) fn register(&self, protocol: &'static str, handler: Arc<dyn ProtocolHandler>) {
        let mut incoming = match self.streams.accept(StreamProtocol::new(protocol)) {
            Ok(incoming) => incoming,
            Err(error) => return tracing::error!(%error, protocol, "protocol already taken"),
        };
        let (ledger, accepting, handlers) = (Arc::clone(&self.ledger), self.accepting.clone(), self.handlers.clone());
        self.accepting.spawn(async move {
            loop {
                let (peer, stream) = tokio::select! {
                    _ = accepting.stopping() => return,
                    next = incoming.next() => match next {
                        Some(next) => next,
                        None => return,
                    },
                };
                let Some(did) = crate::overlay::did_of(&*ledger, &peer) else {
                    tracing::debug!(%peer, protocol, "stream from a peer not on the ledger");
                    continue;
                };
                let handler = Arc::clone(&handler);
                handlers.spawn_until_stop(async move {
                    if let Err(error) = handler.handle(did, stream.compat()).await {
                        tracing::debug!(peer = %did, protocol, %error, "stream ended with an error");
                    }
                });
            }
        });
    }

    /// Opens a `protocol` stream to linked device `did`.
    pub(crate) async fn open(&self, did: Did, protocol: &'static str) -> Result<PeerStream, ProtocolError> {
        let open = |reason: String| ProtocolError::Open { did, protocol, reason };
        let key = self.ledger.standing(&did).map(|s| s.keys.signing).ok_or_else(|| open("not on the ledger".into()))?;
        let stream = self
            .streams
            .open_stream(key.peer_id(), StreamProtocol::new(protocol))
            .await
            .map_err(|e| open(e.to_string()))?;
        Ok(stream.compat())
    }
}
