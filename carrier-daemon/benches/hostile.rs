//! What a hostile world costs, in one run:
//!
//! - admission: a registered device dials one at a time, with no flood and
//!   then under a sustained flood of silent QUIC connections from 16
//!   loopback addresses (each replaced as soon as it is cut);
//! - revocation and rotation across 10 daemons: from the entry's arrival at
//!   one daemon to the last link of the cut device closed anywhere.
//!
//! Run: `cargo bench -p carrier-daemon --bench hostile`
//!
//! Everything runs in this process on loopback, sharing its 2 cores.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use carrier_daemon::daemon::Daemon;
use carrier_daemon::ledger::{EmbeddedLedger, Ledger};
use carrier_daemon::link::{LinkContext, LinkLimits, quic};
use carrier_daemon::paths::DataDir;
use carrier_proto::identity::{Did, Identity, IdentityKind};
use carrier_proto::keystore;
use carrier_proto::ledger::{Entry, LedgerState, Op};
use carrier_proto::testing::TestNetwork;

const DIALS: usize = 200;
const FLOOD_ADDRESSES: u8 = 16;
const FLOOD_PER_ADDRESS: usize = 24;
const DAEMONS: usize = 10;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A listener with the daemon's default limits that keeps every link.
fn listener(ctx: Arc<LinkContext>) -> SocketAddr {
    let endpoint = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                if let Ok(link) = ctx.accept(incoming).await {
                    link.connection.closed().await;
                }
            });
        }
    });
    addr
}

/// Dials `DIALS` times, one at a time, each from its own address (as that
/// many devices joining would; one address may start only a few handshakes
/// a second); the sorted admission times.
async fn admissions(ctx: &LinkContext, endpoints: &[quinn::Endpoint], to: SocketAddr, expected: Did) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(DIALS);
    for endpoint in endpoints {
        let started = Instant::now();
        let link = ctx.dial(endpoint, to, Some(expected)).await.unwrap();
        samples.push(started.elapsed());
        link.connection.close(0u32.into(), b"");
    }
    samples.sort();
    samples
}

/// Silent connections from 127.0.0.2 on, replaced as soon as they are cut;
/// a refused attempt is tried again after `pause` (none: at once). The
/// attacker's CPU is this process's here, so with no pause the figure is
/// mostly the cost of the attacker's own QUIC clients on the shared cores.
fn flood(target: SocketAddr, pause: Option<Duration>, stop: Arc<AtomicBool>) {
    for ip in 2..2 + FLOOD_ADDRESSES {
        let endpoint = quic::endpoint(format!("127.0.0.{ip}:0").parse().unwrap()).unwrap();
        for _ in 0..FLOOD_PER_ADDRESS {
            let (endpoint, stop) = (endpoint.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match endpoint.connect(target, quic::SERVER_NAME).unwrap().await {
                        Ok(connection) => drop(connection.closed().await),
                        Err(_) => match pause {
                            Some(pause) => tokio::time::sleep(pause).await,
                            None => tokio::task::yield_now().await,
                        },
                    }
                }
            });
        }
    }
}

async fn admission_under_flood() {
    let mut net = TestNetwork::new("bench");
    let (a, b) = (net.register_device(), net.register_device());
    let (a_did, b_did) = (a.did(), b.did());
    let ledger = |net: &TestNetwork| Arc::new(EmbeddedLedger::in_memory(net.ledger.clone())) as Arc<dyn Ledger>;
    let listening = Arc::new(LinkContext::new(b, b_did, ledger(&net), LinkLimits::default()));
    let dialing = LinkContext::new(a, a_did, ledger(&net), LinkLimits::default());
    let to = listener(Arc::clone(&listening));
    let endpoints: Vec<quinn::Endpoint> =
        (1..=DIALS).map(|i| quic::endpoint(format!("127.0.1.{i}:0").parse().unwrap()).unwrap()).collect();
    let quiet = admissions(&dialing, &endpoints, to, b_did).await;

    println!("admission of a registered device, {DIALS} dials one at a time, each from its own address:");
    let show = |name: &str, samples: &[Duration]| {
        let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
        println!("  {name:<38} p50 {:>6.2} ms   p99 {:>6.2} ms", ms(p50), ms(p99));
        p50
    };
    let quiet_p50 = show("no flood", &quiet);
    for (name, pause) in [
        ("silent flood, 16 addresses, 10 ms pause", Some(Duration::from_millis(10))),
        ("silent flood, 16 addresses, no pause", None),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        flood(to, pause, Arc::clone(&stop));
        // Under way once the slots have filled and turned over.
        let evicted = || listening.counters().snapshot().get("handshakes_evicted_silent").copied().unwrap_or(0);
        let before = evicted();
        while evicted() < before + 256 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let flooded = admissions(&dialing, &endpoints, to, b_did).await;
        stop.store(true, Ordering::Relaxed);
        let p50 = show(name, &flooded);
        println!("  {:<38} {:.2}x", "  flooded / quiet p50", p50.as_secs_f64() / quiet_p50.as_secs_f64());
        // Let the last silent ones time out before the next round.
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    println!();
}

/// `n` devices on disk as `carrierd` keeps them; the registrar and the
/// ledger state, to sign later entries with.
fn provision(root: &Path, n: usize) -> (Vec<(DataDir, Identity)>, Identity, LedgerState) {
    let registrar = Identity::generate(IdentityKind::Registrar);
    let mut ledger = LedgerState::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut append = |ledger: &mut LedgerState, op: Op| {
        let entry = ledger.next_entry(op, entries.len() as u64 + 1, &registrar);
        ledger.append(entry.clone()).unwrap();
        entries.push(entry);
    };
    append(&mut ledger, support::genesis(&registrar, &root.join("log.key")));
    let mut devices = Vec::new();
    for i in 0..n {
        let device = Identity::generate(IdentityKind::Device);
        let data = DataDir::new(root.join(format!("device{i}")));
        std::fs::create_dir_all(data.root()).unwrap();
        keystore::create(&data.device_key(), &device).unwrap();
        append(&mut ledger, Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] });
        devices.push((data, device));
    }
    let dirs: Vec<_> = devices.iter().map(|(data, _)| data.ledger()).collect();
    support::store_ledgers(&dirs, &entries, &root.join("log.key"));
    (devices, registrar, ledger)
}

