//! A running daemon: identity, ledger, links and overlay, started in order
//! and stopped in one stated order.
//!
//! ```text
//!  start: config → identity (data dir) → ledger (verified) → overlay (listen, join)
//!         → protocols (router, ledger sync) → delivery → app socket, control socket
//!  stop:  stop accepting (sockets, protocol streams) → drain handlers (≤ 2 s)
//!         → close every link with the shutdown code, wait until sent
//!         → abort stragglers → no task left running
//! ```
//!
//! Every task belongs to one of three [`Tasks`] groups: `accepting` (accept
//! loops), `handlers` (what they start) and the link layer's own (the
//! overlay actor, QUIC accepting, handshakes), which goes last.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::{Did, IdentityKind};
use carrier_proto::keystore::{self, KeyStoreError};
use carrier_proto::ledger::Sequencer;
use libp2p::Multiaddr;

use crate::config::Config;
use crate::delivery::Delivery;
use crate::ipc::{app, control};
use crate::ledger::{EmbeddedLedger, Ledger, LedgerStore, PendingRequests, StoreError};
use crate::link::{LinkContext, join};
use crate::overlay::transport::parse_addr;
use crate::overlay::{Overlay, OverlayConfig, OverlayError};
use crate::paths::{APP_SOCKET, CONTROL_SOCKET, DataDir};
use crate::protocols::Router;
use crate::protocols::ledger_submit::Submitter;
use crate::protocols::ledger_sync::LedgerSync;
use crate::protocols::witness;
use crate::tasks::{self, Tasks};

