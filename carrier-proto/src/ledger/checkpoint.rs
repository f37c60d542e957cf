//! Checkpoints: the sequencer's signed word on the log's size and root, as
//! C2SP tlog-checkpoint signed notes (c2sp.org/tlog-checkpoint,
//! c2sp.org/signed-note).
//!
//! ```text
//! carrier/<network id hex>          origin, also the key name
//! 1234                              tree size
//! <base64 root>                     RFC 6962 root of those entries
//! carrier-sequencer did:carrier:z…  optional: the daemon taking requests
//!
//! — carrier/<network id hex> <base64(key id || Ed25519 signature)>
//! ```
//!
//! The key id is the first four bytes of SHA-256(name || 0x0A || 0x01 ||
//! public key), as signed-note says, so any C2SP verifier given
//! [`verifier_key`] accepts these notes. The text and signature formats are
//! `tlog_tiles`'s and `signed_note`'s; the keys are ours.

use std::fmt;

use signed_note::{Note, NoteError, VerificationError, Verifier, VerifierList};
use tlog_tiles::Hash;

use super::entry::EntryHash;
use crate::domain;
use crate::identity::{Did, Identity, SigningPublicKey};

/// Largest signed note accepted anywhere (handshake, sync, files).
pub const MAX_NOTE_SIZE: usize = 1024;
/// The extension line naming the sequencing daemon.
const SEQUENCER_PREFIX: &str = "carrier-sequencer ";
/// Signed-note algorithm byte for Ed25519.
const ALG_ED25519: u8 = 0x01;

/// Why a checkpoint note was not accepted.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Larger than [`MAX_NOTE_SIZE`].
    #[error("checkpoint note is {0} bytes, more than the limit of {MAX_NOTE_SIZE}")]
    TooLarge(usize),
    /// Not a signed note.
    #[error("not a signed note: {0}")]
    Malformed(String),
    /// No signature by this network's log key.
    #[error("the checkpoint is not signed by this network's log key")]
    NotSigned,
    /// A signature by the log key's name and id that does not verify.
    #[error("the checkpoint's log-key signature does not verify")]
    BadSignature,
    /// Signed for another network.
    #[error("the checkpoint is for log {found:?}, not {expected:?}")]
    WrongOrigin {
        /// Our origin.
        expected: String,
        /// The note's.
        found: String,
    },
    /// The note's text is not a tlog-checkpoint.
    #[error("the note is not a tlog checkpoint")]
    NotACheckpoint,
    /// An extension line this build does not know, or a bad DID in one.
    #[error("unknown checkpoint extension line {0:?}")]
    Extension(String),
}

/// What a checkpoint says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Number of entries.
    pub size: u64,
    /// RFC 6962 root of those entries.
    pub root: EntryHash,
    /// The daemon that sequences requests, if one does (else the admin's
    /// offline ledger directory does).
    pub sequencer: Option<Did>,
}

/// A checkpoint with the note that carries its signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    note: Vec<u8>,
}

impl fmt::Debug for SignedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedCheckpoint")
            .field("size", &self.checkpoint.size)
            .field("root", &self.checkpoint.root)
            .finish()
    }
}

/// The log's origin line and key name.
pub fn origin(network: &EntryHash) -> String {
    format!("carrier/{}", network.to_hex())
}

/// The signed-note key id of `key` under `name`.
fn key_id(name: &str, key: &SigningPublicKey) -> u32 {
    let mut encoded = vec![ALG_ED25519];
    encoded.extend_from_slice(key.as_bytes());
    signed_note::key_id(name, &encoded)
}

/// The C2SP verifier key (`name+hex id+base64(0x01 || key)`) that any
/// signed-note verifier takes to check this network's checkpoints.
pub fn verifier_key(network: &EntryHash, key: &SigningPublicKey) -> String {
    use base64::Engine;
    let name = origin(network);
    let mut encoded = vec![ALG_ED25519];
    encoded.extend_from_slice(key.as_bytes());
    let id = key_id(&name, key);
    format!("{name}+{id:08x}+{}", base64::engine::general_purpose::STANDARD.encode(encoded))
}

/// Reads a verifier key made by [`verifier_key`]: the network id (from its
/// name) and the log key. The key id must match, as signed-note says.
pub fn parse_verifier_key(text: &str) -> Result<(EntryHash, SigningPublicKey), CheckpointError> {
    use base64::Engine;
    let bad = |why: &str| CheckpointError::Malformed(format!("verifier key: {why}"));
    // The name has no '+'; the base64 key may.
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected name+id+key"));
    };
    let network =
        name.strip_prefix("carrier/").and_then(EntryHash::from_hex).ok_or_else(|| bad("not a Carrier log"))?;
    let encoded = base64::engine::general_purpose::STANDARD.decode(key).map_err(|_| bad("key is not base64"))?;
    let (Some(&ALG_ED25519), Ok(raw)) = (encoded.first(), <[u8; 32]>::try_from(&encoded[1.min(encoded.len())..]))
    else {
        return Err(bad("not an Ed25519 key"));
    };
    let key = SigningPublicKey::from_bytes(raw).map_err(|e| bad(&e.to_string()))?;
    if u32::from_str_radix(id, 16).ok() != Some(key_id(name, &key)) {
        return Err(bad("the key id does not match the key"));
    }
    Ok((network, key))
}

struct LogSigner<'a> {
    name: String,
    id: u32,
    identity: &'a Identity,
}

