//! Delivery's rules without daemons: a two-party harness (device A sends,
//! device B receives), each with its own copy of the ledger (and its
//! message store in memory), moves envelopes from A to B's [`Inbox`] the
//! way A's courier would, and plays B's app the way its session does. Every
//! receiving rule gets a test that tries to break it.

use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::{Did, Identity, IdentityKind};
use carrier_proto::ledger::Op;
use carrier_proto::messaging::{AllowList, MessageId};
use carrier_proto::pb::{self, Outcome};
use carrier_proto::testing::TestNetwork;
use prost::Message as _;
use tokio::sync::mpsc;

use super::{Access, Delivery, Incoming, MessagingConfig, SendOptions};
use crate::ledger::{EmbeddedLedger, Ledger};
use crate::link::{LinkContext, LinkLimits};
use crate::overlay::{Overlay, OverlayConfig};
use crate::protocols::messages::{Answer, Inbox, Offered, Progress, ProgressRx, ReceiptSink, Watcher};
use crate::protocols::{Router, Verdict};
use crate::tasks::Tasks;
use carrier_proto::ledger::Directory;

const MAX: usize = 1024;
use super::quota::SHARE;

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
        // Each sending app's share of an inbox, and each depositor's of a
        // mailbox, holds four of the largest messages.
        let blob = super::quota::cost(MAX + carrier_proto::messaging::FRAME_OVERHEAD / 2);
        let config = MessagingConfig {
            max_message: MAX,
            max_inbox_bytes: 4 * SHARE * super::quota::cost(MAX),
            mailbox_blobs_per_recipient: 4 * SHARE,
            mailbox_bytes_per_recipient: 4 * SHARE * blob,
            mailbox_bytes_per_sender: 6 * blob,
            ..MessagingConfig::default()
        };
        let delivery = Delivery::start(Arc::clone(&ctx), overlay, router, config).unwrap();
        Self { device: did, ledger, delivery }
    }

    /// Plays `app`'s session.
    fn connect(&self, app: Did) -> AppPlay {
        let (tx, _streams) = mpsc::channel(16);
        self.delivery.sessions().register(app, tx).unwrap();
        AppPlay { delivery: Arc::clone(&self.delivery), app, cursor: 0, _streams }
    }
}

/// An app's session, as the session's writer and reader play it.
struct AppPlay {
    delivery: Arc<Delivery>,
    app: Did,
    cursor: u64,
    _streams: mpsc::Receiver<Incoming>,
}

impl AppPlay {
    fn access(&self) -> Access {
        self.delivery.sessions().session(&self.app).map(|s| s.access.read().unwrap().clone()).unwrap_or_default()
    }

    /// The next message, without acknowledging it.
    async fn next(&mut self) -> (u64, Did, Vec<u8>) {
        let wake = self.delivery.inbox_wake(self.app);
        let next = async {
            loop {
                if let Some(Incoming::Message { delivery, from_app, payload, .. }) =
                    self.delivery.next_incoming(&self.app, self.cursor, &self.access())
                {
                    return (delivery, from_app, payload);
                }
                wake.notified().await;
            }
        };
        let (delivery, from, payload) = tokio::time::timeout(Duration::from_secs(5), next).await.unwrap();
        self.cursor = delivery;
        (delivery, from, payload)
    }

    /// The app takes the next message and acknowledges it.
    async fn take(&mut self) -> (Did, Vec<u8>) {
        let (delivery, from, payload) = self.next().await;
        self.delivery.taken(self.app, vec![delivery]);
        (from, payload)
    }

