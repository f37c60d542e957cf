//! What an attacker holding one registered device costs its victims, in
//! one run: for each attack, the victim daemon's peak memory and disk, and
//! the latency of an honest pair of apps between the attacker's device and
//! the victim's, measured while the attack goes on, beside the same
//! figures with no attack.
//!
//! - empty messages: 200,000 zero-length messages to a victim app that is
//!   connected and never reads;
//! - padded notes: 500 handshakes carrying a real checkpoint padded with
//!   lines of unknown keys to 4 KB;
//! - idle joins: 64 join connections that never speak and one trickling a
//!   4 MiB request, renewed as they are cut;
//! - rotation loop: a device rotating its own key as fast as the sequencer
//!   (the victim) answers.
//!
//! Run: `cargo bench -p carrier-daemon --bench insider`. Every daemon is a
//! `carrierd` process on loopback; the attacker, the honest apps and the
//! daemons share this machine's cores.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../../tests/support/mod.rs"]
mod scenario;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carrier_proto::keystore;
use carrier_sdk::{AppIdentity, Client};
use scenario::hostile::{addr_of, dir_bytes, idle_join_connections, link_with_note, memory_kib, padded};
use scenario::{Daemon, carrierctl, provision_with_apps, socket};

const HONEST_MESSAGES: usize = 200;

struct Figures {
    peak_kib: u64,
    disk: u64,
    p50: Duration,
    p99: Duration,
}

/// The network: node0 (the attacker's device, and the sequencer), node1
/// the victim; two apps on each.
struct Net {
    _root: tempfile::TempDir,
    root: PathBuf,
    dirs: Vec<PathBuf>,
    apps: Vec<Vec<PathBuf>>,
    node0: Daemon,
    victim: Daemon,
}

impl Net {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let (dirs, apps) = provision_with_apps(root.path(), 3, &[2, 2]);
        std::fs::copy(root.path().join("admin/ledger/log.key"), dirs[1].join("log.key")).unwrap();
        let sequencer = format!("[ledger]\nsequencer_key = {:?}\n", dirs[1].join("log.key"));
        let victim = Daemon::start_with(&dirs[1], None, &sequencer);
        let node0 = Daemon::start(&dirs[0], Some(&victim.addr));
        node0.wait_for("peer up");
        Self { root: root.path().to_owned(), _root: root, dirs, apps, node0, victim }
    }

    async fn client(&self, device: usize, app: usize) -> Client {
        self.target().client(device, app).await
    }

    /// What an attack needs to know of the network.
    fn target(&self) -> Target {
        Target {
            root: self.root.clone(),
            dirs: self.dirs.clone(),
            apps: self.apps.clone(),
            victim: addr_of(&self.victim),
        }
    }
}

/// The network as an attack sees it.
#[derive(Clone)]
struct Target {
    root: PathBuf,
    dirs: Vec<PathBuf>,
    apps: Vec<Vec<PathBuf>>,
    victim: std::net::SocketAddr,
}

impl Target {
    async fn client(&self, device: usize, app: usize) -> Client {
        let identity = AppIdentity::load_or_create(&self.apps[device][app]).unwrap();
        Client::connect_as(identity, scenario::app_socket(&self.dirs[device])).await.unwrap()
    }
}

/// One-way latencies of `HONEST_MESSAGES` messages from `from` to `to`,
/// one every 10 ms, sorted.
async fn honest_latency(from: &Client, to: &Client) -> Vec<Duration> {
    let mut messages = to.messages();
    let mut samples = Vec::with_capacity(HONEST_MESSAGES);
    for n in 0..HONEST_MESSAGES {
        let sent = Instant::now();
        from.submit(&to.did(), format!("{n}")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), messages.next()).await.unwrap().unwrap();
        samples.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    samples.sort();
    samples
}

fn figures(net: &Net, samples: &[Duration]) -> Figures {
    let pick = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    Figures { peak_kib: memory_kib(net.victim.pid()).1, disk: dir_bytes(&net.dirs[1]), p50: pick(0.5), p99: pick(0.99) }
}

