//! Attacks on the app socket of a real `carrierd`: a hello signed with the
//! wrong key, an unregistered app, an app of another device, oversized
//! messages and frames, and garbage, each of which must close only the
//! offending client while a well-behaved app carries on.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use carrier_proto::frame;
use carrier_proto::identity::{Did, Identity, IdentityKind};
use carrier_proto::messaging::sign_challenge;
use carrier_proto::pb::{self, app_event::Event, app_hello::Purpose, app_request::Request};
use carrier_sdk::{AppIdentity, Client, Receipt, ReceiptState, SdkError};
use prost::Message;
use support::{Daemon, app_socket, provision_with_apps};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const WAIT: Duration = Duration::from_secs(20);

/// A hand-written app-socket client, to send what the SDK never would.
struct Raw {
    stream: UnixStream,
    decoder: frame::FrameDecoder,
}

impl Raw {
    async fn connect(dir: &Path) -> Self {
        Self { stream: UnixStream::connect(app_socket(dir)).await.unwrap(), decoder: frame::FrameDecoder::new(4 << 20) }
    }

    async fn write(&mut self, request: &pb::AppRequest) {
        self.stream.write_all(&frame::encode(&request.encode_to_vec())).await.unwrap();
    }

    /// The next event, or `None` once the daemon has closed the connection.
    async fn read(&mut self) -> Option<pb::AppEvent> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return Some(pb::AppEvent::decode(frame.as_slice()).unwrap());
            }
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("the daemon went quiet")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.decoder.push(&buf[..n]);
        }
    }

    /// Reads the challenge and answers as `app`, signing with `key`.
    async fn hello(&mut self, app: Did, key: &Identity) -> pb::AppEvent {
        let Some(Event::Challenge(challenge)) = self.read().await.unwrap().event else { panic!("no challenge") };
        let device = Did::parse(&challenge.device).unwrap();
        let signature = sign_challenge(key, &challenge.nonce.clone().try_into().unwrap(), &device);
        let hello = pb::AppHello {
            app: app.to_string(),
            signature: signature.to_vec(),
            purpose: Some(Purpose::Session(pb::SessionPurpose {})),
        };
        self.write(&pb::AppRequest { id: 0, request: Some(Request::Hello(hello)) }).await;
        self.read().await.unwrap()
    }

    /// Expects an error event, then the end of the connection.
    async fn expect_closed_with(&mut self, code: pb::AppErrorCode, words: &str) {
        match self.read().await.and_then(|e| e.event) {
            Some(Event::Error(error)) => {
                assert_eq!(error.code, code as i32, "{}", error.message);
                assert!(error.message.contains(words), "{:?} does not say {words:?}", error.message);
            }
            other => panic!("expected an error event, got {other:?}"),
        }
        assert!(self.read().await.is_none(), "the daemon kept the connection open");
    }
}

