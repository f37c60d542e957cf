//! The sequencer's promises, with real daemons. A revocation handed in at
//! one daemon goes to the sequencer, which sequences it and promises it,
//! signed, at its index; but the checkpoint that holds it never gets out
//! (the network's one witness is down, so no daemon takes it), and the
//! sequencer is then lost for good: the revocation is dropped from the
//! log. Registrars hand sequencing to another device; its first entry sits
//! where the revocation was promised. The daemon that holds the promise
//! shows it broken to every peer (evidence anyone checks offline with the
//! ledger's log keys), sends the revocation again, and the new sequencer
//! sequences it; the revoked device is cut everywhere.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use support::{Daemon, carrierctl, copy_ledger, new_device, new_device_with_role, socket, status, wait_until};

/// Genesis and six devices.
const BASE: u64 = 7;

fn did(dir: &Path) -> String {
    status(dir)["did"].as_str().unwrap().to_owned()
}

fn broken_promises(dir: &Path) -> usize {
    status(dir)["ledger"]["broken_promises"].as_array().map_or(0, Vec::len)
}

/// A network whose genesis names one witness and asks its cosignature.
struct Network {
    admin: PathBuf,
    sequencer: PathBuf,
    next: PathBuf,
    witness: PathBuf,
    submitter: PathBuf,
    observer: PathBuf,
    lost: PathBuf,
}

impl Network {
    fn provision(root: &Path) -> Self {
        let admin = root.join("admin");
        let (key, ledger) = (admin.join("registrar.key"), admin.join("ledger"));
        carrierctl(&["keygen", "--kind", "registrar", "--out", key.to_str().unwrap()]);
        let witness_key = admin.join("witness.key");
        let printed = carrierctl(&["keygen", "--kind", "witness", "--out", witness_key.to_str().unwrap()]);
        let vkey = printed.lines().find_map(|l| l.strip_prefix("vkey:")).unwrap().trim().to_owned();
        carrierctl(&[
            "ledger",
            "genesis",
            "--ledger",
            ledger.to_str().unwrap(),
            "--network",
            "promises",
            "--key",
            key.to_str().unwrap(),
            "--witness",
            &vkey,
            "--witness-quorum",
            "1",
        ]);
        let [sequencer, next, submitter, observer, lost] =
            ["sequencer", "next", "submitter", "observer", "lost"].map(|name| new_device(root, &ledger, name));
        let witness = new_device_with_role(root, &ledger, "witness", Some("witness"));
        for dir in [&sequencer, &next, &witness, &submitter, &observer, &lost] {
            copy_ledger(&ledger, &dir.join("ledger"));
        }
        std::fs::copy(ledger.join("log.key"), sequencer.join("log.key")).unwrap();
        std::fs::copy(&witness_key, witness.join("witness.key")).unwrap();
        carrierctl(&["keygen", "--kind", "log", "--out", next.join("next-log.key").to_str().unwrap()]);
        Self { admin, sequencer, next, witness, submitter, observer, lost }
    }

    fn registrar(&self) -> String {
        self.admin.join("registrar.key").to_str().unwrap().to_owned()
    }

    fn start_witness(&self, bootstrap: &str) -> Daemon {
        let extra = format!("[ledger]\nwitness_key = {:?}\n", self.witness.join("witness.key"));
        Daemon::start_with(&self.witness, Some(bootstrap), &extra)
    }
}

