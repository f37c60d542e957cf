//! Sans-IO core of Carrier: wire formats, identities and ledger verification.
//!
//! ```text
//!   proto/carrier/v1/*.proto ──prost──▶ pb (generated types)
//!                                        │
//!   identity: Did, Identity, key files, cards
//!                                        │
//!   ledger:  an author signs a request (Entry) ──Sequencer──▶ next leaf of the
//!            RFC 6962 Merkle log, and a C2SP checkpoint signed by the log key;
//!            every node re-checks each entry (LedgerState) and proves batches
//!            against checkpoints (merkle, check_batch)
//! ```
//!
//! Nothing here opens a socket, spawns a task or reads the clock: callers pass
//! bytes and times in and get values or named errors out. The one exception is
//! [`keystore`], a few lines of blocking file IO that keep the "key files are
//! 0600" rule in one place for the daemon and the SDK.
//!
//! ```
//! use carrier_proto::identity::{Identity, IdentityKind};
//! use carrier_proto::ledger::{LedgerState, Op, Quotas, Rejection, Sequencer, WitnessPolicy};
//!
//! let registrar = Identity::generate(IdentityKind::Registrar);
//! let log = Identity::generate(IdentityKind::Log);
//! let device = Identity::generate(IdentityKind::Device);
//!
//! let mut ledger = LedgerState::new();
//! let genesis = Op::Genesis {
//!     network: "home".into(),
//!     registrars: vec![registrar.signing_key()],
//!     log_key: log.signing_key(),
//!     quotas: Quotas::default(),
//!     witnesses: WitnessPolicy::default(),
//! };
//! // The authors sign; the sequencer (holding the log key) orders.
//! let mut sequencer = Sequencer::new(log, None);
//! let keep = |_: &_| Ok::<(), Rejection>(());
//! let entry = ledger.next_entry(genesis, 1_000, &registrar);
//! sequencer.sequence(&mut ledger, entry, 1_000, keep).unwrap();
//! let register = Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
//! let entry = ledger.next_entry(register, 2_000, &registrar);
//! sequencer.sequence(&mut ledger, entry, 2_000, keep).unwrap();
//!
//! assert!(ledger.resolve(&device.did()).unwrap().is_active());
//! assert_eq!(sequencer.checkpoint(&ledger, 3_000).size(), 2);
//! ```

#![forbid(unsafe_code)]

pub mod addr;
pub mod domain;
pub mod frame;
pub mod handshake;
pub mod identity;
pub mod keystore;
pub mod ledger;
pub mod mailbox;
pub mod messaging;
pub mod nat;
mod replay;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Types generated from `proto/carrier/v1`. The proto files are the source of
/// truth for every format; these are their Rust form.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/carrier.v1.rs"));
}
