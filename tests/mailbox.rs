//! Offline mailboxes on real daemons: a device that is offline for the
//! whole send gets every message from the devices closest to it (sealed,
//! so they could not read them), even after one of them died, or altered
//! its copies; a revoked sender's blobs are dropped; and a mailbox that is
//! full gives the sender a final failure, never silence. (Forged senders:
//! `delivery::tests`, on the same code without sockets.)

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carrier_sdk::{AppIdentity, Client, Reason, Receipt, ReceiptState};
use support::{Daemon, app_socket, carrierctl, provision_with_apps, until_routed};

const WAIT: Duration = Duration::from_secs(90);

async fn client(app_dir: &Path, device_dir: &Path) -> Client {
    let identity = AppIdentity::load_or_create(app_dir).unwrap();
    Client::connect_as(identity, app_socket(device_dir)).await.unwrap()
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Three mailbox nodes (the first is everyone's bootstrap), then the
/// sender's device and the recipient's; waits until the sender's routing
/// table has every other device.
fn network(dirs: &[PathBuf], mailbox_config: &str) -> Vec<Daemon> {
    let first = Daemon::start_with(&dirs[0], None, mailbox_config);
    let addr = first.addr.clone();
    let mut daemons = vec![first];
    daemons.extend(dirs[1..3].iter().map(|dir| Daemon::start_with(dir, Some(&addr), mailbox_config)));
    daemons.extend(dirs[3..].iter().map(|dir| Daemon::start(dir, Some(&addr))));
    until_routed(&dirs[3], dirs.len() - 1, WAIT);
    daemons
}

fn payload(n: u32) -> Vec<u8> {
    let mut payload = n.to_be_bytes().to_vec();
    payload.extend_from_slice(&[3u8; 100]);
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_collects_its_stored_messages_while_the_sender_and_a_mailbox_node_are_down() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 5, &[0, 0, 0, 1, 1]);
    let mut daemons = network(&dirs, "");
    let recipient_app = AppIdentity::load_or_create(&apps[4][0]).unwrap().did();
    daemons.pop().unwrap().terminate();

    let sender = client(&apps[3][0], &dirs[3]).await;
    const N: u32 = 50;
    let mut pending = Vec::new();
    let mut ids = Vec::new();
    for n in 0..N {
        let mut receipt = sender.submit(&recipient_app, payload(n)).await.unwrap();
        ids.push(receipt.accepted().await.unwrap().expect("accepted"));
        pending.push(receipt);
    }
    for receipt in &mut pending {
        let copies = within("stored", receipt.stored()).await.unwrap().expect("stored before any receipt");
        assert!((1..=3).contains(&copies), "{copies} copies");
    }
    let states = sender.receipt_states(&ids).await.unwrap();
    assert!(states.iter().all(|(_, s)| *s == ReceiptState::Stored), "{:?}", &states[..2]);

    // One of the mailbox nodes dies, and the sender goes offline too: what
    // the recipient gets now can only come from the mailboxes.
    let sending = daemons.pop().unwrap();
    daemons.remove(2).kill();
    drop((pending, sender));
    sending.terminate();
    let back = Daemon::start(&dirs[4], Some(&daemons[0].addr));
    let recipient = client(&apps[4][0], &dirs[4]).await;
    let mut messages = recipient.messages();
    for n in 0..N {
        let message = within("a stored message", messages.next()).await.unwrap();
        assert_eq!(message.payload, payload(n), "message {n}: not exactly once, in order");
    }
    // The sender is back: its courier offers them again and hears they were
    // delivered; its app finds every receipt by id.
    let _sending = Daemon::start(&dirs[3], Some(&daemons[0].addr));
    let sender = client(&apps[3][0], &dirs[3]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let states = sender.receipt_states(&ids).await.unwrap();
        if states.iter().all(|(_, s)| *s == ReceiptState::Final(Receipt::Delivered)) {
            break;
        }
        assert!(Instant::now() < deadline, "receipts never all delivered: {:?}", &states[..2]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing more comes (no copy taken twice).
    assert!(tokio::time::timeout(Duration::from_millis(500), messages.next()).await.is_err());
    drop(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_is_a_final_failure_for_the_sender() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 5, &[0, 0, 0, 1, 1]);
    // Each mailbox node keeps 1 KiB for any one device.
    let mut daemons = network(&dirs, "[messaging]\nmailbox_bytes_per_recipient = 1024\n");
    let recipient_app = AppIdentity::load_or_create(&apps[4][0]).unwrap().did();
    daemons.pop().unwrap().terminate();

    let sender = client(&apps[3][0], &dirs[3]).await;
    let mut pending = Vec::new();
    for n in 0..10 {
        let mut receipt = sender.submit(&recipient_app, payload(n)).await.unwrap();
        receipt.accepted().await.unwrap().expect("accepted");
        pending.push(receipt);
    }
    // The first few fit; the rest fail for good, saying why.
    let (mut stored, mut full) = (0, 0);
    for mut receipt in pending {
        match within("stored or failed", receipt.stored()).await.unwrap() {
            Some(_) => stored += 1,
            None => match within("the receipt", receipt).await.unwrap() {
                Receipt::Failed(failure) => {
                    assert_eq!(failure.reason, Reason::MailboxFull, "{failure}");
                    assert!(failure.detail.contains("keeps at most 1024 bytes"), "{}", failure.detail);
                    full += 1;
                }
                Receipt::Delivered => panic!("delivered to an offline device"),
            },
        }
    }
    assert!(stored >= 1 && full >= 1, "{stored} stored, {full} refused");
    assert_eq!(stored + full, 10);
}

/// A device's DID, from its card.
fn device_did(dir: &Path) -> carrier_sdk::Did {
    let card = std::fs::read_to_string(dir.join("device.card")).unwrap();
    carrier_proto::identity::Card::parse(&card).unwrap().did()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_copies_move_to_a_device_that_joins_closer_to_the_recipient() {
    let root = tempfile::tempdir().unwrap();
    // Five candidate mailbox nodes, the sender's device, the recipient's.
    let (dirs, apps) = provision_with_apps(root.path(), 7, &[0, 0, 0, 0, 0, 1, 1]);
    let target = libp2p::kad::KBucketKey::from(device_did(&dirs[6]).peer_id());
    let mut candidates: Vec<usize> = (0..5).collect();
    candidates.sort_by_key(|i| libp2p::kad::KBucketKey::from(device_did(&dirs[*i]).peer_id()).distance(&target));
    // The three farthest hold the copies first; the closest joins later.
    let (late, early) = (candidates[0], &candidates[2..]);
    let started: Vec<PathBuf> = early.iter().chain([5, 6].iter()).map(|i| dirs[*i].clone()).collect();
    let mut daemons = network(&started, "");
    let recipient_app = AppIdentity::load_or_create(&apps[6][0]).unwrap().did();
    daemons.pop().unwrap().terminate();
    let sender = client(&apps[5][0], &dirs[5]).await;
    for n in 0..5 {
        let mut receipt = sender.submit(&recipient_app, payload(n)).await.unwrap();
        within("stored", receipt.stored()).await.unwrap().expect("stored");
    }
    // The closer device joins: one of the nodes pushes the copies to it.
    let joined = Daemon::start(&dirs[late], Some(&daemons[0].addr));
    let newcomer = device_did(&dirs[late]).to_string();
    let deadline = Instant::now() + WAIT;
    'pushed: loop {
        for node in &daemons[..3] {
            if let Some(line) = node.printed_within("mailbox copies pushed", Duration::from_millis(100))
                && line.contains(&newcomer)
                && line.contains("blobs=5")
            {
                break 'pushed;
            }
        }
        assert!(Instant::now() < deadline, "no node pushed its copies to the closer device");
    }
    // Every device that held them dies, and the sender goes offline: only
    // the newcomer has them.
    let sending = daemons.pop().unwrap();
    drop(sender);
    sending.terminate();
    for early in daemons {
        early.kill();
    }
    let _back = Daemon::start(&dirs[6], Some(&joined.addr));
    let recipient = client(&apps[6][0], &dirs[6]).await;
    let mut messages = recipient.messages();
    for n in 0..5 {
        let message = within("a moved message", messages.next()).await.unwrap();
        assert_eq!(message.payload, payload(n));
    }
}
/// Alters every blob `node_dir`'s stopped daemon keeps (one byte of the
/// sealed bytes), under the altered bytes' own id, as a node that wanted
/// its copies taken would: how many it altered.
fn alter_kept_blobs(node_dir: &Path) -> usize {
    use prost::Message as _;
    use redb::{ReadableTable, TableDefinition};
    const MAILBOX: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("mailbox");
    let db = redb::Database::create(node_dir.join(carrier_daemon::paths::MESSAGE_STORE_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    let mut altered = 0;
    {
        let mut table = txn.open_table(MAILBOX).unwrap();
        let kept: Vec<(Vec<u8>, Vec<u8>)> = table
            .iter()
            .unwrap()
            .map(|row| row.unwrap())
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            .collect();
        for (key, value) in kept {
            let mut stored = carrier_proto::pb::StoredBlob::decode(value.as_slice()).unwrap();
            let last = stored.blob.len() - 1;
            stored.blob[last] ^= 1;
            let mut new_key = key[..32].to_vec();
            new_key.extend_from_slice(&carrier_proto::mailbox::blob_id(&stored.blob));
            table.remove(key.as_slice()).unwrap();
            table.insert(new_key.as_slice(), stored.encode_to_vec().as_slice()).unwrap();
            altered += 1;
        }
    }
    txn.commit().unwrap();
    altered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_copy_is_rejected_and_logged_and_a_revoked_senders_blobs_are_dropped() {
    let root = tempfile::tempdir().unwrap();
    // Three mailbox nodes, an honest sender, a sender to be revoked, the recipient.
    let (dirs, apps) = provision_with_apps(root.path(), 6, &[0, 0, 0, 1, 1, 1]);
    let mut daemons = network(&dirs, "");
    until_routed(&dirs[4], dirs.len() - 1, WAIT);
    let recipient_app = AppIdentity::load_or_create(&apps[5][0]).unwrap().did();
    daemons.pop().unwrap().terminate();
    // The mailbox node closest to the recipient: whichever sender looks,
    // with itself left out, it is among the three closest, so it keeps a
    // copy of every message; at least one other mailbox node keeps one too.
    let target = libp2p::kad::KBucketKey::from(device_did(&dirs[5]).peer_id());
    let tamperer = (0..3)
        .min_by_key(|i| libp2p::kad::KBucketKey::from(device_did(&dirs[*i]).peer_id()).distance(&target))
        .unwrap();

    const N: u32 = 20;
    let honest = client(&apps[3][0], &dirs[3]).await;
    let doomed = client(&apps[4][0], &dirs[4]).await;
    for (sender, count, base) in [(&honest, N, 0), (&doomed, 5, 1000)] {
        let mut pending = Vec::new();
        for n in 0..count {
            pending.push(sender.submit(&recipient_app, payload(base + n)).await.unwrap());
        }
        for receipt in &mut pending {
            within("stored", receipt.stored()).await.unwrap().expect("stored before any receipt");
        }
    }
    drop((honest, doomed));
    // Both senders go offline: what the recipient gets comes from the
    // mailboxes alone.
    let doomed_device = device_did(&dirs[4]).to_string();
    daemons.pop().unwrap().terminate();
    daemons.pop().unwrap().terminate();

    // That node alters every copy it keeps.
    daemons.remove(tamperer).terminate();
    assert!(alter_kept_blobs(&dirs[tamperer]) >= N as usize, "the closest node kept fewer blobs than were sent");
    daemons.insert(tamperer, Daemon::start(&dirs[tamperer], Some(&daemons[0].addr)));

    // The second sender is revoked; the recipient starts with that ledger.
    let (key, ledger) = (root.path().join("admin/registrar.key"), root.path().join("admin/ledger"));
    carrierctl(&[
        "ledger",
        "revoke",
        "--ledger",
        ledger.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        &doomed_device,
    ]);
    support::copy_ledger(&ledger, &dirs[5].join("ledger"));
    let back = Daemon::start(&dirs[5], Some(&daemons[0].addr));
    let recipient = client(&apps[5][0], &dirs[5]).await;
    let mut messages = recipient.messages();
    for n in 0..N {
        let message = within("a stored message", messages.next()).await.unwrap();
        assert_eq!(message.payload, payload(n), "message {n}: not exactly once, in order");
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(1), messages.next()).await.is_err(),
        "a message of the revoked sender, or one twice, reached the app"
    );
    let altered = back.printed_within("does not open: altered", WAIT);
    assert!(altered.is_some_and(|line| line.contains("rejected a mailbox blob")), "the altered copies were not logged");
    let revoked = back.printed_within("is not an active device", WAIT);
    assert!(revoked.is_some_and(|line| line.contains(&doomed_device)), "the revoked sender's blobs were not logged");
}
