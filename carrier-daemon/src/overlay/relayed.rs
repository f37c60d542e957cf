//! Relayed links until a direct one replaces them.
//!
//! A relayed link comes up, DCUtR (over that link) punches a direct path,
//! and once a direct link to the same peer is admitted the relayed one is
//! retired: new streams take the direct link at once (`streams.rs`), and the
//! relayed link is closed after [`RELAYED_GRACE`], once the streams it
//! still carries (a forwarded TCP connection, say) have ended, and only if
//! the direct link is still up. Messages are never lost across the switch:
//! the outbox retries on whichever link is up.
//!
//! Where hole punching cannot work (our NAT maps a new port per
//! destination), a link that stays relayed gets port guessing
//! (`port_guess.rs`) after [`GUESS_AFTER`], up to [`MAX_GUESSES`] times.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use carrier_proto::nat::Mapping;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, dcutr};

use super::actor::Actor;
use super::port_guess::{GUESS_AFTER, GUESS_RETRY, MAX_GUESSES};

/// How long a relayed link stays up beside the direct link that replaced it.
pub(super) const RELAYED_GRACE: Duration = Duration::from_secs(5);
/// How long a peer's spent guesses are remembered: after that, a new round.
const GUESSES_KEPT: Duration = Duration::from_secs(10 * 60);

/// Relayed links by peer, with when each came up, and those a direct link
/// replaced, with when they may close.
#[derive(Debug, Default)]
pub(super) struct RelayedLinks {
    up: HashMap<PeerId, Vec<(ConnectionId, Instant)>>,
    replaced: Vec<(PeerId, ConnectionId, Instant)>,
    /// Port guesses started for peers we reach only through a relay: how
    /// many, the last when; forgotten once a direct link is up, or
    /// [`GUESSES_KEPT`] after the last.
    guesses: HashMap<PeerId, (u32, Instant)>,
}

impl Actor {
    /// Direct links to `peer` now.
    fn direct_links(&self, peer: &PeerId) -> u32 {
        self.peers.get(peer).map_or(0, |info| info.links.saturating_sub(info.relayed_links))
    }

    /// Retires a relayed link a direct one replaced: new streams go direct
    /// at once; it closes after the grace, once its streams have ended.
    fn replace(&mut self, peer: PeerId, connection: ConnectionId) {
        self.swarm.behaviour().stream.control().set_retired(connection, true);
        self.relayed.replaced.push((peer, connection, Instant::now() + RELAYED_GRACE));
    }

    /// A link to `peer` came up; `relayed` says through a relay.
    pub(super) fn on_link_up(&mut self, peer: PeerId, connection: ConnectionId, relayed: bool) {
        if relayed {
            if self.direct_links(&peer) > 0 {
                // Direct already (the peer dialed our circuit address, say).
                self.replace(peer, connection);
            } else {
                self.relayed.up.entry(peer).or_default().push((connection, Instant::now()));
            }
            return;
        }
        self.relayed.guesses.remove(&peer);
        let Some(replaced) = self.relayed.up.remove(&peer) else { return };
        let did = self.did_of(&peer).map(|d| d.to_string()).unwrap_or_else(|| peer.to_string());
        for (connection, since) in replaced {
            let after_ms = since.elapsed().as_millis() as u64;
            tracing::info!(peer = %did, after_ms, "direct link replaces the relayed one");
            self.replace(peer, connection);
        }
    }

    /// Closes the replaced relayed links whose time has come. One whose
    /// direct link has gone meanwhile (a flaky path) is kept, and in use
    /// again.
    pub(super) fn close_replaced(&mut self) {
        let now = Instant::now();
        let streams = self.swarm.behaviour().stream.control();
        for (peer, connection, due) in std::mem::take(&mut self.relayed.replaced) {
            if now < due || (streams.open_streams(connection) > 0 && self.direct_links(&peer) > 0) {
                self.relayed.replaced.push((peer, connection, due));
            } else if self.direct_links(&peer) == 0 {
                tracing::info!(%peer, "the direct link went; the relayed one stays");
                streams.set_retired(connection, false);
                self.relayed.up.entry(peer).or_default().push((connection, Instant::now()));
            } else {
                self.swarm.close_connection(connection);
            }
        }
    }

    /// A link to `peer` went down.
    pub(super) fn on_link_down(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(links) = self.relayed.up.get_mut(&peer) {
            links.retain(|(c, _)| *c != connection);
            if links.is_empty() {
                // Its guesses stay counted: a circuit that drops and comes
                // back does not buy another round.
                self.relayed.up.remove(&peer);
            }
        }
        self.relayed.replaced.retain(|(_, c, _)| *c != connection);
    }

    /// Identify on `connection` says `peer` sees us at `observed`: counts
    /// towards how our NAT maps our listening port. A reachability
    /// dial-back leaves from another port, and a circuit shows the relay's
    /// view, so neither counts.
    pub(super) fn observed(&mut self, peer: PeerId, connection: ConnectionId, observed: &Multiaddr) {
        let Some((addr, _)) = super::transport::parse_addr(observed) else { return };
        if self.closing.iter().any(|(_, c)| *c == connection) {
            return;
        }
        self.reachability.observe(peer, addr);
    }

    /// Starts port guessing towards a peer we have reached only through a
    /// relay for [`GUESS_AFTER`], if our NAT maps a new port per
    /// destination (so hole punching cannot link us); one at a time.
    pub(super) fn start_port_guesses(&mut self) {
        let Some(guessing) = self.port_guessing.clone() else { return };
        let Mapping::Dependent(ip) = self.reachability.mapping() else { return };
        let now = Instant::now();
        self.relayed.guesses.retain(|_, (_, last)| now.saturating_duration_since(*last) < GUESSES_KEPT);
        let due = self.relayed.up.iter().find(|(peer, links)| {
            let waited = links.iter().any(|(_, since)| now.saturating_duration_since(*since) >= GUESS_AFTER);
            let again = self.relayed.guesses.get(*peer).is_none_or(|(tries, last)| {
                *tries < MAX_GUESSES && now.saturating_duration_since(*last) >= GUESS_RETRY
            });
            waited && again && self.direct_links(peer) == 0
        });
        let Some(peer) = due.map(|(peer, _)| *peer) else { return };
        let Some(did) = self.did_of(&peer) else { return };
        let streams = self.swarm.behaviour().stream.control();
        if guessing.start(streams, peer, did, ip) {
            let tries = self.relayed.guesses.entry(peer).or_insert((0, now));
            *tries = (tries.0 + 1, now);
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
