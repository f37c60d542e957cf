//! A sequencer that forks the log is caught by the network, not by one
//! node: two halves of six daemons each hold one of two histories the log
//! key signed; once one link joins the halves, every daemon holds the
//! evidence (checked with the log key alone), freezes its ledger, says so,
//! and takes nothing more, across a restart too. A larger checkpoint is
//! taken only with the proof that it extends ours.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use carrier_daemon::ipc::control::Connection;
use carrier_daemon::ledger::LedgerStore;
use carrier_proto::pb::{self, control_request::Request, control_response::Response};
use support::{Daemon, WAIT, Watcher, carrierctl, carrierd, mesh, provision, socket, status};

/// Genesis and six devices.
const BASE: u64 = 7;

fn height(dir: &Path) -> u64 {
    status(dir)["ledger"]["height"].as_u64().unwrap()
}

/// A copy of the admin's ledger directory (its log key too): one branch.
fn branch(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["ledger.log", "checkpoint", "log.key"] {
        std::fs::copy(root.join("admin/ledger").join(file), dir.join(file)).unwrap();
    }
    dir
}

/// Registers a fresh device in the ledger directory `ledger`, sequenced
/// there (a new checkpoint signed by the log key).
fn register_in(root: &Path, ledger: &Path, name: &str) {
    let dir = root.join(name);
    assert!(carrierd(&["init", "--data-dir", dir.to_str().unwrap()]).output().unwrap().status.success());
    let key = root.join("admin/registrar.key");
    carrierctl(&[
        "ledger",
        "register-device",
        "--ledger",
        ledger.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        dir.join("device.card").to_str().unwrap(),
    ]);
}

/// Puts the ledger of `branch` (log and checkpoint) in a device's data dir.
fn hold(branch: &Path, device: &Path) {
    support::copy_ledger(branch, &device.join("ledger"));
}

