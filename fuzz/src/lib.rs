//! What the fuzz targets share: one small network built from fixed seeds
//! (so every run sees the same keys, entries and checkpoints), a reader of
//! fuzz input, and the catch-up check that ledger sync and `publish` run.
//!
//! The network, in log order:
//!
//! ```text
//!  0 genesis        "fuzz": registrar R, log key L, witness W (quorum 1)
//!  1 register D0    by R, role "relay"
//!  2 register D1    by R
//!  3 register A0    app of D0, signed by D0 with A0's consent
//!  ── base: 4 entries, checkpoint `base_checkpoint` (cosigned by W)
//!  4 register D2    by R
//!  5 rotate D1      to D1b's keys, signed by D1
//!  6 register A1    app of D1, signed by D1b
//!  7 revoke D2      by R
//!  ── full: 8 entries, checkpoint `checkpoint` (cosigned by W, names D0 as sequencer)
//! ```
//!
//! `S` is a device key nobody registered.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::sync::OnceLock;

use carrier_proto::handshake::{ChannelBinding, Local};
use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::ledger::{
    self, Answer, CatchUp, Checked, Checkpoint, Consent, Entry, EntryHash, Held, Judgement, LedgerState, LogTrust, Op,
    Quotas, SignedCheckpoint, WitnessKey, WitnessPolicy,
};

/// Milliseconds of the first entry; entries are one second apart.
pub const T0_MS: u64 = 1_700_000_000_000;
/// When the checkpoints were signed and cosigned.
pub const CHECKPOINT_TIME_S: u64 = 1_700_000_100;
/// Entries in the base (what a node that is behind holds).
pub const BASE: usize = 4;
/// The witness's name.
pub const WITNESS_NAME: &str = "witness.example/w1";
/// The binding both ends of a fixture handshake share.
pub const BINDING: ChannelBinding = ChannelBinding([42; 32]);

/// An identity from a one-byte tag: both secrets are fixed by it.
pub fn identity(kind: IdentityKind, tag: u8) -> Identity {
    Identity::from_secrets(kind, [tag; 32], [tag.wrapping_add(100); 32])
}

pub struct Fixture {
    pub registrar: Identity,
    pub log: Identity,
    pub witness: Identity,
    pub witness_key: WitnessKey,
    pub d0: Identity,
    pub d1: Identity,
    pub d1b: Identity,
    pub d2: Identity,
    pub a0: Identity,
    pub a1: Identity,
    pub stranger: Identity,
    pub network: EntryHash,
    pub genesis: Entry,
    /// Every entry, encoded, in log order.
    pub entries: Vec<Vec<u8>>,
    /// The first [`BASE`] entries applied.
    pub base_state: LedgerState,
    /// The ledger at every height: `prefixes[h]` holds the first `h` entries.
    pub prefixes: Vec<LedgerState>,
    /// All entries applied.
    pub state: LedgerState,
    /// Checkpoint of the base, cosigned.
    pub base_checkpoint: SignedCheckpoint,
    /// Checkpoint of every entry, cosigned, naming D0 as the sequencer.
    pub checkpoint: SignedCheckpoint,
    /// A checkpoint of 5 entries the log key signed with a root no tree
    /// has: with `checkpoint` it is a fork.
    pub forked: SignedCheckpoint,
}

impl Fixture {
    /// Every identity, for targets that pick a signer or a key by index.
    pub fn pool(&self) -> [&Identity; 10] {
        [
            &self.registrar,
            &self.log,
            &self.witness,
            &self.d0,
            &self.d1,
            &self.d1b,
            &self.d2,
            &self.a0,
            &self.a1,
            &self.stranger,
        ]
    }

    /// What checkpoints of this network are checked against (the witness
    /// counts; one cosignature is needed).
    pub fn trust(&self) -> LogTrust<'_> {
        self.state.network().expect("a genesis").trust()
    }

    /// The listener of fixture handshakes: D0, holding the full checkpoint.
    pub fn listener(&self) -> Local<'_> {
        Local { did: self.d0.did(), identity: &self.d0, network_id: self.network, checkpoint: self.checkpoint.note() }
    }

    /// The dialer of fixture handshakes: D1 with its rotated keys, holding
    /// the base checkpoint.
    pub fn dialer(&self) -> Local<'_> {
        Local {
            did: self.d1.did(),
            identity: &self.d1b,
            network_id: self.network,
            checkpoint: self.base_checkpoint.note(),
        }
    }

    /// What a node holding the base and its checkpoint holds.
    pub fn held_base(&self) -> Held<'_> {
        Held { state: &self.base_state, checkpoint: Some(&self.base_checkpoint), awaited: None }
    }

    /// A catch-up from the base towards the full checkpoint, as `judge`
    /// gives it.
    pub fn catch_up(&self) -> Box<CatchUp> {
        match ledger::judge(self.held_base(), self.checkpoint.clone()) {
            Judgement::Fetch(catch_up) => catch_up,
            other => panic!("fixture: judge gave {other:?}"),
        }
    }

    /// The index of an encoded entry in the fixture's log.
    pub fn index_of(&self, encoded: &[u8]) -> Option<usize> {
        self.entries.iter().position(|e| e == encoded)
    }
}

