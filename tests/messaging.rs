//! Apps on real `carrierd` processes talking through the SDK: messages
//! delivered exactly once and in order, a 1 GiB stream arriving intact,
//! allow lists, revocation, streams on one device, and port forwarding.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use carrier_sdk::{AllowList, AppIdentity, Client, Did, Reason, Receipt, SdkError};
use sha2::{Digest, Sha256};
use support::{Daemon, app_socket, carrierctl, mesh, provision_with_apps, socket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every wait in these tests ends with a failure, never a hang.
const WAIT: Duration = Duration::from_secs(60);

async fn client(app_dir: &Path, device_dir: &Path) -> Client {
    let identity = AppIdentity::load_or_create(app_dir).unwrap();
    Client::connect_as(identity, app_socket(device_dir)).await.unwrap()
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_on_three_daemons_exchange_ten_thousand_messages_exactly_once_and_in_order() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 3, &[1, 1, 1]);
    let _daemons = mesh(&dirs);
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(client(&apps[i][0], &dirs[i]).await);
    }
    let dids: Vec<Did> = clients.iter().map(Client::did).collect();
    // 6 ordered pairs × 1,667 = 10,002 messages.
    const PER_PAIR: u32 = 1_667;

    let mut receivers = Vec::new();
    for client in &clients {
        let mut messages = client.messages();
        receivers.push(tokio::spawn(async move {
            let mut seen: HashMap<Did, Vec<u32>> = HashMap::new();
            for _ in 0..2 * PER_PAIR {
                let message = within("messages", messages.next()).await.expect("session open");
                let n = u32::from_be_bytes(message.payload[..4].try_into().unwrap());
                seen.entry(message.from_app).or_default().push(n);
            }
            seen
        }));
    }
    let mut senders = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let targets: Vec<Did> = dids.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, d)| *d).collect();
        senders.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for n in 0..PER_PAIR {
                for to in &targets {
                    let mut payload = n.to_be_bytes().to_vec();
                    payload.extend_from_slice(&[7u8; 60]);
                    receipts.push(client.submit(to, payload).await.unwrap());
                }
            }
            for receipt in receipts {
                assert_eq!(within("receipt", receipt).await.unwrap(), Receipt::Delivered);
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let expected: Vec<u32> = (0..PER_PAIR).collect();
    for (i, receiver) in receivers.into_iter().enumerate() {
        let seen = receiver.await.unwrap();
        assert_eq!(seen.len(), 2, "app {i} heard from {} apps", seen.len());
        for (from, numbers) in seen {
            assert_eq!(numbers, expected, "app {i} from {from}: not exactly once and in order");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_stream_arrives_intact() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let _daemons = mesh(&dirs);
    let (sender, receiver) = (client(&apps[0][0], &dirs[0]).await, client(&apps[1][0], &dirs[1]).await);
    let mut listener = receiver.listen("bulk", &AllowList::any_active()).await.unwrap();
    let server = tokio::spawn(async move {
        let mut stream = within("accept", listener.accept()).await.unwrap();
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = within("read", stream.read(&mut buf)).await.unwrap();
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            total += n as u64;
        }
        // The other direction is still open after the sender's half-close.
        stream.write_all(&hash.finalize()).await.unwrap();
        stream.shutdown().await.unwrap();
        total
    });

    let mut stream = sender.open_stream(&receiver.did(), "bulk").await.unwrap();
    assert_eq!(stream.peer_app(), receiver.did());
    let mut block: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut hash = Sha256::new();
    for i in 0u64..1024 {
        // Every block differs, so a lost, repeated or reordered block shows.
        block[..8].copy_from_slice(&i.to_be_bytes());
        hash.update(&block);
        within("write", stream.write_all(&block)).await.unwrap();
    }
    stream.shutdown().await.unwrap();
    let mut theirs = Vec::new();
    within("hash back", stream.read_to_end(&mut theirs)).await.unwrap();
    assert_eq!(server.await.unwrap(), 1 << 30);
    assert_eq!(theirs, hash.finalize().to_vec(), "the stream arrived changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_refuse_messages_and_streams_from_apps_not_on_them() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[2, 1]);
    let _daemons = mesh(&dirs);
    let (friend, stranger) = (client(&apps[0][0], &dirs[0]).await, client(&apps[0][1], &dirs[0]).await);
    let picky = client(&apps[1][0], &dirs[1]).await;
    picky.set_access(&AllowList::only([friend.did()])).await.unwrap();
    let _listener = picky.listen("files", &AllowList::only([friend.did()])).await.unwrap();

    assert!(friend.send(&picky.did(), "hi").await.unwrap().is_delivered());
    match stranger.send(&picky.did(), "hi").await.unwrap() {
        Receipt::Failed(failure) => assert_eq!(failure.reason, Reason::Refused, "{failure}"),
        other => panic!("a stranger's message was {other:?}"),
    }
    match stranger.open_stream(&picky.did(), "files").await {
        Err(SdkError::Stream(failure)) => assert_eq!(failure.reason, Reason::Refused, "{failure}"),
        other => panic!("a stranger's stream was {other:?}"),
    }
    match friend.open_stream(&picky.did(), "no-such-service").await {
        Err(SdkError::Stream(failure)) => assert_eq!(failure.reason, Reason::AppNotRunning, "{failure}"),
        other => panic!("a stream to a service nobody listens on was {other:?}"),
    }
    // The one message that was let in is the only one there.
    let message = within("message", picky.messages().next()).await.unwrap();
    assert_eq!((message.from_app, message.payload.as_slice()), (friend.did(), &b"hi"[..]));
    assert_eq!(message.from_device, friend.device());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_name_unknown_and_revoked_recipients_and_absent_apps_get_theirs_later() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 2]);
    let daemons = mesh(&dirs);
    let sender = client(&apps[0][0], &dirs[0]).await;
    let absent = AppIdentity::load_or_create(&apps[1][1]).unwrap().did();
    let unknown = AppIdentity::load_or_create(&root.path().join("nobody")).unwrap().did();
    let reason = |receipt: Receipt| match receipt {
        Receipt::Failed(failure) => failure.reason,
        Receipt::Delivered => panic!("delivered"),
    };
    assert_eq!(reason(sender.send(&unknown, "x").await.unwrap()), Reason::UnknownRecipient);
    // An app that is not running gets its messages when it connects.
    let waiting = sender.submit(&absent, "for later").await.unwrap();
    let absent_app = client(&apps[1][1], &dirs[1]).await;
    let message = within("the held message", absent_app.messages().next()).await.unwrap();
    assert_eq!(message.payload, b"for later");
    assert_eq!(within("its receipt", waiting).await.unwrap(), Receipt::Delivered);
    let recipient = client(&apps[1][0], &dirs[1]).await;
    assert!(sender.send(&recipient.did(), "before").await.unwrap().is_delivered());

    // The sending app is revoked by its device; the ledger reaches both daemons.
    let admin_ledger = root.path().join("admin/ledger");
    let (ledger, key) = (admin_ledger.to_str().unwrap(), dirs[0].join("device.key"));
    carrierctl(&["ledger", "revoke", "--ledger", ledger, "--key", key.to_str().unwrap(), &sender.did().to_string()]);
    carrierctl(&["ledger", "publish", "--ledger", ledger, "--socket", &socket(&dirs[0])]);
    daemons[1].wait_for("applied ledger entries from a peer");
    // Its daemon ends its session: its messages end, and sending fails.
    assert_eq!(within("session end", sender.messages().next()).await, None);
    assert!(matches!(sender.send(&recipient.did(), "after").await, Err(SdkError::Disconnected(_))));
    assert_eq!(reason(recipient.send(&sender.did(), "to a revoked app").await.unwrap()), Reason::Revoked);
    // A revoked app cannot connect again either.
    let identity = AppIdentity::load_or_create(&apps[0][0]).unwrap();
    let refused = Client::connect_as(identity, app_socket(&dirs[0])).await.unwrap_err();
    assert!(matches!(&refused, SdkError::Refused(why) if why.contains("revoked")), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_on_one_device_message_and_stream_without_the_network() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 1, &[2]);
    let _daemon = Daemon::start(&dirs[0], None);
    let (a, b) = (client(&apps[0][0], &dirs[0]).await, client(&apps[0][1], &dirs[0]).await);
    // The admin sees both sessions.
    let status: serde_json::Value =
        serde_json::from_str(&carrierctl(&["status", "--socket", &socket(&dirs[0]), "--json"])).unwrap();
    let mut expected = vec![a.did().to_string(), b.did().to_string()];
    expected.sort();
    assert_eq!(status["apps"], serde_json::json!(expected));
    assert!(a.send(&b.did(), "next door").await.unwrap().is_delivered());
    let message = within("message", b.messages().next()).await.unwrap();
    assert_eq!((message.from_app, message.from_device), (a.did(), a.device()));

    let mut listener = b.listen("echo", &AllowList::any_active()).await.unwrap();
    let echo = tokio::spawn(async move {
        let mut stream = listener.accept().await.unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        stream.write_all(&all).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let mut stream = a.open_stream(&b.did(), "echo").await.unwrap();
    stream.write_all(b"round and back").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("echo", stream.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"round and back");
    echo.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_port_is_forwarded_to_another_device() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let _daemons = mesh(&dirs);
    let (user, host) = (client(&apps[0][0], &dirs[0]).await, client(&apps[1][0], &dirs[1]).await);

    // A TCP service on the host's side: answers with what it read, upper-cased.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = service.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = service.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                tcp.read_to_end(&mut all).await.unwrap();
                tcp.write_all(&all.to_ascii_uppercase()).await.unwrap();
            });
        }
    });
    let listener = host.listen("web", &AllowList::any_active()).await.unwrap();
    tokio::spawn(carrier_sdk::forward::expose(listener, target));
    let forwarded = carrier_sdk::forward::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let local = forwarded.local_addr().unwrap();
    let host_did = host.did();
    let forwarder = user.clone();
    tokio::spawn(async move { carrier_sdk::forward::forward_local(&forwarder, forwarded, host_did, "web").await });

    // Two connections at once, each its own stream.
    let mut answers = Vec::new();
    for text in ["hello over carrier", "and again"] {
        answers.push(tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(local).await.unwrap();
            tcp.write_all(text.as_bytes()).await.unwrap();
            tcp.shutdown().await.unwrap();
            let mut answer = Vec::new();
            within("forwarded answer", tcp.read_to_end(&mut answer)).await.unwrap();
            (text, answer)
        }));
    }
    for answer in answers {
        let (text, answer) = answer.await.unwrap();
        assert_eq!(answer, text.to_ascii_uppercase().as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_streams_opened_at_once_all_reach_the_service() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let _daemons = mesh(&dirs);
    let (user, host) = (client(&apps[0][0], &dirs[0]).await, client(&apps[1][0], &dirs[1]).await);
    let mut listener = host.listen("echo", &AllowList::any_active()).await.unwrap();
    tokio::spawn(async move {
        while let Ok(mut stream) = listener.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                stream.read_to_end(&mut all).await.unwrap();
                stream.write_all(&all).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    // A warm link first, so the burst is about streams, not link setup.
    let mut first = user.open_stream(&host.did(), "echo").await.unwrap();
    first.shutdown().await.unwrap();
    within("first echo", first.read_to_end(&mut Vec::new())).await.unwrap();

    // Every stream of the burst is answered: none is dropped for arriving
    // while the others are being taken.
    let opens = (0..48).map(|n| {
        let (user, to) = (user.clone(), host.did());
        tokio::spawn(async move {
            let mut stream = user.open_stream(&to, "echo").await.unwrap_or_else(|e| panic!("stream {n}: {e}"));
            stream.write_all(format!("stream {n}").as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut back = Vec::new();
            within("burst echo", stream.read_to_end(&mut back)).await.unwrap();
            assert_eq!(back, format!("stream {n}").as_bytes());
        })
    });
    for open in opens.collect::<Vec<_>>() {
        open.await.unwrap();
    }
}
