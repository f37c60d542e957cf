//! Relayed links until a direct one replaces them.
//!
//! A relayed link comes up, DCUtR (over that link) punches a direct path,
//! and once a direct link to the same peer is admitted the relayed one is
//! retired: new streams take the direct link at once (`streams.rs`), and the
//! relayed link is closed after [`RELAYED_GRACE`], once the streams it
//! still carries (a forwarded TCP connection, say) have ended. Messages are
//! never lost across the switch: the outbox retries on whichever link is up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::{PeerId, dcutr};

use super::actor::Actor;

/// How long a relayed link stays up beside the direct link that replaced it.
pub(super) const RELAYED_GRACE: Duration = Duration::from_secs(5);

/// Relayed links by peer, with when each came up.
#[derive(Debug, Default)]
pub(super) struct RelayedLinks(HashMap<PeerId, Vec<(ConnectionId, Instant)>>);

impl Actor {
    /// A link to `peer` came up; `relayed` says through a relay.
    pub(super) fn on_link_up(&mut self, peer: PeerId, connection: ConnectionId, relayed: bool) {
        if relayed {
            self.relayed.0.entry(peer).or_default().push((connection, Instant::now()));
            return;
        }
        let Some(replaced) = self.relayed.0.remove(&peer) else { return };
        let did = self.did_of(&peer).map(|d| d.to_string()).unwrap_or_else(|| peer.to_string());
        for (connection, since) in replaced {
            let after_ms = since.elapsed().as_millis() as u64;
            tracing::info!(peer = %did, after_ms, "direct link replaces the relayed one");
            self.close_later(connection, RELAYED_GRACE);
        }
    }

    /// A link to `peer` went down.
    pub(super) fn on_link_down(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(links) = self.relayed.0.get_mut(&peer) {
            links.retain(|(c, _)| *c != connection);
            if links.is_empty() {
                self.relayed.0.remove(&peer);
            }
        }
    }

    /// How a hole punch went.
    pub(super) fn on_dcutr_event(&mut self, event: dcutr::Event) {
        let did = self.did_of(&event.remote_peer_id).map(|d| d.to_string());
        match event.result {
            Ok(_) => tracing::info!(peer = ?did, "hole punched: direct link up"),
            Err(error) => tracing::info!(peer = ?did, %error, "hole punch failed; the link stays relayed"),
        }
    }
}