impl signed_note::Signer for LogSigner<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.identity.sign(domain::NOTE, msg).to_vec())
    }
}

struct LogVerifier {
    name: String,
    id: u32,
    key: SigningPublicKey,
}

impl Verifier for LogVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        sig.try_into().is_ok_and(|sig: [u8; 64]| self.key.verify(domain::NOTE, msg, &sig))
    }
}

impl SignedCheckpoint {
    /// Signs `checkpoint` of `network`'s log with the log key.
    pub fn sign(network: &EntryHash, checkpoint: Checkpoint, log: &Identity) -> Self {
        let name = origin(network);
        let extension = match checkpoint.sequencer {
            Some(did) => format!("{SEQUENCER_PREFIX}{did}\n"),
            None => String::new(),
        };
        let signer = LogSigner { id: key_id(&name, &log.signing_key()), name, identity: log };
        // The origin is ASCII hex and the extension a DID: both always make
        // a valid checkpoint and note, so these cannot fail.
        let note = tlog_tiles::Checkpoint::new(&signer.name, checkpoint.size, Hash(checkpoint.root.0), &extension)
            .ok()
            .and_then(|text| Note::new(&text.to_bytes(), &[]).ok())
            .and_then(|mut note| note.add_sigs(&[&signer]).ok().map(|()| note.to_bytes()))
            .unwrap_or_default();
        Self { checkpoint, note }
    }

    /// Parses `note` and checks it is a checkpoint of `network`'s log signed
    /// by `log_key`. Signatures by other keys (witnesses) are ignored.
    pub fn verify(note: &[u8], network: &EntryHash, log_key: &SigningPublicKey) -> Result<Self, CheckpointError> {
        if note.len() > MAX_NOTE_SIZE {
            return Err(CheckpointError::TooLarge(note.len()));
        }
        let parsed = Note::from_bytes(note).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        let name = origin(network);
        let verifier = LogVerifier { id: key_id(&name, log_key), name: name.clone(), key: *log_key };
        let verifiers = VerifierList::new(vec![Box::new(verifier)]);
        parsed.verify(&verifiers).map_err(|e| match e {
            NoteError::UnverifiedNote | NoteError::VerificationError(VerificationError::UnknownKey { .. }) => {
                CheckpointError::NotSigned
            }
            NoteError::InvalidSignature { .. } => CheckpointError::BadSignature,
            other => CheckpointError::Malformed(other.to_string()),
        })?;
        let text = tlog_tiles::Checkpoint::from_bytes(parsed.text()).map_err(|_| CheckpointError::NotACheckpoint)?;
        if text.origin() != name {
            return Err(CheckpointError::WrongOrigin { expected: name, found: text.origin().to_owned() });
        }
        let mut sequencer = None;
        for line in text.extension().lines() {
            let did = line.strip_prefix(SEQUENCER_PREFIX).and_then(|d| d.parse::<Did>().ok());
            match did {
                Some(did) if sequencer.is_none() => sequencer = Some(did),
                _ => return Err(CheckpointError::Extension(line.chars().take(80).collect())),
            }
        }
        let checkpoint = Checkpoint { size: text.size(), root: EntryHash(text.hash().0), sequencer };
        Ok(Self { checkpoint, note: note.to_vec() })
    }

    /// What it says.
    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.checkpoint.size
    }

    /// Root of those entries.
    pub fn root(&self) -> EntryHash {
        self.checkpoint.root
    }

    /// The signed note, exactly as made or received.
    pub fn note(&self) -> &[u8] {
        &self.note
    }

    /// The note as text (always UTF-8 once parsed or made).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.note).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::identity::IdentityKind;

    fn signed() -> (EntryHash, Identity, SignedCheckpoint) {
        let network = EntryHash([7; 32]);
        let log = Identity::generate(IdentityKind::Log);
        let sequencer = Some(Identity::generate(IdentityKind::Device).did());
        let cp = SignedCheckpoint::sign(&network, Checkpoint { size: 42, root: EntryHash([9; 32]), sequencer }, &log);
        (network, log, cp)
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_reads_back() {
        let (network, log, cp) = signed();
        let back = SignedCheckpoint::verify(cp.note(), &network, &log.signing_key()).unwrap();
        assert_eq!(back.checkpoint(), cp.checkpoint());
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
        let (verified, _) = note.verify(&VerifierList::new(vec![Box::new(standard)])).unwrap();
        assert_eq!(verified.len(), 1);
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
        let key = log.signing_key();
        let other = Identity::generate(IdentityKind::Log);
        let forged = SignedCheckpoint::sign(&network, cp.checkpoint(), &other);
        assert_eq!(SignedCheckpoint::verify(forged.note(), &network, &key), Err(CheckpointError::NotSigned));
        let altered = cp.text().replacen("\n42\n", "\n43\n", 1);
        assert_eq!(SignedCheckpoint::verify(altered.as_bytes(), &network, &key), Err(CheckpointError::BadSignature));
        let elsewhere = EntryHash([8; 32]);
        assert!(SignedCheckpoint::verify(cp.note(), &elsewhere, &key).is_err());
        let unsigned = cp.text().split("\n\n").next().unwrap().to_owned() + "\n";
        assert!(SignedCheckpoint::verify(unsigned.as_bytes(), &network, &key).is_err());
        let huge = vec![b'a'; MAX_NOTE_SIZE + 1];
        assert_eq!(SignedCheckpoint::verify(&huge, &network, &key), Err(CheckpointError::TooLarge(MAX_NOTE_SIZE + 1)));
    }
}
