//! Test support: a network with one registrar and an in-memory ledger, for
//! the workspace's tests and benchmarks. Built with `cfg(test)` or the
//! `testing` feature; never part of a release build's API.

// Helpers for tests: a refused entry is a bug in the test, so they panic.
#![allow(clippy::expect_used)]

use crate::identity::{Did, Identity, IdentityKind, PublicKeys};
use crate::ledger::{Entry, LedgerState, Op};

/// A registrar and the ledger it keeps.
pub struct TestNetwork {
    /// The network's only registrar.
    pub registrar: Identity,
    /// The ledger so far.
    pub ledger: LedgerState,
    /// Time for the next entry, in milliseconds; advances by one per entry.
    clock: u64,
}

impl TestNetwork {
    /// A ledger holding only the genesis of network `name`.
    pub fn new(name: &str) -> Self {
        let registrar = Identity::generate(IdentityKind::Registrar);
        let genesis = Op::Genesis { network: name.into(), registrars: vec![registrar.signing_key()] };
        let mut net = Self { ledger: LedgerState::new(), clock: 1, registrar };
        net.append_by_registrar(genesis);
        net
    }

    /// Signs `op` with `signer` and appends it; panics if the ledger refuses.
    pub fn append(&mut self, op: Op, signer: &Identity) -> Entry {
        self.clock += 1;
        let entry = self.ledger.next_entry(op, self.clock, signer);
        self.ledger.append(entry.clone()).expect("test entry refused");
        entry
    }

    /// Signs `op` with the registrar and appends it; panics if refused.
    pub fn append_by_registrar(&mut self, op: Op) -> Entry {
        self.clock += 1;
        let entry = self.ledger.next_entry(op, self.clock, &self.registrar);
        self.ledger.append(entry.clone()).expect("test entry refused");
        entry
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
