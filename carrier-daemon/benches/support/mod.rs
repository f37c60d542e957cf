//! Shared by the benchmarks: process measurements, daemon settings.

// Each benchmark uses some of these.
#![allow(dead_code)]

use std::path::Path;

use carrier_daemon::config::Config;
use carrier_daemon::ledger::LedgerStore;
use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::keystore;
use carrier_proto::ledger::{Entry, Op, Quotas, Sequencer};

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
        quotas: Quotas { max_requests_per_minute: u32::MAX, ..Quotas::default() },
    }
}
