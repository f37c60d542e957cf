//! NAT traversal decisions, without sockets: what kind of port mapping our
//! NAT does, judged from the addresses peers see us at, and the rules of
//! port guessing, the way through for a pair that hole punching alone
//! cannot link.
//!
//! Hole punching (DCUtR) needs each side to know the port the other's NAT
//! maps for it. A NAT with endpoint-independent mapping keeps one port for
//! every destination, so what one peer sees is what the next will see. A
//! "symmetric" NAT (endpoint-dependent mapping) picks a new port per
//! destination: its device's peers each see another port, and the port
//! towards a new peer cannot be known in advance. If the other side's NAT
//! lets in only the addresses and ports it has sent to, no punch meets.
//!
//! Port guessing meets by the birthday bound:
//!
//! ```text
//!  guessing side G (new port per destination)   spraying side S (one port for all)
//!  opens GUESS_SOCKETS sockets, each sends a probe to S's mapped address:
//!  G's NAT maps as many random ports towards S (S's NAT drops the probes)
//!                          S sends GUESS_PROBES probes to random ports of G's IP,
//!                          from its listening port: S's NAT now lets them in
//!  a probe that hits one of G's mapped ports reaches that socket;
//!  G connects (QUIC) from that socket to S, through both NATs
//! ```
//!
//! With n mapped ports among R and m probes, all miss with a probability of
//! about exp(-n·m/R): for 256 sockets and 2,048 probes over 64,512 ports,
//! about 3 in 10,000.
//!
//! The spraying side sends datagrams to an address only the other side
//! vouches for (a registered device, but possibly a misbehaving one), so it
//! sprays for one peer at a time, each peer at most once per
//! [`SPRAY_INTERVAL`] and all peers together at most [`SPRAYS_PER_MINUTE`]
//! times a minute ([`SprayBudget`]), and never towards loopback, multicast,
//! broadcast, link-local or reserved addresses ([`check_target`]). The
//! guessing side's sockets take only probes with the exchange's nonce, and
//! the link that follows passes the Carrier handshake like any other.
//!
//! Our NAT's mapping is judged from identify's observed addresses, which
//! peers report; one peer could lie. So a new port per destination takes
//! two ports on one IP with no port seen by two observers, and the address
//! we give a guessing side is the one most observers saw (public ones
//! before private ones), in its IP family, and only once two agree.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::pb;

/// Sockets the guessing side opens, each mapping a port on its NAT.
pub const GUESS_SOCKETS: usize = 256;
/// Probes the spraying side sends, each to another port.
pub const GUESS_PROBES: usize = 2048;
/// The lowest port a NAT maps to; probes go to this one and up.
pub const LOWEST_PORT: u16 = 1024;
/// How often one peer may have us spray: about as often as a guessing
/// side retries after a miss (about 3 in 10,000), no more.
pub const SPRAY_INTERVAL: Duration = Duration::from_secs(10);
/// How many sprays we run a minute, for all peers together.
pub const SPRAYS_PER_MINUTE: usize = 6;
/// How long an observation counts: identify reports again every few
/// minutes on a live link, so an older one is from a mapping that may have
/// changed.
pub const OBSERVATION_TTL: Duration = Duration::from_secs(15 * 60);
/// Length of an exchange's nonce.
pub const NONCE_LEN: usize = 16;
/// What a probe starts with; the nonce follows. A probe is 19 bytes, less
/// than the smallest stateless reset (21 bytes, RFC 9000 §10.3), so a QUIC
/// endpoint it reaches drops it unanswered.
const PROBE_TAG: &[u8] = b"\0cg";
/// The longest datagram that no QUIC endpoint answers with a stateless reset.
pub const MAX_UNANSWERED_DATAGRAM: usize = 21;
/// Most observers a [`MappingObserver`] remembers.
const MAX_OBSERVERS: usize = 16;

/// Why a port-guessing exchange cannot go on.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuessError {
    /// The offer's IP is not 4 or 16 bytes.
    #[error("malformed offer: the IP is {0} bytes (want 4 or 16)")]
    BadIp(usize),
    /// The offer's nonce has the wrong length.
    #[error("malformed offer: the nonce is {0} bytes (want {NONCE_LEN})")]
    BadNonce(usize),
    /// The answer's address does not parse.
    #[error("malformed answer: {0:?} is not an ip:port address")]
    BadAddr(String),
    /// The address is one no NAT maps, so no probe goes there.
    #[error("{0} is not an address to send probes to (loopback, multicast, unspecified or link-local)")]
    Unroutable(IpAddr),
    /// The other side refused.
    #[error("refused: {0}")]
    Refused(String),
}

/// How our NAT maps our listening port, as far as peers' observations tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Nobody has told us where they see us.
    Unknown,
    /// Every peer sees the same port (or just one peer has looked): this
    /// address, the one most peers see.
    Independent(SocketAddr),
    /// Two peers saw this IP with different ports: a new port per
    /// destination.
    Dependent(IpAddr),
}

