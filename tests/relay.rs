//! Circuit relay between real daemons on loopback: a `relay`-role device
//! grants reservations and circuits to devices on the ledger only, the
//! Carrier handshake runs end to end over the circuit, and a revocation
//! cuts the relayed link. (Devices behind real NATs, and hole punching, are
//! in the network-namespace lab, `tests/nat_lab.rs`.)

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use serde_json::Value;
use support::{Daemon, add_relay, carrierctl, carrierd, copy_ledger, provision, socket};

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&carrierctl(args)).unwrap()
}

fn counter(dir: &Path, name: &str) -> u64 {
    json(&["counters", "--socket", &socket(dir), "--json"])[name].as_u64().unwrap_or(0)
}

fn did(dir: &Path) -> String {
    json(&["status", "--socket", &socket(dir), "--json"])["did"].as_str().unwrap().to_owned()
}

const ALWAYS: &str = "[nat]\nreservations = \"always\"\n";

#[test]
fn a_reserved_device_is_reached_through_the_relay_and_loses_the_link_when_revoked() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 2);
    let relay_dir = add_relay(root.path(), &dirs);
    let (a_dir, b_dir) = (&dirs[0], &dirs[1]);
    let relay = Daemon::start(&relay_dir, None);
    let b = Daemon::start_with(b_dir, Some(&relay.addr), ALWAYS);
    // The relay serves once a probe confirms its address; B asks until then.
    let line = b.wait_for("reachable through a relay at this address");
    let circuit = line.split("address=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    assert!(circuit.contains("/p2p-circuit"), "{line}");
    relay.wait_for("relay: reservation granted");
    let status = json(&["status", "--socket", &socket(b_dir), "--json"]);
    let listen: Vec<&str> = status["listen"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(listen.contains(&circuit.as_str()), "status does not show the circuit address: {listen:?}");
    let text = carrierctl(&["status", "--socket", &socket(b_dir)]);
    assert!(text.contains(&format!("relayed:  {circuit}")), "{text}");

    let a = Daemon::start(a_dir, Some(&relay.addr));
    a.wait_for("peer up");
    // The circuit address ends in B's own peer id.
    let (b_did, through) = (did(b_dir), circuit.clone());
    carrierctl(&["connect", &b_did, "--addr", &through, "--socket", &socket(a_dir)]);
    // The link is a circuit end to end: both ends admitted it over the
    // relayed stream, and the relay carried the circuit.
    assert_eq!(counter(a_dir, "relayed_links_admitted_outbound"), 1);
    assert_eq!(counter(b_dir, "relayed_links_admitted_inbound"), 1);
    assert_eq!(counter(&relay_dir, "relay_circuits_opened"), 1);

    // B is revoked: A cuts every link to it, the relayed one too.
    let (key, ledger) = (root.path().join("admin/registrar.key"), root.path().join("admin/ledger"));
    let (key, ledger) = (key.to_str().unwrap(), ledger.to_str().unwrap());
    carrierctl(&["ledger", "revoke", "--ledger", ledger, "--key", key, &b_did]);
    carrierctl(&["ledger", "publish", "--ledger", ledger, "--socket", &socket(a_dir)]);
    a.wait_for("revoked: links closed");
    let peers = carrierctl(&["peers", "--socket", &socket(a_dir), "--json"]);
    assert!(!peers.contains(&b_did), "still linked to the revoked device: {peers}");
    // And the relay will not carry a new circuit to it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_carrierctl"))
        .args(["connect", &b_did, "--addr", &through, "--socket", &socket(a_dir)])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a circuit to a revoked device was linked");
    for daemon in [a, b, relay] {
        assert!(daemon.terminate().success());
    }
}

#[test]
fn a_device_not_on_the_ledger_gets_no_reservation() {
    let root = tempfile::tempdir().unwrap();
    let dirs = provision(root.path(), 1);
    let relay_dir = add_relay(root.path(), &dirs);
    // A stranger with a copy of the ledger, but not on it.
    let stranger_dir = root.path().join("stranger");
    assert!(carrierd(&["init", "--data-dir", stranger_dir.to_str().unwrap()]).output().unwrap().status.success());
    copy_ledger(&root.path().join("admin/ledger"), &stranger_dir.join("ledger"));
    let relay = Daemon::start(&relay_dir, None);
    let member = Daemon::start_with(&dirs[0], Some(&relay.addr), ALWAYS);
    member.wait_for("reachable through a relay at this address");
    let stranger = Daemon::start_with(&stranger_dir, Some(&relay.addr), ALWAYS);
    // Its attempts are refused at the handshake, before any reservation.
    relay.wait_for("refused peer");
    assert!(counter(&relay_dir, "refused_unknown_identity") >= 1);
    assert_eq!(counter(&relay_dir, "relay_reservations_granted"), 1, "only the member holds a reservation");
    let status = json(&["status", "--socket", &socket(&stranger_dir), "--json"]);
    let listen = status["listen"].to_string();
    assert!(!listen.contains("p2p-circuit"), "the stranger holds a circuit address: {listen}");
    for daemon in [stranger, member, relay] {
        assert!(daemon.terminate().success());
    }
}
