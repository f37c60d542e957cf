//! `carrier_proto::frame::FrameDecoder`, the codec of every length-prefixed
//! stream (app and control sockets, peer protocols): bytes pushed in
//! fuzzer-chosen chunks must give exactly the frames a plain reading of the
//! stream gives, the same refusal at the same place, the same end-of-stream
//! verdict and the same leftover bytes; and the frames re-encode to the
//! bytes they came from.
//!
//! Input: `max` (1 byte), four chunk sizes (1 byte each), then the stream.

#![no_main]

use carrier_fuzz::Input;
use carrier_proto::frame::{self, FrameDecoder, FrameError, HEADER};
use libfuzzer_sys::fuzz_target;

/// What the stream holds, read in one piece.
struct Expected {
    frames: Vec<Vec<u8>>,
    /// The refusal that stops the stream, if any.
    error: Option<FrameError>,
    /// Bytes after the last whole frame.
    rest: Vec<u8>,
}

fn expected(mut stream: &[u8], max: usize) -> Expected {
    let mut frames = Vec::new();
    loop {
        let Some(header) = stream.get(..HEADER) else { break };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > max {
            return Expected { frames, error: Some(FrameError::TooLarge { len, max }), rest: stream.to_vec() };
        }
        let Some(body) = stream.get(HEADER..HEADER + len) else { break };
        frames.push(body.to_vec());
        stream = &stream[HEADER + len..];
    }
    Expected { frames, error: None, rest: stream.to_vec() }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let max = usize::from(input.u8());
    let sizes: Vec<usize> = (0..4).map(|_| usize::from(input.u8()).max(1)).collect();
    let stream = input.rest();
    let want = expected(stream, max);

    let mut decoder = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut error = None;
    let mut pushed = 0;
    let mut turn = 0;
    while pushed < stream.len() && error.is_none() {
        let n = sizes[turn % sizes.len()].min(stream.len() - pushed);
        turn += 1;
        // Both ways in: `push`, and appending to the read buffer as a driver does.
        if turn % 2 == 0 {
            decoder.push(&stream[pushed..pushed + n]);
        } else {
            decoder.read_buffer().extend_from_slice(&stream[pushed..pushed + n]);
        }
        pushed += n;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    // A refusal is sticky: asking again gives it again.
                    assert_eq!(decoder.next_body().map(|b| b.map(<[u8]>::to_vec)), Err(e.clone()));
                    error = Some(e);
                    break;
                }
            }
        }
    }
    assert_eq!(frames, want.frames, "frames differ from a plain reading");
    assert_eq!(error, want.error, "refusal differs from a plain reading");

    // Re-encoding the frames gives the bytes they came from.
    let encoded: Vec<u8> = frames.iter().flat_map(|f| frame::encode(f)).collect();
    assert_eq!(&stream[..encoded.len()], &encoded[..]);

    if want.error.is_none() {
        let finished = decoder.finish();
        if want.rest.is_empty() {
            assert_eq!(finished, Ok(()));
        } else {
            let wanted = match want.rest.get(..HEADER) {
                Some(h) => HEADER + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize,
                None => HEADER,
            };
            assert_eq!(finished, Err(FrameError::Truncated { have: want.rest.len(), want: wanted }));
        }
        assert_eq!(decoder.into_rest(), want.rest);
    }
});
