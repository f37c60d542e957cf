//! The embedded ledger: the Merkle log on disk (`store.rs`, with its byte
//! rules in `log_format.rs`) or in memory, one state behind a lock, with a
//! broadcast of every change so links can react to revocations.
//! This is the only module that sees the concrete [`LedgerState`]; the
//! daemon reaches it through the [`Ledger`] trait.
//!
//! A stored ledger grows two ways only: as the sequencer (it holds the log
//! key: [`EmbeddedLedger::with_sequencer`]) it orders submitted requests and
//! signs checkpoints; as a replica it takes batches proven against a
//! checkpoint the log key signed. An in-memory ledger (tests, tools) applies
//! entries its owner sequenced already.

mod alarm;
mod checkpoint_file;
mod log_format;
mod promises;
mod sequencing;
mod store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::ledger::{
    Admitted, Answer, BrokenPromise, CatchUp, Checked, CheckpointError, Cosignature, Directory, Entry, EntryHash, Fork,
    Head, Judgement, LedgerState, LogTrust, Network, Op, Rejection, RevocationRefusal, SeenHandovers, SeenRevocations,
    Sequencer, SequencerAnswer, SignedCheckpoint, Standing, Subject, Word, judge,
};
use tokio::sync::broadcast;

pub use checkpoint_file::CHECKPOINT_FILE;

/// Most entries a sequencer writes before it signs their checkpoint (one
/// submitted batch): more entries than this past the checkpoint at open
/// mean the checkpoint file is older than the log, not an interrupted write.
pub(crate) const MAX_SEQUENCED_AT_ONCE: u64 = 64;
pub use store::{LOG_FILE, LedgerStore, StoreError};

use super::{ExtendError, Ledger, LedgerUpdate, SubmitError, Taken};

enum Backing {
    /// Kept only in memory (tests, tools): the state it started from and the
    /// encoded entries appended since, which it can hand to peers.
    Memory { state: Box<LedgerState>, base: u64, appended: Vec<Vec<u8>> },
    /// Kept on disk; the store owns the state, every entry and the checkpoint.
    Store(Box<LedgerStore>),
}

impl Backing {
    fn state(&self) -> &LedgerState {
        match self {
            Backing::Memory { state, .. } => state,
            Backing::Store(store) => store.state(),
        }
    }

    fn entry(&self, seq: u64) -> Option<Vec<u8>> {
        match self {
            Backing::Memory { base, appended, .. } => {
                seq.checked_sub(*base).and_then(|i| appended.get(usize::try_from(i).ok()?)).cloned()
            }
            Backing::Store(store) => store.read_encoded(seq).ok().flatten(),
        }
    }
}

/// The embedded ledger, shared between tasks.
pub struct EmbeddedLedger {
    inner: RwLock<Backing>,
    /// Present when this daemon holds the log key.
    sequencer: Option<Mutex<Sequencer>>,
    updates: broadcast::Sender<LedgerUpdate>,
    /// Set when two validly signed checkpoints of our log disagree: the
    /// ledger is frozen. Shown in `status`; never cleared while the daemon
    /// runs, and read back from its evidence file at start.
    alarm: RwLock<Option<alarm::Alarm>>,
    /// Where evidence of equivocation is written (the ledger directory).
    evidence_dir: Option<PathBuf>,
    /// Revocation requests in force before the log holds them.
    seen: RwLock<SeenRevocations>,
    /// Handover requests seen before the log holds them: their log keys
    /// sign checkpoints we may take.
    handovers: RwLock<SeenHandovers>,
    /// A checkpoint older than this many seconds is stale (0: never).
    stale_after_s: AtomicU64,
    /// Promises the log broke, as evidence (see `promises.rs`).
    broken: RwLock<Vec<BrokenPromise>>,
}

impl std::fmt::Debug for EmbeddedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLedger").field("head", &self.head()).finish()
    }
}

impl EmbeddedLedger {
    fn new(backing: Backing, evidence_dir: Option<PathBuf>) -> Self {
        Self {
            inner: RwLock::new(backing),
            sequencer: None,
            updates: broadcast::channel(256).0,
            alarm: RwLock::new(None),
            evidence_dir,
            seen: RwLock::default(),
            handovers: RwLock::default(),
            stale_after_s: AtomicU64::new(0),
            broken: RwLock::default(),
        }
    }

    /// A ledger kept in memory only.
    pub fn in_memory(state: LedgerState) -> Self {
        let base = state.height();
        Self::new(Backing::Memory { state: Box::new(state), base, appended: Vec::new() }, None)
    }

