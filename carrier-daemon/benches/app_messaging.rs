//! App-to-app messaging and streams through two daemons, beside raw quinn
//! in the same run.
//!
//! Run: `cargo bench -p carrier-daemon --bench app_messaging`
//!
//! - round trip: app A sends 64 bytes to app B on the other daemon, B
//!   sends them back; against a 64-byte echo on one raw quinn stream;
//! - message rate: 64-byte messages from A to B, pipelined, every receipt
//!   awaited; with each daemon's message store on disk (durable: what
//!   carrierd does), against the same with the stores in memory, in
//!   turns over five rounds (the median, and the spread);
//! - stream throughput: A writes 512 MiB on an app stream, B reads it all;
//!   against the same on one raw quinn stream.
//!
//! A word after `--` runs only the parts whose names contain it
//! (`round trip`, `message rate`, `stream throughput`), e.g.
//! `cargo bench -p carrier-daemon --bench app_messaging -- rate`.
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
use carrier_daemon::paths::APP_SOCKET;
use carrier_sdk::{AllowList, AppIdentity, Client, Receipt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUND_TRIPS: usize = 2_000;
const MESSAGES: usize = 200_000;
/// Rounds of the message rate, each store kind in turn; the median is shown.
const RATE_ROUNDS: usize = 5;
const STREAM_BYTES: usize = 512 << 20;
const CHUNK: usize = 256 * 1024;

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

/// Two linked daemons (message stores in memory or on disk) and an app on each.
async fn pair(root: &Path, in_memory: bool) -> (Daemon, Daemon, Client, Client) {
    let [(data0, app0), (data1, app1)] = support::provision(root);
    let config = |name: &str, bootstrap| {
        let mut config = support::config(root, name, bootstrap);
        config.messaging.in_memory = in_memory;
        config
    };
    let first = Daemon::start(&config("run0", vec![]), data0, &root.join("run0")).await.unwrap();
    let addr = first.overlay().listen_addr().to_string();
    let mut events = first.overlay().events();
    let second = Daemon::start(&config("run1", vec![addr]), data1, &root.join("run1")).await.unwrap();
    while !matches!(events.recv().await.unwrap(), OverlayEvent::PeerUp(did) if did == second.did()) {}
    let a = Client::connect_as(AppIdentity::load_or_create(&app0).unwrap(), root.join("run0").join(APP_SOCKET));
    let b = Client::connect_as(AppIdentity::load_or_create(&app1).unwrap(), root.join("run1").join(APP_SOCKET));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    // Warm up: the link, the courier and its stream.
    assert_eq!(a.send(&b.did(), "warm").await.unwrap(), Receipt::Delivered);
    b.messages().next().await.unwrap();
    (first, second, a, b)
}

/// Whether the part named `name` is to run (every part, or those matching
/// a word given after `--`).
fn wanted(name: &str) -> bool {
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    words.is_empty() || words.iter().any(|w| name.contains(w.as_str()))
}

async fn run() {
    let root = tempfile::tempdir().unwrap();
    let (first, second, a, b) = pair(root.path(), false).await;
    if wanted("round trip") {
        round_trip_part(&a, &b).await;
    }
    if wanted("message rate") {
        message_rate_part(&a, &b).await;
    }
    if wanted("stream throughput") {
        stream_part(&a, &b).await;
    }
    drop((a, b));
    second.shutdown().await;
    first.shutdown().await;
}

async fn round_trip_part(a: &Client, b: &Client) {
    println!("round trip, 64 bytes, one at a time ({ROUND_TRIPS} samples):");
    let (carrier, raw) = round_trips(a, b).await;
    let raw_p50 = show("raw quinn echo", raw);
    let carrier_p50 = show("app → daemon → daemon → app", carrier);
    println!("  Carrier / raw quinn            {:.2}x\n", carrier_p50.as_secs_f64() / raw_p50.as_secs_f64());
}

async fn message_rate_part(a: &Client, b: &Client) {
    println!("message rate, 64 bytes, one app pair, pipelined ({MESSAGES} messages, {RATE_ROUNDS} rounds each):");
    let root = tempfile::tempdir().unwrap();
    let (first, second, a_mem, b_mem) = pair(root.path(), true).await;
    // Taken in turns, so that whatever else the machine does falls on both.
    let (mut durable, mut volatile) = (Vec::new(), Vec::new());
    for _ in 0..RATE_ROUNDS {
        durable.push(message_rate(a, b).await);
        volatile.push(message_rate(&a_mem, &b_mem).await);
    }
    drop((a_mem, b_mem));
    second.shutdown().await;
    first.shutdown().await;
    let (durable, volatile) = (median_and_spread(durable), median_and_spread(volatile));
    println!(
        "  stores in memory               {:>9.0} messages/s   (rounds {:.0}-{:.0})",
        volatile.0, volatile.1, volatile.2
    );
    println!(
        "  stores on disk (durable)       {:>9.0} messages/s   (rounds {:.0}-{:.0})",
        durable.0, durable.1, durable.2
    );
    println!("  durable / in memory            {:>9.0} %\n", 100.0 * durable.0 / volatile.0);
}

/// The median, lowest and highest of some rates.
fn median_and_spread(mut rates: Vec<f64>) -> (f64, f64, f64) {
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], rates[0], rates[rates.len() - 1])
}

async fn stream_part(a: &Client, b: &Client) {
    println!("stream throughput, {} MiB:", STREAM_BYTES >> 20);
    let (carrier, raw) = stream_throughput(a, b).await;
    println!("  raw quinn stream               {:>7.0} MiB/s", raw / (1 << 20) as f64);
    println!("  app stream through 2 daemons   {:>7.0} MiB/s", carrier / (1 << 20) as f64);
    println!("  Carrier / raw quinn            {:>7.0} %", 100.0 * carrier / raw);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run());
}
