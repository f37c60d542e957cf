//! The attacker inside: a registered device's keys, a stock daemon and a
//! small hostile peer (raw QUIC and the handshake's own state machines,
//! where the stock daemon would not misbehave). Each test tries to break
//! one bound of the threat model and checks the victim's figures.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use carrier_proto::handshake::Refusal;
use carrier_proto::identity::Identity;
use carrier_proto::keystore;
use carrier_proto::ledger::{Entry, LedgerState, LogTrust, Op, SignedCheckpoint};
use serde_json::Value;
use support::hostile::{addr_of, dir_bytes, idle_join_connections, link_with_note, memory_kib, padded};
use support::{Daemon, carrierctl, provision_with_apps, socket, status};

/// The ledger a device holds on disk, replayed.
fn ledger_of(dir: &Path) -> LedgerState {
    let entries = carrier_daemon::ledger::LedgerStore::read_all(&dir.join("ledger")).unwrap();
    carrier_proto::ledger::replay(&entries).unwrap()
}

/// A registered device hands a victim a real checkpoint padded with lines
/// of unknown keys: the victim keeps it written anew (it once stored it
/// byte for byte, and then refused every link: its own handshake no longer
/// fit a frame), and links with honest peers go on, after a restart too. A
/// note past the size limit is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_padded_checkpoint_is_kept_written_anew_and_links_go_on() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, _) = provision_with_apps(root.path(), 4, &[]);
    std::fs::copy(root.path().join("admin/ledger/log.key"), dirs[0].join("log.key")).unwrap();
    let sequencer =
        Daemon::start_with(&dirs[0], None, &format!("[ledger]\nsequencer_key = {:?}\n", dirs[0].join("log.key")));
    // The sequencer's note names it; the victim's (from the admin) does not.
    let theirs = status(&dirs[0])["ledger"]["checkpoint"].as_str().unwrap().to_owned();
    let victim = Daemon::start(&dirs[1], None);
    let ledger = ledger_of(&dirs[1]);
    let attacker = keystore::load(&dirs[2].join("device.key")).unwrap();
    let victim_did = keystore::load(&dirs[1].join("device.key")).unwrap().did();
    let note = padded(theirs.as_bytes(), 4000);
    assert!(note.len() > theirs.len() + 3000 && note.len() <= 4000, "{} of {}", note.len(), theirs.len());
    let link = link_with_note(&attacker, &ledger, addr_of(&victim), victim_did, &note).await.unwrap();
    // The victim took the note's news (the sequencer's name), not its padding.
    let deadline = Instant::now() + support::WAIT;
    while !status(&dirs[1])["ledger"]["checkpoint"].as_str().unwrap().contains("carrier-sequencer") {
        assert!(Instant::now() < deadline, "the victim never took the sequencer's note");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = std::fs::read(dirs[1].join("ledger/checkpoint")).unwrap();
    let network = ledger.network().unwrap();
    let canonical =
        SignedCheckpoint::open(theirs.as_bytes(), &LogTrust::log_only(network.id, network.log_key)).unwrap();
    assert_eq!(stored, canonical.note(), "stored as the log wrote it, {} bytes", stored.len());
    // Honest peers link, before and after the victim restarts.
    let honest = Daemon::start(&dirs[3], Some(&victim.addr));
    honest.wait_for("peer up");
    drop((honest, victim));
    let victim = Daemon::start(&dirs[1], None);
    let honest = Daemon::start(&dirs[3], Some(&victim.addr));
    honest.wait_for("peer up");
    victim.wait_for("peer up");
    // A note over the limit: refused by name, and never kept.
    let huge = padded(theirs.as_bytes(), 4300);
    assert!(huge.len() > carrier_proto::ledger::MAX_NOTE_SIZE);
    let refused = link_with_note(&attacker, &ledger, addr_of(&victim), victim_did, &huge).await.err();
    assert_eq!(refused, Some(Some(Refusal::BadCheckpoint)));
    drop((link, honest, victim, sequencer));
}

