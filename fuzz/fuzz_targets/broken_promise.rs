//! The sequencer's signed answers and evidence of broken promises
//! (`carrier_proto::ledger::SequencerAnswer::decode`,
//! `BrokenPromise::decode` and `decode_text`) against the fixture
//! network's log key: what decodes round-trips, is signed by the log key,
//! and (for evidence) is judged broken again by the checkpoint it carries,
//! which the log key really signed. The input is tried as an answer, as
//! evidence, and as text when it is UTF-8.

#![no_main]

use carrier_fuzz::fixture;
use carrier_proto::ledger::{BrokenPromise, SequencerAnswer, Verdict};
use libfuzzer_sys::fuzz_target;

fn check(broken: &BrokenPromise) {
    let f = fixture();
    let keys = [f.log.signing_key()];
    assert_eq!(BrokenPromise::decode(&broken.encode(), &f.network, &keys).as_ref(), Ok(broken), "encode");
    assert_eq!(BrokenPromise::decode_text(&broken.to_text(), &f.network, &keys).as_ref(), Ok(broken), "to_text");
    assert_eq!(broken.promise().log_key(), f.log.signing_key());
    assert_eq!(broken.checkpoint().log_key(), f.log.signing_key());
    let size = broken.checkpoint().size();
    let word = broken.promise().word().clone();
    if let carrier_proto::ledger::Word::Promise { index, .. } = word
        && index < size
    {
        // Shown by another leaf at the index: the honest tree agrees only
        // if the checkpoint is the honest one.
        let honest = f.state.tree().root_at(size) == Some(broken.checkpoint().root());
        if honest {
            assert_ne!(f.state.entry_hash(index), Some(broken.promise().leaf()), "a kept promise shown broken");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let keys = [f.log.signing_key()];
    if let Ok(answer) = SequencerAnswer::decode(data, &f.network, &keys) {
        assert_eq!(SequencerAnswer::decode(answer.encoded(), &f.network, &keys).as_ref(), Ok(&answer));
        assert_eq!(answer.log_key(), f.log.signing_key());
        if let Verdict::Broken(broken) = answer.judge(&f.checkpoint, None) {
            check(&broken);
        }
    }
    if let Ok(broken) = BrokenPromise::decode(data, &f.network, &keys) {
        check(&broken);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(broken) = BrokenPromise::decode_text(text, &f.network, &keys)
    {
        check(&broken);
    }
});
