//! Link tests with real QUIC endpoints on loopback: admission, and every way
//! a hostile or confused peer can fail it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::ledger::EmbeddedLedger;
use carrier_proto::handshake::frame;
use carrier_proto::identity::IdentityKind;
use carrier_proto::ledger::LedgerState;
use carrier_proto::testing::TestNetwork;
use tokio::sync::mpsc;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

/// One endpoint with an accept loop that reports every inbound outcome.
struct Node {
    ctx: Arc<LinkContext>,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    inbound: mpsc::UnboundedReceiver<Result<Link, LinkError>>,
}

impl Node {
    fn start(identity: Identity, ledger: LedgerState) -> Self {
        let did = identity.did();
        Self::start_with(identity, did, ledger, LinkLimits::default())
    }

    fn start_with(identity: Identity, did: Did, ledger: LedgerState, limits: LinkLimits) -> Self {
        let ledger = Arc::new(EmbeddedLedger::in_memory(ledger));
        let ctx = Arc::new(LinkContext::new(identity, did, ledger, limits));
        let endpoint = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let (tx, inbound) = mpsc::unbounded_channel();
        let (accepting, server) = (endpoint.clone(), Arc::clone(&ctx));
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let (server, tx) = (Arc::clone(&server), tx.clone());
                tokio::spawn(async move {
                    let _ = tx.send(server.accept(incoming).await);
                });
            }
        });
        Self { ctx, endpoint, addr, inbound }
    }

    async fn dial(&self, to: &Node, expected: Option<Did>) -> Result<Link, LinkError> {
        tokio::time::timeout(WAIT, self.ctx.dial(&self.endpoint, to.addr, expected)).await.expect("dial hung")
    }

    async fn next_inbound(&mut self) -> Result<Link, LinkError> {
        tokio::time::timeout(WAIT, self.inbound.recv()).await.expect("no inbound outcome").expect("accept loop ended")
    }
}

fn refused(result: Result<Link, LinkError>) -> Refusal {
    match result {
        Err(LinkError::Refused(error)) => error.reason,
        other => panic!("expected a local refusal, got {other:?}"),
    }
}

fn refused_by_peer(result: Result<Link, LinkError>) -> Refusal {
    match result {
        Err(LinkError::RefusedByPeer(reason)) => reason,
        other => panic!("expected the peer to refuse, got {other:?}"),
    }
}

#[tokio::test]
async fn registered_devices_link_by_did_and_by_address() {
    let mut net = TestNetwork::new("links");
    let (a, b) = (net.register_device(), net.register_device());
    let (a_did, b_did) = (a.did(), b.did());
    let node_a = Node::start(a, net.ledger.clone());
    let mut node_b = Node::start(b, net.ledger.clone());
    for expected in [Some(b_did), None] {
        let link = node_a.dial(&node_b, expected).await.unwrap();
        assert_eq!(link.peer.did, b_did);
        let inbound = node_b.next_inbound().await.unwrap();
        assert_eq!(inbound.peer.did, a_did);
        // Data rides the admitted connection.
        let (mut send, _recv) = link.connection.open_bi().await.unwrap();
        send.write_all(b"hello").await.unwrap();
        send.finish().unwrap();
        let (_send, mut recv) = inbound.connection.accept_bi().await.unwrap();
        assert_eq!(recv.read_to_end(64).await.unwrap(), b"hello");
    }
}

#[tokio::test]
async fn unregistered_node_gets_no_link() {
    let mut net = TestNetwork::new("links");
    let b = net.register_device();
    let b_did = b.did();
    let stranger = Identity::generate(IdentityKind::Device);
    let node_s = Node::start(stranger, net.ledger.clone());
    let mut node_b = Node::start(b, net.ledger.clone());
    for expected in [Some(b_did), None] {
        assert_eq!(refused_by_peer(node_s.dial(&node_b, expected).await), Refusal::UnknownIdentity);
        assert_eq!(refused(node_b.next_inbound().await), Refusal::UnknownIdentity);
    }
    // And a registered node does not link to the stranger either.
    let mut node_s = node_s;
    let a = net.register_device();
    let node_a = Node::start(a, net.ledger.clone());
    assert_eq!(refused(node_a.dial(&node_s, None).await), Refusal::UnknownIdentity);
    assert!(node_s.next_inbound().await.is_err());
}

