//! Real `carrierd` processes on loopback: joining through one bootstrap
//! address, replication of registrations and revocations, equivocation,
//! restarts after SIGKILL, clean SIGTERM shutdown, and the start-up errors
//! an operator must be able to read.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{Daemon, carrierctl, carrierd, mesh, new_device, provision, socket};

#[test]
fn three_daemons_join_through_one_address_and_stop_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 3);
    // Each newcomer links to the bootstrap node, and Kademlia's bootstrap
    // introduces the newcomers to each other.
    let daemons = mesh(&dirs);
    daemons[0].wait_for("peer up");
    daemons[0].wait_for("peer up");
    for daemon in daemons {
        assert!(daemon.terminate().success());
    }
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
    let f_dir = new_device(root.path(), Path::new(ledger), "newcomer");
    let shown: Vec<serde_json::Value> =
        serde_json::from_str(&carrierctl(&["ledger", "show", "--ledger", ledger, "--json"])).unwrap();
    let f_did = shown[6]["details"]["did"].as_str().unwrap().to_owned();
    carrierctl(&["ledger", "publish", "--ledger", ledger, "--socket", &socket(&dirs[0])]);
    e.wait_for("applied ledger entries from a peer");

    // The newcomer has its own copy of the admin's ledger and joins through E.
    support::copy_ledger(&root.path().join("admin/ledger"), &f_dir.join("ledger"));
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

/// The sequencer equivocates: with the one log key it sequences two
/// different entries at the same place in two copies of the ledger, and
/// signs a checkpoint of each. Every daemon that sees both keeps its own
/// view, raises the alarm, and saves both notes as evidence.
#[test]
fn two_signed_histories_raise_the_alarm_and_keep_the_old_view() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 2);
    let (one, two) = (root.path().join("fork-one"), root.path().join("fork-two"));
    for (copy, name) in [(&one, "x"), (&two, "y")] {
        support::copy_ledger(&root.path().join("admin/ledger"), copy);
        std::fs::copy(root.path().join("admin/ledger/log.key"), copy.join("log.key")).unwrap();
        new_device(root.path(), copy, name);
    }
    let a = Daemon::start(&dirs[0], None);
    let b = Daemon::start(&dirs[1], None);
    carrierctl(&["ledger", "publish", "--ledger", one.to_str().unwrap(), "--socket", &socket(&dirs[0])]);
    carrierctl(&["ledger", "publish", "--ledger", two.to_str().unwrap(), "--socket", &socket(&dirs[1])]);
    // Handing A the other history directly is refused, and raises the alarm.
    let out = Command::new(env!("CARGO_BIN_EXE_carrierctl"))
        .args(["ledger", "publish", "--ledger", two.to_str().unwrap(), "--socket", &socket(&dirs[0])])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("contradicts"), "{out:?}");
    // B restarts and joins through A: B sees A's checkpoint contradict its own.
    assert!(b.terminate().success());
    let b = Daemon::start(&dirs[1], Some(&a.addr));
    a.wait_for("ledger equivocation");
    b.wait_for("ledger equivocation");
    for dir in &dirs {
        let status: serde_json::Value =
            serde_json::from_str(&carrierctl(&["status", "--socket", &socket(dir), "--json"])).unwrap();
        assert!(status["alarm"].as_str().unwrap().contains("two histories"), "{status}");
        assert_eq!(status["ledger"]["height"], 4, "the other history was applied: {status}");
        let evidence: Vec<_> = std::fs::read_dir(dir.join("ledger"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("equivocation-")))
            .collect();
        assert_eq!(evidence.len(), 1, "{evidence:?}");
        let text = std::fs::read_to_string(&evidence[0]).unwrap();
        // Both signed notes, each with the log key's signature and its time.
        assert_eq!(text.matches("\u{2014} carrier/").count(), 4, "both signed notes: {text}");
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
    // The same ledger and checkpoint (its age moves on with the clock).
    for field in ["height", "root", "checkpoint", "sequencer", "frozen"] {
        assert_eq!(after["ledger"][field], before["ledger"][field], "ledger.{field}");
    }
    assert_eq!(after["network_id"], before["network_id"]);
    for daemon in [a, b, c] {
        assert!(daemon.terminate().success());
    }
}

