//! Real `carrierd` processes on loopback: provisioned with `carrierctl`,
//! joined through one bootstrap address, stopped with SIGTERM; and the
//! start-up errors an operator must be able to read.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn carrierctl(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_carrierctl")).args(args).output().unwrap();
    assert!(out.status.success(), "carrierctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn carrierd(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_carrierd"));
    command.args(args).env("RUST_LOG", "info").env_remove("NOTIFY_SOCKET");
    command
}

/// A network of `n` devices, each with its own data directory holding its
/// identity and a copy of the ledger that registers all of them.
fn provision(root: &Path, n: usize) -> Vec<PathBuf> {
    let (key, ledger) = (root.join("admin/registrar.key"), root.join("admin/ledger"));
    carrierctl(&["keygen", "--kind", "registrar", "--out", key.to_str().unwrap()]);
    carrierctl(&[
        "ledger",
        "genesis",
        "--ledger",
        ledger.to_str().unwrap(),
        "--network",
        "t",
        "--key",
        key.to_str().unwrap(),
    ]);
    let dirs: Vec<PathBuf> = (0..n).map(|i| root.join(format!("node{i}"))).collect();
    for dir in &dirs {
        assert!(carrierd(&["init", "--data-dir", dir.to_str().unwrap()]).output().unwrap().status.success());
        let card = dir.join("device.card");
        carrierctl(&[
            "ledger",
            "register-device",
            "--ledger",
            ledger.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            card.to_str().unwrap(),
        ]);
    }
    for dir in &dirs {
        std::fs::create_dir_all(dir.join("ledger")).unwrap();
        std::fs::copy(ledger.join("ledger.log"), dir.join("ledger/ledger.log")).unwrap();
    }
    dirs
}

/// A running daemon whose output lines arrive on a channel.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Lines read while waiting for an earlier needle, still to be searched.
    backlog: std::cell::RefCell<std::collections::VecDeque<String>>,
    /// The address it listens on, as it printed it.
    addr: String,
}

impl Daemon {
    fn start(dir: &Path, bootstrap: Option<&str>) -> Self {
        let config = dir.join("carrierd.toml");
        let bootstrap = bootstrap.map(|a| format!("bootstrap = [\"{a}\"]\n")).unwrap_or_default();
        let runtime = dir.join("run");
        std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\nruntime_dir = {runtime:?}\n{bootstrap}")).unwrap();
        let mut child = carrierd(&["run", "--config", config.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut daemon = Self { child, lines, backlog: Default::default(), addr: String::new() };
        daemon.addr = daemon.wait_for("listening on ").replace("listening on ", "");
        daemon
    }

    /// Waits for an output line containing `needle` and returns it.
    fn wait_for(&self, needle: &str) -> String {
        let mut backlog = self.backlog.borrow_mut();
        if let Some(i) = backlog.iter().position(|line| line.contains(needle)) {
            return backlog.remove(i).unwrap_or_default();
        }
        let deadline = std::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => {
                    backlog.extend(seen);
                    return line;
                }
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("carrierd never printed {needle:?}; it printed:\n{}", seen.join("\n"));
    }

    /// SIGKILL: no chance to clean up.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.wait_for("carrierd stopped");
        self.child.wait().unwrap()
    }
}

#[test]
fn three_daemons_join_through_one_address_and_stop_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 3);
    let first = Daemon::start(&dirs[0], None);
    let addr = first.addr.clone();
    let others: Vec<Daemon> = dirs[1..].iter().map(|dir| Daemon::start(dir, Some(&addr))).collect();
    // Each newcomer links to the bootstrap node, and Kademlia's bootstrap
    // introduces the newcomers to each other.
    for daemon in &others {
        daemon.wait_for("peer up");
        daemon.wait_for("peer up");
    }
    first.wait_for("peer up");
    first.wait_for("peer up");
    for daemon in others {
        assert!(daemon.terminate().success());
    }
    assert!(first.terminate().success());
}

/// The control socket of the daemon with data directory `dir`.
fn socket(dir: &Path) -> String {
    dir.join("run/control.sock").to_str().unwrap().to_owned()
}

