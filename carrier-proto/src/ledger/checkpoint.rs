//! Checkpoints: the sequencer's signed word on the log's size and root, as
//! C2SP tlog-checkpoint signed notes (c2sp.org/tlog-checkpoint,
//! c2sp.org/signed-note), dated and cosigned with C2SP tlog-cosignature
//! lines (`cosignature/v1`).
//!
//! ```text
//! carrier/<network id hex>          origin, also the log key's name
//! 1234                              tree size
//! <base64 root>                     RFC 6962 root of those entries
//! carrier-sequencer did:carrier:z…  optional: the daemon taking requests
//!
//! — carrier/<network id hex> <base64(key id || Ed25519 signature)>          the log
//! — carrier/<network id hex> <base64(key id || time || Ed25519 signature)>  the log's time
//! — <witness name> <base64(key id || time || Ed25519 signature)>           each witness
//! ```
//!
//! The log's key id is the first four bytes of SHA-256(name || 0x0A ||
//! 0x01 || public key), as signed-note says, so any C2SP verifier given
//! [`verifier_key`] accepts these notes; the log also cosigns its own
//! checkpoint to date it. Whatever a note arrives with, a
//! [`SignedCheckpoint`] keeps only the lines of keys it knows (one each,
//! verified) and writes its note anew from them: a padded note is never
//! stored or passed on as sent.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use signed_note::Signature;
use tlog_tiles::Hash;

use super::cosignature::{self, COSIGNATURE_LEN, WitnessKey};
use super::entry::EntryHash;
use super::note::{self, MAX_NOTE_SIZE};
use crate::domain;
use crate::identity::{Did, Identity, SigningPublicKey};

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
    /// The note's text is not a tlog-checkpoint in canonical form.
    #[error("the note is not a tlog checkpoint")]
    NotACheckpoint,
    /// An extension line this build does not know, or a bad DID in one.
    #[error("unknown checkpoint extension line {0:?}")]
    Extension(String),
    /// Fewer witnesses cosigned it than the network requires.
    #[error("the checkpoint has {have} valid witness cosignatures; this network requires {need}")]
    Unwitnessed {
        /// Valid cosignatures by the network's witnesses.
        have: usize,
        /// The quorum.
        need: usize,
    },
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

/// What a checkpoint of one log is checked against: the network, the key
/// that signs its checkpoints, and the witnesses that must cosign them.
#[derive(Debug, Clone, Copy)]
pub struct LogTrust<'a> {
    /// The network id (the log's origin names it).
    pub network: EntryHash,
    /// The log key.
    pub log_key: SigningPublicKey,
    /// Witnesses whose cosignatures count.
    pub witnesses: &'a [WitnessKey],
    /// Cosignatures a checkpoint needs before it is taken.
    pub quorum: usize,
}

impl<'a> LogTrust<'a> {
    /// Trust in `log_key` alone, no witnesses (offline tools, tests).
    pub fn log_only(network: EntryHash, log_key: SigningPublicKey) -> LogTrust<'static> {
        LogTrust { network, log_key, witnesses: &[], quorum: 0 }
    }
}

/// One witness's cosignature on a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    /// Which witness.
    pub witness: WitnessKey,
    /// When it cosigned, in seconds since the Unix epoch.
    pub time_s: u64,
    /// Time and signature, as the note line carries them.
    bytes: [u8; COSIGNATURE_LEN],
}

impl Cosignature {
    /// The line as a note carries it.
    fn line(&self) -> Option<Signature> {
        line(self.witness.name(), self.witness.key_id(), &self.bytes)
    }

    /// The note line, as text (what a witness answers with).
    pub fn to_line(&self) -> String {
        self.line().map(|l| String::from_utf8_lossy(&l.to_bytes()).into_owned()).unwrap_or_default()
    }
}

