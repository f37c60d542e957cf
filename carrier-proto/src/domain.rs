//! Domain-separation tags: every signature and hash in Carrier is taken over
//! one of these tags followed by the payload, so a signature made for one
//! purpose can never be replayed as another.

/// Signature over an encoded ledger entry body.
pub const LEDGER_ENTRY: &[u8] = b"carrier/v1/ledger-entry\0";
/// Signature by an identity's Ed25519 key over its own Noise static key.
pub const NOISE_KEY: &[u8] = b"carrier/v1/noise-key\0";

/// Signature by an app over its host device's DID and the network id.
pub const APP_CONSENT: &[u8] = b"carrier/v1/app-consent\0";

/// Signature by an app over its daemon's challenge on the app socket.
pub const APP_AUTH: &[u8] = b"carrier/v1/app-auth\0";

/// Signature by the log key over a checkpoint note's text: empty, because a
/// C2SP signed note signs its text as it stands. Notes are kept apart from
/// every other signed message by their first line (the log's origin) and
/// by the log key, which signs nothing else but the tagged messages below
/// (sequencer answers, handover approvals), none of which can be a note
/// (a note's text holds no NUL byte).
pub const NOTE: &[u8] = b"";

/// Signature by a cosigner (a witness, or the log dating its own
/// checkpoint) in C2SP `cosignature/v1` form: empty, because the signed
/// message begins with its own header line, `cosignature/v1`.
pub const COSIGNATURE: &[u8] = b"";

/// Signature by a device over a mailbox blob it deposits: the blob's
/// origin, so nodes that move it charge it to its origin.
pub const MAILBOX_DEPOSIT: &[u8] = b"carrier/v1/mailbox-deposit\0";

/// Signature by a registrar (or the current log key) approving a handover
/// of sequencing to a new log key and device.
pub const HANDOVER: &[u8] = b"carrier/v1/handover\0";

/// Signature by a registrar approving a change of the witnesses.
pub const WITNESSES: &[u8] = b"carrier/v1/witnesses\0";

/// Signature by the log key over its answer to a request: a promise to
/// include it by a deadline, or a refusal with the rule.
pub const SEQUENCER_ANSWER: &[u8] = b"carrier/v1/sequencer-answer\0";

/// Concatenates `tag` and `payload` into the message that is signed or hashed.
pub fn tagged(tag: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(tag.len() + payload.len());
    message.extend_from_slice(tag);
    message.extend_from_slice(payload);
    message
}
