//! The gate under a feed that falls behind: a revocation buried in more
//! updates than the feed holds still cuts the link.

use std::sync::Arc;

use carrier_proto::identity::IdentityKind;
use carrier_proto::testing::TestNetwork;
use libp2p::swarm::{NetworkBehaviour, ToSwarm};

use super::{Behaviour, GateEvent};
use crate::ledger::{EmbeddedLedger, Ledger};
use crate::link::{LinkContext, LinkLimits, quic};

#[tokio::test(flavor = "current_thread")]
async fn a_revocation_lost_from_a_lagging_feed_still_cuts_the_link() {
    let mut net = TestNetwork::new("gate");
    let (a, b) = (net.register_device(), net.register_device());
    let (a_did, b_did) = (a.did(), b.did());
    let ledger = |net: &TestNetwork| Arc::new(EmbeddedLedger::in_memory(net.ledger.clone())) as Arc<dyn Ledger>;
    let ctx_a = Arc::new(LinkContext::new(a, a_did, ledger(&net), LinkLimits::default()));
    let ctx_b = Arc::new(LinkContext::new(b, b_did, ledger(&net), LinkLimits::default()));
    let (end_a, end_b) = (
        quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap(),
        quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap(),
    );
    let addr_b = end_b.local_addr().unwrap();
    let accept = async { ctx_b.accept(end_b.accept().await.unwrap()).await.unwrap() };
    let (dialed, _accepted) = tokio::join!(ctx_a.dial(&end_a, addr_b, Some(b_did)), accept);
    let dialed = dialed.unwrap();
    let mut gate = Behaviour::new(Arc::clone(&ctx_b));
    // The revocation, then more updates than the feed holds, with no
    // chance for the gate's task to run in between (one thread).
    ctx_b.ledger.submit(vec![net.revoke(a_did)]).unwrap();
    for _ in 0..300 {
        let device = carrier_proto::identity::Identity::generate(IdentityKind::Device);
        let op =
            carrier_proto::ledger::Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
        let entry = net.append_by_registrar(op);
        ctx_b.ledger.submit(vec![entry]).unwrap();
    }
    let cut = std::future::poll_fn(|cx| gate.poll(cx));
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), cut).await.expect("the gate did nothing");
    assert!(matches!(first, ToSwarm::CloseConnection { .. }), "{first:?}");
    let event = std::future::poll_fn(|cx| gate.poll(cx)).await;
    assert!(matches!(event, ToSwarm::GenerateEvent(GateEvent::Revoked { did, .. }) if did == a_did), "{event:?}");
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), dialed.connection.closed()).await.unwrap();
    let code = match closed {
        quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
        other => panic!("{other:?}"),
    };
    assert_eq!(code, u64::from(carrier_proto::handshake::Refusal::Revoked.code()));
}
