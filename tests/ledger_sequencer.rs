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
use support::{Daemon, WAIT, carrierctl, carrierd, provision_with_apps, socket, status};

/// Genesis and three devices, before any test's own entries.
const BASE: u64 = 4;

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

fn counter(dir: &Path, name: &str) -> u64 {
    let counters: Value = serde_json::from_str(&carrierctl(&["counters", "--json", "--socket", &socket(dir)])).unwrap();
    counters[name].as_u64().unwrap_or(0)
}

/// A new device with only the invitation line: it fetches the ledger over a
/// join connection while it waits, says so in its status, and is admitted
/// within seconds of its registration being sequenced. A device invited to
/// another network gets nothing from this one.
#[test]
fn a_device_with_only_an_invitation_is_admitted_once_registered() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, _) = provision_with_apps(root.path(), 2, &[]);
    let a = Daemon::start(&dirs[0], None);
    let _b = Daemon::start(&dirs[1], Some(&a.addr));
    let ledger = root.path().join("admin/ledger");
    let line = carrierctl(&["invite", "--ledger", ledger.to_str().unwrap(), "--bootstrap", &a.addr]);
    let line = line.trim();
    assert!(line.starts_with("carrier-invite:") && !line.contains('\n'), "{line}");

    let newcomer = root.path().join("newcomer");
    let config = newcomer.join("written.toml");
    let init = carrierd(&["init", "--data-dir", newcomer.to_str().unwrap(), "--invite", line])
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    assert!(std::fs::read_to_string(&config).unwrap().contains(&a.addr));
    let _newcomer = Daemon::start(&newcomer, Some(&a.addr));
    let waiting = wait_status(&newcomer, "fetched the ledger while waiting", |s| height(s) == 3);
    assert_eq!(waiting["registered"], false, "{waiting}");
    assert!(carrierctl(&["status", "--socket", &socket(&newcomer)]).contains("waiting for registration"));
    assert_eq!(waiting["peers"], 0, "no link before registration: {waiting}");

    let card = newcomer.join("device.card");
    let registrar = registrar(root.path());
    carrierctl(&[
        "ledger",
        "register-device",
        "--ledger",
        ledger.to_str().unwrap(),
        "--key",
        &registrar,
        card.to_str().unwrap(),
    ]);
    let sequenced = Instant::now();
    carrierctl(&["ledger", "publish", "--ledger", ledger.to_str().unwrap(), "--socket", &socket(&dirs[0])]);
    wait_status(&newcomer, "admitted", |s| s["registered"] == true && s["peers"].as_u64().unwrap() > 0);
    let took = sequenced.elapsed();
    assert!(took < Duration::from_secs(5), "admitted {took:?} after its registration was sequenced");

    // Invited to another network: a's join server gives it nothing.
    let other = root.path().join("other");
    carrierctl(&["keygen", "--kind", "registrar", "--out", other.join("registrar.key").to_str().unwrap()]);
    let other_ledger = other.join("ledger");
    carrierctl(&[
        "ledger",
        "genesis",
        "--ledger",
        other_ledger.to_str().unwrap(),
        "--network",
        "elsewhere",
        "--key",
        other.join("registrar.key").to_str().unwrap(),
    ]);
    let foreign = carrierctl(&["invite", "--ledger", other_ledger.to_str().unwrap(), "--bootstrap", &a.addr]);
    let stranger = root.path().join("stranger");
    let init = carrierd(&["init", "--data-dir", stranger.to_str().unwrap(), "--invite", foreign.trim()])
        .args(["--config", stranger.join("written.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success());
    let served = counter(&dirs[0], "join_connections");
    let _stranger = Daemon::start(&stranger, Some(&a.addr));
    let deadline = Instant::now() + WAIT;
    while counter(&dirs[0], "join_connections") < served + 2 {
        assert!(Instant::now() < deadline, "the stranger never tried to join");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(height(&status(&stranger)), 1, "a foreign network's newcomer got entries");
}

/// The sequencer is gone (SIGKILL) when a registrar revokes a device at
/// another daemon: the revocation is in force there at once, reaches every
/// other daemon by gossip, and cuts the device's links everywhere, with no
/// sequencer. When a sequencer is back, the log takes it.
#[test]
fn a_revocation_takes_effect_everywhere_before_the_log_holds_it() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, _) = provision_with_apps(root.path(), 4, &[]);
    std::fs::copy(root.path().join("admin/ledger/log.key"), dirs[0].join("log.key")).unwrap();
    let sequencer = start_sequencer(&dirs[0], None);
    let daemons: Vec<Daemon> = dirs[1..].iter().map(|dir| Daemon::start(dir, Some(&sequencer.addr))).collect();
    for daemon in &daemons {
        daemon.wait_for("peer up");
    }
    let (at, observer, victim_dir) = (&dirs[1], &dirs[2], &dirs[3]);
    let victim = status(victim_dir)["did"].as_str().unwrap().to_owned();
    // The observer links to the victim and to the daemon the request is handed to.
    for dir in [at, victim_dir] {
        let did = status(dir)["did"].as_str().unwrap().to_owned();
        let addr = &daemons[dirs.iter().position(|d| d == dir).unwrap() - 1].addr;
        carrierctl(&["connect", "--socket", &socket(observer), &did, "--addr", addr]);
    }
    let watcher = support::Watcher::start(&socket(observer));
    sequencer.kill();
    let base = 5;

    let started = Instant::now();
    let registrar = registrar(root.path());
    let out = carrierctl(&["ledger", "revoke", "--submit", "--socket", &socket(at), "--key", &registrar, &victim]);
    assert!(out.contains("pending"), "{out}");
    assert_eq!(resolve_active(at, &victim), Some(false), "in force where it was handed in, at once");
    watcher.wait_event("revoked", &victim);
    println!("revoked and cut at another daemon {} ms after it was handed in", started.elapsed().as_millis());
    assert_eq!(resolve_active(observer, &victim), Some(false));
    let peers = carrierctl(&["peers", "--socket", &socket(observer)]);
    assert!(!peers.contains(&victim), "the revoked device is still linked: {peers}");
    let resolved = carrierctl(&["ledger", "resolve", "--socket", &socket(observer), &victim]);
    assert!(resolved.contains("not yet sequenced"), "{resolved}");
    assert_eq!(height(&status(observer)), base, "the log does not hold it yet");

    // A sequencer again: the daemons that hold the revocation hand it over.
    let _sequencer = start_sequencer(&dirs[0], Some(&daemons[0].addr));
    wait_status(observer, "took the sequenced revocation", |s| height(s) == base + 1);
    let resolved = carrierctl(&["ledger", "resolve", "--socket", &socket(observer), &victim]);
    assert!(resolved.contains(&format!("revoked at entry {base}")), "{resolved}");
}

/// A sequencer whose checkpoint file is gone does not start over from what
/// its log holds: it refuses to sequence and names the file.
#[test]
fn a_sequencer_missing_its_checkpoint_file_refuses_and_names_it() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, mut daemons) = network(root.path());
    assert!(daemons.remove(0).terminate().success());
    let checkpoint = dirs[0].join("ledger/checkpoint");
    std::fs::remove_file(&checkpoint).unwrap();
    let config = dirs[0].join("carrierd.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nruntime_dir = {:?}\n[ledger]\nsequencer_key = {:?}\n",
        dirs[0].join("run"),
        dirs[0].join("log.key")
    );
    std::fs::write(&config, text).unwrap();
    let mut child = carrierd(&["run", "--config", config.to_str().unwrap(), "--data-dir", dirs[0].to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the sequencer started without its checkpoint file");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    assert!(!status.success());
    assert!(said.contains(checkpoint.to_str().unwrap()), "{said}");
    assert!(std::fs::read(dirs[0].join("ledger/ledger.log")).unwrap().len() > 100, "the log is kept");
}
