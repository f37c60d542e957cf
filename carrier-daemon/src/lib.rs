//! The Carrier daemon, as a library its binaries (`carrierd`, `carrierctl`)
//! and tests share.
//!
//! - [`config`]: the TOML configuration.
//! - [`control`]: the control socket `carrierctl` talks to.
//! - [`daemon`]: a running daemon, started and stopped in order.
//! - [`ledger`]: the embedded ledger on disk, and shared while running.
//! - [`link`]: QUIC links admitted by a Noise handshake bound to the ledger.
//! - [`overlay`]: the libp2p swarm (Kademlia and friends) over those links.
//! - [`notify`]: readiness notices to systemd.
//! - [`paths`]: where the daemon keeps its files.

#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod daemon;
pub mod ledger;
pub mod link;
pub mod notify;
pub mod overlay;
pub mod paths;
