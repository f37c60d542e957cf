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
//! vouches for, so it sprays at most one peer at a time and each peer at
//! most once per [`SPRAY_INTERVAL`] ([`SprayBudget`]), and never to
//! loopback, multicast or other addresses no NAT maps ([`check_target`]).
//! The guessing side's sockets take only probes with the exchange's nonce;
//! the link that follows passes the Carrier handshake like any other.

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
/// How often one peer may have us spray: as often as a guessing side
/// retries after a miss (about 3 in 10,000), no more.
pub const SPRAY_INTERVAL: Duration = Duration::from_secs(10);
/// Length of an exchange's nonce.
pub const NONCE_LEN: usize = 16;
/// What a probe starts with. The zero byte makes a QUIC endpoint that
/// receives one drop it without an answer (QUIC sets that byte's fixed bit).
const PROBE_TAG: &[u8] = b"\0carrier port guess";
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
/// reported, for the last [`MAX_OBSERVERS`] of them.
#[derive(Debug, Clone)]
pub struct MappingObserver<K> {
    /// Oldest first.
    seen: Vec<(K, SocketAddr)>,
}

impl<K> Default for MappingObserver<K> {
    fn default() -> Self {
        Self { seen: Vec::new() }
    }
}

impl<K: PartialEq> MappingObserver<K> {
    /// `observer` sees our listening port at `addr`.
    pub fn observe(&mut self, observer: K, addr: SocketAddr) {
        self.seen.retain(|(k, _)| *k != observer);
        if self.seen.len() == MAX_OBSERVERS {
            self.seen.remove(0);
        }
        self.seen.push((observer, addr));
    }

    /// Forgets what `observer` saw (its link is gone).
    pub fn forget(&mut self, observer: &K) {
        self.seen.retain(|(k, _)| k != observer);
    }

    /// What the observations say.
    pub fn mapping(&self) -> Mapping {
        for (i, (_, a)) in self.seen.iter().enumerate() {
            if let Some((_, b)) = self.seen[i + 1..].iter().find(|(_, b)| b.ip() == a.ip() && b.port() != a.port()) {
                return Mapping::Dependent(b.ip());
            }
        }
        // The address most observers agree on; the latest of a tie.
        let count = |addr: &SocketAddr| self.seen.iter().filter(|(_, a)| a == addr).count();
        let mut best: Option<(usize, SocketAddr)> = None;
        for (_, addr) in &self.seen {
            let n = count(addr);
            if best.is_none_or(|(most, _)| n >= most) {
                best = Some((n, *addr));
            }
        }
        best.map_or(Mapping::Unknown, |(_, addr)| Mapping::Independent(addr))
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
    check_target(addr.ip())?;
    Ok(addr)
}

/// Refuses addresses no NAT maps: loopback, unspecified, multicast,
/// broadcast and link-local. Probes to them would reach local services or
/// whole segments, not a peer's NAT.
pub fn check_target(ip: IpAddr) -> Result<(), GuessError> {
    let unroutable = ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || match ip {
            IpAddr::V4(v4) => v4.is_broadcast() || v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
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
}

/// Who may have us spray, and when: one spray at a time, and one per peer
/// per [`SPRAY_INTERVAL`].
#[derive(Debug)]
pub struct SprayBudget<K> {
    running: bool,
    last: HashMap<K, Instant>,
}

impl<K> Default for SprayBudget<K> {
    fn default() -> Self {
        Self { running: false, last: HashMap::new() }
    }
}

impl<K: Eq + Hash> SprayBudget<K> {
    /// Starts a spray for `peer` at `now`, if the budget allows one; call
    /// [`finish`](Self::finish) when it ends.
    pub fn start(&mut self, peer: K, now: Instant) -> Result<(), SprayRefusal> {
        if self.running {
            return Err(SprayRefusal::Busy);
        }
        self.last.retain(|_, at| now.saturating_duration_since(*at) < SPRAY_INTERVAL);
        if let Some(at) = self.last.get(&peer) {
            let ago = now.saturating_duration_since(*at);
            return Err(SprayRefusal::TooSoon(ago, SPRAY_INTERVAL - ago));
        }
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
