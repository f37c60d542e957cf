//! Which addresses a peer may make this node dial, probe or store.
//!
//! Registered peers tell us where others are (identify, Kademlia, hole
//! punching, port guessing). An address on a network we are not on is no
//! use to us, and one on *our own* private network may point us at hosts
//! the peer could not reach itself: so a peer's address is taken only if
//! it is routable and, when it is loopback, link-local or private, we are
//! on such a network ourselves. Multicast, broadcast, unspecified and
//! reserved addresses are never taken. Sans-IO: the caller says which
//! addresses the node has.
//!
//! ```text
//!  peer's address ─▶ canonical (IPv4 in IPv6 as IPv4) ─▶ scope
//!      unroutable ─▶ refused
//!      loopback / link-local ─▶ only if we are bound to one
//!      private (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) ─▶ only if we have one in the same block
//!      global ─▶ taken
//! ```

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Where an address can lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Nowhere one host can be dialed: unspecified, 0/8, 240/4 and
    /// broadcast, multicast.
    Unroutable,
    /// This very host.
    Loopback,
    /// One link (169.254/16, fe80::/10).
    LinkLocal,
    /// A private network, in one of these blocks.
    Private(PrivateBlock),
    /// Anywhere (documentation ranges included: tests and labs use them).
    Global,
}

/// The private address blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateBlock {
    /// 10.0.0.0/8.
    Ten,
    /// 172.16.0.0/12.
    OneSevenTwo,
    /// 192.168.0.0/16.
    OneNineTwo,
    /// 100.64.0.0/10 (carrier-grade NAT).
    SharedSpace,
    /// fc00::/7 (unique local).
    UniqueLocal,
}

/// Why a peer's address was not taken.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddrRefusal {
    /// No single host can be reached there.
    #[error("{0} is not a routable host address")]
    Unroutable(IpAddr),
    /// A loopback, link-local or private address on a network this node
    /// is not on.
    #[error("{0} is on a network this node is not on")]
    NotOurNetwork(IpAddr),
    /// Port 0.
    #[error("port 0 is no address")]
    NoPort,
}

/// The scope of `ip` (IPv4 written as IPv6 counts as the IPv4 address).
pub fn scope(ip: IpAddr) -> Scope {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            match () {
                _ if v4.is_unspecified() || v4.is_multicast() || a == 0 || a >= 240 => Scope::Unroutable,
                _ if v4.is_loopback() => Scope::Loopback,
                _ if v4.is_link_local() => Scope::LinkLocal,
                _ if a == 10 => Scope::Private(PrivateBlock::Ten),
                _ if a == 172 && (16..32).contains(&b) => Scope::Private(PrivateBlock::OneSevenTwo),
                _ if a == 192 && b == 168 => Scope::Private(PrivateBlock::OneNineTwo),
                _ if a == 100 && (64..128).contains(&b) => Scope::Private(PrivateBlock::SharedSpace),
                _ => Scope::Global,
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            match () {
                _ if v6.is_unspecified() || v6.is_multicast() => Scope::Unroutable,
                _ if v6.is_loopback() => Scope::Loopback,
                _ if v6.is_unicast_link_local() => Scope::LinkLocal,
                _ if first & 0xfe00 == 0xfc00 => Scope::Private(PrivateBlock::UniqueLocal),
                _ => Scope::Global,
            }
        }
    }
}

/// The networks this node is on, which decide which of a peer's addresses
/// can be meant for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalNets {
    loopback: bool,
    link_local: bool,
    private: Vec<PrivateBlock>,
}

impl LocalNets {
    /// A node listening on `bound` (its own address, as bound) whose
    /// interfaces carry `interfaces`. Loopback and link-local count only
    /// when the node is bound to such an address; a private block counts
    /// when the node is bound to it or, bound to the wildcard, has an
    /// interface in it.
    pub fn new(bound: IpAddr, interfaces: &[IpAddr]) -> Self {
        let mut nets = Self::default();
        let own: Vec<IpAddr> = if bound.is_unspecified() { interfaces.to_vec() } else { vec![bound] };
        match scope(bound) {
            Scope::Loopback => nets.loopback = true,
            Scope::LinkLocal => nets.link_local = true,
            _ => {}
        }
        for ip in own {
            if let Scope::Private(block) = scope(ip)
                && !nets.private.contains(&block)
            {
                nets.private.push(block);
            }
        }
        nets
    }

