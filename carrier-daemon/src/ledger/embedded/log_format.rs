//! The on-disk framing of the ledger log, as pure functions over bytes.
//!
//! ```text
//! file   = header record*
//! header = "CARRIER-LEDGER" 0x00 version(=2)          16 bytes
//! record = len:u32le crc32(len):u32le crc32(payload):u32le payload[len]
//! ```
//!
//! The payload is an encoded `SignedEntry`. A crash can leave the last record
//! incomplete (or, on some file systems, zero-filled or with a payload that
//! fails its checksum). [`scan`] reports such a tail separately from damage
//! earlier in the file, so the store can cut the first with a warning and
//! refuse the second. The length has its own checksum so that a damaged
//! length is never mistaken for a torn tail, which would cut good entries.

use carrier_proto::ledger::MAX_ENTRY_SIZE;

/// First bytes of every ledger log.
pub(crate) const HEADER: &[u8; 16] = b"CARRIER-LEDGER\x00\x02";
/// Bytes before each record's payload.
pub(crate) const RECORD_HEADER: usize = 12;

/// Frames one entry as a record.
pub(crate) fn record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What is wrong with a file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// Not a ledger log at all.
    NotALedger,
    /// A ledger log of another format version.
    Version(u8),
}

/// A scanned log: where each whole record's payload is, and how it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Byte range of each record's payload, in order.
    pub(crate) payloads: Vec<std::ops::Range<usize>>,
    /// How the file ends after the last whole record.
    pub(crate) end: End,
}

/// How a log ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Exactly after the last whole record.
    Clean,
    /// A torn last record starting at `offset`: what a crash mid-append
    /// leaves. Safe to cut.
    Torn {
        /// Where the torn record starts (the length to cut the file to).
        offset: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// A damaged record with whole records after it: not a crash, refuse.
    Corrupt {
        /// Index of the damaged record.
        index: usize,
        /// What is wrong with it.
        detail: String,
    },
}

/// Checks the header.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), HeaderProblem> {
    let magic = &HEADER[..HEADER.len() - 1];
    match bytes.get(..HEADER.len()) {
        Some(head) if head == HEADER => Ok(()),
        Some(head) if head.starts_with(magic) => Err(HeaderProblem::Version(head[HEADER.len() - 1])),
        _ => Err(HeaderProblem::NotALedger),
    }
}

/// Splits the bytes after the header into records.
pub(crate) fn scan(bytes: &[u8]) -> Scan {
    let mut payloads = Vec::new();
    let mut offset = HEADER.len();
    let end = loop {
        let rest = &bytes[offset.min(bytes.len())..];
        if rest.is_empty() {
            break End::Clean;
        }
        let torn = |detail: String| End::Torn { offset, detail };
        if rest.iter().all(|&b| b == 0) {
            break torn(format!("{} zero bytes after the last record", rest.len()));
        }
        let Some(header) = rest.get(..RECORD_HEADER) else {
            break torn(format!("record header cut short ({} of {RECORD_HEADER} bytes)", rest.len()));
        };
        let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (len, len_crc, crc) = (word(0) as usize, word(4), word(8));
        if crc32fast::hash(&header[..4]) != len_crc {
            let detail = "record length checksum mismatch".to_owned();
            break End::Corrupt { index: payloads.len(), detail };
        }
        if len > MAX_ENTRY_SIZE {
            break End::Corrupt {
                index: payloads.len(),
                detail: format!("record length {len} is over the entry limit of {MAX_ENTRY_SIZE} bytes"),
            };
        }
        let Some(payload) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
            break torn(format!("record cut short ({} of {len} payload bytes)", rest.len() - RECORD_HEADER));
        };
        if crc32fast::hash(payload) != crc {
            let detail = "checksum mismatch".to_owned();
            if rest.len() == RECORD_HEADER + len {
                break torn(format!("last record: {detail}"));
            }
            break End::Corrupt { index: payloads.len(), detail };
        }
        let start = offset + RECORD_HEADER;
        payloads.push(start..start + len);
        offset = start + len;
    };
    Scan { payloads, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = HEADER.to_vec();
        for p in payloads {
            bytes.extend(record(p));
        }
        bytes
    }

    #[test]
    fn scans_whole_records() {
        let bytes = log(&[b"one", b"two", b""]);
        let scan = scan(&bytes);
        assert_eq!(scan.end, End::Clean);
        let got: Vec<&[u8]> = scan.payloads.iter().map(|r| &bytes[r.clone()]).collect();
        assert_eq!(got, vec![&b"one"[..], b"two", b""]);
    }

    #[test]
    fn every_cut_point_is_a_torn_tail() {
        let whole = log(&[b"first entry", b"second entry"]);
        let second_starts = HEADER.len() + RECORD_HEADER + b"first entry".len();
        for len in second_starts + 1..whole.len() {
            let scan = scan(&whole[..len]);
            assert_eq!(scan.payloads.len(), 1, "cut at {len}");
            assert!(
                matches!(scan.end, End::Torn { offset, .. } if offset == second_starts),
                "cut at {len}: {:?}",
                scan.end
            );
        }
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let mut bytes = log(&[b"entry"]);
        let good = bytes.len();
        bytes.extend([0; 40]);
        assert!(matches!(scan(&bytes).end, End::Torn { offset, .. } if offset == good));
    }

    #[test]
    fn rejects_damage_before_the_last_record() {
        let mut bytes = log(&[b"first", b"second", b"third"]);
        let second_payload = HEADER.len() + RECORD_HEADER + 5 + RECORD_HEADER;
        bytes[second_payload] ^= 1;
        assert_eq!(scan(&bytes).end, End::Corrupt { index: 1, detail: "checksum mismatch".into() });
    }

    #[test]
    fn rejects_oversized_record_length() {
        let mut bytes = log(&[b"first"]);
        let len = ((MAX_ENTRY_SIZE + 1) as u32).to_le_bytes();
        bytes.extend(len);
        bytes.extend(crc32fast::hash(&len).to_le_bytes());
        bytes.extend([0xaa; 20]);
        assert!(matches!(scan(&bytes).end, End::Corrupt { index: 1, .. }));
    }

    #[test]
    fn damaged_length_is_corrupt_not_torn() {
        let mut bytes = log(&[b"first", b"second"]);
        bytes[HEADER.len()] = 0xff; // first record claims 255 bytes: past EOF
        assert!(matches!(scan(&bytes).end, End::Corrupt { index: 0, .. }));
    }

    #[test]
    fn checks_the_header() {
        assert_eq!(check_header(HEADER), Ok(()));
        assert_eq!(check_header(b"CARRIER-LEDGER\x00\x07"), Err(HeaderProblem::Version(7)));
        assert_eq!(check_header(b"short"), Err(HeaderProblem::NotALedger));
        assert_eq!(check_header(&[0; 16]), Err(HeaderProblem::NotALedger));
    }
}
