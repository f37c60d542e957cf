//! Witnessed checkpoints with real daemons: a genesis names three witness
//! keys and asks two cosignatures of every checkpoint. A checkpoint one
//! witness cosigned is not taken by any daemon; once a second witness
//! cosigns it, every daemon takes it. The cosignatures are checked here by
//! a verifier written from the C2SP texts (signed-note, tlog-cosignature),
//! not with the daemon's code.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{
    Daemon, carrierctl, carrierd, copy_ledger, new_device, new_device_with_role, socket, status, wait_until,
};

/// Genesis and five devices.
const BASE: u64 = 6;

/// A C2SP cosignature/v1 verifier, from c2sp.org/tlog-cosignature and
/// c2sp.org/signed-note: the verifier key is `name+hex(key id)+base64(0x04
/// || Ed25519 key)`, the key id is SHA-256(name || "\n" || 0x04 || key)[:4],
/// a signature line is `— name base64(key id || u64 BE time || signature)`,
/// and the signed message is `cosignature/v1\ntime <time>\n` followed by the
/// note's text. Returns the time of `vkey`'s valid cosignature on `note`.
fn c2sp_cosignature_time(note: &str, vkey: &str) -> Option<u64> {
    let mut parts = vkey.splitn(3, '+');
    let (name, id_hex, key) = (parts.next()?, parts.next()?, parts.next()?);
    let key = BASE64.decode(key).ok()?;
    let (&[0x04], key) = key.split_at_checked(1)? else { return None };
    let key: [u8; 32] = key.try_into().ok()?;
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n\x04");
    hasher.update(key);
    let id: [u8; 4] = hasher.finalize()[..4].try_into().ok()?;
    assert_eq!(hex(&id), id_hex, "the vkey's key id is SHA-256(name, 0x0A, 0x04, key)[:4]");
    let key = VerifyingKey::from_bytes(&key).ok()?;
    // The text ends at the first blank line; signature lines follow.
    let split = note.find("\n\n")? + 1;
    let (text, signatures) = (&note[..split], &note[split + 1..]);
    signatures.lines().find_map(|line| {
        let (line_name, sig) = line.strip_prefix("\u{2014} ")?.split_once(' ')?;
        let sig = BASE64.decode(sig).ok()?;
        if line_name != name || sig.len() != 4 + 8 + 64 || sig[..4] != id {
            return None;
        }
        let time = u64::from_be_bytes(sig[4..12].try_into().ok()?);
        let message = format!("cosignature/v1\ntime {time}\n{text}");
        let signature = Signature::from_slice(&sig[12..]).ok()?;
        key.verify(message.as_bytes(), &signature).ok().map(|()| time)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn height(dir: &Path) -> u64 {
    status(dir)["ledger"]["height"].as_u64().unwrap()
}

fn counter(dir: &Path, name: &str) -> u64 {
    let counters: Value = serde_json::from_str(&carrierctl(&["counters", "--json", "--socket", &socket(dir)])).unwrap();
    counters[name].as_u64().unwrap_or(0)
}

/// A witnessed network: the admin's keys and ledger in `root/admin`, a
/// sequencer, three devices with role `witness` (each holding one of the
/// genesis's witness keys), and a plain device.
struct Network {
    sequencer: PathBuf,
    witnesses: Vec<PathBuf>,
    plain: PathBuf,
    vkeys: Vec<String>,
}

impl Network {
    fn provision(root: &Path, quorum: usize) -> Self {
        let admin = root.join("admin");
        let (key, ledger) = (admin.join("registrar.key"), admin.join("ledger"));
        carrierctl(&["keygen", "--kind", "registrar", "--out", key.to_str().unwrap()]);
        let vkeys: Vec<String> = (0..3)
            .map(|i| {
                let out = admin.join(format!("witness{i}.key"));
                let printed = carrierctl(&["keygen", "--kind", "witness", "--out", out.to_str().unwrap()]);
                printed.lines().find_map(|l| l.strip_prefix("vkey:")).unwrap().trim().to_owned()
            })
            .collect();
        let mut genesis = vec!["ledger", "genesis", "--ledger", ledger.to_str().unwrap(), "--network", "t"];
        genesis.extend(["--key", key.to_str().unwrap()]);
        for vkey in &vkeys {
            genesis.extend(["--witness", vkey]);
        }
        let quorum = quorum.to_string();
        genesis.extend(["--witness-quorum", &quorum]);
        carrierctl(&genesis);
        let sequencer = new_device(root, &ledger, "sequencer");
        let witnesses: Vec<PathBuf> =
            (0..3).map(|i| new_device_with_role(root, &ledger, &format!("witness{i}"), Some("witness"))).collect();
        let plain = new_device(root, &ledger, "plain");
        for dir in witnesses.iter().chain([&sequencer, &plain]) {
            copy_ledger(&ledger, &dir.join("ledger"));
        }
        std::fs::copy(ledger.join("log.key"), sequencer.join("log.key")).unwrap();
        for (i, dir) in witnesses.iter().enumerate() {
            std::fs::copy(admin.join(format!("witness{i}.key")), dir.join("witness.key")).unwrap();
        }
        Self { sequencer, witnesses, plain, vkeys }
    }

    fn start_sequencer(&self) -> Daemon {
        let extra = format!("[ledger]\nsequencer_key = {:?}\n", self.sequencer.join("log.key"));
        Daemon::start_with(&self.sequencer, None, &extra)
    }

    /// Starts witness `i`'s daemon, acting as a witness if `witnessing`.
    fn start_witness(&self, i: usize, bootstrap: &str, witnessing: bool) -> Daemon {
        let dir = &self.witnesses[i];
        let extra =
            if witnessing { format!("[ledger]\nwitness_key = {:?}\n", dir.join("witness.key")) } else { String::new() };
        let daemon = Daemon::start_with(dir, Some(bootstrap), &extra);
        daemon.wait_for("peer up");
        daemon
    }
}

/// k = 2 of 3: with one cosignature the new checkpoint is refused by every
/// other daemon; with two it is taken by all, its cosignatures valid by the
/// C2SP texts.
#[test]
fn a_checkpoint_needs_its_quorum_of_witness_cosignatures() {
    let root = tempfile::tempdir().unwrap();
    let net = Network::provision(root.path(), 2);
    let sequencer = net.start_sequencer();
    let witness0 = net.start_witness(0, &sequencer.addr, true);
    let witness1 = net.start_witness(1, &sequencer.addr, false);
    let _witness2 = net.start_witness(2, &sequencer.addr, false);
    let plain = Daemon::start(&net.plain, Some(&sequencer.addr));
    plain.wait_for("peer up");
    let followers = [&net.witnesses[0], &net.witnesses[1], &net.witnesses[2], &net.plain];
    assert!(followers.iter().all(|dir| height(dir) == BASE));
    let refused_before = counter(&net.plain, "ledger_checkpoints_refused");

    // A new registration, sequenced: one witness is there to cosign it.
    let newcomer = root.path().join("laptop");
    assert!(carrierd(&["init", "--data-dir", newcomer.to_str().unwrap()]).output().unwrap().status.success());
    let registrar = root.path().join("admin/registrar.key");
    carrierctl(&[
        "ledger",
        "register-device",
        "--submit",
        "--wait",
        "--socket",
        &socket(&net.sequencer),
        "--key",
        registrar.to_str().unwrap(),
        newcomer.join("device.card").to_str().unwrap(),
    ]);
    sequencer.wait_for("witnesses cosigned our checkpoint");
    let note = carrierctl(&["ledger", "checkpoint", "--socket", &socket(&net.sequencer)]);
    assert!(note.contains(&format!("\n{}\n", BASE + 1)), "{note}");
    assert!(c2sp_cosignature_time(&note, &net.vkeys[0]).is_some(), "witness 0 cosigned:\n{note}");
    assert!(c2sp_cosignature_time(&note, &net.vkeys[1]).is_none());

    // The plain daemon was told of the checkpoint unwitnessed, then with one
    // cosignature, and refused both: nobody took it.
    wait_until("refused the checkpoint twice", || {
        counter(&net.plain, "ledger_checkpoints_refused") >= refused_before + 2
    });
    assert!(followers.iter().all(|dir| height(dir) == BASE), "a checkpoint with one cosignature was taken");

    // A second witness comes up: the sequencer asks again, and everyone takes it.
    witness1.terminate();
    let _witness1 = net.start_witness(1, &sequencer.addr, true);
    for dir in followers {
        wait_until("took the witnessed checkpoint", || height(dir) == BASE + 1);
        let held = status(dir)["ledger"]["checkpoint"].as_str().unwrap().to_owned();
        let times: Vec<Option<u64>> = net.vkeys.iter().map(|vkey| c2sp_cosignature_time(&held, vkey)).collect();
        assert!(times[0].is_some() && times[1].is_some(), "{}: {held}", dir.display());
        assert!(times[2].is_none());
    }
    drop(witness0);
}

/// A quiet log stays fresh: the sequencer dates its checkpoint anew, the
/// witness cosigns the new date, and daemons take it. Once the sequencer is
/// gone, a daemon's checkpoint grows old and it says so.
#[test]
fn a_quiet_log_is_dated_anew_and_a_silent_one_is_called_stale() {
    let root = tempfile::tempdir().unwrap();
    let net = Network::provision(root.path(), 1);
    let extra = format!("[ledger]\nsequencer_key = {:?}\nfresh_checkpoint_s = 1\n", net.sequencer.join("log.key"));
    let sequencer = Daemon::start_with(&net.sequencer, None, &extra);
    let _witness = net.start_witness(0, &sequencer.addr, true);
    let plain = Daemon::start_with(&net.plain, Some(&sequencer.addr), "[ledger]\nstale_checkpoint_s = 3\n");
    plain.wait_for("peer up");

    // Two cosignature times seen at the plain daemon: the date moves on.
    let cosigned_at = || {
        let note = status(&net.plain)["ledger"]["checkpoint"].as_str().unwrap().to_owned();
        c2sp_cosignature_time(&note, &net.vkeys[0])
    };
    wait_until("took a witnessed checkpoint", || cosigned_at().is_some());
    let first = cosigned_at().unwrap();
    wait_until("took a checkpoint dated anew", || cosigned_at().is_some_and(|t| t > first));
    let fresh = status(&net.plain);
    assert!(!fresh["ledger"]["checkpoint_stale"].as_bool().unwrap(), "{fresh}");
    assert!(fresh["ledger"]["checkpoint_age_s"].as_u64().unwrap() <= 2, "{fresh}");

    // The sequencer dies: within the stale time, the daemon says so.
    sequencer.kill();
    plain.wait_for("no fresh checkpoint");
    let stale = status(&net.plain);
    assert!(stale["ledger"]["checkpoint_stale"].as_bool().unwrap(), "{stale}");
    assert!(counter(&net.plain, "ledger_checkpoint_stale") >= 1);
}

/// Registrars replace the witnesses: the genesis asks two of witnesses 0
/// and 1 (witness 2 is named but not asked for); a change of witnesses
/// names witness 2 alone, quorum one. Once it is in the log, the old
/// witnesses stop and checkpoints witness 2 cosigns alone are taken by
/// every daemon, one that was away through the change included.
#[test]
fn registrars_replace_the_witnesses_and_every_daemon_follows() {
    let root = tempfile::tempdir().unwrap();
    let net = Network::provision(root.path(), 2);
    let sequencer = net.start_sequencer();
    let witness0 = net.start_witness(0, &sequencer.addr, true);
    let witness1 = net.start_witness(1, &sequencer.addr, true);
    let witness2 = net.start_witness(2, &sequencer.addr, true);
    let plain = Daemon::start(&net.plain, Some(&sequencer.addr));
    plain.wait_for("peer up");
    let registrar = root.path().join("admin/registrar.key");
    let registrar = registrar.to_str().unwrap();
    // The plain device goes away before the change.
    drop(plain);

    let out = carrierctl(&[
        "ledger",
        "witnesses",
        "--submit",
        "--wait",
        "--socket",
        &socket(&net.witnesses[2]),
        "--witness",
        &net.vkeys[2],
        "--witness-quorum",
        "1",
        "--key",
        registrar,
    ]);
    assert!(out.contains("sequenced"), "{out}");
    for dir in &net.witnesses {
        wait_until("took the change of witnesses", || height(dir) == BASE + 1);
    }
    // A malformed change is refused by name, before it goes anywhere.
    let refused = Command::new(env!("CARGO_BIN_EXE_carrierctl"))
        .args(["ledger", "witnesses", "--submit", "--socket", &socket(&net.sequencer)])
        .args(["--witness", &net.vkeys[2], "--witness-quorum", "2", "--key", registrar])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("can never be met"));

    // The old witnesses go; witness 2 alone cosigns the next checkpoint.
    witness0.kill();
    witness1.kill();
    let newcomer = root.path().join("laptop");
    assert!(carrierd(&["init", "--data-dir", newcomer.to_str().unwrap()]).output().unwrap().status.success());
    carrierctl(&[
        "ledger",
        "register-device",
        "--submit",
        "--socket",
        &socket(&net.witnesses[2]),
        "--key",
        registrar,
        newcomer.join("device.card").to_str().unwrap(),
    ]);
    wait_until("witness 2 took the registration", || height(&net.witnesses[2]) == BASE + 2);
    let held = status(&net.witnesses[2])["ledger"]["checkpoint"].as_str().unwrap().to_owned();
    assert!(c2sp_cosignature_time(&held, &net.vkeys[2]).is_some(), "{held}");
    assert!(c2sp_cosignature_time(&held, &net.vkeys[0]).is_none(), "{held}");

    // The device that was away returns: it takes the change from a peer's
    // log, then the checkpoint witness 2 alone cosigned.
    let _back = Daemon::start(&net.plain, Some(&witness2.addr));
    wait_until("the returning daemon followed the change", || height(&net.plain) == BASE + 2);
    drop(sequencer);
}
