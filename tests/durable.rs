//! Nothing lost, on real daemons: either daemon killed with SIGKILL in the
//! middle of a burst and started again, a recipient device that is offline
//! for the whole send, an app that never reads beside one that does, and a
//! message over the receiver's limit.
//!
//! Apps see each message at least once and in order; one handed to an app
//! whose daemon then died before the app's acknowledgement reached its
//! disk comes again with the same id, so the receiving app here keeps the
//! last id it took per sender (as the SDK documents) and the test checks
//! that what it takes is every message exactly once, in order.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use carrier_sdk::{AppIdentity, Client, Did, MessageId, Reason, Receipt, ReceiptState, SendOptions};
use support::{Daemon, app_socket, provision_with_apps};

/// Every wait in these tests ends with a failure, never a hang.
const WAIT: Duration = Duration::from_secs(90);
const BURST: u32 = 1_000;

async fn client(app_dir: &Path, device_dir: &Path) -> Client {
    let identity = AppIdentity::load_or_create(app_dir).unwrap();
    Client::connect_as(identity, app_socket(device_dir)).await.unwrap()
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn payload(n: u32) -> Vec<u8> {
    let mut payload = n.to_be_bytes().to_vec();
    payload.extend_from_slice(&[7u8; 60]);
    payload
}

/// A point in the burst that differs from run to run.
fn somewhere_in_the_burst() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    100 + nanos % (BURST - 300)
}

/// What the receiving app took: numbers in the order taken, each once
/// (a redelivered id at or below the last one taken is dropped, as an app
/// keeping that one id does). Every repeat must carry `redelivered`: the
/// SDK's promise is exactly once, or flagged.
#[derive(Default)]
struct Taken {
    numbers: Vec<u32>,
    last: Option<MessageId>,
    again: usize,
    /// Repeats handed over without `redelivered`.
    unflagged: usize,
}

impl Taken {
    fn take(&mut self, id: MessageId, redelivered: bool, payload: &[u8]) {
        if let Some(last) = self.last
            && last.epoch == id.epoch
            && id.seq <= last.seq
        {
            self.again += 1;
            self.unflagged += usize::from(!redelivered);
            return;
        }
        self.last = Some(id);
        self.numbers.push(u32::from_be_bytes(payload[..4].try_into().unwrap()));
    }

