//! The app socket's requests (`proto/carrier/v1/app.proto`,
//! `pb::AppRequest`) as the daemon reads them: frames through the codec
//! (`frame::FrameDecoder`, the hello frame limited to 4 KiB, then the
//! session's limit), each decoded and its fields read as the daemon reads
//! them (DIDs, the challenge signature, recipient keys, message ids, allow
//! lists) against the fixture ledger.
//!
//! The same bytes also go through the daemon's async `framed::FrameReader`,
//! delivered in fuzzer-chosen chunks: it must yield exactly the same
//! requests and fail at the same place. Every request re-encodes (with
//! `frame::encode_message`) to a frame that decodes to the same request.
//!
//! Input: 2 chunk-size bytes, then the byte stream an app sends.

#![no_main]

use carrier_daemon::delivery::DEFAULT_MAX_MESSAGE;
use carrier_daemon::framed::{FrameReader, FramedError};
use carrier_fuzz::{Chunked, Input, fixture, run_ready};
use carrier_proto::frame::{self, FrameDecoder};
use carrier_proto::identity::Did;
use carrier_proto::messaging::{self, AllowList, FRAME_OVERHEAD, MessageId, NONCE_LEN};
use carrier_proto::pb::{self, app_hello::Purpose, app_request::Request};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The daemon's frame limit before the hello.
const HELLO_MAX_FRAME: usize = 4096;
/// Its limit afterwards, with the default largest message.
const MAX_FRAME: usize = DEFAULT_MAX_MESSAGE + FRAME_OVERHEAD;

/// What came of reading the stream: the requests, then how it ended.
#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Frame,
    Decode,
}

fn by_codec(stream: &[u8]) -> (Vec<pb::AppRequest>, End) {
    let mut decoder = FrameDecoder::new(HELLO_MAX_FRAME);
    decoder.push(stream);
    let mut requests = Vec::new();
    loop {
        match decoder.next_body() {
            Ok(Some(body)) => match pb::AppRequest::decode(body) {
                Ok(request) => requests.push(request),
                Err(_) => return (requests, End::Decode),
            },
            Ok(None) => {
                return (requests, if decoder.finish().is_ok() { End::Clean } else { End::Frame });
            }
            Err(_) => return (requests, End::Frame),
        }
        decoder.set_max(MAX_FRAME);
    }
}

fn by_reader(stream: &[u8], sizes: &[u8]) -> (Vec<pb::AppRequest>, End) {
    let mut reader = FrameReader::new(Chunked { bytes: stream, sizes, turn: 0 }, HELLO_MAX_FRAME);
    let mut requests = Vec::new();
    loop {
        match run_ready(reader.read::<pb::AppRequest>()) {
            Ok(Some(request)) => requests.push(request),
            Ok(None) => return (requests, End::Clean),
            Err(FramedError::Frame(_)) => return (requests, End::Frame),
            Err(FramedError::Decode(_)) => return (requests, End::Decode),
            Err(e) => panic!("reading from memory failed: {e}"),
        }
        reader.set_max(MAX_FRAME);
    }
}

/// The daemon's reading of an allow list (none: any active app).
fn allow_list(list: Option<&pb::AllowList>) -> Option<AllowList> {
    let Some(list) = list else { return Some(AllowList::any_active()) };
    let dids = list.dids.iter().map(|d| Did::parse(d).ok()).collect::<Option<_>>()?;
    Some(AllowList { any_active: list.any_active, dids })
}

fn read_request(request: &pb::AppRequest) {
    let f = fixture();
    match &request.request {
        Some(Request::Hello(hello)) => {
            if let Ok(app) = Did::parse(&hello.app) {
                let key = app.signing_key();
                let nonce = [0u8; NONCE_LEN];
                let _ = messaging::verify_challenge(&key, &nonce, &f.d0.did(), &hello.signature);
            }
            if let Some(Purpose::OpenStream(open)) = &hello.purpose {
                let _ = Did::parse(&open.to);
            }
        }
        Some(Request::Send(send)) => {
            if let Some(did) = f.state.find_did(&send.to) {
                assert_eq!(did.key_bytes(), send.to, "find_did found another key");
            }
        }
        Some(Request::QueryReceipts(query)) => {
            for bytes in &query.message_ids {
                if let Some(id) = MessageId::from_bytes(bytes) {
                    assert_eq!(&id.to_bytes()[..], &bytes[..]);
                }
            }
        }
        Some(Request::SetAccess(set)) => {
            if let Some(list) = allow_list(set.messages.as_ref()) {
                assert!(!list.permits(&f.a0.did(), false), "a revoked sender passes");
                let _ = list.permits(&f.a0.did(), true);
            }
        }
        Some(Request::Listen(listen)) => {
            let _ = allow_list(listen.allow.as_ref());
        }
        Some(Request::Ack(_)) | Some(Request::Unlisten(_)) | None => {}
    }
    // Re-encoded as a frame, it decodes to the same request.
    let mut out = Vec::new();
    if frame::encode_message(request, MAX_FRAME, &mut out).is_ok() {
        let mut decoder = FrameDecoder::new(MAX_FRAME);
        decoder.push(&out);
        let body = decoder.next_body().expect("our own frame").expect("a whole frame");
        assert_eq!(&pb::AppRequest::decode(body).expect("our own request"), request);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let sizes = input.bytes(2);
    let stream = input.rest();
    let codec = by_codec(stream);
    let reader = by_reader(stream, sizes);
    assert_eq!(codec, reader, "FrameReader and FrameDecoder read the stream differently");
    for request in &codec.0 {
        read_request(request);
    }
});
