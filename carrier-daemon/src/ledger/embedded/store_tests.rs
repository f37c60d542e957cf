//! Store tests: durability across reopen, crash recovery, and tampering.

use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::ledger::{Op, Quotas};

use super::*;
use crate::ledger::CHECKPOINT_FILE;

struct Fixture {
    dir: tempfile::TempDir,
    registrar: Identity,
    sequencer: Sequencer,
}

fn genesis(registrar: &Identity, log: &Identity) -> Entry {
    let op = Op::Genesis {
        network: "store-test".into(),
        registrars: vec![registrar.signing_key()],
        log_key: log.signing_key(),
        quotas: Quotas::default(),
        witnesses: Default::default(),
    };
    LedgerState::new().next_entry(op, 1, registrar)
}

impl Fixture {
    /// A ledger with genesis and `devices` registered devices.
    fn new(devices: usize) -> (Self, LedgerStore) {
        let dir = tempfile::tempdir().unwrap();
        let registrar = Identity::generate(IdentityKind::Registrar);
        let log = Identity::generate(IdentityKind::Log);
        let entry = genesis(&registrar, &log);
        let mut sequencer = Sequencer::new(log, None);
        let mut store = LedgerStore::create(dir.path(), entry, &mut sequencer).unwrap();
        let mut fixture = Fixture { dir, registrar, sequencer };
        for _ in 0..devices {
            fixture.register(&mut store).unwrap();
        }
        (fixture, store)
    }

    fn register(&mut self, store: &mut LedgerStore) -> Result<Identity, StoreError> {
        let device = Identity::generate(IdentityKind::Device);
        let op = Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
        self.sequence(store, op, None)?;
        Ok(device)
    }

    /// Sequences `op` signed by `signer` (by default the registrar).
    fn sequence(&mut self, store: &mut LedgerStore, op: Op, signer: Option<&Identity>) -> Result<u64, StoreError> {
        let signer = signer.unwrap_or(&self.registrar);
        let entry = store.state().next_entry(op, 2, signer);
        let result = store.sequence(&mut self.sequencer, vec![entry], 2)?.remove(0);
        Ok(result?)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }
}

#[test]
fn entries_survive_reopen() {
    let (fixture, store) = Fixture::new(3);
    let head = store.state().head();
    drop(store);
    let store = LedgerStore::open(fixture.dir.path()).unwrap();
    assert_eq!(store.state().head(), head);
    assert_eq!(store.state().len(), 3);
    let genesis = store.read_entry(0).unwrap().unwrap();
    assert_eq!(genesis.hash(), store.state().network().unwrap().id);
    assert_eq!(store.read_entry(3).unwrap().unwrap().hash(), store.state().entry_hash(3).unwrap());
    assert_eq!(store.checkpoint().unwrap().root(), head.root);
    assert!(store.read_entry(4).unwrap().is_none());
}

#[test]
fn refused_entry_changes_nothing() {
    let (mut fixture, mut store) = Fixture::new(1);
    let before = fs::read(fixture.log()).unwrap();
    let stranger = Identity::generate(IdentityKind::Registrar);
    let device = Identity::generate(IdentityKind::Device);
    let op = Op::RegisterDevice { did: device.did(), keys: device.public_keys(), roles: vec![] };
    let err = fixture.sequence(&mut store, op, Some(&stranger)).unwrap_err();
    assert!(matches!(err, StoreError::Rejected(Rejection::Unauthorized { .. })), "{err}");
    assert_eq!(fs::read(fixture.log()).unwrap(), before);
    assert_eq!(store.state().head().height, 2);
    fixture.register(&mut store).unwrap();
    assert_eq!(LedgerStore::verify(fixture.dir.path()).unwrap().0.head(), store.state().head());
}

#[test]
fn torn_last_record_is_cut_on_open_and_reported_by_verify() {
    // A crash after the last record was (partly) written, before the
    // checkpoint that would cover it.
    let (mut fixture, mut store) = Fixture::new(1);
    let before = store.checkpoint().unwrap().clone();
    fixture.register(&mut store).unwrap();
    fs::write(fixture.dir.path().join(CHECKPOINT_FILE), before.note()).unwrap();
    let whole = fs::read(fixture.log()).unwrap();
    let last_start = store.payloads[2].0 as usize - log_format::RECORD_HEADER;
    drop(store);
    for cut in (last_start + 1..whole.len()).step_by(7) {
        fs::write(fixture.log(), &whole[..cut]).unwrap();
        let err = LedgerStore::verify(fixture.dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Torn { index: 2, .. }), "cut at {cut}: {err}");
        let store = LedgerStore::open(fixture.dir.path()).unwrap();
        assert_eq!(store.state().head().height, 2, "cut at {cut}");
        drop(store);
        assert_eq!(fs::read(fixture.log()).unwrap(), &whole[..last_start]);
    }
}

