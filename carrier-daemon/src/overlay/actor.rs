//! The overlay actor: owns the swarm, answers commands, turns swarm events
//! into routing-table updates and [`OverlayEvent`]s.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carrier_proto::identity::Did;
use futures::StreamExt;
use libp2p::core::transport::PortUse;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, ping};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::peer_cache::PeerCache;
use super::{Behaviour, BehaviourEvent, Command, OverlayError, OverlayEvent, PeerInfo, Route, circuits, gate};
use crate::ledger::Policy;
use crate::link::LinkContext;

/// A lookup for one peer needs only the closest result: the peer itself.
/// Asking for more (Kademlia's default is k = 20) makes every lookup walk
/// to twenty peers even after the target has answered.
const ONE: NonZeroUsize = NonZeroUsize::MIN;
/// Most addresses kept for one peer (routing table and peer cache).
pub(super) const MAX_ADDRS_PER_PEER: usize = 8;

pub(super) struct Actor {
    pub(super) ctx: Arc<LinkContext>,
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) events: broadcast::Sender<OverlayEvent>,
    /// Peers with at least one live link.
    pub(super) peers: HashMap<PeerId, PeerInfo>,
    /// `connect` calls waiting for a link to a peer.
    pub(super) waiting: HashMap<PeerId, Vec<oneshot::Sender<Result<(), OverlayError>>>>,
    /// `dial` calls waiting on one connection attempt each.
    pub(super) dialing: HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<Did, OverlayError>>)>,
    /// Lookups asked for by `lookup`, with when they started.
    pub(super) probes: HashMap<kad::QueryId, super::lookups::Probe>,
    /// Walks asked for by `closest`: the DID, how many, who waits.
    pub(super) walks: HashMap<kad::QueryId, super::lookups::Walk>,
    /// Where to join the network.
    pub(super) bootstrap: Vec<Multiaddr>,
    /// Addresses peers told us in earlier runs (the peer cache), dialled
    /// along with the bootstrap peers but with backoff.
    pub(super) cached: Vec<Multiaddr>,
    /// When each cached address may be dialled again.
    pub(super) redial: super::backoff::Backoff,
    /// The routing table's peers, kept on disk between runs.
    pub(super) peer_cache: Option<PeerCache>,
    /// Kademlia lookups started by `connect`: the peer each looks for, and
    /// whether it is the full (k-result) walk tried after a quick one.
    pub(super) lookups: HashMap<kad::QueryId, (PeerId, bool)>,
    /// What AutoNAT probes found about our addresses.
    pub(super) reachability: super::reachability::Reachability,
    /// Links to close, each with when: reachability dial-backs, once the
    /// probe has had its time. (Replaced relayed links: `relayed.rs`.)
    pub(super) closing: Vec<(Instant, ConnectionId)>,
    /// Relayed links, until a direct one replaces them.
    pub(super) relayed: super::relayed::RelayedLinks,
    /// Relay reservations held or asked for.
    pub(super) reservations: super::reservations::Reservations,
    /// Port guessing, unless hole punching is switched off.
    pub(super) port_guessing: Option<Arc<super::port_guess::PortGuessing>>,
}

/// An error and its causes, `: `-separated: libp2p's dial errors say only
/// "Dial error" when a behaviour denied the dial, and name it in the cause.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let next_text = next.to_string();
        if !text.contains(&next_text) {
            text = format!("{text}: {next_text}");
        }
        cause = next.source();
    }
    text
}

/// How long a dial-back link stays up for its probe.
const DIAL_BACK_GRACE: Duration = Duration::from_secs(5);
/// How often the actor closes links whose time is up and tops up relay
/// reservations.
const SWEEP: Duration = Duration::from_secs(1);