#[test]
fn readiness_and_stopping_are_reported_to_the_service_manager() {
    use std::os::unix::net::UnixDatagram;
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 1);
    let notify_path = root.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(support::WAIT)).unwrap();
    let config = root.path().join("notify.toml");
    let runtime = dirs[0].join("run");
    std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\nruntime_dir = {runtime:?}\n")).unwrap();
    let child = carrierd(&["run", "--config", config.to_str().unwrap(), "--data-dir", dirs[0].to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = support::Reaped(child);
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("no READY=1 from carrierd");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving: the control socket answers.
    assert!(carrierctl(&["status", "--socket", &socket(&dirs[0])]).contains("network:"));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let n = notify.recv(&mut buf).expect("no STOPPING=1 from carrierd");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
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
    std::fs::write(&key, b"not a key at all").unwrap();
    assert!(run(&dirs[0]).contains("not a Carrier key file"));
}

/// A daemon run inside this process stops in order: its app and control
/// sockets stop accepting, the app's session ends, the peer hears the
/// shutdown, and no task of the daemon is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_both_sockets_and_leaves_no_task_running() {
    use carrier_daemon::config::Config;
    use carrier_daemon::daemon::Daemon as InProcess;
    use carrier_daemon::overlay::OverlayEvent;
    use carrier_daemon::paths::DataDir;

    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = support::provision_with_apps(root.path(), 2, &[1]);
    let config = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    let (run_a, run_b) = (dirs[0].join("run"), dirs[1].join("run"));
    let a = InProcess::start(&config, DataDir::new(dirs[0].clone()), &run_a).await.unwrap();
    let joining = Config { bootstrap: vec![a.overlay().listen_addr().to_string()], ..config.clone() };
    let b = InProcess::start(&joining, DataDir::new(dirs[1].clone()), &run_b).await.unwrap();
    // Subscribed now; the event may come later.
    async fn event(mut events: tokio::sync::broadcast::Receiver<OverlayEvent>, want: OverlayEvent) {
        let seen =
            tokio::time::timeout(support::WAIT, async { while events.recv().await.ok() != Some(want.clone()) {} });
        seen.await.expect("the event never came")
    }
    let up = event(b.overlay().events(), OverlayEvent::PeerUp(a.did()));
    if !b.overlay().peers().await.unwrap().iter().any(|p| p.did == a.did()) {
        up.await;
    }
    // Handlers at work: an app session and a control client.
    let identity = carrier_sdk::AppIdentity::load_or_create(&apps[0][0]).unwrap();
    let client = carrier_sdk::Client::connect_as(identity, run_a.join("app.sock")).await.unwrap();
    let _control = tokio::net::UnixStream::connect(run_a.join("control.sock")).await.unwrap();
    assert!(a.running_tasks() > 0);

    let peer_down = event(b.overlay().events(), OverlayEvent::PeerDown(a.did()));
    tokio::time::timeout(Duration::from_secs(10), a.shutdown()).await.expect("shutdown took over 10 s");
    assert_eq!(a.running_tasks(), 0, "a task outlived shutdown");
    for socket in ["app.sock", "control.sock"] {
        assert!(tokio::net::UnixStream::connect(run_a.join(socket)).await.is_err(), "{socket} still accepts");
    }
    let mut messages = client.messages();
    let ended = tokio::time::timeout(support::WAIT, messages.next()).await.expect("the app's session stayed open");
    assert!(ended.is_none());
    peer_down.await;
    b.shutdown().await;
    assert_eq!(b.running_tasks(), 0);
}

/// A device that joined through another learns from that one's dial-back
/// that its address is reachable, and `carrierctl status` says so.
#[test]
fn carrierctl_status_shows_an_address_a_dial_back_confirmed() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 2);
    let first = Daemon::start(&dirs[0], None);
    let joined = Daemon::start(&dirs[1], Some(&first.addr));
    let confirmed = joined.printed_within("address confirmed reachable from outside", Duration::from_secs(60));
    assert!(confirmed.is_some(), "no probe confirmed the joined device's address");
    let status = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&carrierctl(&["status", "--socket", &socket(dir), "--json"])).unwrap()
    };
    let (theirs, ours) = (status(&dirs[0]), status(&dirs[1]));
    assert_eq!(ours["nat"], "public");
    let probe = &ours["probed"][0];
    assert_eq!((&probe["reachable"], &probe["by"]), (&serde_json::json!(true), &theirs["did"]));
    assert_eq!(probe["addr"], ours["listen"][0]);
    let text = carrierctl(&["status", "--socket", &socket(&dirs[1])]);
    assert!(text.contains("nat:      public") && text.contains("reachable (dialed back by"), "{text}");
    for daemon in [joined, first] {
        assert!(daemon.terminate().success());
    }
}
