//! What the ledger's trust machinery costs, on ten daemons, in one run:
//!
//! - witnesses: time from a registration handed to a daemon that does not
//!   sequence until every one of the ten daemons applied it, with no
//!   witnesses (k = 0) and with two cosignatures of three asked (k = 2);
//! - handover: the sequencer killed for good, time from the handover
//!   request until every remaining daemon took the new sequencer's first
//!   checkpoint.
//!
//! Run: `cargo bench -p carrier-daemon --bench ledger_trust`. Every daemon
//! is a `carrierd` process on loopback sharing this machine's cores; each
//! daemon's ledger height is followed with `carrierctl watch`, so the
//! figures include the watch stream's own delay (well under a millisecond).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../../tests/support/mod.rs"]
mod scenario;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use scenario::{Daemon, Reaped, carrierctl, carrierd, copy_ledger, new_device, new_device_with_role, socket};

/// Daemons in the network.
const DAEMONS: usize = 10;
/// Registrations timed per setting.
const ROUNDS: usize = 15;

/// A daemon's ledger heights as `carrierctl watch` reports them.
struct Heights {
    _child: Reaped,
    events: mpsc::Receiver<(Instant, u64)>,
}

impl Heights {
    fn watch(dir: &Path) -> Self {
        let mut child = Reaped(
            Command::new(env!("CARGO_BIN_EXE_carrierctl"))
                .args(["watch", "--json", "--socket", &socket(dir)])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (tx, events) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if let Some(height) = event["height"].as_u64().filter(|h| *h > 0) {
                    let _ = tx.send((Instant::now(), height));
                }
            }
        });
        // The first event is the height at subscription.
        events.recv_timeout(Duration::from_secs(20)).expect("carrierctl watch never subscribed");
        Self { _child: child, events }
    }

    /// When this daemon first reported `height` or more.
    fn reached(&self, height: u64) -> Instant {
        loop {
            let (at, h) = self.events.recv_timeout(Duration::from_secs(30)).expect("a daemon never reached the height");
            if h >= height {
                return at;
            }
        }
    }
}

/// Ten daemons: the sequencer first, then three devices with role
/// `witness` (holding the genesis's witness keys when `quorum` > 0), then
/// plain devices.
struct Network {
    _root: tempfile::TempDir,
    root: PathBuf,
    dirs: Vec<PathBuf>,
    daemons: Vec<Daemon>,
    heights: Vec<Heights>,
}

impl Network {
    fn start(quorum: usize) -> Self {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().to_owned();
        let admin = path.join("admin");
        let (key, ledger) = (admin.join("registrar.key"), admin.join("ledger"));
        carrierctl(&["keygen", "--kind", "registrar", "--out", key.to_str().unwrap()]);
        let mut genesis: Vec<String> =
            ["ledger", "genesis", "--ledger", ledger.to_str().unwrap(), "--network", "bench"]
                .map(String::from)
                .to_vec();
        genesis.extend(["--key".into(), key.to_str().unwrap().into()]);
        if quorum > 0 {
            for i in 0..3 {
                let out = admin.join(format!("witness{i}.key"));
                let printed = carrierctl(&["keygen", "--kind", "witness", "--out", out.to_str().unwrap()]);
                let vkey = printed.lines().find_map(|l| l.strip_prefix("vkey:")).unwrap().trim().to_owned();
                genesis.extend(["--witness".into(), vkey]);
            }
            genesis.extend(["--witness-quorum".into(), quorum.to_string()]);
        }
        carrierctl(&genesis.iter().map(String::as_str).collect::<Vec<_>>());
        let mut dirs = vec![new_device(&path, &ledger, "sequencer")];
        dirs.extend((0..3).map(|i| new_device_with_role(&path, &ledger, &format!("witness{i}"), Some("witness"))));
        dirs.extend((4..DAEMONS).map(|i| new_device(&path, &ledger, &format!("node{i}"))));
        for dir in &dirs {
            copy_ledger(&ledger, &dir.join("ledger"));
        }
        std::fs::copy(ledger.join("log.key"), dirs[0].join("log.key")).unwrap();
        let sequencer =
            Daemon::start_with(&dirs[0], None, &format!("[ledger]\nsequencer_key = {:?}\n", dirs[0].join("log.key")));
        let mut daemons = vec![];
        for (i, dir) in dirs.iter().enumerate().skip(1) {
            let extra = if quorum > 0 && i <= 3 {
                std::fs::copy(admin.join(format!("witness{}.key", i - 1)), dir.join("witness.key")).unwrap();
                format!("[ledger]\nwitness_key = {:?}\n", dir.join("witness.key"))
            } else {
                String::new()
            };
            let daemon = Daemon::start_with(dir, Some(&sequencer.addr), &extra);
            daemon.wait_for("peer up");
            daemons.push(daemon);
        }
        daemons.insert(0, sequencer);
        let heights = dirs.iter().map(|dir| Heights::watch(dir)).collect();
        Self { _root: root, root: path, dirs, daemons, heights }
    }

