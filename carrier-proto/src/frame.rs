//! The one framing codec of every length-prefixed stream (the app and
//! control sockets, and the daemon's protocols between peers): a 4-byte
//! big-endian length, then the message. Sans-IO: bytes go in, whole frames
//! come out, and a frame over the limit is refused from its header, before
//! its body is read or buffered. The daemon's `framed` module and the SDK
//! are thin async drivers over [`FrameDecoder`] and [`encode_message`].

/// Bytes of the length prefix.
pub const HEADER: usize = 4;

/// Why a frame was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The announced length is over the limit.
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({have} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        have: usize,
        /// Bytes the frame needs.
        want: usize,
    },
}

/// Prefixes `message` with its length.
pub fn encode(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + message.len());
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Appends `message` as one frame to `out`; refuses it over `max` bytes
/// (or over what the 4-byte length can say).
pub fn encode_message<M: prost::Message>(message: &M, max: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = message.encoded_len();
    let max = max.min(u32::MAX as usize);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    out.reserve(HEADER + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    // Encoding into a Vec with room reserved cannot fail.
    let _ = message.encode(out);
    Ok(())
}

/// Collects bytes and yields whole frames. Consumed bytes are dropped in
/// bulk when more arrive, so a burst of small frames costs no per-frame
/// copying of what follows them.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buf: Vec<u8>,
    /// Start of the bytes not yet yielded.
    start: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { max, buf: Vec::new(), start: 0 }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.read_buffer().extend_from_slice(bytes);
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Changes the limit for the frames still to come (a connection that
    /// authenticated may send larger frames than one that has not).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Where to read more bytes into: the buffer, with the bytes already
    /// yielded dropped; append to it (a driver reads straight into it, so
    /// received bytes are never copied twice).
    pub fn read_buffer(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        &mut self.buf
    }

    /// The next whole frame's body, borrowed, if one has arrived.
    pub fn next_body(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(header) = pending.get(..HEADER) else { return Ok(None) };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if pending.len() < HEADER + len {
            return Ok(None);
        }
        let body = self.start + HEADER..self.start + HEADER + len;
        self.start += HEADER + len;
        Ok(Some(&self.buf[body]))
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        Ok(self.next_body()?.map(<[u8]>::to_vec))
    }

    /// Call at end of stream: an unfinished frame is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        let pending = self.pending();
        if pending.is_empty() {
            return Ok(());
        }
        let want = match pending.get(..HEADER) {
            Some(h) => HEADER + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize,
            None => HEADER,
        };
        Err(FrameError::Truncated { have: pending.len(), want })
    }

    /// The bytes after the last frame yielded, for a connection that
    /// switches from frames to raw bytes.
    pub fn into_rest(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn yields_frames_split_anywhere() {
        let mut bytes = encode(b"first");
        bytes.extend(encode(b""));
        bytes.extend(encode(b"third frame"));
        for split in 0..bytes.len() {
            let mut decoder = FrameDecoder::new(64);
            let mut frames = Vec::new();
            for chunk in [&bytes[..split], &bytes[split..]] {
                decoder.push(chunk);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            assert_eq!(frames, vec![b"first".to_vec(), vec![], b"third frame".to_vec()], "split at {split}");
            decoder.finish().unwrap();
        }
    }

    #[test]
    fn keeps_the_bytes_after_the_last_frame() {
        let mut decoder = FrameDecoder::new(64);
        decoder.push(&[encode(b"one"), encode(b"two"), b"raw".to_vec()].concat());
        assert_eq!(decoder.next_frame().unwrap(), Some(b"one".to_vec()));
        assert_eq!(decoder.next_frame().unwrap(), Some(b"two".to_vec()));
        assert_eq!(decoder.into_rest(), b"raw");
    }

    #[test]
    fn rejects_oversized_frames_from_the_header() {
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&(17u32).to_be_bytes());
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { len: 17, max: 16 }));
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&[0xff; 4]);
        assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn rejects_truncated_frames_at_the_end() {
        let bytes = encode(b"hello");
        for cut in 1..bytes.len() {
            let mut decoder = FrameDecoder::new(64);
            decoder.push(&bytes[..cut]);
            assert_eq!(decoder.next_frame(), Ok(None));
            assert!(matches!(decoder.finish(), Err(FrameError::Truncated { .. })), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..8)) {
            let mut decoder = FrameDecoder::new(100);
            for m in &messages {
                decoder.push(&encode(m));
            }
            for m in &messages {
                prop_assert_eq!(decoder.next_frame().unwrap(), Some(m.clone()));
            }
            prop_assert_eq!(decoder.next_frame().unwrap(), None);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut decoder = FrameDecoder::new(32);
            decoder.push(&bytes);
            while let Ok(Some(_)) = decoder.next_frame() {}
            let _ = decoder.finish();
        }
    }
}
