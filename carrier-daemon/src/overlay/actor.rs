//! The overlay actor: owns the swarm, answers commands, turns swarm events
//! into routing-table updates and [`OverlayEvent`]s.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Instant;

use carrier_proto::identity::{Did, SigningPublicKey};
use futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, ping};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Behaviour, BehaviourEvent, Command, OverlayError, OverlayEvent, PeerInfo, gate, transport};
use crate::link::LinkContext;

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
    /// Kademlia lookups started by `connect`, and the peer each looks for.
    pub(super) lookups: HashMap<kad::QueryId, PeerId>,
}

impl Actor {
    pub(super) async fn run(mut self) {
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
        tracing::debug!("overlay stopped: no handles left");
    }

    fn did_of(&self, peer: &PeerId) -> Option<Did> {
        let key = SigningPublicKey::from_peer_id(peer)?;
        self.ctx.ledger.read(|ledger| ledger.did_of_key(&key))
    }

    fn emit(&self, event: OverlayEvent) {
        let _ = self.events.send(event);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Connect { did, reply } => self.connect(did, reply),
            Command::Dial { addr, reply } => {
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dialing.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(OverlayError::DialFailed {
                            addr,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peers.values().cloned().collect());
            }
            Command::Routes { reply } => {
                let routes = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .flat_map(|bucket| {
                        bucket
                            .iter()
                            .map(|entry| (*entry.node.key.preimage(), entry.node.value.iter().cloned().collect()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let _ = reply.send(routes);
            }
        }
    }

    fn connect(&mut self, did: Did, reply: oneshot::Sender<Result<(), OverlayError>>) {
        let peer = self.ctx.ledger.read(|ledger| {
            ledger
                .resolve(&did)
                .filter(|r| r.is_active())
                .map(|r| r.record.keys.signing.peer_id())
        });
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
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if self.swarm.dial(opts).is_err() {
            let query = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
            self.lookups.insert(query, peer);
        }
    }

    fn answer(&mut self, peer: &PeerId, result: impl Fn() -> Result<(), OverlayError>) {
        for reply in self.waiting.remove(peer).unwrap_or_default() {
            let _ = reply.send(result());
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        tracing::trace!(?event, "swarm event");
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let Some(did) = self.did_of(&peer_id) else { return };
                if let Some((_, reply)) = self.dialing.remove(&connection_id) {
                    let _ = reply.send(Ok(did));
                }
                if let Entry::Vacant(slot) = self.peers.entry(peer_id) {
                    let addr = endpoint.get_remote_address().clone();
                    slot.insert(PeerInfo {
                        did,
                        peer: peer_id,
                        addr,
                        since: Instant::now(),
                        rtt: None,
                    });
                    tracing::info!(peer = %did, "peer up");
                    self.emit(OverlayEvent::PeerUp(did));
                }
                self.answer(&peer_id, || Ok(()));
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(info) = self.peers.remove(&peer_id) {
                    tracing::info!(peer = %info.did, "peer down");
                    self.emit(OverlayEvent::PeerDown(info.did));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id, error, ..
            } if self.dialing.contains_key(&connection_id) => {
                if let Some((addr, reply)) = self.dialing.remove(&connection_id) {
                    let _ = reply.send(Err(OverlayError::DialFailed {
                        addr,
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                if self.lookups.values().any(|p| *p == peer) || self.peers.contains_key(&peer) {
                    return;
                }
                let Some(did) = self.did_of(&peer) else { return };
                let reason = error.to_string();
                self.answer(&peer, || {
                    Err(OverlayError::Unreachable {
                        did,
                        reason: reason.clone(),
                    })
                });
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                // Only admitted peers have connections, so only they get
                // here; a report that arrives after a revocation is dropped.
                let Some(did) = self.did_of(&peer_id) else { return };
                if !self
                    .ctx
                    .ledger
                    .read(|ledger| ledger.resolve(&did).is_some_and(|r| r.is_active()))
                {
                    return;
                }
                let addrs: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(|a| transport::parse_addr(a).is_some())
                    .collect();
                let kad = &mut self.swarm.behaviour_mut().kad;
                let mut added = false;
                for addr in addrs {
                    added |= matches!(kad.add_address(&peer_id, addr), kad::RoutingUpdate::Success);
                }
                if added {
                    self.emit(OverlayEvent::Routable(did));
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, step, .. }) => {
                let Some(target) = self.lookups.get(&id).copied() else {
                    return;
                };
                if let kad::QueryResult::GetClosestPeers(Ok(ok)) = &result
                    && let Some(found) = ok.peers.iter().find(|p| p.peer_id == target)
                {
                    self.lookups.remove(&id);
                    let opts = DialOpts::peer_id(target).addresses(found.addrs.clone()).build();
                    if let Err(e) = self.swarm.dial(opts) {
                        let Some(did) = self.did_of(&target) else { return };
                        let reason = e.to_string();
                        self.answer(&target, || {
                            Err(OverlayError::Unreachable {
                                did,
                                reason: reason.clone(),
                            })
                        });
                    }
                    return;
                }
                if step.last {
                    self.lookups.remove(&id);
                    if let Some(did) = self.did_of(&target) {
                        self.answer(&target, || Err(OverlayError::NotFound(did)));
                    }
                }
            }
            BehaviourEvent::Gate(gate::GateEvent::Revoked { did, peer }) => {
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
                tracing::warn!(peer = %did, "revoked: links closed, routes removed");
                self.emit(OverlayEvent::Revoked(did));
            }
            BehaviourEvent::Ping(ping::Event {
                peer, result: Ok(rtt), ..
            }) => {
                if let Some(info) = self.peers.get_mut(&peer) {
                    info.rtt = Some(rtt);
                }
            }
            _ => {}
        }
    }
}