    /// Takes from `client` until `until` numbers are in, or its session ends.
    async fn from(&mut self, client: &Client, until: usize) {
        let mut messages = client.messages();
        while self.numbers.len() < until {
            match tokio::time::timeout(WAIT, messages.next()).await {
                Ok(Some(message)) => self.take(message.id, message.redelivered, &message.payload),
                Ok(None) => return,
                Err(_) => panic!("no message for {WAIT:?}; {} taken", self.numbers.len()),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipients_daemon_killed_mid_burst_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let sending = Daemon::start(&dirs[0], None);
    let receiving = Daemon::start(&dirs[1], Some(&sending.addr));
    receiving.wait_for("peer up");
    let sender = client(&apps[0][0], &dirs[0]).await;
    let recipient = client(&apps[1][0], &dirs[1]).await;
    let to = recipient.did();

    let mut receipts = Vec::new();
    for n in 0..BURST {
        receipts.push(sender.submit(&to, payload(n)).await.unwrap());
    }
    let kill_at = somewhere_in_the_burst() as usize;
    let mut taken = Taken::default();
    within("the first part", taken.from(&recipient, kill_at)).await;
    receiving.kill();
    // The app goes on with what reached it, until its session ends.
    within("what reached the app", taken.from(&recipient, BURST as usize)).await;
    drop(recipient);
    let receiving = Daemon::start(&dirs[1], Some(&sending.addr));
    let recipient = client(&apps[1][0], &dirs[1]).await;
    within("the rest", taken.from(&recipient, BURST as usize)).await;
    assert_eq!(taken.numbers, (0..BURST).collect::<Vec<_>>(), "killed after {kill_at}: not exactly once, in order");
    assert_eq!(taken.unflagged, 0, "{} repeats, {} of them without redelivered", taken.again, taken.unflagged);
    for receipt in receipts {
        assert_eq!(within("a receipt", receipt).await.unwrap(), Receipt::Delivered);
    }
    drop(receiving);
}

/// Both daemons killed mid-burst: nothing lost, and every message the app
/// is handed a second time says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_daemons_killed_mid_burst_flag_every_repeat() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let sending = Daemon::start(&dirs[0], None);
    let receiving = Daemon::start(&dirs[1], Some(&sending.addr));
    receiving.wait_for("peer up");
    let sender = client(&apps[0][0], &dirs[0]).await;
    let recipient = client(&apps[1][0], &dirs[1]).await;
    let to = recipient.did();
    for n in 0..BURST {
        let mut receipt = sender.submit(&to, payload(n)).await.unwrap();
        assert!(within("accepted", receipt.accepted()).await.unwrap().is_some());
    }
    let kill_at = somewhere_in_the_burst() as usize;
    let mut taken = Taken::default();
    within("the first part", taken.from(&recipient, kill_at)).await;
    receiving.kill();
    sending.kill();
    // The app goes on with what reached it, until its session ends.
    within("what reached the app", taken.from(&recipient, BURST as usize)).await;
    drop((sender, recipient));
    let sending = Daemon::start(&dirs[0], None);
    let receiving = Daemon::start(&dirs[1], Some(&sending.addr));
    let recipient = client(&apps[1][0], &dirs[1]).await;
    within("the rest", taken.from(&recipient, BURST as usize)).await;
    assert_eq!(taken.numbers, (0..BURST).collect::<Vec<_>>(), "killed after {kill_at}: not exactly once, in order");
    assert_eq!(taken.unflagged, 0, "{} repeats, {} of them without redelivered", taken.again, taken.unflagged);
    println!("killed both after {kill_at} taken: {} repeats, every one flagged", taken.again);
    drop((receiving, sending));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_daemon_killed_mid_burst_loses_nothing_and_sends_nothing_twice() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let receiving = Daemon::start(&dirs[0], None);
    let sending = Daemon::start(&dirs[1], Some(&receiving.addr));
    sending.wait_for("peer up");
    let recipient = client(&apps[0][0], &dirs[0]).await;
    let to = recipient.did();
    let key = |n: u32| SendOptions { key: Some(n.to_be_bytes().to_vec()), ..SendOptions::default() };

    // Send the burst (paced, so the kill lands while the app is still
    // sending); the receiving app takes what comes meanwhile.
    let sender = client(&apps[1][0], &dirs[1]).await;
    let kill_at = somewhere_in_the_burst() as usize;
    let sending_task = {
        let (sender, key) = (sender.clone(), key);
        tokio::spawn(async move {
            let mut pending = Vec::new();
            for n in 0..BURST {
                match sender.submit_with(&to, payload(n), key(n)).await {
                    Ok(receipt) => pending.push(receipt),
                    Err(_) => break,
                }
                if n % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            pending
        })
    };
    let mut taken = Taken::default();
    within("the first part", taken.from(&recipient, kill_at)).await;
    sending.kill();
    let mut pending = within("the sending app", sending_task).await.unwrap();
    // What the app heard accepted before the kill is the daemon's; the rest
    // it sends again, with the same keys.
    let mut accepted = Vec::new();
    for receipt in &mut pending {
        match receipt.accepted().await {
            Ok(Some(id)) => accepted.push(id),
            _ => break,
        }
    }
    println!("killed after {kill_at} taken, {} accepted", accepted.len());
    drop((pending, sender));
    let sending = Daemon::start(&dirs[1], Some(&receiving.addr));
    let sender = client(&apps[1][0], &dirs[1]).await;
    let mut resent = Vec::new();
    for n in accepted.len() as u32..BURST {
        resent.push(sender.submit_with(&to, payload(n), key(n)).await.unwrap());
    }
    within("the rest", taken.from(&recipient, BURST as usize)).await;
    assert_eq!(taken.numbers, (0..BURST).collect::<Vec<_>>(), "killed after {kill_at}: not exactly once, in order");
    assert_eq!(taken.unflagged, 0, "{} repeats, {} of them without redelivered", taken.again, taken.unflagged);
    assert_eq!(taken.again, 0, "the receiving daemon never hands a message twice when it did not restart");
    for receipt in resent {
        assert_eq!(within("a receipt", receipt).await.unwrap(), Receipt::Delivered);
    }
    // Receipts of messages accepted before the kill are there to ask for.
    let deadline = Instant::now() + WAIT;
    loop {
        let states = sender.receipt_states(&accepted).await.unwrap();
        if states.iter().all(|(_, s)| *s == ReceiptState::Final(Receipt::Delivered)) {
            break;
        }
        assert!(Instant::now() < deadline, "receipts never all final: {:?}", &states[..3.min(states.len())]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(sending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_for_the_whole_send_gets_every_message_when_it_is_back() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let sending = Daemon::start(&dirs[0], None);
    let receiving = Daemon::start(&dirs[1], Some(&sending.addr));
    receiving.wait_for("peer up");
    let to = AppIdentity::load_or_create(&apps[1][0]).unwrap().did();
    receiving.terminate();

    let sender = client(&apps[0][0], &dirs[0]).await;
    let mut pending = Vec::new();
    let mut ids = Vec::new();
    for n in 0..200 {
        let mut receipt = sender.submit(&to, payload(n)).await.unwrap();
        ids.push(receipt.accepted().await.unwrap().expect("accepted while the recipient is offline"));
        pending.push(receipt);
    }
    let states = sender.receipt_states(&ids).await.unwrap();
    assert!(states.iter().all(|(_, s)| *s == ReceiptState::Pending), "waiting, not failed");

    let receiving = Daemon::start(&dirs[1], Some(&sending.addr));
    let recipient = client(&apps[1][0], &dirs[1]).await;
    let mut taken = Taken::default();
    within("every message", taken.from(&recipient, 200)).await;
    assert_eq!(taken.numbers, (0..200).collect::<Vec<_>>());
    assert_eq!(taken.again, 0);
    for receipt in pending {
        assert_eq!(within("a receipt", receipt).await.unwrap(), Receipt::Delivered);
    }
    drop(receiving);
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_never_reads_holds_up_no_other_pair_and_its_daemon_stays_bounded() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[2, 2]);
    let sending = Daemon::start(&dirs[0], None);
    // B holds at most 2 MiB for each of its apps.
    let limits = "[messaging]\nmax_message_bytes = 65536\nmax_inbox_bytes = 2097152\n";
    let receiving = Daemon::start_with(&dirs[1], Some(&sending.addr), limits);
    receiving.wait_for("peer up");
    let (stuck_sender, busy_sender) = (client(&apps[0][0], &dirs[0]).await, client(&apps[0][1], &dirs[0]).await);
    // This app connects and never reads a message.
    let stuck = client(&apps[1][0], &dirs[1]).await;
    let reader = client(&apps[1][1], &dirs[1]).await;
    let before = rss_kib(receiving.pid());

    // 64 MiB for the app that never reads...
    let flood = {
        let (sender, to) = (stuck_sender.clone(), stuck.did());
        tokio::spawn(async move {
            let mut pending = Vec::new();
            for n in 0..16_384u32 {
                let mut payload = payload(n);
                payload.resize(4096, 1);
                pending.push(sender.submit(&to, payload).await.unwrap());
            }
            pending
        })
    };
    // ...while the other pair between the same two devices goes on.
    let started = Instant::now();
    let to = reader.did();
    let mut receipts = Vec::new();
    for n in 0..2_000 {
        receipts.push(busy_sender.submit(&to, payload(n)).await.unwrap());
    }
    let mut taken = Taken::default();
    within("the other pair's messages", taken.from(&reader, 2_000)).await;
    for receipt in receipts {
        assert_eq!(within("a receipt", receipt).await.unwrap(), Receipt::Delivered);
    }
    let other_pair = started.elapsed();
    assert_eq!(taken.numbers, (0..2_000).collect::<Vec<_>>());
    let flood = within("the flood queued", flood).await.unwrap();
    // The receiving daemon holds what its limit allows and no more.
    let grown = rss_kib(receiving.pid()).saturating_sub(before);
    assert!(grown < 48 * 1024, "the receiving daemon grew by {grown} KiB holding a 64 MiB flood");
    println!("other pair: 2,000 messages in {other_pair:?} beside a stalled flood; receiver grew {grown} KiB");
    drop((flood, stuck));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_receivers_limit_fails_alone() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let sending = Daemon::start(&dirs[0], None);
    let receiving = Daemon::start_with(&dirs[1], Some(&sending.addr), "[messaging]\nmax_message_bytes = 4096\n");
    receiving.wait_for("peer up");
    let sender = client(&apps[0][0], &dirs[0]).await;
    let recipient = client(&apps[1][0], &dirs[1]).await;
    let to: Did = recipient.did();
    let before = sender.submit(&to, "before").await.unwrap();
    let over = sender.submit(&to, vec![1u8; 10_000]).await.unwrap();
    let after = sender.submit(&to, "after").await.unwrap();
    match within("the over-limit receipt", over).await.unwrap() {
        Receipt::Failed(failure) => assert_eq!(failure.reason, Reason::TooLarge, "{failure}"),
        Receipt::Delivered => panic!("a message over the receiver's limit was delivered"),
    }
    assert_eq!(within("before", before).await.unwrap(), Receipt::Delivered);
    assert_eq!(within("after", after).await.unwrap(), Receipt::Delivered);
    let mut messages = recipient.messages();
    for expected in ["before", "after"] {
        let message = within("a message", messages.next()).await.unwrap();
        assert_eq!(message.payload, expected.as_bytes());
    }
}