/// Where peers see our listening port: the latest address each observer
/// reported and when, for the last [`MAX_OBSERVERS`] of them.
#[derive(Debug, Clone)]
pub struct MappingObserver<K> {
    /// Oldest first.
    seen: Vec<(K, SocketAddr, Instant)>,
}

impl<K> Default for MappingObserver<K> {
    fn default() -> Self {
        Self { seen: Vec::new() }
    }
}

impl<K: PartialEq> MappingObserver<K> {
    /// `observer` sees our listening port at `addr`, at `now`.
    pub fn observe(&mut self, observer: K, addr: SocketAddr, now: Instant) {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        self.seen.retain(|(k, _, _)| *k != observer);
        if self.seen.len() == MAX_OBSERVERS {
            self.seen.remove(0);
        }
        self.seen.push((observer, addr, now));
    }

    /// Forgets what `observer` saw (its link is gone).
    pub fn forget(&mut self, observer: &K) {
        self.seen.retain(|(k, _, _)| k != observer);
    }

    /// What the observations of the last [`OBSERVATION_TTL`] say, over
    /// both IP families (IPv4 first, where most NATs are).
    pub fn mapping(&self, now: Instant) -> Mapping {
        match self.mapping_in(true, now) {
            Mapping::Unknown => self.mapping_in(false, now),
            mapping => mapping,
        }
    }

    /// What they say of our IPv4 (`v4`) or IPv6 address.
    pub fn mapping_in(&self, v4: bool, now: Instant) -> Mapping {
        judge(&self.fresh_in(v4, now))
    }

    /// The address of our IPv4 (`v4`) or IPv6 mapping, if two observers or
    /// more see us there: what we tell a guessing side to aim at, so one
    /// lying observer cannot point it elsewhere.
    pub fn agreed_in(&self, v4: bool, now: Instant) -> Option<SocketAddr> {
        let seen = self.fresh_in(v4, now);
        match judge(&seen) {
            Mapping::Independent(addr) if seen.iter().filter(|a| **a == addr).count() >= 2 => Some(addr),
            _ => None,
        }
    }

    /// The addresses of one family seen in the last [`OBSERVATION_TTL`],
    /// oldest first.
    fn fresh_in(&self, v4: bool, now: Instant) -> Vec<SocketAddr> {
        self.seen
            .iter()
            .filter(|(_, addr, at)| addr.is_ipv4() == v4 && now.saturating_duration_since(*at) < OBSERVATION_TTL)
            .map(|(_, addr, _)| *addr)
            .collect()
    }
}

/// What the addresses one family's observers saw (oldest first) say.
fn judge(seen: &[SocketAddr]) -> Mapping {
    let observers = |addr: &SocketAddr| seen.iter().filter(|a| *a == addr).count();
    for addr in seen {
        let same_ip = || seen.iter().filter(move |a| a.ip() == addr.ip());
        let ports_differ = same_ip().any(|a| a.port() != addr.port());
        // One liar adds a port; it cannot take away one that two observers
        // agree on.
        if ports_differ && same_ip().all(|a| observers(a) < 2) {
            return Mapping::Dependent(addr.ip());
        }
    }
    // Most observers first, then public before private, then the latest.
    let rank = |(i, addr): (usize, &SocketAddr)| (observers(addr), !is_private(addr.ip()), i);
    seen.iter().enumerate().max_by_key(|entry| rank(*entry)).map_or(Mapping::Unknown, |(_, a)| Mapping::Independent(*a))
}

/// Addresses behind a NAT rather than in front of one: RFC 1918, shared
/// (RFC 6598) and unique local IPv6.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64),
        IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00,
    }
}

/// What the guessing side offers: where to spray, and the nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The guessing side's public IP.
    pub ip: IpAddr,
    /// What every probe of this exchange carries.
    pub nonce: [u8; NONCE_LEN],
}

impl Offer {
    /// A new offer for `ip`, with a fresh nonce.
    pub fn new(ip: IpAddr, rng: &mut impl RngCore) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        Self { ip, nonce }
    }

    /// Its wire form.
    pub fn to_pb(&self) -> pb::GuessOffer {
        let ip = match self.ip {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        pb::GuessOffer { ip, nonce: self.nonce.to_vec() }
    }

    /// Reads an offer from the wire; its IP must be one to send probes to.
    pub fn from_pb(offer: &pb::GuessOffer) -> Result<Self, GuessError> {
        let ip = match offer.ip.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(offer.ip.as_slice()).map_err(|_| GuessError::BadIp(4))?),
            16 => IpAddr::from(<[u8; 16]>::try_from(offer.ip.as_slice()).map_err(|_| GuessError::BadIp(16))?),
            n => return Err(GuessError::BadIp(n)),
        };
        let ip = ip.to_canonical();
        let nonce = offer.nonce.as_slice().try_into().map_err(|_| GuessError::BadNonce(offer.nonce.len()))?;
        check_target(ip)?;
        Ok(Self { ip, nonce })
    }
}

