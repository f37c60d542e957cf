//! Links: one QUIC connection per peer, admitted by a Noise handshake bound
//! to the connection and checked against the ledger.
//!
//! ```text
//!  dial(addr) ──QUIC──▶ handshake::run(Dialer)   ─┐
//!  Incoming ──limits──▶ QUIC ──▶ handshake::run(Listener) ─┴─▶ Link { connection, peer }
//! ```
//!
//! After admission, data rides QUIC's own encryption; nothing is encrypted
//! twice. The libp2p wrapping of links lives in `overlay::transport`.

pub mod circuit;
mod handshake;
pub mod join;
mod limits;
pub mod quic;
pub mod sealed;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use carrier_proto::addr::{AddrRefusal, LocalNets};
use carrier_proto::handshake::{Admitted, HandshakeError, Local, Refusal};
use carrier_proto::identity::{Did, Identity, PublicKeys};
use carrier_proto::ledger::Directory;
use tracing::Instrument;

pub use limits::LinkLimits;
use limits::{Gate, HandshakeSlots};

use crate::ledger::Ledger;
use crate::observe::Counters;
use crate::tasks::Tasks;

/// Why a link could not be made.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// We refused the peer; it was sent the refusal's close code.
    #[error("refused peer: {0}")]
    Refused(HandshakeError),
    /// The peer refused us with this close code.
    #[error("peer refused us: {0}")]
    RefusedByPeer(Refusal),
    /// The connection attempt was refused before the handshake (limits).
    #[error("too many handshakes in flight")]
    Busy,
    /// QUIC could not start the connection.
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC connection failed or was closed.
    #[error("connection lost: {0}")]
    Connection(quinn::ConnectionError),
    /// The handshake stream failed.
    #[error("handshake stream: {0}")]
    Stream(String),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
    /// The peer had not spoken when a newer attempt needed its slot.
    #[error("evicted: silent while the handshake slots were full")]
    Evicted,
    /// A newcomer's join connection (no link): it is served ledger
    /// entries on its own, within the join limits.
    #[error("a join connection, served apart from the links")]
    Join,
}

impl From<quinn::ConnectionError> for LinkError {
    fn from(error: quinn::ConnectionError) -> Self {
        match &error {
            quinn::ConnectionError::ApplicationClosed(close) => match Refusal::from_code(close.error_code.into_inner())
            {
                Some(reason) => LinkError::RefusedByPeer(reason),
                None => LinkError::Connection(error),
            },
            _ => LinkError::Connection(error),
        }
    }
}

/// An admitted link.
#[derive(Debug, Clone)]
pub struct Link {
    /// The QUIC connection; its first stream carried the handshake.
    pub connection: quinn::Connection,
    /// Who is on the other end, as the ledger knows them.
    pub peer: Admitted,
}

/// An admitted link's connection, as the registry closes and measures it.
#[derive(Debug, Clone)]
enum LinkHandle {
    /// A direct QUIC connection.
    Quic(quinn::Connection),
    /// A circuit through a relay.
    Relayed(sealed::CircuitHandle),
}

impl LinkHandle {
    fn close(&self, reason: Refusal) {
        match self {
            LinkHandle::Quic(connection) => connection.close(reason.code().into(), b""),
            LinkHandle::Relayed(circuit) => circuit.close(reason),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            LinkHandle::Quic(connection) => connection.close_reason().is_some(),
            LinkHandle::Relayed(circuit) => circuit.is_closed(),
        }
    }

    /// Bytes received and sent on the wire.
    fn traffic(&self) -> (u64, u64) {
        match self {
            LinkHandle::Quic(connection) => {
                let stats = connection.stats();
                (stats.udp_rx.bytes, stats.udp_tx.bytes)
            }
            LinkHandle::Relayed(circuit) => circuit.traffic(),
        }
    }
}

/// An admitted link, with the keys it was admitted with.
#[derive(Debug)]
struct LiveLink {
    handle: LinkHandle,
    keys: PublicKeys,
}

/// Links closed because the ledger no longer admits the keys they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Whose links.
    pub did: Did,
    /// The keys they held (for the old peer id's routes).
    pub keys: PublicKeys,
    /// The code they were closed with.
    pub reason: Refusal,
}

/// Addresses an operator may hand the daemon (bootstrap, connect) that are
/// remembered as trusted.
const MAX_TRUSTED_ADDRS: usize = 256;

