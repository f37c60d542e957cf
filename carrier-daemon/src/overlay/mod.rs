//! The overlay: a libp2p `Swarm` over Carrier links, inside one actor.
//!
//! ```text
//!  Overlay (handle) ──Command──▶ run() ──▶ Swarm<Behaviour>
//!        ▲                          │        gate · limits · kad · identify · ping
//!        └──── OverlayEvent ◀───────┘        autonat (v2) · streams · relay (client,
//!                                            and server on `relay` devices) · dcutr
//!                                            (+ port guessing, port_guess.rs)
//!                                            over CarrierTransport (QUIC + Noise)
//!                                            or circuits (relay + Noise + yamux)
//! ```
//!
//! The rest of the daemon talks to the actor through [`Overlay`]'s methods
//! and its event stream, so libp2p's types stay in this module. Kademlia
//! (private protocol `/carrier/kad/1.0.0`) only learns addresses of peers
//! that passed the handshake: its table is filled by hand from identify
//! reports of admitted connections, never from what other peers say.
//! The daemon's own protocols (`crate::protocols`) open and accept streams
//! over the same links through [`Overlay::stream_control`].

mod backoff;
mod behaviour;
pub mod circuits;
mod counted;
pub mod gate;
mod lookups;
mod muxer;
mod peer_cache;
mod port_guess;
mod punch;
pub mod reachability;
pub mod relay;
mod relayed;
pub mod reservations;
pub mod streams;
pub mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carrier_proto::identity::Did;
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Transport;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::ledger::Ledger;
use crate::link::LinkContext;

/// The DID of a linked peer: whoever holds the key its peer id names as
/// its current key. The one place a `PeerId` becomes a DID.
pub(crate) fn did_of(ledger: &dyn Ledger, peer: &PeerId) -> Option<Did> {
    carrier_proto::identity::SigningPublicKey::from_peer_id(peer).and_then(|key| ledger.did_of_key(&key))
}

/// Whether `peer` names the current key of an active device on the ledger:
/// the test every link, relay reservation and circuit must pass.
pub(crate) fn is_active_device(ledger: &dyn Ledger, peer: &PeerId) -> bool {
    did_of(ledger, peer).and_then(|did| ledger.standing(&did)).is_some_and(|standing| standing.is_active_device())
}

/// Kademlia protocol name: private, so Carrier nodes never join a public DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/carrier/kad/1.0.0");
/// Identify protocol version string.
const IDENTIFY_PROTOCOL: &str = "/carrier/id/1.0.0";

/// Overlay settings.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// UDP address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// Addresses of peers to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// Most links at once.
    pub max_links: u32,
    /// How long `connect` may take to find and reach a peer.
    pub connect_timeout: Duration,
    /// While no peer is linked, how often to dial the bootstrap peers again.
    pub bootstrap_retry: Duration,
    /// Where to keep the routing table's peers between runs; they are
    /// dialled along with the bootstrap peers on start.
    pub peer_cache: Option<PathBuf>,
    /// Serve circuits for other devices, within these limits (devices whose
    /// ledger role is `relay`).
    pub relay: Option<relay::RelayLimits>,
    /// When to keep reservations on relays.
    pub reservations: reservations::ReservationPolicy,
    /// Punch direct paths over relayed links (DCUtR, and port guessing).
    pub hole_punching: bool,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            bootstrap: Vec::new(),
            max_links: 512,
            connect_timeout: Duration::from_secs(10),
            bootstrap_retry: Duration::from_secs(2),
            peer_cache: None,
            relay: None,
            reservations: reservations::ReservationPolicy::default(),
            hole_punching: true,
        }
    }
}

