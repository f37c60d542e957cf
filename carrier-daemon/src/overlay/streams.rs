//! Streams of the daemon's own protocols over the swarm's links: the
//! behaviour that hands inbound streams to their protocol's queue, and the
//! [`StreamControl`] that opens and accepts them.
//!
//! ```text
//!  peer opens /carrier/…  ─▶ Handler ─try_send─▶ queue (per protocol, bounded) ─▶ Incoming::next
//!  StreamControl::open_stream ─Open─▶ Handler of a link to the peer ─▶ negotiated Stream
//! ```
//!
//! Each protocol's queue holds up to [`INBOUND_QUEUE`] streams that its
//! accept loop has not yet taken, so a burst of streams that arrive at once
//! (two forwarded connections, a round of mailbox deposits) all reach their
//! handler. Past that the stream is reset, and logged: the opener sees the
//! reset as an error at once, never silence. Outbound streams negotiate
//! side by side on a link.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour, Stream,
    StreamProtocol, StreamUpgradeError, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use tokio::sync::{mpsc, oneshot};

pub use super::counted::CountedStream;
use super::counted::OpenStreams;

/// Streams a protocol's accept loop may be behind by before more are reset.
pub(crate) const INBOUND_QUEUE: usize = 256;
/// Stream opens a link's handler may have queued.
const OPEN_QUEUE: usize = 64;

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StreamOpenError {
    /// No link to the peer: connect first.
    #[error("no link to {0}")]
    NotLinked(PeerId),
    /// The peer does not serve the protocol.
    #[error("the peer does not serve {0}")]
    Unsupported(StreamProtocol),
    /// The link failed or closed while the stream was being set up.
    #[error("the link broke while opening the stream: {0}")]
    Link(String),
}

/// A protocol already has an accept loop.
#[derive(Debug, thiserror::Error)]
#[error("protocol {0} is already accepted")]
pub struct AlreadyAccepted(StreamProtocol);

/// One link, as stream opening sees it.
#[derive(Clone)]
struct LinkEntry {
    connection: ConnectionId,
    /// Through a relay.
    relayed: bool,
    /// On its way out: new streams go elsewhere if they can.
    retired: bool,
    /// Where to ask its handler for a stream.
    opens: mpsc::Sender<Open>,
    /// Streams open on it.
    open: OpenStreams,
}

/// What the behaviour and the handles share.
#[derive(Default)]
struct Shared {
    /// Each accepted protocol's queue.
    accepting: HashMap<StreamProtocol, mpsc::Sender<(PeerId, CountedStream)>>,
    /// Each peer's links, oldest first.
    links: HashMap<PeerId, Vec<LinkEntry>>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn protocols(&mut self) -> Vec<StreamProtocol> {
        self.accepting.retain(|_, queue| !queue.is_closed());
        self.accepting.keys().cloned().collect()
    }

    fn inbound(&mut self, peer: PeerId, stream: CountedStream, protocol: StreamProtocol) {
        let Some(queue) = self.accepting.get(&protocol) else {
            return tracing::debug!(%peer, %protocol, "stream for a protocol no longer accepted");
        };
        match queue.try_send((peer, stream)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(%peer, %protocol, queued = INBOUND_QUEUE, "too many streams waiting; reset this one")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.accepting.remove(&protocol);
            }
        }
    }
}

/// A request to a link's handler for an outbound stream.
pub(crate) struct Open {
    protocol: StreamProtocol,
    reply: oneshot::Sender<Result<CountedStream, StreamOpenError>>,
}

/// Opens and accepts protocol streams; cheap to clone.
#[derive(Clone)]
pub struct StreamControl {
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for StreamControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamControl").finish_non_exhaustive()
    }
}

impl StreamControl {
    /// Opens a `protocol` stream on a link to `peer`; there must be one.
    pub async fn open_stream(&self, peer: PeerId, protocol: StreamProtocol) -> Result<CountedStream, StreamOpenError> {
        let mut links: Vec<_> = lock(&self.shared).links.get(&peer).cloned().unwrap_or_default();
        // Links on their way out last, then relayed ones (a relayed link
        // goes once a direct one is up), and the newest first: an older
        // one may be closing.
        links.reverse();
        links.sort_by_key(|link| (link.retired, link.relayed));
        for link in links.into_iter().map(|l| l.opens) {
            let (reply, answer) = oneshot::channel();
            if link.send(Open { protocol: protocol.clone(), reply }).await.is_err() {
                continue;
            }
            return answer.await.unwrap_or_else(|_| Err(StreamOpenError::Link("the link closed".into())));
        }
        Err(StreamOpenError::NotLinked(peer))
    }

    /// Marks a link as on its way out (or, `false`, back in use): new
    /// streams go to the peer's other links while it has any.
    pub(crate) fn set_retired(&self, connection: ConnectionId, retired: bool) {
        let mut shared = lock(&self.shared);
        for link in shared.links.values_mut().flatten().filter(|l| l.connection == connection) {
            link.retired = retired;
        }
    }

