//! The sequenced ledger with real daemons: requests handed to any daemon
//! travel to the one that holds the log key; two writers at two nodes at
//! once both land everywhere; requests wait durably while the sequencer is
//! away and apply once when it returns; the admin's offline directory can
//! sequence what a daemon holds, and a refusal comes back with its rule.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Daemon, WAIT, carrierctl, carrierd, provision_with_apps, socket};

/// Genesis and three devices, before any test's own entries.
const BASE: u64 = 4;

fn status(dir: &Path) -> Value {
    serde_json::from_str(&carrierctl(&["status", "--json", "--socket", &socket(dir)])).unwrap()
}

/// Polls until `ready` holds for `dir`'s status, or fails after `WAIT`.
fn wait_status(dir: &Path, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = status(dir);
        if ready(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{} never {what}: {status}", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn height(status: &Value) -> u64 {
    status["ledger"]["height"].as_u64().unwrap()
}

/// A fresh device's data directory and card, not yet registered.
fn newcomer(root: &Path, name: &str) -> (PathBuf, String) {
    let dir = root.join(name);
    assert!(carrierd(&["init", "--data-dir", dir.to_str().unwrap()]).output().unwrap().status.success());
    let card = dir.join("device.card").to_str().unwrap().to_owned();
    (dir, card)
}

/// Three registered devices; the first runs as the sequencer (it holds the
/// network's log key), the others join through it and learn that it does.
fn network(root: &Path) -> (Vec<PathBuf>, Vec<Daemon>) {
    let (dirs, _) = provision_with_apps(root, 3, &[]);
    let log_key = dirs[0].join("log.key");
    std::fs::copy(root.join("admin/ledger/log.key"), &log_key).unwrap();
    let sequencer = start_sequencer(&dirs[0], None);
    let others: Vec<Daemon> = dirs[1..].iter().map(|dir| Daemon::start(dir, Some(&sequencer.addr))).collect();
    for dir in &dirs[1..] {
        wait_status(dir, "learned the sequencer", |s| {
            s["ledger"]["checkpoint"].as_str().unwrap().contains("carrier-sequencer ")
        });
    }
    let mut daemons = vec![sequencer];
    daemons.extend(others);
    (dirs, daemons)
}

fn start_sequencer(dir: &Path, bootstrap: Option<&str>) -> Daemon {
    let extra = format!("[ledger]\nsequencer_key = {:?}\n", dir.join("log.key"));
    let daemon = Daemon::start_with(dir, bootstrap, &extra);
    assert!(status(dir)["ledger"]["sequencer"].as_bool().unwrap());
    daemon
}

fn registrar(root: &Path) -> String {
    root.join("admin/registrar.key").to_str().unwrap().to_owned()
}

fn resolve_active(dir: &Path, did: &str) -> Option<bool> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_carrierctl"))
        .args(["ledger", "resolve", "--json", "--socket", &socket(dir), did])
        .output()
        .unwrap();
    let value: Value = serde_json::from_slice(&out.stdout).ok()?;
    value["active"].as_bool()
}