/// Why an overlay operation failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The DID is not active on the ledger.
    #[error("{0} is not an active device on the ledger")]
    NotActive(Did),
    /// No route to the DID was found.
    #[error("no route to {0}: no peer knows its address")]
    NotFound(Did),
    /// Dialing failed.
    #[error("cannot reach {did}: {reason}")]
    Unreachable {
        /// Whom.
        did: Did,
        /// Why.
        reason: String,
    },
    /// Did not finish in time.
    #[error("timed out connecting to {0}")]
    Timeout(Did),
    /// Dialing an address failed.
    #[error("cannot link to {addr}: {reason}")]
    DialFailed {
        /// Where.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Dialing an address did not finish in time.
    #[error("timed out linking to {0}")]
    DialTimeout(Multiaddr),
    /// No link to the DID.
    #[error("not linked to {0}")]
    NotLinked(Did),
    /// Listening failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The overlay task has stopped.
    #[error("the overlay has stopped")]
    Stopped,
}

/// Something that happened in the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayEvent {
    /// First link to a peer is up.
    PeerUp(Did),
    /// Last link to a peer is down.
    PeerDown(Did),
    /// A peer entered our routing table.
    Routable(Did),
    /// A peer was revoked; its links are closed and its routes removed.
    Revoked(Did),
    /// A peer's keys were rotated; the links holding the old ones are
    /// closed and the old key's routes removed.
    Rotated(Did),
}

/// How long [`Overlay::closest`] waits for its walk.
pub const CLOSEST_WALK: Duration = Duration::from_millis(1500);

/// The devices closest to a key, as our routing table sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closest {
    /// Nearest first, without us.
    pub peers: Vec<Did>,
    /// Whether we are nearer than the last of `peers` (or there are fewer
    /// than asked for): we would be among them.
    pub ours: bool,
}

/// The outcome of a Kademlia lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Whether some peer knew the DID's address.
    pub found: bool,
    /// Kademlia requests the lookup sent.
    pub requests: u32,
    /// How long it took.
    pub duration: Duration,
}

/// A connected peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its DID.
    pub did: Did,
    /// Its libp2p peer id (of its current key), as text.
    pub peer_id: String,
    /// Its address on our link, as text: a direct one if any link is
    /// direct.
    pub addr: String,
    /// When the first current link came up.
    pub since: Instant,
    /// Last measured round trip.
    pub rtt: Option<Duration>,
    /// Links up to it now (more than one while one replaces another, or
    /// beside a reachability probe's dial-back).
    pub links: u32,
    /// How many of them go through a relay.
    pub relayed_links: u32,
}

impl PeerInfo {
    /// Whether every link to the peer goes through a relay.
    pub fn relayed(&self) -> bool {
        self.links > 0 && self.relayed_links >= self.links
    }
}

/// A peer in our Kademlia routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its libp2p peer id, as text.
    pub peer_id: String,
    /// Its DID, if the ledger knows whose key the peer id names.
    pub did: Option<Did>,
    /// The addresses we know it by, as text.
    pub addrs: Vec<String>,
}

/// What the handle asks of the actor; each carries its reply channel.
enum Command {
    /// Find a DID through Kademlia and link to it.
    Connect { did: Did, reply: oneshot::Sender<Result<(), OverlayError>> },
    /// Link to whoever answers at an address.
    Dial { addr: Multiaddr, reply: oneshot::Sender<Result<Did, OverlayError>> },
    /// Ask the network who is closest to a DID's key, without linking.
    Lookup { did: Did, reply: oneshot::Sender<Result<Lookup, OverlayError>> },
    /// List connected peers.
    Peers { reply: oneshot::Sender<Vec<PeerInfo>> },
    /// Close the links to a DID.
    Disconnect { did: Did, reply: oneshot::Sender<Result<(), OverlayError>> },
    /// Close every link with the shutdown code and stop.
    Shutdown { reply: oneshot::Sender<()> },
    /// List the routing table.
    Routes { reply: oneshot::Sender<Vec<Route>> },
    /// The `count` devices closest to a DID's key: a walk, and our table.
    Closest { did: Did, count: usize, reply: oneshot::Sender<Closest> },
    /// The same from our routing table alone, at once.
    ClosestLocal { did: Did, count: usize, reply: oneshot::Sender<Closest> },
}

/// Handle to a running overlay.
#[derive(Clone)]
pub struct Overlay {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<OverlayEvent>,
    listen_addr: Multiaddr,
    peer_id: PeerId,
    connect_timeout: Duration,
    streams: streams::StreamControl,
    reachability: reachability::Reachability,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay").field("peer_id", &self.peer_id).field("listen_addr", &self.listen_addr).finish()
    }
}