/// A checkpoint with its verified signatures, and the canonical note made
/// from them.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    network: EntryHash,
    /// The note text the signatures cover.
    body: String,
    log_key: SigningPublicKey,
    log_signature: [u8; 64],
    /// The log's own cosignature, dating the checkpoint.
    log_time: Option<(u64, [u8; COSIGNATURE_LEN])>,
    /// Witnesses' cosignatures, one per witness, in the network's order.
    cosignatures: Vec<Cosignature>,
    /// The note, written anew from the above.
    note: Vec<u8>,
}

impl fmt::Debug for SignedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedCheckpoint")
            .field("size", &self.checkpoint.size)
            .field("root", &self.checkpoint.root)
            .field("time_s", &self.time_s())
            .field("cosignatures", &self.cosignatures.len())
            .finish()
    }
}

/// The log's origin line and key name.
pub fn origin(network: &EntryHash) -> String {
    format!("carrier/{}", network.to_hex())
}

/// The signed-note key id of the log key under `name`.
fn log_key_id(name: &str, key: &SigningPublicKey) -> u32 {
    let mut encoded = vec![ALG_ED25519];
    encoded.extend_from_slice(key.as_bytes());
    signed_note::key_id(name, &encoded)
}

/// A signature line; `None` only for a name signed-note forbids, which
/// origins (ASCII hex) and witness names (checked when made) never are.
fn line(name: &str, id: u32, bytes: &[u8]) -> Option<Signature> {
    Signature::new(name.to_owned(), id, bytes.to_vec()).ok()
}

/// The C2SP verifier key (`name+hex id+base64(0x01 || key)`) that any
/// signed-note verifier takes to check this network's checkpoints.
pub fn verifier_key(network: &EntryHash, key: &SigningPublicKey) -> String {
    let name = origin(network);
    let mut encoded = vec![ALG_ED25519];
    encoded.extend_from_slice(key.as_bytes());
    format!("{name}+{:08x}+{}", log_key_id(&name, key), BASE64.encode(encoded))
}

/// Reads a verifier key made by [`verifier_key`]: the network id (from its
/// name) and the log key. The key id must match, as signed-note says.
pub fn parse_verifier_key(text: &str) -> Result<(EntryHash, SigningPublicKey), CheckpointError> {
    let bad = |why: &str| CheckpointError::Malformed(format!("verifier key: {why}"));
    // The name has no '+'; the base64 key may.
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected name+id+key"));
    };
    let network =
        name.strip_prefix("carrier/").and_then(EntryHash::from_hex).ok_or_else(|| bad("not a Carrier log"))?;
    let encoded = BASE64.decode(key).map_err(|_| bad("key is not base64"))?;
    let (Some(&ALG_ED25519), Ok(raw)) = (encoded.first(), <[u8; 32]>::try_from(&encoded[1.min(encoded.len())..]))
    else {
        return Err(bad("not an Ed25519 key"));
    };
    let key = SigningPublicKey::from_bytes(raw).map_err(|e| bad(&e.to_string()))?;
    if u32::from_str_radix(id, 16).ok() != Some(log_key_id(name, &key)) {
        return Err(bad("the key id does not match the key"));
    }
    Ok((network, key))
}

/// The note text of `checkpoint` in `network`'s log.
fn body(network: &EntryHash, checkpoint: &Checkpoint) -> String {
    let extension = match checkpoint.sequencer {
        Some(did) => format!("{SEQUENCER_PREFIX}{did}\n"),
        None => String::new(),
    };
    // The origin is ASCII hex and the extension a DID line: always valid.
    tlog_tiles::Checkpoint::new(&origin(network), checkpoint.size, Hash(checkpoint.root.0), &extension)
        .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
        .unwrap_or_default()
}

