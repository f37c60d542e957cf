//! Shared by the benchmarks: process measurements, daemon settings.

// Each benchmark uses some of these.
#![allow(dead_code)]

use std::path::Path;

use carrier_daemon::config::Config;
use carrier_daemon::ledger::LedgerStore;
use carrier_daemon::paths::DataDir;
use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::keystore;
use carrier_proto::ledger::LedgerState;
use carrier_proto::ledger::{Entry, Op, Sequencer};
use carrier_sdk::AppIdentity;

/// carrierd's allocator, so that daemons run in a benchmark process as
/// they do in carrierd.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Settings for an in-process benchmark daemon: loopback, its runtime
/// directory `root/name`, quiet logs.
pub(crate) fn config(root: &Path, name: &str, bootstrap: Vec<String>) -> Config {
    let text = format!("listen = \"127.0.0.1:0\"\nruntime_dir = {:?}\n", root.join(name));
    let mut config = Config::parse(Path::new("bench.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    config.bootstrap = bootstrap;
    config.log.level = "warn".into();
    config
}

/// Resident memory of this process, in KiB (0 where /proc is missing).
pub(crate) fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Writes the ledger of `entries` (the genesis first, naming `log`'s key)
/// into each of `dirs`, sequenced and checkpointed with `log`.
pub(crate) fn store_ledgers(dirs: &[std::path::PathBuf], entries: &[Entry], log: &Path) {
    for dir in dirs {
        let mut sequencer = Sequencer::new(keystore::load_kind(log, IdentityKind::Log).unwrap(), None);
        let mut store = LedgerStore::create(dir, entries[0].clone(), &mut sequencer).unwrap();
        let sequenced = store.sequence(&mut sequencer, entries[1..].to_vec(), 1 << 41).unwrap();
        assert!(sequenced.iter().all(Result::is_ok), "{sequenced:?}");
    }
}

/// A genesis for a benchmark network whose log key is written to `log`.
pub(crate) fn genesis(registrar: &Identity, log: &Path) -> Op {
    let key = Identity::generate(IdentityKind::Log);
    keystore::create(log, &key).unwrap();
    Op::Genesis {
        network: "bench".into(),
        registrars: vec![registrar.signing_key()],
        log_key: key.signing_key(),
        quotas: carrier_proto::testing::TestNetwork::unlimited(),
        witnesses: Default::default(),
    }
}

/// Two devices with one app each, on disk as `carrierd` would keep them.
pub(crate) fn provision(root: &Path) -> [(DataDir, std::path::PathBuf); 2] {
    let mut devices = provision_n(root, 2);
    [devices.remove(0), devices.remove(0)]
}

/// `n` devices with one app each, on disk as `carrierd` would keep them.
pub(crate) fn provision_n(root: &Path, n: usize) -> Vec<(DataDir, std::path::PathBuf)> {
    let registrar = Identity::generate(IdentityKind::Registrar);
    let mut ledger = LedgerState::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut append = |ledger: &mut LedgerState, op: Op, signer: &Identity| {
        let entry = ledger.next_entry(op, entries.len() as u64 + 1, signer);
        ledger.append(entry.clone()).unwrap();
        entries.push(entry);
    };
    let log = root.join("log.key");
    append(&mut ledger, genesis(&registrar, &log), &registrar);
    let mut out = Vec::new();
    for i in 0..n {
        let device = Identity::generate(IdentityKind::Device);
        let data = DataDir::new(root.join(format!("device{i}")));
        std::fs::create_dir_all(data.root()).unwrap();
        keystore::create(&data.device_key(), &device).unwrap();
        append(
            &mut ledger,
            Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] },
            &registrar,
        );
        let app_dir = root.join(format!("app{i}"));
        let app = AppIdentity::load_or_create(&app_dir).unwrap();
        let keys = keystore::load(app.key_file()).unwrap().public_keys();
        let app_identity = keystore::load(app.key_file()).unwrap();
        let consent = carrier_proto::ledger::Consent::sign(&app_identity, &device.did(), &ledger.network().unwrap().id);
        let name = format!("app{i}");
        let register = Op::RegisterApp { did: app.did(), keys, device: device.did(), name, consent };
        append(&mut ledger, register, &device);
        out.push((data, app_dir));
    }
    let dirs: Vec<_> = out.iter().map(|(data, _)| data.ledger()).collect();
    store_ledgers(&dirs, &entries, &log);
    out
}
