//! Test support: a network with one registrar and an in-memory ledger, for
//! the workspace's tests and benchmarks. Built with `cfg(test)` or the
//! `testing` feature; never part of a release build's API.

// Helpers for tests: a refused entry is a bug in the test, so they panic.
#![allow(clippy::expect_used)]

use crate::identity::{Did, Identity, IdentityKind, PublicKeys};
use crate::ledger::{Entry, LedgerState, Op, Quotas, Rejection, Sequencer, SignedCheckpoint, WitnessPolicy};

/// A registrar, a sequencer and the ledger they keep.
pub struct TestNetwork {
    /// The network's only registrar.
    pub registrar: Identity,
    /// The sequencer, holding the network's log key.
    pub sequencer: Sequencer,
    /// The ledger so far.
    pub ledger: LedgerState,
    /// Every entry, encoded, in log order.
    pub entries: Vec<Vec<u8>>,
    /// Time for the next entry, in milliseconds; advances by one per entry.
    clock: u64,
}

impl TestNetwork {
    /// A ledger holding only the genesis of network `name`.
    pub fn new(name: &str) -> Self {
        let registrar = Identity::generate(IdentityKind::Registrar);
        let log = Identity::generate(IdentityKind::Log);
        let genesis = Op::Genesis {
            network: name.into(),
            registrars: vec![registrar.signing_key()],
            log_key: log.signing_key(),
            quotas: Self::unlimited(),
            witnesses: WitnessPolicy::default(),
        };
        let sequencer = Sequencer::new(log, None);
        let mut net = Self { ledger: LedgerState::new(), entries: Vec::new(), clock: 1, registrar, sequencer };
        net.append_by_registrar(genesis);
        net
    }

    /// Quotas no test's ledger reaches.
    pub fn unlimited() -> Quotas {
        Quotas {
            max_requests_per_minute: u32::MAX,
            max_requests_per_day: u32::MAX,
            max_rotations_per_day: u32::MAX,
            registrar_requests_per_minute: u32::MAX,
            registrar_requests_per_day: u32::MAX,
            ..Quotas::default()
        }
    }

    /// Signs `op` with `signer` and sequences it; panics if refused.
    pub fn append(&mut self, op: Op, signer: &Identity) -> Entry {
        self.clock += 1;
        let entry = self.ledger.next_entry(op, self.clock, signer);
        self.sequence(entry.clone());
        entry
    }

    /// Signs `op` with the registrar and sequences it; panics if refused.
    pub fn append_by_registrar(&mut self, op: Op) -> Entry {
        self.clock += 1;
        let entry = self.ledger.next_entry(op, self.clock, &self.registrar);
        self.sequence(entry.clone());
        entry
    }

    fn sequence(&mut self, entry: Entry) {
        let persist = |_: &Entry| Ok::<(), Rejection>(());
        self.entries.push(entry.encoded().to_vec());
        self.sequencer.sequence(&mut self.ledger, entry, self.clock, persist).expect("test entry refused");
    }

    /// What this network's checkpoints are checked against.
    pub fn network_trust(&self) -> crate::ledger::LogTrust<'_> {
        self.ledger.network().expect("a genesis").trust()
    }

    /// The sequencer's checkpoint of the ledger as it stands.
    pub fn checkpoint(&self) -> SignedCheckpoint {
        self.sequencer.checkpoint(&self.ledger, self.clock)
    }

    /// Makes a device identity and registers it.
    pub fn register_device(&mut self) -> Identity {
        let device = Identity::generate(IdentityKind::Device);
        self.append_by_registrar(Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] });
        device
    }

    /// Rotates `did` to `keys` (signed by the registrar) and returns the entry.
    pub fn rotate(&mut self, did: Did, keys: PublicKeys) -> Entry {
        self.append_by_registrar(Op::RotateKeys { did, keys })
    }

    /// Revokes `did` (signed by the registrar) and returns the entry.
    pub fn revoke(&mut self, did: Did) -> Entry {
        self.append_by_registrar(Op::Revoke { did, reason: "test".into() })
    }
}
