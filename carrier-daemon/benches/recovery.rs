//! Recovery, with real `carrierd` processes on loopback:
//!
//! - a returning device: B's daemon is stopped, app A sends 10,000
//!   64-byte messages (each accepted, so on A's disk), B's daemon starts
//!   again: the time from its start to the last message taken by B's app;
//! - a link's death: messages flowing from A to B, B's daemon killed with
//!   SIGKILL: the time until A's courier gives the link up and retries
//!   (QUIC alone would wait for its 30 s idle timeout);
//! - offline mailboxes: B's daemon is stopped, A sends 10,000 messages that
//!   are sealed onto the three other devices, A's daemon stops too, and B's
//!   starts: the time from its start until its app has them all, collected
//!   from the mailboxes alone.
//!
//! Run: `cargo bench -p carrier-daemon --bench recovery`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use carrier_daemon::paths::{APP_SOCKET, DataDir};
use carrier_sdk::{AppIdentity, Client, Receipt};

const STORED: u32 = 10_000;
const WAIT: Duration = Duration::from_secs(120);

/// A `carrierd` process whose output lines arrive, time-stamped, on a
/// channel; killed when dropped.
struct Carrierd {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    addr: String,
}

impl Carrierd {
    fn start(data: &DataDir, bootstrap: Option<&str>, log: &str) -> Self {
        let runtime = data.root().join("run");
        let bootstrap = bootstrap.map(|a| format!("bootstrap = [\"{a}\"]\n")).unwrap_or_default();
        let config = data.root().join("carrierd.toml");
        let text =
            format!("listen = \"127.0.0.1:0\"\nruntime_dir = {runtime:?}\n{bootstrap}[log]\nlevel = \"{log}\"\n");
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_carrierd"))
            .args(["run", "--config", config.to_str().unwrap(), "--data-dir", data.root().to_str().unwrap()])
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
                    let _ = tx.send((Instant::now(), line));
                }
            });
        }
        let mut daemon = Self { child, lines, addr: String::new() };
        daemon.addr = daemon.wait_for("listening on ").1.replace("listening on ", "");
        daemon
    }

    /// The first line (from now on) containing `needle`, and when it came.
    fn wait_for(&self, needle: &str) -> (Instant, String) {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(needle) => return (at, line),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("carrierd never printed {needle:?}");
    }

    fn app_socket(data: &DataDir) -> std::path::PathBuf {
        data.root().join("run").join(APP_SOCKET)
    }

    fn kill(mut self) -> Instant {
        let at = Instant::now();
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        at
    }
}

impl Drop for Carrierd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(app: &Path, data: &DataDir) -> Client {
    Client::connect_as(AppIdentity::load_or_create(app).unwrap(), Carrierd::app_socket(data)).await.unwrap()
}

async fn returning_device(root: &Path) {
    let [(data_a, app_a), (data_b, app_b)] = support::provision(root);
    let a = Carrierd::start(&data_a, None, "warn");
    let b = Carrierd::start(&data_b, Some(&a.addr), "warn,carrier_daemon::overlay=info");
    b.wait_for("peer up");
    let to = AppIdentity::load_or_create(&app_b).unwrap().did();
    drop(b);
    let sender = client(&app_a, &data_a).await;
    let mut pending = Vec::new();
    for _ in 0..STORED {
        let mut receipt = sender.submit(&to, vec![7u8; 64]).await.unwrap();
        receipt.accepted().await.unwrap().expect("accepted");
        pending.push(receipt);
    }
    let started = Instant::now();
    let b = Carrierd::start(&data_b, Some(&a.addr), "warn");
    let up = started.elapsed();
    let recipient = client(&app_b, &data_b).await;
    let mut messages = recipient.messages();
    for _ in 0..STORED {
        tokio::time::timeout(WAIT, messages.next()).await.unwrap().unwrap();
    }
    let taken = started.elapsed();
    for receipt in pending {
        assert_eq!(receipt.await.unwrap(), Receipt::Delivered);
    }
    let receipts = started.elapsed();
    println!("a returning device, {STORED} messages waiting in the sender's outbox:");
    println!("  its daemon started and listening   {:>7.0} ms", up.as_secs_f64() * 1e3);
    println!("  its app has every message          {:>7.0} ms after the start", taken.as_secs_f64() * 1e3);
    println!("  the sender has every receipt       {:>7.0} ms after the start\n", receipts.as_secs_f64() * 1e3);
    drop((recipient, b));
}

