//! Sealed mailbox blobs: a message for a device that is offline, sealed to
//! that device's Noise static key with the one-way pattern X, so the
//! mailbox nodes that hold it can neither read nor alter it, and the
//! recipient learns (authenticated) which device's key sealed it.
//!
//! ```text
//!  blob = len ‖ Noise X message 1 (e, es, s, ss; payload: the plaintext's length)
//!       ‖ (len ‖ transport chunk)*   (each chunk ≤ 65,519 bytes of plaintext)
//!  prologue = "carrier/v1/mailbox\0" ‖ network id ‖ recipient device DID (32 bytes)
//!  id = SHA-256(blob): how mailbox nodes name, dedup and delete it
//! ```
//!
//! The prologue binds a blob to one network and one recipient: replayed to
//! another device, or into another network, it does not open. Who the
//! sender is on the ledger, and whether it may send, is the caller's
//! question, asked with the static key [`open`] returns.

use sha2::{Digest, Sha256};
use snow::{Builder, HandshakeState};

use crate::identity::{Did, Identity, NoisePublicKey};
use crate::ledger::EntryHash;

const PATTERN: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE_TAG: &[u8] = b"carrier/v1/mailbox\0";
/// Noise's largest message.
const NOISE_MAX: usize = 65_535;
/// ChaCha20-Poly1305's tag.
const TAG: usize = 16;
/// Plaintext per transport chunk.
const CHUNK: usize = NOISE_MAX - TAG;

/// Why a blob could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MailboxError {
    /// Not a blob: cut short, a length out of range, or bytes left over.
    #[error("malformed mailbox blob: {0}")]
    Malformed(&'static str),
    /// The blob did not decrypt: altered, sealed for another device or
    /// network, or forged.
    #[error("the mailbox blob does not open: altered, or sealed for another device or network")]
    DoesNotOpen,
    /// The plaintext is over the limit the caller set.
    #[error("the sealed message is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A key the Noise library refused (never an honest key).
    #[error("noise: {0}")]
    Noise(String),
}

/// An opened blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The Noise static key that sealed it (authenticated by the pattern).
    pub sender: NoisePublicKey,
    /// What was sealed.
    pub plaintext: Vec<u8>,
}

/// The message a blob's origin signs: which blob, for whom, in which
/// network, until when.
fn deposit_message(network: &EntryHash, recipient: &Did, id: &[u8; 32], expires_at_ms: u64) -> Vec<u8> {
    let mut message = network.0.to_vec();
    message.extend_from_slice(&recipient.key_bytes());
    message.extend_from_slice(id);
    message.extend_from_slice(&expires_at_ms.to_be_bytes());
    message
}

/// The origin's signature over a deposit of blob `id` for `recipient`.
pub fn sign_deposit(
    origin: &Identity,
    network: &EntryHash,
    recipient: &Did,
    id: &[u8; 32],
    expires_at_ms: u64,
) -> [u8; 64] {
    origin.sign(crate::domain::MAILBOX_DEPOSIT, &deposit_message(network, recipient, id, expires_at_ms))
}

/// Checks an origin's signature over a deposit (see [`sign_deposit`]).
pub fn verify_deposit(
    key: &crate::identity::SigningPublicKey,
    network: &EntryHash,
    recipient: &Did,
    id: &[u8; 32],
    expires_at_ms: u64,
    signature: &[u8],
) -> bool {
    let Ok(signature) = <[u8; 64]>::try_from(signature) else { return false };
    key.verify(crate::domain::MAILBOX_DEPOSIT, &deposit_message(network, recipient, id, expires_at_ms), &signature)
}

/// The id mailbox nodes know a blob by.
pub fn blob_id(blob: &[u8]) -> [u8; 32] {
    Sha256::digest(blob).into()
}

fn prologue(network: &EntryHash, recipient: &Did) -> Vec<u8> {
    let mut prologue = PROLOGUE_TAG.to_vec();
    prologue.extend_from_slice(&network.0);
    prologue.extend_from_slice(&recipient.key_bytes());
    prologue
}

fn noise(e: snow::Error) -> MailboxError {
    MailboxError::Noise(e.to_string())
}

