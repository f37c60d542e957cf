//! Fork evidence (`carrier_proto::ledger::Fork::decode` and `decode_text`)
//! against the fixture network's log key: evidence that holds round-trips
//! through `encode` and `to_text`, names two checkpoints the log key really
//! signed, and really shows two histories (the first is no prefix of the
//! second). The input is tried as bytes, and as text when it is UTF-8.

#![no_main]

use carrier_fuzz::fixture;
use carrier_proto::ledger::{Fork, LogTrust};
use libfuzzer_sys::fuzz_target;

fn check(fork: &Fork, trust: &LogTrust<'_>) {
    let f = fixture();
    assert_eq!(Fork::decode(&fork.encode(), trust).as_ref(), Ok(fork), "encode does not round-trip");
    assert_eq!(Fork::decode_text(&fork.to_text(), trust).as_ref(), Ok(fork), "to_text does not round-trip");
    let (first, second) = (fork.first(), fork.second());
    assert!(first.size() <= second.size());
    let signed = [&f.base_checkpoint, &f.checkpoint, &f.forked];
    for c in [first, second] {
        assert!(signed.iter().any(|s| s.checkpoint() == c.checkpoint()), "evidence names an unsigned checkpoint");
    }
    // Checkpoints of one honest history are never evidence.
    let honest = |c: &carrier_proto::ledger::SignedCheckpoint| c.checkpoint() != f.forked.checkpoint();
    assert!(!(honest(first) && honest(second)), "two checkpoints of one history made evidence");
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let full = f.trust();
    let log_only = LogTrust::log_only(f.network, f.log.signing_key());
    for trust in [&full, &log_only] {
        if let Ok(fork) = Fork::decode(data, trust) {
            check(&fork, trust);
        }
        if let Ok(text) = std::str::from_utf8(data)
            && let Ok(fork) = Fork::decode_text(text, trust)
        {
            check(&fork, trust);
        }
    }
});