#[test]
fn carrierctl_inspects_and_steers_a_running_daemon() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 3);
    let first = Daemon::start(&dirs[0], None);
    let addr = first.addr.clone();
    let others: Vec<Daemon> = dirs[1..].iter().map(|dir| Daemon::start(dir, Some(&addr))).collect();
    for daemon in &others {
        daemon.wait_for("peer up");
        daemon.wait_for("peer up");
    }
    let sock = socket(&dirs[0]);
    let status: serde_json::Value =
        serde_json::from_str(&carrierctl(&["status", "--socket", &sock, "--json"])).unwrap();
    assert_eq!(status["network"], "t");
    assert_eq!(status["ledger"]["height"], 4);
    let peers: serde_json::Value = serde_json::from_str(&carrierctl(&["peers", "--socket", &sock, "--json"])).unwrap();
    let peer_dids: Vec<String> =
        peers.as_array().unwrap().iter().map(|p| p["did"].as_str().unwrap().to_owned()).collect();
    assert_eq!(peer_dids.len(), 2, "{peers}");
    let table = carrierctl(&["peers", "--socket", &sock]);
    assert!(table.starts_with("DID") && table.lines().count() == 3, "{table}");
    let routes: serde_json::Value =
        serde_json::from_str(&carrierctl(&["routes", "--socket", &sock, "--json"])).unwrap();
    assert!(!routes.as_array().unwrap().is_empty());
    // The admin registers a device offline and publishes the new entry.
    let (key, ledger) = (root.path().join("admin/registrar.key"), root.path().join("admin/ledger"));
    let new = root.path().join("late");
    assert!(carrierd(&["init", "--data-dir", new.to_str().unwrap()]).output().unwrap().status.success());
    let card = new.join("device.card");
    carrierctl(&[
        "ledger",
        "register-device",
        "--ledger",
        ledger.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        card.to_str().unwrap(),
    ]);
    let published = carrierctl(&["ledger", "publish", "--ledger", ledger.to_str().unwrap(), "--socket", &sock]);
    assert!(published.contains("took 1 new entries") && published.contains("height is 5"), "{published}");
    let again = carrierctl(&["ledger", "publish", "--ledger", ledger.to_str().unwrap(), "--socket", &sock]);
    assert!(again.contains("took 0 new entries"), "{again}");
    assert!(peers.as_array().unwrap().iter().all(|p| p["bytes_in"].as_u64().unwrap() > 0), "{peers}");
    let counters: serde_json::Value =
        serde_json::from_str(&carrierctl(&["counters", "--socket", &sock, "--json"])).unwrap();
    assert!(counters["links_admitted_inbound"].as_u64().unwrap() >= 2, "{counters}");

    // A watcher sees a peer go down and come back.
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_carrierctl"))
        .args(["watch", "--json", "--socket", &sock])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, events) = mpsc::channel();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_event = |kind: &str, did: &str| loop {
        let line = events.recv_timeout(WAIT).expect("watch printed nothing");
        if line.contains(kind) && line.contains(did) {
            return;
        }
    };
    wait_event("\"ledger\"", ""); // subscribed
    // Disconnect a peer, then find it again by DID.
    carrierctl(&["disconnect", "--socket", &sock, &peer_dids[0]]);
    wait_event("peer_down", &peer_dids[0]);
    carrierctl(&["connect", "--socket", &sock, &peer_dids[0]]);
    wait_event("peer_up", &peer_dids[0]);
    watcher.kill().unwrap();
    watcher.wait().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_carrierctl"))
        .args(["connect", "--socket", &sock, "did:carrier:zNotADid"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("carrierd:"));
    for daemon in others {
        assert!(daemon.terminate().success());
    }
    assert!(first.terminate().success());
}

