//! What can go wrong in the SDK, one enum for the whole crate.

use std::path::PathBuf;

use carrier_proto::keystore::KeyStoreError;

use crate::message::Failure;

/// What went wrong in the SDK. A message that did not arrive is not an
/// error: it is a [`Receipt::Failed`](crate::Receipt::Failed).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The app's key file could not be created or loaded.
    #[error("app identity: {0}")]
    Identity(#[from] KeyStoreError),
    /// No data directory could be found for the app.
    #[error("cannot find a data directory for app {0:?}; pass one explicitly")]
    NoDataDir(String),
    /// The daemon's app socket is not there or refuses connections.
    #[error(
        "cannot reach the Carrier daemon at {path}: {source}; is carrierd running? (set CARRIER_APP_SOCKET to its app.sock)"
    )]
    Connect {
        /// The socket tried.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon did not accept this app.
    #[error("the daemon refused this app: {0}")]
    Refused(String),
    /// The connection to the daemon failed or closed.
    #[error("the connection to the daemon was lost: {0}")]
    Disconnected(String),
    /// The daemon sent something this SDK does not understand.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// A payload over the daemon's message limit (checked before sending).
    #[error("a message of {len} bytes is over the daemon's limit of {max}; use a stream for bulk data")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The daemon's limit.
        max: usize,
    },
    /// A stream could not be opened or taken.
    #[error("stream failed: {0}")]
    Stream(Failure),
    /// The daemon rejected a request (an allow list, a service name).
    #[error("the daemon rejected the request: {0}")]
    Rejected(String),
    /// An argument the SDK cannot use.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl From<std::io::Error> for SdkError {
    fn from(error: std::io::Error) -> Self {
        Self::Disconnected(error.to_string())
    }
}
