//! The Carrier daemon, as a library its binaries (`carrierd`, `carrierctl`)
//! and tests share.
//!
//! - [`ledger`]: the embedded ledger on disk.
//! - [`paths`]: where the daemon keeps its files.

#![forbid(unsafe_code)]

pub mod ledger;
pub mod paths;
