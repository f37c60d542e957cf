//! Relay reservations: a device that cannot be reached directly keeps a
//! reservation on relays, and its circuit addresses reach the others
//! through identify and Kademlia like any address.
//!
//! Relays are the active devices the ledger gives the `relay` role; each is
//! found by DID through Kademlia and linked like any peer, then asked for a
//! reservation (`listen_on(<relay addr>/p2p/<relay>/p2p-circuit)`). Every
//! sweep tops the reservations up to [`WANTED`]; one that ends (the relay
//! went away, or refused) is replaced on the next.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, relay};
use tokio::sync::oneshot;

use super::actor::Actor;
use super::reachability::Nat;
use crate::ledger::Policy;

/// The ledger role of devices that serve circuits.
pub const RELAY_ROLE: &str = "relay";
/// Relays a device behind NAT keeps a reservation on.
pub const WANTED: usize = 2;
/// How long after asking a relay (or looking it up) we ask it again, when
/// it refused or could not be reached.
const RETRY: Duration = Duration::from_secs(5);

/// When to keep relay reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReservationPolicy {
    /// Once reachability probes say no address of ours is reachable.
    #[default]
    Auto,
    /// Always (a device known to be behind NAT, or to test relaying).
    Always,
    /// Never (a device that must not be reached through a relay).
    Never,
}

impl std::str::FromStr for ReservationPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!("reservations = {other:?}: expected \"auto\", \"always\" or \"never\"")),
        }
    }
}

/// The reservations we hold or asked for.
#[derive(Debug, Default)]
pub(super) struct Reservations {
    pub(super) policy: ReservationPolicy,
    /// Relay → the listener of its circuit address (asked for, or
    /// accepted).
    held: HashMap<PeerId, ListenerId>,
    /// When each relay was last asked or looked up.
    tried: HashMap<PeerId, Instant>,
}

impl Reservations {
    pub(super) fn new(policy: ReservationPolicy) -> Self {
        Self { policy, held: HashMap::new(), tried: HashMap::new() }
    }

    /// Whether `relay` may be tried now (and notes that it is).
    fn try_now(&mut self, relay: PeerId, now: Instant) -> bool {
        if self.tried.get(&relay).is_some_and(|at| now.duration_since(*at) < RETRY) {
            return false;
        }
        self.tried.insert(relay, now);
        true
    }

    fn wanted(&self, nat: Nat) -> bool {
        match self.policy {
            ReservationPolicy::Always => true,
            ReservationPolicy::Auto => nat == Nat::Private,
            ReservationPolicy::Never => false,
        }
    }
}

impl Actor {
    /// Asks more relays for a reservation while we hold fewer than
    /// [`WANTED`] and want them.
    pub(super) fn keep_reservations(&mut self) {
        if !self.reservations.wanted(self.reachability.nat()) || self.reservations.held.len() >= WANTED {
            return;
        }
        let local = *self.swarm.local_peer_id();
        let relays = self.ctx.ledger.devices_with_role(RELAY_ROLE);
        for did in relays {
            if self.reservations.held.len() >= WANTED {
                break;
            }
            let Some(peer) = self.ctx.ledger.linkable(&did).map(|key| key.peer_id()) else { continue };
            if peer == local
                || self.reservations.held.contains_key(&peer)
                || !self.reservations.try_now(peer, Instant::now())
            {
                continue;
            }
            let Some(addr) = self.direct_addr(&peer) else {
                // Not linked yet: find it by DID; the next sweep reserves.
                let (reply, _) = oneshot::channel();
                self.connect(did, reply);
                continue;
            };
            let circuit = addr.with(Protocol::P2p(peer)).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    tracing::info!(relay = %did, addr = %circuit, "asking a relay for a reservation");
                    self.reservations.held.insert(peer, listener);
                }
                Err(error) => tracing::warn!(relay = %did, %error, "cannot ask a relay for a reservation"),
            }
        }
    }

    /// The direct address of our link to `peer`, if we have one.
    fn direct_addr(&self, peer: &PeerId) -> Option<Multiaddr> {
        let addr: Multiaddr = self.peers.get(peer)?.addr.parse().ok()?;
        super::transport::parse_addr(&addr).map(|(socket, _)| super::transport::to_multiaddr(socket))
    }

    /// A relay answered, or a circuit came up.
    pub(super) fn on_relay_client_event(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                let relay = self.did_of(&relay_peer_id).map(|d| d.to_string());
                if !renewal {
                    tracing::info!(?relay, "relay reservation accepted: reachable through the relay");
                }
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                tracing::debug!(%relay_peer_id, "circuit through a relay opened");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                tracing::debug!(%src_peer_id, "circuit through a relay accepted");
            }
        }
    }

    /// A listener ended: if it was a reservation, the next sweep replaces it.
    pub(super) fn on_listener_closed(&mut self, listener: ListenerId, reason: &str) {
        let relay = self.reservations.held.iter().find(|(_, id)| **id == listener).map(|(peer, _)| *peer);
        if let Some(relay) = relay {
            self.reservations.held.remove(&relay);
            tracing::info!(%relay, %reason, "relay reservation ended");
        }
    }
}

