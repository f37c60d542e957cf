//! The sequencer's word: a signed promise to put a request in the log by a
//! deadline, or a signed refusal naming the rule it broke; and the
//! evidence that a promise was broken, which anyone holding the network's
//! log keys can check.
//!
//! ```text
//!  request ─▶ sequencer ─▶ SequencerAnswer, signed by the log key
//!               promise: leaf h at index i, in a checkpoint dated ≤ deadline
//!               refusal: the rule h broke
//!  later, at the submitting daemon (judge):
//!    checkpoint holds i, leaf i = h        ─▶ kept
//!    checkpoint holds i, leaf i ≠ h        ─▶ broken (leaf i and its inclusion proof)
//!    checkpoint ends before i, dated after
//!      the deadline                        ─▶ broken
//!    otherwise                             ─▶ not yet
//! ```
//!
//! Like a Certificate Transparency SCT and its maximum merge delay: a
//! sequencer that drops a request (a revocation, say) cannot deny it, and
//! the daemon that holds the promise shows every peer. The checkpoint that
//! shows it may be signed by a later log key (after a handover): the log
//! as a whole did not keep the word its sequencer gave.

use prost::Message;

use super::checkpoint::{CheckpointError, LogTrust, SignedCheckpoint};
use super::entry::EntryHash;
use super::merkle::verify_inclusion;
use crate::domain;
use crate::identity::{Identity, SigningPublicKey};
use crate::pb;

/// The longest deadline a sequencer may give (Certificate Transparency's
/// tiled logs merge within a minute).
pub const MAX_PROMISE_DEADLINE_MS: u64 = 60_000;
/// Longest inclusion proof in evidence (a tree of 2^64 entries needs fewer).
const MAX_PROOF: usize = 64;
/// Largest encoded answer (a refusal's rule is short text).
pub const MAX_ANSWER_SIZE: usize = 1024;
/// Largest encoded broken promise: an answer, a note and a proof.
pub const MAX_BROKEN_PROMISE_SIZE: usize = MAX_ANSWER_SIZE + super::note::MAX_NOTE_SIZE + MAX_PROOF * 34 + 64;
/// Prefix of a broken promise written as one line of text.
pub const BROKEN_PROMISE_PREFIX: &str = "carrier-broken-promise:";

/// Why an answer or a broken promise does not hold.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromiseError {
    /// Not an encoded answer or broken promise.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Signed by a key that is not one of the network's log keys.
    #[error("signed by a key that is no log key of this network")]
    NotTheLog,
    /// Made for another network.
    #[error("made for another network")]
    OtherNetwork,
    /// The signature does not verify.
    #[error("the log key's signature does not verify")]
    BadSignature,
    /// The checkpoint does not verify.
    #[error("the checkpoint does not verify: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint does not show the promise broken.
    #[error("the promise is not shown broken: {0}")]
    NotBroken(&'static str),
}

/// What the sequencer said of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    /// The request is leaf `index`, in a checkpoint dated by `deadline_ms`.
    Promise {
        /// Where it is.
        index: u64,
        /// By when a checkpoint shows it (ms since the Unix epoch).
        deadline_ms: u64,
    },
    /// Refused, for this rule.
    Refused(String),
}

/// A sequencer's answer to one request, signed by a log key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencerAnswer {
    network: EntryHash,
    leaf: EntryHash,
    issued_ms: u64,
    word: Word,
    log_key: SigningPublicKey,
    encoded: Vec<u8>,
}

impl SequencerAnswer {
    /// The log's answer `word` on the request `leaf` of `network`, at `now_ms`.
    pub fn sign(log: &Identity, network: EntryHash, leaf: EntryHash, word: Word, now_ms: u64) -> Self {
        let answer = match &word {
            Word::Promise { index, deadline_ms } => {
                pb::answer_body::Answer::Promise(pb::Promise { index: *index, deadline_ms: *deadline_ms })
            }
            Word::Refused(rule) => pb::answer_body::Answer::Refused(rule.clone()),
        };
        let body = pb::AnswerBody {
            network_id: network.0.to_vec(),
            leaf_hash: leaf.0.to_vec(),
            issued_ms: now_ms,
            answer: Some(answer),
        }
        .encode_to_vec();
        let signature = log.sign(domain::SEQUENCER_ANSWER, &body);
        let encoded =
            pb::SequencerAnswer { body, log_key: log.signing_key().as_bytes().to_vec(), signature: signature.to_vec() }
                .encode_to_vec();
        Self { network, leaf, issued_ms: now_ms, word, log_key: log.signing_key(), encoded }
    }