fn sign_checkpoint(f: &Fixture, size: u64, root: EntryHash, sequencer: bool) -> SignedCheckpoint {
    let checkpoint = Checkpoint { size, root, sequencer: sequencer.then(|| f.d0.did()) };
    let mut signed = SignedCheckpoint::sign(&f.network, checkpoint, &f.log, CHECKPOINT_TIME_S);
    let cosignature = signed.cosign(&f.witness, &f.witness_key, CHECKPOINT_TIME_S + 1);
    let added = signed.add_cosignatures(&[cosignature], std::slice::from_ref(&f.witness_key));
    assert_eq!(added, 1, "fixture: the witness cosignature");
    signed
}

fn build() -> Fixture {
    let registrar = identity(IdentityKind::Registrar, 1);
    let log = identity(IdentityKind::Log, 2);
    let witness = identity(IdentityKind::Registrar, 3);
    let witness_key = WitnessKey::new(WITNESS_NAME, witness.signing_key()).expect("fixture: witness key");
    let (d0, d1, d1b, d2) = (
        identity(IdentityKind::Device, 10),
        identity(IdentityKind::Device, 11),
        identity(IdentityKind::Device, 13),
        identity(IdentityKind::Device, 12),
    );
    let (a0, a1) = (identity(IdentityKind::App, 20), identity(IdentityKind::App, 21));
    let stranger = identity(IdentityKind::Device, 30);

    let genesis_op = Op::Genesis {
        network: "fuzz".into(),
        registrars: vec![registrar.signing_key()],
        log_key: log.signing_key(),
        quotas: Quotas::default(),
        witnesses: WitnessPolicy { witnesses: vec![witness_key.clone()], quorum: 1 },
    };
    let genesis = Entry::sign(EntryHash::ZERO, T0_MS, genesis_op, &registrar);
    let network = genesis.hash();

    let mut state = LedgerState::new();
    let mut entries = Vec::new();
    let mut prefixes = vec![LedgerState::new()];
    let mut append = |state: &mut LedgerState, entry: Entry| {
        entries.push(entry.encoded().to_vec());
        state.append(entry).expect("fixture: entry refused");
        prefixes.push(state.clone());
    };
    append(&mut state, genesis.clone());
    let at = |i: u64| T0_MS + i * 1000;
    let register =
        |did: &Identity, roles: Vec<String>| Op::RegisterDevice { did: did.did(), keys: did.public_keys(), roles };
    append(&mut state, Entry::sign(network, at(1), register(&d0, vec!["relay".into()]), &registrar));
    append(&mut state, Entry::sign(network, at(2), register(&d1, vec![]), &registrar));
    let app = |app: &Identity, device: &Identity, name: &str| Op::RegisterApp {
        did: app.did(),
        keys: app.public_keys(),
        device: device.did(),
        name: name.into(),
        consent: Consent::sign(app, &device.did(), &network),
    };
    append(&mut state, Entry::sign(network, at(3), app(&a0, &d0, "chat"), &d0));
    let base_state = state.clone();
    append(&mut state, Entry::sign(network, at(4), register(&d2, vec![]), &registrar));
    let rotate = Op::RotateKeys { did: d1.did(), keys: d1b.public_keys() };
    append(&mut state, Entry::sign(network, at(5), rotate, &d1));
    append(&mut state, Entry::sign(network, at(6), app(&a1, &d1, "files"), &d1b));
    let revoke = Op::Revoke { did: d2.did(), reason: "lost".into() };
    append(&mut state, Entry::sign(network, at(7), revoke, &registrar));
    drop(append);

    let placeholder =
        SignedCheckpoint::sign(&network, Checkpoint { size: 0, root: EntryHash::ZERO, sequencer: None }, &log, 0);
    let mut fixture = Fixture {
        registrar,
        log,
        witness,
        witness_key,
        d0,
        d1,
        d1b,
        d2,
        a0,
        a1,
        stranger,
        network,
        genesis,
        entries,
        base_state,
        prefixes,
        state,
        base_checkpoint: placeholder.clone(),
        checkpoint: placeholder.clone(),
        forked: placeholder,
    };
    let base_head = fixture.base_state.head();
    fixture.base_checkpoint = sign_checkpoint(&fixture, base_head.height, base_head.root, false);
    let head = fixture.state.head();
    fixture.checkpoint = sign_checkpoint(&fixture, head.height, head.root, true);
    fixture.forked = sign_checkpoint(&fixture, 5, EntryHash([5; 32]), false);
    fixture
}