#[test]
fn a_dropped_revocation_is_shown_broken_handed_over_and_sequenced() {
    let root = tempfile::tempdir().unwrap();
    let net = Network::provision(root.path());
    let sequencer = Daemon::start_with(
        &net.sequencer,
        None,
        &format!("[ledger]\nsequencer_key = {:?}\n", net.sequencer.join("log.key")),
    );
    let witness = net.start_witness(&sequencer.addr);
    let next = Daemon::start_with(
        &net.next,
        Some(&sequencer.addr),
        &format!("[ledger]\nsequencer_key = {:?}\n", net.next.join("next-log.key")),
    );
    next.wait_for("standing by");
    let submitter = Daemon::start(&net.submitter, Some(&sequencer.addr));
    let observer = Daemon::start(&net.observer, Some(&sequencer.addr));
    let lost = Daemon::start(&net.lost, Some(&sequencer.addr));
    for daemon in [&witness, &next, &submitter, &observer, &lost] {
        daemon.wait_for("peer up");
    }
    let (next_did, lost_did) = (did(&net.next), did(&net.lost));
    wait_until("the lost device linked to the observer", || {
        carrierctl(&["peers", "--socket", &socket(&net.observer)]).contains(&lost_did)
    });

    // Every daemon knows the sequencer from its witnessed checkpoint.
    let sequencer_did = did(&net.sequencer);
    for dir in [&net.submitter, &net.observer, &net.next] {
        wait_until("took the sequencer's witnessed checkpoint", || {
            status(dir)["ledger"]["checkpoint"]
                .as_str()
                .unwrap()
                .contains(&format!("carrier-sequencer {sequencer_did}"))
        });
    }
    // The witness goes down: no checkpoint past this one is taken.
    witness.kill();
    carrierctl(&[
        "ledger",
        "revoke",
        "--submit",
        "--socket",
        &socket(&net.submitter),
        "--key",
        &net.registrar(),
        &lost_did,
    ]);
    // The sequencer took it, and promised it at the next index, signed.
    submitter.wait_for("promised it");
    let pending = carrierctl(&["ledger", "pending", "--json", "--socket", &socket(&net.submitter)]);
    assert!(pending.contains(&format!("\"promised_index\":{BASE}")), "{pending}");
    // ... and is lost for good, its checkpoint never taken by anyone.
    sequencer.kill();
    assert_eq!(status(&net.submitter)["ledger"]["height"], BASE);
    let witness = net.start_witness(&next.addr);
    witness.wait_for("peer up");

    // Registrars hand sequencing to the next device.
    let asked = Instant::now();
    carrierctl(&[
        "ledger",
        "handover",
        "--submit",
        "--socket",
        &socket(&net.submitter),
        "--to",
        &next_did,
        "--key",
        &net.registrar(),
        "--log-key",
        net.next.join("next-log.key").to_str().unwrap(),
    ]);
    // Its first entry is where the revocation was promised: the submitter
    // shows the promise broken, and every daemon holds the evidence.
    submitter.wait_for("broke its promise");
    for dir in [&net.submitter, &net.observer, &net.next, &net.witness] {
        wait_until("held the broken promise", || broken_promises(dir) == 1);
    }
    println!("the broken promise on every daemon {} ms after the handover", asked.elapsed().as_millis());
    let printed = carrierctl(&["status", "--socket", &socket(&net.observer)]);
    assert!(printed.contains("BROKEN:"), "{printed}");

    // The evidence holds offline, by the ledger's log keys, old and new.
    let evidence = std::fs::read_dir(net.submitter.join("ledger"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("broken-promise-"))
        .expect("an evidence file");
    let checked = carrierctl(&[
        "ledger",
        "audit",
        "--broken-promise",
        evidence.to_str().unwrap(),
        "--socket",
        &socket(&net.observer),
    ]);
    assert!(checked.contains("evidence holds"), "{checked}");

    // The revocation is sent again and sequenced by the new sequencer; the
    // lost device is cut everywhere.
    for dir in [&net.submitter, &net.observer, &net.next] {
        wait_until("sequenced the revocation", || {
            carrierctl(&["ledger", "resolve", "--socket", &socket(dir), &lost_did]).contains("revoked at entry")
        });
        wait_until("cut the lost device", || !carrierctl(&["peers", "--socket", &socket(dir)]).contains(&lost_did));
    }
    wait_until("the new promise kept", || {
        let pending = carrierctl(&["ledger", "pending", "--json", "--socket", &socket(&net.submitter)]);
        !pending.contains("promised_index")
    });
    // A restart keeps the evidence.
    drop(observer);
    let observer = Daemon::start(&net.observer, Some(&next.addr));
    observer.wait_for("peer up");
    assert_eq!(broken_promises(&net.observer), 1);
}
