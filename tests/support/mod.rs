//! Shared by the scenario tests that run real `carrierd` processes:
//! provisioning a network with `carrierctl`, and daemons whose output is
//! read line by line (waiting on lines, never on the clock).
//!
//! Every process a test starts is held in a [`Reaped`], so it is killed and
//! reaped when the test ends, whether it passed or panicked: no daemon
//! outlives its test (`.ci/run` checks that none is left).

#![allow(dead_code)]

pub(crate) mod hostile;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn carrierctl(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_carrierctl")).args(args).output().unwrap();
    assert!(out.status.success(), "carrierctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn carrierd(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_carrierd"));
    command.args(args).env("RUST_LOG", "info").env_remove("NOTIFY_SOCKET");
    command
}

/// A network of `n` devices, each with its own data directory holding its
/// identity and a copy of the ledger that registers all of them.
pub(crate) fn provision(root: &Path, n: usize) -> Vec<PathBuf> {
    provision_with_apps(root, n, &[]).0
}

/// Like [`provision`], with apps: `apps[i]` apps registered under device
/// `i`, each with its own data directory (`root/nodeI-appJ`) holding its
/// key, as the SDK makes it.
pub(crate) fn provision_with_apps(root: &Path, n: usize, apps: &[usize]) -> (Vec<PathBuf>, Vec<Vec<PathBuf>>) {
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
    let dirs: Vec<PathBuf> = (0..n).map(|i| new_device(root, &ledger, &format!("node{i}"))).collect();
    let mut app_dirs = Vec::new();
    for (i, &count) in apps.iter().enumerate() {
        let device_key = dirs[i].join("device.key");
        let dirs = (0..count)
            .map(|j| {
                let dir = root.join(format!("node{i}-app{j}"));
                let card = carrier_sdk::AppIdentity::load_or_create(&dir).unwrap().card().to_string();
                let (ledger, key) = (ledger.to_str().unwrap(), device_key.to_str().unwrap());
                let app_key = dir.join(carrier_sdk::APP_KEY_FILE);
                let app_key = app_key.to_str().unwrap();
                carrierctl(&[
                    "ledger",
                    "register-app",
                    "--ledger",
                    ledger,
                    "--key",
                    key,
                    "--app-key",
                    app_key,
                    "--name",
                    "app",
                    &card,
                ]);
                dir
            })
            .collect();
        app_dirs.push(dirs);
    }
    for dir in &dirs {
        copy_ledger(&ledger, &dir.join("ledger"));
    }
    (dirs, app_dirs)
}

/// Copies the ledger in `from` (its log and checkpoint; never the log key)
/// into the directory `to`.
pub(crate) fn copy_ledger(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["ledger.log", "checkpoint"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

/// `carrierd init` in `root/name`, registered by the admin in `ledger` (a
/// ledger directory); returns the device's data directory.
pub(crate) fn new_device(root: &Path, ledger: &Path, name: &str) -> PathBuf {
    new_device_with_role(root, ledger, name, None)
}

/// [`new_device`], registered with `role` if one is given.
pub(crate) fn new_device_with_role(root: &Path, ledger: &Path, name: &str, role: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    let key = root.join("admin/registrar.key");
    assert!(carrierd(&["init", "--data-dir", dir.to_str().unwrap()]).output().unwrap().status.success());
    let card = dir.join("device.card");
    let (ledger, key, card) = (ledger.to_str().unwrap(), key.to_str().unwrap(), card.to_str().unwrap());
    let role = role.map(|role| ["--role", role]);
    let mut args = vec!["ledger", "register-device", "--ledger", ledger, "--key", key];
    args.extend(role.iter().flatten());
    args.push(card);
    carrierctl(&args);
    dir
}

/// Adds a device registered with role `relay` to the admin's ledger, and
/// hands the ledger to every device.
pub(crate) fn add_relay(root: &Path, devices: &[PathBuf]) -> PathBuf {
    let ledger = root.join("admin/ledger");
    let dir = new_device_with_role(root, &ledger, "relay", Some("relay"));
    for dir in devices.iter().chain([&dir]) {
        copy_ledger(&ledger, &dir.join("ledger"));
    }
    dir
}

/// Waits (up to `wait`) until the routing table of the daemon in `dir`
/// has `count` devices.
pub(crate) fn until_routed(dir: &Path, count: usize, wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let routes: serde_json::Value =
            serde_json::from_str(&carrierctl(&["routes", "--socket", &socket(dir), "--json"])).unwrap();
        if routes.as_array().unwrap().iter().filter(|r| r["did"].as_str().is_some_and(|d| !d.is_empty())).count()
            >= count
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the device never saw every other: {routes}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // Already exited (and reaped) is fine: both calls then do nothing.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// A running daemon whose output lines arrive on a channel; killed and
/// reaped when dropped (and, if the test is failing, its log printed).
pub(crate) struct Daemon {
    child: Reaped,
    lines: mpsc::Receiver<String>,
    /// Lines read while waiting for an earlier needle, still to be searched.
    backlog: std::cell::RefCell<std::collections::VecDeque<String>>,
    /// The address it listens on, as it printed it.
    pub(crate) addr: String,
}

impl Daemon {
    pub(crate) fn start(dir: &Path, bootstrap: Option<&str>) -> Self {
        Self::start_with(dir, bootstrap, "")
    }

    /// Starts with `extra` appended to the configuration file.
    pub(crate) fn start_with(dir: &Path, bootstrap: Option<&str>, extra: &str) -> Self {
        Self::spawn(None, dir, "127.0.0.1:0", bootstrap, extra)
    }

    /// Starts inside network namespace `netns` (`ip netns exec`; needs
    /// root), listening on `listen`.
    pub(crate) fn start_in(netns: &str, dir: &Path, listen: &str, bootstrap: Option<&str>, extra: &str) -> Self {
        Self::spawn(Some(netns), dir, listen, bootstrap, extra)
    }

    fn spawn(netns: Option<&str>, dir: &Path, listen: &str, bootstrap: Option<&str>, extra: &str) -> Self {
        let config = dir.join("carrierd.toml");
        let bootstrap = bootstrap.map(|a| format!("bootstrap = [\"{a}\"]\n")).unwrap_or_default();
        let runtime = dir.join("run");
        let text = format!("listen = \"{listen}\"\nruntime_dir = {runtime:?}\n{bootstrap}{extra}");
        std::fs::write(&config, text).unwrap();
        let args = ["run", "--config", config.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()];
        let mut command = match netns {
            None => carrierd(&args),
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_carrierd")]).args(args);
                command
                    .env("RUST_LOG", "info,libp2p_dcutr=debug,carrier_daemon::overlay=debug")
                    .env_remove("NOTIFY_SOCKET");
                command
            }
        };
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
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
        let mut daemon = Self { child: Reaped(child), lines, backlog: Default::default(), addr: String::new() };
        daemon.addr = daemon.wait_for("listening on ").replace("listening on ", "");
        daemon
    }

    /// Waits for an output line containing `needle` and returns it.
    pub(crate) fn wait_for(&self, needle: &str) -> String {
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

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line containing `needle` printed within `wait`, if any.
    pub(crate) fn printed_within(&self, needle: &str, wait: Duration) -> Option<String> {
        self.line_within(|line| line.contains(needle), wait)
    }

    /// A line `matches` accepts, printed within `wait`, if any.
    pub(crate) fn line_within(&self, matches: impl Fn(&str) -> bool, wait: Duration) -> Option<String> {
        let mut backlog = self.backlog.borrow_mut();
        if let Some(i) = backlog.iter().position(|line| matches(line)) {
            return backlog.remove(i);
        }
        // Lines already printed first, then new ones until the deadline.
        while let Ok(line) = self.lines.try_recv() {
            if matches(&line) {
                return Some(line);
            }
            backlog.push_back(line);
        }
        let deadline = std::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return Some(line),
                Ok(line) => backlog.push_back(line),
                Err(_) => break,
            }
        }
        None
    }

    /// SIGKILL: no chance to clean up.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.wait_for("carrierd stopped");
        self.child.wait().unwrap()
    }
}

