//! Delivery's rules without daemons: a two-party harness (device A sends,
//! device B receives), each with its own copy of the ledger, moves
//! envelopes from A to B's [`Inbox`] the way A's courier would, and plays
//! B's app through its session queue. Every receiving rule gets a test that
//! tries to break it.

use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::{Did, Identity, IdentityKind};
use carrier_proto::ledger::Op;
use carrier_proto::messaging::{AllowList, MessageId};
use carrier_proto::pb::{self, Outcome};
use carrier_proto::testing::TestNetwork;
use tokio::sync::{mpsc, oneshot};

use super::{Delivery, Incoming, MessagingConfig};
use crate::ledger::{EmbeddedLedger, Ledger};
use crate::link::{LinkContext, LinkLimits};
use crate::overlay::{Overlay, OverlayConfig};
use crate::protocols::messages::{Inbox, ReceiptSink, await_verdict};
use crate::protocols::{Router, Verdict};
use crate::tasks::Tasks;

const MAX: usize = 1024;

/// One device: its delivery, over its own copy of the ledger.
struct Party {
    device: Did,
    ledger: Arc<EmbeddedLedger>,
    delivery: Arc<Delivery>,
}

impl Party {
    async fn start(device: Identity, net: &TestNetwork) -> Self {
        let ledger = Arc::new(EmbeddedLedger::in_memory(net.ledger.clone()));
        let did = device.did();
        let ctx =
            Arc::new(LinkContext::new(device, did, Arc::clone(&ledger) as Arc<dyn Ledger>, LinkLimits::default()));
        let config = OverlayConfig { listen: "127.0.0.1:0".parse().unwrap(), ..OverlayConfig::default() };
        let (overlay, _) = Overlay::start(Arc::clone(&ctx), config).await.unwrap();
        let router = Router::new(&overlay, Arc::clone(&ctx.ledger), Tasks::new(), Tasks::new());
        let delivery =
            Delivery::start(did, Arc::clone(&ctx.ledger), overlay, router, MessagingConfig { max_message: MAX });
        Self { device: did, ledger, delivery }
    }

    /// Plays `app`'s session: what the daemon hands the app arrives here.
    fn connect(&self, app: Did) -> mpsc::Receiver<Incoming> {
        let (tx, rx) = mpsc::channel(16);
        self.delivery.sessions().register(app, tx).unwrap();
        rx
    }
}

/// Devices A and B, app `a` on A, apps `b` and `b2` on B.
struct Harness {
    net: TestNetwork,
    a: Party,
    b: Party,
    app_a: Identity,
    app_b: Identity,
    app_b2: Identity,
    seq: u64,
}

fn register_app(net: &mut TestNetwork, device: &Identity) -> Identity {
    let app = Identity::generate(IdentityKind::App);
    let consent = carrier_proto::ledger::Consent::sign(&app, &device.did(), &net.ledger.network().unwrap().id);
    let op =
        Op::RegisterApp { did: app.did(), keys: app.public_keys(), device: device.did(), name: "app".into(), consent };
    net.append(op, device);
    app
}

impl Harness {
    async fn new() -> Self {
        let mut net = TestNetwork::new("t");
        let (dev_a, dev_b) = (net.register_device(), net.register_device());
        let app_a = register_app(&mut net, &dev_a);
        let app_b = register_app(&mut net, &dev_b);
        let app_b2 = register_app(&mut net, &dev_b);
        let (a, b) = (Party::start(dev_a, &net).await, Party::start(dev_b, &net).await);
        Self { net, a, b, app_a, app_b, app_b2, seq: 0 }
    }

    /// An envelope as A's courier sends it.
    fn envelope(&mut self, from: &Did, to: &Did, payload: &[u8]) -> pb::Envelope {
        self.seq += 1;
        pb::Envelope {
            epoch: [7; 16].to_vec(),
            seq: self.seq,
            from_app: from.key_bytes(),
            to_app: to.key_bytes(),
            payload: payload.to_vec(),
        }
    }