    /// Reads an answer and checks it: signed by one of `log_keys` for `network`.
    pub fn decode(bytes: &[u8], network: &EntryHash, log_keys: &[SigningPublicKey]) -> Result<Self, PromiseError> {
        if bytes.len() > MAX_ANSWER_SIZE {
            return Err(PromiseError::Malformed(format!("{} bytes, over {MAX_ANSWER_SIZE}", bytes.len())));
        }
        let malformed = |e: &dyn std::fmt::Display| PromiseError::Malformed(e.to_string());
        let signed = pb::SequencerAnswer::decode(bytes).map_err(|e| malformed(&e))?;
        let log_key = SigningPublicKey::from_slice(&signed.log_key, "log key").map_err(|e| malformed(&e))?;
        if !log_keys.contains(&log_key) {
            return Err(PromiseError::NotTheLog);
        }
        let signature: [u8; 64] =
            signed.signature.as_slice().try_into().map_err(|_| malformed(&"a signature is 64 bytes"))?;
        if !log_key.verify(domain::SEQUENCER_ANSWER, &signed.body, &signature) {
            return Err(PromiseError::BadSignature);
        }
        let body = pb::AnswerBody::decode(signed.body.as_slice()).map_err(|e| malformed(&e))?;
        let hash = |raw: &[u8]| raw.try_into().map(EntryHash).map_err(|_| malformed(&"a hash is 32 bytes"));
        if hash(&body.network_id)? != *network {
            return Err(PromiseError::OtherNetwork);
        }
        let word = match body.answer {
            Some(pb::answer_body::Answer::Promise(p)) => Word::Promise { index: p.index, deadline_ms: p.deadline_ms },
            Some(pb::answer_body::Answer::Refused(rule)) => Word::Refused(rule),
            None => return Err(malformed(&"an answer that says nothing")),
        };
        Ok(Self {
            network: *network,
            leaf: hash(&body.leaf_hash)?,
            issued_ms: body.issued_ms,
            word,
            log_key,
            encoded: bytes.to_vec(),
        })
    }

    /// The request it answers.
    pub fn leaf(&self) -> EntryHash {
        self.leaf
    }

    /// What it says.
    pub fn word(&self) -> &Word {
        &self.word
    }

    /// When the sequencer gave it (ms since the Unix epoch).
    pub fn issued_ms(&self) -> u64 {
        self.issued_ms
    }

    /// The log key that signed it.
    pub fn log_key(&self) -> SigningPublicKey {
        self.log_key
    }

    /// The answer as it travels.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Judges a promise against `checkpoint` (verified by the caller) and
    /// the leaf at the promised index with its inclusion proof, where the
    /// checkpoint holds that index.
    pub fn judge(&self, checkpoint: &SignedCheckpoint, at_index: Option<(EntryHash, Vec<EntryHash>)>) -> Verdict {
        let Word::Promise { index, deadline_ms } = self.word else { return Verdict::NotAPromise };
        if checkpoint.size() > index {
            let Some((leaf, proof)) = at_index else { return Verdict::Waiting };
            if verify_inclusion(index, checkpoint.size(), leaf, checkpoint.root(), &proof).is_err() {
                return Verdict::Waiting;
            }
            if leaf == self.leaf {
                return Verdict::Kept;
            }
            return Verdict::Broken(Box::new(BrokenPromise::new(self, checkpoint, Some((leaf, proof)))));
        }
        match checkpoint.log_time_s() {
            Some(time_s) if time_s.saturating_mul(1000) > deadline_ms => {
                Verdict::Broken(Box::new(BrokenPromise::new(self, checkpoint, None)))
            }
            _ => Verdict::Waiting,
        }
    }
}

/// What became of a promise, as far as one checkpoint shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The request is where the sequencer said.
    Kept,
    /// Not shown either way yet.
    Waiting,
    /// Broken: the evidence.
    Broken(Box<BrokenPromise>),
    /// The answer was a refusal.
    NotAPromise,
}

/// A promise and a checkpoint that shows it broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenPromise {
    promise: SequencerAnswer,
    checkpoint: SignedCheckpoint,
    at_index: Option<(EntryHash, Vec<EntryHash>)>,
}

impl BrokenPromise {
    fn new(
        promise: &SequencerAnswer,
        checkpoint: &SignedCheckpoint,
        at_index: Option<(EntryHash, Vec<EntryHash>)>,
    ) -> Self {
        Self { promise: promise.clone(), checkpoint: checkpoint.clone(), at_index }
    }

    /// The promise.
    pub fn promise(&self) -> &SequencerAnswer {
        &self.promise
    }

    /// The checkpoint that shows it broken.
    pub fn checkpoint(&self) -> &SignedCheckpoint {
        &self.checkpoint
    }

