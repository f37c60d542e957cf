//! The relay service of a `relay`-role device: circuit relay v2, for
//! devices on the ledger only, within limits.
//!
//! Every reservation and every circuit passes two gates: libp2p's own
//! counts (reservations, circuits, per peer) and a check that the peer's key
//! is the current key of an active device. The peer is already admitted (a
//! reservation or circuit request comes over a link, and links are made only
//! after a ledger handshake), so the check here catches a device revoked
//! since its link came up, before the gate's cut reaches it. The other end
//! of a circuit needs a reservation, so it passed the same check.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, relay};

use crate::ledger::Ledger;
use crate::observe::Counters;

/// What a relay grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once, over all devices.
    pub max_reservations: usize,
    /// Reservations one device may hold (one per link to us).
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts before the device renews it.
    pub reservation_duration: Duration,
    /// Circuits open at once, over all devices.
    pub max_circuits: usize,
    /// Circuits one device may have open to or through us.
    pub max_circuits_per_peer: usize,
    /// How long one circuit may stay up.
    pub max_circuit_duration: Duration,
    /// How many bytes one circuit may carry, each way.
    pub max_circuit_bytes: u64,
    /// Circuits one device may open per minute.
    pub circuits_per_peer_per_minute: u32,
}

impl Default for RelayLimits {
    /// libp2p's defaults (2 minutes, 128 KiB a circuit) suit a relay that
    /// only helps to punch a hole. Ours also carries the links of devices
    /// that cannot punch (behind symmetric NATs), so circuits live longer
    /// and carry more; the counts keep one device from taking the relay.
    fn default() -> Self {
        Self {
            max_reservations: 256,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 128,
            max_circuits_per_peer: 16,
            max_circuit_duration: Duration::from_secs(30 * 60),
            max_circuit_bytes: 1 << 30,
            circuits_per_peer_per_minute: 30,
        }
    }
}

/// A grant check: whether `peer`'s key is the current key of an active
/// device; refusals are logged and counted as `relay_refused_<what>_not_active`.
fn ledger_gate(
    what: &'static str,
    ledger: Arc<dyn Ledger>,
    counters: Arc<Counters>,
) -> impl FnMut(PeerId, &Multiaddr, Instant) -> bool + Send + 'static {
    move |peer, _addr, _now| {
        let active = super::is_active_device(&*ledger, &peer);
        if !active {
            tracing::warn!(%peer, "refused a relay {what}: not an active device on the ledger");
            counters.count(format!("relay_refused_{what}_not_active"));
        }
        active
    }
}

/// The relay behaviour, with every grant checked against `ledger`.
pub fn server(
    peer_id: PeerId,
    limits: &RelayLimits,
    ledger: Arc<dyn Ledger>,
    counters: Arc<Counters>,
) -> relay::Behaviour {
    let per_minute = NonZeroU32::new(limits.circuits_per_peer_per_minute).unwrap_or(NonZeroU32::MIN);
    let config = relay::Config {
        max_reservations: limits.max_reservations,
        max_reservations_per_peer: limits.max_reservations_per_peer,
        reservation_duration: limits.reservation_duration,
        reservation_rate_limiters: vec![Box::new(ledger_gate(
            "reservation",
            Arc::clone(&ledger),
            Arc::clone(&counters),
        ))],
        max_circuits: limits.max_circuits,
        max_circuits_per_peer: limits.max_circuits_per_peer,
        max_circuit_duration: limits.max_circuit_duration,
        max_circuit_bytes: limits.max_circuit_bytes,
        circuit_src_rate_limiters: vec![Box::new(ledger_gate("circuit", ledger, counters))],
    }
    .circuit_src_per_peer(per_minute, Duration::from_secs(60));
    relay::Behaviour::new(peer_id, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::EmbeddedLedger;
    use carrier_proto::identity::{Identity, IdentityKind};
    use carrier_proto::ledger::Op;
    use carrier_proto::testing::TestNetwork;

    #[test]
    fn the_gate_grants_only_active_devices() {
        let mut net = TestNetwork::new("relay");
        let (device, revoked) = (net.register_device(), net.register_device());
        // An app's key, registered under the device: not a device.
        let app = Identity::generate(IdentityKind::App);
        let consent = carrier_proto::ledger::Consent::sign(&app, &device.did(), &net.ledger.network().unwrap().id);
        let op = Op::RegisterApp {
            did: app.did(),
            keys: app.public_keys(),
            device: device.did(),
            name: "app".into(),
            consent,
        };
        net.append(op, &device);
        net.revoke(revoked.did());
        let ledger: Arc<dyn Ledger> = Arc::new(EmbeddedLedger::in_memory(net.ledger.clone()));
        let counters = Arc::new(Counters::default());
        let mut gate = ledger_gate("reservation", ledger, Arc::clone(&counters));
        let peer = |i: &Identity| i.public_keys().signing.peer_id();
        let stranger = Identity::generate(IdentityKind::Device);
        let addr: Multiaddr = "/ip4/192.0.2.1/udp/1/quic-v1/noise".parse().unwrap();
        let now = Instant::now();
        assert!(gate(peer(&device), &addr, now));
        for (who, identity) in [("revoked", &revoked), ("app", &app), ("stranger", &stranger)] {
            assert!(!gate(peer(identity), &addr, now), "{who} was granted");
        }
        assert_eq!(counters.snapshot().get("relay_refused_reservation_not_active"), Some(&3));
    }
}