impl Overlay {
    /// Starts listening and joins through the bootstrap peers. Returns once
    /// the listening address is known, with a receiver that sees every event
    /// from the start (later ones come from [`events`](Self::events)). The
    /// actor runs until every handle is dropped.
    pub async fn start(
        ctx: Arc<LinkContext>,
        config: OverlayConfig,
    ) -> Result<(Self, broadcast::Receiver<OverlayEvent>), OverlayError> {
        let keypair = ctx.identity().libp2p_keypair();
        let peer_id = keypair.public().to_peer_id();
        let listen_error = |reason: String| OverlayError::Listen { addr: config.listen, reason };
        let (relay_transport, relay_client) = libp2p::relay::client::new(peer_id);
        let (direct_ctx, circuit_ctx) = (Arc::clone(&ctx), Arc::clone(&ctx));
        let reachability = reachability::Reachability::default();
        let port_guessing =
            config.hole_punching.then(|| port_guess::PortGuessing::new(Arc::clone(&ctx), reachability.clone()));
        let guessing = port_guessing.clone();
        let links = move |_: &libp2p::identity::Keypair| {
            let mut direct = transport::CarrierTransport::new(direct_ctx);
            if let Some(guessing) = guessing {
                direct = direct.with_port_guessing(guessing);
            }
            let direct = direct.map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
            let relayed = relay_transport.and_then(move |circuit, endpoint| {
                circuits::upgrade(Arc::clone(&circuit_ctx), peer_id, circuit, endpoint)
            });
            direct.or_transport(relayed).map(|either, _| either.into_inner())
        };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(links)
            .map_err(|e| listen_error(e.to_string()))?
            .with_behaviour(|key| behaviour(Arc::clone(&ctx), key, &config, relay_client))
            .map_err(|e| listen_error(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        swarm.listen_on(transport::to_multiaddr(config.listen)).map_err(|e| listen_error(e.to_string()))?;
        let listen_addr = loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => break address,
                SwarmEvent::ListenerError { error, .. } => return Err(listen_error(error.to_string())),
                _ => {}
            }
        };
        let streams = swarm.behaviour().stream.control();
        let peer_cache = config.peer_cache.clone().map(peer_cache::PeerCache::load);
        let bootstrap = config.bootstrap.clone();
        let cached = peer_cache.iter().flat_map(|c| c.addrs()).filter(|a| !config.bootstrap.contains(a)).collect();
        let (commands, rx) = mpsc::channel(64);
        let (events, first_events) = broadcast::channel(1024);
        let tasks = ctx.tasks().clone();
        if let Some(guessing) = &port_guessing {
            tasks.spawn(Arc::clone(guessing).serve(streams.clone()));
        }
        let actor = Actor {
            ctx,
            swarm,
            commands: rx,
            events: events.clone(),
            peers: HashMap::new(),
            waiting: HashMap::new(),
            dialing: HashMap::new(),
            probes: HashMap::new(),
            walks: HashMap::new(),
            bootstrap,
            cached,
            redial: backoff::Backoff::new(config.bootstrap_retry),
            peer_cache,
            lookups: HashMap::new(),
            reachability: reachability.clone(),
            closing: Vec::new(),
            relayed: relayed::RelayedLinks::default(),
            reservations: reservations::Reservations::new(config.reservations),
            port_guessing,
        };
        tasks.spawn(actor.run(config.bootstrap_retry));
        let overlay = Self {
            commands,
            events,
            listen_addr,
            peer_id,
            connect_timeout: config.connect_timeout,
            streams,
            reachability,
        };
        Ok((overlay, first_events))
    }