/// A request signed long ago (captured, or refused once and played back)
/// is refused by the sequencer as expired; one without an expiry too.
#[test]
fn an_old_signed_request_played_back_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, _) = provision_with_apps(root.path(), 1, &[]);
    std::fs::copy(root.path().join("admin/ledger/log.key"), dirs[0].join("log.key")).unwrap();
    let _sequencer =
        Daemon::start_with(&dirs[0], None, &format!("[ledger]\nsequencer_key = {:?}\n", dirs[0].join("log.key")));
    let registrar = keystore::load(&root.path().join("admin/registrar.key")).unwrap();
    let network = ledger_of(&dirs[0]).network().unwrap().id;
    let newcomer = Identity::generate(carrier_proto::identity::IdentityKind::Device);
    let op = Op::RegisterDevice { did: newcomer.did(), keys: newcomer.public_keys(), roles: vec![] };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let week_ago = now - 7 * 24 * 3600 * 1000;
    for (entry, why) in [
        (Entry::sign(network, week_ago, op.clone(), &registrar), "expired"),
        (Entry::sign_until(network, now, 0, op, &registrar), "no expiry"),
    ] {
        let path = root.path().join("request");
        std::fs::write(&path, format!("carrier-request:{}", carrier_daemon_b64(entry.encoded()))).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_carrierctl"))
            .args(["ledger", "submit", "--socket", &socket(&dirs[0]), path.to_str().unwrap()])
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(said.contains(why), "{why}: {said}");
    }
    assert_eq!(status(&dirs[0])["ledger"]["height"], 2, "nothing was sequenced");
}

fn carrier_daemon_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Waits until `check` holds for `dir`'s status, or panics naming `what`.
fn wait_status(dir: &Path, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + support::WAIT;
    loop {
        let status = status(dir);
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{dir:?} never {what}: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn height(status: &Value) -> u64 {
    status["ledger"]["height"].as_u64().unwrap()
}

/// 64 idle join connections and one trickling a 4 MiB request hold no slot
/// a newcomer needs: it fetches the ledger and is admitted as fast as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_join_connections_do_not_keep_a_device_from_joining() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, _) = provision_with_apps(root.path(), 1, &[]);
    let a = Daemon::start(&dirs[0], None);
    let _idle = idle_join_connections(addr_of(&a), 64).await;
    let ledger = root.path().join("admin/ledger");
    let line = carrierctl(&["invite", "--ledger", ledger.to_str().unwrap(), "--bootstrap", &a.addr]);
    let newcomer = root.path().join("newcomer");
    let init = support::carrierd(&["init", "--data-dir", newcomer.to_str().unwrap(), "--invite", line.trim()])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let started = Instant::now();
    let _newcomer = Daemon::start(&newcomer, Some(&a.addr));
    wait_status(&newcomer, "fetched the ledger while waiting", |s| height(s) == 2);
    let fetched = started.elapsed();
    assert!(fetched < Duration::from_secs(5), "the ledger took {fetched:?} to fetch beside idle joins");
    let registrar = root.path().join("admin/registrar.key");
    let card = newcomer.join("device.card");
    let (ledger, registrar, card) = (ledger.to_str().unwrap(), registrar.to_str().unwrap(), card.to_str().unwrap());
    carrierctl(&["ledger", "register-device", "--ledger", ledger, "--key", registrar, card]);
    carrierctl(&["ledger", "publish", "--ledger", ledger, "--socket", &socket(&dirs[0])]);
    wait_status(&newcomer, "admitted", |s| s["registered"] == true && s["peers"].as_u64().unwrap() > 0);
    println!("fetched in {fetched:?} beside 64 idle join connections and a trickle");
}

/// A device rotating its own key in a loop, each time signing with the key
/// it just moved to: the sequencer counts its DID, not its key, and stops it
/// at the genesis's rotations a day.
#[test]
fn a_rotation_loop_stops_at_the_quota() {
    let root = tempfile::tempdir().unwrap();
    let (key, ledger) = (root.path().join("admin/registrar.key"), root.path().join("admin/ledger"));
    carrierctl(&["keygen", "--kind", "registrar", "--out", key.to_str().unwrap()]);
    let (key, ledger_s) = (key.to_str().unwrap(), ledger.to_str().unwrap());
    carrierctl(&[
        "ledger",
        "genesis",
        "--ledger",
        ledger_s,
        "--network",
        "t",
        "--key",
        key,
        "--max-rotations-per-day",
        "3",
        "--max-requests-per-minute",
        "5",
    ]);
    let dir = support::new_device(root.path(), &ledger, "node0");
    support::copy_ledger(&ledger, &dir.join("ledger"));
    std::fs::copy(ledger.join("log.key"), dir.join("log.key")).unwrap();
    let _sequencer = Daemon::start_with(&dir, None, &format!("[ledger]\nsequencer_key = {:?}\n", dir.join("log.key")));
    let did = status(&dir)["did"].as_str().unwrap().to_owned();
    let mut current = dir.join("device.key");
    let (mut sequenced, mut refused) = (0, Vec::new());
    for n in 0..20 {
        let next = root.path().join(format!("key{n}"));
        let out = carrierctl(&["keygen", "--kind", "device", "--out", next.to_str().unwrap()]);
        let card = out.lines().find_map(|l| l.strip_prefix("card: ")).unwrap().to_owned();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_carrierctl"))
            .args(["ledger", "rotate", "--submit", "--wait", "--socket", &socket(&dir)])
            .args(["--key", current.to_str().unwrap(), &did, &card])
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() && !said.contains("refused") {
            sequenced += 1;
            current = next;
        } else {
            refused.push(said);
        }
    }
    assert_eq!(sequenced, 3, "rotations sequenced; refusals: {refused:?}");
    assert!(refused.iter().all(|r| r.contains("rotated") || r.contains("requests")), "{refused:?}");
    assert_eq!(height(&status(&dir)), 2 + 3);
}

/// A replica whose log was cut short on disk (a torn tail, a bad restore)
/// keeps its checkpoint, fetches the missing entries from a peer and proves
/// them against it: it heals without an admin's help.
#[test]
fn a_log_cut_short_on_disk_heals_from_a_peer() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, _) = provision_with_apps(root.path(), 2, &[3]);
    let full = height(&{
        let a = Daemon::start(&dirs[0], None);
        let s = status(&dirs[0]);
        drop(a);
        s
    });
    assert!(full >= 6);
    // Cut B's log in the middle of its entries.
    let log = dirs[1].join("ledger/ledger.log");
    let len = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(len * 2 / 3).unwrap();
    let a = Daemon::start(&dirs[0], None);
    let b = Daemon::start(&dirs[1], Some(&a.addr));
    b.wait_for("shorter than its checkpoint");
    let healed = wait_status(&dirs[1], "healed", |s| height(s) == full);
    assert!(healed["alarm"].as_str().unwrap().is_empty(), "{healed}");
    drop((a, b));
    carrierctl(&["ledger", "verify", "--ledger", dirs[1].join("ledger").to_str().unwrap()]);
}

