//! Requests travel to the sequencer (`/carrier/ledger-submit/1.0.0`).
//!
//! Any daemon takes an author's signed request (from `carrierctl` on its
//! control socket). The sequencer sequences it at once; any other daemon
//! holds it durably ([`PendingRequests`]) and forwards it to the daemon the
//! latest checkpoint names as sequencer, found by DID like any peer, until
//! that daemon takes it or refuses it (the rule it broke is kept, for
//! `carrierctl ledger pending`). While no daemon sequences (the admin's
//! offline ledger directory does), requests wait for `carrierctl ledger
//! sequence`. A request is forwarded until the log holds it, so none is
//! lost; the sequencer knows a request it has (`AlreadyInLog`), so none is
//! applied twice.
//!
//! The sequencer's answers are signed by the log key: a promise to show
//! the request at its index in a checkpoint dated no later than
//! `promise_deadline_s` from now, or a refusal with the rule. The
//! forwarding daemon keeps each promise until its checkpoint shows it kept;
//! one shown broken is kept as evidence and passed to every peer (see
//! `carrier_proto::ledger::BrokenPromise`), and the request is sent again.
//! An answer without a valid signature settles nothing: the request stays.

use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::ledger::{
    CLOCK_SKEW_MS, Entry, EntryHash, MAX_PROMISE_DEADLINE_MS, Op, Rejection, SequencerAnswer, Verdict, Word,
};
use carrier_proto::pb::{self, submit_result::Result as Outcome};
use tokio::sync::broadcast;

use super::{Handling, PeerStream, ProtocolError, ProtocolHandler, Router};
use crate::framed::{FrameReader, FrameWriter};
use crate::ledger::{Ledger, PendingError, PendingRequests, SubmitError};
use crate::overlay::OverlayEvent;
use crate::tasks::Tasks;

/// The protocol name.
pub(crate) const PROTOCOL: &str = "/carrier/ledger-submit/1.0.0";
/// Largest submit frame.
const MAX_FRAME: usize = 256 << 10;
/// Most requests in one exchange.
pub(crate) const MAX_REQUESTS: usize = 64;
/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of a submitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubmitOutcome {
    /// In the log at this index.
    Sequenced(u64),
    /// Refused: the rule it broke.
    Refused(String),
    /// Held here for the sequencer.
    Pending,
}

impl SubmitOutcome {
    /// The wire form.
    pub(crate) fn to_pb(&self) -> pb::SubmitResult {
        let result = match self {
            SubmitOutcome::Sequenced(index) => Outcome::Index(*index),
            SubmitOutcome::Refused(rule) => Outcome::Refused(rule.clone()),
            SubmitOutcome::Pending => Outcome::Pending(true),
        };
        pb::SubmitResult { result: Some(result), answer: Vec::new() }
    }