impl Actor {
    /// Runs until every handle is dropped. Dials the bootstrap peers at
    /// once, and again every `retry` while no peer is linked.
    pub(super) async fn run(mut self, retry: Duration) {
        let mut bootstrap = tokio::time::interval(retry);
        let mut sweep = tokio::time::interval(SWEEP);
        let mut guesses = tokio::time::interval(super::port_guess::GUESS_TICK);
        loop {
            tokio::select! {
                _ = bootstrap.tick() => if self.peers.is_empty() {
                    self.dial_bootstrap();
                },
                _ = sweep.tick() => {
                    self.close_due();
                    self.close_replaced();
                    self.keep_reservations();
                }
                _ = guesses.tick() => self.start_port_guesses(),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.shut_down().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
        tracing::debug!("overlay stopped: no handles left");
    }

    /// Closes `connection` once `grace` has passed and the streams of our
    /// protocols on it have ended; new streams go to other links at once.
    pub(super) fn close_later(&mut self, connection: ConnectionId, grace: Duration) {
        self.swarm.behaviour().stream.control().set_retired(connection, true);
        self.closing.push((Instant::now() + grace, connection));
    }

    /// Closes the links whose time is up and that carry no more streams.
    fn close_due(&mut self) {
        let now = Instant::now();
        let streams = self.swarm.behaviour().stream.control();
        let (done, later) =
            self.closing.drain(..).partition(|(at, connection)| *at <= now && streams.open_streams(*connection) == 0);
        self.closing = later;
        for (_, connection) in done {
            self.swarm.close_connection(connection);
        }
    }

    /// Shutdown, in order: close every link with the shutdown code, refuse
    /// new ones (closing the endpoint), wait until the closes are sent.
    async fn shut_down(&mut self) {
        let closed = self.ctx.close_all(carrier_proto::handshake::Refusal::Shutdown);
        tracing::info!(links = closed, "overlay shutting down");
        if let Some(endpoint) = self.ctx.endpoint() {
            endpoint.close(carrier_proto::handshake::Refusal::Shutdown.code().into(), b"");
            endpoint.wait_idle().await;
        }
    }

    fn dial_bootstrap(&mut self) {
        let now = Instant::now();
        let due: Vec<Multiaddr> = self.cached.iter().filter(|a| self.redial.attempt(a, now)).cloned().collect();
        // The operator's bootstrap addresses are dialed whatever they are.
        for socket in self.bootstrap.iter().filter_map(circuits::dialed_socket) {
            self.ctx.trust_addr(socket);
        }
        for addr in self.bootstrap.iter().chain(&due) {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
    }

    /// Whether a peer's `addr` is a Carrier address (direct, or through a
    /// relay) on a network we are on: one we may dial, store and pass on.
    fn admissible(&self, addr: &Multiaddr) -> bool {
        circuits::dialed_socket(addr).is_some_and(|socket| self.ctx.admit_addr(socket).is_ok())
    }

    pub(super) fn did_of(&self, peer: &PeerId) -> Option<Did> {
        super::did_of(&*self.ctx.ledger, peer)
    }

    fn emit(&self, event: OverlayEvent) {
        let _ = self.events.send(event);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Connect { did, reply } => self.connect(did, reply),
            Command::Dial { addr, reply } => {
                // An operator's address (`carrierctl connect --addr`).
                if let Some(socket) = circuits::dialed_socket(&addr) {
                    self.ctx.trust_addr(socket);
                }
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dialing.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(OverlayError::DialFailed { addr, reason: with_causes(&e) }));
                    }
                }
            }
            Command::Lookup { did, reply } => match self.active_peer(&did) {
                Some(peer) => {
                    let query = self.swarm.behaviour_mut().kad.get_n_closest_peers(peer, ONE);
                    self.probes.insert(query, super::lookups::Probe { target: peer, started: Instant::now(), reply });
                }
                None => {
                    let _ = reply.send(Err(OverlayError::NotActive(did)));
                }
            },
            Command::Disconnect { did, reply } => {
                let peer = self.peers.iter().find(|(_, p)| p.did == did).map(|(peer, _)| *peer);
                let result = match peer {
                    Some(peer) => self.swarm.disconnect_peer_id(peer).map_err(|()| OverlayError::NotLinked(did)),
                    None => Err(OverlayError::NotLinked(did)),
                };
                let _ = reply.send(result);
            }
            Command::Closest { did, count, reply } => match self.active_peer(&did) {
                // A walk, not just our table: the devices nearest a key are
                // often ones we have no link to.
                Some(target) => {
                    let query = self.swarm.behaviour_mut().kad.get_closest_peers(target);
                    self.walks.insert(query, super::lookups::Walk { did, count, found: Vec::new(), reply });
                }
                None => {
                    let _ = reply.send(super::Closest::default());
                }
            },
            Command::ClosestLocal { did, count, reply } => {
                let _ = reply.send(self.closest(&did, count, Vec::new()));
            }
            Command::Shutdown { reply } => {
                // Handled in `run`, which owns the loop.
                let _ = reply.send(());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peers.values().cloned().collect());
            }
            Command::Routes { reply } => {
                let ledger = std::sync::Arc::clone(&self.ctx.ledger);
                let routes = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .flat_map(|bucket| {
                        bucket
                            .iter()
                            .map(|entry| {
                                let peer = entry.node.key.preimage();
                                Route {
                                    peer_id: peer.to_string(),
                                    did: super::did_of(&*ledger, peer),
                                    addrs: entry.node.value.iter().map(ToString::to_string).collect(),
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let _ = reply.send(routes);
            }
        }
    }

    /// The peer id of `did` if it is active on the ledger.
    fn active_peer(&self, did: &Did) -> Option<PeerId> {
        self.ctx.ledger.linkable(did).map(|key| key.peer_id())
    }

    /// The `count` devices nearest `did`'s key among `found` and our routing
    /// table, without `did` or us, and whether we would be among them.
    pub(super) fn closest(&mut self, did: &Did, count: usize, mut found: Vec<PeerId>) -> super::Closest {
        let Some(target) = self.active_peer(did) else { return super::Closest::default() };
        let key = kad::KBucketKey::from(target);
        found.extend(self.swarm.behaviour_mut().kad.get_closest_local_peers(&key).map(|k| *k.preimage()));
        let local = *self.swarm.local_peer_id();
        let ledger = Arc::clone(&self.ctx.ledger);
        let mut closest: Vec<(kad::KBucketDistance, Did)> = found
            .into_iter()
            .filter(|peer| *peer != local && *peer != target)
            .filter_map(|peer| Some((kad::KBucketKey::from(peer).distance(&key), super::did_of(&*ledger, &peer)?)))
            .collect();
        closest.sort();
        closest.dedup();
        closest.truncate(count);
        let ours = kad::KBucketKey::from(local).distance(&key);
        let ours = closest.len() < count || closest.last().is_some_and(|(far, _)| ours < *far);
        super::Closest { peers: closest.into_iter().map(|(_, did)| did).collect(), ours }
    }

    pub(super) fn connect(&mut self, did: Did, reply: oneshot::Sender<Result<(), OverlayError>>) {
        let peer = self.active_peer(&did);
        let Some(peer) = peer else {
            let _ = reply.send(Err(OverlayError::NotActive(did)));
            return;
        };
        if self.peers.contains_key(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        self.waiting.entry(peer).or_default().push(reply);
        // Addresses from the routing table, if we have them; else ask the
        // network who is closest to the peer's key.
        let opts = DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing).build();
        if self.swarm.dial(opts).is_err() {
            let query = self.swarm.behaviour_mut().kad.get_n_closest_peers(peer, ONE);
            self.lookups.insert(query, (peer, false));
        }
    }

    pub(super) fn answer(&mut self, peer: &PeerId, result: impl Fn() -> Result<(), OverlayError>) {
        for reply in self.waiting.remove(peer).unwrap_or_default() {
            let _ = reply.send(result());
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        tracing::trace!(?event, "swarm event");
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, num_established, .. } => {
                let Some(did) = self.did_of(&peer_id) else { return };
                // A reachability dial-back: it goes after its probe, and it
                // replaces no relayed link.
                let dial_back = matches!(endpoint, libp2p::core::ConnectedPoint::Dialer { port_use: PortUse::New, .. });
                if dial_back {
                    self.close_later(connection_id, DIAL_BACK_GRACE);
                }
                if let Some((_, reply)) = self.dialing.remove(&connection_id) {
                    let _ = reply.send(Ok(did));
                }
                // A circuit accepted from a relay shows the relay's address.
                let relayed = endpoint.is_relayed();
                let mut addr = match &endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. } if relayed => local_addr.clone(),
                    other => other.get_remote_address().clone(),
                };
                if let Some(libp2p::multiaddr::Protocol::P2p(_)) = addr.iter().last() {
                    addr.pop();
                }
                if !dial_back {
                    self.on_link_up(peer_id, connection_id, relayed);
                }
                if let Entry::Vacant(slot) = self.peers.entry(peer_id) {
                    slot.insert(PeerInfo {
                        did,
                        peer_id: peer_id.to_string(),
                        addr: addr.to_string(),
                        since: Instant::now(),
                        rtt: None,
                        links: 0,
                        relayed_links: 0,
                    });
                    tracing::info!(peer = %did, "peer up");
                    self.redial.reset();
                    self.emit(OverlayEvent::PeerUp(did));
                }
                if let Some(info) = self.peers.get_mut(&peer_id) {
                    info.links = num_established.get();
                    info.relayed_links += u32::from(relayed);
                    if !relayed {
                        info.addr = addr.to_string();
                    }
                }
                self.answer(&peer_id, || Ok(()));
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established: 0, cause, .. } => {
                self.on_link_down(peer_id, connection_id);
                self.reachability.forget(&peer_id);
                if let Some(info) = self.peers.remove(&peer_id) {
                    let cause = cause.map(|c| c.to_string()).unwrap_or_else(|| "closed".into());
                    tracing::info!(peer = %info.did, %cause, "peer down");
                    self.emit(OverlayEvent::PeerDown(info.did));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, endpoint, .. } => {
                self.on_link_down(peer_id, connection_id);
                if let Some(info) = self.peers.get_mut(&peer_id) {
                    info.links = num_established;
                    if endpoint.is_relayed() {
                        info.relayed_links = info.relayed_links.saturating_sub(1);
                    }
                }
                let cause = cause.map(|c| c.to_string()).unwrap_or_else(|| "closed".into());
                tracing::info!(%peer_id, num_established, %cause, "one of the links to a peer closed");
            }
            SwarmEvent::OutgoingConnectionError { connection_id, error, .. }
                if self.dialing.contains_key(&connection_id) =>
            {
                if let Some((addr, reply)) = self.dialing.remove(&connection_id) {
                    let _ = reply.send(Err(OverlayError::DialFailed { addr, reason: with_causes(&error) }));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                if self.lookups.values().any(|(p, _)| *p == peer) || self.peers.contains_key(&peer) {
                    return;
                }
                let Some(did) = self.did_of(&peer) else { return };
                let reason = with_causes(&error);
                self.answer(&peer, || Err(OverlayError::Unreachable { did, reason: reason.clone() }));
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                let reason = reason.err().map(|e| e.to_string()).unwrap_or_else(|| "closed".into());
                self.on_listener_closed(listener_id, &reason);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                self.on_listener_closed(listener_id, &error.to_string())
            }
            SwarmEvent::NewListenAddr { address, .. } if circuits::is_relayed(&address) => {
                tracing::info!(%address, "reachable through a relay at this address");
                self.reachability.set_relayed(address, true);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.reachability.set_relayed(address, false),
            // Identify pushes only listen address changes by itself: a
            // public address just confirmed (or lost) is told to every
            // peer now, not at its next periodic report, so they route
            // to us by it (our private listen address is no use to them).
            SwarmEvent::ExternalAddrConfirmed { .. } | SwarmEvent::ExternalAddrExpired { .. } => {
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                self.swarm.behaviour_mut().identify.push(peers);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, connection_id }) => {
                // Only admitted peers have connections, so only they get
                // here; a report that arrives after a revocation is dropped.
                let Some(did) = self.did_of(&peer_id) else { return };
                if !self.ctx.ledger.is_active(&did) {
                    return;
                }
                // Where the peer sees us: taken only if it is on a network
                // we are on (a peer cannot aim us at another).
                if self.admissible(&info.observed_addr) {
                    self.observed(peer_id, connection_id, &info.observed_addr);
                }
                // The report itself is at most 4 KiB (libp2p-identify's
                // limit); of its addresses we keep a few Carrier ones on
                // networks we are on, and they replace what the peer said
                // before.
                let addrs: Vec<Multiaddr> =
                    info.listen_addrs.into_iter().filter(|a| self.admissible(a)).take(MAX_ADDRS_PER_PEER).collect();
                let kad = &mut self.swarm.behaviour_mut().kad;
                let known = kad.kbucket(peer_id).and_then(|bucket| {
                    bucket.iter().find(|e| *e.node.key.preimage() == peer_id).map(|e| e.node.value.len())
                });
                if known.is_some_and(|n| n + addrs.len() > MAX_ADDRS_PER_PEER) {
                    kad.remove_peer(&peer_id);
                }
                let mut added = false;
                for addr in &addrs {
                    added |= matches!(kad.add_address(&peer_id, addr.clone()), kad::RoutingUpdate::Success);
                }
                if let Some(cache) = &mut self.peer_cache {
                    cache.insert(peer_id, addrs);
                }
                if added {
                    self.emit(OverlayEvent::Routable(did));
                }
            }
            BehaviourEvent::Kad(event) => self.on_kad_event(event),
            BehaviourEvent::Gate(event) => {
                let (gate::GateEvent::Revoked { did, peer } | gate::GateEvent::Rotated { did, peer }) = event;
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
                if let Some(cache) = &mut self.peer_cache {
                    cache.remove(&peer);
                }
                if matches!(event, gate::GateEvent::Revoked { .. }) {
                    tracing::warn!(peer = %did, "revoked: links closed, routes removed");
                    self.emit(OverlayEvent::Revoked(did));
                } else {
                    tracing::warn!(peer = %did, "keys rotated: links with the old keys closed, their routes removed");
                    self.emit(OverlayEvent::Rotated(did));
                }
            }
            BehaviourEvent::AutonatClient(probe) => {
                let by = super::did_of(&*self.ctx.ledger, &probe.server);
                let addr = probe.tested_addr;
                match probe.result {
                    Ok(()) => {
                        tracing::info!(%addr, by = ?by.map(|d| d.to_string()), "address confirmed reachable from outside");
                        self.reachability.record(addr, true, by, String::new());
                    }
                    Err(error) => {
                        tracing::info!(%addr, %error, "address not reachable from outside (behind NAT or a firewall)");
                        self.reachability.record(addr, false, by, error.to_string());
                    }
                }
            }
            BehaviourEvent::AutonatServer(probe) => {
                let outcome = probe.result.as_ref().map_or_else(|e| e.to_string(), |()| "reached".into());
                tracing::debug!(client = %probe.client, addr = %probe.tested_addr, %outcome, "dialed back for a probe");
            }
            BehaviourEvent::RelayClient(event) => self.on_relay_client_event(event),
            BehaviourEvent::Relay(event) => self.on_relay_server_event(event),
            BehaviourEvent::Dcutr(event) => self.on_dcutr_event(event),
            BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. }) => {
                if let Some(info) = self.peers.get_mut(&peer) {
                    info.rtt = Some(rtt);
                }
            }
            _ => {}
        }
    }
}
