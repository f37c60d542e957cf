//! The Carrier daemon, as a library its binaries (`carrierd`, `carrierctl`)
//! and tests share.
//!
//! - [`apps`]: the app socket local apps message and stream through.
//! - [`config`]: the TOML configuration.
//! - [`control`]: the control socket `carrierctl` talks to.
//! - [`daemon`]: a running daemon, started and stopped in order.
//! - [`ledger`]: the embedded ledger on disk, and shared while running.
//! - [`framed`]: length-prefixed prost frames over byte streams.
//! - [`link`]: QUIC links admitted by a Noise handshake bound to the ledger.
//! - [`messaging`]: app messages and streams between daemons.
//! - [`overlay`]: the libp2p swarm (Kademlia and friends) over those links.
//! - [`notify`]: readiness notices to systemd.
//! - [`paths`]: where the daemon keeps its files.

#![forbid(unsafe_code)]

pub mod apps;
pub mod config;
pub mod control;
pub mod daemon;
pub mod framed;
pub mod ledger;
pub mod link;
pub mod messaging;
pub mod notify;
pub mod overlay;
pub mod paths;
