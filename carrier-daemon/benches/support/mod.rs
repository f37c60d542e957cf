//! Shared by the benchmarks: process measurements, daemon settings.

// Each benchmark uses some of these.
#![allow(dead_code)]

use std::path::Path;

use carrier_daemon::config::Config;

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
