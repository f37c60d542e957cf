//! App-to-app messaging and streams through two daemons, beside raw quinn
//! in the same run.
//!
//! Run: `cargo bench -p carrier-daemon --bench app_messaging`
//!
//! - round trip: app A sends 64 bytes to app B on the other daemon, B
//!   sends them back; against a 64-byte echo on one raw quinn stream;
//! - message rate: 64-byte messages from A to B, pipelined, every receipt
//!   awaited;
//! - stream throughput: A writes 512 MiB on an app stream, B reads it all;
//!   against the same on one raw quinn stream.
//!
//! Both daemons, both apps and the raw quinn endpoints run in this process
//! on loopback (one runtime, two worker threads), sharing its 2 cores.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use carrier_daemon::daemon::Daemon;
use carrier_daemon::link::quic;
use carrier_daemon::overlay::OverlayEvent;
use carrier_daemon::paths::{APP_SOCKET, DataDir};
use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::keystore;
use carrier_proto::ledger::{Entry, LedgerState, Op};
use carrier_sdk::{AllowList, AppIdentity, Client, Receipt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUND_TRIPS: usize = 2_000;
const MESSAGES: usize = 200_000;
const STREAM_BYTES: usize = 512 << 20;
const CHUNK: usize = 256 * 1024;

/// Two devices with one app each, on disk as `carrierd` would keep them.
fn provision(root: &Path) -> [(DataDir, std::path::PathBuf); 2] {
    let registrar = Identity::generate(IdentityKind::Registrar);
    let mut ledger = LedgerState::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut append = |ledger: &mut LedgerState, op: Op, signer: &Identity| {
        let entry = ledger.next_entry(op, entries.len() as u64 + 1, signer);
        ledger.append(entry.clone()).unwrap();
        entries.push(entry);
    };
    let log = root.join("log.key");
    append(&mut ledger, support::genesis(&registrar, &log), &registrar);
    let mut out = Vec::new();
    for i in 0..2 {
        let device = Identity::generate(IdentityKind::Device);
        let data = DataDir::new(root.join(format!("device{i}")));
        std::fs::create_dir_all(data.root()).unwrap();
        keystore::create(&data.device_key(), &device).unwrap();
        append(
            &mut ledger,
            Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] },
            &registrar,
        );
        let app_dir = root.join(format!("app{i}"));
        let app = AppIdentity::load_or_create(&app_dir).unwrap();
        let keys = keystore::load(app.key_file()).unwrap().public_keys();
        let app_identity = keystore::load(app.key_file()).unwrap();
        let consent = carrier_proto::ledger::Consent::sign(&app_identity, &device.did(), &ledger.network().unwrap().id);
        let name = format!("app{i}");
        let register = Op::RegisterApp { did: app.did(), keys, device: device.did(), name, consent };
        append(&mut ledger, register, &device);
        out.push((data, app_dir));
    }
    let dirs: Vec<_> = out.iter().map(|(data, _)| data.ledger()).collect();
    support::store_ledgers(&dirs, &entries, &log);
    [out.remove(0), out.remove(0)]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn show(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!("  {name:<30} p50 {:>7.1} µs   p99 {:>7.1} µs", p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6);
    p50
}

/// A raw quinn connection between two endpoints with Carrier's settings.
async fn raw_quinn() -> (quinn::Connection, quinn::Connection) {
    let server = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let accept = tokio::spawn(async move { server.accept().await.unwrap().await.unwrap() });
    let dialed = client.connect(addr, "carrier").unwrap().await.unwrap();
    (dialed, accept.await.unwrap())
}

async fn round_trips(a: &Client, b: &Client) -> (Vec<Duration>, Vec<Duration>) {
    let to_b = b.did();
    let echo = b.clone();
    let echo_task = tokio::spawn(async move {
        let mut messages = echo.messages();
        while let Some(message) = messages.next().await {
            let _ = echo.submit(&message.from_app, message.payload).await;
        }
    });
    let mut inbox = a.messages();
    let mut carrier = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 100 {
        let started = Instant::now();
        let _receipt = a.submit(&to_b, vec![1u8; 64]).await.unwrap();
        let back = inbox.next().await.unwrap();
        assert_eq!(back.from_app, to_b);
        if i >= 100 {
            carrier.push(started.elapsed());
        }
    }
    echo_task.abort();

    let (dialed, accepted) = raw_quinn().await;
    tokio::spawn(async move {
        let (mut send, mut recv) = accepted.accept_bi().await.unwrap();
        let mut buf = [0u8; 64];
        while recv.read_exact(&mut buf).await.is_ok() {
            send.write_all(&buf).await.unwrap();
        }
    });
    let (mut send, mut recv) = dialed.open_bi().await.unwrap();
    let mut raw = Vec::with_capacity(ROUND_TRIPS);
    let mut buf = [0u8; 64];
    for i in 0..ROUND_TRIPS + 100 {
        let started = Instant::now();
        send.write_all(&[1u8; 64]).await.unwrap();
        recv.read_exact(&mut buf).await.unwrap();
        if i >= 100 {
            raw.push(started.elapsed());
        }
    }
    (carrier, raw)
}

