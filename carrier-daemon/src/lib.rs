//! The Carrier daemon, as a library its binaries (`carrierd`, `carrierctl`)
//! and tests share.
//!
//! - [`config`]: the TOML configuration.
//! - [`ledger`]: the embedded ledger on disk, and shared while running.
//! - [`link`]: QUIC links admitted by a Noise handshake bound to the ledger.
//! - [`overlay`]: the libp2p swarm (Kademlia and friends) over those links.
//! - [`paths`]: where the daemon keeps its files.

#![forbid(unsafe_code)]

pub mod config;
pub mod ledger;
pub mod link;
pub mod overlay;
pub mod paths;
