#![allow(clippy::unwrap_used)]

use signed_note::{Note, VerifierList};

use super::*;
use crate::identity::IdentityKind;
use crate::ledger::{MAX_WITNESSES, note::MAX_SIGNATURE_LINES};

const TIME: u64 = 1_760_000_000;

fn signed() -> (EntryHash, Identity, SignedCheckpoint) {
    let network = EntryHash([7; 32]);
    let log = Identity::generate(IdentityKind::Log);
    let sequencer = Some(Identity::generate(IdentityKind::Device).did());
    let cp = SignedCheckpoint::sign(&network, Checkpoint { size: 42, root: EntryHash([9; 32]), sequencer }, &log, TIME);
    (network, log, cp)
}

fn trust(network: EntryHash, log: &Identity) -> LogTrust<'static> {
    LogTrust::log_only(network, log.signing_key())
}

fn witnesses(n: usize) -> Vec<(Identity, WitnessKey)> {
    (0..n)
        .map(|i| {
            let id = Identity::generate(IdentityKind::Log);
            let key = WitnessKey::new(&format!("witness-{i}.example"), id.signing_key()).unwrap();
            (id, key)
        })
        .collect()
}

#[test]
fn a_signed_checkpoint_verifies_and_reads_back() {
    let (network, log, cp) = signed();
    let back = SignedCheckpoint::verify(cp.note(), &trust(network, &log)).unwrap();
    assert_eq!(back, cp);
    assert_eq!(back.log_time_s(), Some(TIME));
    assert!(cp.text().starts_with(&format!("carrier/{}\n42\n", network.to_hex())));
    assert!(cp.text().contains("\n\n\u{2014} carrier/"));
}

/// Any C2SP verifier given our verifier key accepts the note: here
/// `signed_note`'s own Ed25519 verifier, which shares no code with ours.
#[test]
fn a_standard_verifier_accepts_it() {
    let (network, log, cp) = signed();
    let vkey = verifier_key(&network, &log.signing_key());
    let standard = signed_note::StandardVerifier::new(&vkey).unwrap();
    let note = Note::from_bytes(cp.note()).unwrap();
    let (verified, unverified) = note.verify(&VerifierList::new(vec![Box::new(standard)])).unwrap();
    assert_eq!((verified.len(), unverified.len()), (1, 1), "the log's time line is another key type");
}

#[test]
fn verifier_keys_read_back_and_a_wrong_id_is_refused() {
    let (network, log, _) = signed();
    let vkey = verifier_key(&network, &log.signing_key());
    assert_eq!(parse_verifier_key(&vkey), Ok((network, log.signing_key())));
    let mut parts: Vec<&str> = vkey.splitn(3, '+').collect();
    parts[1] = "00000000";
    assert!(parse_verifier_key(&parts.join("+")).is_err());
    assert!(parse_verifier_key("example.com+1234+AAAA").is_err());
}

#[test]
fn forged_altered_and_foreign_notes_are_refused() {
    let (network, log, cp) = signed();
    let trust = trust(network, &log);
    let other = Identity::generate(IdentityKind::Log);
    let forged = SignedCheckpoint::sign(&network, cp.checkpoint(), &other, TIME);
    assert_eq!(SignedCheckpoint::verify(forged.note(), &trust), Err(CheckpointError::NotSigned));
    let altered = cp.text().replacen("\n42\n", "\n43\n", 1);
    assert_eq!(SignedCheckpoint::verify(altered.as_bytes(), &trust), Err(CheckpointError::BadSignature));
    let elsewhere = LogTrust::log_only(EntryHash([8; 32]), log.signing_key());
    assert!(matches!(SignedCheckpoint::verify(cp.note(), &elsewhere), Err(CheckpointError::WrongOrigin { .. })));
    let unsigned = cp.text().split("\n\n").next().unwrap().to_owned() + "\n";
    assert!(SignedCheckpoint::verify(unsigned.as_bytes(), &trust).is_err());
    let huge = vec![b'a'; MAX_NOTE_SIZE + 1];
    assert_eq!(SignedCheckpoint::verify(&huge, &trust), Err(CheckpointError::TooLarge(MAX_NOTE_SIZE + 1)));
}

/// A note padded with lines of unknown keys, repeated lines of the log
/// key and bogus witness lines verifies, but what is kept is the note as
/// the log wrote it, byte for byte: nothing a peer added survives.
#[test]
fn padding_is_dropped_and_the_note_written_anew() {
    let (network, log, cp) = signed();
    let (body, lines) = cp.text().split_once("\n\n").unwrap();
    let log_line = lines.lines().next().unwrap();
    let stranger = "\u{2014} stranger.example AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let padded = format!("{body}\n\n{lines}{log_line}\n{stranger}\n{stranger}\n{log_line}\n");
    assert!(padded.len() > cp.note().len() + 200);
    let opened = SignedCheckpoint::verify(padded.as_bytes(), &trust(network, &log)).unwrap();
    assert_eq!(opened.note(), cp.note());
    // A bad line before the good one under the log key's name and id: the
    // first line is the one that must verify (signed-note).
    // One character of the signature (past the key id's first 8 base64
    // characters) changed: same name and key id, another signature.
    let (name, b64) = log_line.rsplit_once(' ').unwrap();
    let mut chars: Vec<char> = b64.chars().collect();
    chars[40] = if chars[40] == 'A' { 'B' } else { 'A' };
    let bad = format!("{name} {}", chars.into_iter().collect::<String>());
    let first_bad = format!("{body}\n\n{bad}\n{lines}");
    assert_eq!(
        SignedCheckpoint::verify(first_bad.as_bytes(), &trust(network, &log)),
        Err(CheckpointError::BadSignature)
    );
    // Too many lines at all: malformed before any signature is checked.
    let many = format!("{body}\n\n{lines}{}", format!("{log_line}\n").repeat(MAX_SIGNATURE_LINES));
    assert!(SignedCheckpoint::verify(many.as_bytes(), &trust(network, &log)).is_err());
}