/// Reads a note text as a checkpoint of `network`'s log; only the canonical
/// text (as [`body`] writes it) is a checkpoint.
fn read_body(text: &str, network: &EntryHash) -> Result<Checkpoint, CheckpointError> {
    let parsed = tlog_tiles::Checkpoint::from_bytes(text.as_bytes()).map_err(|_| CheckpointError::NotACheckpoint)?;
    let name = origin(network);
    if parsed.origin() != name {
        let found = parsed.origin().chars().take(80).collect();
        return Err(CheckpointError::WrongOrigin { expected: name, found });
    }
    let mut sequencer = None;
    for line in parsed.extension().lines() {
        let did = line.strip_prefix(SEQUENCER_PREFIX).and_then(|d| d.parse::<Did>().ok());
        match did {
            Some(did) if sequencer.is_none() => sequencer = Some(did),
            _ => return Err(CheckpointError::Extension(line.chars().take(80).collect())),
        }
    }
    let checkpoint = Checkpoint { size: parsed.size(), root: EntryHash(parsed.hash().0), sequencer };
    if body(network, &checkpoint) != text {
        return Err(CheckpointError::NotACheckpoint);
    }
    Ok(checkpoint)
}

/// Checks that `note` is a bounded signed note whose text is a checkpoint
/// of `network`'s log, without checking any signature: what a handshake
/// may carry. Returns what it says.
pub fn check_note_shape(note: &[u8], network: &EntryHash) -> Result<Checkpoint, CheckpointError> {
    read_body(note::parse(note)?.text, network)
}

impl SignedCheckpoint {
    /// Signs `checkpoint` of `network`'s log with the log key, dated
    /// `time_s` (seconds since the epoch; 0 leaves it undated).
    pub fn sign(network: &EntryHash, checkpoint: Checkpoint, log: &Identity, time_s: u64) -> Self {
        let body = body(network, &checkpoint);
        let log_signature = log.sign(domain::NOTE, body.as_bytes());
        let log_time = (time_s != 0).then(|| (time_s, cosignature::sign(log, &body, time_s)));
        let mut signed = Self {
            checkpoint,
            network: *network,
            body,
            log_key: log.signing_key(),
            log_signature,
            log_time,
            cosignatures: Vec::new(),
            note: Vec::new(),
        };
        signed.rewrite();
        signed
    }

    /// Parses `note` and checks it is a checkpoint of the trusted log signed
    /// by its log key. Cosignatures by the trusted witnesses are kept (the
    /// first valid one of each); every other line is dropped. The quorum is
    /// not checked: see [`verify`](Self::verify).
    pub fn open(note: &[u8], trust: &LogTrust<'_>) -> Result<Self, CheckpointError> {
        let parsed = note::parse(note)?;
        let checkpoint = read_body(parsed.text, &trust.network)?;
        let name = origin(&trust.network);
        let (log_id, time_id) = (log_key_id(&name, &trust.log_key), cosignature::key_id(&name, &trust.log_key));
        let text = parsed.text;
        // signed-note: the first line with the log key's name and id must verify.
        let log_line =
            parsed.lines.iter().find(|l| l.name() == name && l.id() == log_id).ok_or(CheckpointError::NotSigned)?;
        let log_signature: [u8; 64] = log_line.signature().try_into().map_err(|_| CheckpointError::BadSignature)?;
        if !trust.log_key.verify(domain::NOTE, text.as_bytes(), &log_signature) {
            return Err(CheckpointError::BadSignature);
        }
        let valid_time = |l: &&Signature| l.name() == name && l.id() == time_id;
        let log_time = parsed.lines.iter().filter(valid_time).find_map(|l| {
            let time = cosignature::verify(&trust.log_key, text, l.signature())?;
            Some((time, l.signature().try_into().ok()?))
        });
        let cosignatures = trust
            .witnesses
            .iter()
            .filter_map(|witness| {
                let (wname, id) = (witness.name(), witness.key_id());
                parsed.lines.iter().filter(|l| l.name() == wname && l.id() == id).find_map(|l| {
                    let time_s = cosignature::verify(&witness.key(), text, l.signature())?;
                    Some(Cosignature { witness: witness.clone(), time_s, bytes: l.signature().try_into().ok()? })
                })
            })
            .collect();
        let mut signed = Self {
            checkpoint,
            network: trust.network,
            body: text.to_owned(),
            log_key: trust.log_key,
            log_signature,
            log_time,
            cosignatures,
            note: Vec::new(),
        };
        signed.rewrite();
        Ok(signed)
    }