#[tokio::test]
async fn registered_did_with_other_keys_is_a_key_mismatch() {
    let mut net = TestNetwork::new("links");
    let (victim, b) = (net.register_device(), net.register_device());
    // The impostor claims the victim's DID but holds only its own keys.
    let impostor = Identity::generate(IdentityKind::Device);
    let node_i = Node::start_with(impostor, victim.did(), net.ledger.clone(), LinkLimits::default());
    let mut node_b = Node::start(b, net.ledger.clone());
    assert_eq!(refused_by_peer(node_i.dial(&node_b, None).await), Refusal::KeyMismatch);
    assert_eq!(refused(node_b.next_inbound().await), Refusal::KeyMismatch);
}

#[tokio::test]
async fn other_network_is_refused() {
    let mut home = TestNetwork::new("links");
    let mut other = TestNetwork::new("links");
    let (a, b) = (other.register_device(), home.register_device());
    let node_a = Node::start(a, other.ledger.clone());
    let mut node_b = Node::start(b, home.ledger.clone());
    assert_eq!(refused_by_peer(node_a.dial(&node_b, None).await), Refusal::WrongNetwork);
    assert_eq!(refused(node_b.next_inbound().await), Refusal::WrongNetwork);
}

/// Opens a raw QUIC connection to `to` and writes `bytes` on the first
/// stream, as a broken or hostile client would; returns the close code.
async fn raw_first_stream(to: &Node, bytes: &[u8], finish: bool) -> Option<Refusal> {
    let endpoint = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let connection = endpoint.connect(to.addr, quic::SERVER_NAME).unwrap().await.unwrap();
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    close_code(&connection).await
}

#[tokio::test]
async fn garbage_truncated_and_oversized_first_streams_are_closed_with_a_reason() {
    let mut net = TestNetwork::new("links");
    let (a, b) = (net.register_device(), net.register_device());
    let a_did = a.did();
    let node_a = Node::start(a, net.ledger.clone());
    let mut node_b = Node::start(b, net.ledger.clone());

    let garbage = frame::encode(&[0xde; 100]);
    assert_eq!(raw_first_stream(&node_b, &garbage, true).await, Some(Refusal::Malformed));
    assert_eq!(refused(node_b.next_inbound().await), Refusal::Malformed);

    let truncated = &frame::encode(&[1; 300])[..50];
    assert_eq!(raw_first_stream(&node_b, truncated, true).await, Some(Refusal::Malformed));
    assert_eq!(refused(node_b.next_inbound().await), Refusal::Malformed);

    let oversized = ((frame::MAX_FRAME + 1) as u16).to_be_bytes();
    assert_eq!(raw_first_stream(&node_b, &oversized, false).await, Some(Refusal::Malformed));
    assert_eq!(refused(node_b.next_inbound().await), Refusal::Malformed);

    // The node keeps serving registered peers throughout.
    assert_eq!(node_a.dial(&node_b, None).await.unwrap().peer.did, node_b.ctx.did());
    assert_eq!(node_b.next_inbound().await.unwrap().peer.did, a_did);
}

#[tokio::test]
async fn silent_client_times_out() {
    let mut net = TestNetwork::new("links");
    let b = net.register_device();
    let did = b.did();
    let short = LinkLimits { handshake_timeout: Duration::from_millis(300), ..LinkLimits::default() };
    let mut node_b = Node::start_with(b, did, net.ledger.clone(), short);
    let endpoint = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let connection = endpoint.connect(node_b.addr, quic::SERVER_NAME).unwrap().await.unwrap();
    let closed = tokio::time::timeout(WAIT, connection.closed()).await.unwrap();
    let timeout_code = u64::from(Refusal::Timeout.code());
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == timeout_code),
        "{closed:?}"
    );
    assert!(matches!(node_b.next_inbound().await, Err(LinkError::Timeout)));
}

/// A man in the middle that terminates QUIC on both sides and relays the
/// handshake stream between them, byte for byte.
fn spawn_relay(to: SocketAddr) -> SocketAddr {
    let relay = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = relay.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = relay.accept().await {
            let relay = relay.clone();
            tokio::spawn(async move {
                let from_dialer = incoming.await.unwrap();
                let to_listener = relay.connect(to, quic::SERVER_NAME).unwrap().await.unwrap();
                let (mut a_send, mut a_recv) = from_dialer.accept_bi().await.unwrap();
                let (mut b_send, mut b_recv) = to_listener.open_bi().await.unwrap();
                let _ =
                    tokio::join!(tokio::io::copy(&mut a_recv, &mut b_send), tokio::io::copy(&mut b_recv, &mut a_send));
            });
        }
    });
    addr
}

