//! The streams behaviour between real overlays on loopback: streams that
//! arrive while their accept loop is busy wait for it, up to the queue's
//! bound, and past it their openers hear of the reset.

use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::testing::TestNetwork;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::StreamProtocol;
use tokio::task::JoinSet;

use super::{INBOUND_QUEUE, Incoming, StreamOpenError};
use crate::ledger::{EmbeddedLedger, Ledger};
use crate::link::{LinkContext, LinkLimits};
use crate::overlay::{Overlay, OverlayConfig};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/carrier/test-streams/1");
const WAIT: Duration = Duration::from_secs(30);

async fn overlay(device: Identity, net: &TestNetwork) -> Overlay {
    let ledger = Arc::new(EmbeddedLedger::in_memory(net.ledger.clone()));
    let did = device.did();
    let ctx = Arc::new(LinkContext::new(device, did, ledger as Arc<dyn Ledger>, LinkLimits::default()));
    let config = OverlayConfig { listen: "127.0.0.1:0".parse().unwrap(), ..OverlayConfig::default() };
    Overlay::start(ctx, config).await.unwrap().0
}

/// An acceptor and `openers` overlays linked to it.
async fn network(openers: usize) -> (Overlay, Vec<Overlay>) {
    let mut net = TestNetwork::new("streams");
    let devices: Vec<_> = (0..=openers).map(|_| net.register_device()).collect();
    let mut overlays = Vec::new();
    for device in devices {
        overlays.push(overlay(device, &net).await);
    }
    let acceptor = overlays.remove(0);
    for opener in &overlays {
        tokio::time::timeout(WAIT, opener.dial(acceptor.listen_addr().clone())).await.unwrap().unwrap();
    }
    (acceptor, overlays)
}

/// Opens `count` streams at once, each sending one byte and reading one
/// back; each task ends with whether its stream got its answer.
fn open_all(opener: &Overlay, to: libp2p::PeerId, count: usize, opens: &mut JoinSet<bool>) {
    for _ in 0..count {
        let control = opener.stream_control();
        opens.spawn(async move {
            let Ok(mut stream) = control.open_stream(to, PROTOCOL).await else { return false };
            let mut byte = [0u8; 1];
            stream.write_all(b"x").await.is_ok() && stream.read_exact(&mut byte).await.is_ok()
        });
    }
}

