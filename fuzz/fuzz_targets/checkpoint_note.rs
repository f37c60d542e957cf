//! Checkpoint notes and the keys that check them
//! (`carrier_proto::ledger` checkpoint and cosignature code):
//!
//! - `SignedCheckpoint::open` / `verify` against the fixture network's
//!   trust (its log key, one witness, quorum 1): a note that opens is one
//!   the log key signed (here: says what a fixture checkpoint says), its
//!   rewritten note opens again to the same checkpoint and is a fixed point,
//!   `verify` agrees with `open` and the quorum, and `check_note_shape`
//!   reads the same checkpoint;
//! - `check_note_shape` on anything (what a handshake admits unverified);
//! - the input as text: `parse_verifier_key`, `WitnessKey::parse_vkey`
//!   (each round-trips through its writer) and `read_cosignatures` on the
//!   fixture checkpoint (only lines that verify are kept).

#![no_main]

use carrier_fuzz::fixture;
use carrier_proto::ledger::{
    CheckpointError, LogTrust, SignedCheckpoint, WitnessKey, check_note_shape, parse_verifier_key, verifier_key,
};
use libfuzzer_sys::fuzz_target;

fn check(note: &[u8], trust: &LogTrust<'_>) {
    let f = fixture();
    let shape = check_note_shape(note, &trust.network);
    let opened = SignedCheckpoint::open(note, trust);
    let verified = SignedCheckpoint::verify(note, trust);
    match &opened {
        Ok(signed) => {
            assert_eq!(shape.as_ref().ok(), Some(&signed.checkpoint()), "open and check_note_shape disagree");
            let said = signed.checkpoint();
            let known = [&f.base_checkpoint, &f.checkpoint, &f.forked];
            assert!(
                known.iter().any(|k| k.checkpoint() == said),
                "a checkpoint the log key never signed opened: {said:?}"
            );
            assert!(signed.cosignatures().len() <= trust.witnesses.len());
            let again = SignedCheckpoint::open(signed.note(), trust).expect("a rewritten note opens");
            assert_eq!(again.checkpoint(), signed.checkpoint());
            assert_eq!(again.cosignatures(), signed.cosignatures());
            assert_eq!(again.log_time_s(), signed.log_time_s());
            assert_eq!(again.note(), signed.note(), "rewriting a note is not a fixed point");
            assert_eq!(again.text().as_bytes(), signed.note());
            match &verified {
                Ok(v) => {
                    assert!(signed.cosignatures().len() >= trust.quorum);
                    assert_eq!(v.note(), signed.note());
                }
                Err(CheckpointError::Unwitnessed { have, need }) => {
                    assert_eq!((*have, *need), (signed.cosignatures().len(), trust.quorum));
                    assert!(have < need);
                }
                Err(e) => panic!("open took a note verify refused: {e}"),
            }
        }
        Err(_) => assert!(verified.is_err(), "verify took a note open refused"),
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    check(data, &f.trust());
    // The same note under the log key alone (offline tools).
    check(data, &LogTrust::log_only(f.network, f.log.signing_key()));

    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((network, key)) = parse_verifier_key(text) {
        assert_eq!(parse_verifier_key(&verifier_key(&network, &key)), Ok((network, key)));
    }
    if let Ok(witness) = WitnessKey::parse_vkey(text) {
        assert_eq!(WitnessKey::parse_vkey(&witness.vkey()).as_ref(), Ok(&witness));
    }
    let witnesses = std::slice::from_ref(&f.witness_key);
    let cosignatures = f.checkpoint.read_cosignatures(text, witnesses);
    let mut signed = f.checkpoint.clone();
    // Every line read verifies; the witness already cosigned, so none is new.
    assert_eq!(signed.add_cosignatures(&cosignatures, witnesses), 0);
    assert_eq!(signed.note(), f.checkpoint.note());
});