    /// Whether we reach `peer` only through relays (and reach it at all).
    pub(crate) fn only_relayed(&self, peer: &PeerId) -> bool {
        let shared = lock(&self.shared);
        shared.links.get(peer).is_some_and(|links| !links.is_empty() && links.iter().all(|l| l.relayed))
    }

    /// How many of our protocols' streams are open on a link.
    pub(crate) fn open_streams(&self, connection: ConnectionId) -> usize {
        let shared = lock(&self.shared);
        shared.links.values().flatten().filter(|l| l.connection == connection).map(|l| l.open.get()).sum()
    }

    /// Takes the streams peers open for `protocol` from now on, until the
    /// returned [`Incoming`] is dropped.
    pub fn accept(&self, protocol: StreamProtocol) -> Result<Incoming, AlreadyAccepted> {
        let mut shared = lock(&self.shared);
        shared.protocols();
        if shared.accepting.contains_key(&protocol) {
            return Err(AlreadyAccepted(protocol));
        }
        let (queue, streams) = mpsc::channel(INBOUND_QUEUE);
        shared.accepting.insert(protocol, queue);
        Ok(Incoming { streams })
    }
}

/// The streams peers open for one protocol.
#[derive(Debug)]
pub struct Incoming {
    streams: mpsc::Receiver<(PeerId, CountedStream)>,
}

impl Incoming {
    /// The next stream and who opened it; `None` once the overlay stopped.
    pub async fn next(&mut self) -> Option<(PeerId, CountedStream)> {
        self.streams.recv().await
    }

    /// How many streams wait to be taken.
    pub fn waiting(&self) -> usize {
        self.streams.len()
    }
}

/// The swarm behaviour behind [`StreamControl`].
pub(crate) struct Behaviour {
    shared: Arc<Mutex<Shared>>,
}

impl Behaviour {
    pub(crate) fn new() -> Self {
        Self { shared: Arc::default() }
    }

    pub(crate) fn control(&self) -> StreamControl {
        StreamControl { shared: Arc::clone(&self.shared) }
    }

    fn handler(&mut self, connection: ConnectionId, peer: PeerId, addr: &Multiaddr) -> Handler {
        let (link, opens) = mpsc::channel(OPEN_QUEUE);
        let relayed = super::circuits::is_relayed(addr);
        let open = OpenStreams::default();
        let entry = LinkEntry { connection, relayed, retired: false, opens: link, open: open.clone() };
        lock(&self.shared).links.entry(peer).or_default().push(entry);
        Handler { peer, shared: Arc::clone(&self.shared), opens, open }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(connection, peer, local_addr))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(connection, peer, addr))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionClosed(closed) = event {
            let mut shared = lock(&self.shared);
            if let Some(links) = shared.links.get_mut(&closed.peer_id) {
                links.retain(|link| link.connection != closed.connection_id);
                if links.is_empty() {
                    shared.links.remove(&closed.peer_id);
                }
            }
        }
    }

    fn on_connection_handler_event(&mut self, _peer: PeerId, _connection: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// One link's side of the behaviour.
pub(crate) struct Handler {
    peer: PeerId,
    shared: Arc<Mutex<Shared>>,
    opens: mpsc::Receiver<Open>,
    /// Streams open on this link.
    open: OpenStreams,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = Protocols;
    type OutboundProtocol = Protocols;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Open;

    fn listen_protocol(&self) -> SubstreamProtocol<Protocols> {
        SubstreamProtocol::new(Protocols(lock(&self.shared).protocols()), ())
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ConnectionHandlerEvent<Protocols, Open, Infallible>> {
        match self.opens.poll_recv(cx) {
            Poll::Ready(Some(open)) => Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(Protocols(vec![open.protocol.clone()]), open),
            }),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<'_, Protocols, Protocols, (), Open>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, protocol), ..
            }) => {
                let stream = self.open.count(stream);
                lock(&self.shared).inbound(self.peer, stream, protocol);
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound { protocol: (stream, _), info }) => {
                let _ = info.reply.send(Ok(self.open.count(stream)));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info, error }) => {
                let error = match error {
                    StreamUpgradeError::NegotiationFailed => StreamOpenError::Unsupported(info.protocol),
                    StreamUpgradeError::Timeout => StreamOpenError::Link("the peer did not answer in time".into()),
                    StreamUpgradeError::Io(error) => StreamOpenError::Link(error.to_string()),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = info.reply.send(Err(error));
            }
            _ => {}
        }
    }
}

/// The protocols a stream may be negotiated for; it is used as it is.
pub(crate) struct Protocols(Vec<StreamProtocol>);

impl UpgradeInfo for Protocols {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Protocols {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        ready(Ok((stream, protocol)))
    }
}

impl OutboundUpgrade<Stream> for Protocols {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_outbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        ready(Ok((stream, protocol)))
    }
}

#[cfg(test)]
#[path = "streams_tests.rs"]
mod tests;
