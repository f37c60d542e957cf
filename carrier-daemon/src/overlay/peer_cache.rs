//! The peer cache: the routing table's peers and addresses, kept in the data
//! directory so a daemon that was stopped (or killed) rejoins through the
//! peers it knew, even when its bootstrap peers are gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use carrier_proto::pb;
use libp2p::{Multiaddr, PeerId};
use prost::Message;

use super::transport::parse_addr;

/// Largest cache file read; a real one is a few KiB.
const MAX_SIZE: u64 = 4 << 20;

/// Known peers and their addresses, mirrored to a file.
#[derive(Debug)]
pub(crate) struct PeerCache {
    path: PathBuf,
    peers: BTreeMap<PeerId, Vec<Multiaddr>>,
}

impl PeerCache {
    /// Loads the cache at `path`; a missing or unreadable file is an empty
    /// cache (logged), never a reason not to start.
    pub(crate) fn load(path: PathBuf) -> Self {
        let peers = match read(&path) {
            Ok(peers) => peers,
            Err(error) => {
                if path.exists() {
                    tracing::warn!(path = %path.display(), %error, "ignoring an unreadable peer cache");
                }
                BTreeMap::new()
            }
        };
        Self { path, peers }
    }

    /// Every cached address.
    pub(crate) fn addrs(&self) -> Vec<Multiaddr> {
        self.peers.values().flatten().cloned().collect()
    }

    /// Records `peer`'s addresses and rewrites the file if they changed.
    pub(crate) fn insert(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.peers.get(&peer) == Some(&addrs) {
            return;
        }
        self.peers.insert(peer, addrs);
        self.save();
    }

    /// Forgets `peer` (revoked) and rewrites the file.
    pub(crate) fn remove(&mut self, peer: &PeerId) {
        if self.peers.remove(peer).is_some() {
            self.save();
        }
    }

    fn save(&self) {
        let cache = pb::PeerCache {
            peers: self
                .peers
                .iter()
                .map(|(peer, addrs)| pb::CachedPeer {
                    peer_id: peer.to_string(),
                    addrs: addrs.iter().map(ToString::to_string).collect(),
                })
                .collect(),
        };
        // Write a temporary file and rename it over the old one, so a crash
        // leaves either the old cache or the new one.
        let temp = self.path.with_extension("tmp");
        let written = std::fs::write(&temp, cache.encode_to_vec())
            .and_then(|()| crate::paths::make_private(&temp))
            .and_then(|()| std::fs::rename(&temp, &self.path));
        if let Err(error) = written {
            tracing::warn!(path = %self.path.display(), %error, "cannot save the peer cache");
        }
    }
}

fn read(path: &Path) -> Result<BTreeMap<PeerId, Vec<Multiaddr>>, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_SIZE {
        return Err(format!("{len} bytes, more than any peer cache"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let cache = pb::PeerCache::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    Ok(cache
        .peers
        .into_iter()
        .filter_map(|p| {
            let peer: PeerId = p.peer_id.parse().ok()?;
            let addrs: Vec<Multiaddr> =
                p.addrs.iter().filter_map(|a| a.parse().ok()).filter(|a| parse_addr(a).is_some()).collect();
            Some((peer, addrs))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_reload_and_ignores_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.cache");
        let peer = carrier_proto::identity::Identity::generate(carrier_proto::identity::IdentityKind::Device).peer_id();
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/7640/quic-v1/noise".parse().unwrap();
        let mut cache = PeerCache::load(path.clone());
        assert!(cache.addrs().is_empty());
        cache.insert(peer, vec![addr.clone()]);
        assert_eq!(PeerCache::load(path.clone()).addrs(), vec![addr]);
        cache.remove(&peer);
        assert!(PeerCache::load(path.clone()).addrs().is_empty());
        std::fs::write(&path, b"\xff\xff\xff garbage").unwrap();
        assert!(PeerCache::load(path).addrs().is_empty());
    }
}