#[test]
fn appends_after_a_cut_tail() {
    let (mut fixture, store) = Fixture::new(1);
    drop(store);
    let mut bytes = fs::read(fixture.log()).unwrap();
    bytes.extend([0x10, 0, 0, 0, 1, 2]); // half a record header
    fs::write(fixture.log(), &bytes).unwrap();
    let mut store = LedgerStore::open(fixture.dir.path()).unwrap();
    fixture.register(&mut store).unwrap();
    drop(store);
    assert_eq!(LedgerStore::verify(fixture.dir.path()).unwrap().0.head().height, 3);
}

#[test]
fn any_flipped_byte_fails_verification_naming_the_entry() {
    let (fixture, store) = Fixture::new(3);
    let whole = fs::read(fixture.log()).unwrap();
    let starts: Vec<usize> = store.payloads.iter().map(|&(o, _)| o as usize - log_format::RECORD_HEADER).collect();
    drop(store);
    for position in 0..whole.len() {
        let mut bytes = whole.clone();
        bytes[position] ^= 0x04;
        fs::write(fixture.log(), &bytes).unwrap();
        let err = LedgerStore::verify(fixture.dir.path()).expect_err("flipped byte verified");
        let index = starts.iter().rposition(|&s| s <= position);
        let named = match (&err, index) {
            (StoreError::NotALedger(_) | StoreError::UnsupportedVersion { .. }, None) => true,
            (StoreError::Corrupt { index: i, .. } | StoreError::Torn { index: i, .. }, Some(e)) => *i == e,
            (StoreError::Invalid { source, .. }, Some(e)) => source.index == e as u64,
            _ => false,
        };
        assert!(named, "byte {position} (entry {index:?}): {err}");
    }
}

#[test]
fn damage_before_the_tail_is_never_cut() {
    let (fixture, store) = Fixture::new(2);
    let mid = store.payloads[1].0 as usize + 3;
    drop(store);
    let mut bytes = fs::read(fixture.log()).unwrap();
    bytes[mid] ^= 0xff;
    fs::write(fixture.log(), &bytes).unwrap();
    let err = LedgerStore::open(fixture.dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { index: 1, .. }), "{err}");
    assert_eq!(fs::read(fixture.log()).unwrap(), bytes, "open must not change a damaged ledger");
}

#[test]
fn one_writer_at_a_time() {
    let (fixture, _store) = Fixture::new(0);
    let err = LedgerStore::open(fixture.dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    // Read-only verification still works while the ledger is open.
    LedgerStore::verify(fixture.dir.path()).unwrap();
}

#[test]
fn names_missing_existing_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(LedgerStore::open(dir.path()), Err(StoreError::Missing(_))));
    fs::write(dir.path().join(LOG_FILE), b"hello, this is not a ledger").unwrap();
    assert!(matches!(LedgerStore::verify(dir.path()), Err(StoreError::NotALedger(_))));
    let registrar = Identity::generate(IdentityKind::Registrar);
    let log = Identity::generate(IdentityKind::Log);
    let entry = genesis(&registrar, &log);
    let mut sequencer = Sequencer::new(log, None);
    assert!(matches!(LedgerStore::create(dir.path(), entry, &mut sequencer), Err(StoreError::Exists(_))));
}

