//! The daemon's side of the ledger: storage of the embedded ledger and the
//! shared, observable state the running daemon reads. The rules themselves
//! live in `carrier_proto::ledger`.

mod log_format;
mod shared;
mod store;

pub use shared::{LedgerUpdate, SharedLedger};
pub use store::{LOG_FILE, LedgerStore, StoreError};