/// Waits until `count` streams wait in `incoming`.
async fn until_waiting(incoming: &Incoming, count: usize) {
    let waited = tokio::time::timeout(WAIT, async {
        while incoming.waiting() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    waited.await.unwrap_or_else(|_| panic!("{} streams wait, not {count}", incoming.waiting()));
}

/// Takes `count` streams and echoes each one's byte.
async fn answer(incoming: &mut Incoming, count: usize) {
    for _ in 0..count {
        let (_, mut stream) = tokio::time::timeout(WAIT, incoming.next()).await.unwrap().unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        stream.write_all(&byte).await.unwrap();
        stream.flush().await.unwrap();
        // Kept open until the opener has read: dropped, it would reset.
        tokio::spawn(async move { stream.read_to_end(&mut Vec::new()).await });
    }
}

#[tokio::test]
async fn streams_that_arrive_while_the_accept_loop_is_busy_all_reach_it() {
    let (acceptor, openers) = network(1).await;
    let mut incoming = acceptor.stream_control().accept(PROTOCOL).unwrap();
    let mut opens = JoinSet::new();
    open_all(&openers[0], acceptor.peer_id(), 100, &mut opens);
    // Nothing is taken until every stream has arrived.
    until_waiting(&incoming, 100).await;
    answer(&mut incoming, 100).await;
    while let Some(open) = tokio::time::timeout(WAIT, opens.join_next()).await.unwrap() {
        assert!(open.unwrap(), "a stream was dropped");
    }
}

#[tokio::test]
async fn past_the_queue_the_openers_hear_their_streams_were_reset() {
    // A link carries at most 256 streams at once, so the surplus comes
    // over a second one.
    let (acceptor, openers) = network(2).await;
    let mut incoming = acceptor.stream_control().accept(PROTOCOL).unwrap();
    let (per_opener, extra) = (INBOUND_QUEUE / 2 + 10, 20);
    let mut opens = JoinSet::new();
    for opener in &openers {
        open_all(opener, acceptor.peer_id(), per_opener, &mut opens);
    }
    until_waiting(&incoming, INBOUND_QUEUE).await;
    // The surplus fails while the queued ones still wait.
    let mut failed = 0;
    while failed < extra {
        let open = tokio::time::timeout(WAIT, opens.join_next()).await.unwrap().unwrap();
        assert!(!open.unwrap(), "a stream was answered before any was taken");
        failed += 1;
    }
    answer(&mut incoming, INBOUND_QUEUE).await;
    while let Some(open) = tokio::time::timeout(WAIT, opens.join_next()).await.unwrap() {
        assert!(open.unwrap(), "a queued stream was dropped");
    }
}

#[tokio::test]
async fn a_protocol_has_one_accept_loop_and_an_unlinked_peer_no_stream() {
    let (acceptor, openers) = network(1).await;
    let control = acceptor.stream_control();
    let first = control.accept(PROTOCOL).unwrap();
    assert!(control.accept(PROTOCOL).is_err());
    drop(first);
    assert!(control.accept(PROTOCOL).is_ok(), "a dropped accept loop frees its protocol");
    let stranger = Identity::generate(IdentityKind::Device).libp2p_keypair().public().to_peer_id();
    let unlinked = openers[0].stream_control().open_stream(stranger, PROTOCOL).await;
    assert!(matches!(unlinked, Err(StreamOpenError::NotLinked(_))), "{unlinked:?}");
}

/// The opener's links to `peer`, oldest first, with their open streams.
fn links(control: &super::StreamControl, peer: libp2p::PeerId) -> Vec<(libp2p::swarm::ConnectionId, usize)> {
    let shared = super::lock(&control.shared);
    shared.links.get(&peer).into_iter().flatten().map(|l| (l.connection, l.open.get())).collect()
}

#[tokio::test]
async fn streams_are_counted_per_link_and_a_retired_link_gets_no_new_ones() {
    let (acceptor, openers) = network(1).await;
    let (opener, to) = (&openers[0], acceptor.peer_id());
    // A second link to the same peer, as when a direct link replaces a
    // relayed one.
    tokio::time::timeout(WAIT, opener.dial(acceptor.listen_addr().clone())).await.unwrap().unwrap();
    let control = opener.stream_control();
    tokio::time::timeout(WAIT, async {
        while links(&control, to).len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the second link never showed");
    let mut incoming = acceptor.stream_control().accept(PROTOCOL).unwrap();
    let (old, new) = (links(&control, to)[0].0, links(&control, to)[1].0);

    // The newest link takes a new stream.
    let first = control.open_stream(to, PROTOCOL).await.unwrap();
    let (_, first_in) = tokio::time::timeout(WAIT, incoming.next()).await.unwrap().unwrap();
    assert_eq!(links(&control, to), [(old, 0), (new, 1)]);
    assert_eq!(control.open_streams(new), 1);

    // Retired, it keeps its stream but new ones go to the other link.
    control.set_retired(new, true);
    let second = control.open_stream(to, PROTOCOL).await.unwrap();
    let (_, second_in) = tokio::time::timeout(WAIT, incoming.next()).await.unwrap().unwrap();
    assert_eq!(links(&control, to), [(old, 1), (new, 1)]);

    // Once its stream ends, the retired link carries none: it may close.
    drop((first, first_in));
    assert_eq!(control.open_streams(new), 0);
    assert_eq!(control.open_streams(old), 1);
    drop((second, second_in));
    assert_eq!(control.open_streams(old), 0);
}