/// The spraying side's answer: its mapped address, or why not.
pub fn answer(addr: Result<SocketAddr, String>) -> pb::GuessAnswer {
    match addr {
        Ok(addr) => pb::GuessAnswer { addr: addr.to_string(), refused: String::new() },
        Err(refused) => pb::GuessAnswer { addr: String::new(), refused },
    }
}

/// Reads an answer: the address to open mappings towards.
pub fn read_answer(answer: &pb::GuessAnswer) -> Result<SocketAddr, GuessError> {
    if !answer.refused.is_empty() || answer.addr.is_empty() {
        return Err(GuessError::Refused(answer.refused.clone()));
    }
    let addr: SocketAddr = answer.addr.parse().map_err(|_| GuessError::BadAddr(answer.addr.clone()))?;
    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
    check_target(addr.ip())?;
    Ok(addr)
}

/// Refuses addresses no NAT maps and that reach more than one host or this
/// host itself: loopback, unspecified, "this network" (0/8), multicast,
/// broadcast, reserved (240/4), link-local, and IPv4 written as IPv6
/// (checked as the IPv4 address it is). Private addresses pass: NATs and
/// home networks live there.
pub fn check_target(ip: IpAddr) -> Result<(), GuessError> {
    let unroutable = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let first = v4.octets()[0];
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_link_local()
                || first == 0
                || first >= 240
        }
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local(),
    };
    if unroutable { Err(GuessError::Unroutable(ip)) } else { Ok(()) }
}

/// The probe datagram of the exchange with `nonce`.
pub fn probe(nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    [PROBE_TAG, nonce].concat()
}

/// Whether `datagram` is a probe of the exchange with `nonce`.
pub fn is_probe(datagram: &[u8], nonce: &[u8; NONCE_LEN]) -> bool {
    datagram.strip_prefix(PROBE_TAG) == Some(nonce.as_slice())
}

/// `count` distinct random ports from [`LOWEST_PORT`] up, in random order.
pub fn guess_ports(rng: &mut impl RngCore, count: usize) -> Vec<u16> {
    let range = u32::from(u16::MAX - LOWEST_PORT) + 1;
    let count = count.min(range as usize);
    let mut taken = vec![false; range as usize];
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        // The bias of a modulo over 2^32 is far below what matters here.
        let offset = rng.next_u32() % range;
        if !std::mem::replace(&mut taken[offset as usize], true) {
            ports.push(LOWEST_PORT + offset as u16);
        }
    }
    ports
}

/// Why we will not spray for a peer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SprayRefusal {
    /// Another spray is under way.
    #[error("busy with another peer's port guessing; try later")]
    Busy,
    /// This peer had one too recently.
    #[error("port guessing for this peer ran {0:?} ago; try again in {1:?}")]
    TooSoon(Duration, Duration),
    /// We have sprayed as often as we do in a minute.
    #[error("port guessing ran {SPRAYS_PER_MINUTE} times in the last minute; try again in {0:?}")]
    TooMany(Duration),
}

/// Who may have us spray, and when: one spray at a time, one per peer per
/// [`SPRAY_INTERVAL`], [`SPRAYS_PER_MINUTE`] in all.
#[derive(Debug)]
pub struct SprayBudget<K> {
    running: bool,
    last: HashMap<K, Instant>,
    /// When the sprays of the last minute started, oldest first.
    recent: std::collections::VecDeque<Instant>,
}

impl<K> Default for SprayBudget<K> {
    fn default() -> Self {
        Self { running: false, last: HashMap::new(), recent: std::collections::VecDeque::new() }
    }
}

impl<K: Eq + Hash> SprayBudget<K> {
    /// Starts a spray for `peer` at `now`, if the budget allows one; call
    /// [`finish`](Self::finish) when it ends.
    pub fn start(&mut self, peer: K, now: Instant) -> Result<(), SprayRefusal> {
        const MINUTE: Duration = Duration::from_secs(60);
        if self.running {
            return Err(SprayRefusal::Busy);
        }
        self.last.retain(|_, at| now.saturating_duration_since(*at) < SPRAY_INTERVAL);
        if let Some(at) = self.last.get(&peer) {
            let ago = now.saturating_duration_since(*at);
            return Err(SprayRefusal::TooSoon(ago, SPRAY_INTERVAL - ago));
        }
        while self.recent.front().is_some_and(|at| now.saturating_duration_since(*at) >= MINUTE) {
            self.recent.pop_front();
        }
        if let Some(oldest) = self.recent.front().filter(|_| self.recent.len() >= SPRAYS_PER_MINUTE) {
            return Err(SprayRefusal::TooMany(MINUTE - now.saturating_duration_since(*oldest)));
        }
        self.recent.push_back(now);
        self.last.insert(peer, now);
        self.running = true;
        Ok(())
    }

    /// The running spray has ended.
    pub fn finish(&mut self) {
        self.running = false;
    }
}

#[cfg(test)]
#[path = "nat_tests.rs"]
mod tests;
