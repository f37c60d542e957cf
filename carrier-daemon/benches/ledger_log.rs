//! The sequenced Merkle log at 100,000 entries, in one run:
//!
//! - restart: a daemon's store re-opening its verified log (rules, tree,
//!   root against the stored checkpoint), beside the full replay of every
//!   signature that `carrierctl ledger verify` does;
//! - sync: a new node that holds only the genesis fetches the whole log
//!   from one peer over a join connection, every batch proven against the
//!   peer's checkpoint and every entry's signature and rules checked;
//! - admission: link admission with a checkpoint note in the handshake
//!   (stored ledgers) beside admission without one (in-memory ledgers),
//!   and what checking a peer's note costs afterwards.
//!
//! Run: `cargo bench -p carrier-daemon --bench ledger_log`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carrier_daemon::ledger::{EmbeddedLedger, Ledger, LedgerStore};
use carrier_daemon::link::{LinkContext, LinkLimits, join, quic};
use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::ledger::{Entry, LedgerState, Op, Sequencer, SignedCheckpoint, check_batch};

const ENTRIES: u64 = 100_000;
const RUNS: usize = 3;
const ADMISSIONS: usize = 300;

fn log_key() -> Identity {
    Identity::from_secrets(IdentityKind::Log, [7; 32], [8; 32])
}

/// A sequenced log of `ENTRIES` entries (devices registered by the
/// registrar), with `members` among the first devices; its encoded entries
/// and final state.
fn build(registrar: &Identity, members: &[&Identity]) -> (Vec<Vec<u8>>, LedgerState, SignedCheckpoint) {
    let mut sequencer = Sequencer::new(log_key(), None);
    let mut state = LedgerState::new();
    let mut encoded = Vec::with_capacity(ENTRIES as usize);
    let mut add = |state: &mut LedgerState, op: Op| {
        let entry = state.next_entry(op, 1 << 41, registrar);
        encoded.push(entry.encoded().to_vec());
        sequencer.sequence(state, entry, 1 << 41, |_| Ok::<(), carrier_proto::ledger::Rejection>(())).unwrap();
    };
    // A registrar registering a fleet: no quota in the way.
    let quotas = carrier_proto::testing::TestNetwork::unlimited();
    let genesis = Op::Genesis {
        network: "bench".into(),
        registrars: vec![registrar.signing_key()],
        log_key: log_key().signing_key(),
        quotas,
        witnesses: Default::default(),
    };
    add(&mut state, genesis);
    for member in members {
        add(&mut state, Op::RegisterDevice { did: member.did(), keys: member.public_keys(), roles: vec![] });
    }
    while state.head().height < ENTRIES {
        let device = Identity::generate(IdentityKind::Device);
        add(&mut state, Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] });
    }
    let checkpoint = sequencer.checkpoint(&state, 1 << 41);
    (encoded, state, checkpoint)
}

/// Writes the log into `dir` as a daemon's store, in proven batches.
fn store(dir: &Path, encoded: &[Vec<u8>], full: &LedgerState, checkpoint: &SignedCheckpoint) {
    let genesis = Entry::decode(&encoded[0]).unwrap();
    let mut store = LedgerStore::create(dir, genesis, &mut Sequencer::new(log_key(), None)).unwrap();
    let size = checkpoint.size();
    for chunk in encoded[1..].chunks(10_000) {
        let from = store.state().head().height;
        let end = from + chunk.len() as u64;
        let proof = if end < size { full.tree().consistency_proof(end, size).unwrap() } else { vec![] };
        let batch = check_batch(store.state(), chunk, size, checkpoint.root(), &proof).unwrap();
        store.extend(batch, checkpoint).unwrap();
    }
    assert_eq!(store.checkpoint().unwrap().size(), size);
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn restart(dir: &Path) {
    let open = median((0..RUNS).map(|_| time(|| drop(LedgerStore::open(dir).unwrap()))).collect());
    let verify = median((0..RUNS).map(|_| time(|| drop(LedgerStore::verify(dir).unwrap()))).collect());
    println!("restart on {ENTRIES} entries (median of {RUNS})");
    println!("  open (root against the stored checkpoint)   {:>8.1} ms", open.as_secs_f64() * 1e3);
    println!("  full replay of every signature (verify)     {:>8.1} ms", verify.as_secs_f64() * 1e3);
    println!("  open / full replay                          {:>8.2}x\n", open.as_secs_f64() / verify.as_secs_f64());
}

fn time(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

/// An endpoint whose connections `ctx` accepts (links and join
/// connections alike).
fn serve(ctx: Arc<LinkContext>) -> SocketAddr {
    let endpoint = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(incoming) = endpoint.accept().await {
            if let Ok(link) = ctx.accept(incoming).await {
                kept.push(link.connection);
            }
        }
    });
    addr
}