/// How long shutdown waits for peers to be told.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long shutdown lets handlers finish what they are doing.
const DRAIN: Duration = Duration::from_secs(2);

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
    /// The pending-requests directory cannot be used.
    #[error("pending ledger requests: {0}")]
    Pending(String),
    /// The message store cannot be opened.
    #[error(transparent)]
    Messages(#[from] crate::delivery::StoreError),
    /// The configured sequencer key cannot sequence this ledger.
    #[error("ledger.sequencer_key {path}: {reason}")]
    SequencerKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The configured witness key or its state cannot be used.
    #[error("ledger.witness_key {path}: {reason}")]
    WitnessKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The configuration's bootstrap list is unusable.
    #[error("bootstrap[{0}]: {1}")]
    Bootstrap(usize, &'static str),
    /// The configuration's reservation policy is not one we know.
    #[error("nat.reservations: {0}")]
    Reservations(String),
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
    ctx: Arc<LinkContext>,
    overlay: Overlay,
    ledger: Arc<EmbeddedLedger>,
    delivery: Arc<Delivery>,
    accepting: Tasks,
    handlers: Tasks,
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
        let mut ledger = EmbeddedLedger::with_store(store);
        if let Some(path) = &config.ledger.sequencer_key {
            let key = keystore::load_kind(path, IdentityKind::Log)
                .map_err(|e| StartError::SequencerKey { path: path.clone(), reason: e.to_string() })?;
            ledger = ledger
                .with_sequencer(Sequencer::new(key, Some(did)))
                .map_err(|reason| StartError::SequencerKey { path: path.clone(), reason })?;
            tracing::info!(key = %path.display(), "this daemon sequences the network's ledger");
        }
        let ledger = Arc::new(ledger);
        let ctx =
            Arc::new(LinkContext::new(identity, did, Arc::clone(&ledger) as Arc<dyn Ledger>, config.link_limits()));
        let bootstrap: Vec<Multiaddr> = config.bootstrap_addrs().map_err(|(i, why)| StartError::Bootstrap(i, why))?;
        let overlay_config = OverlayConfig {
            listen: config.listen,
            bootstrap: bootstrap.clone(),
            max_links: config.limits.max_links,
            peer_cache: Some(data_dir.peer_cache()),
            relay: ctx
                .ledger
                .roles(&did)
                .iter()
                .any(|role| role == crate::overlay::reservations::RELAY_ROLE)
                .then(|| config.relay_limits()),
            reservations: config.reservation_policy().map_err(StartError::Reservations)?,
            hole_punching: config.nat.hole_punching,
            ..OverlayConfig::default()
        };
        let (overlay, events) = Overlay::start(Arc::clone(&ctx), overlay_config).await?;
        let (accepting, handlers) = (Tasks::new(), Tasks::new());
        if !ctx.ledger.standing(&did).is_some_and(|s| s.is_active_device()) {
            handlers.spawn_until_stop(wait_for_registration(Arc::clone(&ctx.ledger), did, overlay.clone(), bootstrap));
        }
        let router = Router::new(&overlay, Arc::clone(&ctx.ledger), accepting.clone(), handlers.clone());
        LedgerSync::new(&ctx, router.clone()).start(Arc::clone(&ctx), overlay.clone(), events, &handlers);
        if let Some(path) = &config.ledger.witness_key {
            let err = |reason: String| StartError::WitnessKey { path: path.clone(), reason };
            let key = keystore::load_kind(path, IdentityKind::Witness).map_err(|e| err(e.to_string()))?;
            let witness = witness::Witness::open(key, Arc::clone(&ctx.ledger), data_dir.witness_state())
                .map_err(|e| err(e.to_string()))?;
            witness::serve(&router, witness);
            tracing::info!(key = %path.display(), "this daemon witnesses the network's checkpoints");
        }
        if config.ledger.sequencer_key.is_some() {
            witness::collect(Arc::clone(&ctx.ledger), router.clone(), &handlers);
        }
        ledger.set_stale_after(config.ledger.stale_checkpoint_s);
        crate::ledger::watch_freshness(
            Arc::clone(&ctx.ledger),
            Arc::clone(ctx.counters()),
            config.ledger.fresh_checkpoint_s,
            config.ledger.stale_checkpoint_s,
            &handlers,
        );
        let pending = PendingRequests::open(&data_dir.ledger().join("pending"))
            .map_err(|e| StartError::Pending(e.to_string()))?;
        // Revocations waiting here for the sequencer are in force already.
        for entry in pending.waiting().iter().filter(|e| matches!(e.op(), carrier_proto::ledger::Op::Revoke { .. })) {
            let _ = ctx.ledger.admit_revocation(entry);
        }
        let deadline = std::time::Duration::from_secs(config.ledger.promise_deadline_s);
        let submitter = Submitter::new(Arc::clone(&ctx.ledger), router.clone(), Arc::new(pending), deadline);
        submitter.start(&handlers, overlay.events());
        let messaging = config.messaging_config(Some(data_dir.message_store()));
        let delivery = Delivery::start(Arc::clone(&ctx), overlay.clone(), router, messaging)?;
        let app_socket = runtime_dir.join(APP_SOCKET);
        let app_listener =
            app::bind(&app_socket).map_err(|source| StartError::Socket { path: app_socket.clone(), source })?;
        app::serve(app_listener, Arc::clone(&delivery), Arc::clone(ctx.counters()), &accepting, &handlers);
        let socket = runtime_dir.join(CONTROL_SOCKET);
        let listener = control::bind(&socket).map_err(|source| StartError::Socket { path: socket.clone(), source })?;
        let handler =
            Arc::new(control::Handler::new(overlay.clone(), Arc::clone(&ctx), Arc::clone(&delivery), submitter));
        control::serve(listener, socket.clone(), handler, &accepting, &handlers);
        tracing::info!(%did, listen = %overlay.listen_addr(), control = %socket.display(), head = ledger.head().height, "carrierd started");
        Ok(Self { did, ctx, overlay, ledger, delivery, accepting, handlers })
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
    pub fn ledger(&self) -> &Arc<EmbeddedLedger> {
        &self.ledger
    }

    /// App messaging and streams.
    pub fn delivery(&self) -> &Arc<Delivery> {
        &self.delivery
    }

    /// Tasks still running, in every group (none once stopped).
    pub fn running_tasks(&self) -> usize {
        self.accepting.len() + self.handlers.len() + self.ctx.tasks().len()
    }

    /// Stops in order: stop accepting, drain handlers, close every link with
    /// the shutdown code, abort stragglers. Returns once no task is left.
    pub async fn shutdown(&self) {
        let overlay = self.overlay.clone();
        let stopped = tasks::shut_down(&self.accepting, &self.handlers, DRAIN, async move {
            overlay.shutdown(SHUTDOWN_GRACE).await;
        })
        .await;
        let links = self.ctx.tasks();
        links.abort();
        links.wait().await;
        tracing::info!(aborted = stopped.aborted, "carrierd stopped");
    }
}

/// How often a device that is not registered yet asks its bootstrap
/// daemons for the ledger.
const REGISTRATION_POLL: Duration = Duration::from_secs(1);

/// Until this device is registered: fetches the ledger from the bootstrap
/// daemons over join connections (it cannot hold links yet), every
/// [`REGISTRATION_POLL`]; once the ledger shows it registered, dials them
/// as a member.
async fn wait_for_registration(ledger: Arc<dyn Ledger>, did: Did, overlay: Overlay, bootstrap: Vec<Multiaddr>) {
    tracing::warn!(%did, "waiting for registration: this device is not on the ledger yet");
    let addrs: Vec<_> = bootstrap.iter().filter_map(|a| parse_addr(a).map(|(addr, _)| addr)).collect();
    loop {
        for &addr in &addrs {
            match join::fetch(&*ledger, addr).await {
                Ok(0) => {}
                Ok(applied) => tracing::info!(%addr, applied, "fetched ledger entries over a join connection"),
                Err(error) => tracing::debug!(%addr, %error, "join fetch failed"),
            }
        }
        match ledger.standing(&did) {
            // Revocation is final: there is nothing to wait for.
            Some(standing) if !standing.is_active() => {
                return tracing::error!(%did, "this device is revoked on the ledger; it cannot join again");
            }
            Some(standing) if standing.is_active_device() => break,
            _ => tokio::time::sleep(REGISTRATION_POLL).await,
        }
    }
    tracing::info!(%did, "registered on the ledger: joining the network");
    for addr in &bootstrap {
        if let Err(error) = overlay.dial(addr.clone()).await {
            tracing::debug!(%addr, %error, "bootstrap dial after registration failed");
        }
    }
}