/// Everything a handshake needs: who we are, the ledger, the limits.
#[derive(Debug)]
pub struct LinkContext {
    identity: Identity,
    did: Did,
    /// The ledger every admission is checked against.
    pub ledger: Arc<dyn Ledger>,
    limits: LinkLimits,
    slots: Arc<HandshakeSlots>,
    /// Every admitted connection by peer, so a revocation can cut them all.
    live: Mutex<HashMap<Did, Vec<LiveLink>>>,
    /// The node's endpoint once bound, for an orderly shutdown.
    endpoint: Mutex<Option<quinn::Endpoint>>,
    /// Each peer's checkpoint from its latest handshake, for replication:
    /// only a note that verified, written anew (never the bytes as sent).
    peer_checkpoints: Mutex<HashMap<Did, Vec<u8>>>,
    /// Admissions and refusals since start, by name.
    counters: Arc<Counters>,
    /// The link layer's own tasks (accepting, handshakes, the overlay
    /// actor), aborted last at shutdown.
    tasks: Tasks,
    /// Limits on newcomers' join connections.
    join: Arc<join::JoinServer>,
    /// The networks this node is on (known once it listens), which decide
    /// which of the addresses peers give us we may dial, probe or store;
    /// and the addresses an operator gave (bootstrap, `connect --addr`),
    /// dialed whatever they are.
    nets: Mutex<(LocalNets, HashSet<SocketAddr>)>,
}

impl LinkContext {
    /// `did` is our registered DID (it may name an earlier key than
    /// `identity` after a rotation).
    pub fn new(identity: Identity, did: Did, ledger: Arc<dyn Ledger>, limits: LinkLimits) -> Self {
        Self {
            identity,
            did,
            ledger,
            limits,
            join: Arc::default(),
            nets: Mutex::default(),
            slots: Arc::default(),
            live: Mutex::default(),
            endpoint: Mutex::default(),
            peer_checkpoints: Mutex::default(),
            counters: Arc::default(),
            tasks: Tasks::new(),
        }
    }

    /// Our DID.
    pub fn did(&self) -> Did {
        self.did
    }

    /// The networks this node is on, once it listens.
    pub fn set_local_nets(&self, nets: LocalNets) {
        self.nets.lock().unwrap_or_else(PoisonError::into_inner).0 = nets;
    }

    /// An address an operator gave: dialed whatever network it is on.
    pub fn trust_addr(&self, addr: SocketAddr) {
        let mut nets = self.nets.lock().unwrap_or_else(PoisonError::into_inner);
        if nets.1.len() < MAX_TRUSTED_ADDRS {
            nets.1.insert(addr);
        }
    }

    /// Whether we may dial, probe or store `addr`, which a peer gave us (or
    /// an operator: those are always taken).
    pub fn admit_addr(&self, addr: SocketAddr) -> Result<SocketAddr, AddrRefusal> {
        let nets = self.nets.lock().unwrap_or_else(PoisonError::into_inner);
        if nets.1.contains(&addr) {
            return Ok(addr);
        }
        nets.0.admit(addr)
    }

    /// Our keys.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The tasks that serve links.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// The limits in force.
    pub fn limits(&self) -> &LinkLimits {
        &self.limits
    }

    /// Closes every link to `did` with `reason`'s code; returns how many.
    pub fn close_peer(&self, did: &Did, reason: Refusal) -> usize {
        let connections = self.live.lock().unwrap_or_else(PoisonError::into_inner).remove(did).unwrap_or_default();
        let open: Vec<_> = connections.into_iter().filter(|l| !l.handle.is_closed()).collect();
        for link in &open {
            link.handle.close(reason);
        }
        if !open.is_empty() {
            tracing::info!(peer = %did, %reason, links = open.len(), "closed links");
        }
        open.len()
    }

    /// Closes the links to `did` that the ledger no longer admits: every
    /// one if `did` is no longer an active device, else those that hold
    /// keys other than its current ones (rotated out). Returns what it cut.
    pub fn enforce(&self, did: &Did) -> Vec<Cut> {
        let standing = self.ledger.standing(did);
        let reason = |keys: &PublicKeys| match &standing {
            None => Some(Refusal::UnknownIdentity),
            Some(s) if !s.is_active() => Some(Refusal::Revoked),
            Some(s) if !s.is_active_device() => Some(Refusal::NotADevice),
            Some(s) if s.keys != *keys => Some(Refusal::KeyMismatch),
            Some(_) => None,
        };
        let mut cuts: Vec<Cut> = Vec::new();
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(links) = live.get_mut(did) else { return cuts };
        links.retain(|link| {
            let Some(reason) = reason(&link.keys) else { return true };
            link.handle.close(reason);
            if !cuts.iter().any(|c| c.keys == link.keys) {
                cuts.push(Cut { did: *did, keys: link.keys, reason });
            }
            false
        });
        if links.is_empty() {
            live.remove(did);
        }
        drop(live);
        for cut in &cuts {
            tracing::info!(peer = %did, reason = %cut.reason, "closed links the ledger no longer admits");
        }
        cuts
    }

