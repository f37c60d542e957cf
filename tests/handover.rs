//! A lost sequencer is replaced: the sequencer is killed for good (SIGKILL),
//! a registrar hands sequencing to another device under a new log key, and
//! that device continues the same log. The revocation handed in while no
//! sequencer ran is in force at once and the first thing the new sequencer
//! sequences; registrations work again. A daemon that was away through it
//! all follows when it returns: its peers pass it the handover from their
//! logs, and it takes the new key's checkpoints.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Instant;

use serde_json::Value;
use support::{Daemon, carrierctl, carrierd, provision_with_apps, socket, status, wait_until};

/// Genesis and five devices.
const BASE: u64 = 6;

fn sequencer_config(key: &Path) -> String {
    format!("[ledger]\nsequencer_key = {key:?}\n")
}

#[test]
fn a_lost_sequencer_is_replaced_and_its_revocation_goes_first() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, _) = provision_with_apps(root.path(), 5, &[]);
    let registrar = root.path().join("admin/registrar.key");
    let registrar = registrar.to_str().unwrap();
    std::fs::copy(root.path().join("admin/ledger/log.key"), dirs[0].join("log.key")).unwrap();
    let old = Daemon::start_with(&dirs[0], None, &sequencer_config(&dirs[0].join("log.key")));
    // The next sequencer holds a log key the ledger does not name yet.
    let new_key = dirs[1].join("next-log.key");
    carrierctl(&["keygen", "--kind", "log", "--out", new_key.to_str().unwrap()]);
    let next = Daemon::start_with(&dirs[1], Some(&old.addr), &sequencer_config(&new_key));
    next.wait_for("standing by");
    let others: Vec<Daemon> = dirs[2..4].iter().map(|dir| Daemon::start(dir, Some(&next.addr))).collect();
    // A device that goes away before the handover, and comes back after.
    let away = Daemon::start(&dirs[4], Some(&next.addr));
    away.wait_for("peer up");
    drop(away);
    for daemon in [&next].into_iter().chain(&others) {
        daemon.wait_for("peer up");
    }
    let did = |i: usize| status(&dirs[i])["did"].as_str().unwrap().to_owned();
    let (next_did, lost_did) = (did(1), did(3));
    old.kill();

    // No sequencer: the revocation is in force at once all the same.
    carrierctl(&["ledger", "revoke", "--submit", "--socket", &socket(&dirs[2]), "--key", registrar, &lost_did]);
    // The handover, handed to any daemon.
    let asked = Instant::now();
    let out = carrierctl(&[
        "ledger",
        "handover",
        "--submit",
        "--socket",
        &socket(&dirs[2]),
        "--to",
        &next_did,
        "--key",
        registrar,
        "--log-key",
        new_key.to_str().unwrap(),
    ]);
    assert!(out.contains("pending") || out.contains("sequenced"), "{out}");
    for dir in &dirs[1..3] {
        wait_until("took the new sequencer's checkpoint", || {
            let s = status(dir);
            s["ledger"]["height"].as_u64().unwrap() > BASE
                && s["ledger"]["checkpoint"].as_str().unwrap().contains(&format!("carrier-sequencer {next_did}"))
        });
    }
    println!(
        "the new sequencer's first checkpoint on every daemon {} ms after the handover",
        asked.elapsed().as_millis()
    );
    next.wait_for("took over sequencing");
    assert!(status(&dirs[1])["ledger"]["sequencer"].as_bool().unwrap());

    // The revocation is sequenced, right after the handover.
    wait_until("sequenced the revocation", || {
        carrierctl(&["ledger", "resolve", "--socket", &socket(&dirs[2]), &lost_did])
            .contains(&format!("revoked at entry {}", BASE + 1))
    });
    let shown: Value =
        serde_json::from_str(&carrierctl(&["ledger", "show", "--json", "--socket", &socket(&dirs[2])])).unwrap();
    assert_eq!(shown[BASE as usize]["op"], "handover", "{shown:#}");

    // Registrations work again, at any daemon.
    let newcomer = root.path().join("newcomer");
    assert!(carrierd(&["init", "--data-dir", newcomer.to_str().unwrap()]).output().unwrap().status.success());
    let card = newcomer.join("device.card");
    let out = carrierctl(&[
        "ledger",
        "register-device",
        "--submit",
        "--wait",
        "--socket",
        &socket(&dirs[2]),
        "--key",
        registrar,
        card.to_str().unwrap(),
    ]);
    assert!(out.contains("sequenced"), "{out}");
    wait_until("every daemon took the registration", || {
        dirs[1..3].iter().all(|dir| status(dir)["ledger"]["height"].as_u64() == Some(BASE + 3))
    });

    // The device that was away returns: it takes the handover from a
    // peer's log, then the new key's checkpoint, then the entries.
    let back = Daemon::start(&dirs[4], Some(&others[0].addr));
    back.wait_for("peer up");
    wait_until("the returning daemon followed the handover", || {
        let s = status(&dirs[4]);
        s["ledger"]["height"].as_u64() == Some(BASE + 3)
            && s["ledger"]["checkpoint"].as_str().unwrap().contains(&format!("carrier-sequencer {next_did}"))
    });
    // And it opens its ledger, checkpoint by the new key, after a restart.
    drop(back);
    let back = Daemon::start(&dirs[4], Some(&others[0].addr));
    back.wait_for("peer up");
    assert_eq!(status(&dirs[4])["ledger"]["height"].as_u64(), Some(BASE + 3));
}