/// The fixture, built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

/// Reads fuzz input front to back; past the end every read gives zeros or
/// nothing, so any input is a valid instruction stream.
#[derive(Debug, Clone)]
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        for b in &mut bytes {
            *b = self.u8();
        }
        u64::from_be_bytes(bytes)
    }

    pub fn hash(&mut self) -> EntryHash {
        let mut bytes = [0u8; 32];
        for b in &mut bytes {
            *b = self.u8();
        }
        EntryHash(bytes)
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A part with a 2-byte length prefix (cut short at the end).
    pub fn part(&mut self) -> &'a [u8] {
        let len = self.u16() as usize;
        self.bytes(len)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.0.len())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes parts in the form [`Input::part`] reads (for seeds).
pub fn parts<I, B>(parts: I) -> Vec<u8>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let mut out = Vec::new();
    for part in parts {
        let part = part.as_ref();
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Checks a peer's answer to `catch_up` (which `judge` gave a node holding
/// `held`'s entries) as ledger sync, join and `publish` do, and applies what
/// proves out. When the target is the fixture's full checkpoint, asserts
/// what no answer may achieve: a batch other than the log's real next
/// entries, or fork evidence against two honest checkpoints. Returns how
/// many entries were applied (`None`: refused).
pub fn check_answer(
    catch_up: &mut CatchUp,
    held: &LedgerState,
    entries: &[Vec<u8>],
    proof: &[Vec<u8>],
    prefix_root: &[u8],
    prefix_proof: &[Vec<u8>],
) -> Option<usize> {
    let f = fixture();
    let honest = catch_up.target().checkpoint() == f.checkpoint.checkpoint();
    let (proof, prefix) = carrier_daemon::ledger::answer_proofs(proof, prefix_root, prefix_proof)?;
    let from = held.height();
    catch_up.fetch(from)?;
    let prefix = prefix.as_ref().map(|(root, proof)| (*root, proof.as_slice()));
    match catch_up.check(held, Answer { entries, proof: &proof, prefix }) {
        Ok(Checked::Batch(batch)) => {
            assert_eq!(batch.from(), from);
            let taken: Vec<&[u8]> = batch.entries().iter().map(Entry::encoded).collect();
            if honest {
                let start = from as usize;
                let real: Vec<&[u8]> = f.entries[start..start + taken.len()].iter().map(Vec::as_slice).collect();
                assert_eq!(taken, real, "a batch other than the log's next entries proved out");
            }
            let mut state = held.clone();
            let applied = batch.apply(&mut state);
            if honest {
                applied.expect("the real entries apply");
                assert_eq!(state.head(), f.prefixes[state.height() as usize].head());
                // The catch-up goes on from there, with nothing left to prove.
                if let Some(next) = catch_up.fetch(state.height()) {
                    assert_eq!((next.from, next.prove_from), (state.height(), 0));
                }
            }
            Some(taken.len())
        }
        Ok(Checked::Fork(fork)) => {
            assert!(!honest, "fork evidence against two honest checkpoints: {fork:?}");
            None
        }
        Err(_) => None,
    }
}

/// The fixture log served as a daemon serves it (an in-memory ledger).
pub fn served() -> &'static carrier_daemon::ledger::EmbeddedLedger {
    static SERVED: OnceLock<carrier_daemon::ledger::EmbeddedLedger> = OnceLock::new();
    SERVED.get_or_init(|| {
        let ledger = carrier_daemon::ledger::EmbeddedLedger::in_memory(LedgerState::new());
        for bytes in &fixture().entries {
            ledger.append(Entry::decode(bytes).expect("fixture entry")).expect("fixture entry applies");
        }
        ledger
    })
}

/// Feeds `bytes` to an async reader in chunks whose sizes `sizes` gives
/// (cycled; 0 is read as 1), to drive the daemon's `FrameReader`.
pub struct Chunked<'a> {
    pub bytes: &'a [u8],
    pub sizes: &'a [u8],
    pub turn: usize,
}

impl tokio::io::AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let size = match self.sizes {
            [] => usize::MAX,
            sizes => usize::from(sizes[self.turn % sizes.len()]).max(1),
        };
        self.turn += 1;
        let n = size.min(self.bytes.len()).min(buf.remaining());
        let (head, rest) = self.bytes.split_at(n);
        buf.put_slice(head);
        self.bytes = rest;
        std::task::Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (its reads are from memory) to its end.
pub fn run_ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}
