//! The control socket's requests (`proto/carrier/v1/control.proto`,
//! `pb::ControlRequest`), read as the daemon reads them: through the
//! daemon's `framed::FrameReader` at the control socket's frame limit
//! (delivered in fuzzer-chosen chunks), then each request's fields read as
//! the handler reads them: DIDs, submitted entries, and `publish` — the
//! checkpoint judged against a node holding the fixture base, the proofs
//! parsed (`ledger::answer_proofs`) and the entries checked by the catch-up
//! (towards the fixture's full checkpoint, only the log's real entries may
//! prove out). `entries` requests are answered from the fixture log served
//! in memory and must give exactly the asked slice of it.
//!
//! Input: 2 chunk-size bytes, then the byte stream carrierctl sends.

#![no_main]

use carrier_daemon::framed::FrameReader;
use carrier_daemon::ipc::control::MAX_FRAME;
use carrier_daemon::ledger::Ledger;
use carrier_fuzz::{Chunked, Input, check_answer, fixture, run_ready, served};
use carrier_proto::frame::FrameDecoder;
use carrier_proto::identity::Did;
use carrier_proto::ledger::{Entry, Judgement, SignedCheckpoint, judge};
use carrier_proto::pb::{self, control_request::Request};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The handler's cap on one `entries` answer.
const MAX_ENTRIES: u32 = 1_000;

fn publish(publish: &pb::PublishRequest) {
    let f = fixture();
    for refusal in &publish.refused {
        let _ = <[u8; 32]>::try_from(refusal.leaf_hash.as_slice());
    }
    let Ok(theirs) = SignedCheckpoint::verify(&publish.checkpoint, &f.trust()) else { return };
    let Judgement::Fetch(mut catch_up) = judge(f.held_base(), theirs) else { return };
    match catch_up.fetch(f.base_state.height()) {
        Some(fetch) if fetch.from == publish.from => {
            let _ = check_answer(
                &mut catch_up,
                &f.base_state,
                &publish.entries,
                &publish.proof,
                &publish.prefix_root,
                &publish.prefix_proof,
            );
        }
        _ => {}
    }
}

fn answer(request: &pb::ControlRequest) {
    let f = fixture();
    match &request.request {
        Some(Request::Connect(c)) => {
            let _ = Did::parse(&c.did);
        }
        Some(Request::Disconnect(d)) => {
            let _ = Did::parse(&d.did);
        }
        Some(Request::Resolve(r)) => {
            if let Ok(did) = Did::parse(&r.did) {
                let _ = f.state.resolve(&did);
            }
        }
        Some(Request::Submit(submit)) => {
            for bytes in &submit.entries {
                if let Ok(entry) = Entry::decode(bytes) {
                    assert_eq!(entry.encoded(), &bytes[..]);
                }
            }
        }
        Some(Request::Publish(p)) => publish(p),
        Some(Request::Entries(e)) => {
            let max = e.max.min(MAX_ENTRIES) as usize;
            let served = served().entries(e.from, max);
            let from = usize::try_from(e.from).unwrap_or(usize::MAX).min(f.entries.len());
            let to = from.saturating_add(max).min(f.entries.len());
            assert_eq!(served, f.entries[from..to], "entries served are not the asked slice of the log");
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let sizes = input.bytes(2);
    let stream = input.rest();
    let mut reader = FrameReader::new(Chunked { bytes: stream, sizes, turn: 0 }, MAX_FRAME);
    let mut read = 0;
    while let Ok(Some(request)) = run_ready(reader.read::<pb::ControlRequest>()) {
        read += 1;
        answer(&request);
    }
    // The codec alone reads the same number of whole requests.
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    decoder.push(stream);
    let mut decoded = 0;
    while let Ok(Some(body)) = decoder.next_body() {
        if pb::ControlRequest::decode(body).is_err() {
            break;
        }
        decoded += 1;
    }
    assert_eq!(read, decoded);
});
