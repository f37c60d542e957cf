//! The handshake payload, and the ledger check every peer must pass.
//!
//! A peer is admitted only if the ledger has its DID active with exactly the
//! Ed25519 key it presents and exactly the Noise static key it proved in the
//! handshake, and its signature ties the two keys together.

use prost::Message;

use super::refusal::{HandshakeError, Refusal};
use crate::identity::{Did, Identity, NoisePublicKey, PublicKeys, SigningPublicKey};
use crate::ledger::{Directory, EntryHash, Kind, Status, check_note_shape};
use crate::{domain, pb};

/// Who this side is: its registered DID and current keys.
#[derive(Debug, Clone, Copy)]
pub struct Local<'a> {
    /// The DID the ledger knows this device by (it stays the same across
    /// key rotations, so it may name an earlier key than `identity`'s).
    pub did: Did,
    /// Current keys.
    pub identity: &'a Identity,
    /// The network this side belongs to (its genesis hash).
    pub network_id: EntryHash,
    /// This side's latest signed checkpoint (a C2SP note), sent so a peer
    /// that is behind can catch up.
    pub checkpoint: &'a [u8],
}

impl Local<'_> {
    /// The encoded payload this side sends inside the Noise handshake.
    pub(crate) fn payload(&self) -> Vec<u8> {
        pb::HandshakePayload {
            did: self.did.to_string(),
            signing_key: self.identity.signing_key().as_bytes().to_vec(),
            noise_key_signature: self.identity.noise_key_signature().to_vec(),
            checkpoint: self.checkpoint.to_vec(),
        }
        .encode_to_vec()
    }
}

/// A peer that passed the ledger check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Its DID.
    pub did: Did,
    /// Its keys, as the ledger holds them.
    pub keys: PublicKeys,
    /// Its checkpoint note at handshake time, as sent: bounded and shaped
    /// like a checkpoint of our log, but its signatures not yet verified
    /// (the daemon checks them and keeps the note written anew).
    pub checkpoint: Vec<u8>,
}

/// Checks a peer's payload and proven Noise key against the ledger.
pub(crate) fn admit(
    ledger: &dyn Directory,
    network: &EntryHash,
    payload: &[u8],
    noise_key: &[u8],
    expected: Option<&Did>,
) -> Result<Admitted, HandshakeError> {
    let malformed = |detail: String| HandshakeError::new(Refusal::Malformed, detail);
    let payload = pb::HandshakePayload::decode(payload).map_err(|e| malformed(format!("payload: {e}")))?;
    let did = Did::parse(&payload.did).map_err(|e| malformed(format!("payload DID: {e}")))?;
    let signing =
        SigningPublicKey::from_slice(&payload.signing_key, "signing key").map_err(|e| malformed(e.to_string()))?;
    let noise = NoisePublicKey::from_slice(noise_key, "noise key").map_err(|e| malformed(e.to_string()))?;
    let signature: [u8; 64] = payload
        .noise_key_signature
        .as_slice()
        .try_into()
        .map_err(|_| malformed("noise key signature is not 64 bytes".into()))?;

    if let Some(expected) = expected
        && *expected != did
    {
        return Err(HandshakeError::new(Refusal::WrongPeer, format!("dialed {expected}, reached {did}")));
    }
    let standing = ledger
        .standing(&did)
        .ok_or_else(|| HandshakeError::new(Refusal::UnknownIdentity, format!("{did} is not on the ledger")))?;
    match standing.status {
        Status::Active => {}
        Status::Revoked(_) | Status::HostRevoked(_) | Status::RevokedUnsequenced { .. } => {
            return Err(HandshakeError::new(Refusal::Revoked, format!("{did} is revoked")));
        }
    }
    if standing.kind != Kind::Device {
        // An app's key, whatever its key file claims: apps reach the network
        // only through their device's daemon.
        return Err(HandshakeError::new(Refusal::NotADevice, format!("{did} is registered as an app, not a device")));
    }
    let keys = standing.keys;
    if keys.signing != signing || keys.noise != noise {
        return Err(HandshakeError::new(
            Refusal::KeyMismatch,
            format!("{did} presented keys the ledger does not hold"),
        ));
    }
    if !signing.verify(domain::NOISE_KEY, noise.as_bytes(), &signature) {
        return Err(HandshakeError::new(Refusal::KeyMismatch, format!("{did}: noise key signature does not verify")));
    }
    // A peer with nothing sequenced yet sends no note; anything else must
    // be a bounded, well-formed checkpoint of our log. Its signatures are
    // checked (and the note written anew) before anything keeps it.
    if !payload.checkpoint.is_empty() {
        check_note_shape(&payload.checkpoint, network)
            .map_err(|e| HandshakeError::new(Refusal::BadCheckpoint, format!("{did}'s checkpoint: {e}")))?;
    }
    Ok(Admitted { did, keys, checkpoint: payload.checkpoint })
}