/// A registrar registering a device at one node and a device registering an
/// app at another, at the same moment: both entries reach every node, which
/// all end on the same checkpoint; a revocation afterwards reaches all.
#[test]
fn two_honest_writers_at_two_nodes_at_once_both_land_everywhere() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, _daemons) = network(root.path());
    let (_, card) = newcomer(root.path(), "laptop");
    let app_key = root.path().join("chat.key");
    let app = carrierctl(&["keygen", "--kind", "app", "--out", app_key.to_str().unwrap()]);
    let app_card = app.lines().find_map(|l| l.strip_prefix("card:")).unwrap().trim().to_owned();
    let registrar = registrar(root.path());
    let (at_one, at_two) = (socket(&dirs[1]), socket(&dirs[2]));
    let device_two = dirs[2].join("device.key").to_str().unwrap().to_owned();
    let writers = [
        vec!["ledger", "register-device", "--submit", "--wait", "--socket", &at_one, "--key", &registrar, &card],
        vec![
            "ledger",
            "register-app",
            "--submit",
            "--wait",
            "--socket",
            &at_two,
            "--key",
            &device_two,
            "--app-key",
            app_key.to_str().unwrap(),
            "--name",
            "chat",
            &app_card,
        ],
    ];
    std::thread::scope(|scope| {
        let handles: Vec<_> = writers
            .iter()
            .map(|args| scope.spawn(move || carrierctl(&args.iter().map(|s| &**s).collect::<Vec<_>>())))
            .collect();
        for handle in handles {
            assert!(handle.join().unwrap().contains("sequenced"));
        }
    });
    let checkpoints: Vec<String> = dirs
        .iter()
        .map(|dir| {
            let status = wait_status(dir, "took both entries", |s| height(s) == BASE + 2);
            status["ledger"]["checkpoint"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(checkpoints.iter().all(|c| *c == checkpoints[0]), "{checkpoints:#?}");

    let laptop = carrierctl(&["ledger", "show", "--json", "--socket", &socket(&dirs[0])]);
    let entries: Value = serde_json::from_str(&laptop).unwrap();
    let laptop = entries[BASE as usize]["details"]["did"].as_str().unwrap().to_owned();
    carrierctl(&["ledger", "revoke", "--submit", "--wait", "--socket", &at_two, "--key", &registrar, &laptop]);
    for dir in &dirs {
        let deadline = Instant::now() + WAIT;
        while resolve_active(dir, &laptop) != Some(false) {
            assert!(Instant::now() < deadline, "the revocation never reached {}", dir.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The sequencer is away while requests are handed to two other daemons,
/// and one of them restarts meanwhile: the requests wait on disk. When the
/// sequencer returns, every request is applied, once.
#[test]
fn requests_wait_durably_while_the_sequencer_is_away_and_apply_once() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, mut daemons) = network(root.path());
    let registrar = registrar(root.path());
    let (_, first) = newcomer(root.path(), "first");
    let (_, second) = newcomer(root.path(), "second");
    let (_, third) = newcomer(root.path(), "third");
    assert!(daemons.remove(0).terminate().success());
    // Made once and handed over twice: at node 1 now, and at node 2 later.
    let request = root.path().join("second.request");
    let request = request.to_str().unwrap();
    carrierctl(&[
        "ledger",
        "register-device",
        "--out",
        request,
        "--socket",
        &socket(&dirs[1]),
        "--key",
        &registrar,
        &second,
    ]);
    for (dir, card) in [(&dirs[1], &first), (&dirs[2], &third)] {
        let out =
            carrierctl(&["ledger", "register-device", "--submit", "--socket", &socket(dir), "--key", &registrar, card]);
        assert!(out.contains("pending"), "{out}");
    }
    assert!(carrierctl(&["ledger", "submit", "--socket", &socket(&dirs[1]), request]).contains("pending"));
    let pending: Value =
        serde_json::from_str(&carrierctl(&["ledger", "pending", "--json", "--socket", &socket(&dirs[1])])).unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 2, "{pending}");

    // Node 1 restarts while the sequencer is still away: its requests stay.
    let node_two_addr = daemons[1].addr.clone();
    assert!(daemons.remove(0).terminate().success());
    let _one = Daemon::start(&dirs[1], Some(&node_two_addr));
    let pending: Value =
        serde_json::from_str(&carrierctl(&["ledger", "pending", "--json", "--socket", &socket(&dirs[1])])).unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 2, "after the restart: {pending}");

    let _sequencer = start_sequencer(&dirs[0], Some(&node_two_addr));
    for dir in &dirs {
        wait_status(dir, "applied the three requests", |s| height(s) == BASE + 3);
    }
    // The same request handed over again is known, not applied twice.
    assert!(carrierctl(&["ledger", "submit", "--socket", &socket(&dirs[2]), request]).contains("sequenced"));
    let entries: Value =
        serde_json::from_str(&carrierctl(&["ledger", "show", "--json", "--socket", &socket(&dirs[0])])).unwrap();
    let registered: Vec<&str> =
        entries.as_array().unwrap().iter().filter_map(|e| e["details"]["did"].as_str()).collect();
    let mut unique = registered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), registered.len(), "an entry was applied twice: {registered:?}");
    for dir in &dirs[1..] {
        let deadline = Instant::now() + WAIT;
        while carrierctl(&["ledger", "pending", "--socket", &socket(dir)]).trim() != "no requests pending" {
            assert!(Instant::now() < deadline, "requests still pending at {}", dir.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(height(&status(&dirs[0])), BASE + 3);
}

/// No daemon sequences: the admin's offline ledger directory takes what a
/// daemon holds (`carrierctl ledger sequence`), and a request it refuses
/// comes back to that daemon with the rule it broke.
#[test]
fn the_offline_directory_sequences_what_a_daemon_holds_and_refusals_come_back() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, _) = provision_with_apps(root.path(), 2, &[]);
    let a = Daemon::start(&dirs[0], None);
    let _b = Daemon::start(&dirs[1], Some(&a.addr));
    let registrar = registrar(root.path());
    let (_, card) = newcomer(root.path(), "laptop");
    let stranger = carrierctl(&["keygen", "--kind", "device", "--out", root.path().join("s.key").to_str().unwrap()]);
    let stranger = stranger.lines().find_map(|l| l.strip_prefix("did:")).unwrap().trim().to_owned();
    let at = socket(&dirs[0]);
    carrierctl(&["ledger", "register-device", "--submit", "--socket", &at, "--key", &registrar, &card]);
    carrierctl(&["ledger", "revoke", "--submit", "--socket", &at, "--key", &registrar, &stranger]);
    let ledger = root.path().join("admin/ledger");
    let out = carrierctl(&["ledger", "sequence", "--ledger", ledger.to_str().unwrap(), "--socket", &at]);
    assert!(out.contains("sequenced register-device") && out.contains("refused revoke"), "{out}");
    for dir in &dirs {
        wait_status(dir, "took the sequenced request", |s| height(s) == 4);
    }
    let pending = carrierctl(&["ledger", "pending", "--socket", &at]);
    assert!(pending.contains("refused: ") && pending.contains("is not registered"), "{pending}");
    assert!(!pending.contains("waiting"), "{pending}");
}
