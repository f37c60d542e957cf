//! Whether this device's addresses can be reached from outside, as AutoNAT
//! (v2) probes found: another device dials the address back from a port
//! of its own, so a NAT that only lets answers to our own traffic in shows
//! as unreachable.
//!
//! ```text
//!  identify: "you came from A" ─▶ candidate A ─▶ autonat client asks a linked device
//!        ◀─ dial-back to A (new connection, new port) ─▶ A reachable / unreachable
//! ```
//!
//! The overlay's actor records each probe's outcome here, the circuit
//! addresses relays hold for us, and where peers see our listening port
//! (identify's observed address), which tells how our NAT maps it
//! (`carrier_proto::nat`); the control socket reads all three for
//! `carrierctl status`, and port guessing reads the mapping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use carrier_proto::identity::Did;
use carrier_proto::nat::{Mapping, MappingObserver};
use libp2p::{Multiaddr, PeerId};

/// The last outcome of the probes of one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// Whether the dial-back reached it.
    pub reachable: bool,
    /// The device that dialed back (if the ledger knows its key).
    pub by: Option<Did>,
    /// Why not, when unreachable.
    pub detail: String,
    /// How long ago.
    pub age: Duration,
}

/// What the probes say about the device as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// No probe has finished yet.
    Unknown,
    /// At least one address was reached from outside.
    Public,
    /// Every probed address was unreachable: behind NAT or a firewall.
    Private,
}

impl Nat {
    /// Its name, as `carrierctl status` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Public => "public",
            Self::Private => "private",
        }
    }
}

#[derive(Debug, Clone)]
struct Outcome {
    reachable: bool,
    by: Option<Did>,
    detail: String,
    at: Instant,
}

/// The probes' outcomes by address, and our circuit addresses; cheap to
/// clone, shared.
#[derive(Debug, Clone, Default)]
pub struct Reachability {
    probes: Arc<Mutex<BTreeMap<Multiaddr, Outcome>>>,
    relayed: Arc<Mutex<BTreeSet<Multiaddr>>>,
    observed: Arc<Mutex<MappingObserver<PeerId>>>,
}

impl Reachability {
    /// Records a probe of `addr`.
    pub(crate) fn record(&self, addr: Multiaddr, reachable: bool, by: Option<Did>, detail: String) {
        let outcome = Outcome { reachable, by, detail, at: Instant::now() };
        self.probes.lock().unwrap_or_else(PoisonError::into_inner).insert(addr, outcome);
    }

    /// Records that a relay holds (or no longer holds) `addr` for us.
    pub(crate) fn set_relayed(&self, addr: Multiaddr, held: bool) {
        let mut relayed = self.relayed.lock().unwrap_or_else(PoisonError::into_inner);
        if held {
            relayed.insert(addr);
        } else {
            relayed.remove(&addr);
        }
    }

    /// The circuit addresses relays hold for us now.
    pub fn relayed(&self) -> Vec<Multiaddr> {
        self.relayed.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// Every probed address, with its last outcome.
    pub fn probed(&self) -> Vec<(Multiaddr, Probed)> {
        let outcomes = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
        let probed =
            |o: &Outcome| Probed { reachable: o.reachable, by: o.by, detail: o.detail.clone(), age: o.at.elapsed() };
        outcomes.iter().map(|(addr, o)| (addr.clone(), probed(o))).collect()
    }

    /// `peer` sees our listening port at `addr`.
    pub(crate) fn observe(&self, peer: PeerId, addr: std::net::SocketAddr) {
        self.observed().observe(peer, addr, Instant::now());
    }

    /// `peer` is gone: what it saw no longer counts.
    pub(crate) fn forget(&self, peer: &PeerId) {
        self.observed().forget(peer);
    }

    /// How our NAT maps our listening port, by what peers saw lately.
    pub fn mapping(&self) -> Mapping {
        self.observed().mapping(Instant::now())
    }

    /// Our IPv4 (`v4`) or IPv6 mapped address, once two peers agree on it.
    pub fn agreed_in(&self, v4: bool) -> Option<std::net::SocketAddr> {
        self.observed().agreed_in(v4, Instant::now())
    }

    /// The same for our IPv4 (`v4`) or IPv6 address alone.
    pub fn mapping_in(&self, v4: bool) -> Mapping {
        self.observed().mapping_in(v4, Instant::now())
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, MappingObserver<PeerId>> {
        self.observed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The device as a whole.
    pub fn nat(&self) -> Nat {
        let outcomes = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
        if outcomes.values().any(|o| o.reachable) {
            Nat::Public
        } else if outcomes.is_empty() {
            Nat::Unknown
        } else {
            Nat::Private
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reachable_address_makes_the_device_public_and_the_last_probe_counts() {
        let reachability = Reachability::default();
        assert_eq!(reachability.nat(), Nat::Unknown);
        let (a, b): (Multiaddr, Multiaddr) = (
            "/ip4/192.0.2.1/udp/1/quic-v1/noise".parse().unwrap(),
            "/ip4/10.0.0.1/udp/1/quic-v1/noise".parse().unwrap(),
        );
        reachability.record(b.clone(), false, None, "dial-back failed".into());
        assert_eq!(reachability.nat(), Nat::Private);
        reachability.record(a.clone(), true, None, String::new());
        assert_eq!(reachability.nat(), Nat::Public);
        reachability.record(a.clone(), false, None, "timed out".into());
        assert_eq!(reachability.nat(), Nat::Private);
        let probed = reachability.probed();
        assert_eq!(probed.len(), 2);
        assert!(probed.iter().all(|(_, p)| !p.reachable));
    }
}