#[test]
fn open_refuses_a_log_that_does_not_match_its_checkpoint() {
    let (mut fixture, mut store) = Fixture::new(2);
    let old = store.checkpoint().unwrap().clone();
    fixture.register(&mut store).unwrap();
    drop(store);
    // An older checkpoint is consistent: the entries past it are cut.
    fs::write(fixture.dir.path().join(CHECKPOINT_FILE), old.note()).unwrap();
    let store = LedgerStore::open(fixture.dir.path()).unwrap();
    assert_eq!(store.state().head().height, 3);
    drop(store);
    // A checkpoint not signed by the log key is refused, naming the file.
    let forged = Sequencer::new(Identity::generate(IdentityKind::Log), None);
    let state = LedgerStore::verify(fixture.dir.path()).unwrap().0;
    fs::write(fixture.dir.path().join(CHECKPOINT_FILE), forged.checkpoint(&state, 5).note()).unwrap();
    let err = LedgerStore::open(fixture.dir.path()).map(|_| ()).unwrap_err();
    assert!(matches!(err, StoreError::Checkpoint { .. }), "{err}");
    // A missing checkpoint: nothing is cut or forgotten. Every entry is
    // checked by its signature and kept, and no sequencer may sign on it.
    fs::remove_file(fixture.dir.path().join(CHECKPOINT_FILE)).unwrap();
    let store = LedgerStore::open(fixture.dir.path()).unwrap();
    assert_eq!(store.state().head().height, 3);
    assert!(store.checkpoint().is_none());
    let err = store.may_sequence().unwrap_err();
    assert!(
        matches!(&err, StoreError::MissingCheckpoint { path, entries: 3 } if path.ends_with(CHECKPOINT_FILE)),
        "{err}"
    );
    drop(store);
    let err = LedgerStore::verify(fixture.dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::MissingCheckpoint { .. }), "{err}");
}

/// A log cut short on disk keeps its checkpoint as the one it awaits: no
/// entry is forgotten, and the sequencer refuses to sign on it.
#[test]
fn a_short_log_keeps_its_checkpoint_and_awaits_the_rest() {
    let (fixture, store) = Fixture::new(3);
    let full = store.checkpoint().unwrap().clone();
    let cut_at = store.payloads[2].0 - log_format::RECORD_HEADER as u64;
    drop(store);
    let file = fs::OpenOptions::new().write(true).open(fixture.log()).unwrap();
    file.set_len(cut_at).unwrap();
    drop(file);
    let store = LedgerStore::open(fixture.dir.path()).unwrap();
    assert_eq!(store.state().head().height, 2);
    assert_eq!(store.awaited(), Some(&full));
    assert!(store.checkpoint().is_none());
    assert!(matches!(store.may_sequence(), Err(StoreError::Mismatch { .. })));
    assert_eq!(fs::read(fixture.dir.path().join(CHECKPOINT_FILE)).unwrap(), full.note(), "the file stays");
}

/// A checkpoint file padded with lines of unknown keys is written anew
/// with only the lines we know; the log is untouched.
#[test]
fn a_padded_checkpoint_file_is_written_anew() {
    let (fixture, store) = Fixture::new(1);
    let canonical = store.checkpoint().unwrap().note().to_vec();
    drop(store);
    let mut padded = canonical.clone();
    let line =
        "\u{2014} stranger.example AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    for _ in 0..8 {
        padded.extend_from_slice(line.as_bytes());
    }
    fs::write(fixture.dir.path().join(CHECKPOINT_FILE), &padded).unwrap();
    let store = LedgerStore::open(fixture.dir.path()).unwrap();
    assert_eq!(store.checkpoint().unwrap().note(), canonical);
    assert_eq!(fs::read(fixture.dir.path().join(CHECKPOINT_FILE)).unwrap(), canonical);
}

#[test]
fn open_refuses_a_log_whose_entries_were_swapped() {
    let (fixture, store) = Fixture::new(3);
    let payloads = store.payloads.clone();
    drop(store);
    let mut bytes = fs::read(fixture.log()).unwrap();
    // Swap the records of entries 2 and 3 (same length: both register a device).
    let (a, b) = (payloads[2], payloads[3]);
    assert_eq!(a.1, b.1);
    let (a0, b0) = (a.0 as usize - log_format::RECORD_HEADER, b.0 as usize - log_format::RECORD_HEADER);
    let len = a.1 as usize + log_format::RECORD_HEADER;
    let first = bytes[a0..a0 + len].to_vec();
    let second = bytes[b0..b0 + len].to_vec();
    bytes[a0..a0 + len].copy_from_slice(&second);
    bytes[b0..b0 + len].copy_from_slice(&first);
    fs::write(fixture.log(), &bytes).unwrap();
    assert!(matches!(LedgerStore::open(fixture.dir.path()), Err(StoreError::Mismatch { .. })));
}
