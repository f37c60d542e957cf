//! Overlay scenarios: real swarms over real QUIC links on loopback, each
//! node with its own copy of the ledger.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use carrier_daemon::ledger::{EmbeddedLedger, Ledger};
use carrier_daemon::link::{LinkContext, LinkLimits};
use carrier_daemon::overlay::{Overlay, OverlayConfig, OverlayEvent};
use carrier_proto::identity::{Did, Identity, IdentityKind};
use carrier_proto::ledger::LedgerState;
use carrier_proto::testing::TestNetwork;
use libp2p::Multiaddr;
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(15);

struct Node {
    did: Did,
    ledger: Arc<EmbeddedLedger>,
    overlay: Overlay,
    events: broadcast::Receiver<OverlayEvent>,
}

async fn start(identity: Identity, ledger: LedgerState, bootstrap: Option<&Multiaddr>) -> Node {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let did = identity.did();
    let ledger = Arc::new(EmbeddedLedger::in_memory(ledger));
    let ctx = Arc::new(LinkContext::new(identity, did, Arc::clone(&ledger) as Arc<dyn Ledger>, LinkLimits::default()));
    let config = OverlayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        bootstrap: bootstrap.into_iter().cloned().collect(),
        ..OverlayConfig::default()
    };
    let (overlay, events) = Overlay::start(ctx, config).await.unwrap();
    Node { did, ledger, overlay, events }
}

/// Waits for an event matching `want`, failing after `WAIT`.
async fn wait_for(node: &mut Node, want: impl Fn(&OverlayEvent) -> bool) -> OverlayEvent {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let event = node.events.recv().await.unwrap();
            if want(&event) {
                return event;
            }
            seen.push(event);
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{}: awaited event did not arrive; saw {seen:?}", node.did))
}

/// Waits until every event in `wanted` has arrived, in any order.
async fn wait_for_all(node: &mut Node, mut wanted: Vec<OverlayEvent>) {
    while !wanted.is_empty() {
        let event = wait_for(node, |e| wanted.contains(e)).await;
        wanted.retain(|w| *w != event);
    }
}

