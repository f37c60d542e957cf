//! Link admission speed and cost, beside plain QUIC in the same run.
//!
//! Run: `cargo bench -p carrier-daemon --bench link`
//!
//! - latency: one dial at a time, dial → admitted (QUIC + Noise + ledger
//!   check), against dial → QUIC established on the same endpoints;
//! - throughput: admissions per second with many dials in flight, and the
//!   listener's CPU time per admission (the listener runs on its own
//!   one-thread runtime, dialers on another, so each side's cost is seen);
//! - memory per idle link: resident memory grown per open link.
//!
//! Both ends run in this process on loopback, sharing its 2 cores.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carrier_daemon::ledger::EmbeddedLedger;
use carrier_daemon::link::{LinkContext, LinkLimits, quic};
use carrier_proto::identity::{Did, Identity};
use carrier_proto::ledger::LedgerState;
use carrier_proto::testing::TestNetwork;

const LATENCY_SAMPLES: usize = 400;
const THROUGHPUT_DIALS: usize = 2_000;
const IN_FLIGHT: usize = 32;
const IDLE_LINKS: usize = 500;

fn context(identity: Identity, ledger: &LedgerState) -> Arc<LinkContext> {
    let did = identity.did();
    let limits =
        LinkLimits { max_handshakes: 4096, max_handshakes_per_ip: 4096, retry_above: 4096, ..LinkLimits::default() };
    Arc::new(LinkContext::new(identity, did, Arc::new(EmbeddedLedger::in_memory(ledger.clone())), limits))
}

/// A server that admits (Carrier) or merely accepts (plain QUIC) and keeps
/// every connection open.
fn serve(ctx: Option<Arc<LinkContext>>) -> SocketAddr {
    let endpoint = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        loop {
            tokio::select! {
                Some(incoming) = endpoint.accept() => {
                    let (ctx, tx) = (ctx.clone(), tx.clone());
                    tokio::spawn(async move {
                        let connection = match ctx {
                            Some(ctx) => ctx.accept(incoming).await.ok().map(|link| link.connection),
                            None => incoming.await.ok(),
                        };
                        if let Some(connection) = connection {
                            let _ = tx.send(connection);
                        }
                    });
                }
                Some(connection) = rx.recv() => kept.push(connection),
            }
        }
    });
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn show(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!("  {name:<28} p50 {:>7.0} µs   p99 {:>7.0} µs", p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6);
    p50
}

async fn dial_admitted(ctx: &LinkContext, endpoint: &quinn::Endpoint, addr: SocketAddr, to: Did) -> quinn::Connection {
    ctx.dial(endpoint, addr, Some(to)).await.unwrap().connection
}

async fn dial_plain(endpoint: &quinn::Endpoint, addr: SocketAddr) -> quinn::Connection {
    endpoint.connect(addr, "carrier").unwrap().await.unwrap()
}

/// CPU time (user + system) used so far by this process's threads whose
/// names start with `name`.
fn thread_cpu(name: &str) -> Duration {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(name) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        ticks += fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_second)
}

async fn run(client: Arc<LinkContext>, server_did: Did, carrier_addr: SocketAddr, plain_addr: SocketAddr) {
    let endpoint = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();

    let client = &client;
    println!("latency, one dial at a time ({LATENCY_SAMPLES} samples):");
    let (mut plain, mut carrier) = (Vec::new(), Vec::new());
    for _ in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let c = dial_plain(&endpoint, plain_addr).await;
        plain.push(started.elapsed());
        c.close(0u32.into(), b"");
        let started = Instant::now();
        let c = dial_admitted(client, &endpoint, carrier_addr, server_did).await;
        carrier.push(started.elapsed());
        c.close(0u32.into(), b"");
    }
    let plain_p50 = show("plain QUIC connect", plain);
    let carrier_p50 = show("Carrier admission (IK)", carrier);
    println!("  admission / plain QUIC       {:.2}x\n", carrier_p50.as_secs_f64() / plain_p50.as_secs_f64());

    println!("throughput, {IN_FLIGHT} dials in flight, {THROUGHPUT_DIALS} dials:");
    for carrier in [false, true] {
        let started = Instant::now();
        let listener_cpu = thread_cpu("listener");
        let mut tasks = tokio::task::JoinSet::new();
        let per_task = THROUGHPUT_DIALS / IN_FLIGHT;
        for _ in 0..IN_FLIGHT {
            let (client, endpoint) = (Arc::clone(client), endpoint.clone());
            tasks.spawn(async move {
                for _ in 0..per_task {
                    let c = match carrier {
                        true => dial_admitted(&client, &endpoint, carrier_addr, server_did).await,
                        false => dial_plain(&endpoint, plain_addr).await,
                    };
                    c.close(0u32.into(), b"");
                }
            });
        }
        tasks.join_all().await;
        let count = (per_task * IN_FLIGHT) as f64;
        let rate = count / started.elapsed().as_secs_f64();
        let cpu_each = (thread_cpu("listener") - listener_cpu).as_secs_f64() / count;
        let name = if carrier { "Carrier admissions" } else { "plain QUIC connections" };
        println!(
            "  {name:<24} {rate:>6.0} /s   listener CPU {:>4.0} µs each = {:>5.0} /s per listener on 2 cores",
            cpu_each * 1e6,
            2.0 / cpu_each
        );
    }

    println!("\nmemory, {IDLE_LINKS} idle links (both ends in this process):");
    for carrier in [false, true] {
        let before = support::rss_kib();
        let mut open = Vec::with_capacity(IDLE_LINKS);
        for _ in 0..IDLE_LINKS {
            open.push(match carrier {
                true => dial_admitted(client, &endpoint, carrier_addr, server_did).await,
                false => dial_plain(&endpoint, plain_addr).await,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let grown = support::rss_kib().saturating_sub(before);
        let name = if carrier { "Carrier link" } else { "plain QUIC connection" };
        println!(
            "  {name:<28} {:>5.1} KiB per link ({:.1} KiB per end)",
            grown as f64 / IDLE_LINKS as f64,
            grown as f64 / IDLE_LINKS as f64 / 2.0
        );
        for c in &open {
            c.close(0u32.into(), b"");
        }
    }
}

fn main() {
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name(name).enable_all().build().unwrap()
    };
    let (listener, dialer) = (runtime("listener"), runtime("dialer"));
    let mut net = TestNetwork::new("bench");
    let (client, server) = (net.register_device(), net.register_device());
    let server_did = server.did();
    let ledger = net.ledger;
    let server = context(server, &ledger);
    // Endpoints and accept loops live on the listener's runtime.
    let (carrier_addr, plain_addr) = listener.block_on(async { (serve(Some(server)), serve(None)) });
    dialer.block_on(run(context(client, &ledger), server_did, carrier_addr, plain_addr));
}
