//! Kademlia queries the actor started, as they progress: `closest` walks,
//! `lookup` probes, and the lookups `connect` makes for a peer it has no
//! address for.

use std::time::Instant;

use carrier_proto::identity::Did;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{PeerId, kad};
use tokio::sync::oneshot;

use super::actor::Actor;
use super::{Lookup, OverlayError};

/// A `lookup` in progress.
pub(super) struct Probe {
    pub(super) target: PeerId,
    pub(super) started: Instant,
    pub(super) reply: oneshot::Sender<Result<Lookup, OverlayError>>,
}

/// A `closest` walk in progress.
pub(super) struct Walk {
    pub(super) did: Did,
    pub(super) count: usize,
    pub(super) found: Vec<PeerId>,
    pub(super) reply: oneshot::Sender<super::Closest>,
}

impl Actor {
    pub(super) fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed { id, result, step, .. } if self.walks.contains_key(&id) => {
                let found = match &result {
                    kad::QueryResult::GetClosestPeers(Ok(ok)) => ok.peers.iter().map(|p| p.peer_id).collect(),
                    _ => Vec::new(),
                };
                let Some(walk) = self.walks.get_mut(&id) else { return };
                walk.found.extend(found);
                if !step.last {
                    return; // several steps may carry peers
                }
                if let Some(walk) = self.walks.remove(&id) {
                    let closest = self.closest(&walk.did, walk.count, walk.found);
                    let _ = walk.reply.send(closest);
                }
            }
            kad::Event::OutboundQueryProgressed { id, result, step, stats } if self.probes.contains_key(&id) => {
                let found = match (&result, self.probes.get(&id)) {
                    (kad::QueryResult::GetClosestPeers(Ok(ok)), Some(probe)) => {
                        ok.peers.iter().any(|p| p.peer_id == probe.target)
                    }
                    _ => false,
                };
                if (found || step.last)
                    && let Some(probe) = self.probes.remove(&id)
                {
                    let lookup = Lookup { found, requests: stats.num_requests(), duration: probe.started.elapsed() };
                    let _ = probe.reply.send(Ok(lookup));
                    if !step.last
                        && let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id)
                    {
                        query.finish();
                    }
                }
            }
            kad::Event::OutboundQueryProgressed { id, result, step, .. } => {
                let Some((target, full)) = self.lookups.get(&id).copied() else {
                    return;
                };
                if let kad::QueryResult::GetClosestPeers(Ok(ok)) = &result
                    && let Some(found) = ok.peers.iter().find(|p| p.peer_id == target)
                {
                    self.lookups.remove(&id);
                    let opts = DialOpts::peer_id(target).addresses(found.addrs.clone()).build();
                    if let Err(e) = self.swarm.dial(opts) {
                        let Some(did) = self.did_of(&target) else { return };
                        let reason = e.to_string();
                        self.answer(&target, || Err(OverlayError::Unreachable { did, reason: reason.clone() }));
                    }
                    return;
                }
                if step.last {
                    self.lookups.remove(&id);
                    if self.peers.contains_key(&target) {
                        return; // linked while looking (Kademlia dialled it)
                    }
                    if !full {
                        // The quick walk (one result) can stop at a peer that
                        // failed to answer; walk again for the k closest.
                        let query = self.swarm.behaviour_mut().kad.get_closest_peers(target);
                        self.lookups.insert(query, (target, true));
                    } else if let Some(did) = self.did_of(&target) {
                        self.answer(&target, || Err(OverlayError::NotFound(did)));
                    }
                }
            }
            _ => {}
        }
    }
}
