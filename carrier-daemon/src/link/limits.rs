//! Admission limits for inbound connections: how many handshakes may be in
//! flight at once, overall and per source address.
//!
//! Strangers can reach the Noise step, so each one costs us a few Diffie-
//! Hellman operations. These limits are applied at quinn's `Incoming`,
//! before the QUIC handshake is accepted. When the slots are full, the
//! oldest handshake whose peer has not sent its first Noise message yet is
//! evicted to make room, and failing that the oldest one older than
//! `evict_after` (a handshake takes a round trip or two; one that has
//! spoken and then stalls gives way too): silent or stalled strangers only
//! push each other out. Each address also starts at most a few handshakes
//! a second (a token bucket, burst of `max_handshakes_per_ip`), so
//! strangers that reconnect as fast as they are evicted cannot make us run
//! QUIC handshakes flat out; over the rate they are refused before QUIC,
//! which costs one packet. "An address" is an IPv4 address or an IPv6 /64
//! (one host can hold a whole /64).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Addresses whose rate is remembered before idle ones are forgotten.
const RATE_MEMORY: usize = 4096;

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
    /// New handshakes one IP address may start per second, on average
    /// (bursts up to `max_handshakes_per_ip`).
    pub handshakes_per_ip_per_s: u32,
    /// A handshake in flight this long gives way to a newcomer when the
    /// slots are full, even if its peer has spoken.
    pub evict_after: Duration,
}

impl Default for LinkLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 256,
            max_handshakes_per_ip: 16,
            retry_above: 64,
            handshakes_per_ip_per_s: 8,
            evict_after: Duration::from_secs(2),
        }
    }
}

/// What to do with an incoming connection attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Go ahead; the slot is held until the permit drops (or is evicted).
    /// `evicted` says how many silent handshakes made room for it.
    Admit(Permit, usize),
    /// Ask the client to prove its address first (QUIC retry).
    Retry,
    /// Refuse outright: every slot is held by a peer that has spoken.
    Refuse,
    /// Refuse outright: this address starts handshakes too fast.
    TooFast,
}

/// The handshakes in flight, oldest first.
#[derive(Debug, Default)]
pub(crate) struct HandshakeSlots {
    state: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    /// By age: a lower id came earlier.
    entries: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
    next_id: u64,
    /// Each address's handshake tokens, and when they were last counted.
    rate: HashMap<IpAddr, (f64, Instant)>,
}

#[derive(Debug)]
struct Entry {
    /// The address's limit key (an IPv4 address, an IPv6 /64).
    ip: IpAddr,
    /// The peer's first Noise message has arrived.
    spoke: bool,
    since: Instant,
    evict: CancellationToken,
}

impl Slots {
    /// Takes one of `ip`'s tokens at `now`, if it has one.
    fn take_token(&mut self, limits: &LinkLimits, ip: IpAddr, now: Instant) -> bool {
        let burst = limits.max_handshakes_per_ip as f64;
        let per_s = f64::from(limits.handshakes_per_ip_per_s.max(1));
        if self.rate.len() >= RATE_MEMORY && !self.rate.contains_key(&ip) {
            // Forget addresses quiet long enough to be full again anyway.
            let refill = Duration::from_secs_f64(burst / per_s);
            self.rate.retain(|_, (_, last)| now.saturating_duration_since(*last) < refill);
        }
        let (tokens, last) = self.rate.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * per_s).min(burst);
        *last = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    fn held_by(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&entry.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&entry.ip);
            }
        }
        Some(entry)
    }

    /// Evicts the oldest silent handshake that `which` picks, or failing
    /// that the oldest one in flight longer than `limits.evict_after`.
    fn evict_oldest(&mut self, limits: &LinkLimits, now: Instant, which: impl Fn(&Entry) -> bool) -> bool {
        let silent = self.entries.iter().find(|(_, e)| !e.spoke && which(e));
        let stalled = || {
            self.entries.iter().find(|(_, e)| which(e) && now.saturating_duration_since(e.since) >= limits.evict_after)
        };
        let Some(id) = silent.or_else(stalled).map(|(id, _)| *id) else {
            return false;
        };
        if let Some(entry) = self.remove(id) {
            entry.evict.cancel();
        }
        true
    }
}

