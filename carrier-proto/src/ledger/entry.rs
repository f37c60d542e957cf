//! Ledger entries: the decoded model, its canonical encoding, signing and
//! hashing.
//!
//! An entry is an author's signed request: it travels and is stored as
//! `pb::SignedEntry { body, signature }`, where `body` is the exact encoded
//! `pb::EntryBody` that was signed. It names its network but not its
//! position: the sequencer places it in the log. Decoding checks shape only
//! (sizes, key lengths, DID syntax, canonical bytes); whether the entry may
//! join the ledger's current state is [`super::LedgerState`]'s job.

use std::fmt;

use prost::Message;

use super::Consent;
use super::genesis::{Quotas, WitnessPolicy};
use super::handover::Approval;
use crate::identity::{Did, DidError, Identity, KeyError, NoisePublicKey, PublicKeys, SigningPublicKey};
use crate::{domain, pb};

/// How long a request signed by [`Entry::sign`] lives: a day, for a
/// request to wait out a sequencer's restart or a night away.
pub const DEFAULT_REQUEST_LIFETIME_MS: u64 = 24 * 3600 * 1000;
/// Largest encoded entry accepted anywhere (file, wire).
pub const MAX_ENTRY_SIZE: usize = 4096;
/// Longest network name, app name, role or revocation reason, in bytes.
pub const MAX_TEXT_LEN: usize = 256;
/// Most registrars a genesis may name, and most roles a device may hold.
pub const MAX_LIST_LEN: usize = 16;
/// A SHA-256 hash in the ledger: an entry's RFC 6962 leaf hash, a Merkle
/// root, or the network id (the genesis's leaf hash).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    /// All zeros: no hash (the network id a genesis names).
    pub const ZERO: EntryHash = EntryHash([0; 32]);

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits (as `to_hex` writes them).
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", &self.to_hex()[..16])
    }
}

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Names the network, its registrars, its log key and its quotas;
    /// always entry 0.
    Genesis {
        /// Network name, for people.
        network: String,
        /// Keys allowed to register devices.
        registrars: Vec<SigningPublicKey>,
        /// The one key that orders the log and signs checkpoints.
        log_key: SigningPublicKey,
        /// Limits on every author.
        quotas: Quotas,
        /// Who cosigns checkpoints, and how many must.
        witnesses: WitnessPolicy,
    },
    /// Admits a device; signed by a registrar.
    RegisterDevice {
        /// The device's DID (of `keys.signing`).
        did: Did,
        /// Its keys.
        keys: PublicKeys,
        /// Free-form roles (e.g. "relay").
        roles: Vec<String>,
    },
    /// Admits an app under a device; signed by that device.
    RegisterApp {
        /// The app's DID (of `keys.signing`).
        did: Did,
        /// Its keys.
        keys: PublicKeys,
        /// The hosting device.
        device: Did,
        /// Name for people.
        name: String,
        /// The app's consent to this host in this network.
        consent: Consent,
    },
    /// Replaces a DID's keys.
    RotateKeys {
        /// Whose keys.
        did: Did,
        /// The new keys.
        keys: PublicKeys,
    },
    /// Ends a DID for good (and a device's apps with it).
    Revoke {
        /// Who.
        did: Did,
        /// Why, for people.
        reason: String,
    },
    /// Moves sequencing to another device under a new log key; signed by a
    /// registrar, approved by more (see `handover`).
    Handover {
        /// The new log key: it signs every checkpoint from this entry on.
        log_key: SigningPublicKey,
        /// The device that sequences from now on.
        sequencer: Did,
        /// Further signatures, sorted by key.
        approvals: Vec<Approval>,
    },
    /// Replaces the witnesses and their quorum; signed by a registrar,
    /// approved by more (see `handover::check_witnesses`).
    Witnesses {
        /// Who cosigns checkpoints from this entry on, and how many must.
        policy: WitnessPolicy,
        /// Further registrars' signatures, sorted by key.
        approvals: Vec<Approval>,
    },
}

impl Op {
    /// Short name of the entry kind.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Genesis { .. } => "genesis",
            Op::RegisterDevice { .. } => "register-device",
            Op::RegisterApp { .. } => "register-app",
            Op::RotateKeys { .. } => "rotate-keys",
            Op::Revoke { .. } => "revoke",
            Op::Handover { .. } => "handover",
            Op::Witnesses { .. } => "witnesses",
        }
    }
}

/// The signed fields of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryBody {
    /// The network it is for; [`EntryHash::ZERO`] in the genesis.
    pub network_id: EntryHash,
    /// Milliseconds since the Unix epoch, by the author's clock.
    pub time_ms: u64,
    /// When the sequencer stops taking it (0: never; only a genesis, or an
    /// entry made before requests expired).
    pub expires_ms: u64,
    /// Who signed.
    pub signer: SigningPublicKey,
    /// What it does.
    pub op: Op,
}