    fn height(&self, i: usize) -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&carrierctl(&["status", "--json", "--socket", &socket(&self.dirs[i])])).unwrap();
        status["ledger"]["height"].as_u64().unwrap()
    }

    /// Registers a new device through the last daemon; returns how long
    /// until every daemon in `watched` applied it.
    fn register(&self, n: usize, watched: &[usize]) -> Duration {
        let target = self.height(watched[0]) + 1;
        let device = self.root.join(format!("new{n}"));
        assert!(carrierd(&["init", "--data-dir", device.to_str().unwrap()]).output().unwrap().status.success());
        let card = device.join("device.card");
        let key = self.root.join("admin/registrar.key");
        let started = Instant::now();
        let via = socket(&self.dirs[DAEMONS - 1]);
        carrierctl(&[
            "ledger",
            "register-device",
            "--submit",
            "--socket",
            &via,
            "--key",
            key.to_str().unwrap(),
            card.to_str().unwrap(),
        ]);
        watched.iter().map(|&i| self.heights[i].reached(target)).max().unwrap() - started
    }
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:7.1} ms   p90 {:7.1} ms   max {:7.1} ms",
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[samples.len() - 1])
    )
}

fn main() {
    println!(
        "ledger trust on {DAEMONS} daemons ({ROUNDS} registrations each; submission at a daemon that does not sequence → applied on every daemon)"
    );
    let all: Vec<usize> = (0..DAEMONS).collect();
    for quorum in [0, 2] {
        let mut net = Network::start(quorum);
        // One round to warm links up.
        net.register(0, &all);
        let samples: Vec<Duration> = (1..=ROUNDS).map(|n| net.register(n, &all)).collect();
        let setting =
            if quorum == 0 { "k = 0 (no witnesses)".to_owned() } else { format!("k = {quorum} of 3 witnesses") };
        println!("  {setting:<22} {}", summary(samples));
        if quorum == 2 {
            // Handover: the sequencer is killed for good.
            let next_key = net.dirs[DAEMONS - 2].join("next-log.key");
            carrierctl(&["keygen", "--kind", "log", "--out", next_key.to_str().unwrap()]);
            let mut daemons = std::mem::take(&mut net.daemons);
            let next = daemons.remove(DAEMONS - 2);
            drop(next);
            let next = Daemon::start_with(
                &net.dirs[DAEMONS - 2],
                Some(&daemons[1].addr),
                &format!("[ledger]\nsequencer_key = {next_key:?}\n"),
            );
            next.wait_for("standing by");
            next.wait_for("peer up");
            let status: serde_json::Value =
                serde_json::from_str(&carrierctl(&["status", "--json", "--socket", &socket(&net.dirs[DAEMONS - 2])]))
                    .unwrap();
            let next_did = status["did"].as_str().unwrap().to_owned();
            let heights: Vec<Heights> = (1..DAEMONS).map(|i| Heights::watch(&net.dirs[i])).collect();
            let target = net.height(1) + 1;
            daemons.remove(0).kill();
            let key = net.root.join("admin/registrar.key");
            let started = Instant::now();
            carrierctl(&[
                "ledger",
                "handover",
                "--submit",
                "--socket",
                &socket(&net.dirs[1]),
                "--to",
                &next_did,
                "--key",
                key.to_str().unwrap(),
                "--log-key",
                next_key.to_str().unwrap(),
            ]);
            let took = heights.iter().map(|h| h.reached(target)).max().unwrap() - started;
            println!(
                "  handover (k = 2 of 3): the new sequencer's first checkpoint on all {} remaining daemons {:.1} ms after the request",
                DAEMONS - 1,
                took.as_secs_f64() * 1000.0
            );
        }
    }
}