async fn message_rate(a: &Client, b: &Client) -> f64 {
    let to_b = b.did();
    let receiver = b.clone();
    let drain = tokio::spawn(async move {
        let mut messages = receiver.messages();
        for _ in 0..MESSAGES {
            messages.next().await.unwrap();
        }
    });
    let started = Instant::now();
    let sender = a.clone();
    let receipts = tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<carrier_sdk::PendingReceipt>(8192);
        let waiter = tokio::spawn(async move {
            while let Some(pending) = rx.recv().await {
                assert_eq!(pending.await.unwrap(), Receipt::Delivered);
            }
        });
        for _ in 0..MESSAGES {
            tx.send(sender.submit(&to_b, vec![7u8; 64]).await.unwrap()).await.unwrap();
        }
        drop(tx);
        waiter.await.unwrap();
    });
    receipts.await.unwrap();
    drain.await.unwrap();
    MESSAGES as f64 / started.elapsed().as_secs_f64()
}

async fn stream_throughput(a: &Client, b: &Client) -> (f64, f64) {
    let mut listener = b.listen("sink", &AllowList::any_active()).await.unwrap();
    let sink = tokio::spawn(async move {
        let mut stream = listener.accept().await.unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break total;
            }
            total += n;
        }
    });
    let chunk = vec![3u8; CHUNK];
    let started = Instant::now();
    let mut stream = a.open_stream(&b.did(), "sink").await.unwrap();
    for _ in 0..STREAM_BYTES / CHUNK {
        stream.write_all(&chunk).await.unwrap();
    }
    stream.shutdown().await.unwrap();
    assert_eq!(sink.await.unwrap(), STREAM_BYTES);
    let carrier = STREAM_BYTES as f64 / started.elapsed().as_secs_f64();

    let (dialed, accepted) = raw_quinn().await;
    let sink = tokio::spawn(async move {
        let (_send, mut recv) = accepted.accept_bi().await.unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        while let Some(n) = recv.read(&mut buf).await.unwrap() {
            total += n;
        }
        total
    });
    let started = Instant::now();
    let (mut send, _recv) = dialed.open_bi().await.unwrap();
    for _ in 0..STREAM_BYTES / CHUNK {
        send.write_all(&chunk).await.unwrap();
    }
    send.finish().unwrap();
    assert_eq!(sink.await.unwrap(), STREAM_BYTES);
    let raw = STREAM_BYTES as f64 / started.elapsed().as_secs_f64();
    (carrier, raw)
}

async fn run() {
    let root = tempfile::tempdir().unwrap();
    let [(data0, app0), (data1, app1)] = provision(root.path());
    let first =
        Daemon::start(&support::config(root.path(), "run0", vec![]), data0, &root.path().join("run0")).await.unwrap();
    let addr = first.overlay().listen_addr().to_string();
    let mut events = first.overlay().events();
    let second = Daemon::start(&support::config(root.path(), "run1", vec![addr]), data1, &root.path().join("run1"))
        .await
        .unwrap();
    while !matches!(events.recv().await.unwrap(), OverlayEvent::PeerUp(did) if did == second.did()) {}
    let a = Client::connect_as(AppIdentity::load_or_create(&app0).unwrap(), root.path().join("run0").join(APP_SOCKET));
    let b = Client::connect_as(AppIdentity::load_or_create(&app1).unwrap(), root.path().join("run1").join(APP_SOCKET));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    // Warm up: the link, the courier and its stream.
    assert_eq!(a.send(&b.did(), "warm").await.unwrap(), Receipt::Delivered);
    b.messages().next().await.unwrap();

    println!("round trip, 64 bytes, one at a time ({ROUND_TRIPS} samples):");
    let (carrier, raw) = round_trips(&a, &b).await;
    let raw_p50 = show("raw quinn echo", raw);
    let carrier_p50 = show("app → daemon → daemon → app", carrier);
    println!("  Carrier / raw quinn            {:.2}x\n", carrier_p50.as_secs_f64() / raw_p50.as_secs_f64());

    println!("message rate, 64 bytes, one app pair, pipelined ({MESSAGES} messages):");
    println!("  delivered with receipts        {:>9.0} messages/s\n", message_rate(&a, &b).await);

    println!("stream throughput, {} MiB:", STREAM_BYTES >> 20);
    let (carrier, raw) = stream_throughput(&a, &b).await;
    println!("  raw quinn stream               {:>7.0} MiB/s", raw / (1 << 20) as f64);
    println!("  app stream through 2 daemons   {:>7.0} MiB/s", carrier / (1 << 20) as f64);
    println!("  Carrier / raw quinn            {:>7.0} %", 100.0 * carrier / raw);
    drop((a, b));
    second.shutdown().await;
    first.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run());
}