    /// Nothing is waiting for the app.
    fn nothing_waiting(&self) -> bool {
        self.delivery.next_incoming(&self.app, self.cursor, &self.access()).is_none()
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
            expires_at_ms: 0,
            epoch_started_ms: 1_000,
        }
    }

    /// Hands `envelope` to B as if it came over the link from `device`:
    /// once held (on disk), the verdict to come.
    async fn arrive(&self, device: Did, envelope: pb::Envelope) -> Result<ProgressRx, Outcome> {
        let (watchers, mut progress) = Watcher::channel();
        match self.b.delivery.offer(device, envelope, watchers.watch(0)) {
            Offered::Held => match progress.recv().await.unwrap().1 {
                Progress::Stored => Ok(progress),
                Progress::Taken(verdict) => Err(verdict.err().unwrap().outcome),
            },
            Offered::Final(Ok(())) => Err(Outcome::Delivered),
            Offered::Final(Err(failure)) => Err(failure.outcome),
            Offered::Busy => Err(Outcome::QueueFull),
        }
    }

    /// Revokes `did` on both copies of the ledger.
    fn revoke(&mut self, did: Did) {
        let entry = self.net.revoke(did);
        self.a.ledger.append(entry.clone()).unwrap();
        self.b.ledger.append(entry).unwrap();
    }
}

/// What became of a held message: the Taken its watcher hears.
async fn await_verdict(mut progress: ProgressRx) -> Verdict {
    loop {
        match progress.recv().await.expect("the receiving side ended before the message's end").1 {
            Progress::Stored => continue,
            Progress::Taken(verdict) => return verdict,
        }
    }
}

#[tokio::test]
async fn a_message_reaches_its_app_and_the_apps_ack_is_the_verdict() {
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    let mut session = h.b.connect(to);
    let envelope = h.envelope(&from, &to, b"hello");
    let verdict = h.arrive(h.a.device, envelope).await.unwrap();
    assert_eq!(session.take().await, (from, b"hello".to_vec()));
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
    session.take().await;
    assert_eq!(await_verdict(verdict).await, Ok(()));
    // Offered again (the sender missed the receipt): it was delivered, and
    // the app does not get it twice.
    assert_eq!(h.arrive(h.a.device, second).await.err(), Some(Outcome::Delivered), "replayed");
    // One that came late (by another path) is not lost: it is taken once.
    let late = h.arrive(h.a.device, first.clone()).await.unwrap();
    assert_eq!(session.take().await, (from, b"1".to_vec()));
    assert_eq!(await_verdict(late).await, Ok(()));
    assert_eq!(h.arrive(h.a.device, first).await.err(), Some(Outcome::Delivered), "and replayed, not again");
    assert!(session.nothing_waiting());
    // Messages of older runs of the sender, once four newer runs were
    // seen, are replays: refused, never handed over.
    for started in [2_000, 3_000, 4_000, 5_000] {
        let mut newer = h.envelope(&from, &to, b"run");
        (newer.epoch, newer.epoch_started_ms) = (vec![(started / 1000) as u8; 16], started);
        let verdict = h.arrive(h.a.device, newer).await.unwrap();
        session.take().await;
        assert_eq!(await_verdict(verdict).await, Ok(()));
    }
    let mut stale = h.envelope(&from, &to, b"old run");
    stale.epoch_started_ms = 500;
    stale.epoch = vec![9; 16];
    assert_eq!(h.arrive(h.a.device, stale).await.err(), Some(Outcome::Refused));
    assert!(session.nothing_waiting());
}

#[tokio::test]
async fn a_message_offered_again_while_held_is_held_once_and_both_hear_the_verdict() {
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    let envelope = h.envelope(&from, &to, b"once");
    // The app is not connected: the message waits for it.
    let first = h.arrive(h.a.device, envelope.clone()).await.unwrap();
    let again = h.arrive(h.a.device, envelope).await.unwrap();
    let mut session = h.b.connect(to);
    assert_eq!(session.take().await, (from, b"once".to_vec()));
    assert!(session.nothing_waiting());
    assert_eq!(await_verdict(first).await, Ok(()));
    assert_eq!(await_verdict(again).await, Ok(()));
}

