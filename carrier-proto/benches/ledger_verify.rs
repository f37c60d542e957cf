//! Ledger verification and lookup speed.
//!
//! Run: `cargo bench -p carrier-proto --bench ledger_verify`
//!
//! Builds a 100,000-entry ledger (devices, apps, rotations, revocations),
//! then measures, in the same run:
//! - full replay from genesis with batch signature verification (what the
//!   daemon does on start-up), against replay that checks each signature
//!   alone;
//! - `resolve` on ledgers of 1,000, 10,000 and 100,000 entries, to show it
//!   does not grow with the ledger.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use carrier_proto::identity::{Did, Identity, IdentityKind};
use carrier_proto::ledger::{Entry, LedgerState, Op, replay};

const ENTRIES: usize = 100_000;

struct Built {
    encoded: Vec<Vec<u8>>,
    dids: Vec<Did>,
}

fn build(entries: usize) -> Built {
    let registrar = Identity::generate(IdentityKind::Registrar);
    let mut state = LedgerState::new();
    let mut encoded = Vec::with_capacity(entries);
    let mut dids = Vec::new();
    // Each device's DID and its current keys (which change on rotation).
    let mut devices: Vec<(Did, Identity)> = Vec::new();
    let mut push = |state: &mut LedgerState, entry: Entry| {
        encoded.push(entry.encoded().to_vec());
        state.append(entry).unwrap();
    };
    let log = Identity::generate(IdentityKind::Log);
    let quotas = carrier_proto::ledger::Quotas::default();
    let genesis = Op::Genesis {
        network: "bench".into(),
        registrars: vec![registrar.signing_key()],
        log_key: log.signing_key(),
        quotas,
        witnesses: carrier_proto::ledger::WitnessPolicy::default(),
    };
    let entry = state.next_entry(genesis, 1, &registrar);
    push(&mut state, entry);
    let mut time = 1;
    while state.head().height < entries as u64 {
        time += 1;
        let n = state.head().height;
        let entry = match n % 10 {
            // Every tenth entry: an app registered by the latest device.
            0 if !devices.is_empty() => {
                let app = Identity::generate(IdentityKind::App);
                let (host_did, host) = devices.last().unwrap();
                dids.push(app.did());
                let network = state.network().expect("genesis").id;
                let consent = carrier_proto::ledger::Consent::sign(&app, host_did, &network);
                let op = Op::RegisterApp {
                    did: app.did(),
                    keys: app.public_keys(),
                    device: *host_did,
                    name: "app".into(),
                    consent,
                };
                state.next_entry(op, time, host)
            }
            // Now and then a device rotates its keys (self-signed)...
            5 if n % 20 == 5 && !devices.is_empty() => {
                let (did, old) = devices.pop().unwrap();
                let new = Identity::generate(IdentityKind::Device);
                let op = Op::RotateKeys { did, keys: new.public_keys() };
                let entry = state.next_entry(op, time, &old);
                devices.push((did, new));
                entry
            }
            // ...or is revoked by the registrar.
            7 if n % 50 == 7 && devices.len() > 1 => {
                let (did, _) = devices.remove(0);
                let op = Op::Revoke { did, reason: "bench".into() };
                state.next_entry(op, time, &registrar)
            }
            _ => {
                let device = Identity::generate(IdentityKind::Device);
                dids.push(device.did());
                let op = Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
                let entry = state.next_entry(op, time, &registrar);
                devices.push((device.did(), device));
                entry
            }
        };
        push(&mut state, entry);
    }
    Built { encoded, dids }
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed()
        })
        .min()
        .unwrap()
}

fn replay_one_by_one(encoded: &[Vec<u8>]) -> LedgerState {
    let mut state = LedgerState::new();
    for bytes in encoded {
        state.append(Entry::decode(bytes).unwrap()).unwrap();
    }
    state
}

/// Nanoseconds per `resolve`: (random DIDs across the ledger, one DID over
/// and over). The first includes cache misses, which grow with the table's
/// memory; the second is the lookup's own work.
fn resolve_ns(built: &Built, entries: usize) -> (f64, f64) {
    let state = replay(&built.encoded[..entries]).unwrap();
    let dids: Vec<Did> = built.dids.iter().copied().filter(|d| state.resolve(d).is_some()).collect();
    let lookups = 1_000_000;
    let per_lookup = |pick: &dyn Fn(usize) -> usize| {
        let elapsed = best_of(3, || {
            let mut active = 0usize;
            for i in 0..lookups {
                active += usize::from(state.resolve(&dids[pick(i)]).is_some_and(|r| r.is_active()));
            }
            active
        });
        elapsed.as_nanos() as f64 / lookups as f64
    };
    // A large prime stride, so consecutive lookups do not share cache lines.
    let random = per_lookup(&|i| (i * 7919) % dids.len());
    let hot = per_lookup(&|_| dids.len() / 2);
    (random, hot)
}

fn main() {
    println!("building a {ENTRIES}-entry ledger...");
    let built = build(ENTRIES);
    let bytes: usize = built.encoded.iter().map(Vec::len).sum();
    println!("ledger: {ENTRIES} entries, {:.1} MiB encoded\n", bytes as f64 / (1 << 20) as f64);

    let batch = best_of(3, || replay(&built.encoded).unwrap());
    let single = best_of(1, || replay_one_by_one(&built.encoded));
    let rate = |d: Duration| ENTRIES as f64 / d.as_secs_f64();
    println!("full verification (decode, signature, chain, authority, index), one core:");
    println!("  batch signatures  {:>8.0} entries/s  ({:.2} s)", rate(batch), batch.as_secs_f64());
    println!("  single signatures {:>8.0} entries/s  ({:.2} s)", rate(single), single.as_secs_f64());
    println!("  batch speed-up    {:>8.2}x\n", single.as_secs_f64() / batch.as_secs_f64());

    println!("resolve (hash index), per lookup:      spread DIDs   one DID");
    for entries in [1_000, 10_000, ENTRIES] {
        let (random, hot) = resolve_ns(&built, entries);
        println!("  {entries:>7} entries                    {random:>6.1} ns  {hot:>6.1} ns");
    }
}
