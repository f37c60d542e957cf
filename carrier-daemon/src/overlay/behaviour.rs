//! The swarm's behaviours, in the order libp2p consults them: the ledger
//! gate and connection limits first (either may refuse a connection), then
//! routing (Kademlia, identify), liveness (ping), the daemon's own streams,
//! reachability (AutoNAT v2), circuit relay (client; server on `relay`
//! devices) and DCUtR (hole punching over a relayed link).

use std::sync::Arc;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{autonat, connection_limits, dcutr, identify, kad, ping};

use super::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, OverlayConfig, gate, relay, streams};
use crate::link::LinkContext;

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) gate: gate::Behaviour,
    pub(super) limits: connection_limits::Behaviour,
    pub(super) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) stream: streams::Behaviour,
    pub(super) autonat_client: autonat::v2::client::Behaviour,
    pub(super) autonat_server: autonat::v2::server::Behaviour,
    pub(super) relay_client: libp2p::relay::client::Behaviour,
    pub(super) relay: Toggle<libp2p::relay::Behaviour>,
    pub(super) dcutr: Toggle<dcutr::Behaviour>,
}

/// Every behaviour, configured from `config`.
pub(super) fn behaviour(
    ctx: Arc<LinkContext>,
    key: &libp2p::identity::Keypair,
    config: &OverlayConfig,
    relay_client: libp2p::relay::client::Behaviour,
) -> Behaviour {
    let peer_id = key.public().to_peer_id();
    let relay = config.relay.as_ref().map(|limits| {
        tracing::info!(?limits, "serving circuits for devices on the ledger");
        relay::server(peer_id, limits, Arc::clone(&ctx.ledger), Arc::clone(ctx.counters()))
    });
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config.set_kbucket_inserts(kad::BucketInserts::Manual);
    kad_config.set_query_timeout(config.connect_timeout);
    // Kademlia here only routes: it keeps no records and no providers, so
    // a registered peer cannot grow anyone's memory with PUT_VALUE or
    // ADD_PROVIDER. Inbound ones are handed to us (filtered) and dropped,
    // and the store would refuse them anyway.
    kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
    let nothing = kad::store::MemoryStoreConfig {
        max_records: 0,
        max_value_bytes: 0,
        max_providers_per_key: 0,
        max_provided_keys: 0,
    };
    let store = kad::store::MemoryStore::with_config(peer_id, nothing);
    let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
    kad.set_mode(Some(kad::Mode::Server));
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_links))
        // Room for a relayed link, a direct one beside it and a second
        // direct one while the first closes (a path that failed, say), and
        // for the dial-back of a reachability probe beside them.
        .with_max_established_per_peer(Some(4))
        .with_max_pending_incoming(Some(config.max_links));
    Behaviour {
        relay_client,
        relay: relay.into(),
        dcutr: config.hole_punching.then(|| dcutr::Behaviour::new(peer_id)).into(),
        gate: gate::Behaviour::new(ctx),
        limits: connection_limits::Behaviour::new(limits),
        kad,
        identify: identify::Behaviour::new(
            // Pushed at once when our addresses change (a relay reservation
            // adds a circuit address), so peers route to it without waiting.
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public()).with_push_listen_addr_updates(true),
        ),
        ping: ping::Behaviour::default(),
        stream: streams::Behaviour::new(),
        autonat_client: autonat::v2::client::Behaviour::default(),
        autonat_server: autonat::v2::server::Behaviour::default(),
    }
}