#[test]
fn extension_lines_other_than_one_sequencer_are_refused() {
    let (network, log, cp) = signed();
    let trust = trust(network, &log);
    // Re-signed by the log key with an unknown line: still refused.
    for extra in ["carrier-sequencer not-a-did\n", "something else\n"] {
        let body = format!("{}{extra}", cp.body());
        let note = format!("{body}\n\u{2014} {} {}\n", origin(&network), {
            let sig = log.sign(domain::NOTE, body.as_bytes());
            let id = log_key_id(&origin(&network), &log.signing_key());
            BASE64.encode([&id.to_be_bytes()[..], &sig].concat())
        });
        assert!(matches!(SignedCheckpoint::verify(note.as_bytes(), &trust), Err(CheckpointError::Extension(_))));
    }
}

#[test]
fn a_quorum_of_witnesses_is_required_and_their_lines_are_kept() {
    let (network, log, cp) = signed();
    let ws = witnesses(3);
    let keys: Vec<WitnessKey> = ws.iter().map(|(_, k)| k.clone()).collect();
    let trust = LogTrust { network, log_key: log.signing_key(), witnesses: &keys, quorum: 2 };
    assert_eq!(SignedCheckpoint::verify(cp.note(), &trust), Err(CheckpointError::Unwitnessed { have: 0, need: 2 }));
    let mut cosigned = SignedCheckpoint::open(cp.note(), &trust).unwrap();
    let one = cosigned.cosign(&ws[2].0, &ws[2].1, TIME + 1);
    assert_eq!(cosigned.add_cosignatures(&[one.clone(), one.clone()], &keys), 1, "each witness once");
    assert_eq!(
        SignedCheckpoint::verify(cosigned.note(), &trust),
        Err(CheckpointError::Unwitnessed { have: 1, need: 2 })
    );
    // A cosignature over another checkpoint does not count.
    let (_, _, other) = signed();
    let wrong = other.cosign(&ws[0].0, &ws[0].1, TIME);
    assert_eq!(cosigned.add_cosignatures(&[wrong], &keys), 0);
    let two = cosigned.cosign(&ws[0].0, &ws[0].1, TIME + 5);
    let read = cosigned.read_cosignatures(&two.to_line(), &keys);
    assert_eq!(read, vec![two.clone()]);
    assert_eq!(cosigned.add_cosignatures(&read, &keys), 1);
    let back = SignedCheckpoint::verify(cosigned.note(), &trust).unwrap();
    assert_eq!(back.cosignatures().len(), 2);
    assert_eq!(back.cosignatures()[0].witness, keys[0], "in the network's order");
    assert_eq!(back.time_s(), Some(TIME + 5));
    assert_eq!(back, cosigned);
    // A witness outside the trust counts for nothing.
    let stranger = witnesses(1).remove(0);
    let theirs = cosigned.cosign(&stranger.0, &stranger.1, TIME);
    assert_eq!(cosigned.add_cosignatures(&[theirs], &keys), 0);
    // A witness's later cosignature (a re-dated checkpoint) replaces its
    // earlier one; an earlier one changes nothing.
    let later = cosigned.cosign(&ws[2].0, &ws[2].1, TIME + 60);
    assert_eq!(cosigned.add_cosignatures(&[later, one], &keys), 1);
    assert_eq!(cosigned.cosignatures().len(), 2);
    assert_eq!(cosigned.time_s(), Some(TIME + 60));
}

/// The largest note we can make, with every witness a network may name
/// (each with the longest name), fits the size every reader accepts.
#[test]
fn the_largest_note_fits_the_limit() {
    let network = EntryHash([0xab; 32]);
    let log = Identity::generate(IdentityKind::Log);
    let sequencer = Some(Identity::generate(IdentityKind::Device).did());
    let cp = Checkpoint { size: u64::MAX, root: EntryHash([0xff; 32]), sequencer };
    let mut signed = SignedCheckpoint::sign(&network, cp, &log, i64::MAX as u64);
    let ws: Vec<(Identity, WitnessKey)> = (0..MAX_WITNESSES)
        .map(|i| {
            let id = Identity::generate(IdentityKind::Log);
            let name = format!("{i:02}{}", "w".repeat(cosignature::MAX_WITNESS_NAME - 2));
            let key = WitnessKey::new(&name, id.signing_key()).unwrap();
            (id, key)
        })
        .collect();
    let keys: Vec<WitnessKey> = ws.iter().map(|(_, k)| k.clone()).collect();
    let all: Vec<Cosignature> = ws.iter().map(|(id, key)| signed.cosign(id, key, i64::MAX as u64)).collect();
    assert_eq!(signed.add_cosignatures(&all, &keys), MAX_WITNESSES);
    assert!(signed.note().len() <= MAX_NOTE_SIZE, "{} bytes", signed.note().len());
    let trust = LogTrust { network, log_key: log.signing_key(), witnesses: &keys, quorum: MAX_WITNESSES };
    assert_eq!(SignedCheckpoint::verify(signed.note(), &trust).unwrap(), signed);
}