    /// A ledger kept on disk.
    pub fn with_store(store: LedgerStore) -> Self {
        let dir = store.path().parent().map(PathBuf::from);
        let raised = match (&dir, store.state().network()) {
            (Some(dir), Some(network)) => alarm::load(dir, &network.trust(), store.state().height()),
            _ => None,
        };
        let broken = match (&dir, store.state().network()) {
            (Some(dir), Some(network)) => promises::load(dir, &network.id, &store.state().log_keys()),
            _ => Vec::new(),
        };
        let ledger = Self::new(Backing::Store(Box::new(store)), dir);
        *ledger.alarm.write().unwrap_or_else(PoisonError::into_inner) = raised;
        *ledger.broken.write().unwrap_or_else(PoisonError::into_inner) = broken;
        ledger
    }

    /// Calls a checkpoint older than `seconds` stale (0: never).
    pub fn set_stale_after(&self, seconds: u64) {
        self.stale_after_s.store(seconds, Ordering::Relaxed);
    }

    /// Whether the alarm froze the ledger.
    fn frozen(&self) -> bool {
        self.alarm.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Runs `f` on the current state. Keep `f` short: appends wait for it.
    fn read<R>(&self, f: impl FnOnce(&LedgerState) -> R) -> R {
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f(guard.state())
    }

    /// Applies an entry that its owner sequenced already, to an in-memory
    /// ledger (tests and tools), and tells subscribers. A stored ledger
    /// refuses: it grows only through its sequencer or a checkpoint.
    pub fn append(&self, entry: Entry) -> Result<(), SubmitError> {
        let update = {
            let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            let Backing::Memory { state, appended, .. } = &mut *guard else {
                return Err(SubmitError::NotSequencer);
            };
            let encoded = entry.encoded().to_vec();
            let update = update_for(&entry);
            state.append(entry).map_err(SubmitError::Rejected)?;
            appended.push(encoded);
            update
        };
        self.tell(vec![update]);
        Ok(())
    }

    fn tell(&self, updates: Vec<(Option<Did>, Option<Did>)>) {
        let settled = self.read(|state| {
            self.handovers.write().unwrap_or_else(PoisonError::into_inner).settle(state);
            self.seen.write().unwrap_or_else(PoisonError::into_inner).settle(state)
        });
        if settled > 0 {
            tracing::info!(settled, "the log now holds revocations that were in force before it did");
        }
        let head = self.head();
        for (revoked, rotated) in updates {
            // No subscribers is fine: nothing to tell.
            let _ = self.updates.send(LedgerUpdate { head, revoked, rotated });
        }
    }
}

/// What subscribers hear of `entry`: (revoked, rotated).
fn update_for(entry: &Entry) -> (Option<Did>, Option<Did>) {
    match entry.op() {
        Op::Revoke { did, .. } => (Some(*did), None),
        Op::RotateKeys { did, .. } => (None, Some(*did)),
        _ => (None, None),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Directory for EmbeddedLedger {
    fn standing(&self, did: &Did) -> Option<Standing> {
        self.read(|l| {
            let mut standing = l.standing(did)?;
            if standing.status == carrier_proto::ledger::Status::Active
                && let Some(status) = self.seen.read().unwrap_or_else(PoisonError::into_inner).status(l, did)
            {
                standing.status = status;
            }
            Some(standing)
        })
    }
}

impl Ledger for EmbeddedLedger {
    fn network(&self) -> Option<Network> {
        self.read(|l| l.network().cloned())
    }

    fn head(&self) -> Head {
        self.read(LedgerState::head)
    }

    fn checkpoint(&self) -> Option<SignedCheckpoint> {
        match &*self.inner.read().unwrap_or_else(PoisonError::into_inner) {
            Backing::Store(store) => store.checkpoint().cloned(),
            Backing::Memory { .. } => None,
        }
    }

    fn entry_hash(&self, index: u64) -> Option<EntryHash> {
        self.read(|l| l.entry_hash(index))
    }

    fn position(&self, hash: &EntryHash) -> Option<u64> {
        self.read(|l| l.position(hash))
    }

    fn entries(&self, from: u64, max: usize) -> Vec<Vec<u8>> {
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let end = guard.state().height().min(from.saturating_add(max as u64));
        (from..end).map_while(|seq| guard.entry(seq)).collect()
    }

    fn root_at(&self, size: u64) -> Option<EntryHash> {
        self.read(|l| l.tree().root_at(size))
    }

    fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<EntryHash>> {
        self.read(|l| l.tree().consistency_proof(old, new).ok())
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<EntryHash>> {
        self.read(|l| l.tree().inclusion_proof(index, size).ok())
    }

    fn judge(&self, note: &[u8]) -> Result<Judgement, CheckpointError> {
        let theirs = self.verify_checkpoint(note)?;
        let frozen = self.frozen();
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        Ok(match &*guard {
            // Frozen: nothing is taken, only more evidence is worth seeing.
            Backing::Store(store) if frozen => match judge(store.held(), theirs) {
                Judgement::Fork(fork) => Judgement::Fork(fork),
                _ => Judgement::Nothing,
            },
            Backing::Store(store) => judge(store.held(), theirs),
            // An in-memory ledger takes entries only from its owner.
            Backing::Memory { .. } => Judgement::Nothing,
        })
    }

    fn did_of_key(&self, key: &SigningPublicKey) -> Option<Did> {
        self.read(|l| l.did_of_key(key))
    }

    fn find_did(&self, compact: &[u8]) -> Option<Did> {
        self.read(|l| l.find_did(compact))
    }

    fn roles(&self, did: &Did) -> Vec<String> {
        self.read(|l| match l.resolve(did).map(|r| &r.record.subject) {
            Some(Subject::Device { roles }) => roles.clone(),
            _ => Vec::new(),
        })
    }

    fn devices_with_role(&self, role: &str) -> Vec<Did> {
        self.read(|l| {
            let mut dids: Vec<Did> = l
                .records()
                .filter(|(_, record)| record.revoked.is_none())
                .filter(|(_, record)| matches!(&record.subject, Subject::Device { roles } if roles.iter().any(|r| r == role)))
                .map(|(did, _)| *did)
                .collect();
            let seen = self.seen.read().unwrap_or_else(PoisonError::into_inner);
            dids.retain(|did| seen.status(l, did).is_none());
            dids.sort();
            dids
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<LedgerUpdate> {
        self.updates.subscribe()
    }

    fn is_sequencer(&self) -> bool {
        self.sequencing()
    }

    fn submit(&self, entries: Vec<Entry>) -> Result<Vec<Result<u64, Rejection>>, SubmitError> {
        if self.sequencer.is_none() {
            // An in-memory ledger takes entries its owner sequenced.
            let mut results = Vec::with_capacity(entries.len());
            for entry in entries {
                match self.append(entry) {
                    Ok(()) => results.push(Ok(self.head().height - 1)),
                    Err(SubmitError::Rejected(rejection)) => results.push(Err(rejection)),
                    Err(other) => return Err(other),
                }
            }
            return Ok(results);
        }
        self.sequence(entries)
    }

    fn take(&self, catch_up: &mut CatchUp, answer: Answer<'_>) -> Result<Taken, ExtendError> {
        if self.frozen() {
            return Err(ExtendError::Frozen);
        }
        let (applied, updates) = {
            let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            let Backing::Store(store) = &mut *guard else { return Err(ExtendError::Moved) };
            let verified = match catch_up.check(store.state(), answer)? {
                Checked::Batch(batch) => batch,
                Checked::Fork(fork) => return Ok(Taken::Fork(fork)),
            };
            let updates: Vec<_> = verified.entries().iter().map(update_for).collect();
            let applied = store.extend(verified, catch_up.target()).map_err(|e| match e {
                StoreError::Invalid { source, .. } => ExtendError::Invalid(source),
                StoreError::Moved => ExtendError::Moved,
                other => ExtendError::Store(other),
            })?;
            (applied, updates)
        };
        self.tell(updates.into_iter().take(applied as usize).collect());
        Ok(Taken::Applied(applied))
    }

    fn adopt(&self, checkpoint: &SignedCheckpoint) {
        if self.frozen() {
            return;
        }
        {
            let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            let Backing::Store(store) = &mut *guard else { return };
            // Only a note for exactly what we hold, and only if it differs.
            let theirs = Head { height: checkpoint.size(), root: checkpoint.root() };
            if store.state().head() != theirs || store.checkpoint().is_some_and(|ours| ours.note() == checkpoint.note())
            {
                return;
            }
            let witnesses = store.state().network().map(|n| n.witnesses.witnesses.clone()).unwrap_or_default();
            let kept = match store.checkpoint() {
                // The same text: ours, with any cosignatures theirs adds.
                Some(ours) if ours.body() == checkpoint.body() => {
                    let mut merged = ours.clone();
                    if merged.add_cosignatures(checkpoint.cosignatures(), &witnesses) == 0 {
                        return;
                    }
                    merged
                }
                // Another text (it names the sequencer where ours does not):
                // theirs, unless it carries fewer cosignatures.
                Some(ours) if ours.cosignatures().len() > checkpoint.cosignatures().len() => return,
                _ => checkpoint.clone(),
            };
            if let Err(error) = store.save_checkpoint(kept) {
                return tracing::warn!(%error, "cannot store a peer's checkpoint");
            }
        }
        // Subscribers hear of the new note (it may name the sequencer, or
        // carry cosignatures): requests waiting for a sequencer go, and
        // peers are told.
        self.tell(vec![(None, None)]);
    }

    fn cosign(&self, cosignatures: &[Cosignature]) -> usize {
        let added = {
            let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            let Backing::Store(store) = &mut *guard else { return 0 };
            let (Some(ours), Some(network)) = (store.checkpoint(), store.state().network()) else { return 0 };
            let mut cosigned = ours.clone();
            let added = cosigned.add_cosignatures(cosignatures, &network.witnesses.witnesses);
            if added == 0 {
                return 0;
            }
            if let Err(error) = store.save_checkpoint(cosigned) {
                tracing::warn!(%error, "cannot store the witnesses' cosignatures");
                return 0;
            }
            added
        };
        self.tell(vec![(None, None)]);
        added
    }

    fn raise_alarm(&self, fork: &Fork, source: &str) {
        {
            let mut alarm = self.alarm.write().unwrap_or_else(PoisonError::into_inner);
            if alarm.is_some() {
                return;
            }
            *alarm = Some(alarm::raise(self.evidence_dir.as_deref(), fork, source, self.head().height));
        }
        // Subscribers hear of it: ledger sync passes the evidence on.
        self.tell(vec![(None, None)]);
    }

    fn redate(&self) -> bool {
        self.redate_checkpoint()
    }

    fn freshness(&self) -> Option<(u64, bool)> {
        let time_s = self.checkpoint()?.time_s()?;
        let age_s = (now_ms() / 1000).saturating_sub(time_s);
        let stale_after = self.stale_after_s.load(Ordering::Relaxed);
        Some((age_s, stale_after > 0 && age_s > stale_after))
    }

    fn admit_revocation(&self, entry: &Entry) -> Result<Admitted, RevocationRefusal> {
        let admitted =
            self.read(|state| self.seen.write().unwrap_or_else(PoisonError::into_inner).admit(state, entry, now_ms()))?;
        if let Admitted::New(did) = admitted {
            tracing::warn!(%did, "revoked by a signed request, before the log holds it");
            self.tell(vec![(Some(did), None)]);
        }
        Ok(admitted)
    }

    fn admit_handover(&self, entry: &Entry) -> Result<bool, Rejection> {
        self.hold_change(entry, false)
    }

    fn handovers_seen(&self) -> Vec<Entry> {
        self.handovers.read().unwrap_or_else(PoisonError::into_inner).entries().to_vec()
    }

    fn handovers_in_log(&self) -> Vec<(u64, Entry)> {
        self.logged_handovers()
    }

    fn admit_logged_change(&self, entry: &Entry) -> Result<bool, Rejection> {
        self.hold_change(entry, true)
    }

    fn verify_checkpoint(&self, note: &[u8]) -> Result<SignedCheckpoint, CheckpointError> {
        let network = self.network().ok_or(CheckpointError::NotSigned)?;
        let current = SignedCheckpoint::verify(note, &network.trust());
        if current.is_ok() {
            return current;
        }
        // Signed by the new key of a handover we hold, or cosigned by the
        // witnesses of a change we hold, not yet in our log?
        let held = self.handovers.read().unwrap_or_else(PoisonError::into_inner);
        let keys: Vec<_> = std::iter::once(network.log_key).chain(held.log_keys()).collect();
        let policies: Vec<_> = std::iter::once(&network.witnesses).chain(held.policies()).collect();
        keys.iter()
            .flat_map(|&log_key| policies.iter().map(move |policy| (log_key, *policy)))
            .skip(1)
            .map(|(log_key, policy)| {
                let trust =
                    LogTrust { log_key, witnesses: &policy.witnesses, quorum: policy.quorum(), ..network.trust() };
                SignedCheckpoint::verify(note, &trust)
            })
            .find(Result::is_ok)
            .unwrap_or(current)
    }

    fn revocations_in_force(&self) -> Vec<Entry> {
        self.seen.read().unwrap_or_else(PoisonError::into_inner).entries().cloned().collect()
    }

    fn alarm(&self) -> Option<String> {
        self.alarm.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|a| a.message.clone())
    }

    fn evidence(&self) -> Option<Fork> {
        self.alarm.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|a| a.fork.clone())
    }

    fn log_keys(&self) -> Vec<SigningPublicKey> {
        self.all_log_keys()
    }

    fn answer(&self, leaf: EntryHash, word: Word) -> Option<SequencerAnswer> {
        self.sign_answer(leaf, word)
    }

    fn keep_broken_promise(&self, broken: &BrokenPromise, source: &str) -> bool {
        EmbeddedLedger::keep_broken_promise(self, broken, source)
    }

    fn broken_promises(&self) -> Vec<BrokenPromise> {
        self.broken.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