#[test]
fn a_device_registered_at_one_node_joins_through_another_and_its_revocation_cuts_it_everywhere() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 5);
    let (key, ledger) = (root.path().join("admin/registrar.key"), root.path().join("admin/ledger"));
    let (key, ledger) = (key.to_str().unwrap(), ledger.to_str().unwrap());
    let a = Daemon::start(&dirs[0], None);
    let addr = a.addr.clone();
    let others: Vec<Daemon> = dirs[1..].iter().map(|dir| Daemon::start(dir, Some(&addr))).collect();
    for daemon in &others {
        daemon.wait_for("peer up");
    }
    let e = &others[3];
    let e_addr = e.addr.clone();

    // Register a new device at A only; replication carries it to E.
    let f_dir = root.path().join("newcomer");
    assert!(carrierd(&["init", "--data-dir", f_dir.to_str().unwrap()]).output().unwrap().status.success());
    let f_did = std::fs::read_to_string(f_dir.join("device.card")).unwrap();
    let f_did = {
        let card = f_did.trim();
        let out = carrierctl(&["ledger", "register-device", "--ledger", ledger, "--key", key, card]);
        assert!(out.contains("entry 6"), "{out}");
        let resolved: Vec<serde_json::Value> =
            serde_json::from_str(&carrierctl(&["ledger", "show", "--ledger", ledger, "--json"])).unwrap();
        resolved[6]["details"]["did"].as_str().unwrap().to_owned()
    };
    carrierctl(&["ledger", "publish", "--ledger", ledger, "--socket", &socket(&dirs[0])]);
    e.wait_for("applied ledger entries from a peer");

    // The newcomer has its own copy of the admin's ledger and joins through E.
    std::fs::create_dir_all(f_dir.join("ledger")).unwrap();
    std::fs::copy(root.path().join("admin/ledger/ledger.log"), f_dir.join("ledger/ledger.log")).unwrap();
    let f = Daemon::start(&f_dir, Some(&e_addr));
    f.wait_for("peer up");
    let e_peers = carrierctl(&["peers", "--socket", &socket(&dirs[4]), "--json"]);
    assert!(e_peers.contains(&f_did), "E is not linked to the newcomer: {e_peers}");

    // Revoke it at A: every node cuts its links within 2 seconds.
    carrierctl(&["ledger", "revoke", "--ledger", ledger, "--key", key, &f_did]);
    let started = std::time::Instant::now();
    carrierctl(&["ledger", "publish", "--ledger", ledger, "--socket", &socket(&dirs[0])]);
    a.wait_for("revoked: links closed");
    for daemon in &others {
        daemon.wait_for("revoked: links closed");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "revocation took {took:?} to reach every node");
    for dir in &dirs {
        let peers = carrierctl(&["peers", "--socket", &socket(dir), "--json"]);
        assert!(!peers.contains(&f_did), "still linked to the revoked device: {peers}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&carrierctl(&["status", "--socket", &socket(&dirs[4]), "--json"])).unwrap();
    assert_eq!(status["ledger"]["height"], 8);
    assert_eq!(status["alarm"], "");
    for daemon in others.into_iter().chain([a, f]) {
        assert!(daemon.terminate().success());
    }
}

#[test]
fn two_signed_histories_raise_the_alarm_and_the_fork_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 2);
    let key = root.path().join("admin/registrar.key");
    let key = key.to_str().unwrap();
    // The registrar signs two different entries at the same height, in two
    // copies of the ledger: equivocation.
    let (one, two) = (root.path().join("fork-one"), root.path().join("fork-two"));
    for (copy, name) in [(&one, "x"), (&two, "y")] {
        std::fs::create_dir_all(copy).unwrap();
        std::fs::copy(root.path().join("admin/ledger/ledger.log"), copy.join("ledger.log")).unwrap();
        let device = root.path().join(name);
        assert!(carrierd(&["init", "--data-dir", device.to_str().unwrap()]).output().unwrap().status.success());
        let card = device.join("device.card");
        carrierctl(&[
            "ledger",
            "register-device",
            "--ledger",
            copy.to_str().unwrap(),
            "--key",
            key,
            card.to_str().unwrap(),
        ]);
    }
    let a = Daemon::start(&dirs[0], None);
    let b = Daemon::start(&dirs[1], None);
    carrierctl(&["ledger", "publish", "--ledger", one.to_str().unwrap(), "--socket", &socket(&dirs[0])]);
    carrierctl(&["ledger", "publish", "--ledger", two.to_str().unwrap(), "--socket", &socket(&dirs[1])]);
    // Handing A the other history directly is refused too.
    let out = Command::new(env!("CARGO_BIN_EXE_carrierctl"))
        .args(["ledger", "publish", "--ledger", two.to_str().unwrap(), "--socket", &socket(&dirs[0])])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing a fork"));
    // B restarts and joins through A: both see the other's head disagree.
    assert!(b.terminate().success());
    let b = Daemon::start(&dirs[1], Some(&a.addr));
    a.wait_for("ledger equivocation");
    b.wait_for("ledger equivocation");
    for dir in &dirs {
        let status: serde_json::Value =
            serde_json::from_str(&carrierctl(&["status", "--socket", &socket(dir), "--json"])).unwrap();
        assert!(status["alarm"].as_str().unwrap().contains("differs from ours"), "{status}");
        assert_eq!(status["ledger"]["height"], 4, "the fork was applied: {status}");
    }
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

