//! Kademlia lookups in an overlay of 100 Carrier nodes on loopback.
//!
//! Run: `cargo bench -p carrier-daemon --bench kad_lookup`
//! (`CARRIER_BENCH_NODES=200` for another size).
//!
//! Every node joins through one bootstrap node, then Kademlia's own
//! bootstrap fills the routing tables (only with admitted peers). Measured:
//! - hops: libp2p-kad does not report the hops of a lookup, so they are
//!   counted on the nodes' real routing tables with the greedy walk a
//!   one-at-a-time Kademlia lookup makes: ask the closest known peer to the
//!   target, learn its table, repeat until a table holds the target;
//! - latency and requests of real lookups through the swarms (with
//!   Kademlia's parallelism of 3), including the QUIC + Noise admission of
//!   any peer not yet linked.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use carrier_daemon::ledger::EmbeddedLedger;
use carrier_daemon::link::{LinkContext, LinkLimits};
use carrier_daemon::overlay::{Overlay, OverlayConfig, OverlayEvent};
use carrier_proto::identity::{Did, Identity};
use carrier_proto::testing::TestNetwork;
use libp2p::PeerId;
use libp2p::kad::KBucketKey;
use tokio::sync::broadcast;

const LOOKUPS: usize = 200;
const WALKS: usize = 2_000;

struct Node {
    did: Did,
    peer: PeerId,
    overlay: Overlay,
    events: broadcast::Receiver<OverlayEvent>,
}

async fn wait_for(events: &mut broadcast::Receiver<OverlayEvent>, want: OverlayEvent, joined: usize) {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(event) if event == want => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("overlay stopped"),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), wait).await.is_err() {
        panic!("node {joined} did not join");
    }
}

/// A small deterministic generator for picking pairs.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Greedy one-at-a-time walk over routing tables: queries until a table
/// that was learned holds the target.
fn hops(tables: &HashMap<PeerId, Vec<PeerId>>, from: PeerId, target: PeerId) -> Option<usize> {
    let key = KBucketKey::from(target);
    let mut known: HashSet<PeerId> = tables.get(&from)?.iter().copied().collect();
    let mut asked = HashSet::from([from]);
    let mut hops = 0;
    while !known.contains(&target) {
        let next = known.iter().filter(|p| !asked.contains(p)).min_by_key(|p| KBucketKey::from(**p).distance(&key))?;
        let next = *next;
        asked.insert(next);
        hops += 1;
        known.extend(tables.get(&next).into_iter().flatten().copied());
        if hops > tables.len() {
            return None;
        }
    }
    Some(hops)
}

fn percentile<T: Copy + Ord>(values: &mut [T], p: f64) -> T {
    values.sort();
    values[((values.len() - 1) as f64 * p).round() as usize]
}

async fn run(n: usize) {
    let mut net = TestNetwork::new("kad-bench");
    let ids: Vec<Identity> = (0..n).map(|_| net.register_device()).collect();
    let ledger = net.ledger;

    let started = Instant::now();
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    for id in ids {
        let (did, peer) = (id.did(), id.peer_id());
        let ctx = Arc::new(LinkContext::new(
            id,
            did,
            Arc::new(EmbeddedLedger::in_memory(ledger.clone())),
            // Every node shares 127.0.0.1 here, so the per-address handshake
            // limit (meant for one host) would throttle the whole overlay.
            LinkLimits { max_handshakes_per_ip: 1024, ..LinkLimits::default() },
        ));
        let bootstrap = nodes.first().map(|first| first.overlay.listen_addr().clone()).into_iter().collect();
        let config = OverlayConfig { listen: "127.0.0.1:0".parse().unwrap(), bootstrap, ..OverlayConfig::default() };
        let (overlay, mut events) = Overlay::start(ctx, config).await.unwrap();
        let joined = nodes.len();
        if let Some(first) = nodes.first_mut() {
            // Joined: the newcomer routes to the bootstrap node, which has
            // admitted it (its k-buckets may be full, so it need not route
            // back).
            wait_for(&mut events, OverlayEvent::Routable(first.did), joined).await;
            wait_for(&mut first.events, OverlayEvent::PeerUp(did), joined).await;
        }
        nodes.push(Node { did, peer, overlay, events });
    }
    println!("{n} nodes joined through one bootstrap node in {:.1} s", started.elapsed().as_secs_f64());
    // Let Kademlia's automatic bootstrap fill the tables.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut tables = HashMap::new();
    for node in &nodes {
        let routes = node.overlay.routes().await.unwrap();
        let peers = routes.into_iter().filter_map(|r| r.peer_id.parse::<libp2p::PeerId>().ok());
        tables.insert(node.peer, peers.collect::<Vec<_>>());
    }
    let mut sizes: Vec<usize> = tables.values().map(Vec::len).collect();
    let (median_size, min_size) = (percentile(&mut sizes, 0.5), sizes[0]);
    println!("routing tables: median {median_size} peers, smallest {min_size}");
    let mut link_ends = 0;
    for node in &nodes {
        link_ends += node.overlay.peers().await.unwrap().len();
    }
    let rss = support::rss_kib();
    println!(
        "process memory {:.0} MiB for {n} nodes and {link_ends} link ends: {:.0} KiB per link end, all per-node costs included",
        rss as f64 / 1024.0,
        rss as f64 / link_ends.max(1) as f64
    );

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let pick_pair = |rng: &mut XorShift| loop {
        let (a, b) = (rng.below(n), rng.below(n));
        if a != b {
            return (a, b);
        }
    };
    let mut walk_hops = Vec::new();
    let mut unreachable = 0;
    for _ in 0..WALKS {
        let (a, b) = pick_pair(&mut rng);
        match hops(&tables, nodes[a].peer, nodes[b].peer) {
            Some(h) => walk_hops.push(h),
            None => unreachable += 1,
        }
    }
    let target = (n as f64).log2() / 2.0;
    println!(
        "hops (greedy walk, {WALKS} pairs): median {}, p99 {}, max {}, not found {unreachable}; target median <= log2({n})/2 = {target:.1}",
        percentile(&mut walk_hops, 0.5),
        percentile(&mut walk_hops, 0.99),
        walk_hops.iter().max().copied().unwrap_or(0),
    );

    // Kademlia walks the network again whenever a new peer enters a routing
    // table, and early lookups link many peers for the first time; the
    // first round shows that cold overlay, the second the settled one.
    for round in ["cold", "settled"] {
        let (mut latencies, mut requests, mut found) = (Vec::new(), Vec::new(), 0);
        for _ in 0..LOOKUPS {
            let (a, b) = pick_pair(&mut rng);
            let lookup = nodes[a].overlay.lookup(nodes[b].did).await.unwrap();
            found += usize::from(lookup.found);
            latencies.push(lookup.duration);
            requests.push(lookup.requests);
        }
        println!(
            "lookups, {round} ({LOOKUPS}): found {found}/{LOOKUPS}, latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms; requests p50 {}",
            percentile(&mut latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&mut latencies, 0.9).as_secs_f64() * 1e3,
            percentile(&mut latencies, 0.99).as_secs_f64() * 1e3,
            percentile(&mut requests, 0.5),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn main() {
    let n = std::env::var("CARRIER_BENCH_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(n));
}