/// Reads from `stream` until it ends (or fails); returns when, and how much.
async fn read_until_cut(mut stream: impl tokio::io::AsyncRead + Unpin) -> (Instant, u64) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (Instant::now(), total),
            Ok(n) => total += n as u64,
        }
    }
}

/// Writes to `stream` as fast as it takes it, until it fails.
async fn write_until_cut(mut stream: impl tokio::io::AsyncWrite + Unpin) -> Instant {
    use tokio::io::AsyncWriteExt;
    let chunk = vec![7u8; 64 << 10];
    while stream.write_all(&chunk).await.is_ok() {}
    Instant::now()
}

/// App A streams to app B, and a TCP connection is forwarded from A's
/// device to a TCP sink beside B, both carrying data flat out; A is
/// revoked: both are cut on both devices within two seconds, mid-transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_revoked_mid_stream_and_mid_forward_is_cut() {
    use carrier_sdk::{AllowList, AppIdentity, Client, forward};
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let node0 = Daemon::start(&dirs[0], None);
    let node1 = Daemon::start(&dirs[1], Some(&node0.addr));
    node1.wait_for("peer up");
    let connect = |app: &Path, dir: &Path| {
        let (identity, socket) = (AppIdentity::load_or_create(app).unwrap(), support::app_socket(dir));
        async move { Client::connect_as(identity, socket).await.unwrap() }
    };
    let (a, b) = (connect(&apps[0][0], &dirs[0]).await, connect(&apps[1][0], &dirs[1]).await);
    // A stream, A to B.
    let mut bulk = b.listen("bulk", &AllowList::any_active()).await.unwrap();
    let b_did = b.did();
    let (opened, accepted) = tokio::join!(a.open_stream(&b_did, "bulk"), bulk.accept());
    let (opened, accepted) = (opened.unwrap(), accepted.unwrap());
    let writer = tokio::spawn(write_until_cut(opened));
    let reader = tokio::spawn(read_until_cut(accepted));
    // A forward: a TCP client at A's device, a TCP sink beside B.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let sinking = tokio::spawn(async move { read_until_cut(sink.accept().await.unwrap().0).await });
    let service = b.listen("tcp", &AllowList::any_active()).await.unwrap();
    tokio::spawn(forward::expose(service, sink_addr));
    let local = forward::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let local_addr = local.local_addr().unwrap();
    let a_did = a.did();
    let forwarding = a.clone();
    tokio::spawn(async move { forward::forward_local(&forwarding, local, b.did(), "tcp").await });
    let tcp = tokio::net::TcpStream::connect(local_addr).await.unwrap();
    let tcp_writer = tokio::spawn(write_until_cut(tcp));
    // Both carry data for a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!reader.is_finished() && !sinking.is_finished() && !writer.is_finished());
    // The admin revokes A; both daemons hear of it.
    let (ledger, key) = (root.path().join("admin/ledger"), root.path().join("admin/registrar.key"));
    let (ledger, key) = (ledger.to_str().unwrap(), key.to_str().unwrap());
    carrierctl(&["ledger", "revoke", "--ledger", ledger, "--key", key, &a_did.to_string()]);
    let revoked = Instant::now();
    carrierctl(&["ledger", "publish", "--ledger", ledger, "--socket", &socket(&dirs[0])]);
    let within = Duration::from_secs(2);
    let limit = |what: &str, at: Instant| {
        let took = at.saturating_duration_since(revoked);
        assert!(took < within, "{what} went on {took:?} after the revocation");
        took
    };
    let (read_end, read) = tokio::time::timeout(support::WAIT, reader).await.unwrap().unwrap();
    let (sink_end, sunk) = tokio::time::timeout(support::WAIT, sinking).await.unwrap().unwrap();
    let write_end = tokio::time::timeout(support::WAIT, writer).await.unwrap().unwrap();
    let tcp_end = tokio::time::timeout(support::WAIT, tcp_writer).await.unwrap().unwrap();
    let took = [
        limit("the stream (B's end)", read_end),
        limit("the stream (A's end)", write_end),
        limit("the forward (B's end)", sink_end),
        limit("the forward (A's end)", tcp_end),
    ];
    assert!(read > 0 && sunk > 0, "nothing flowed before: {read}, {sunk}");
    node0.wait_for("cutting an app stream");
    println!("cut after {took:?} ({read} and {sunk} bytes had passed)");
}

