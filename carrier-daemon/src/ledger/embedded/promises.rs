//! The sequencer's word, both ways: as the sequencer, its signed answers
//! (a promise with a deadline for each request it sequences, a refusal
//! with the rule for each it refuses); as any daemon, the evidence of
//! promises the log broke, kept in the ledger directory
//! (`broken-promise-<ms>.txt`, checkable offline with `carrierctl ledger
//! audit --broken-promise`), read back at start, and passed to peers.
//! A broken promise freezes nothing: it is what registrars need to hand
//! sequencing to another device.

use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use carrier_proto::identity::SigningPublicKey;
use carrier_proto::ledger::{BrokenPromise, EntryHash, SequencerAnswer, Word};

use super::{Backing, EmbeddedLedger, now_ms};

/// Most broken promises kept (the oldest go first).
pub(super) const MAX_BROKEN_PROMISES: usize = 64;
/// Prefix of broken-promise files in the ledger directory.
const FILE_PREFIX: &str = "broken-promise-";

impl EmbeddedLedger {
    /// Every log key of this network: the ledger's, past and present, and
    /// those of handovers held before the log holds them.
    pub(super) fn all_log_keys(&self) -> Vec<SigningPublicKey> {
        let mut keys = self.read(|state| state.log_keys());
        let held: Vec<_> = self.handovers.read().unwrap_or_else(PoisonError::into_inner).log_keys().collect();
        keys.extend(held.into_iter().filter(|k| !keys.contains(k)).collect::<Vec<_>>());
        keys
    }

    /// The sequencer's signed `word` on request `leaf`; none unless this
    /// daemon sequences.
    pub(super) fn sign_answer(&self, leaf: EntryHash, word: Word) -> Option<SequencerAnswer> {
        let sequencer = self.sequencer.as_ref()?;
        if !self.sequencing() {
            return None;
        }
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let Backing::Store(store) = &*guard else { return None };
        let sequencer = sequencer.lock().unwrap_or_else(PoisonError::into_inner);
        Some(sequencer.answer(store.state(), leaf, word, now_ms()))
    }

    /// Keeps `broken` (once per promised request): written into the ledger
    /// directory, logged, and told to subscribers (ledger sync passes it
    /// on). True if it is new here.
    pub(super) fn keep_broken_promise(&self, broken: &BrokenPromise, source: &str) -> bool {
        {
            let mut held = self.broken.write().unwrap_or_else(PoisonError::into_inner);
            if held.iter().any(|b| b.promise().leaf() == broken.promise().leaf()) {
                return false;
            }
            if held.len() >= MAX_BROKEN_PROMISES {
                held.remove(0);
            }
            held.push(broken.clone());
        }
        let text = broken.to_text();
        let mut saved = String::new();
        let tag = broken.promise().leaf().to_hex()[..16].to_owned();
        // One file per broken promise, however often peers pass it on.
        let saved_before = |dir: &Path| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(FILE_PREFIX) && n.contains(&tag)))
        };
        if let Some(dir) = self.evidence_dir.as_deref().filter(|dir| !saved_before(dir)) {
            let path = dir.join(format!("{FILE_PREFIX}{}-{tag}.txt", now_ms()));
            match std::fs::write(&path, &text).and_then(|()| crate::paths::make_private(&path)) {
                Ok(()) => saved = format!("; evidence in {}", path.display()),
                Err(error) => tracing::error!(path = %path.display(), %error, "cannot save a broken promise"),
            }
        }
        tracing::error!(
            request = %broken.promise().leaf(),
            from = source,
            "the sequencer broke its promise to put a request in the log by its deadline{saved}"
        );
        self.tell(vec![(None, None)]);
        true
    }
}

/// The broken promises saved in `dir` that still hold under `log_keys`;
/// files that do not hold are named in a warning and ignored.
pub(super) fn load(dir: &Path, network: &EntryHash, log_keys: &[SigningPublicKey]) -> Vec<BrokenPromise> {
    let Ok(read) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(FILE_PREFIX)))
        .collect();
    files.sort();
    let mut held: Vec<BrokenPromise> = Vec::new();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        match BrokenPromise::decode_text(&text, network, log_keys) {
            Ok(broken) if !held.iter().any(|b| b.promise().leaf() == broken.promise().leaf()) => held.push(broken),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring a broken-promise file that does not hold")
            }
        }
    }
    if held.len() > MAX_BROKEN_PROMISES {
        held.drain(..held.len() - MAX_BROKEN_PROMISES);
    }
    held
}
