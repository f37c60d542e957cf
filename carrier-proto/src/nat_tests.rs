use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_core::OsRng;

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn one_port_for_every_peer_is_an_independent_mapping() {
    let now = Instant::now();
    let mut seen = MappingObserver::default();
    assert_eq!(seen.mapping(now), Mapping::Unknown);
    seen.observe("bootstrap", addr("198.51.100.7:4001"), now);
    assert_eq!(seen.mapping(now), Mapping::Independent(addr("198.51.100.7:4001")));
    // A peer on our own segment sees our private address; the public
    // address is the one to give.
    seen.observe("neighbour", addr("10.0.0.2:4001"), now);
    assert_eq!(seen.mapping(now), Mapping::Independent(addr("198.51.100.7:4001")));
    seen.observe("relay", addr("198.51.100.7:4001"), now);
    seen.observe("other neighbour", addr("10.0.0.2:4001"), now);
    seen.observe("third neighbour", addr("10.0.0.2:4001"), now);
    assert_eq!(seen.mapping(now), Mapping::Independent(addr("10.0.0.2:4001")), "most observers win first");
}

#[test]
fn two_ports_on_one_ip_are_a_dependent_mapping() {
    let now = Instant::now();
    let mut seen = MappingObserver::default();
    seen.observe("bootstrap", addr("198.51.100.7:40112"), now);
    seen.observe("relay", addr("198.51.100.7:51873"), now);
    assert_eq!(seen.mapping(now), Mapping::Dependent("198.51.100.7".parse().unwrap()));
    // Once the peer that saw the other port is gone, one observation is left.
    seen.forget(&"relay");
    assert_eq!(seen.mapping(now), Mapping::Independent(addr("198.51.100.7:40112")));
}

#[test]
fn one_lying_observer_cannot_turn_an_agreed_port_into_a_dependent_mapping() {
    let now = Instant::now();
    let mut seen = MappingObserver::default();
    seen.observe("bootstrap", addr("198.51.100.7:4001"), now);
    seen.observe("relay", addr("198.51.100.7:4001"), now);
    seen.observe("liar", addr("198.51.100.7:9999"), now);
    assert_eq!(seen.mapping(now), Mapping::Independent(addr("198.51.100.7:4001")));
    assert_eq!(seen.agreed_in(true, now), Some(addr("198.51.100.7:4001")));
}

#[test]
fn a_single_observer_is_not_enough_to_tell_a_guessing_side_where_to_aim() {
    let now = Instant::now();
    let mut seen = MappingObserver::default();
    seen.observe("liar", addr("203.0.113.50:53"), now);
    assert_eq!(seen.mapping(now), Mapping::Independent(addr("203.0.113.50:53")));
    assert_eq!(seen.agreed_in(true, now), None);
    seen.observe("bootstrap", addr("198.51.100.7:4001"), now);
    assert_eq!(seen.agreed_in(true, now), None, "two observers, two addresses: nothing agreed");
    seen.observe("relay", addr("198.51.100.7:4001"), now);
    assert_eq!(seen.agreed_in(true, now), Some(addr("198.51.100.7:4001")));
    assert_eq!(seen.agreed_in(false, now), None);
    assert_eq!(seen.agreed_in(true, now + OBSERVATION_TTL), None, "stale agreement");
}

#[test]
fn observations_age_out_and_each_family_has_its_own_mapping() {
    let then = Instant::now();
    let mut seen = MappingObserver::default();
    seen.observe("a", addr("198.51.100.7:1000"), then);
    seen.observe("b", addr("198.51.100.7:2000"), then);
    seen.observe("c", addr("[2001:db8::7]:4001"), then);
    assert_eq!(seen.mapping(then), Mapping::Dependent("198.51.100.7".parse().unwrap()));
    assert_eq!(seen.mapping_in(false, then), Mapping::Independent(addr("[2001:db8::7]:4001")));
    // IPv4 written as IPv6 counts as the IPv4 address it is.
    seen.observe("d", addr("[::ffff:198.51.100.7]:3000"), then);
    assert_eq!(seen.mapping_in(false, then), Mapping::Independent(addr("[2001:db8::7]:4001")));
    let later = then + OBSERVATION_TTL;
    assert_eq!(seen.mapping(later), Mapping::Unknown);
    seen.observe("a", addr("198.51.100.7:1000"), later);
    assert_eq!(seen.mapping(later), Mapping::Independent(addr("198.51.100.7:1000")));
}

#[test]
fn a_peer_that_reports_again_replaces_its_observation_and_old_observers_go() {
    let now = Instant::now();
    let mut seen = MappingObserver::default();
    seen.observe(0, addr("198.51.100.7:1000"), now);
    // The same observer again (our port moved): no conflict with itself.
    seen.observe(0, addr("198.51.100.7:2000"), now);
    assert_eq!(seen.mapping(now), Mapping::Independent(addr("198.51.100.7:2000")));
    for observer in 1..=MAX_OBSERVERS {
        seen.observe(observer, addr("203.0.113.9:2000"), now);
    }
    // Observer 0 was the oldest and is forgotten.
    assert_eq!(seen.seen.len(), MAX_OBSERVERS);
    assert_eq!(seen.mapping(now), Mapping::Independent(addr("203.0.113.9:2000")));
}

