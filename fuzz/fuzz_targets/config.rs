//! The daemon's configuration file (`carrier_daemon::config::Config::parse`)
//! on any text: a configuration it takes yields its derived settings
//! (bootstrap addresses, messaging, reservation policy, relay and link
//! limits) without panicking, within the bounds `parse` promises. Invalid
//! UTF-8 is skipped (the daemon reads the file as a string and stops on
//! that first).

#![no_main]

use std::path::Path;

use carrier_daemon::config::{Config, MAX_MESSAGE_LIMIT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::parse(Path::new("fuzz.toml"), text) else { return };
    let addrs = config.bootstrap_addrs().expect("parse checked the bootstrap addresses");
    assert_eq!(addrs.len(), config.bootstrap.len());
    let messaging = config.messaging_config(None);
    assert!((1..=MAX_MESSAGE_LIMIT).contains(&messaging.max_message));
    assert!(messaging.max_outbox_bytes >= messaging.max_message);
    assert!(messaging.max_inbox_bytes >= messaging.max_message);
    config.reservation_policy().expect("parse checked the reservation policy");
    let link = config.link_limits();
    assert!(!link.handshake_timeout.is_zero());
    let _ = config.relay_limits();
    let _ = format!("{config:?}");
});
