//! Relayed-link tests: two link contexts joined by an in-memory "relay"
//! that copies (and can tamper with) every byte, as a relay in the middle
//! would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use carrier_proto::handshake::circuit;
use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::testing::TestNetwork;
use futures::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use super::*;
use crate::ledger::EmbeddedLedger;
use crate::link::LinkLimits;

const WAIT: Duration = Duration::from_secs(10);

fn context(identity: Identity, net: &TestNetwork) -> Arc<LinkContext> {
    let did = identity.did();
    let ledger = Arc::new(EmbeddedLedger::in_memory(net.ledger.clone()));
    Arc::new(LinkContext::new(identity, did, ledger, LinkLimits::default()))
}

/// What the relay saw, and whether it should flip a byte of the first
/// record it carries from dialer to listener after `after` bytes.
#[derive(Default)]
struct Relay {
    seen: Mutex<Vec<u8>>,
}

/// Two stream ends joined through a relay task; `flip_at` alters the byte
/// at that offset of the dialer-to-listener direction.
fn circuit_through(relay: &Arc<Relay>, flip_at: Option<usize>) -> (Compat<DuplexStream>, Compat<DuplexStream>) {
    let (dialer, relay_dialer) = tokio::io::duplex(1 << 20);
    let (relay_listener, listener) = tokio::io::duplex(1 << 20);
    let (mut from_dialer, mut to_dialer) = tokio::io::split(relay_dialer);
    let (mut from_listener, mut to_listener) = tokio::io::split(relay_listener);
    let forward = Arc::clone(relay);
    tokio::spawn(async move {
        let (mut buf, mut offset) = (vec![0u8; 4096], 0usize);
        while let Ok(n @ 1..) = from_dialer.read(&mut buf).await {
            forward.seen.lock().unwrap().extend_from_slice(&buf[..n]);
            if let Some(at) = flip_at.filter(|at| (offset..offset + n).contains(at)) {
                buf[at - offset] ^= 1;
            }
            offset += n;
            if to_listener.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let back = Arc::clone(relay);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n @ 1..) = from_listener.read(&mut buf).await {
            back.seen.lock().unwrap().extend_from_slice(&buf[..n]);
            if to_dialer.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    (dialer.compat(), listener.compat())
}

fn binding(dialer: &Identity, listener: &Identity) -> ChannelBinding {
    let id = |i: &Identity| i.public_keys().signing.peer_id().to_bytes();
    circuit::binding(&id(dialer), &id(listener))
}

type Ends =
    (Result<RelayedLink<Compat<DuplexStream>>, LinkError>, Result<RelayedLink<Compat<DuplexStream>>, LinkError>);

async fn handshake(
    (a, a_binding): (&LinkContext, ChannelBinding),
    (b, b_binding): (&LinkContext, ChannelBinding),
    claimed: Option<Did>,
    ios: (Compat<DuplexStream>, Compat<DuplexStream>),
) -> Ends {
    let both =
        async { tokio::join!(a.dial_circuit(ios.0, a_binding, b.did()), b.accept_circuit(ios.1, b_binding, claimed)) };
    tokio::time::timeout(WAIT, both).await.expect("circuit handshake hung")
}

#[tokio::test]
async fn a_relayed_link_is_admitted_end_to_end_and_the_relay_sees_only_records() {
    let mut net = TestNetwork::new("circuits");
    let (a, b) = (net.register_device(), net.register_device());
    let bind = binding(&a, &b);
    let (ctx_a, ctx_b) = (context(a, &net), context(b, &net));
    let relay = Arc::new(Relay::default());
    let (to_b, to_a) =
        handshake((&ctx_a, bind), (&ctx_b, bind), Some(ctx_a.did()), circuit_through(&relay, None)).await;
    let (mut to_b, mut to_a) = (to_b.unwrap(), to_a.unwrap());
    assert_eq!((to_b.peer.did, to_a.peer.did), (ctx_b.did(), ctx_a.did()));

    let secret = b"the launch code is 0000, and it is long enough to find".repeat(2000);
    to_b.stream.write_all(&secret).await.unwrap();
    to_b.stream.flush().await.unwrap();
    let mut got = vec![0u8; secret.len()];
    to_a.stream.read_exact(&mut got).await.unwrap();
    assert_eq!(got, secret);
    to_a.stream.write_all(b"ack").await.unwrap();
    to_a.stream.flush().await.unwrap();
    let mut ack = [0u8; 3];
    to_b.stream.read_exact(&mut ack).await.unwrap();
    assert_eq!(&ack, b"ack");

    let seen = relay.seen.lock().unwrap().clone();
    assert!(seen.len() > secret.len(), "the relay carried everything");
    assert!(!seen.windows(16).any(|w| w == &secret[..16]), "the relay saw plaintext");
    // Both ends count the sealed bytes on their registered link.
    assert!(ctx_a.traffic(&ctx_b.did()).1 > secret.len() as u64);
    assert!(ctx_b.traffic(&ctx_a.did()).0 > secret.len() as u64);
}

#[tokio::test]
async fn a_stranger_over_a_circuit_is_refused_and_hears_why() {
    let mut net = TestNetwork::new("circuits");
    let b = net.register_device();
    let stranger = Identity::generate(IdentityKind::Device);
    let bind = binding(&stranger, &b);
    let (ctx_s, ctx_b) = (context(stranger, &net), context(b, &net));
    let relay = Arc::new(Relay::default());
    let (dialer, listener) = handshake((&ctx_s, bind), (&ctx_b, bind), None, circuit_through(&relay, None)).await;
    assert!(
        matches!(listener, Err(LinkError::Refused(ref e)) if e.reason == Refusal::UnknownIdentity),
        "{:?}",
        listener.err()
    );
    assert!(matches!(dialer, Err(LinkError::RefusedByPeer(Refusal::UnknownIdentity))), "{:?}", dialer.err());
    assert_eq!(ctx_b.traffic(&ctx_s.did()), (0, 0), "a refused stranger holds no link");
}

#[tokio::test]
async fn a_relay_that_names_another_dialer_breaks_the_handshake() {
    let mut net = TestNetwork::new("circuits");
    let (a, b, c) = (net.register_device(), net.register_device(), net.register_device());
    // The relay tells B that C is dialing, while A is.
    let (dialer_view, listener_view) = (binding(&a, &b), binding(&c, &b));
    let c_did = c.did();
    let (ctx_a, ctx_b) = (context(a, &net), context(b, &net));
    let relay = Arc::new(Relay::default());
    let (dialer, listener) =
        handshake((&ctx_a, dialer_view), (&ctx_b, listener_view), Some(c_did), circuit_through(&relay, None)).await;
    assert!(
        matches!(listener, Err(LinkError::Refused(ref e)) if e.reason == Refusal::BadBinding),
        "{:?}",
        listener.err()
    );
    assert!(matches!(dialer, Err(LinkError::RefusedByPeer(Refusal::BadBinding))), "{:?}", dialer.err());
}

#[tokio::test]
async fn a_record_altered_by_the_relay_ends_the_link_and_hands_on_nothing() {
    let mut net = TestNetwork::new("circuits");
    let (a, b) = (net.register_device(), net.register_device());
    let bind = binding(&a, &b);
    let (ctx_a, ctx_b) = (context(a, &net), context(b, &net));
    let relay = Arc::new(Relay::default());
    // Past the handshake (hello + verdict are well under 1,000 bytes).
    let (to_b, to_a) = handshake((&ctx_a, bind), (&ctx_b, bind), None, circuit_through(&relay, Some(1_000 + 40))).await;
    let (mut to_b, mut to_a) = (to_b.unwrap(), to_a.unwrap());
    to_b.stream.write_all(&[5u8; 4000]).await.unwrap();
    to_b.stream.flush().await.unwrap();
    let mut buf = vec![0u8; 4000];
    let error = to_a.stream.read(&mut buf).await.expect_err("an altered record was handed on");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn revoking_a_device_cuts_its_relayed_link_even_while_it_is_idle() {
    let mut net = TestNetwork::new("circuits");
    let (a, b) = (net.register_device(), net.register_device());
    let a_did = a.did();
    let bind = binding(&a, &b);
    let (ctx_a, ctx_b) = (context(a, &net), context(b, &net));
    let relay = Arc::new(Relay::default());
    let (to_b, to_a) = handshake((&ctx_a, bind), (&ctx_b, bind), None, circuit_through(&relay, None)).await;
    let (_to_b, mut to_a) = (to_b.unwrap(), to_a.unwrap());
    // B is waiting on A when B's ledger learns A is revoked.
    let waiting = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        to_a.stream.read(&mut buf).await
    });
    ctx_b.ledger.submit(vec![net.revoke(a_did)]).unwrap();
    let cuts = ctx_b.enforce_all();
    assert_eq!(cuts.iter().map(|c| (c.did, c.reason)).collect::<Vec<_>>(), [(a_did, Refusal::Revoked)]);
    let read = tokio::time::timeout(WAIT, waiting).await.expect("the cut link stayed open").unwrap();
    assert_eq!(read.expect_err("the cut link still read").kind(), std::io::ErrorKind::ConnectionAborted);
}