fn evidence_files(device: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(device.join("ledger"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("equivocation-"))
        .collect()
}

#[test]
fn a_fork_shown_to_two_halves_freezes_all_six_daemons() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let dirs = provision(root, 6);
    let (a, b) = (branch(root, "branch-a"), branch(root, "branch-b"));
    register_in(root, &a, "x");
    register_in(root, &b, "y");
    for (i, dir) in dirs.iter().enumerate() {
        hold(if i < 3 { &a } else { &b }, dir);
    }
    // Two halves, each meshed on its own: nobody has seen both histories.
    let mut daemons = mesh(&dirs[..3]);
    daemons.extend(mesh(&dirs[3..]));
    assert!(dirs.iter().all(|dir| height(dir) == BASE + 1 && status(dir)["alarm"] == ""));
    let watcher = Watcher::start(&socket(&dirs[5]));

    // One link between the halves.
    let bridged = Instant::now();
    let did3 = status(&dirs[3])["did"].as_str().unwrap().to_owned();
    carrierctl(&["connect", "--socket", &socket(&dirs[0]), &did3, "--addr", &daemons[3].addr]);
    for dir in &dirs {
        let deadline = Instant::now() + WAIT;
        while !status(dir)["ledger"]["frozen"].as_bool().unwrap() {
            assert!(Instant::now() < deadline, "{} never held the evidence", dir.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let spread = bridged.elapsed();
    println!("evidence on all six daemons {} ms after the halves were linked", spread.as_millis());
    assert!(spread < Duration::from_secs(5), "evidence took {spread:?}");
    watcher.wait_event("frozen", "");

    // Each daemon kept the evidence; it holds offline, with the log key alone.
    for dir in &dirs {
        let files = evidence_files(dir);
        assert_eq!(files.len(), 1, "{}", dir.display());
        let checked = carrierctl(&[
            "ledger",
            "audit",
            "--ledger",
            root.join("admin/ledger").to_str().unwrap(),
            "--evidence",
            files[0].to_str().unwrap(),
        ]);
        assert!(checked.contains("evidence holds"), "{checked}");
    }
    // Evidence altered by one byte does not hold.
    let forged = root.join("forged.txt");
    let text = std::fs::read_to_string(&evidence_files(&dirs[0])[0]).unwrap();
    let line = text.lines().find(|l| l.starts_with("carrier-evidence:")).unwrap();
    let mut chars: Vec<char> = line.chars().collect();
    let last = chars.len() - 10;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    std::fs::write(&forged, chars.into_iter().collect::<String>()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_carrierctl"))
        .args(["ledger", "audit", "--ledger", root.join("admin/ledger").to_str().unwrap(), "--evidence"])
        .arg(&forged)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not hold"), "{out:?}");

    // Frozen: branch A, extended, is taken by nobody, not even A's half.
    register_in(root, &a, "z");
    for dir in &dirs {
        let _ = Command::new(env!("CARGO_BIN_EXE_carrierctl"))
            .args(["ledger", "publish", "--ledger", a.to_str().unwrap(), "--socket", &socket(dir)])
            .output()
            .unwrap();
        assert_eq!(height(dir), BASE + 1, "{} took entries past the fork", dir.display());
    }
    // Links go on.
    assert!(status(&dirs[0])["peers"].as_u64().unwrap() >= 2);

    // A restart does not forget.
    let restarted = daemons.pop().unwrap();
    restarted.terminate();
    let _again = Daemon::start(&dirs[5], Some(&daemons[3].addr));
    let after = status(&dirs[5]);
    assert!(after["ledger"]["frozen"].as_bool().unwrap(), "{after}");
    assert!(after["alarm"].as_str().unwrap().contains("before the restart"), "{after}");
}

/// Sends one publish request to the daemon at `dir` with whatever proofs it
/// is given; returns the daemon's answer.
fn publish_raw(dir: &Path, request: pb::PublishRequest) -> Response {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let stream = tokio::net::UnixStream::connect(socket(dir)).await.unwrap();
        let mut connection = Connection::new(stream);
        let request = pb::ControlRequest { id: 1, request: Some(Request::Publish(request)) };
        connection.write(&request).await.unwrap();
        let reply: pb::ControlResponse = connection.read().await.unwrap().unwrap();
        reply.response.unwrap()
    })
}

#[test]
fn a_larger_checkpoint_is_taken_only_with_the_proof_that_it_extends_ours() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let dirs = provision(root, 1);
    let _daemon = Daemon::start(&dirs[0], None);
    let ahead = branch(root, "ahead");
    register_in(root, &ahead, "x");
    register_in(root, &ahead, "y");
    let base = height(&dirs[0]);
    let entries = LedgerStore::read_all(&ahead).unwrap();
    let state = carrier_proto::ledger::replay(&entries).unwrap();
    let checkpoint = std::fs::read(ahead.join("checkpoint")).unwrap();
    let request = |prefix_root: Vec<u8>, prefix_proof: Vec<Vec<u8>>| pb::PublishRequest {
        entries: entries[base as usize..].to_vec(),
        from: base,
        checkpoint: checkpoint.clone(),
        proof: Vec::new(),
        refused: Vec::new(),
        prefix_root,
        prefix_proof,
    };
    let root_at = state.tree().root_at(base).unwrap().0.to_vec();
    let proof: Vec<Vec<u8>> =
        state.tree().consistency_proof(base, base + 2).unwrap().iter().map(|h| h.0.to_vec()).collect();

    // No proof, or a proof from another root: refused, nothing taken.
    let refused = publish_raw(&dirs[0], request(Vec::new(), Vec::new()));
    assert!(matches!(&refused, Response::Error(e) if e.contains("did not prove")), "{refused:?}");
    let mut wrong = proof.clone();
    wrong[0][0] ^= 1;
    let refused = publish_raw(&dirs[0], request(root_at.clone(), wrong));
    assert!(matches!(refused, Response::Error(_)), "{refused:?}");
    assert_eq!(height(&dirs[0]), base);

    // With the proof: taken.
    let taken = publish_raw(&dirs[0], request(root_at, proof));
    assert!(matches!(taken, Response::Publish(ref p) if p.appended == 2), "{taken:?}");
    assert_eq!(height(&dirs[0]), base + 2);
}