#[test]
fn killed_daemon_restarts_with_its_identity_ledger_and_peers() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 3);
    let a = Daemon::start(&dirs[0], None);
    let b = Daemon::start(&dirs[1], Some(&a.addr));
    let c = Daemon::start(&dirs[2], Some(&a.addr));
    b.wait_for("peer up");
    b.wait_for("peer up");
    let before: serde_json::Value =
        serde_json::from_str(&carrierctl(&["status", "--socket", &socket(&dirs[1]), "--json"])).unwrap();
    b.kill();
    // Restarted with no bootstrap peer at all: it rejoins through the peers
    // it had in its routing table.
    let b = Daemon::start(&dirs[1], None);
    b.wait_for("peer up");
    let after: serde_json::Value =
        serde_json::from_str(&carrierctl(&["status", "--socket", &socket(&dirs[1]), "--json"])).unwrap();
    assert_eq!(after["did"], before["did"]);
    assert_eq!(after["ledger"], before["ledger"]);
    assert_eq!(after["network_id"], before["network_id"]);
    for daemon in [a, b, c] {
        assert!(daemon.terminate().success());
    }
}

#[test]
fn malformed_and_oversized_control_frames_close_only_that_client() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 1);
    let daemon = Daemon::start(&dirs[0], None);
    let sock = socket(&dirs[0]);
    let send_and_drain = |bytes: &[u8]| {
        let mut client = UnixStream::connect(&sock).unwrap();
        client.set_read_timeout(Some(WAIT)).unwrap();
        client.write_all(bytes).unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).unwrap(); // the daemon closes this client
        String::from_utf8_lossy(&reply).into_owned()
    };
    // Garbage in a well-formed frame, then an announced 16 MiB frame.
    let mut garbage = 8u32.to_be_bytes().to_vec();
    garbage.extend([0xff; 8]);
    assert!(send_and_drain(&garbage).contains("does not decode"));
    assert!(send_and_drain(&(16u32 << 20).to_be_bytes()).contains("over the limit"));
    // Another client is served as usual.
    let status = carrierctl(&["status", "--socket", &sock]);
    assert!(status.contains("network:  t"), "{status}");
    assert!(daemon.terminate().success());
}

#[test]
fn control_socket_is_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 1);
    let daemon = Daemon::start(&dirs[0], None);
    let sock = socket(&dirs[0]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    if !is_root || !setpriv {
        println!("skipped the other-uid part: needs root and setpriv (root: {is_root}, setpriv: {setpriv})");
        assert!(daemon.terminate().success());
        return;
    }
    // The other user must be able to reach the socket's directory and the binary.
    let mut dir = Path::new(&sock).parent().unwrap();
    while dir != Path::new("/") {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
        dir = dir.parent().unwrap();
    }
    let as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_carrierctl")])
            .args(["status", "--socket", &sock])
            .output()
            .unwrap()
    };
    let out = as_nobody();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another user"), "{}", String::from_utf8_lossy(&out.stderr));
    // Even with the file opened up, the daemon checks the caller's uid.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    assert!(!out.status.success(), "another user got an answer: {}", String::from_utf8_lossy(&out.stdout));
    daemon.wait_for("refused a control client of another user");
    assert!(daemon.terminate().success());
}

#[test]
fn carrierctl_says_when_the_daemon_is_not_running() {
    let out = Command::new(env!("CARGO_BIN_EXE_carrierctl"))
        .args(["status", "--socket", "/nonexistent/control.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("carrierd is not running"));
}

#[test]
fn bad_configuration_stops_start_up_with_the_key_named() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 1);
    let cases = [
        ("lisen = \"127.0.0.1:0\"\n", "lisen"),
        ("listen = \"not an address\"\n", "listen"),
        ("bootstrap = [\"/ip4/127.0.0.1/tcp/1\"]\n", "bootstrap[0]"),
    ];
    for (text, key) in cases {
        let config = root.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let out = carrierd(&["run", "--config", config.to_str().unwrap(), "--data-dir", dirs[0].to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
    // A missing configuration file named on the command line is an error.
    let out = carrierd(&["run", "--config", "/nonexistent/carrierd.toml", "--data-dir", dirs[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/carrierd.toml"));
}

#[test]
fn unusable_identity_or_ledger_stops_start_up_with_the_fix() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 1);
    let config = root.path().join("ok.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n").unwrap();
    let run = |dir: &Path| {
        let out = carrierd(&["run", "--config", config.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    use std::os::unix::fs::PermissionsExt;
    let key = dirs[0].join("device.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(run(&dirs[0]).contains("chmod 600"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(dirs[0].join("ledger/ledger.log")).unwrap();
    assert!(run(&dirs[0]).contains("no ledger"));
    assert!(run(&root.path().join("empty")).contains("carrierd init"));
}
