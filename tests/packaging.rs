//! The files that install Carrier as a system service: the systemd unit
//! passes `systemd-analyze verify`, the service's start-up steps work, and
//! the shell completions are generated.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../packaging/systemd/carrierd.service");

#[test]
fn systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("skipped: systemd-analyze is not installed (.ci/run installs it)");
        return;
    }
    // The unit names the installed binary; check it against the built one.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("carrierd.service");
    std::fs::write(&unit, UNIT.replace("/usr/bin/carrierd", env!("CARGO_BIN_EXE_carrierd"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    assert!(!stderr.contains("carrierd.service:"), "systemd-analyze warned:\n{stderr}");
}

#[test]
fn unit_runs_the_daemon_as_systemd_expects() {
    for line in [
        "Type=notify",
        "User=carrier",
        "ExecStart=/usr/bin/carrierd run --system",
        "StateDirectory=carrier",
        "RuntimeDirectory=carrier",
        "ConfigurationDirectory=carrier",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "unit lacks {line:?}");
    }
}

#[test]
fn first_start_makes_the_identity_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let init = |data: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_carrierd"))
            .args(["init", "--if-missing", "--data-dir", data.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = init(&data);
    assert!(first.contains("created device identity"), "{first}");
    let did = first.lines().find_map(|l| l.strip_prefix("did:  ")).unwrap().to_owned();
    let second = init(&data);
    assert!(second.contains("exists") && second.contains(&did), "{second}");
}

#[test]
fn completions_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_carrierctl")).args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["status", "peers", "routes", "ledger", "publish", "watch"] {
            assert!(script.contains(command), "{shell} completion lacks {command}");
        }
    }
}
