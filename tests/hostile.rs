//! A registered attacker against real daemons: someone who already holds a
//! valid key (an app's, a rotated-out device key) and uses the stock
//! `carrierd` (or a small hostile client) to get more than that key allows.
//! Each test tries to break one rule of the threat model.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use carrier_proto::identity::keyfile::MAGIC;
use carrier_proto::pb;
use prost::Message;
use support::{Daemon, carrierctl, provision_with_apps, socket};

/// Writes `key`'s secrets to `to` as a key file of kind `device`: what an
/// app's owner gets by editing one field of the app's key file.
fn rewrite_as_device_key(key: &Path, to: &Path) {
    let bytes = std::fs::read(key).unwrap();
    let mut file = pb::KeyFile::decode(&bytes[MAGIC.len()..]).unwrap();
    assert_eq!(file.kind, pb::IdentityKind::App as i32);
    file.kind = pb::IdentityKind::Device as i32;
    std::fs::write(to, [MAGIC.as_slice(), &file.encode_to_vec()].concat()).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn an_app_key_posing_as_a_device_gets_no_link() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 1, &[1]);
    let device = Daemon::start(&dirs[0], None);
    // The app's owner runs a stock daemon on the app's keys.
    let attacker = root.path().join("attacker");
    std::fs::create_dir_all(attacker.join("ledger")).unwrap();
    std::fs::copy(dirs[0].join("ledger/ledger.log"), attacker.join("ledger/ledger.log")).unwrap();
    rewrite_as_device_key(&apps[0][0].join("app.key"), &attacker.join("device.key"));
    let _posing = Daemon::start(&attacker, Some(&device.addr));
    let refused = device.wait_for("refused peer");
    assert!(refused.contains("not a device"), "{refused}");
    let sock = socket(&dirs[0]);
    let peers: serde_json::Value = serde_json::from_str(&carrierctl(&["peers", "--socket", &sock, "--json"])).unwrap();
    assert_eq!(peers.as_array().map(Vec::len), Some(0), "{peers}");
    let counters: serde_json::Value =
        serde_json::from_str(&carrierctl(&["counters", "--socket", &sock, "--json"])).unwrap();
    assert!(counters["refused_not_a_device"].as_u64() >= Some(1), "{counters}");
}