#[tokio::test]
async fn man_in_the_middle_fails_the_channel_binding() {
    let mut net = TestNetwork::new("links");
    let (a, b) = (net.register_device(), net.register_device());
    let (a_did, b_did) = (a.did(), b.did());
    // The relay does not pass close codes on, so the dialer waits out its
    // handshake timeout in the IK case; keep it short.
    let short = LinkLimits { handshake_timeout: Duration::from_millis(500), ..LinkLimits::default() };
    let node_a = Node::start_with(a, a_did, net.ledger.clone(), short);
    let mut node_b = Node::start(b, net.ledger.clone());
    let relay = spawn_relay(node_b.addr);

    // IK: the listener cannot decrypt the relayed first message.
    let dial = node_a.ctx.dial_once(&node_a.endpoint, relay, Some(b_did), false);
    let _ = tokio::time::timeout(WAIT, dial).await.expect("dial hung");
    assert_eq!(refused(node_b.next_inbound().await), Refusal::BadBinding);

    // XX: the dialer cannot decrypt the listener's relayed reply.
    let result = tokio::time::timeout(WAIT, node_a.ctx.dial(&node_a.endpoint, relay, None)).await.expect("dial hung");
    assert_eq!(refused(result), Refusal::BadBinding);
}

#[tokio::test]
async fn replayed_hello_on_a_new_connection_fails_the_binding() {
    use carrier_proto::handshake::{ChannelBinding, EXPORTER_LABEL, Initiator, Local};
    let mut net = TestNetwork::new("links");
    let (a, b) = (net.register_device(), net.register_device());
    let b_did = b.did();
    let mut node_b = Node::start(b, net.ledger.clone());
    let endpoint = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    // A genuine hello, bound to a first connection...
    let first = endpoint.connect(node_b.addr, quic::SERVER_NAME).unwrap().await.unwrap();
    let mut binding = [0u8; 32];
    first.export_keying_material(&mut binding, EXPORTER_LABEL, b"").unwrap();
    let note = net.checkpoint().note().to_vec();
    let local = Local { did: a.did(), identity: &a, network_id: net.ledger.network().unwrap().id, checkpoint: &note };
    let (_, hello) = Initiator::start(&local, &ChannelBinding(binding), &net.ledger, Some(b_did)).unwrap();
    first.close(0u32.into(), b"");
    let _ = node_b.next_inbound().await;
    // ...replayed by someone who saw it, on a connection of their own.
    assert_eq!(raw_first_stream(&node_b, &frame::encode(&hello), false).await, Some(Refusal::BadBinding));
    assert_eq!(refused(node_b.next_inbound().await), Refusal::BadBinding);
}

