//! The Carrier daemon, as a library its binaries (`carrierd`, `carrierctl`)
//! and tests share.
//!
//! Layers, top to bottom; each imports only the layers below it (a test,
//! `tests/layers.rs`, holds the line):
//!
//! ```text
//!  daemon      start and stop order
//!  ipc/        app socket and control socket: the only code that sees a UnixStream
//!  delivery/   what apps get: sessions directory, receipts, the receiving rules, access
//!  protocols/  one module per network protocol on a Router: ledger_sync, messages, app_stream
//!  overlay/    the actor that owns the libp2p Swarm: transport, muxer, gate, Kademlia, peer cache
//!  link/       QUIC endpoints and the Noise admission driver, limits
//!  ledger/     trait Ledger + its embedded back-end, and the policy questions
//!  observe/    counters
//!  tasks, framed, config, paths, notify: owned tasks, the frame codec, settings, files, systemd
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod delivery;
pub mod framed;
pub mod ipc;
pub mod ledger;
pub mod link;
pub mod notify;
pub mod observe;
pub mod overlay;
pub mod paths;
pub mod protocols;
pub mod tasks;