    /// The address peers can dial us on.
    pub fn listen_addr(&self) -> &Multiaddr {
        &self.listen_addr
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Opens and accepts streams of the daemon's own protocols (messages,
    /// app streams) over the links.
    pub fn stream_control(&self) -> streams::StreamControl {
        self.streams.clone()
    }

    /// What AutoNAT probes found about our addresses.
    pub fn reachability(&self) -> &reachability::Reachability {
        &self.reachability
    }

    /// Every event from now on.
    pub fn events(&self) -> broadcast::Receiver<OverlayEvent> {
        self.events.subscribe()
    }

    /// Finds `did` through Kademlia (no central directory) and links to it.
    pub async fn connect(&self, did: Did) -> Result<(), OverlayError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Connect { did, reply }).await.map_err(|_| OverlayError::Stopped)?;
        match tokio::time::timeout(self.connect_timeout, answer).await {
            Ok(answer) => answer.map_err(|_| OverlayError::Stopped)?,
            Err(_) => Err(OverlayError::Timeout(did)),
        }
    }

    /// Links to whoever answers at `addr`, and says who that is.
    pub async fn dial(&self, addr: Multiaddr) -> Result<Did, OverlayError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Dial { addr: addr.clone(), reply };
        self.commands.send(command).await.map_err(|_| OverlayError::Stopped)?;
        match tokio::time::timeout(self.connect_timeout, answer).await {
            Ok(answer) => answer.map_err(|_| OverlayError::Stopped)?,
            Err(_) => Err(OverlayError::DialTimeout(addr)),
        }
    }

    /// The `count` devices closest to `did`'s key (by Kademlia's XOR
    /// distance), found by a walk (`FIND_NODE`) and our routing table,
    /// nearest first; never `did` itself, nor us (but [`Closest::ours`]
    /// says whether we would be among them). Where mailboxes for `did` are
    /// kept.
    /// A walk that takes longer than [`CLOSEST_WALK`] (one of the peers it
    /// asks is offline, say) gives way to our routing table alone.
    pub async fn closest(&self, did: Did, count: usize) -> Result<Closest, OverlayError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Closest { did, count, reply }).await.map_err(|_| OverlayError::Stopped)?;
        if let Ok(answer) = tokio::time::timeout(CLOSEST_WALK, answer).await {
            return answer.map_err(|_| OverlayError::Stopped);
        }
        self.closest_local(did, count).await
    }

    /// [`closest`](Self::closest) from our routing table alone, at once.
    pub async fn closest_local(&self, did: Did, count: usize) -> Result<Closest, OverlayError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::ClosestLocal { did, count, reply }).await.map_err(|_| OverlayError::Stopped)?;
        answer.await.map_err(|_| OverlayError::Stopped)
    }

    /// Asks the network who is closest to `did`'s key (a Kademlia
    /// `FIND_NODE` walk), without linking to it.
    pub async fn lookup(&self, did: Did) -> Result<Lookup, OverlayError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Lookup { did, reply }).await.map_err(|_| OverlayError::Stopped)?;
        match tokio::time::timeout(self.connect_timeout, answer).await {
            Ok(answer) => answer.map_err(|_| OverlayError::Stopped)?,
            Err(_) => Err(OverlayError::Timeout(did)),
        }
    }

    /// Closes the links to `did` (an orderly close; it may link again).
    pub async fn disconnect(&self, did: Did) -> Result<(), OverlayError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Disconnect { did, reply }).await.map_err(|_| OverlayError::Stopped)?;
        answer.await.map_err(|_| OverlayError::Stopped)?
    }

    /// Closes every link with the shutdown code, waits (up to `grace`)
    /// until the peers have been told, and stops the overlay.
    pub async fn shutdown(&self, grace: Duration) {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = tokio::time::timeout(grace, answer).await;
        }
    }

    /// Peers with a live link.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, OverlayError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Peers { reply }).await.map_err(|_| OverlayError::Stopped)?;
        answer.await.map_err(|_| OverlayError::Stopped)
    }

    /// The routing table: every peer in our k-buckets, with its addresses.
    pub async fn routes(&self) -> Result<Vec<Route>, OverlayError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Routes { reply }).await.map_err(|_| OverlayError::Stopped)?;
        answer.await.map_err(|_| OverlayError::Stopped)
    }
}

mod actor;
use actor::Actor;
use behaviour::{Behaviour, BehaviourEvent, behaviour};