#[tokio::test]
async fn a_flood_of_strangers_does_not_starve_registered_peers() {
    let mut net = TestNetwork::new("links");
    let (a, b) = (net.register_device(), net.register_device());
    let (a_did, b_did) = (a.did(), b.did());
    // A rate high enough that this test sees eviction, not the rate limit.
    let limits = LinkLimits {
        max_handshakes_per_ip: 4,
        handshakes_per_ip_per_s: u32::MAX,
        handshake_timeout: Duration::from_secs(3),
        ..LinkLimits::default()
    };
    let mut node_b = Node::start_with(b, b_did, net.ledger.clone(), limits);
    // Strangers from 127.0.0.2 open connections and say nothing.
    let strangers = quic::endpoint("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut silent = Vec::new();
    for _ in 0..20 {
        if let Ok(Ok(connection)) =
            tokio::time::timeout(WAIT, strangers.connect(node_b.addr, quic::SERVER_NAME).unwrap()).await
        {
            silent.push(connection);
        }
    }
    // At most the per-address quota holds slots: each newcomer past it took
    // the slot of the oldest silent one from that address.
    let mut evicted = 0;
    while evicted < 16 {
        let outcome = node_b.next_inbound().await;
        assert!(matches!(outcome, Err(LinkError::Evicted)), "{outcome:?}");
        evicted += 1;
    }
    assert_eq!(node_b.ctx.slots.in_flight(), 4, "per-address limit did not hold");
    // A registered peer from another address still gets in at once.
    let node_a = Node::start(a, net.ledger.clone());
    let started = std::time::Instant::now();
    let link = node_a.dial(&node_b, Some(b_did)).await.unwrap();
    assert_eq!(link.peer.did, b_did);
    assert!(started.elapsed() < Duration::from_secs(1), "registered peer waited {:?}", started.elapsed());
    assert_eq!(node_b.next_inbound().await.unwrap().peer.did, a_did);
    drop(silent);
}

#[tokio::test]
async fn admission_records_the_peers_checkpoint() {
    let mut net = TestNetwork::new("links");
    let (a, b) = (net.register_device(), net.register_device());
    let b_did = b.did();
    let node_a = Node::start(a, net.ledger.clone());
    let node_b = Node::start(b, net.ledger.clone());
    let _link = node_a.dial(&node_b, None).await.unwrap();
    // An in-memory ledger has no checkpoint: the handshake carries none,
    // and nothing is kept.
    assert_eq!(node_a.ctx.peer_checkpoint(&b_did), None);
}

/// The close code a peer ended `connection` with.
async fn close_code(connection: &quinn::Connection) -> Option<Refusal> {
    match tokio::time::timeout(WAIT, connection.closed()).await.expect("never closed") {
        quinn::ConnectionError::ApplicationClosed(close) => Refusal::from_code(close.error_code.into_inner()),
        _ => None,
    }
}

#[tokio::test]
async fn a_recheck_cuts_revoked_and_rotated_out_links_and_keeps_the_rest() {
    let mut net = TestNetwork::new("links");
    let (a, b, c, d) = (net.register_device(), net.register_device(), net.register_device(), net.register_device());
    let (a_did, c_did, d_did) = (a.did(), c.did(), d.did());
    let mut node_b = Node::start(b, net.ledger.clone());
    let (node_a, node_c, node_d) =
        (Node::start(a, net.ledger.clone()), Node::start(c, net.ledger.clone()), Node::start(d, net.ledger.clone()));
    let mut links = Vec::new();
    for node in [&node_a, &node_c, &node_d] {
        links.push(node.dial(&node_b, None).await.unwrap());
        node_b.next_inbound().await.unwrap();
    }
    // B's ledger learns that A is revoked and C's keys were rotated, and
    // nobody tells it (as when its update feed lagged).
    let rotated_to = Identity::generate(IdentityKind::Device);
    for entry in [net.revoke(a_did), net.rotate(c_did, rotated_to.public_keys())] {
        node_b.ctx.ledger.submit(vec![entry]).unwrap();
    }
    let mut cuts: Vec<(Did, Refusal)> = node_b.ctx.enforce_all().into_iter().map(|c| (c.did, c.reason)).collect();
    cuts.sort_by_key(|(did, _)| *did != a_did);
    assert_eq!(cuts, [(a_did, Refusal::Revoked), (c_did, Refusal::KeyMismatch)]);
    assert_eq!(close_code(&links[0].connection).await, Some(Refusal::Revoked));
    assert_eq!(close_code(&links[1].connection).await, Some(Refusal::KeyMismatch));
    assert!(links[2].connection.close_reason().is_none(), "{d_did}'s link was cut");
    assert!(node_b.ctx.enforce_all().is_empty(), "a second check finds nothing more");
    // The old keys are refused from now on; the new ones are admitted.
    assert_eq!(refused_by_peer(node_c.dial(&node_b, None).await), Refusal::KeyMismatch);
    assert_eq!(refused(node_b.next_inbound().await), Refusal::KeyMismatch);
    let node_c2 = Node::start_with(rotated_to, c_did, net.ledger.clone(), LinkLimits::default());
    node_c2.dial(&node_b, None).await.unwrap();
    assert_eq!(node_b.next_inbound().await.unwrap().peer.did, c_did);
}

#[tokio::test]
async fn a_peer_may_open_only_so_many_streams_on_one_link() {
    let mut net = TestNetwork::new("links");
    let (a, b) = (net.register_device(), net.register_device());
    let node_a = Node::start(a, net.ledger.clone());
    let mut node_b = Node::start(b, net.ledger.clone());
    let link = node_a.dial(&node_b, None).await.unwrap();
    let inbound = node_b.next_inbound().await.unwrap();
    // The handshake used the first stream; 255 more fit under the cap of
    // 256 open at once (QUIC's own stream credit, set in `quic.rs`).
    let mut streams = Vec::new();
    for _ in 0..255 {
        let (mut send, recv) = link.connection.open_bi().await.unwrap();
        send.write_all(b"x").await.unwrap();
        streams.push((send, recv));
    }
    let over = tokio::time::timeout(Duration::from_millis(300), link.connection.open_bi()).await;
    assert!(over.is_err(), "a stream past the cap opened");
    drop(inbound);
}