/// A million zero-length messages from one registered device's app to an
/// app that is connected but never reads: the recipient's daemon keeps what
/// its quotas allow (records counted, not only bytes), its memory and disk
/// stay bounded, another pair's messages go on, and it restarts quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_empty_messages_stay_within_the_quotas() {
    use carrier_sdk::{AppIdentity, Client};
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[2, 2]);
    let node0 = Daemon::start(&dirs[0], None);
    let node1 = Daemon::start(&dirs[1], Some(&node0.addr));
    node1.wait_for("peer up");
    let connect = |app: &Path, dir: &Path| {
        let (identity, socket) = (AppIdentity::load_or_create(app).unwrap(), support::app_socket(dir));
        async move { Client::connect_as(identity, socket).await.unwrap() }
    };
    let (flooder, victim) = (connect(&apps[0][0], &dirs[0]).await, connect(&apps[1][0], &dirs[1]).await);
    let (friend, other) = (connect(&apps[0][1], &dirs[0]).await, connect(&apps[1][1], &dirs[1]).await);
    let rss_before = memory_kib(node1.pid()).0;
    let to = victim.did();
    let started = Instant::now();
    let (mut accepted, mut full) = (0u64, 0u64);
    let mut receipts = Vec::new();
    // Pipelined, as a flooding app would: a window of answers awaited.
    let mut waiting = std::collections::VecDeque::new();
    for n in 0..1_000_000u32 {
        waiting.push_back(flooder.submit(&to, Vec::<u8>::new()).await.unwrap());
        if waiting.len() < 4096 && n < 999_999 {
            continue;
        }
        while let Some(mut receipt) = waiting.pop_front() {
            match receipt.accepted().await {
                Ok(Some(_)) => {
                    accepted += 1;
                    receipts.push(receipt);
                }
                _ => full += 1,
            }
            if waiting.len() < 2048 && n < 999_999 {
                break;
            }
        }
    }
    let flood = started.elapsed();
    // Another pair between the same two devices goes on.
    let mut messages = other.messages();
    let round = Instant::now();
    friend.submit(&other.did(), "still here").await.unwrap();
    let message = tokio::time::timeout(support::WAIT, messages.next()).await.unwrap().unwrap();
    assert_eq!(message.payload, b"still here");
    let honest = round.elapsed();
    let grown_kib = memory_kib(node1.pid()).0.saturating_sub(rss_before);
    let disk = dir_bytes(&dirs[1]);
    println!(
        "1,000,000 empty messages in {flood:?}: {accepted} accepted, {full} refused (outbox full); \
         the victim grew {grown_kib} KiB, holds {disk} bytes on disk; another pair's message took {honest:?}"
    );
    // Its outbox's count, and what the victim's SDK took on arrival.
    let most = carrier_daemon::delivery::DEFAULT_MAX_OUTBOX_MESSAGES as u64 + 4096;
    assert!(accepted <= most, "the flooding app queued {accepted} messages");
    assert!(grown_kib < 64 * 1024, "the victim's daemon grew {grown_kib} KiB");
    assert!(disk < 64 << 20, "the victim holds {disk} bytes on disk");
    assert!(honest < Duration::from_secs(2), "another pair waited {honest:?}");
    drop((flooder, victim, friend, other, receipts));
    drop(node1);
    let restart = Instant::now();
    let _node1 = Daemon::start(&dirs[1], Some(&node0.addr));
    let restarted = restart.elapsed();
    assert!(restarted < Duration::from_secs(5), "restart took {restarted:?}");
    println!("the victim restarted in {restarted:?}");
}