async fn link_death(root: &Path) {
    let [(data_a, app_a), (data_b, app_b)] = support::provision(root);
    let a = Carrierd::start(&data_a, None, "warn,carrier_daemon::protocols::messages=debug");
    let b = Carrierd::start(&data_b, Some(&a.addr), "warn");
    let (sender, recipient) = (client(&app_a, &data_a).await, client(&app_b, &data_b).await);
    let to = recipient.did();
    assert_eq!(sender.send(&to, "warm").await.unwrap(), Receipt::Delivered);
    // A steady trickle, so answers are always owed when the link dies.
    let trickle = {
        let sender = sender.clone();
        tokio::spawn(async move {
            loop {
                if sender.submit(&to, vec![1u8; 64]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let drain = tokio::spawn(async move {
        let mut messages = recipient.messages();
        while messages.next().await.is_some() {}
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = b.kill();
    let (retried, _) = a.wait_for("message stream broke; retrying");
    let restarted = Instant::now();
    let b = Carrierd::start(&data_b, Some(&a.addr), "warn");
    let recipient = client(&app_b, &data_b).await;
    tokio::time::timeout(WAIT, recipient.messages().next()).await.unwrap().unwrap();
    let flowing = restarted.elapsed();
    println!("a link's death (the receiving daemon killed, answers owed):");
    println!("  kill to the courier's first retry  {:>7.0} ms", retried.duration_since(killed).as_secs_f64() * 1e3);
    println!("  QUIC idle timeout, for comparison  {:>7.0} ms", 30_000.0);
    println!("  restart to messages flowing again  {:>7.0} ms", flowing.as_secs_f64() * 1e3);
    trickle.abort();
    drain.abort();
    drop((recipient, b, a));
}

async fn mailboxes(root: &Path) {
    let mut devices = support::provision_n(root, 5);
    let (data_b, app_b) = devices.pop().unwrap();
    let (data_a, app_a) = devices.pop().unwrap();
    let first = Carrierd::start(&devices[0].0, None, "warn");
    let mut nodes: Vec<Carrierd> =
        devices[1..].iter().map(|(data, _)| Carrierd::start(data, Some(&first.addr), "warn")).collect();
    nodes.push(first);
    let a = Carrierd::start(&data_a, Some(&nodes[2].addr), "warn,carrier_daemon::overlay=info");
    let b = Carrierd::start(&data_b, Some(&nodes[2].addr), "warn,carrier_daemon::overlay=info");
    for _ in 0..4 {
        b.wait_for("peer up");
    }
    let to = AppIdentity::load_or_create(&app_b).unwrap().did();
    drop(b);
    let sender = client(&app_a, &data_a).await;
    let started = Instant::now();
    let mut pending = Vec::new();
    for _ in 0..STORED {
        pending.push(sender.submit(&to, vec![7u8; 64]).await.unwrap());
    }
    for receipt in &mut pending {
        tokio::time::timeout(WAIT, receipt.stored()).await.unwrap().unwrap().expect("stored");
    }
    let stored = started.elapsed();
    drop((pending, sender, a));
    let started = Instant::now();
    let b = Carrierd::start(&data_b, Some(&nodes[2].addr), "warn");
    let recipient = client(&app_b, &data_b).await;
    let mut messages = recipient.messages();
    for n in 0..STORED {
        let next = tokio::time::timeout(WAIT, messages.next()).await;
        assert!(matches!(next, Ok(Some(_))), "collection stopped after {n} of {STORED} messages");
    }
    let collected = started.elapsed();
    println!("offline mailboxes, {STORED} messages of 64 bytes, 3 mailbox nodes, the sender offline:");
    println!("  sealed and stored (3 copies each)  {:>7.0} ms", stored.as_secs_f64() * 1e3);
    println!(
        "  collected: from the recipient's start to its app having all {:>7.0} ms\n",
        collected.as_secs_f64() * 1e3
    );
    drop((recipient, b, nodes));
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        returning_device(tempfile::tempdir().unwrap().path()).await;
        link_death(tempfile::tempdir().unwrap().path()).await;
        mailboxes(tempfile::tempdir().unwrap().path()).await;
    });
}