/// Starts a daemon in each of `dirs`, all but the first joining through the
/// first, and waits until every newcomer has linked to two peers (one, in a
/// network of two).
pub(crate) fn mesh(dirs: &[PathBuf]) -> Vec<Daemon> {
    let first = Daemon::start(&dirs[0], None);
    let addr = first.addr.clone();
    let mut daemons = vec![first];
    daemons.extend(dirs[1..].iter().map(|dir| Daemon::start(dir, Some(&addr))));
    for daemon in &daemons[1..] {
        for _ in 0..(dirs.len() - 1).min(2) {
            daemon.wait_for("peer up");
        }
    }
    daemons
}

/// The app socket of the daemon with data directory `dir`.
pub(crate) fn app_socket(dir: &Path) -> PathBuf {
    dir.join("run/app.sock")
}

/// The control socket of the daemon with data directory `dir`.
pub(crate) fn socket(dir: &Path) -> String {
    dir.join("run/control.sock").to_str().unwrap().to_owned()
}

/// `carrierctl watch --json` on a daemon's control socket, its events read
/// line by line; killed and reaped when dropped.
pub(crate) struct Watcher {
    _child: Reaped,
    events: mpsc::Receiver<String>,
}

impl Watcher {
    /// Starts watching and waits until the watch is subscribed.
    pub(crate) fn start(socket: &str) -> Self {
        let mut child = Reaped(
            Command::new(env!("CARGO_BIN_EXE_carrierctl"))
                .args(["watch", "--json", "--socket", socket])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (tx, events) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let watcher = Self { _child: child, events };
        watcher.wait_event("\"ledger\"", "");
        watcher
    }

    /// Waits for an event of `kind` (its JSON text) that names `did`.
    pub(crate) fn wait_event(&self, kind: &str, did: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(line) if line.contains(kind) && line.contains(did) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("carrierctl watch never reported {kind} for {did:?}");
    }
}

impl Drop for Daemon {
    /// A failing test shows what each of its daemons said (any test does,
    /// with CARRIER_TEST_LOGS=1).
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("CARRIER_TEST_LOGS").is_some() {
            let backlog: Vec<String> = self.backlog.borrow_mut().drain(..).collect();
            let rest: Vec<String> = self.lines.try_iter().collect();
            eprintln!("---- carrierd {} ----", self.addr);
            for line in backlog.iter().chain(&rest).filter(|l| !l.contains(" DEBUG ")) {
                eprintln!("{line}");
            }
        }
    }
}

/// What `carrierctl status --json` says of the daemon in `dir`.
pub(crate) fn status(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&carrierctl(&["status", "--json", "--socket", &socket(dir)])).unwrap()
}

/// Polls `ready` until it holds, or fails after [`WAIT`] naming `what`.
pub(crate) fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