#[test]
fn offers_round_trip_and_malformed_ones_are_named() {
    let offer = Offer::new("198.51.100.7".parse().unwrap(), &mut OsRng);
    assert_eq!(Offer::from_pb(&offer.to_pb()), Ok(offer.clone()));
    let v6 = Offer::new("2001:db8::7".parse().unwrap(), &mut OsRng);
    assert_eq!(Offer::from_pb(&v6.to_pb()), Ok(v6));
    let mut bad = offer.to_pb();
    bad.ip = vec![1, 2, 3];
    assert_eq!(Offer::from_pb(&bad), Err(GuessError::BadIp(3)));
    let mut bad = offer.to_pb();
    bad.nonce.pop();
    assert_eq!(Offer::from_pb(&bad), Err(GuessError::BadNonce(NONCE_LEN - 1)));
}

#[test]
fn no_probe_goes_to_loopback_multicast_link_local_or_reserved_addresses() {
    let unroutable = [
        "127.0.0.1",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "169.254.1.1",
        "::1",
        "::",
        "ff02::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.1.1",
    ];
    for ip in unroutable {
        let ip: IpAddr = ip.parse().unwrap();
        let offer = Offer { ip, nonce: [7; NONCE_LEN] };
        assert!(matches!(Offer::from_pb(&offer.to_pb()), Err(GuessError::Unroutable(_))), "{ip}");
        let port_of_it = answer(Ok(SocketAddr::new(ip, 4001)));
        assert!(matches!(read_answer(&port_of_it), Err(GuessError::Unroutable(_))), "{ip}");
    }
    // Private, shared and documentation addresses are where NATs and labs
    // live.
    for ip in ["10.0.0.1", "192.168.1.1", "100.64.0.1", "198.51.100.7", "2001:db8::1", "::ffff:198.51.100.7"] {
        assert_eq!(check_target(ip.parse().unwrap()), Ok(()), "{ip}");
    }
}

#[test]
fn answers_carry_an_address_or_a_refusal() {
    assert_eq!(read_answer(&answer(Ok(addr("198.51.100.7:4001")))), Ok(addr("198.51.100.7:4001")));
    assert_eq!(read_answer(&answer(Err("no".into()))), Err(GuessError::Refused("no".into())));
    let garbage = pb::GuessAnswer { addr: "somewhere".into(), refused: String::new() };
    assert_eq!(read_answer(&garbage), Err(GuessError::BadAddr("somewhere".into())));
}

#[test]
fn probes_carry_their_exchanges_nonce() {
    let (nonce, other) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
    let datagram = probe(&nonce);
    assert!(datagram.len() <= MAX_UNANSWERED_DATAGRAM, "a QUIC endpoint could answer a probe with a reset");
    assert!(is_probe(&datagram, &nonce));
    assert!(!is_probe(&datagram, &other));
    assert!(!is_probe(&datagram[..datagram.len() - 1], &nonce));
    assert!(!is_probe(&[datagram.as_slice(), b"x"].concat(), &nonce));
}

#[test]
fn guessed_ports_are_distinct_and_above_the_privileged_range() {
    let ports = guess_ports(&mut OsRng, GUESS_PROBES);
    assert_eq!(ports.len(), GUESS_PROBES);
    assert!(ports.iter().all(|p| *p >= LOWEST_PORT));
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), GUESS_PROBES);
    // Asking for more than there are gives each port once.
    assert_eq!(guess_ports(&mut OsRng, 1 << 20).len(), usize::from(u16::MAX - LOWEST_PORT) + 1);
}

#[test]
fn a_peer_cannot_have_us_spray_often_or_two_at_once() {
    let mut budget = SprayBudget::default();
    let start = Instant::now();
    assert_eq!(budget.start("a", start), Ok(()));
    assert_eq!(budget.start("b", start), Err(SprayRefusal::Busy));
    budget.finish();
    let later = start + Duration::from_secs(1);
    assert_eq!(
        budget.start("a", later),
        Err(SprayRefusal::TooSoon(Duration::from_secs(1), SPRAY_INTERVAL - Duration::from_secs(1)))
    );
    assert_eq!(budget.start("b", later), Ok(()));
    budget.finish();
    assert_eq!(budget.start("a", start + SPRAY_INTERVAL), Ok(()));
    budget.finish();
}

#[test]
fn many_peers_together_get_a_few_sprays_a_minute() {
    let mut budget = SprayBudget::default();
    let start = Instant::now();
    for peer in 0..SPRAYS_PER_MINUTE {
        assert_eq!(budget.start(peer, start + Duration::from_secs(peer as u64)), Ok(()));
        budget.finish();
    }
    let now = start + Duration::from_secs(20);
    assert_eq!(budget.start(99, now), Err(SprayRefusal::TooMany(Duration::from_secs(40))));
    // A minute after the first, one more may go.
    assert_eq!(budget.start(99, start + Duration::from_secs(60)), Ok(()));
}
