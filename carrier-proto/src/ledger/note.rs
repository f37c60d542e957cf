//! Signed notes (c2sp.org/signed-note) as they arrive from peers and files:
//! split into text and signature lines under hard bounds, before any
//! signature is checked. What we keep of a note is re-serialized from the
//! lines we know ([`super::SignedCheckpoint`]), never the bytes as sent.
//!
//! ```text
//! <text, one or more lines, each ending in \n>
//! \n
//! — <key name> <base64(key id [4] || signature)>\n     (one or more)
//! ```

use signed_note::Signature;

use super::checkpoint::CheckpointError;

/// Largest note taken from anywhere (handshake, sync, files), and so the
/// largest we make: the text, the log's signature and time, and one
/// cosignature from each of up to [`MAX_WITNESSES`](super::MAX_WITNESSES)
/// witnesses fit in it (checked by a test).
pub const MAX_NOTE_SIZE: usize = 4096;
/// Most signature lines read from a note: room for every key we know
/// twice over. A note with more is malformed before anything is verified.
pub const MAX_SIGNATURE_LINES: usize = 40;

/// A note split into its text and signature lines, nothing verified.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    /// The text, ending in a newline.
    pub(crate) text: &'a str,
    /// Every signature line, in order.
    pub(crate) lines: Vec<Signature>,
}

/// Splits `bytes` into text and signature lines; refuses anything over
/// [`MAX_NOTE_SIZE`] or [`MAX_SIGNATURE_LINES`], or not a signed note.
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed<'_>, CheckpointError> {
    let malformed = |why: &str| CheckpointError::Malformed(why.to_owned());
    if bytes.len() > MAX_NOTE_SIZE {
        return Err(CheckpointError::TooLarge(bytes.len()));
    }
    let note = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))?;
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(malformed("a control character"));
    }
    // The text ends at the last blank line; signatures follow it.
    let split = note.rfind("\n\n").ok_or_else(|| malformed("no blank line before the signatures"))?;
    let (text, block) = (&note[..=split], &note[split + 2..]);
    let block = block.strip_suffix('\n').ok_or_else(|| malformed("the last signature line has no newline"))?;
    let mut lines = Vec::new();
    for line in block.split('\n') {
        if lines.len() == MAX_SIGNATURE_LINES {
            return Err(malformed("too many signature lines"));
        }
        lines.push(Signature::from_bytes(line.as_bytes()).map_err(|_| malformed("a bad signature line"))?);
    }
    Ok(Parsed { text, lines })
}

/// Writes a note from its text and signature lines.
pub(crate) fn serialize(text: &str, lines: &[Signature]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1 + lines.len() * 180);
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    for line in lines {
        out.extend_from_slice(&line.to_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const LINE: &str = "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn splits_text_and_lines_and_writes_them_back() {
        let note = format!("This is an example message.\n\n{LINE}{LINE}");
        let parsed = parse(note.as_bytes()).unwrap();
        assert_eq!(parsed.text, "This is an example message.\n");
        assert_eq!(parsed.lines.len(), 2);
        assert_eq!(parsed.lines[0].name(), "example.com/foo");
        assert_eq!(parsed.lines[0].id(), 0x530d903a);
        assert_eq!(serialize(parsed.text, &parsed.lines), note.as_bytes());
    }

    #[test]
    fn rejects_oversized_malformed_and_overlong_notes() {
        let huge = vec![b'a'; MAX_NOTE_SIZE + 1];
        assert_eq!(parse(&huge).unwrap_err(), CheckpointError::TooLarge(MAX_NOTE_SIZE + 1));
        let many = format!("text\n\n{}", LINE.repeat(MAX_SIGNATURE_LINES + 1));
        assert!(many.len() <= MAX_NOTE_SIZE || matches!(parse(many.as_bytes()), Err(CheckpointError::TooLarge(_))));
        let just_many = format!("t\n\n{}", "— a AAAAAAA=\n".repeat(MAX_SIGNATURE_LINES + 1));
        assert!(matches!(parse(just_many.as_bytes()), Err(CheckpointError::Malformed(_))));
        for bad in [
            "no blank line\n— a AAAAAAA=\n".to_owned(),
            format!("text\n\n{}", LINE.trim_end()),
            format!("text\u{7}\n\n{LINE}"),
            "text\n\n— a\n".to_owned(),
            "text\n\n— a !!!!\n".to_owned(),
            "text\n\n".to_owned(),
        ] {
            assert!(matches!(parse(bad.as_bytes()), Err(CheckpointError::Malformed(_))), "{bad:?}");
        }
        assert!(parse(&[0xff, b'\n', b'\n']).is_err());
    }
}