/// Submits `entry` at `daemons[0]` and waits until no daemon has a link to
/// `cut` any more; the time that took (to within a millisecond: each
/// daemon's peer list is asked every millisecond).
async fn time_to_cut(daemons: &[Daemon], cut: Did, entry: Entry) -> Duration {
    async fn linked(daemon: &Daemon, cut: Did) -> bool {
        daemon.did() != cut && daemon.overlay().peers().await.unwrap().iter().any(|p| p.did == cut)
    }
    let started = Instant::now();
    let sequenced = daemons[0].ledger().submit(vec![entry]).unwrap();
    assert!(sequenced.iter().all(Result::is_ok), "{sequenced:?}");
    for (i, daemon) in daemons.iter().enumerate() {
        let deadline = started + Duration::from_secs(10);
        while linked(daemon, cut).await {
            assert!(Instant::now() < deadline, "daemon {i} never cut {cut}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    started.elapsed()
}

async fn cuts_across_daemons() {
    let root = tempfile::tempdir().unwrap();
    let (devices, registrar, mut state) = provision(root.path(), DAEMONS);
    let mut daemons = Vec::new();
    let mut bootstrap = Vec::new();
    for (i, (data, _)) in devices.iter().enumerate() {
        let mut config = support::config(root.path(), &format!("run{i}"), bootstrap.clone());
        if i == 0 {
            // The first daemon sequences the entries the benchmark submits.
            config.ledger.sequencer_key = Some(root.path().join("log.key"));
        }
        let daemon = Daemon::start(&config, data.clone(), &root.path().join(format!("run{i}"))).await.unwrap();
        if i == 0 {
            bootstrap.push(daemon.overlay().listen_addr().to_string());
        }
        daemons.push(daemon);
    }
    // A full mesh: every daemon linked to every other, so each cut is seen
    // by all nine and the entry must travel to each of them.
    let dids: Vec<Did> = daemons.iter().map(Daemon::did).collect();
    for (i, daemon) in daemons.iter().enumerate() {
        for did in &dids[i + 1..] {
            daemon.overlay().connect(*did).await.unwrap();
        }
    }
    let mut sign = |op: Op| {
        let entry = state.next_entry(op, 1 << 40, &registrar);
        state.append(entry.clone()).unwrap();
        entry
    };
    let mut revoked = Vec::new();
    let mut rotated = Vec::new();
    for (i, (_, device)) in devices.iter().enumerate().skip(1) {
        let entry = if i % 2 == 0 {
            sign(Op::Revoke { did: device.did(), reason: "bench".into() })
        } else {
            let fresh = Identity::generate(IdentityKind::Device);
            sign(Op::RotateKeys { did: device.did(), keys: fresh.public_keys() })
        };
        let took = time_to_cut(&daemons, device.did(), entry).await;
        if i % 2 == 0 { revoked.push(took) } else { rotated.push(took) }
    }
    println!("from an entry's arrival at one daemon to the last link cut, {DAEMONS} daemons:");
    for (name, mut samples) in [("revocation", revoked), ("rotation", rotated)] {
        samples.sort();
        let (p50, max) = (percentile(&samples, 0.5), samples[samples.len() - 1]);
        println!("  {name:<12} {} cuts   p50 {:>7.1} ms   max {:>7.1} ms", samples.len(), ms(p50), ms(max));
    }
    for daemon in daemons.iter().rev() {
        daemon.shutdown().await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        admission_under_flood().await;
        cuts_across_daemons().await;
    });
}