fn limits() -> LinkLimits {
    LinkLimits { max_handshakes: 4096, max_handshakes_per_ip: 4096, retry_above: 4096, ..LinkLimits::default() }
}

async fn sync(root: &Path, encoded: &[Vec<u8>], server: Arc<LinkContext>) {
    let addr = serve(server);
    let mut rates = Vec::new();
    for run in 0..RUNS {
        let dir = root.join(format!("newcomer{run}"));
        let replica = LedgerStore::create_replica(&dir, Entry::decode(&encoded[0]).unwrap()).unwrap();
        let ledger = EmbeddedLedger::with_store(replica);
        let started = Instant::now();
        let applied = join::fetch(&ledger, addr).await.unwrap();
        let took = started.elapsed();
        assert_eq!(applied, ENTRIES - 1);
        assert_eq!(ledger.head().height, ENTRIES);
        rates.push((applied as f64 / took.as_secs_f64(), took));
    }
    rates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (rate, took) = rates[rates.len() / 2];
    println!("new node syncs {ENTRIES} entries from one peer (join connection, median of {RUNS})");
    println!(
        "  {rate:>10.0} entries/s   ({:.2} s; each batch proven, every signature and rule checked)\n",
        took.as_secs_f64()
    );
}

async fn admissions(a: &Arc<LinkContext>, b: &Arc<LinkContext>) -> Duration {
    let addr = serve(Arc::clone(b));
    let endpoint = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut samples = Vec::with_capacity(ADMISSIONS);
    for _ in 0..ADMISSIONS {
        let started = Instant::now();
        let link = a.dial(&endpoint, addr, Some(b.did())).await.unwrap();
        samples.push(started.elapsed());
        link.connection.close(0u32.into(), b"");
    }
    median(samples)
}

async fn admission(stored: (Arc<LinkContext>, Arc<LinkContext>), memory: (Arc<LinkContext>, Arc<LinkContext>)) {
    // Alternate, so both see the same machine.
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        with.push(admissions(&stored.0, &stored.1).await);
        without.push(admissions(&memory.0, &memory.1).await);
    }
    let (with, without) = (median(with), median(without));
    let note = stored.0.ledger.checkpoint().unwrap();
    let checks = 2_000;
    let started = Instant::now();
    for _ in 0..checks {
        std::hint::black_box(stored.1.ledger.judge(note.note()).unwrap());
    }
    let check = started.elapsed() / checks;
    println!("admission (IK dial → admitted, p50 of {ADMISSIONS}, median of {RUNS} runs)");
    println!(
        "  with a {}-byte checkpoint note in the handshake   {:>7.0} µs",
        note.note().len(),
        with.as_secs_f64() * 1e6
    );
    println!("  without (in-memory ledgers, empty note)          {:>7.0} µs", without.as_secs_f64() * 1e6);
    println!(
        "  difference                                       {:>7.0} µs",
        (with.as_secs_f64() - without.as_secs_f64()) * 1e6
    );
    println!("  checking the peer's note afterwards (ledger sync) {:>6.0} µs\n", check.as_secs_f64() * 1e6);
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let registrar = Identity::generate(IdentityKind::Registrar);
    let (a, b) = (Identity::generate(IdentityKind::Device), Identity::generate(IdentityKind::Device));
    let started = Instant::now();
    let (encoded, full, checkpoint) = build(&registrar, &[&a, &b]);
    for name in ["a", "b"] {
        store(&root.path().join(name), &encoded, &full, &checkpoint);
    }
    println!("built and stored a {ENTRIES}-entry log twice in {:.1} s\n", started.elapsed().as_secs_f64());
    restart(&root.path().join("a"));

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let open =
            |name: &str| Arc::new(EmbeddedLedger::with_store(LedgerStore::open(&root.path().join(name)).unwrap()));
        let ledger_a: Arc<dyn Ledger> = open("a");
        let ledger_b: Arc<dyn Ledger> = open("b");
        let (a_did, b_did) = (a.did(), b.did());
        let ctx_a = Arc::new(LinkContext::new(a, a_did, ledger_a, limits()));
        let ctx_b = Arc::new(LinkContext::new(b, b_did, ledger_b, limits()));
        sync(root.path(), &encoded, Arc::clone(&ctx_b)).await;

        let mut net = carrier_proto::testing::TestNetwork::new("memory");
        let (ma, mb) = (net.register_device(), net.register_device());
        let memory = |id: Identity| {
            let did = id.did();
            Arc::new(LinkContext::new(id, did, Arc::new(EmbeddedLedger::in_memory(net.ledger.clone())), limits()))
        };
        let (mem_a, mem_b) = (memory(ma), memory(mb));
        admission((ctx_a, ctx_b), (mem_a, mem_b)).await;
    });
}