#[tokio::test]
async fn a_full_inbox_makes_senders_wait_and_frees_up_as_the_app_takes() {
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    let mut session = h.b.connect(to);
    for i in 0..4 {
        let envelope = h.envelope(&from, &to, &vec![i; MAX]);
        h.arrive(h.a.device, envelope).await.unwrap();
    }
    let over = h.envelope(&from, &to, &[9; 8]);
    assert_eq!(h.arrive(h.a.device, over.clone()).await.err(), Some(Outcome::QueueFull), "busy");
    // Another app of the same device is not held up.
    let other = h.app_b2.did();
    let envelope = h.envelope(&from, &other, b"other");
    h.arrive(h.a.device, envelope).await.unwrap();
    // Once the app takes a message there is room again.
    session.take().await;
    let wake = h.b.delivery.inbox_wake(to);
    tokio::time::timeout(Duration::from_secs(5), async {
        while h.b.delivery.lock_held().usage_of(&to, &from).1.records > 3 {
            tokio::select! { _ = wake.notified() => {}, _ = tokio::time::sleep(Duration::from_millis(10)) => {} }
        }
    })
    .await
    .unwrap();
    h.arrive(h.a.device, over).await.unwrap();
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
async fn the_recipients_allow_list_refuses_others_and_a_retry_hears_the_same() {
    let mut h = Harness::new().await;
    let (from, to, other) = (h.app_a.did(), h.app_b.did(), h.app_b2.did());
    let session = h.b.connect(to);
    let handle = h.b.delivery.sessions().session(&to).unwrap();
    handle.access.write().unwrap().messages = AllowList::only([other]);
    let envelope = h.envelope(&from, &to, b"x");
    let verdict = h.arrive(h.a.device, envelope.clone()).await.unwrap();
    assert!(session.nothing_waiting(), "the app never sees a refused message");
    assert_eq!(await_verdict(verdict).await.map_err(|f| f.outcome), Err(Outcome::Refused));
    // The sender missed that receipt and offers it again.
    assert_eq!(h.arrive(h.a.device, envelope).await.err(), Some(Outcome::Refused));
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
    let (tx, mut answers) = mpsc::unbounded_channel();
    let send = |to, payload: &[u8], request, key: &[u8]| {
        let options = SendOptions { key: key.to_vec(), ..SendOptions::default() };
        h.b.delivery.send(b, to, payload.to_vec(), options, ReceiptSink { tx: tx.clone(), request });
    };
    send(b2, b"local", 1, b"k1");
    let Some(Answer::Accepted { request: 1, id, duplicate: false }) = answers.recv().await else { panic!("accepted") };
    assert_eq!(id.seq, 1);
    assert_eq!(session.take().await, (b, b"local".to_vec()));
    let Some(Answer::Receipt { request: 1, id: Some(receipt_id), verdict: Ok(()) }) = answers.recv().await else {
        panic!("delivered")
    };
    assert_eq!(receipt_id, id);
    // The same key again: the earlier message, not a second one.
    send(b2, b"local", 4, b"k1");
    let Some(Answer::Accepted { request: 4, id: again, duplicate: true }) = answers.recv().await else {
        panic!("a duplicate")
    };
    assert_eq!(again, id);
    let Some(Answer::Receipt { request: 4, verdict: Ok(()), .. }) = answers.recv().await else { panic!("delivered") };
    assert!(session.nothing_waiting());
    let state = h.b.delivery.receipt_state(&b, &id);
    assert_eq!(state.state, pb::receipt_state::State::Final as i32);
    assert_eq!(state.outcome, Outcome::Delivered as i32);
    let MessageId { epoch, .. } = id;
    assert_eq!(h.b.delivery.receipt_state(&b2, &id).state, 0, "another app's message is unknown to it");
    // A device is no app to send to; a message over the limit never leaves.
    send(h.a.device, b"x", 2, b"");
    let Some(Answer::Receipt { request: 2, id: None, verdict }) = answers.recv().await else { panic!("refused") };
    assert_eq!(verdict.map_err(|f| f.outcome), Err(Outcome::UnknownRecipient));
    send(b2, &vec![0; MAX + 1], 3, b"");
    let Some(Answer::Receipt { request: 3, id: None, verdict }) = answers.recv().await else { panic!("refused") };
    assert_eq!(verdict.map_err(|f| f.outcome), Err(Outcome::TooLarge));
    assert_eq!(epoch, h.b.delivery.epoch);
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

#[tokio::test]
async fn a_local_app_with_a_full_inbox_holds_up_no_other_local_pair() {
    let h = Harness::new().await;
    let (b, b2) = (h.app_b.did(), h.app_b2.did());
    let mut reader = h.b.connect(b);
    let (tx, mut answers) = mpsc::unbounded_channel();
    // b2 is not running: its inbox fills, and the rest of the flood waits.
    for request in 1..=8 {
        let sink = ReceiptSink { tx: tx.clone(), request };
        h.b.delivery.send(b, b2, vec![1; MAX], SendOptions::default(), sink);
    }
    let sink = ReceiptSink { tx: tx.clone(), request: 100 };
    h.b.delivery.send(b2, b, b"meanwhile".to_vec(), SendOptions::default(), sink);
    assert_eq!(reader.take().await, (b2, b"meanwhile".to_vec()));
    loop {
        match tokio::time::timeout(Duration::from_secs(5), answers.recv()).await.unwrap().unwrap() {
            Answer::Receipt { request: 100, verdict, .. } => break assert_eq!(verdict, Ok(())),
            Answer::Receipt { request, verdict, .. } => panic!("message {request} settled early: {verdict:?}"),
            Answer::Accepted { .. } | Answer::Stored { .. } => {}
        }
    }
    let (_, from_b) = h.b.delivery.lock_held().usage_of(&b2, &b);
    assert!(from_b.records <= 4, "b's share of b2's inbox stays within its limit");
}

/// A blob as A's daemon deposits it for B: `envelope` sealed by A's device.
fn sealed(h: &Harness, envelope: pb::Envelope, prev_seq: u64) -> Vec<u8> {
    let letter = pb::Letter { from_device: h.a.device.key_bytes(), envelope: Some(envelope), prev_seq };
    let b = h.b.ledger.standing(&h.b.device).unwrap();
    let network = h.b.ledger.network().unwrap().id;
    carrier_proto::mailbox::seal(
        h.a.delivery.ctx.identity(),
        &h.b.device,
        &b.keys.noise,
        &network,
        &letter.encode_to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_mailbox_blob_opens_only_untampered_and_sealed_by_its_senders_device() {
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    let network = h.b.ledger.network().unwrap().id;
    let envelope = h.envelope(&from, &to, b"kept for you");
    let blob = sealed(&h, envelope.clone(), 0);
    let (letter, sender) = h.b.delivery.open_letter(&network, &blob).unwrap();
    assert_eq!((sender, letter.envelope.as_ref()), (h.a.device, Some(&envelope)));
    // Tampered: any byte.
    let mut tampered = blob.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    let why = h.b.delivery.open_letter(&network, &tampered).unwrap_err();
    assert!(why.contains("does not open"), "{why}");
    // Sealed by B's own device key but claiming to be from A.
    let letter = pb::Letter { from_device: h.a.device.key_bytes(), envelope: Some(envelope), prev_seq: 0 };
    let b = h.b.ledger.standing(&h.b.device).unwrap();
    let forged = carrier_proto::mailbox::seal(
        h.b.delivery.ctx.identity(),
        &h.b.device,
        &b.keys.noise,
        &network,
        &letter.encode_to_vec(),
    )
    .unwrap();
    let why = h.b.delivery.open_letter(&network, &forged).unwrap_err();
    assert!(why.contains("not an active device with the key that sealed it"), "{why}");
    // The sending device revoked: its blobs are dropped.
    let device = h.a.device;
    h.revoke(device);
    let why = h.b.delivery.open_letter(&network, &blob).unwrap_err();
    assert!(why.contains("not an active device"), "{why}");
}

#[tokio::test]
async fn a_mailbox_keeps_blobs_within_its_quotas_for_their_recipient_only() {
    use crate::protocols::mailbox::Keeper;
    use pb::mailbox_answer::Answer as A;
    let h = Harness::new().await;
    let node = &h.b.delivery;
    let (sender, recipient) = (h.app_a.did(), h.a.device);
    let far = now() + 3_600_000;
    let deposit = |blob: Vec<u8>, expires_at_ms| pb::Deposit {
        recipient: recipient.key_bytes(),
        blob,
        expires_at_ms,
        ..Default::default()
    };
    for i in 0..4u8 {
        let answer = node.deposit(h.b.device, deposit(vec![i; MAX], far)).await.answer;
        assert!(matches!(answer, Some(A::Deposited(pb::Deposited { duplicate: false }))), "{answer:?}");
    }
    let again = node.deposit(h.b.device, deposit(vec![0; MAX], far)).await.answer;
    assert!(matches!(again, Some(A::Deposited(pb::Deposited { duplicate: true }))), "{again:?}");
    let over = node.deposit(h.b.device, deposit(vec![9; MAX], far)).await.answer;
    assert!(matches!(&over, Some(A::Refused(r)) if r.reason == 1 && r.detail.contains("for")), "{over:?}");
    let app = node.deposit(h.b.device, pb::Deposit { recipient: sender.key_bytes(), ..deposit(vec![1], far) }).await;
    assert!(matches!(app.answer, Some(A::Refused(r)) if r.reason == 3), "an app is no mailbox recipient");
    let month = now() + 31 * 24 * 3_600_000;
    let long = node.deposit(h.b.device, deposit(vec![1], month)).await.answer;
    assert!(matches!(long, Some(A::Refused(r)) if r.reason == 2), "past 30 days");
    // Only the recipient's own link collects, and removes.
    let Some(A::Blobs(none)) = node.collect(h.b.device, 100).answer else { panic!() };
    assert!(none.blobs.is_empty(), "another device's blobs");
    let Some(A::Blobs(all)) = node.collect(recipient, 100).answer else { panic!() };
    assert_eq!((all.blobs.len(), all.more), (4, false));
    let Some(A::Blobs(mine)) = node.collect(recipient, 1).answer else { panic!() };
    assert_eq!((mine.blobs.len(), mine.more), (1, true), "as many as asked for, and more waiting");
    assert_eq!(carrier_proto::mailbox::blob_id(&mine.blobs[0].blob).to_vec(), mine.blobs[0].id);
    let ids: Vec<Vec<u8>> = mine.blobs.iter().map(|b| b.id.clone()).collect();
    let Some(A::Removed(removed)) = node.remove(h.b.device, ids.clone()).await.answer else { panic!() };
    assert_eq!(removed.count, 0, "not its blobs to remove");
    let Some(A::Removed(removed)) = node.remove(recipient, ids).await.answer else { panic!() };
    assert_eq!(removed.count, 1);
    // Room again for one more.
    let answer = node.deposit(h.b.device, deposit(vec![7; MAX], far)).await.answer;
    assert!(matches!(answer, Some(A::Deposited(_))), "{answer:?}");
}

fn now() -> u64 {
    super::outbox::now_ms()
}

#[tokio::test]
async fn a_waiting_local_pair_is_tried_again_while_other_local_traffic_flows() {
    let h = Harness::new().await;
    let (b, b2) = (h.app_b.did(), h.app_b2.did());
    let (tx, _answers) = mpsc::unbounded_channel();
    // b2 is not running: four fill its inbox, four wait.
    for request in 1..=8 {
        let sink = ReceiptSink { tx: tx.clone(), request };
        h.b.delivery.send(b, b2, vec![request as u8; MAX], SendOptions::default(), sink);
    }
    // Other local traffic all along, each message taken at once: something
    // happens every few milliseconds, more often than the waiting pair's
    // retry.
    let (delivery, mut reader) = (Arc::clone(&h.b.delivery), h.b.connect(b));
    let chatter = tokio::spawn(async move {
        for request in 1000.. {
            let sink = ReceiptSink { tx: tx.clone(), request };
            delivery.send(b2, b, b"chatter".to_vec(), SendOptions::default(), sink);
            reader.take().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut recipient = h.b.connect(b2);
    for n in 1..=8u8 {
        let taken = tokio::time::timeout(Duration::from_secs(5), recipient.take()).await;
        let (from, payload) =
            taken.unwrap_or_else(|_| panic!("message {n} never came: the waiting pair was not retried"));
        assert_eq!((from, payload[0]), (b, n));
    }
    chatter.abort();
}

#[path = "limits_tests.rs"]
mod limits;
