use std::time::Duration;

use carrier_proto::testing::TestNetwork;
use tokio::io::DuplexStream;

use super::*;
use crate::ledger::{EmbeddedLedger, Ledger};
use crate::link::LinkLimits;

fn guessing() -> (Arc<PortGuessing>, Reachability) {
    let mut net = TestNetwork::new("guess");
    let device = net.register_device();
    let ledger = Arc::new(EmbeddedLedger::in_memory(net.ledger.clone()));
    let did = device.did();
    let ctx = LinkContext::new(device, did, ledger as Arc<dyn Ledger>, LinkLimits::default());
    let reachability = Reachability::default();
    let guessing = PortGuessing::new(Arc::new(ctx), reachability.clone());
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (links, _) = mpsc::channel(1);
    guessing.attach(Arc::new(socket), &links);
    (guessing, reachability)
}

/// Runs the spraying side for `peer`, which we reach only through a relay,
/// over a pipe; the guessing side's end.
fn serve_one(guessing: &Arc<PortGuessing>, peer: PeerId) -> (DuplexStream, Serving) {
    serve_one_over(guessing, peer, true)
}

type Serving = tokio::task::JoinHandle<Result<usize, GuessFailure>>;

fn serve_one_over(guessing: &Arc<PortGuessing>, peer: PeerId, relayed_only: bool) -> (DuplexStream, Serving) {
    let (ours, theirs) = tokio::io::duplex(4096);
    let guessing = Arc::clone(guessing);
    (ours, tokio::spawn(async move { guessing.spray(peer, relayed_only, theirs).await }))
}

/// Sends `offer`, reads the answer.
async fn offer(stream: DuplexStream, offer: &pb::GuessOffer) -> (pb::GuessAnswer, DuplexStream) {
    let mut writer = FrameWriter::new(stream, MAX_FRAME);
    writer.send(offer).await.unwrap();
    let mut reader = FrameReader::new(writer.into_inner(), MAX_FRAME);
    let answer = tokio::time::timeout(Duration::from_secs(5), reader.read()).await.unwrap().unwrap().unwrap();
    (answer, reader.into_parts().0)
}

fn public_offer() -> pb::GuessOffer {
    Offer::new("198.51.100.9".parse().unwrap(), &mut OsRng).to_pb()
}

#[tokio::test]
async fn a_device_whose_nat_maps_a_port_per_destination_will_not_spray() {
    let (guessing, seen) = guessing();
    let peer = PeerId::random();
    // Nobody has said where they see us: no address to offer.
    let (stream, serving) = serve_one(&guessing, peer);
    let (answer, _stream) = offer(stream, &public_offer()).await;
    assert!(answer.addr.is_empty() && answer.refused.contains("no peer has told us"), "{answer:?}");
    assert!(matches!(serving.await.unwrap(), Err(GuessFailure::Exchange(GuessError::Refused(_)))));
    // One peer's word is not enough to tell the other side where to aim.
    seen.observe(PeerId::random(), "198.51.100.7:40001".parse().unwrap());
    let (stream, serving) = serve_one(&guessing, peer);
    let (answer, _stream) = offer(stream, &public_offer()).await;
    assert!(answer.refused.contains("fewer than two peers agree"), "{answer:?}");
    assert!(serving.await.unwrap().is_err());
    // Two peers saw two ports: we are behind such a NAT ourselves.
    seen.observe(PeerId::random(), "198.51.100.7:40002".parse().unwrap());
    let (stream, serving) = serve_one(&guessing, peer);
    let (answer, _stream) = offer(stream, &public_offer()).await;
    assert!(answer.refused.contains("new port per destination"), "{answer:?}");
    assert!(serving.await.unwrap().is_err());
}

#[tokio::test]
async fn an_offer_to_spray_loopback_or_a_malformed_one_is_refused_by_name() {
    let (guessing, seen) = guessing();
    seen.observe(PeerId::random(), "198.51.100.7:4001".parse().unwrap());
    let loopback = Offer { ip: "127.0.0.1".parse().unwrap(), nonce: [0; nat::NONCE_LEN] }.to_pb();
    let short_nonce = pb::GuessOffer { nonce: vec![1, 2], ..public_offer() };
    for (bad, named) in [(loopback, "not an address to send probes to"), (short_nonce, "nonce is 2 bytes")] {
        let (stream, serving) = serve_one(&guessing, PeerId::random());
        let (answer, _stream) = offer(stream, &bad).await;
        assert!(answer.addr.is_empty() && answer.refused.contains(named), "{answer:?}");
        assert!(serving.await.unwrap().is_err());
    }
}

