//! Admission limits for inbound connections: how many handshakes may be in
//! flight at once, overall and per source address.
//!
//! Strangers can reach the Noise step, so each one costs us a few Diffie-
//! Hellman operations. These limits are applied at quinn's `Incoming`,
//! before the QUIC handshake is accepted, so a flood from a few addresses
//! cannot starve registered peers of handshake slots.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Tunable limits.
#[derive(Debug, Clone)]
pub struct LinkLimits {
    /// How long a handshake may take, from QUIC accept to admission.
    pub handshake_timeout: Duration,
    /// Handshakes in flight at once.
    pub max_handshakes: usize,
    /// Handshakes in flight at once from one IP address.
    pub max_handshakes_per_ip: usize,
    /// Above this many handshakes in flight, new strangers must first prove
    /// their address with a QUIC retry.
    pub retry_above: usize,
}

impl Default for LinkLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 256,
            max_handshakes_per_ip: 16,
            retry_above: 64,
        }
    }
}

/// What to do with an incoming connection attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Go ahead; the slot is held until the permit drops.
    Admit(Permit),
    /// Ask the client to prove its address first (QUIC retry).
    Retry,
    /// Refuse outright.
    Refuse,
}

/// Counts handshakes in flight.
#[derive(Debug, Default)]
pub(crate) struct HandshakeSlots {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl HandshakeSlots {
    /// Decides on a connection attempt from `ip`; `validated` says whether
    /// QUIC has already proven the address.
    pub(crate) fn gate(self: &Arc<Self>, limits: &LinkLimits, ip: IpAddr, validated: bool) -> Gate {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= limits.max_handshakes || from_ip >= limits.max_handshakes_per_ip {
            return Gate::Refuse;
        }
        if counts.total >= limits.retry_above && !validated {
            return Gate::Retry;
        }
        counts.total += 1;
        *counts.per_ip.entry(ip).or_insert(0) += 1;
        Gate::Admit(Permit { slots: Arc::clone(self), ip })
    }

    /// Handshakes in flight now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).total
    }
}

/// A held handshake slot; released on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    slots: Arc<HandshakeSlots>,
    ip: IpAddr,
}

impl PartialEq for Permit {
    fn eq(&self, other: &Self) -> bool {
        self.ip == other.ip && Arc::ptr_eq(&self.slots, &other.slots)
    }
}

impl Eq for Permit {}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LinkLimits {
        LinkLimits { max_handshakes: 4, max_handshakes_per_ip: 2, retry_above: 3, ..LinkLimits::default() }
    }

    #[test]
    fn limits_each_address_and_the_total() {
        let slots = Arc::new(HandshakeSlots::default());
        let (a, b, c) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let a1 = slots.gate(&limits(), a, false);
        let a2 = slots.gate(&limits(), a, false);
        assert!(matches!((&a1, &a2), (Gate::Admit(_), Gate::Admit(_))));
        assert_eq!(slots.gate(&limits(), a, true), Gate::Refuse, "per-address limit");
        let b1 = slots.gate(&limits(), b, false);
        assert!(matches!(b1, Gate::Admit(_)));
        assert_eq!(slots.gate(&limits(), c, false), Gate::Retry, "busy: strangers must validate");
        let c1 = slots.gate(&limits(), c, true);
        assert!(matches!(c1, Gate::Admit(_)));
        assert_eq!(slots.gate(&limits(), c, true), Gate::Refuse, "total limit");
        drop((a1, a2, b1, c1));
        assert_eq!(slots.in_flight(), 0);
        assert!(matches!(slots.gate(&limits(), a, false), Gate::Admit(_)));
    }
}