    /// Hands `envelope` to B as if it came over the link from `device`.
    async fn arrive(&self, device: Did, envelope: pb::Envelope) -> Result<oneshot::Receiver<Verdict>, Outcome> {
        self.b.delivery.offer(device, envelope).await.map_err(|f| f.outcome)
    }

    /// Revokes `did` on both copies of the ledger.
    fn revoke(&mut self, did: Did) {
        let entry = self.net.revoke(did);
        self.a.ledger.append(entry.clone()).unwrap();
        self.b.ledger.append(entry).unwrap();
    }
}

/// The app takes the next message and acknowledges it.
async fn take(session: &mut mpsc::Receiver<Incoming>) -> (Did, Vec<u8>) {
    match tokio::time::timeout(Duration::from_secs(5), session.recv()).await.unwrap().unwrap() {
        Incoming::Message { from_app, payload, verdict, .. } => {
            let _ = verdict.send(Ok(()));
            (from_app, payload)
        }
        Incoming::Stream { .. } => panic!("expected a message"),
    }
}

#[tokio::test]
async fn a_message_reaches_its_app_and_the_apps_ack_is_the_verdict() {
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    let mut session = h.b.connect(to);
    let envelope = h.envelope(&from, &to, b"hello");
    let verdict = h.arrive(h.a.device, envelope).await.unwrap();
    assert_eq!(take(&mut session).await, (from, b"hello".to_vec()));
    assert_eq!(await_verdict(verdict).await, Ok(()));
}

#[tokio::test]
async fn rejects_a_sender_that_is_not_an_app_of_the_sending_device() {
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    let _session = h.b.connect(to);
    // A's app, but arriving over a link from B's own device: an impostor.
    let envelope = h.envelope(&from, &to, b"x");
    assert_eq!(h.arrive(h.b.device, envelope).await.err(), Some(Outcome::Refused));
    // A device posing as the sending app.
    let device = h.a.device;
    let envelope = h.envelope(&device, &to, b"x");
    assert_eq!(h.arrive(h.a.device, envelope).await.err(), Some(Outcome::Refused));
}

#[tokio::test]
async fn rejects_a_recipient_that_is_not_an_app_of_this_device() {
    let mut h = Harness::new().await;
    let from = h.app_a.did();
    // A's own app, delivered to B.
    let envelope = h.envelope(&from, &from, b"x");
    assert_eq!(h.arrive(h.a.device, envelope).await.err(), Some(Outcome::UnknownRecipient));
    // A key no ledger knows.
    let stranger = Identity::generate(IdentityKind::App).did();
    let envelope = h.envelope(&from, &stranger, b"x");
    assert_eq!(h.arrive(h.a.device, envelope).await.err(), Some(Outcome::UnknownRecipient));
}

#[tokio::test]
async fn rejects_a_replayed_or_stale_message() {
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    let mut session = h.b.connect(to);
    let first = h.envelope(&from, &to, b"1");
    let second = h.envelope(&from, &to, b"2");
    let verdict = h.arrive(h.a.device, second.clone()).await.unwrap();
    take(&mut session).await;
    assert_eq!(await_verdict(verdict).await, Ok(()));
    assert_eq!(h.arrive(h.a.device, second).await.err(), Some(Outcome::Refused), "replayed");
    assert_eq!(h.arrive(h.a.device, first).await.err(), Some(Outcome::Refused), "older than one delivered");
}

#[tokio::test]
async fn rejects_an_oversized_message() {
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    let _session = h.b.connect(to);
    let envelope = h.envelope(&from, &to, &vec![0; MAX + 1]);
    assert_eq!(h.arrive(h.a.device, envelope).await.err(), Some(Outcome::TooLarge));
}