    /// [`open`](Self::open), and at least the trust's quorum of witnesses
    /// cosigned it: a checkpoint a daemon may take.
    pub fn verify(note: &[u8], trust: &LogTrust<'_>) -> Result<Self, CheckpointError> {
        let signed = Self::open(note, trust)?;
        if signed.cosignatures.len() < trust.quorum {
            return Err(CheckpointError::Unwitnessed { have: signed.cosignatures.len(), need: trust.quorum });
        }
        Ok(signed)
    }

    /// Writes the note anew from the checkpoint's known signatures.
    fn rewrite(&mut self) {
        let name = origin(&self.network);
        let log = line(&name, log_key_id(&name, &self.log_key), &self.log_signature);
        let time = self.log_time.and_then(|(_, bytes)| line(&name, cosignature::key_id(&name, &self.log_key), &bytes));
        let lines: Vec<Signature> =
            log.into_iter().chain(time).chain(self.cosignatures.iter().filter_map(Cosignature::line)).collect();
        self.note = note::serialize(&self.body, &lines);
    }

    /// `witness`'s cosignature on this checkpoint at `time_s`.
    pub fn cosign(&self, witness: &Identity, key: &WitnessKey, time_s: u64) -> Cosignature {
        Cosignature { witness: key.clone(), time_s, bytes: cosignature::sign(witness, &self.body, time_s) }
    }

    /// Adds cosignatures (each witness once, the network's order kept:
    /// `witnesses`) that verify over this checkpoint; a witness's later
    /// cosignature replaces its earlier one. Returns how many were new or
    /// later.
    pub fn add_cosignatures(&mut self, cosignatures: &[Cosignature], witnesses: &[WitnessKey]) -> usize {
        let mut changed = 0;
        for cosignature in cosignatures {
            let known = witnesses.contains(&cosignature.witness);
            let valid = cosignature::verify(&cosignature.witness.key(), &self.body, &cosignature.bytes).is_some();
            if !known || !valid {
                continue;
            }
            match self.cosignatures.iter_mut().find(|c| c.witness == cosignature.witness) {
                Some(held) if held.time_s < cosignature.time_s => *held = cosignature.clone(),
                Some(_) => continue,
                None => self.cosignatures.push(cosignature.clone()),
            }
            changed += 1;
        }
        let order = |c: &Cosignature| witnesses.iter().position(|w| *w == c.witness);
        self.cosignatures.sort_by_key(order);
        self.rewrite();
        changed
    }

    /// Reads cosignature lines (as witnesses answer) by any of `witnesses`
    /// over this checkpoint; lines that do not parse or verify are skipped.
    pub fn read_cosignatures(&self, lines: &str, witnesses: &[WitnessKey]) -> Vec<Cosignature> {
        lines
            .lines()
            .filter_map(|l| Signature::from_bytes(l.as_bytes()).ok())
            .filter_map(|l| {
                let witness = witnesses.iter().find(|w| w.name() == l.name() && w.key_id() == l.id())?;
                let time_s = cosignature::verify(&witness.key(), &self.body, l.signature())?;
                Some(Cosignature { witness: witness.clone(), time_s, bytes: l.signature().try_into().ok()? })
            })
            .collect()
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

    /// The log key that signed it.
    pub fn log_key(&self) -> SigningPublicKey {
        self.log_key
    }

    /// When the log dated it, in seconds since the epoch (none if undated).
    pub fn log_time_s(&self) -> Option<u64> {
        self.log_time.map(|(t, _)| t)
    }

    /// The latest time anyone who signed it gives (the log or a witness):
    /// how fresh this checkpoint is known to be.
    pub fn time_s(&self) -> Option<u64> {
        self.cosignatures.iter().map(|c| c.time_s).chain(self.log_time_s()).max()
    }

    /// The witnesses' cosignatures it carries.
    pub fn cosignatures(&self) -> &[Cosignature] {
        &self.cosignatures
    }

    /// The note text the signatures cover (without signature lines).
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The signed note, written from its known signatures.
    pub fn note(&self) -> &[u8] {
        &self.note
    }

    /// The note as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.note).unwrap_or("")
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
