//! Batches of ledger entries as peers send them: `ledger::replay` (from
//! genesis), `Replay::known` (a store re-opening its log) and `check_batch`
//! (a batch proven against a checkpoint, then applied).
//!
//! Input: a flags byte, then up to 16 records, each a 2-byte length and
//! `op ‖ entry bytes`. Where `op` says so, the harness decodes the entry and
//! signs its body anew (bit 0) with the fixture identity `op >> 2` names,
//! first setting its network id to the fixture network's (bit 1): this lets
//! the fuzzer reach every ledger rule behind the signature check.
//!
//! Properties: `replay` agrees with appending the entries one by one
//! (`LedgerState::append`): same verdict, same first bad entry and reason,
//! same head; `Replay::known` takes whatever `replay` takes, to the same
//! head. `check_batch` on the fixture base (4 entries):
//! - flags bit 0 clear: against the tree the batch makes (honest target),
//!   it proves out exactly when every entry decodes and is signed, and
//!   applying it agrees with appending one by one;
//! - flags bit 0 set: against the fixture's full checkpoint with its real
//!   consistency proof, the only batch that proves out is the log's real
//!   next entries.

#![no_main]

use carrier_fuzz::{BASE, Input, fixture};
use carrier_proto::ledger::{
    BatchError, Entry, EntryHash, LedgerError, LedgerState, Rejection, Replay, check_batch, replay,
};
use libfuzzer_sys::fuzz_target;

const MAX_RECORDS: usize = 16;

/// Appends entries one by one: the head, or the first refusal.
fn one_by_one(mut state: LedgerState, batch: &[Vec<u8>]) -> Result<LedgerState, LedgerError> {
    for bytes in batch {
        let index = state.height();
        let entry = Entry::decode(bytes).map_err(|e| LedgerError { index, reason: Rejection::Malformed(e) })?;
        state.append(entry).map_err(|reason| LedgerError { index, reason })?;
    }
    Ok(state)
}

fn same(a: &Result<LedgerState, LedgerError>, b: &Result<LedgerState, LedgerError>, what: &str) {
    match (a, b) {
        (Ok(a), Ok(b)) => assert_eq!(a.head(), b.head(), "{what}: heads differ"),
        (Err(a), Err(b)) => assert_eq!(a, b, "{what}: refusals differ"),
        (a, b) => panic!("{what}: {:?} vs {:?}", a.as_ref().map(LedgerState::head), b.as_ref().map(LedgerState::head)),
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let pool = f.pool();
    let mut input = Input(data);
    let flags = input.u8();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    while !input.is_empty() && batch.len() < MAX_RECORDS {
        let mut record = Input(input.part());
        let op = record.u8();
        let bytes = record.rest();
        let resigned = (op & 1 == 1).then(|| Entry::decode_known(bytes).ok()).flatten().map(|entry| {
            let body = entry.body();
            let network = if op & 2 == 2 { f.network } else { body.network_id };
            let signer = pool[usize::from(op >> 2) % pool.len()];
            Entry::sign_until(network, body.time_ms, body.expires_ms, body.op.clone(), signer).encoded().to_vec()
        });
        batch.push(resigned.unwrap_or_else(|| bytes.to_vec()));
    }

    // From genesis: replay, known replay, and one by one agree.
    let replayed = replay(&batch);
    same(&replayed, &one_by_one(LedgerState::new(), &batch), "replay vs append");
    if let Ok(state) = &replayed {
        let mut known = Replay::known(LedgerState::new());
        for bytes in &batch {
            known.push(bytes).expect("known replay refused an entry replay took");
        }
        assert_eq!(known.finish().expect("known replay refused").head(), state.head());
    }

    // On top of the fixture base.
    let base = &f.base_state;
    let decoded: Vec<Option<Entry>> = batch.iter().map(|b| Entry::decode(b).ok()).collect();
    let grown = (BASE + batch.len()) as u64;
    if flags & 1 == 0 {
        let leaves: Vec<EntryHash> = decoded.iter().flatten().map(Entry::hash).collect();
        let root = base.tree().root_with(&leaves);
        let checked = check_batch(base, &batch, grown, root, &[]);
        if let Some(bad) = decoded.iter().position(Option::is_none) {
            assert!(
                matches!(checked, Err(BatchError::Malformed { index, .. }) if index == (BASE + bad) as u64),
                "{checked:?}"
            );
            return;
        }
        let unsigned = decoded.iter().flatten().position(|e| !e.verify_signature());
        match checked {
            Ok(verified) => {
                assert_eq!(unsigned, None, "a batch with a bad signature proved out");
                assert_eq!(verified.from(), BASE as u64);
                let mut state = base.clone();
                let applied = verified.apply(&mut state).map(|()| state);
                same(&applied, &one_by_one(base.clone(), &batch), "check_batch+apply vs append");
            }
            Err(BatchError::BadSignature { index }) => {
                assert_eq!(Some((index - BASE as u64) as usize), unsigned);
            }
            Err(e) => panic!("an honest target refused: {e}"),
        }
    } else {
        let size = f.entries.len() as u64;
        let proof = if grown < size { f.state.tree().consistency_proof(grown, size).unwrap() } else { Vec::new() };
        if let Ok(verified) = check_batch(base, &batch, size, f.checkpoint.root(), &proof) {
            assert_eq!(&batch[..], &f.entries[BASE..BASE + batch.len()], "a forged batch proved out");
            let mut state = base.clone();
            verified.apply(&mut state).expect("the real entries apply");
        }
    }
});