fn builder<'a>(prologue: &'a [u8], secret: &'a [u8]) -> Result<Builder<'a>, MailboxError> {
    let params = PATTERN.parse().map_err(noise)?;
    Builder::new(params).local_private_key(secret).map_err(noise)?.prologue(prologue).map_err(noise)
}

fn push_part(blob: &mut Vec<u8>, part: &[u8]) {
    blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
    blob.extend_from_slice(part);
}

/// Seals `plaintext` from `sender` to the device `recipient` (whose Noise
/// static key the ledger holds as `recipient_key`) in `network`.
pub fn seal(
    sender: &Identity,
    recipient: &Did,
    recipient_key: &NoisePublicKey,
    network: &EntryHash,
    plaintext: &[u8],
) -> Result<Vec<u8>, MailboxError> {
    let prologue = prologue(network, recipient);
    let secret = sender.noise_secret();
    let mut state: HandshakeState = builder(&prologue, &secret[..])?
        .remote_public_key(recipient_key.as_bytes())
        .map_err(noise)?
        .build_initiator()
        .map_err(noise)?;
    let mut buf = vec![0u8; NOISE_MAX];
    let mut blob = Vec::with_capacity(plaintext.len() + 256);
    let len = state.write_message(&(plaintext.len() as u64).to_be_bytes(), &mut buf).map_err(noise)?;
    push_part(&mut blob, &buf[..len]);
    let mut transport = state.into_transport_mode().map_err(noise)?;
    for chunk in plaintext.chunks(CHUNK) {
        let len = transport.write_message(chunk, &mut buf).map_err(noise)?;
        push_part(&mut blob, &buf[..len]);
    }
    Ok(blob)
}

/// Opens a blob sealed to `recipient` in `network`; refuses plaintexts over
/// `max` bytes before decrypting them.
pub fn open(recipient: &Identity, network: &EntryHash, blob: &[u8], max: usize) -> Result<Opened, MailboxError> {
    let mut parts = Parts(blob);
    let first = parts.next()?.ok_or(MailboxError::Malformed("empty"))?;
    let prologue = prologue(network, &recipient.did());
    let secret = recipient.noise_secret();
    let mut state = builder(&prologue, &secret[..])?.build_responder().map_err(noise)?;
    let mut buf = vec![0u8; NOISE_MAX];
    let len = state.read_message(first, &mut buf).map_err(|_| MailboxError::DoesNotOpen)?;
    let declared: [u8; 8] = buf[..len].try_into().map_err(|_| MailboxError::Malformed("no length in the header"))?;
    let declared = u64::from_be_bytes(declared);
    let declared = usize::try_from(declared).map_err(|_| MailboxError::TooLarge { len: usize::MAX, max })?;
    if declared > max {
        return Err(MailboxError::TooLarge { len: declared, max });
    }
    let sender = state.get_remote_static().ok_or(MailboxError::DoesNotOpen)?;
    let sender = NoisePublicKey::from_slice(sender, "sender key").map_err(|_| MailboxError::DoesNotOpen)?;
    let mut transport = state.into_transport_mode().map_err(noise)?;
    let mut plaintext = Vec::with_capacity(declared);
    while let Some(part) = parts.next()? {
        if part.len() > NOISE_MAX || plaintext.len() >= declared {
            return Err(MailboxError::Malformed("more chunks than its length needs"));
        }
        let len = transport.read_message(part, &mut buf).map_err(|_| MailboxError::DoesNotOpen)?;
        plaintext.extend_from_slice(&buf[..len]);
    }
    if plaintext.len() != declared {
        return Err(MailboxError::Malformed("its length does not match what it holds"));
    }
    Ok(Opened { sender, plaintext })
}

/// The length-prefixed parts of a blob.
struct Parts<'a>(&'a [u8]);

impl<'a> Parts<'a> {
    fn next(&mut self) -> Result<Option<&'a [u8]>, MailboxError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let len: [u8; 4] =
            self.0.get(..4).and_then(|b| b.try_into().ok()).ok_or(MailboxError::Malformed("cut short"))?;
        let len = u32::from_be_bytes(len) as usize;
        let part = self.0.get(4..4 + len).ok_or(MailboxError::Malformed("cut short"))?;
        self.0 = &self.0[4 + len..];
        Ok(Some(part))
    }
}

#[cfg(test)]
#[path = "mailbox_tests.rs"]
mod tests;
