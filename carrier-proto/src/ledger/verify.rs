//! Replaying a whole ledger from genesis, with batch signature verification.
//!
//! Entries are decoded and their signatures checked a batch at a time
//! (ed25519-zebra's ZIP 215 rules make batch and single verification agree
//! exactly, so a batch can never accept what [`LedgerState::append`] would
//! refuse). When a batch fails, its entries are checked one by one so the
//! error names the first bad entry. Errors are reported in ledger order: a
//! bad signature at entry 7 wins over a broken rule at entry 9.

use ed25519_zebra::{Signature, batch};
use rand_core::OsRng;

use super::entry::Entry;
use super::error::{LedgerError, Rejection};
use super::state::LedgerState;

/// Entries whose signatures are checked together.
const BATCH: usize = 256;

/// Replays encoded entries from genesis and returns the verified state, or
/// the first entry that breaks a rule.
pub fn replay<I, B>(entries: I) -> Result<LedgerState, LedgerError>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let mut replay = Replay::new(LedgerState::new());
    for bytes in entries {
        replay.push(bytes.as_ref())?;
    }
    replay.finish()
}

/// Incremental replay: push encoded entries in order, then finish.
#[derive(Debug)]
pub struct Replay {
    state: LedgerState,
    pending: Vec<Entry>,
    /// Index of the next entry pushed.
    next_index: u64,
}

impl Replay {
    /// Starts replaying on top of `state` (usually empty).
    pub fn new(state: LedgerState) -> Self {
        let next_index = state.head().height;
        Self { state, pending: Vec::with_capacity(BATCH), next_index }
    }

    /// Takes the next encoded entry.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), LedgerError> {
        let index = self.next_index;
        self.next_index += 1;
        match Entry::decode(bytes) {
            Ok(entry) => {
                self.pending.push(entry);
                if self.pending.len() == BATCH {
                    self.flush()?;
                }
                Ok(())
            }
            Err(e) => {
                // Earlier entries may hide an earlier error: report that first.
                self.flush()?;
                Err(LedgerError { index, reason: Rejection::Malformed(e) })
            }
        }
    }

    /// Checks what is still pending and returns the verified state.
    pub fn finish(mut self) -> Result<LedgerState, LedgerError> {
        self.flush()?;
        Ok(self.state)
    }

    fn flush(&mut self) -> Result<(), LedgerError> {
        let entries = std::mem::take(&mut self.pending);
        let first_bad = first_bad_signature(&entries);
        for (offset, entry) in entries.iter().enumerate() {
            let index = self.state.head().height;
            if first_bad == Some(offset) {
                return Err(LedgerError { index, reason: Rejection::BadSignature });
            }
            self.state.apply_signed(entry).map_err(|reason| LedgerError { index, reason })?;
        }
        self.pending = entries;
        self.pending.clear();
        Ok(())
    }
}

/// Offset of the first entry whose signature fails, if any.
fn first_bad_signature(entries: &[Entry]) -> Option<usize> {
    let mut verifier = batch::Verifier::new();
    for entry in entries {
        let key = entry.body().signer.zebra_bytes();
        let signature = Signature::from(*entry.signature());
        verifier.queue((key, signature, &entry.signed_message()));
    }
    if verifier.verify(OsRng).is_ok() {
        return None;
    }
    entries.iter().position(|entry| !entry.verify_signature())
}