    /// The evidence as it travels.
    pub fn encode(&self) -> Vec<u8> {
        let (leaf, proof) = match &self.at_index {
            Some((leaf, proof)) => (leaf.0.to_vec(), proof.iter().map(|h| h.0.to_vec()).collect()),
            None => (Vec::new(), Vec::new()),
        };
        pb::BrokenPromise {
            promise: self.promise.encoded.clone(),
            checkpoint: self.checkpoint.note().to_vec(),
            leaf_at_index: leaf,
            proof,
        }
        .encode_to_vec()
    }

    /// Reads evidence and checks it: a promise and a checkpoint of
    /// `network`, each signed by one of `log_keys` (oldest first; the
    /// checkpoint's key is the promise's or a later one; cosignatures are
    /// not needed to blame the log), and the checkpoint shows the promise
    /// broken.
    pub fn decode(bytes: &[u8], network: &EntryHash, log_keys: &[SigningPublicKey]) -> Result<Self, PromiseError> {
        if bytes.len() > MAX_BROKEN_PROMISE_SIZE {
            return Err(PromiseError::Malformed(format!("{} bytes, over {MAX_BROKEN_PROMISE_SIZE}", bytes.len())));
        }
        let message = pb::BrokenPromise::decode(bytes).map_err(|e| PromiseError::Malformed(e.to_string()))?;
        if message.proof.len() > MAX_PROOF {
            return Err(PromiseError::Malformed("the proof is too long".into()));
        }
        let promise = SequencerAnswer::decode(&message.promise, network, log_keys)?;
        // Only the promise's own key, or a later one, speaks for the log
        // after the promise (`log_keys` is oldest first).
        let from = log_keys.iter().position(|k| *k == promise.log_key()).unwrap_or(0);
        let checkpoint = log_keys[from..]
            .iter()
            .map(|key| SignedCheckpoint::open(&message.checkpoint, &LogTrust::log_only(*network, *key)))
            .find(Result::is_ok)
            .unwrap_or(Err(CheckpointError::NotSigned))?;
        let hash = |raw: &[u8]| {
            raw.try_into().map(EntryHash).map_err(|_| PromiseError::Malformed("a hash is not 32 bytes".into()))
        };
        let at_index = if message.leaf_at_index.is_empty() {
            None
        } else {
            Some((hash(&message.leaf_at_index)?, message.proof.iter().map(|h| hash(h)).collect::<Result<_, _>>()?))
        };
        match promise.judge(&checkpoint, at_index) {
            Verdict::Broken(broken) => Ok(*broken),
            Verdict::Kept => Err(PromiseError::NotBroken("the checkpoint holds the request where promised")),
            Verdict::NotAPromise => Err(PromiseError::NotBroken("a refusal promises nothing")),
            Verdict::Waiting => {
                Err(PromiseError::NotBroken("the checkpoint is not past the deadline, or its proof does not hold"))
            }
        }
    }

    /// The evidence as a file: what it shows, for people, and one line
    /// that [`decode_text`](Self::decode_text) reads.
    pub fn to_text(&self) -> String {
        use base64::Engine;
        let line = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.encode());
        let (index, deadline_ms) = match self.promise.word {
            Word::Promise { index, deadline_ms } => (index, deadline_ms),
            Word::Refused(_) => (0, 0),
        };
        let shown = match &self.at_index {
            Some((leaf, _)) => format!("holds another request ({}) at {index}", leaf.to_hex()),
            None => format!("ends before {index} and is dated after the deadline"),
        };
        let quote = self.checkpoint.text().lines().map(|l| format!("#   {l}\n")).collect::<String>();
        format!(
            "# The sequencer promised request {} at index {index} by {deadline_ms} ms (Unix time).\n# This checkpoint ({} entries) {shown}:\n{quote}{BROKEN_PROMISE_PREFIX}{line}\n",
            self.promise.leaf.to_hex(),
            self.checkpoint.size(),
        )
    }

    /// Reads evidence written by [`to_text`](Self::to_text).
    pub fn decode_text(text: &str, network: &EntryHash, log_keys: &[SigningPublicKey]) -> Result<Self, PromiseError> {
        use base64::Engine;
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(BROKEN_PROMISE_PREFIX))
            .ok_or_else(|| PromiseError::Malformed(format!("no line starting with {BROKEN_PROMISE_PREFIX}")))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(line)
            .map_err(|_| PromiseError::Malformed("the evidence line is not base64url".into()))?;
        Self::decode(&bytes, network, log_keys)
    }
}

#[cfg(test)]
#[path = "promise_tests.rs"]
mod tests;
