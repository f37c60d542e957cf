//! The daemon's side of the ledger: storage of the embedded ledger. The rules
//! themselves live in `carrier_proto::ledger`.

mod log_format;
mod store;

pub use store::{LOG_FILE, LedgerStore, StoreError};
