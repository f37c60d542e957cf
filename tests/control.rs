//! The control socket of a real `carrierd`, through `carrierctl` and raw
//! clients: status, peers, routes, counters, watch, connect, disconnect,
//! publish; bad frames; and a caller of another uid.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::{Daemon, WAIT, carrierctl, mesh, new_device, provision, socket};

#[test]
fn carrierctl_inspects_and_steers_a_running_daemon() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 3);
    let daemons = mesh(&dirs);
    let sock = socket(&dirs[0]);
    let status: serde_json::Value =
        serde_json::from_str(&carrierctl(&["status", "--socket", &sock, "--json"])).unwrap();
    assert_eq!(status["network"], "t");
    assert_eq!(status["ledger"]["height"], 4);
    // Global options go before or after the command, mixed as one likes.
    for args in [["--json", "--socket", &sock, "status"], ["--socket", &sock, "status", "--json"]] {
        let again: serde_json::Value = serde_json::from_str(&carrierctl(&args)).unwrap();
        assert_eq!(again["did"], status["did"], "{args:?}");
    }
    let entries: serde_json::Value =
        serde_json::from_str(&carrierctl(&["--json", "ledger", "--socket", &sock, "show"])).unwrap();
    assert_eq!(entries.as_array().map(Vec::len), Some(4), "{entries}");
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
    let ledger = root.path().join("admin/ledger");
    new_device(root.path(), &ledger, "late");
    let published = carrierctl(&["ledger", "publish", "--ledger", ledger.to_str().unwrap(), "--socket", &sock]);
    assert!(published.contains("took 1 new entries") && published.contains("height is 5"), "{published}");
    // The daemon's ledger, read through its control socket.
    let shown: serde_json::Value =
        serde_json::from_str(&carrierctl(&["ledger", "show", "--socket", &sock, "--json"])).unwrap();
    assert_eq!(shown.as_array().unwrap().len(), 5);
    let late_did = shown[4]["details"]["did"].as_str().unwrap().to_owned();
    let resolved: serde_json::Value =
        serde_json::from_str(&carrierctl(&["ledger", "resolve", "--socket", &sock, "--json", &late_did])).unwrap();
    assert_eq!(resolved["active"], true);
    let again = carrierctl(&["ledger", "publish", "--ledger", ledger.to_str().unwrap(), "--socket", &sock]);
    assert!(again.contains("took 0 new entries"), "{again}");
    assert!(peers.as_array().unwrap().iter().all(|p| p["bytes_in"].as_u64().unwrap() > 0), "{peers}");
    let counters: serde_json::Value =
        serde_json::from_str(&carrierctl(&["counters", "--socket", &sock, "--json"])).unwrap();
    assert!(counters["links_admitted_inbound"].as_u64().unwrap() >= 2, "{counters}");

    // A watcher sees a peer go down and come back.
    let watcher = support::Watcher::start(&sock);
    // Disconnect a peer, then find it again by DID.
    carrierctl(&["disconnect", "--socket", &sock, &peer_dids[0]]);
    watcher.wait_event("peer_down", &peer_dids[0]);
    carrierctl(&["connect", "--socket", &sock, &peer_dids[0]]);
    watcher.wait_event("peer_up", &peer_dids[0]);
    drop(watcher);
    let out = Command::new(env!("CARGO_BIN_EXE_carrierctl"))
        .args(["connect", "--socket", &sock, "did:carrier:zNotADid"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("carrierd:"));
    for daemon in daemons {
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