/// A decoded entry with its signature and the exact bytes it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    body: EntryBody,
    body_bytes: Vec<u8>,
    signature: [u8; 64],
    encoded: Vec<u8>,
    hash: EntryHash,
}

/// Why bytes are not a well-formed entry.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Larger than [`MAX_ENTRY_SIZE`].
    #[error("entry is {0} bytes, more than the limit of {MAX_ENTRY_SIZE}")]
    TooLarge(usize),
    /// Not a protobuf message of the right type.
    #[error("entry does not decode: {0}")]
    Decode(String),
    /// The body decodes but is not in canonical form.
    #[error("entry body is not canonically encoded")]
    NotCanonical,
    /// The body names no operation.
    #[error("entry has no operation")]
    MissingOp,
    /// A register-app entry's consent is not 64 bytes.
    #[error("app consent is {0} bytes, expected 64")]
    ConsentLength(usize),
    /// The signature is not 64 bytes.
    #[error("signature is {0} bytes, expected 64")]
    SignatureLength(usize),
    /// The network id is not 32 bytes (or is present in a genesis).
    #[error("network id is {0} bytes, expected 32 (and none in a genesis)")]
    NetworkLength(usize),
    /// A genesis names witnesses badly.
    #[error("genesis witnesses: {0}")]
    Witness(String),
    /// A genesis quota of zero.
    #[error("genesis quota {0} must be at least 1")]
    ZeroQuota(&'static str),
    /// A key field is malformed.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// A DID field is malformed.
    #[error("{0}")]
    Did(#[from] DidError),
    /// A text field is empty where it must not be, or too long.
    #[error("{what} must be 1 to {MAX_TEXT_LEN} bytes long, found {len}")]
    TextLength {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A list is too long.
    #[error("{what} may hold at most {MAX_LIST_LEN} items, found {len}")]
    ListLength {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

impl Entry {
    /// Signs a new entry for network `network_id` ([`EntryHash::ZERO`] for
    /// a genesis) with `signer`; a request (anything but a genesis) expires
    /// [`DEFAULT_REQUEST_LIFETIME_MS`] after `time_ms`.
    pub fn sign(network_id: EntryHash, time_ms: u64, op: Op, signer: &Identity) -> Self {
        let expires_ms = match op {
            Op::Genesis { .. } => 0,
            _ => time_ms.saturating_add(DEFAULT_REQUEST_LIFETIME_MS),
        };
        Self::sign_until(network_id, time_ms, expires_ms, op, signer)
    }

    /// Signs a new entry that the sequencer takes until `expires_ms`.
    pub fn sign_until(network_id: EntryHash, time_ms: u64, expires_ms: u64, op: Op, signer: &Identity) -> Self {
        let body = EntryBody { network_id, time_ms, expires_ms, signer: signer.signing_key(), op };
        let body_bytes = body_to_pb(&body).encode_to_vec();
        let signature = signer.sign(domain::LEDGER_ENTRY, &body_bytes);
        Self::assemble(body, body_bytes, signature)
    }

    fn assemble(body: EntryBody, body_bytes: Vec<u8>, signature: [u8; 64]) -> Self {
        let encoded = pb::SignedEntry { body: body_bytes.clone(), signature: signature.to_vec() }.encode_to_vec();
        let hash = super::merkle::leaf_hash(&encoded);
        Self { body, body_bytes, signature, encoded, hash }
    }

    /// Decodes and shape-checks an entry. Does not check the signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        Self::decode_with(bytes, Trust::Checked)
    }

    /// Decodes an entry this ledger decoded with every check before (a
    /// store re-opening its log, whose root then must match its signed
    /// checkpoint): the shape and canonical form are checked, but not that
    /// each key is a curve point, which costs a square root per key.
    pub fn decode_known(bytes: &[u8]) -> Result<Self, EntryError> {
        Self::decode_with(bytes, Trust::Known)
    }

    fn decode_with(bytes: &[u8], trust: Trust) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_SIZE {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        let signed = pb::SignedEntry::decode(bytes).map_err(|e| EntryError::Decode(e.to_string()))?;
        let signature: [u8; 64] =
            signed.signature.as_slice().try_into().map_err(|_| EntryError::SignatureLength(signed.signature.len()))?;
        let message = pb::EntryBody::decode(signed.body.as_slice()).map_err(|e| EntryError::Decode(e.to_string()))?;
        let body = body_from_pb(message, trust)?;
        // Canonical form: re-encoding must give the signed bytes exactly, and
        // the outer message must be the one we would write. This rules out
        // unknown fields, repeated fields and other malleable encodings.
        let entry = Self::assemble(body, signed.body, signature);
        if entry.encoded != bytes || body_to_pb(&entry.body).encode_to_vec() != entry.body_bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }

    /// The signed fields.
    pub fn body(&self) -> &EntryBody {
        &self.body
    }

    /// What it does.
    pub fn op(&self) -> &Op {
        &self.body.op
    }

    /// The encoded signed entry, as stored and sent.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// This entry's RFC 6962 leaf hash: SHA-256(0x00 || encoded).
    pub fn hash(&self) -> EntryHash {
        self.hash
    }

    /// The signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// The message the signature covers (tag and body).
    pub fn signed_message(&self) -> Vec<u8> {
        domain::tagged(domain::LEDGER_ENTRY, &self.body_bytes)
    }

    /// Checks the signature against the `signer` field alone.
    pub fn verify_signature(&self) -> bool {
        self.body.signer.verify(domain::LEDGER_ENTRY, &self.body_bytes, &self.signature)
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").field("body", &self.body).field("hash", &self.hash).finish()
    }
}

fn body_to_pb(body: &EntryBody) -> pb::EntryBody {
    use pb::entry_body::Op as P;
    let op = match &body.op {
        Op::Genesis { network, registrars, log_key, quotas, witnesses } => {
            let mut genesis = pb::Genesis {
                network: network.clone(),
                registrars: registrars.iter().map(|k| k.as_bytes().to_vec()).collect(),
                log_key: log_key.as_bytes().to_vec(),
                ..Default::default()
            };
            quotas.to_pb(&mut genesis);
            witnesses.to_pb(&mut genesis);
            P::Genesis(genesis)
        }
        Op::RegisterDevice { did, keys, roles } => P::RegisterDevice(pb::RegisterDevice {
            did: did.to_string(),
            signing_key: keys.signing.as_bytes().to_vec(),
            noise_key: keys.noise.as_bytes().to_vec(),
            roles: roles.clone(),
        }),
        Op::RegisterApp { did, keys, device, name, consent } => P::RegisterApp(pb::RegisterApp {
            did: did.to_string(),
            signing_key: keys.signing.as_bytes().to_vec(),
            noise_key: keys.noise.as_bytes().to_vec(),
            device: device.to_string(),
            name: name.clone(),
            consent: consent.0.to_vec(),
        }),
        Op::RotateKeys { did, keys } => P::RotateKeys(pb::RotateKeys {
            did: did.to_string(),
            signing_key: keys.signing.as_bytes().to_vec(),
            noise_key: keys.noise.as_bytes().to_vec(),
        }),
        Op::Revoke { did, reason } => P::Revoke(pb::Revoke { did: did.to_string(), reason: reason.clone() }),
        Op::Handover { log_key, sequencer, approvals } => P::Handover(pb::Handover {
            log_key: log_key.as_bytes().to_vec(),
            sequencer: sequencer.to_string(),
            approvals: approvals_to_pb(approvals),
        }),
        Op::Witnesses { policy, approvals } => P::Witnesses(pb::Witnesses {
            witnesses: policy.witnesses_pb(),
            quorum: policy.quorum,
            approvals: approvals_to_pb(approvals),
        }),
    };
    let network = if body.network_id == EntryHash::ZERO { Vec::new() } else { body.network_id.0.to_vec() };
    pb::EntryBody {
        network,
        time_ms: body.time_ms,
        expires_ms: body.expires_ms,
        signer: body.signer.as_bytes().to_vec(),
        op: Some(op),
    }
}

fn body_from_pb(message: pb::EntryBody, trust: Trust) -> Result<EntryBody, EntryError> {
    use pb::entry_body::Op as P;
    let genesis = matches!(message.op, Some(P::Genesis(_)));
    let network_id = match (genesis, message.network.len()) {
        (true, 0) => EntryHash::ZERO,
        (false, 32) => EntryHash(message.network.as_slice().try_into().map_err(|_| EntryError::NetworkLength(32))?),
        (_, len) => return Err(EntryError::NetworkLength(len)),
    };
    let signer = trust.key(&message.signer, "signer key")?;
    let op = match message.op.ok_or(EntryError::MissingOp)? {
        P::Genesis(g) => {
            check_list("registrars", g.registrars.len())?;
            Op::Genesis {
                quotas: Quotas::from_pb(&g)?,
                witnesses: WitnessPolicy::from_pb(&g, |k| Ok(trust.key(k, "witness key")?))?,
                registrars: g.registrars.iter().map(|k| trust.key(k, "registrar key")).collect::<Result<_, _>>()?,
                log_key: trust.key(&g.log_key, "log key")?,
                network: text("network name", g.network, false)?,
            }
        }
        P::RegisterDevice(d) => {
            check_list("roles", d.roles.len())?;
            let keys = trust.keys(&d.signing_key, &d.noise_key)?;
            Op::RegisterDevice {
                did: trust.did(&d.did, &[keys.signing])?,
                keys,
                roles: d.roles.into_iter().map(|r| text("role", r, false)).collect::<Result<_, _>>()?,
            }
        }
        P::RegisterApp(a) => {
            let keys = trust.keys(&a.signing_key, &a.noise_key)?;
            Op::RegisterApp {
                did: trust.did(&a.did, &[keys.signing])?,
                keys,
                // The hosting device signs, so its DID is usually the signer's.
                device: trust.did(&a.device, &[signer])?,
                name: text("app name", a.name, false)?,
                consent: Consent(
                    a.consent.as_slice().try_into().map_err(|_| EntryError::ConsentLength(a.consent.len()))?,
                ),
            }
        }
        P::RotateKeys(r) => {
            Op::RotateKeys { did: trust.did(&r.did, &[signer])?, keys: trust.keys(&r.signing_key, &r.noise_key)? }
        }
        P::Revoke(r) => Op::Revoke { did: trust.did(&r.did, &[signer])?, reason: text("reason", r.reason, true)? },
        P::Handover(h) => Op::Handover {
            approvals: approvals_from_pb(&h.approvals, trust)?,
            log_key: trust.key(&h.log_key, "log key")?,
            sequencer: trust.did(&h.sequencer, &[])?,
        },
        P::Witnesses(w) => Op::Witnesses {
            approvals: approvals_from_pb(&w.approvals, trust)?,
            policy: WitnessPolicy::from_parts(&w.witnesses, w.quorum, |k| Ok(trust.key(k, "witness key")?))?,
        },
    };
    Ok(EntryBody { network_id, time_ms: message.time_ms, expires_ms: message.expires_ms, signer, op })
}

fn approvals_to_pb(approvals: &[Approval]) -> Vec<pb::Approval> {
    approvals.iter().map(|a| pb::Approval { key: a.key.as_bytes().to_vec(), signature: a.signature.to_vec() }).collect()
}

/// Approvals as they travel: one encoding only, sorted by key, each once.
fn approvals_from_pb(approvals: &[pb::Approval], trust: Trust) -> Result<Vec<Approval>, EntryError> {
    check_list("approvals", approvals.len())?;
    let approvals = approvals
        .iter()
        .map(|a| {
            let signature = a.signature.as_slice().try_into();
            Ok(Approval {
                key: trust.key(&a.key, "approval key")?,
                signature: signature.map_err(|_| EntryError::SignatureLength(a.signature.len()))?,
            })
        })
        .collect::<Result<Vec<_>, EntryError>>()?;
    if !approvals.windows(2).all(|w| w[0].key.as_bytes() < w[1].key.as_bytes()) {
        return Err(EntryError::NotCanonical);
    }
    Ok(approvals)
}

/// How far to trust the bytes of an entry being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Check every key is a curve point (bytes seen for the first time).
    Checked,
    /// Bytes this ledger decoded with every check before, proven unchanged
    /// by the Merkle root (see [`Entry::decode_known`]).
    Known,
}

impl Trust {
    fn key(self, bytes: &[u8], what: &'static str) -> Result<SigningPublicKey, KeyError> {
        match self {
            Trust::Checked => SigningPublicKey::from_slice(bytes, what),
            Trust::Known => SigningPublicKey::known_slice(bytes, what),
        }
    }

    fn keys(self, signing: &[u8], noise: &[u8]) -> Result<PublicKeys, KeyError> {
        Ok(PublicKeys {
            signing: self.key(signing, "signing key")?,
            noise: NoisePublicKey::from_slice(noise, "noise key")?,
        })
    }

    fn did(self, text: &str, known: &[SigningPublicKey]) -> Result<Did, DidError> {
        match self {
            Trust::Checked => Did::parse_expecting(text, known),
            Trust::Known => Did::parse_known(text),
        }
    }
}

fn text(what: &'static str, value: String, may_be_empty: bool) -> Result<String, EntryError> {
    if value.len() > MAX_TEXT_LEN || (value.is_empty() && !may_be_empty) {
        return Err(EntryError::TextLength { what, len: value.len() });
    }
    Ok(value)
}

fn check_list(what: &'static str, len: usize) -> Result<(), EntryError> {
    if len > MAX_LIST_LEN {
        return Err(EntryError::ListLength { what, len });
    }
    Ok(())
}

#[cfg(test)]
#[path = "entry_tests.rs"]
mod tests;