impl HandshakeSlots {
    /// Decides on a connection attempt from `ip` at `now`; `validated`
    /// says whether QUIC has already proven the address.
    pub(crate) fn gate(self: &Arc<Self>, limits: &LinkLimits, ip: IpAddr, validated: bool, now: Instant) -> Gate {
        let ip = carrier_proto::addr::limit_key(ip);
        let mut slots = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.entries.len() >= limits.retry_above && !validated {
            return Gate::Retry;
        }
        if !slots.take_token(limits, ip, now) {
            return Gate::TooFast;
        }
        let mut evicted = 0;
        if slots.held_by(ip) >= limits.max_handshakes_per_ip {
            if !slots.evict_oldest(limits, now, |e| e.ip == ip) {
                return Gate::Refuse;
            }
            evicted += 1;
        }
        if slots.entries.len() >= limits.max_handshakes {
            if !slots.evict_oldest(limits, now, |_| true) {
                return Gate::Refuse;
            }
            evicted += 1;
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let evict = CancellationToken::new();
        slots.entries.insert(id, Entry { ip, spoke: false, since: now, evict: evict.clone() });
        *slots.per_ip.entry(ip).or_insert(0) += 1;
        Gate::Admit(Permit { slots: Arc::clone(self), id, evict }, evicted)
    }

    /// Handshakes in flight now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).entries.len()
    }
}

/// A held handshake slot; released on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    slots: Arc<HandshakeSlots>,
    id: u64,
    evict: CancellationToken,
}

impl Permit {
    /// The peer's first Noise message is in: from now on its slot is not
    /// taken away for another.
    pub(crate) fn spoke(&self) {
        let mut slots = self.slots.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = slots.entries.get_mut(&self.id) {
            entry.spoke = true;
        }
    }

    /// Resolves if the slot is taken away for a newer attempt.
    pub(crate) async fn evicted(&self) {
        self.evict.cancelled().await
    }
}

impl PartialEq for Permit {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && Arc::ptr_eq(&self.slots, &other.slots)
    }
}

impl Eq for Permit {}

