//! The equivocation alarm: evidence that the log key signed two histories,
//! kept in the ledger directory (`equivocation-<ms>.txt`, checkable offline
//! with `carrierctl ledger audit --evidence`) and read back at start, so a
//! restart does not forget it. While the alarm stands the ledger is frozen:
//! it takes no checkpoint and sequences nothing; links go on.

use std::path::{Path, PathBuf};

use carrier_proto::ledger::{Fork, LogTrust};

/// Prefix of evidence files in the ledger directory.
const EVIDENCE_FILE_PREFIX: &str = "equivocation-";

/// A raised alarm.
#[derive(Debug, Clone)]
pub(super) struct Alarm {
    /// For people: what was seen, where from, where the evidence is.
    pub(super) message: String,
    /// The evidence, as peers are sent it.
    pub(super) fork: Fork,
}

/// The message for `fork`, seen from `source`, with our ledger at `held`.
fn message(fork: &Fork, source: &str, held: u64) -> String {
    format!(
        "the sequencer signed two histories: checkpoints of {} and {} entries cannot both be true (from {source}); the ledger is frozen at {held} entries",
        fork.first().size(),
        fork.second().size(),
    )
}

/// Raises the alarm with `fork`: writes the evidence into `dir` (if any).
pub(super) fn raise(dir: Option<&Path>, fork: &Fork, source: &str, held: u64) -> Alarm {
    let mut message = message(fork, source, held);
    let evidence = fork.to_text();
    if let Some(dir) = dir {
        let path = dir.join(format!("{EVIDENCE_FILE_PREFIX}{}.txt", super::now_ms()));
        match std::fs::write(&path, &evidence).and_then(|()| crate::paths::make_private(&path)) {
            Ok(()) => message.push_str(&format!("; evidence in {}", path.display())),
            Err(error) => tracing::error!(path = %path.display(), %error, "cannot save equivocation evidence"),
        }
    }
    tracing::error!(%message, %evidence, "ledger equivocation: the ledger is frozen");
    Alarm { message, fork: fork.clone() }
}

/// The first evidence file in `dir` that holds under `trust`; files that do
/// not hold are named in a warning and ignored.
pub(super) fn load(dir: &Path, trust: &LogTrust<'_>, held: u64) -> Option<Alarm> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(EVIDENCE_FILE_PREFIX)))
        .collect();
    files.sort();
    files.into_iter().find_map(|path| {
        let text = std::fs::read_to_string(&path).ok()?;
        match Fork::decode_text(&text, trust) {
            Ok(fork) => {
                let message = format!("{}; evidence in {}", message(&fork, "before the restart", held), path.display());
                tracing::error!(%message, "ledger equivocation: the ledger stays frozen");
                Some(Alarm { message, fork })
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring an evidence file that does not hold");
                None
            }
        }
    })
}