fn load(dir: &Path) -> Identity {
    carrier_proto::keystore::load_kind(&dir.join(carrier_sdk::APP_KEY_FILE), IdentityKind::App).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_cannot_authenticate_as_another_or_without_registration() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let _daemon = Daemon::start(&dirs[0], None);
    let victim = load(&apps[0][0]);
    let forger = Identity::generate(IdentityKind::App);

    // Claims the victim's DID, signs with its own key.
    let mut raw = Raw::connect(&dirs[0]).await;
    match raw.hello(victim.did(), &forger).await.event {
        Some(Event::Error(error)) => {
            assert_eq!(error.code, pb::AppErrorCode::Unauthenticated as i32);
            assert!(error.message.contains("signature does not match"), "{}", error.message);
        }
        other => panic!("a forged hello got {other:?}"),
    }
    assert!(raw.read().await.is_none());

    // Registered, but under the other device.
    let elsewhere = load(&apps[1][0]);
    let mut raw = Raw::connect(&dirs[0]).await;
    match raw.hello(elsewhere.did(), &elsewhere).await.event {
        Some(Event::Error(error)) => assert!(error.message.contains("not of this device"), "{}", error.message),
        other => panic!("another device's app got {other:?}"),
    }

    // Not on the ledger at all, through the SDK.
    let stranger = AppIdentity::load_or_create(&root.path().join("stranger")).unwrap();
    let refused = Client::connect_as(stranger, app_socket(&dirs[0])).await.unwrap_err();
    assert!(matches!(&refused, SdkError::Refused(why) if why.contains("not registered")), "{refused}");

    // A replayed answer to another connection's challenge fails too: the
    // nonce is fresh per connection.
    let mut first = Raw::connect(&dirs[0]).await;
    let Some(Event::Challenge(old)) = first.read().await.unwrap().event else { panic!() };
    let device = Did::parse(&old.device).unwrap();
    let stale = sign_challenge(&victim, &old.nonce.try_into().unwrap(), &device);
    let mut second = Raw::connect(&dirs[0]).await;
    second.read().await.unwrap();
    let hello = pb::AppHello {
        app: victim.did().to_string(),
        signature: stale.to_vec(),
        purpose: Some(Purpose::Session(pb::SessionPurpose {})),
    };
    second.write(&pb::AppRequest { id: 0, request: Some(Request::Hello(hello)) }).await;
    second.expect_closed_with(pb::AppErrorCode::Unauthenticated, "signature does not match").await;

    // The real app still gets in, once.
    let app = Client::connect_as(AppIdentity::load_or_create(&apps[0][0]).unwrap(), app_socket(&dirs[0])).await;
    let app = app.unwrap();
    let again = Client::connect_as(AppIdentity::load_or_create(&apps[0][0]).unwrap(), app_socket(&dirs[0])).await;
    assert!(matches!(&again, Err(SdkError::Refused(why)) if why.contains("already has a session")), "{again:?}");
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_input_closes_only_that_client() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 1, &[4]);
    let _daemon = Daemon::start_with(&dirs[0], None, "[messaging]\nmax_message_bytes = 4096\n");
    let (a, b) = (load(&apps[0][0]), load(&apps[0][1]));
    let good =
        Client::connect_as(AppIdentity::load_or_create(&apps[0][2]).unwrap(), app_socket(&dirs[0])).await.unwrap();
    let mut good_inbox = good.messages();

    // The SDK refuses an oversized payload before sending it...
    let sdk =
        Client::connect_as(AppIdentity::load_or_create(&apps[0][3]).unwrap(), app_socket(&dirs[0])).await.unwrap();
    assert_eq!(sdk.max_message(), 4096);
    let err = sdk.send(&good.did(), vec![0u8; 4097]).await.unwrap_err();
    assert!(matches!(err, SdkError::TooLarge { len: 4097, max: 4096 }), "{err}");

    // ...and the daemon refuses one sent anyway, with a receipt that says why.
    let mut raw = Raw::connect(&dirs[0]).await;
    assert!(matches!(raw.hello(a.did(), &a).await.event, Some(Event::Welcome(_))));
    let send = pb::SendMessage { to: good.did().key_bytes(), payload: vec![1; 4097], ..Default::default() };
    raw.write(&pb::AppRequest { id: 9, request: Some(Request::Send(send)) }).await;
    match raw.read().await.unwrap() {
        pb::AppEvent { id: 9, event: Some(Event::Receipt(receipt)) } => {
            assert_eq!(receipt.outcome, pb::Outcome::TooLarge as i32);
            assert!(receipt.detail.contains("over the limit of 4096"), "{}", receipt.detail);
        }
        other => panic!("expected a too-large receipt, got {other:?}"),
    }

    // A frame announcing more than the frame limit closes that client.
    raw.stream.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    raw.expect_closed_with(pb::AppErrorCode::BadRequest, "over the limit").await;

    // Garbage in a frame closes that client.
    let mut raw = Raw::connect(&dirs[0]).await;
    assert!(matches!(raw.hello(b.did(), &b).await.event, Some(Event::Welcome(_))));
    raw.stream.write_all(&frame::encode(&[0xff, 0xff, 0xff, 0xff])).await.unwrap();
    raw.expect_closed_with(pb::AppErrorCode::BadRequest, "does not decode").await;

    // Garbage before the hello, too.
    let mut raw = Raw::connect(&dirs[0]).await;
    raw.read().await.unwrap();
    raw.stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    raw.expect_closed_with(pb::AppErrorCode::BadRequest, "").await;

    // The well-behaved app never noticed: it sends to itself and hears it.
    assert_eq!(good.send(&good.did(), "still here").await.unwrap(), Receipt::Delivered);
    let message = tokio::time::timeout(WAIT, good_inbox.next()).await.unwrap().unwrap();
    assert_eq!(message.payload, b"still here");
    // A message to an app whose session was closed waits on the daemon's
    // disk until the app is back.
    let mut pending = good.submit(&b.did(), "gone?").await.unwrap();
    let id = pending.accepted().await.unwrap().expect("accepted");
    assert_eq!(good.receipt_states(&[id]).await.unwrap(), vec![(id, ReceiptState::Pending)]);
    let back =
        Client::connect_as(AppIdentity::load_or_create(&apps[0][1]).unwrap(), app_socket(&dirs[0])).await.unwrap();
    let message = tokio::time::timeout(WAIT, back.messages().next()).await.unwrap().unwrap();
    assert_eq!((message.id, message.payload.as_slice()), (id, &b"gone?"[..]));
    assert_eq!(tokio::time::timeout(WAIT, pending).await.unwrap().unwrap(), Receipt::Delivered);
    assert_eq!(good.receipt_states(&[id]).await.unwrap(), vec![(id, ReceiptState::Final(Receipt::Delivered))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_neither_lock_apps_out_nor_stall_an_app_that_sends() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 1, &[3]);
    let _daemon = Daemon::start(&dirs[0], None);
    let connect = |i: usize| {
        let (identity, socket) = (AppIdentity::load_or_create(&apps[0][i]).unwrap(), app_socket(&dirs[0]));
        async move { Client::connect_as(identity, socket).await }
    };
    let (sender, receiver) = (connect(0).await.unwrap(), connect(1).await.unwrap());
    // A local process opens 1,000 connections and never says hello.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(UnixStream::connect(app_socket(&dirs[0])).await.unwrap());
    }
    // The app that was connected still sends, and everything arrives.
    let mut receipts = Vec::new();
    for i in 0..200 {
        receipts.push(sender.submit(&receiver.did(), format!("{i}")).await.unwrap());
    }
    for receipt in receipts {
        assert_eq!(tokio::time::timeout(WAIT, receipt).await.unwrap().unwrap(), Receipt::Delivered);
    }
    let mut messages = receiver.messages();
    for i in 0..200 {
        let message = tokio::time::timeout(WAIT, messages.next()).await.unwrap().unwrap();
        assert_eq!(message.payload, format!("{i}").into_bytes());
    }
    // A new app gets in while the idle connections stand.
    let newcomer = tokio::time::timeout(WAIT, connect(2)).await.expect("locked out").unwrap();
    assert_eq!(newcomer.send(&receiver.did(), "hi").await.unwrap(), Receipt::Delivered);
    // The oldest idle connection was evicted, with its reason.
    let mut oldest = Raw { stream: idle.remove(0), decoder: frame::FrameDecoder::new(4 << 20) };
    assert!(matches!(oldest.read().await.and_then(|e| e.event), Some(Event::Challenge(_))));
    oldest.expect_closed_with(pb::AppErrorCode::Busy, "waiting to authenticate").await;
    let sock = support::socket(&dirs[0]);
    let counters = tokio::task::spawn_blocking(move || support::carrierctl(&["counters", "--json", "--socket", &sock]));
    let counters: serde_json::Value = serde_json::from_str(&counters.await.unwrap()).unwrap();
    assert!(counters["app_socket_evicted"].as_u64() >= Some(900), "{counters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_the_hello_are_held_to_a_small_limit() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, _) = provision_with_apps(root.path(), 1, &[]);
    let _daemon = Daemon::start(&dirs[0], None);
    let mut raw = Raw::connect(&dirs[0]).await;
    assert!(matches!(raw.read().await.and_then(|e| e.event), Some(Event::Challenge(_))));
    // A 5,000-byte frame announced where a hello (under 1 KiB) belongs.
    raw.stream.write_all(&5000u32.to_be_bytes()).await.unwrap();
    raw.expect_closed_with(pb::AppErrorCode::BadRequest, "over the limit of 4096").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_may_not_queue_more_than_its_outbox_budget() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 1, &[2]);
    let _daemon = Daemon::start(&dirs[0], None);
    let (sender, recipient) = (load(&apps[0][0]), load(&apps[0][1]));
    // The recipient is connected but never reads: no message is ever acked,
    // so every message stays in the sender's outbox.
    let mut stalled = Raw::connect(&dirs[0]).await;
    let welcome = stalled.hello(recipient.did(), &recipient).await;
    assert!(matches!(welcome.event, Some(Event::Welcome(_))));
    let mut raw = Raw::connect(&dirs[0]).await;
    let Some(Event::Welcome(welcome)) = raw.hello(sender.did(), &sender).await.event else { panic!() };
    assert_eq!(welcome.max_in_flight_bytes, 64 << 20);
    // 1 MB messages: the 68th passes the 64 MiB outbox.
    for id in 1..=100u64 {
        let send =
            pb::SendMessage { to: recipient.did().key_bytes(), payload: vec![7; 1_000_000], ..Default::default() };
        let request = pb::AppRequest { id, request: Some(Request::Send(send)) };
        raw.stream.write_all(&frame::encode(&request.encode_to_vec())).await.unwrap();
    }
    let (mut accepted, mut full) = (Vec::new(), Vec::new());
    while accepted.len() + full.len() < 100 {
        match raw.read().await.map(|e| (e.id, e.event)) {
            Some((id, Some(Event::Accepted(_)))) => accepted.push(id),
            Some((id, Some(Event::Receipt(receipt)))) => {
                assert_eq!(receipt.outcome, pb::Outcome::QueueFull as i32, "{}", receipt.detail);
                assert!(receipt.detail.contains("the limit is 67108864"), "{}", receipt.detail);
                assert!(receipt.message_id.is_empty(), "refused before it had an id");
                full.push(id);
            }
            Some((_, other)) => panic!("unexpected {other:?}"),
            None => panic!("closed"),
        }
    }
    assert_eq!(accepted, (1..=67).collect::<Vec<_>>());
    assert_eq!(full, (68..=100).collect::<Vec<_>>(), "each over the budget fails at once, the session stays");
}