    /// What the log's signed answer on this outcome says, if it has one.
    fn word(&self, deadline: Duration) -> Option<Word> {
        match self {
            SubmitOutcome::Sequenced(index) => {
                let deadline_ms = now_ms().saturating_add(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
                Some(Word::Promise { index: *index, deadline_ms })
            }
            SubmitOutcome::Refused(rule) => Some(Word::Refused(rule.clone())),
            SubmitOutcome::Pending => None,
        }
    }
}

/// Why a submission could not be taken at all.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitFailure {
    /// Too many requests at once.
    #[error("at most {MAX_REQUESTS} requests at once")]
    TooMany,
    /// The ledger could not store them.
    #[error(transparent)]
    Ledger(#[from] SubmitError),
    /// The pending queue could not hold them.
    #[error(transparent)]
    Pending(#[from] PendingError),
}

/// Takes requests, sequences or forwards them.
#[derive(Debug)]
pub(crate) struct Submitter {
    ledger: Arc<dyn Ledger>,
    router: Router,
    pending: Arc<PendingRequests>,
    /// How long our promises give the log to show a request.
    promise_deadline: Duration,
}

impl Submitter {
    /// A submitter over `ledger`, holding requests in `pending`.
    pub(crate) fn new(
        ledger: Arc<dyn Ledger>,
        router: Router,
        pending: Arc<PendingRequests>,
        promise_deadline: Duration,
    ) -> Arc<Self> {
        Arc::new(Self { ledger, router, pending, promise_deadline })
    }

    /// Registers the protocol and starts forwarding held requests; a link
    /// coming up (`events`) may be the sequencer's, so it wakes the
    /// forwarder too.
    pub(crate) fn start(self: &Arc<Self>, tasks: &Tasks, events: broadcast::Receiver<OverlayEvent>) {
        self.router.register(PROTOCOL, Arc::clone(self) as Arc<dyn ProtocolHandler>);
        tasks.spawn_until_stop(Arc::clone(self).forward(events));
        tasks.spawn_until_stop(Arc::clone(self).watch_promises());
    }

    /// Judges the promises we hold on every ledger change, and a second
    /// past each deadline (apart from forwarding, which may wait on an
    /// unreachable sequencer).
    async fn watch_promises(self: Arc<Self>) {
        const AT_LEAST_EVERY: Duration = Duration::from_secs(30);
        let mut updates = self.ledger.subscribe();
        loop {
            let wait = self.check_promises().map_or(AT_LEAST_EVERY, |d| d.min(AT_LEAST_EVERY));
            tokio::select! {
                update = updates.recv() => if let Err(broadcast::error::RecvError::Closed) = update { return },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Marks a held request refused (by an offline sequencer).
    pub(crate) fn refuse(&self, hash: &carrier_proto::ledger::EntryHash, rule: &str) {
        self.pending.refuse(hash, rule);
    }

    /// Every held request, with its state.
    pub(crate) fn pending(&self) -> Vec<crate::ledger::Pending> {
        self.pending.list()
    }

    /// Takes `entries`: the sequencer sequences them, any other daemon holds
    /// them for it. Submitting a request again says what became of it.
    pub(crate) fn submit(&self, entries: Vec<Entry>) -> Result<Vec<SubmitOutcome>, SubmitFailure> {
        if entries.len() > MAX_REQUESTS {
            return Err(SubmitFailure::TooMany);
        }
        // A revocation is in force here (and passed on) at once, whatever
        // the sequencer does with it; a handover is held and passed on.
        for entry in &entries {
            match entry.op() {
                Op::Revoke { .. } => {
                    if let Err(refusal) = self.ledger.admit_revocation(entry) {
                        tracing::debug!(%refusal, "a submitted revocation is not in force before it is sequenced");
                    }
                }
                Op::Handover { .. } | Op::Witnesses { .. } => {
                    if let Err(rejection) = self.ledger.admit_handover(entry) {
                        tracing::warn!(%rejection, op = entry.op().name(), "a submitted change of the log's trust does not hold");
                    }
                }
                _ => {}
            }
        }
        if self.ledger.is_sequencer() {
            let results = self.ledger.submit(entries)?;
            return Ok(results.into_iter().map(outcome).collect());
        }
        let held = self.pending.list();
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            let hash = entry.hash();
            if let Some(index) = self.ledger.position(&hash) {
                self.pending.remove(&hash);
                outcomes.push(SubmitOutcome::Sequenced(index));
            } else if let Some(rule) = held.iter().find(|p| p.entry.hash() == hash).and_then(|p| p.refused.clone()) {
                outcomes.push(SubmitOutcome::Refused(rule));
            } else {
                self.pending.add(&entry)?;
                outcomes.push(SubmitOutcome::Pending);
            }
        }
        Ok(outcomes)
    }

    /// Forwards held requests to the sequencer until each is taken or
    /// refused: on every new request, every ledger change, and on a backoff
    /// timer while the sequencer cannot be reached.
    async fn forward(self: Arc<Self>, mut events: broadcast::Receiver<OverlayEvent>) {
        const FIRST_RETRY: Duration = Duration::from_millis(250);
        const LAST_RETRY: Duration = Duration::from_secs(30);
        let mut updates = self.ledger.subscribe();
        let mut retry = FIRST_RETRY;
        loop {
            let delay = match self.forward_once().await {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    LAST_RETRY
                }
                Err(error) => {
                    tracing::debug!(%error, ?retry, "pending ledger requests not forwarded yet");
                    let delay = retry;
                    retry = (retry * 2).min(LAST_RETRY);
                    delay
                }
            };
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = self.pending.changed() => break,
                    _ = updates.recv() => break,
                    event = events.recv() => match event {
                        Ok(OverlayEvent::PeerUp(_)) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = &mut sleep => break,
                }
            }
        }
    }

    /// One pass: drops what the log holds, sends the rest to the sequencer,
    /// with the revocations in force here that the log lacks (whoever
    /// submitted them: a new sequencer hears of every one).
    async fn forward_once(&self) -> Result<(), ProtocolError> {
        let mut waiting: Vec<Entry> = self
            .pending
            .waiting()
            .into_iter()
            .filter(|entry| match self.ledger.position(&entry.hash()) {
                Some(_) => {
                    self.pending.remove(&entry.hash());
                    false
                }
                None => true,
            })
            .collect();
        // Those promised wait for their checkpoint: sending one again would
        // let the sequencer promise it anew, and never break its word.
        let promised: Vec<EntryHash> = self.pending.promised().iter().map(|(entry, _)| entry.hash()).collect();
        for entry in self.ledger.revocations_in_force().into_iter().chain(self.ledger.handovers_seen()) {
            let hash = entry.hash();
            if self.ledger.position(&hash).is_none()
                && !promised.contains(&hash)
                && !waiting.iter().any(|w| w.hash() == hash)
            {
                waiting.push(entry);
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        // A handover goes to the sequencer it names (ourselves, maybe),
        // first thing: it may be what lets everything else be sequenced.
        let (handovers, waiting): (Vec<Entry>, Vec<Entry>) =
            waiting.into_iter().partition(|e| matches!(e.op(), Op::Handover { .. }));
        for handover in handovers {
            self.hand_over(handover).await;
        }
        if self.ledger.is_sequencer() {
            // Revocations gossiped to us: sequence them.
            let revocations: Vec<Entry> = waiting.into_iter().filter(|e| matches!(e.op(), Op::Revoke { .. })).collect();
            if !revocations.is_empty() {
                let results = self.ledger.submit(revocations).map_err(|e| ProtocolError::Violation(e.to_string()))?;
                let taken = results.iter().filter(|r| r.is_ok()).count();
                tracing::info!(taken, "sequenced revocations in force here");
            }
            return Ok(());
        }
        let Some(sequencer) = self.ledger.checkpoint().and_then(|c| c.checkpoint().sequencer) else {
            return Err(ProtocolError::Violation(
                "no daemon sequences this network: requests wait for `carrierctl ledger sequence`".into(),
            ));
        };
        for batch in waiting.chunks(MAX_REQUESTS) {
            let results = self.send(sequencer, batch).await?;
            for (entry, result) in batch.iter().zip(results) {
                let answer = self.signed_answer(entry, &result.answer);
                match (result.result, answer) {
                    (Some(Outcome::Index(index)), Some((answer, Word::Promise { index: promised, .. })))
                        if promised == index =>
                    {
                        tracing::info!(index, op = entry.op().name(), %sequencer, "the sequencer took a pending request and promised it");
                        self.pending.promise(&entry.hash(), answer.encoded());
                    }
                    (Some(Outcome::Refused(rule)), Some((_, Word::Refused(signed)))) if signed == rule => {
                        tracing::warn!(op = entry.op().name(), %rule, "the sequencer refused a pending request");
                        self.pending.refuse(&entry.hash(), &rule);
                    }
                    (Some(Outcome::Index(_) | Outcome::Refused(_)), _) => tracing::warn!(
                        op = entry.op().name(),
                        %sequencer,
                        "the sequencer answered without a valid signed promise or refusal; the request stays"
                    ),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The log's signed answer on `entry`, if `bytes` is one that holds
    /// (signed by one of the network's log keys, on this very request).
    fn signed_answer(&self, entry: &Entry, bytes: &[u8]) -> Option<(SequencerAnswer, Word)> {
        let network = self.ledger.network()?;
        let answer = SequencerAnswer::decode(bytes, &network.id, &self.ledger.log_keys())
            .map_err(|error| tracing::debug!(%error, "a sequencer answer that does not hold"))
            .ok()?;
        if answer.leaf() != entry.hash() {
            return None;
        }
        // A deadline is at most the longest one a sequencer may give, from
        // now by our clock (give or take the skew we allow any clock).
        let latest = now_ms().saturating_add(MAX_PROMISE_DEADLINE_MS + CLOCK_SKEW_MS);
        if let Word::Promise { deadline_ms, .. } = answer.word()
            && (deadline_ms.saturating_sub(answer.issued_ms()) > MAX_PROMISE_DEADLINE_MS || *deadline_ms > latest)
        {
            tracing::warn!(deadline_ms, "the sequencer promised past the longest deadline it may give");
            return None;
        }
        let word = answer.word().clone();
        Some((answer, word))
    }

    /// Judges every promise we hold against our checkpoint: a kept one is
    /// settled, a broken one kept as evidence (and passed on) and its
    /// request sent again. Returns how long until the next deadline.
    fn check_promises(&self) -> Option<Duration> {
        let network = self.ledger.network()?;
        let checkpoint = self.ledger.checkpoint()?;
        let keys = self.ledger.log_keys();
        let mut next: Option<u64> = None;
        for (entry, bytes) in self.pending.promised() {
            let hash = entry.hash();
            let Ok(answer) = SequencerAnswer::decode(&bytes, &network.id, &keys) else {
                tracing::warn!(request = %hash, "a kept promise no longer holds; sending the request again");
                self.pending.unpromise(&hash);
                continue;
            };
            let Word::Promise { index, deadline_ms } = *answer.word() else { continue };
            let at_index = (checkpoint.size() > index)
                .then(|| Some((self.ledger.entry_hash(index)?, self.ledger.inclusion_proof(index, checkpoint.size())?)))
                .flatten();
            match answer.judge(&checkpoint, at_index) {
                Verdict::Kept => {
                    tracing::debug!(index, request = %hash, "the sequencer kept its promise");
                    self.pending.remove(&hash);
                }
                Verdict::Broken(broken) => {
                    self.ledger.keep_broken_promise(&broken, "a request this daemon sent");
                    self.pending.unpromise(&hash);
                }
                // Past its deadline, only a new checkpoint can decide (and
                // its arrival wakes us): wait for the next deadline to come.
                Verdict::Waiting | Verdict::NotAPromise if deadline_ms >= now_ms() => {
                    next = Some(next.map_or(deadline_ms, |n| n.min(deadline_ms)));
                }
                Verdict::Waiting | Verdict::NotAPromise => {}
            }
        }
        // A checkpoint dated just past the deadline decides: look a second on.
        next.map(|deadline_ms| Duration::from_millis(deadline_ms.saturating_sub(now_ms()).saturating_add(1000)))
    }

    /// Takes a handover to the sequencer it names: ours to sequence if it
    /// names our log key, else sent to that device.
    async fn hand_over(&self, handover: Entry) {
        let Op::Handover { sequencer, .. } = handover.op() else { return };
        let sequencer = *sequencer;
        let result = match self.ledger.submit(vec![handover.clone()]) {
            Ok(mut results) => results.pop().map(|r| outcome(r).to_pb()),
            // Not ours to sequence: the device it names takes it.
            Err(SubmitError::NotSequencer) => match self.send(sequencer, std::slice::from_ref(&handover)).await {
                Ok(mut results) => results.pop(),
                Err(error) => {
                    tracing::debug!(%sequencer, %error, "the handover's new sequencer cannot be reached yet");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "cannot sequence a handover");
                None
            }
        };
        match result.and_then(|r| r.result) {
            Some(Outcome::Index(index)) => {
                tracing::info!(index, %sequencer, "the handover is in the log");
                self.pending.remove(&handover.hash());
            }
            Some(Outcome::Refused(rule)) => {
                tracing::warn!(%rule, %sequencer, "the handover was refused");
                self.pending.refuse(&handover.hash(), &rule);
            }
            _ => {}
        }
    }

    async fn send(&self, sequencer: Did, batch: &[Entry]) -> Result<Vec<pb::SubmitResult>, ProtocolError> {
        let exchange = async {
            let stream = self.router.open(sequencer, PROTOCOL).await?;
            let request = pb::SubmitRequest { entries: batch.iter().map(|e| e.encoded().to_vec()).collect() };
            let mut writer = FrameWriter::new(stream, MAX_FRAME);
            writer.send(&request).await?;
            writer.shutdown().await?;
            let mut reader = FrameReader::new(writer.into_inner(), MAX_FRAME);
            let reply: pb::SubmitReply =
                reader.read().await?.ok_or_else(|| ProtocolError::Violation("no submit reply".into()))?;
            Ok(reply.results)
        };
        let results = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(ProtocolError::Timeout("ledger submit")))?;
        if results.len() != batch.len() {
            return Err(ProtocolError::Violation("the sequencer answered a different number of requests".into()));
        }
        Ok(results)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn outcome(result: Result<u64, Rejection>) -> SubmitOutcome {
    match result {
        Ok(index) | Err(Rejection::AlreadyInLog(index)) => SubmitOutcome::Sequenced(index),
        Err(rejection) => SubmitOutcome::Refused(rejection.to_string()),
    }
}

impl ProtocolHandler for Submitter {
    /// Answers a peer's requests: sequenced or refused if we sequence,
    /// refused as misdirected if we do not.
    fn handle(self: Arc<Self>, peer: Did, stream: PeerStream) -> Handling {
        Box::pin(async move {
            let mut reader = FrameReader::new(stream, MAX_FRAME);
            let request: pb::SubmitRequest =
                reader.read().await?.ok_or_else(|| ProtocolError::Violation("empty submit stream".into()))?;
            if request.entries.len() > MAX_REQUESTS {
                return Err(ProtocolError::Violation(format!("{} requests in one exchange", request.entries.len())));
            }
            let mut decoded = Vec::new();
            let mut results = vec![None; request.entries.len()];
            for (i, bytes) in request.entries.iter().enumerate() {
                match Entry::decode(bytes) {
                    Ok(entry) => decoded.push((i, entry)),
                    Err(error) => results[i] = Some(SubmitOutcome::Refused(Rejection::Malformed(error).to_string())),
                }
            }
            let (places, entries): (Vec<usize>, Vec<Entry>) = decoded.into_iter().unzip();
            let sequenced = self.ledger.submit(entries).map_err(|e| ProtocolError::Violation(e.to_string()))?;
            for (i, result) in places.into_iter().zip(sequenced) {
                results[i] = Some(outcome(result));
            }
            let hashes: Vec<Option<EntryHash>> =
                request.entries.iter().map(|bytes| Entry::decode(bytes).ok().map(|e| e.hash())).collect();
            let results = results
                .into_iter()
                .zip(hashes)
                .map(|(result, hash)| {
                    let outcome = result.unwrap_or(SubmitOutcome::Pending);
                    let mut pb = outcome.to_pb();
                    if let (Some(hash), Some(word)) = (hash, outcome.word(self.promise_deadline))
                        && let Some(answer) = self.ledger.answer(hash, word)
                    {
                        pb.answer = answer.encoded().to_vec();
                    }
                    pb
                })
                .collect();
            tracing::info!(%peer, "sequenced requests a peer forwarded");
            let mut writer = FrameWriter::new(reader.into_parts().0, MAX_FRAME);
            writer.send(&pb::SubmitReply { results }).await?;
            writer.shutdown().await?;
            Ok(())
        })
    }
}