/// Runs `attack` against a fresh network while an honest pair measures.
async fn run<F, Fut>(attack: F) -> Figures
where
    F: FnOnce(Target) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let net = Net::new();
    let (friend, other) = (net.client(0, 1).await, net.client(1, 1).await);
    let attacking = tokio::spawn(attack(net.target()));
    // Let the attack get going first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = honest_latency(&friend, &other).await;
    let figures = figures(&net, &samples);
    attacking.abort();
    figures
}

async fn empty_messages(net: Target) {
    let (flooder, victim) = (net.client(0, 0).await, net.client(1, 0).await);
    let to = victim.did();
    let mut waiting = std::collections::VecDeque::new();
    for _ in 0..200_000u32 {
        waiting.push_back(flooder.submit(&to, Vec::<u8>::new()).await.unwrap());
        if waiting.len() >= 4096 {
            while waiting.len() > 2048 {
                let mut receipt = waiting.pop_front().unwrap();
                let _ = receipt.accepted().await;
            }
        }
    }
    std::future::pending::<()>().await;
}

async fn padded_notes(net: Target) {
    let theirs = status(&net.dirs[1])["ledger"]["checkpoint"].as_str().unwrap().to_owned();
    let ledger = ledger_of(&net.dirs[1]);
    let attacker = keystore::load(&net.dirs[2].join("device.key")).unwrap();
    let victim = keystore::load(&net.dirs[1].join("device.key")).unwrap().did();
    let note = padded(theirs.as_bytes(), 4000);
    for _ in 0..500 {
        if let Ok(link) = link_with_note(&attacker, &ledger, net.victim, victim, &note).await {
            link.close(0u32.into(), b"");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn idle_joins(net: Target) {
    loop {
        let held = idle_join_connections(net.victim, 64).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(held);
    }
}

async fn rotation_loop(net: Target) {
    // A third device (not running) rotates itself, signing each time with
    // the key it just moved to.
    let mut current = net.dirs[2].join("device.key");
    let did = keystore::load(&current).unwrap().did().to_string();
    let sock = socket(&net.dirs[1]);
    for n in 0.. {
        let next = net.root.join(format!("rotation{n}"));
        let out = carrierctl(&["keygen", "--kind", "device", "--out", next.to_str().unwrap()]);
        let card = out.lines().find_map(|l| l.strip_prefix("card: ")).unwrap().to_owned();
        let done = std::process::Command::new(env!("CARGO_BIN_EXE_carrierctl"))
            .args(["ledger", "rotate", "--submit", "--socket", &sock, "--key", current.to_str().unwrap(), &did, &card])
            .output()
            .unwrap();
        if done.status.success() && !String::from_utf8_lossy(&done.stdout).contains("refused") {
            current = next;
        }
        tokio::task::yield_now().await;
    }
}

fn status(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&carrierctl(&["status", "--socket", &socket(dir), "--json"])).unwrap()
}

fn ledger_of(dir: &Path) -> carrier_proto::ledger::LedgerState {
    let entries = carrier_daemon::ledger::LedgerStore::read_all(&dir.join("ledger")).unwrap();
    carrier_proto::ledger::replay(&entries).unwrap()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let none = run(|_| async {}).await;
        let rows = [
            ("no attack", none),
            ("200,000 empty messages", run(empty_messages).await),
            ("500 padded notes", run(padded_notes).await),
            ("64 idle joins + a trickle", run(idle_joins).await),
            ("rotation loop", run(rotation_loop).await),
        ];
        let base = &rows[0].1;
        println!(
            "{:<28} {:>10} {:>6} {:>10} {:>6} {:>10} {:>10} {:>6}",
            "victim under", "peak RSS", "×", "disk", "×", "p50", "p99", "×p50"
        );
        for (name, f) in &rows {
            println!(
                "{:<28} {:>7} MB {:>6.2} {:>7} KB {:>6.2} {:>7.2} ms {:>7.2} ms {:>6.2}",
                name,
                f.peak_kib / 1024,
                f.peak_kib as f64 / base.peak_kib as f64,
                f.disk / 1024,
                f.disk as f64 / base.disk as f64,
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3,
                f.p50.as_secs_f64() / base.p50.as_secs_f64(),
            );
        }
    });
}
