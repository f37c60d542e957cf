//! A relayed link against a direct one, in the same run, in the NAT lab
//! (`tests/lab`): two devices behind port-restricted NATs (their link is
//! punched direct) and two behind symmetric NATs (their link stays on the
//! relay). The same measurements on each pair, app to app through the
//! daemons: message round trips and stream throughput.
//!
//! Run (needs root, `ip` and `nft`): `cargo bench -p carrier-daemon --bench nat_paths`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/lab/mod.rs"]
mod lab;
#[path = "../../tests/support/mod.rs"]
mod scenario;

use std::path::Path;
use std::time::{Duration, Instant};

use carrier_sdk::{AllowList, AppIdentity, Client};
use lab::{BOOTSTRAP_IP, Lab, NatKind, PORT, RELAY_IP};
use scenario::{Daemon, add_relay, app_socket, carrierctl, provision_with_apps, socket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUND_TRIPS: usize = 1_000;
const STREAM_BYTES: usize = 128 << 20;
const CHUNK: usize = 256 * 1024;

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&carrierctl(args)).unwrap()
}

/// The path of `from`'s link to `to`.
fn path(from: &Path, to: &str) -> Option<String> {
    let peers = json(&["peers", "--socket", &socket(from), "--json"]);
    let peer = peers.as_array()?.iter().find(|p| p["did"] == to)?.clone();
    peer["path"].as_str().map(str::to_owned)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Message round trips from `a` to an echo on `b`: (p50, p99).
async fn round_trips(a: &Client, b: &Client) -> (Duration, Duration) {
    let (to_b, echo) = (b.did(), b.clone());
    let echo_task = tokio::spawn(async move {
        let mut messages = echo.messages();
        while let Some(message) = messages.next().await {
            let _ = echo.submit(&message.from_app, message.payload).await;
        }
    });
    let mut inbox = a.messages();
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 50 {
        let started = Instant::now();
        let _receipt = a.submit(&to_b, vec![1u8; 64]).await.unwrap();
        let back = inbox.next().await.unwrap();
        assert_eq!(back.from_app, to_b);
        if i >= 50 {
            samples.push(started.elapsed());
        }
    }
    echo_task.abort();
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Bytes per second over one app stream from `a` to a sink on `b`.
async fn stream_throughput(a: &Client, b: &Client, service: &str) -> f64 {
    let mut listener = b.listen(service, &AllowList::any_active()).await.unwrap();
    let sink = tokio::spawn(async move {
        let mut stream = listener.accept().await.unwrap();
        let (mut buf, mut total) = (vec![0u8; CHUNK], 0);
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
    let mut stream = a.open_stream(&b.did(), service).await.unwrap();
    for _ in 0..STREAM_BYTES / CHUNK {
        stream.write_all(&chunk).await.unwrap();
    }
    stream.shutdown().await.unwrap();
    assert_eq!(sink.await.unwrap(), STREAM_BYTES);
    STREAM_BYTES as f64 / started.elapsed().as_secs_f64()
}

async fn run() {
    if let Some(reason) = lab::unavailable() {
        println!("nat_paths skipped: {reason}");
        return;
    }
    let kinds = [NatKind::PortRestricted, NatKind::PortRestricted, NatKind::Symmetric, NatKind::Symmetric];
    let lab = Lab::new(&kinds).unwrap();
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 1 + kinds.len(), &[0, 1, 1, 1, 1]);
    let relay_dir = add_relay(root.path(), &dirs);
    let public = lab.public();
    let bootstrap = Daemon::start_in(&public, &dirs[0], &format!("{BOOTSTRAP_IP}:{PORT}"), None, "");
    let relay = Daemon::start_in(&public, &relay_dir, &format!("{RELAY_IP}:{PORT}"), Some(&bootstrap.addr), "");
    let devices: Vec<Daemon> = (0..kinds.len())
        .map(|i| {
            let listen = format!("{}:{PORT}", lab.device_ip(i));
            Daemon::start_in(&lab.device(i), &dirs[i + 1], &listen, Some(&bootstrap.addr), "")
        })
        .collect();
    for device in &devices {
        device.wait_for("reachable through a relay at this address");
    }
    let device_dirs = &dirs[1..];
    let dids: Vec<String> = device_dirs
        .iter()
        .map(|d| json(&["status", "--socket", &socket(d), "--json"])["did"].as_str().unwrap().to_owned())
        .collect();
    let mut clients = Vec::new();
    for (i, dir) in device_dirs.iter().enumerate() {
        clients.push(
            Client::connect_as(AppIdentity::load_or_create(&apps[i + 1][0]).unwrap(), app_socket(dir)).await.unwrap(),
        );
    }
    println!("NAT lab: a punched direct link and a relayed one, app to app through the daemons");
    let mut results = Vec::new();
    for (x, y, want) in [(0, 1, "direct"), (2, 3, "relayed")] {
        carrierctl(&["connect", &dids[y], "--socket", &socket(&device_dirs[x])]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while path(&device_dirs[x], &dids[y]).as_deref() != Some(want) {
            assert!(Instant::now() < deadline, "the {want} pair never got a {want} link");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The relayed link a punched one replaced is closed after a grace.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (p50, p99) = round_trips(&clients[x], &clients[y]).await;
        let rate = stream_throughput(&clients[x], &clients[y], &format!("sink-{want}")).await;
        assert_eq!(path(&device_dirs[x], &dids[y]).as_deref(), Some(want), "the {want} link changed path");
        println!(
            "  {want:<8} ({:<15} ↔ {:<15}) round trip p50 {:>7.1} µs  p99 {:>7.1} µs   stream {:>7.1} MiB/s",
            kinds[x].name(),
            kinds[y].name(),
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            rate / (1 << 20) as f64
        );
        results.push((p50, rate));
    }
    let ((direct_rtt, direct_rate), (relayed_rtt, relayed_rate)) = (results[0], results[1]);
    println!(
        "  relayed / direct: round trip {:.2}x, stream throughput {:.0}%",
        relayed_rtt.as_secs_f64() / direct_rtt.as_secs_f64(),
        100.0 * relayed_rate / direct_rate
    );
    drop(clients);
    for daemon in devices.into_iter().chain([relay, bootstrap]) {
        assert!(daemon.terminate().success());
    }
}

fn main() {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(run());
}