/// Starts `n` registered nodes; all but the first join through the first.
async fn network(net: &mut TestNetwork, n: usize) -> Vec<Node> {
    let ids: Vec<Identity> = (0..n).map(|_| net.register_device()).collect();
    let mut ids = ids.into_iter();
    let first = start(ids.next().unwrap(), net.ledger.clone(), None).await;
    let bootstrap = first.overlay.listen_addr().clone();
    let mut nodes = vec![first];
    for id in ids {
        let mut node = start(id, net.ledger.clone(), Some(&bootstrap)).await;
        // Joined: each side has the other in its routing table.
        let (first_did, did) = (nodes[0].did, node.did);
        wait_for(&mut node, |e| *e == OverlayEvent::Routable(first_did)).await;
        wait_for(&mut nodes[0], |e| *e == OverlayEvent::Routable(did)).await;
        nodes.push(node);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_find_and_link_every_other_by_did() {
    let mut net = TestNetwork::new("overlay");
    let nodes = network(&mut net, 5).await;
    // A lookup alone finds a peer nobody introduced us to.
    let lookup = nodes[1].overlay.lookup(nodes[3].did).await.unwrap();
    assert!(lookup.found, "{lookup:?}");
    let stranger = Identity::generate(IdentityKind::Device).did();
    assert!(nodes[1].overlay.lookup(stranger).await.is_err(), "lookup of a DID not on the ledger");
    for a in &nodes {
        for b in &nodes {
            if a.did != b.did {
                a.overlay.connect(b.did).await.unwrap_or_else(|e| panic!("{} -> {}: {e}", a.did, b.did));
            }
        }
    }
    for node in &nodes {
        let peers = node.overlay.peers().await.unwrap();
        assert_eq!(peers.len(), 4, "{} has {} peers", node.did, peers.len());
        let routes = node.overlay.routes().await.unwrap();
        assert!(!routes.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_node_gets_no_link_and_no_route() {
    let mut net = TestNetwork::new("overlay");
    let mut nodes = network(&mut net, 3).await;
    let bootstrap = nodes[0].overlay.listen_addr().clone();
    // Valid keys and a copy of the ledger, but not on it.
    let stranger = Identity::generate(IdentityKind::Device);
    let stranger_peer = stranger.peer_id();
    let outsider = start(stranger, net.ledger.clone(), None).await;
    let err = outsider.overlay.dial(bootstrap).await.unwrap_err();
    assert!(err.to_string().contains("unknown identity"), "{err}");
    assert!(outsider.overlay.connect(nodes[1].did).await.is_err());
    assert!(outsider.overlay.peers().await.unwrap().is_empty());
    for node in &mut nodes {
        let routes = node.overlay.routes().await.unwrap();
        assert!(routes.iter().all(|r| r.peer_id != stranger_peer.to_string()), "stranger in a routing table");
        assert!(node.overlay.peers().await.unwrap().iter().all(|p| p.peer_id != stranger_peer.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_cuts_every_link_within_two_seconds_for_good() {
    let mut net = TestNetwork::new("overlay");
    let mut nodes = network(&mut net, 5).await;
    let victim = nodes[4].did;
    for node in &nodes[..4] {
        node.overlay.connect(victim).await.unwrap();
    }
    // The revocation reaches every other node's ledger (replication is the
    // ledger sync's job; here it is handed to each node directly).
    let entry = net.revoke(victim);
    let started = Instant::now();
    for node in &nodes[..4] {
        let _ = node.ledger.append(entry.clone());
    }
    for node in &mut nodes[..4] {
        wait_for_all(node, vec![OverlayEvent::PeerDown(victim), OverlayEvent::Revoked(victim)]).await;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "links cut after {took:?}");
    // Gone from every routing table...
    let victim_peer = Did::peer_id(&victim);
    for node in &nodes[..4] {
        let routes = node.overlay.routes().await.unwrap();
        assert!(routes.iter().all(|r| r.peer_id != victim_peer.to_string()), "revoked peer still routable");
        assert!(node.overlay.peers().await.unwrap().iter().all(|p| p.did != victim));
    }
    // ...and it cannot come back: every fresh link it tries is refused, and
    // nobody lists it as a peer.
    let (others, revoked) = nodes.split_at(4);
    for node in others {
        let err = revoked[0].overlay.dial(node.overlay.listen_addr().clone()).await.unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
        assert!(node.overlay.peers().await.unwrap().iter().all(|p| p.did != victim));
    }
}

/// A swarm of the caller's own behaviour over a Carrier link, as a
/// registered peer that does not run the stock daemon would build it.
fn hostile_swarm<B: libp2p::swarm::NetworkBehaviour>(
    identity: Identity,
    ledger: &LedgerState,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    let (did, keypair) = (identity.did(), identity.libp2p_keypair());
    let ledger = Arc::new(EmbeddedLedger::in_memory(ledger.clone())) as Arc<dyn Ledger>;
    let ctx = Arc::new(LinkContext::new(identity, did, ledger, LinkLimits::default()));
    // It never listens: say it is on loopback, as its peers are.
    ctx.set_local_nets(carrier_proto::addr::LocalNets::new(std::net::Ipv4Addr::LOCALHOST.into(), &[]));
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|_| carrier_daemon::overlay::transport::CarrierTransport::new(ctx))
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

#[tokio::test]
async fn kademlia_keeps_no_record_a_registered_peer_puts() {
    use futures::StreamExt;
    use libp2p::kad;
    use libp2p::swarm::SwarmEvent;

    let mut net = TestNetwork::new("records");
    let (honest, hostile) = (net.register_device(), net.register_device());
    let honest = start(honest, net.ledger.clone(), None).await;
    // A registered peer runs a Kademlia of its own over a Carrier link.
    let mut swarm = hostile_swarm(hostile, &net.ledger, |key| {
        let me = key.public().to_peer_id();
        let config = kad::Config::new(carrier_daemon::overlay::KAD_PROTOCOL);
        kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), config)
    });
    let target = honest.overlay.peer_id();
    swarm.behaviour_mut().add_address(&target, honest.overlay.listen_addr().clone());
    let key = kad::RecordKey::new(&b"a megabyte of nothing");
    let record = kad::Record::new(key.clone(), vec![0; 1000]);
    swarm.behaviour_mut().put_record_to(record, std::iter::once(target), kad::Quorum::One);
    type Hostile = libp2p::Swarm<kad::Behaviour<kad::store::MemoryStore>>;
    /// Drives the swarm to the end of a put (`None`) or a get (what it found).
    async fn finished(swarm: &mut Hostile, want_put: bool) -> Option<kad::Record> {
        let run = async {
            loop {
                if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed { result, step, .. }) =
                    swarm.select_next_some().await
                {
                    match result {
                        kad::QueryResult::PutRecord(_) if want_put => return None,
                        kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                            return Some(found.record);
                        }
                        kad::QueryResult::GetRecord(_) if step.last => return None,
                        _ => {}
                    }
                }
            }
        };
        tokio::time::timeout(WAIT, run).await.expect("the query never finished")
    }
    finished(&mut swarm, true).await;
    // Asked back, the honest node has nothing: it stored nothing.
    swarm.behaviour_mut().remove_record(&key);
    swarm.behaviour_mut().get_record(key);
    let found = finished(&mut swarm, false).await;
    assert!(found.is_none(), "the honest node kept {found:?}");
}

#[tokio::test]
async fn a_peer_that_claims_many_addresses_is_kept_with_a_few() {
    use futures::StreamExt;
    use libp2p::identify;

    let mut net = TestNetwork::new("addresses");
    let (honest, hostile) = (net.register_device(), net.register_device());
    let mut honest = start(honest, net.ledger.clone(), None).await;
    let did = hostile.did();
    let mut swarm = hostile_swarm(hostile, &net.ledger, |key| {
        identify::Behaviour::new(identify::Config::new("/carrier/id/1.0.0".into(), key.public()))
    });
    // It tells everyone it listens on 100 Carrier addresses.
    for port in 1..=100u16 {
        swarm.add_external_address(format!("/ip4/127.0.0.1/udp/{port}/quic-v1/noise").parse().unwrap());
    }
    swarm.dial(honest.overlay.listen_addr().clone()).unwrap();
    let driving = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    wait_for(&mut honest, |e| *e == OverlayEvent::Routable(did)).await;
    let routes = honest.overlay.routes().await.unwrap();
    let route = routes.iter().find(|r| r.did == Some(did)).expect("the peer is routable");
    assert!(!route.addrs.is_empty() && route.addrs.len() <= 8, "kept {} addresses", route.addrs.len());
    driving.abort();
}

/// A registered peer that offers addresses on networks the node is not on
/// (a private 10/8 address, a link-local one, multicast) gets none of them
/// stored, passed on or dialed; its loopback address (the node's network)
/// is kept.
#[tokio::test]
async fn addresses_on_networks_the_node_is_not_on_are_not_taken() {
    use futures::StreamExt;
    use libp2p::identify;

    let mut net = TestNetwork::new("addresses");
    let (honest, hostile) = (net.register_device(), net.register_device());
    let mut honest = start(honest, net.ledger.clone(), None).await;
    let did = hostile.did();
    let mut swarm = hostile_swarm(hostile, &net.ledger, |key| {
        identify::Behaviour::new(identify::Config::new("/carrier/id/1.0.0".into(), key.public()))
    });
    for addr in [
        "/ip4/10.1.2.3/udp/7640/quic-v1/noise",
        "/ip6/fe80::1/udp/7640/quic-v1/noise",
        "/ip4/224.0.0.1/udp/7640/quic-v1/noise",
        "/ip4/192.168.7.7/udp/7640/quic-v1/noise",
        "/ip4/127.0.0.1/udp/7641/quic-v1/noise",
    ] {
        swarm.add_external_address(addr.parse().unwrap());
    }
    swarm.dial(honest.overlay.listen_addr().clone()).unwrap();
    let driving = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    wait_for(&mut honest, |e| *e == OverlayEvent::Routable(did)).await;
    let routes = honest.overlay.routes().await.unwrap();
    let route = routes.iter().find(|r| r.did == Some(did)).expect("the peer is routable");
    let kept: Vec<String> = route.addrs.iter().map(|a| a.to_string()).collect();
    assert_eq!(kept.len(), 1, "kept {kept:?}");
    assert!(kept[0].starts_with("/ip4/127.0.0.1/udp/7641/quic-v1/noise"), "kept {kept:?}");
    driving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_learns_its_address_is_reachable_from_a_dial_back_and_the_dial_back_link_goes() {
    use carrier_daemon::overlay::reachability::Nat;
    let mut net = TestNetwork::new("overlay");
    let nodes = network(&mut net, 2).await;
    let (server, client) = (&nodes[0], &nodes[1]);
    assert_eq!(client.overlay.reachability().nat(), Nat::Unknown);
    // The client dialed the server (its bootstrap): the server dials its
    // address back from a new port, and the probe says it was reached.
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.overlay.reachability().nat() != Nat::Public {
        assert!(
            Instant::now() < deadline,
            "no probe confirmed the address: {:?}",
            client.overlay.reachability().probed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probed = client.overlay.reachability().probed();
    let (addr, probe) = probed.iter().find(|(_, p)| p.reachable).unwrap();
    assert_eq!(addr, client.overlay.listen_addr(), "the probed address is the one we listen on");
    assert_eq!(probe.by, Some(server.did), "the dial-back came from the server");
    let links = server.overlay.peers().await.unwrap()[0].links;
    assert_eq!(links, 2, "the dial-back was a link of its own, beside the first");
    // The dial-back's own link is closed after its grace; the first stays.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let peers = server.overlay.peers().await.unwrap();
        assert_eq!(peers.len(), 1, "the client is one peer");
        if peers[0].links == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the dial-back link was never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