#[tokio::test]
async fn the_recipients_allow_list_refuses_others_and_an_absent_app_is_not_running() {
    let mut h = Harness::new().await;
    let (from, to, absent) = (h.app_a.did(), h.app_b.did(), h.app_b2.did());
    let _session = h.b.connect(to);
    let session = h.b.delivery.sessions().session(&to).unwrap();
    session.access.write().unwrap().messages = AllowList::only([absent]);
    let envelope = h.envelope(&from, &to, b"x");
    assert_eq!(h.arrive(h.a.device, envelope).await.err(), Some(Outcome::Refused));
    let envelope = h.envelope(&from, &absent, b"x");
    assert_eq!(h.arrive(h.a.device, envelope).await.err(), Some(Outcome::AppNotRunning));
}

#[tokio::test]
async fn a_revoked_sender_or_recipient_is_refused() {
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    let _session = h.b.connect(to);
    h.revoke(to);
    let envelope = h.envelope(&from, &to, b"x");
    assert_eq!(h.arrive(h.a.device, envelope).await.err(), Some(Outcome::Revoked));
    h.revoke(from);
    let envelope = h.envelope(&from, &h.app_b2.did(), b"x");
    assert_eq!(h.arrive(h.a.device, envelope).await.err(), Some(Outcome::Refused));
}

#[tokio::test]
async fn sending_checks_the_sender_and_routes_local_recipients_without_the_network() {
    let h = Harness::new().await;
    let (b, b2) = (h.app_b.did(), h.app_b2.did());
    let mut session = h.b.connect(b2);
    let (tx, mut receipts) = mpsc::unbounded_channel();
    h.b.delivery.send(b, b2, b"local".to_vec(), ReceiptSink { tx: tx.clone(), request: 1, bytes: 0 }).await;
    assert_eq!(take(&mut session).await, (b, b"local".to_vec()));
    let receipt = receipts.recv().await.unwrap();
    assert_eq!((receipt.request, receipt.verdict), (1, Ok(())));
    let MessageId { seq, .. } = receipt.message_id.unwrap();
    assert_eq!(seq, 1);
    // A device is no app to send to; a message over the limit never leaves.
    h.b.delivery.send(b, h.a.device, b"x".to_vec(), ReceiptSink { tx: tx.clone(), request: 2, bytes: 0 }).await;
    let refused = receipts.recv().await.unwrap();
    assert_eq!(refused.verdict.map_err(|f| f.outcome), Err(Outcome::UnknownRecipient));
    h.b.delivery.send(b, b2, vec![0; MAX + 1], ReceiptSink { tx, request: 3, bytes: 0 }).await;
    let refused = receipts.recv().await.unwrap();
    assert_eq!(refused.verdict.map_err(|f| f.outcome), Err(Outcome::TooLarge));
}

#[tokio::test]
async fn one_session_per_app_and_a_stale_unregister_keeps_the_newer_one() {
    let h = Harness::new().await;
    let app = h.app_b.did();
    let sessions = h.b.delivery.sessions();
    let (tx, _rx) = mpsc::channel(1);
    let first = sessions.register(app, tx.clone()).unwrap();
    assert!(sessions.register(app, tx.clone()).is_none(), "a second session for one app");
    sessions.unregister(&app, first.id);
    let second = sessions.register(app, tx).unwrap();
    sessions.unregister(&app, first.id);
    assert_eq!(sessions.session(&app).map(|s| s.id), Some(second.id));
    assert_eq!(h.b.delivery.connected_apps(), vec![app]);
}

#[tokio::test]
async fn a_stream_token_is_its_apps_alone() {
    let h = Harness::new().await;
    let (owner, other, from) = (h.app_b.did(), h.app_b2.did(), h.app_a.did());
    let sessions = h.b.delivery.sessions();
    let (token, _accepted) = sessions.expect_stream(owner, from, h.a.device, "svc".into());
    assert!(sessions.claim_stream(&other, token).is_none(), "another app's token");
    let claim = sessions.claim_stream(&owner, token).unwrap();
    assert_eq!((claim.from_app, claim.service.as_str()), (from, "svc"));
    assert!(sessions.claim_stream(&owner, token).is_none(), "a token is taken once");
}