    /// Whether a peer's `addr` may be dialed, probed or stored.
    pub fn admit(&self, addr: SocketAddr) -> Result<SocketAddr, AddrRefusal> {
        let ip = addr.ip().to_canonical();
        if addr.port() == 0 {
            return Err(AddrRefusal::NoPort);
        }
        let ours = match scope(ip) {
            Scope::Unroutable => return Err(AddrRefusal::Unroutable(ip)),
            Scope::Global => true,
            Scope::Loopback => self.loopback,
            Scope::LinkLocal => self.link_local,
            Scope::Private(block) => self.private.contains(&block),
        };
        if ours { Ok(SocketAddr::new(ip, addr.port())) } else { Err(AddrRefusal::NotOurNetwork(ip)) }
    }
}

/// What one party's limits are counted by: an IPv4 address, or the /64 an
/// IPv6 address is in (one host can hold a whole /64).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 7640)
    }

    #[test]
    fn scopes_of_every_kind() {
        let cases = [
            ("0.0.0.0", Scope::Unroutable),
            ("0.1.2.3", Scope::Unroutable),
            ("224.0.0.1", Scope::Unroutable),
            ("255.255.255.255", Scope::Unroutable),
            ("240.0.0.1", Scope::Unroutable),
            ("ff02::1", Scope::Unroutable),
            ("::", Scope::Unroutable),
            ("127.0.0.1", Scope::Loopback),
            ("::1", Scope::Loopback),
            ("::ffff:127.0.0.1", Scope::Loopback),
            ("169.254.1.1", Scope::LinkLocal),
            ("fe80::1", Scope::LinkLocal),
            ("10.1.2.3", Scope::Private(PrivateBlock::Ten)),
            ("::ffff:10.1.2.3", Scope::Private(PrivateBlock::Ten)),
            ("172.20.0.1", Scope::Private(PrivateBlock::OneSevenTwo)),
            ("172.32.0.1", Scope::Global),
            ("192.168.1.1", Scope::Private(PrivateBlock::OneNineTwo)),
            ("100.64.0.1", Scope::Private(PrivateBlock::SharedSpace)),
            ("fd00::1", Scope::Private(PrivateBlock::UniqueLocal)),
            ("198.51.100.7", Scope::Global),
            ("2001:db8::1", Scope::Global),
            ("8.8.8.8", Scope::Global),
        ];
        for (ip, expected) in cases {
            assert_eq!(scope(ip.parse().unwrap()), expected, "{ip}");
        }
    }

    /// A node on loopback only (as in tests) takes loopback peers but no
    /// private or link-local address a peer offers.
    #[test]
    fn a_loopback_node_refuses_private_and_link_local_offers() {
        let nets = LocalNets::new("127.0.0.1".parse().unwrap(), &[]);
        assert!(nets.admit(at("127.0.0.2")).is_ok());
        for refused in ["10.0.0.7", "192.168.1.1", "fe80::1", "169.254.0.1", "fd00::1", "::ffff:10.0.0.1"] {
            assert!(matches!(nets.admit(at(refused)), Err(AddrRefusal::NotOurNetwork(_))), "{refused}");
        }
        for never in ["224.0.0.1", "0.0.0.0", "255.255.255.255", "ff02::1"] {
            assert!(matches!(nets.admit(at(never)), Err(AddrRefusal::Unroutable(_))), "{never}");
        }
        assert!(nets.admit(at("198.51.100.2")).is_ok());
        assert_eq!(nets.admit(SocketAddr::new("8.8.8.8".parse().unwrap(), 0)), Err(AddrRefusal::NoPort));
    }

    /// A node behind a home router takes addresses of its own private
    /// block; a public node takes none of them; having a link-local
    /// interface is not being bound to one.
    #[test]
    fn private_blocks_count_only_when_the_node_is_in_them() {
        let home = LocalNets::new(
            "0.0.0.0".parse().unwrap(),
            &["192.168.1.20".parse().unwrap(), "fe80::5".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        );
        assert!(home.admit(at("192.168.1.30")).is_ok());
        assert!(home.admit(at("10.0.0.1")).is_err());
        assert!(home.admit(at("fe80::9")).is_err());
        assert!(home.admit(at("127.0.0.1")).is_err(), "an lo interface is not a loopback-bound node");
        let public = LocalNets::new("198.51.100.2".parse().unwrap(), &[]);
        assert!(public.admit(at("10.0.1.2")).is_err());
        assert!(public.admit(at("198.51.100.11")).is_ok());
        let lab = LocalNets::new("10.0.2.2".parse().unwrap(), &[]);
        assert!(lab.admit(at("10.0.3.2")).is_ok());
    }

    #[test]
    fn limits_count_ipv6_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_key(a), limit_key(b));
        assert_ne!(limit_key(a), limit_key(c));
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(limit_key(v4), v4);
        assert_eq!(limit_key("::ffff:10.0.0.1".parse().unwrap()), v4);
    }
}