#[tokio::test]
async fn a_peer_gets_one_spray_per_interval_and_a_dead_exchange_frees_the_budget() {
    let (guessing, seen) = guessing();
    seen.observe(PeerId::random(), "198.51.100.7:4001".parse().unwrap());
    seen.observe(PeerId::random(), "198.51.100.7:4001".parse().unwrap());
    let (peer, other) = (PeerId::random(), PeerId::random());
    let (stream, serving) = serve_one(&guessing, peer);
    let (answer, stream) = offer(stream, &public_offer()).await;
    assert_eq!(answer.addr, "198.51.100.7:4001");
    // While it waits for our readiness, nobody else is served.
    let (busy, _) = serve_one(&guessing, other);
    let (answer, _busy) = offer(busy, &public_offer()).await;
    assert!(answer.refused.contains("busy"), "{answer:?}");
    // We never say we are ready and close instead: no probe is sent.
    drop(stream);
    assert!(serving.await.unwrap().is_err());
    // The same peer again at once: too soon.
    let (stream, _) = serve_one(&guessing, peer);
    let (answer, _stream) = offer(stream, &public_offer()).await;
    assert!(answer.refused.contains("try again in"), "{answer:?}");
    // Another peer may go now.
    let (stream, _) = serve_one(&guessing, other);
    let (answer, _stream) = offer(stream, &public_offer()).await;
    assert_eq!(answer.addr, "198.51.100.7:4001");
}

#[tokio::test]
async fn no_spray_for_a_peer_we_reach_directly_or_towards_another_ip_family() {
    let (guessing, seen) = guessing();
    for _ in 0..2 {
        seen.observe(PeerId::random(), "198.51.100.7:4001".parse().unwrap());
        seen.observe(PeerId::random(), "[2001:db8::7]:4001".parse().unwrap());
    }
    let (stream, serving) = serve_one_over(&guessing, PeerId::random(), false);
    let (answer, _stream) = offer(stream, &public_offer()).await;
    assert!(answer.addr.is_empty() && answer.refused.contains("direct link already"), "{answer:?}");
    assert!(serving.await.unwrap().is_err());
    // Our listening socket is IPv4: probes to an IPv6 address cannot leave it.
    let v6 = Offer::new("2001:db8::9".parse().unwrap(), &mut OsRng).to_pb();
    let (stream, serving) = serve_one(&guessing, PeerId::random());
    let (answer, _stream) = offer(stream, &v6).await;
    assert!(answer.refused.contains("another IP family"), "{answer:?}");
    assert!(serving.await.unwrap().is_err());
}

#[tokio::test]
async fn a_quic_endpoint_that_a_probe_reaches_does_not_answer_it() {
    let endpoint = crate::link::quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let quic = endpoint.local_addr().unwrap();
    let prober = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for nonce in [[0u8; nat::NONCE_LEN], [0xff; nat::NONCE_LEN], [0x40; nat::NONCE_LEN]] {
        prober.send_to(&nat::probe(&nonce), quic).await.unwrap();
    }
    let mut buf = [0u8; 1500];
    let answer = tokio::time::timeout(Duration::from_millis(500), prober.recv_from(&mut buf)).await;
    assert!(answer.is_err(), "the endpoint answered a probe: {answer:?}");
}

#[tokio::test]
async fn only_a_probe_with_the_nonce_from_the_peers_address_picks_a_socket() {
    let (nonce, other_nonce) = ([5u8; nat::NONCE_LEN], [6u8; nat::NONCE_LEN]);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let ports: Vec<u16> = sockets.iter().map(|s| s.local_addr().unwrap().port()).collect();
    let to = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    // Another exchange's probe, and ours from someone else: neither counts.
    peer.send_to(&nat::probe(&other_nonce), to(0)).unwrap();
    stranger.send_to(&nat::probe(&nonce), to(1)).unwrap();
    peer.send_to(b"not a probe", to(2)).unwrap();
    let waiting = first_probe(sockets, peer.local_addr().unwrap(), nonce);
    let mut waiting = std::pin::pin!(waiting);
    assert!(tokio::time::timeout(Duration::from_millis(200), &mut waiting).await.is_err(), "a wrong probe was taken");
    peer.send_to(&nat::probe(&nonce), to(3)).unwrap();
    let hit = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert_eq!(hit.local_addr().unwrap().port(), ports[3]);
}