impl Drop for Permit {
    fn drop(&mut self) {
        self.slots.state.lock().unwrap_or_else(PoisonError::into_inner).remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small limits; a handshake that spoke keeps its slot for the whole
    /// test (see `a_stalled_handshake_gives_way_after_a_while` for age).
    fn limits() -> LinkLimits {
        LinkLimits {
            max_handshakes: 4,
            max_handshakes_per_ip: 2,
            retry_above: 3,
            evict_after: Duration::from_secs(3600),
            ..LinkLimits::default()
        }
    }

    /// A clock for tests whose attempts come far enough apart for the rate limit.
    fn now() -> Instant {
        thread_local!(static CLOCK: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) });
        CLOCK.with(|clock| {
            let next = clock.get().map_or_else(Instant::now, |t| t + Duration::from_secs(1));
            clock.set(Some(next));
            next
        })
    }

    #[test]
    fn each_address_starts_only_so_many_handshakes_a_second() {
        let slots = Arc::new(HandshakeSlots::default());
        let limits = LinkLimits { handshakes_per_ip_per_s: 4, max_handshakes_per_ip: 8, ..LinkLimits::default() };
        let (ip, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        // A burst of 8, each attempt ending at once, then refused.
        for _ in 0..8 {
            let (permit, _) = admitted(slots.gate(&limits, ip, true, start));
            drop(permit);
        }
        assert_eq!(slots.gate(&limits, ip, true, start), Gate::TooFast);
        // Another address is not held back.
        assert!(matches!(slots.gate(&limits, other, true, start), Gate::Admit(..)));
        // A quarter second later: one more (4 a second).
        let later = start + Duration::from_millis(250);
        assert!(matches!(slots.gate(&limits, ip, true, later), Gate::Admit(..)));
        assert_eq!(slots.gate(&limits, ip, true, later), Gate::TooFast);
    }

    fn admitted(gate: Gate) -> (Permit, usize) {
        match gate {
            Gate::Admit(permit, evicted) => (permit, evicted),
            other => panic!("expected a slot, got {other:?}"),
        }
    }

    #[test]
    fn limits_each_address_and_the_total_when_everyone_has_spoken() {
        let slots = Arc::new(HandshakeSlots::default());
        let (a, b, c) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let (a1, _) = admitted(slots.gate(&limits(), a, false, now()));
        let (a2, _) = admitted(slots.gate(&limits(), a, false, now()));
        a1.spoke();
        a2.spoke();
        assert_eq!(slots.gate(&limits(), a, true, now()), Gate::Refuse, "per-address limit");
        let (b1, _) = admitted(slots.gate(&limits(), b, false, now()));
        b1.spoke();
        assert_eq!(slots.gate(&limits(), c, false, now()), Gate::Retry, "busy: strangers must validate");
        let (c1, _) = admitted(slots.gate(&limits(), c, true, now()));
        c1.spoke();
        assert_eq!(slots.gate(&limits(), c, true, now()), Gate::Refuse, "total limit");
        drop((a1, a2, b1, c1));
        assert_eq!(slots.in_flight(), 0);
        assert!(matches!(slots.gate(&limits(), a, false, now()), Gate::Admit(..)));
    }

    #[tokio::test]
    async fn a_newcomer_evicts_the_oldest_silent_handshake_never_one_that_spoke() {
        let slots = Arc::new(HandshakeSlots::default());
        let ips: Vec<IpAddr> = (1..=4).map(|i| format!("10.0.0.{i}").parse().unwrap()).collect();
        let mut held: Vec<Permit> = ips.iter().map(|ip| admitted(slots.gate(&limits(), *ip, true, now())).0).collect();
        held[0].spoke();
        // Full: a newcomer takes the slot of the oldest silent one (the second).
        let (newcomer, evicted) = admitted(slots.gate(&limits(), "10.0.0.9".parse().unwrap(), true, now()));
        assert_eq!((evicted, slots.in_flight()), (1, 4));
        tokio::time::timeout(Duration::from_secs(1), held[1].evicted()).await.expect("the oldest silent one stays");
        newcomer.spoke();
        // Per address too: a third from one address evicts that address's
        // oldest silent handshake, and only that.
        let roomy = LinkLimits { max_handshakes: 100, ..limits() };
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let (first, _) = admitted(slots.gate(&roomy, ip, true, now()));
        let (second, _) = admitted(slots.gate(&roomy, ip, true, now()));
        second.spoke();
        let (third, evicted) = admitted(slots.gate(&roomy, ip, true, now()));
        third.spoke();
        assert_eq!(evicted, 1);
        tokio::time::timeout(Duration::from_secs(1), first.evicted()).await.expect("not evicted");
        assert_eq!(slots.gate(&roomy, ip, true, now()), Gate::Refuse, "both from there have spoken");
        drop(held.remove(0));
        assert_eq!(slots.in_flight(), 5);
    }

    /// One host holds a whole IPv6 /64: its addresses share one address's
    /// limits, while the next /64 has its own.
    #[test]
    fn an_ipv6_64_counts_as_one_address() {
        let slots = Arc::new(HandshakeSlots::default());
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let (a1, _) = admitted(slots.gate(&limits(), ip("2001:db8:1:2::1"), true, now()));
        let (a2, _) = admitted(slots.gate(&limits(), ip("2001:db8:1:2:ffff::9"), true, now()));
        a1.spoke();
        a2.spoke();
        assert_eq!(slots.gate(&limits(), ip("2001:db8:1:2:abcd::77"), true, now()), Gate::Refuse, "same /64");
        assert!(matches!(slots.gate(&limits(), ip("2001:db8:1:3::1"), true, now()), Gate::Admit(..)));
    }

    /// A handshake whose peer spoke and then stalled does not keep its
    /// slot past `evict_after` when a newcomer needs it.
    #[test]
    fn a_stalled_handshake_gives_way_after_a_while() {
        let slots = Arc::new(HandshakeSlots::default());
        let limits = LinkLimits { evict_after: Duration::from_secs(2), ..limits() };
        let start = Instant::now();
        let ips: Vec<IpAddr> = (1..=4).map(|i| format!("10.0.1.{i}").parse().unwrap()).collect();
        let held: Vec<Permit> = ips.iter().map(|ip| admitted(slots.gate(&limits, *ip, true, start)).0).collect();
        for permit in &held {
            permit.spoke();
        }
        let newcomer: IpAddr = "10.0.1.9".parse().unwrap();
        assert_eq!(slots.gate(&limits, newcomer, true, start + Duration::from_secs(1)), Gate::Refuse, "all young");
        let (_, evicted) = admitted(slots.gate(&limits, newcomer, true, start + Duration::from_secs(2)));
        assert_eq!(evicted, 1);
        assert!(held[0].evict.is_cancelled(), "the oldest stalled one gave way");
    }
}