impl Actor {
    /// What our relay service granted and refused, counted for
    /// `carrierctl counters`.
    pub(super) fn on_relay_server_event(&mut self, event: relay::Event) {
        let counters = self.ctx.counters();
        match event {
            relay::Event::ReservationReqAccepted { src_peer_id, renewed, .. } => {
                if !renewed {
                    tracing::info!(device = %src_peer_id, "relay: reservation granted");
                }
                counters.count("relay_reservations_granted");
            }
            relay::Event::ReservationReqDenied { src_peer_id, .. } => {
                tracing::info!(device = %src_peer_id, "relay: reservation refused");
                counters.count("relay_reservations_refused");
            }
            relay::Event::CircuitReqAccepted { src_peer_id, dst_peer_id } => {
                tracing::info!(from = %src_peer_id, to = %dst_peer_id, "relay: circuit opened");
                counters.count("relay_circuits_opened");
            }
            relay::Event::CircuitReqDenied { src_peer_id, dst_peer_id, .. } => {
                tracing::info!(from = %src_peer_id, to = %dst_peer_id, "relay: circuit refused");
                counters.count("relay_circuits_refused");
            }
            relay::Event::StatusChanged { status } => {
                tracing::info!(?status, "relay service status (served once an address is confirmed reachable)");
            }
            other => tracing::debug!(event = ?other, "relay service"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_by_name_and_say_when_to_reserve() {
        for (text, policy, private, public) in [
            ("auto", ReservationPolicy::Auto, true, false),
            ("always", ReservationPolicy::Always, true, true),
            ("never", ReservationPolicy::Never, false, false),
        ] {
            let reservations = Reservations::new(text.parse().unwrap());
            assert_eq!(reservations.policy, policy);
            assert_eq!(reservations.wanted(Nat::Private), private, "{text}");
            assert_eq!(reservations.wanted(Nat::Public), public, "{text}");
            assert_eq!(reservations.wanted(Nat::Unknown), policy == ReservationPolicy::Always, "{text}");
        }
        assert!("sometimes".parse::<ReservationPolicy>().unwrap_err().contains("\"auto\""));
    }

    #[test]
    fn a_relay_is_tried_again_only_after_the_retry_delay() {
        let mut reservations = Reservations::new(ReservationPolicy::Always);
        let (relay, other, now) = (PeerId::random(), PeerId::random(), Instant::now());
        assert!(reservations.try_now(relay, now));
        assert!(!reservations.try_now(relay, now + RETRY / 2));
        assert!(reservations.try_now(other, now + RETRY / 2), "each relay has its own delay");
        assert!(reservations.try_now(relay, now + RETRY));
    }
}
