//! The ledger gate: a libp2p behaviour that lets a connection stand only
//! while the ledger shows its peer as active.
//!
//! The handshake already refuses anyone the ledger does not admit; the gate
//! checks again when libp2p establishes the connection (so no path around
//! the handshake can add a peer), and it watches ledger updates: when a DID
//! is revoked, every link to it is closed with the `Revoked` code; when its
//! keys are rotated, every link holding the old keys is closed with
//! `KeyMismatch`; either way its connections are dropped from the swarm.
//! If the gate falls behind the ledger's updates, it re-checks every live
//! link, so a missed update is never a missed revocation.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use carrier_proto::handshake::Refusal;
use carrier_proto::identity::Did;
use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use tokio::sync::{broadcast, mpsc};

use crate::link::LinkContext;

/// What the gate reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateEvent {
    /// A DID was revoked; its links were closed.
    Revoked {
        /// The revoked DID.
        did: Did,
        /// Its peer id (current key), for removing it from routing tables.
        peer: PeerId,
    },
    /// A DID's keys were rotated; the links holding the old ones were closed.
    Rotated {
        /// The DID.
        did: Did,
        /// The peer id of the rotated-out key, for removing its routes.
        peer: PeerId,
    },
}

/// What the gate must look at again.
#[derive(Debug)]
enum Check {
    /// One DID was revoked.
    Revoked(Did),
    /// One DID's keys were rotated.
    Rotated(Did),
    /// Updates were missed: every live link.
    All,
}

/// Why the gate refused a connection.
#[derive(Debug, thiserror::Error)]
#[error("peer {0} is not active on the ledger")]
pub struct NotActive(PeerId);

/// The ledger gate behaviour.
pub struct Behaviour {
    ctx: Arc<LinkContext>,
    /// What to check, forwarded from the ledger's broadcast.
    checks: mpsc::UnboundedReceiver<Check>,
    /// Actions for the swarm, in order.
    queue: VecDeque<ToSwarm<GateEvent, Infallible>>,
}

impl Behaviour {
    /// A gate over `ctx`'s ledger. Must be created inside a tokio runtime.
    pub fn new(ctx: Arc<LinkContext>) -> Self {
        let mut updates = ctx.ledger.subscribe();
        let (tx, checks) = mpsc::unbounded_channel();
        ctx.tasks().spawn(async move {
            loop {
                let check = match updates.recv().await {
                    Ok(update) => match (update.revoked, update.rotated) {
                        (Some(did), _) => Check::Revoked(did),
                        (None, Some(did)) => Check::Rotated(did),
                        (None, None) => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "ledger gate fell behind the ledger's updates; re-checking every link");
                        Check::All
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if tx.send(check).is_err() {
                    break;
                }
            }
        });
        Self { ctx, checks, queue: VecDeque::new() }
    }

    /// Is `peer`'s key the current key of an active DID?
    fn check(&self, peer: PeerId) -> Result<dummy::ConnectionHandler, ConnectionDenied> {
        if super::is_active_device(&*self.ctx.ledger, &peer) {
            Ok(dummy::ConnectionHandler)
        } else {
            Err(ConnectionDenied::new(NotActive(peer)))
        }
    }
}

impl Behaviour {
    /// Drops `event`'s peer from the swarm and reports it.
    fn cut(&mut self, event: GateEvent) {
        let (GateEvent::Revoked { peer, .. } | GateEvent::Rotated { peer, .. }) = event;
        self.queue.push_back(ToSwarm::CloseConnection { peer_id: peer, connection: CloseConnection::All });
        self.queue.push_back(ToSwarm::GenerateEvent(event));
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = GateEvent;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)
    }

    fn on_swarm_event(&mut self, _event: FromSwarm<'_>) {}

    fn on_connection_handler_event(&mut self, _peer: PeerId, _connection: ConnectionId, event: THandlerOutEvent<Self>) {
        let never: Infallible = event;
        match never {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<GateEvent, THandlerInEvent<Self>>> {
        while let Poll::Ready(Some(check)) = self.checks.poll_recv(cx) {
            match check {
                Check::Revoked(did) => {
                    self.ctx.close_peer(&did, Refusal::Revoked);
                    // A revoked record keeps its keys, so its peer id is still
                    // known, linked or not: its routes go too.
                    let key = self.ctx.ledger.standing(&did).map(|s| s.keys.signing);
                    if let Some(peer) = key.map(|k| k.peer_id()) {
                        self.cut(GateEvent::Revoked { did, peer });
                    }
                }
                Check::Rotated(did) => {
                    for cut in self.ctx.enforce(&did) {
                        self.cut(GateEvent::Rotated { did, peer: cut.keys.signing.peer_id() });
                    }
                }
                Check::All => {
                    for cut in self.ctx.enforce_all() {
                        let (did, peer) = (cut.did, cut.keys.signing.peer_id());
                        self.cut(match cut.reason {
                            Refusal::KeyMismatch => GateEvent::Rotated { did, peer },
                            _ => GateEvent::Revoked { did, peer },
                        });
                    }
                }
            }
        }
        match self.queue.pop_front() {
            Some(action) => Poll::Ready(action),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
