//! A running daemon: identity, ledger, links and overlay, started in order
//! and stopped in the reverse order.
//!
//! ```text
//!  start: config → identity (data dir) → ledger (verified) → overlay (listen, join)
//!         → messaging → app socket, control socket (runtime dir)
//!  stop:  close every link with the shutdown code → wait until sent → exit
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::{Did, IdentityKind};
use carrier_proto::keystore::{self, KeyStoreError};
use libp2p::Multiaddr;

use crate::apps;
use crate::config::Config;
use crate::control;
use crate::ledger::{LedgerStore, SharedLedger, StoreError};
use crate::link::LinkContext;
use crate::messaging::Messaging;
use crate::overlay::{Overlay, OverlayConfig, OverlayError};
use crate::paths::{APP_SOCKET, CONTROL_SOCKET, DataDir};

/// How long shutdown waits for peers to be told.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the daemon could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The device has no identity yet.
    #[error("no device identity at {0}; create one with `carrierd init`")]
    NoIdentity(PathBuf),
    /// The key file is unusable.
    #[error(transparent)]
    Identity(#[from] KeyStoreError),
    /// The ledger is missing or does not verify.
    #[error(transparent)]
    Ledger(#[from] StoreError),
    /// The configuration's bootstrap list is unusable.
    #[error("bootstrap[{0}]: {1}")]
    Bootstrap(usize, &'static str),
    /// The overlay could not listen.
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// The control socket or the app socket could not be made.
    #[error("cannot create the socket {path}: {source}")]
    Socket {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A started daemon.
pub struct Daemon {
    did: Did,
    overlay: Overlay,
    ledger: Arc<SharedLedger>,
    messaging: Arc<Messaging>,
}

impl Daemon {
    /// Starts everything `config` describes, with files in `data_dir` and
    /// the control socket in `runtime_dir`.
    pub async fn start(config: &Config, data_dir: DataDir, runtime_dir: &Path) -> Result<Self, StartError> {
        let key_path = data_dir.device_key();
        let identity = match keystore::load_kind(&key_path, IdentityKind::Device) {
            Err(KeyStoreError::Missing(path)) => return Err(StartError::NoIdentity(path)),
            other => other?,
        };
        let store = LedgerStore::open(&data_dir.ledger())?;
        // Our DID is whatever DID the ledger has our current key under (it
        // stays the DID of our first key across rotations).
        let registered = store.state().did_of_key(&identity.signing_key());
        let did = registered.unwrap_or_else(|| identity.did());
        if registered.is_none() {
            tracing::warn!(%did, "this device is not on the ledger yet; peers will refuse its links until it is registered");
        }
        let ledger = Arc::new(SharedLedger::with_store(store));
        let ctx = Arc::new(LinkContext::new(identity, did, Arc::clone(&ledger), config.link_limits()));
        let bootstrap: Vec<Multiaddr> = config.bootstrap_addrs().map_err(|(i, why)| StartError::Bootstrap(i, why))?;
        let overlay_config = OverlayConfig {
            listen: config.listen,
            bootstrap,
            max_links: config.limits.max_links,
            peer_cache: Some(data_dir.peer_cache()),
            ..OverlayConfig::default()
        };
        let (overlay, _events) = Overlay::start(Arc::clone(&ctx), overlay_config).await?;
        let messaging = Messaging::start(Arc::clone(&ctx), overlay.clone(), config.messaging_config());
        let app_socket = runtime_dir.join(APP_SOCKET);
        let app_listener =
            apps::bind(&app_socket).map_err(|source| StartError::Socket { path: app_socket.clone(), source })?;
        tokio::spawn(apps::serve(app_listener, Arc::clone(&messaging)));
        let socket = runtime_dir.join(CONTROL_SOCKET);
        let listener = control::bind(&socket).map_err(|source| StartError::Socket { path: socket.clone(), source })?;
        let handler = Arc::new(control::Handler::new(overlay.clone(), ctx, Arc::clone(&messaging)));
        tokio::spawn(control::serve(listener, socket.clone(), handler));
        tracing::info!(%did, listen = %overlay.listen_addr(), control = %socket.display(), head = ledger.head().height, "carrierd started");
        Ok(Self { did, overlay, ledger, messaging })
    }

    /// Our DID.
    pub fn did(&self) -> Did {
        self.did
    }

    /// The overlay.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<SharedLedger> {
        &self.ledger
    }

    /// App messaging.
    pub fn messaging(&self) -> &Arc<Messaging> {
        &self.messaging
    }

    /// Stops: every link is closed with the shutdown code first.
    pub async fn shutdown(self) {
        self.overlay.shutdown(SHUTDOWN_GRACE).await;
        tracing::info!("carrierd stopped");
    }
}