    /// [`enforce`](Self::enforce) for every linked DID: after updates were
    /// missed, nothing the ledger no longer admits stays linked.
    pub fn enforce_all(&self) -> Vec<Cut> {
        let dids: Vec<Did> = self.live.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect();
        dids.iter().flat_map(|did| self.enforce(did)).collect()
    }

    /// Remembers the node's endpoint (set by the transport when it binds).
    pub fn set_endpoint(&self, endpoint: quinn::Endpoint) {
        *self.endpoint.lock().unwrap_or_else(PoisonError::into_inner) = Some(endpoint);
    }

    /// The node's endpoint, once bound.
    pub fn endpoint(&self) -> Option<quinn::Endpoint> {
        self.endpoint.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Closes every link with `reason`'s code (shutdown); returns how many.
    pub fn close_all(&self, reason: Refusal) -> usize {
        let dids: Vec<Did> = self.live.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect();
        dids.iter().map(|did| self.close_peer(did, reason)).sum()
    }

    /// Admissions and refusals since start, by name.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Bytes received from and sent to `did` over its open links.
    pub fn traffic(&self, did: &Did) -> (u64, u64) {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(did)
            .into_iter()
            .flatten()
            .map(|l| l.handle.traffic())
            .fold((0, 0), |(rx, tx), (link_rx, link_tx)| (rx + link_rx, tx + link_tx))
    }

    /// A peer's checkpoint note as its latest handshake showed it, verified
    /// and written anew.
    pub fn peer_checkpoint(&self, did: &Did) -> Option<Vec<u8>> {
        self.peer_checkpoints.lock().unwrap_or_else(PoisonError::into_inner).get(did).cloned()
    }

    /// Records an admitted link.
    fn register(&self, link: &Link) {
        self.register_handle(&link.peer, LinkHandle::Quic(link.connection.clone()));
    }

    /// Records an admitted link of either kind, dropping entries for
    /// closed ones.
    fn register_handle(&self, peer: &Admitted, handle: LinkHandle) {
        let verified = match self.ledger.verify_checkpoint(&peer.checkpoint) {
            Ok(checkpoint) => Some(checkpoint.note().to_vec()),
            Err(_) if peer.checkpoint.is_empty() => None,
            Err(error) => {
                self.counters.count("ledger_checkpoints_refused");
                tracing::debug!(peer = %peer.did, %error, "the peer's handshake checkpoint does not verify; not kept");
                None
            }
        };
        let mut notes = self.peer_checkpoints.lock().unwrap_or_else(PoisonError::into_inner);
        match verified {
            Some(note) => notes.insert(peer.did, note),
            None => notes.remove(&peer.did),
        };
        drop(notes);
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let links = live.entry(peer.did).or_default();
        links.retain(|l| !l.handle.is_closed());
        links.push(LiveLink { handle, keys: peer.keys });
    }

    /// Runs `f` with our handshake identity and the ledger.
    pub(crate) fn with_local<R>(&self, f: impl FnOnce(&Local<'_>, &dyn Directory) -> R) -> Result<R, HandshakeError> {
        let network = self
            .ledger
            .network()
            .ok_or_else(|| HandshakeError::new(Refusal::WrongNetwork, "our ledger has no genesis"))?;
        let note = self.ledger.checkpoint().map(|c| c.note().to_vec()).unwrap_or_default();
        let local = Local { did: self.did, identity: &self.identity, network_id: network.id, checkpoint: &note };
        Ok(f(&local, self.directory()))
    }

    /// The ledger, as the handshake looks DIDs up in it.
    pub(crate) fn directory(&self) -> &dyn Directory {
        &*self.ledger
    }

    /// Dials `addr` and runs the handshake. With `expected` set, the peer
    /// must be that DID; if the ledger has its Noise key, IK is used, and a
    /// refusal for a bad binding (a key rotated since) is retried once with
    /// XX.
    pub async fn dial(
        &self,
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        expected: Option<Did>,
    ) -> Result<Link, LinkError> {
        let span = tracing::debug_span!("dial", %addr, peer = expected.map(|d| d.to_string()));
        async {
            match self.dial_once(endpoint, addr, expected, false).await {
                Err(LinkError::RefusedByPeer(Refusal::BadBinding)) if expected.is_some() => {
                    tracing::debug!("IK refused as a bad binding; retrying with XX");
                    self.dial_once(endpoint, addr, expected, true).await
                }
                other => other,
            }
        }
        .instrument(span)
        .await
    }

    async fn dial_once(
        &self,
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        expected: Option<Did>,
        force_xx: bool,
    ) -> Result<Link, LinkError> {
        let role = handshake::Role::Dialer { expected, force_xx };
        let attempt = async {
            let connection = endpoint.connect(addr, quic::SERVER_NAME)?.await?;
            let peer = handshake::run(self, &connection, role, &|| {}).await?;
            Ok::<_, LinkError>(Link { connection, peer })
        };
        let result =
            tokio::time::timeout(self.limits.handshake_timeout, attempt).await.unwrap_or(Err(LinkError::Timeout));
        self.finish(result, "outbound")
    }

    /// Applies the admission limits to an incoming attempt, then accepts it
    /// and runs the handshake.
    pub async fn accept(&self, incoming: quinn::Incoming) -> Result<Link, LinkError> {
        let addr = incoming.remote_address();
        let validated = incoming.remote_address_validated();
        let permit = match self.slots.gate(&self.limits, addr.ip(), validated, std::time::Instant::now()) {
            // Any handshake this one evicted counts itself as it ends.
            Gate::Admit(permit, _evicted) => permit,
            Gate::Retry => {
                // The client retries with a token proving its address.
                let _ = incoming.retry();
                return self.finish(Err(LinkError::Busy), "inbound");
            }
            Gate::Refuse => {
                tracing::debug!(%addr, "refusing connection: handshake limits reached");
                incoming.refuse();
                return self.finish(Err(LinkError::Busy), "inbound");
            }
            Gate::TooFast => {
                tracing::debug!(%addr, "refusing connection: this address starts handshakes too fast");
                incoming.refuse();
                self.counters.count("refused_handshake_rate");
                return Err(LinkError::Busy);
            }
        };
        let span = tracing::debug_span!("accept", %addr);
        // The deadline runs from the first packet: the QUIC handshake is
        // inside it, so a stranger that never finishes QUIC holds its slot
        // no longer than one that never speaks Noise.
        let accepted: Mutex<Option<quinn::Connection>> = Mutex::new(None);
        let attempt = async {
            let connection = incoming.await?;
            if quic::is_join(&connection) {
                let (server, ledger) = (Arc::clone(&self.join), Arc::clone(&self.ledger));
                self.tasks.spawn(async move { server.serve(ledger, connection).await });
                return Err(LinkError::Join);
            }
            *accepted.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection.clone());
            let peer = handshake::run(self, &connection, handshake::Role::Listener, &|| permit.spoke()).await?;
            Ok::<_, LinkError>(Link { connection, peer })
        };
        let result = async {
            tokio::select! {
                result = tokio::time::timeout(self.limits.handshake_timeout, attempt) => {
                    result.unwrap_or(Err(LinkError::Timeout))
                }
                // A newer attempt took the slot of this silent one.
                () = permit.evicted() => Err(LinkError::Evicted),
            }
        }
        .instrument(span)
        .await;
        let code = match &result {
            Err(LinkError::Timeout) => Some(Refusal::Timeout),
            Err(LinkError::Evicted) => Some(Refusal::Busy),
            _ => None,
        };
        if let (Some(code), Some(connection)) = (code, accepted.lock().unwrap_or_else(PoisonError::into_inner).take()) {
            connection.close(code.code().into(), b"");
        }
        drop(permit);
        self.finish(result, "inbound")
    }

    /// Logs and counts the outcome and registers an admitted link.
    fn finish(&self, result: Result<Link, LinkError>, direction: &str) -> Result<Link, LinkError> {
        let name = |reason: Refusal| reason.as_str().replace(' ', "_");
        self.counters.count(match &result {
            Ok(link) => {
                self.register(link);
                format!("links_admitted_{direction}")
            }
            Err(LinkError::Refused(error)) => format!("refused_{}", name(error.reason)),
            Err(LinkError::RefusedByPeer(reason)) => format!("refused_by_peer_{}", name(*reason)),
            Err(LinkError::Busy) => "refused_busy".into(),
            Err(LinkError::Evicted) => "handshakes_evicted_silent".into(),
            Err(LinkError::Join) => "join_connections".into(),
            Err(LinkError::Timeout) => format!("handshake_timeouts_{direction}"),
            Err(_) => format!("link_failures_{direction}"),
        });
        log_outcome(&result);
        result
    }
}

fn log_outcome(result: &Result<Link, LinkError>) {
    match result {
        Ok(link) => tracing::debug!(peer = %link.peer.did, "link admitted"),
        Err(LinkError::Refused(error)) => {
            tracing::warn!(reason = %error.reason, detail = %error.detail, "refused peer")
        }
        Err(LinkError::RefusedByPeer(reason)) => tracing::warn!(%reason, "peer refused us"),
        Err(other) => tracing::debug!(error = %other, "link failed"),
    }
}

#[cfg(test)]
mod tests;
