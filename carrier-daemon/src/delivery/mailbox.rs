//! Offline mailboxes, the sender's and the recipient's side: depositing
//! for devices we cannot reach, collecting our own, and moving the copies
//! we keep (as a node, `keeper.rs`) to where they belong now.
//!
//! ```text
//!  courier: device unreachable ─▶ Settle::unreachable ─▶ seal (Noise X) ─▶ Deposit on the
//!    COPIES devices closest to it ─▶ ≥ 1 took it: the app hears STORED (the courier goes on trying)
//!                                  └ all refused (quota): the app gets MAILBOX_FULL, final
//!  recipient: at start, every 30 s and when a link comes up ─▶ Collect from the 2 × COPIES
//!    closest ─▶ open, check the sealing device on the ledger, order by seq, each after its
//!    predecessor in its pair ─▶ our inbox ─▶ Remove ─▶ link to each sender, whose courier
//!    then hears DELIVERED
//! ```
//!
//! On the same beat a node pushes the blobs it keeps to the recipient's
//! closest devices as its routing table now sees them, and drops its own
//! copies once it is no longer among them (copies move with membership).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::mailbox as seal;
use carrier_proto::pb::{self, Outcome, mailbox_answer::Answer, mailbox_refused::Reason, mailbox_request::Request};
use prost::Message as _;

use super::Delivery;
use super::keeper::PER_ANSWER;
use super::store::BlobId;
use crate::protocols::Failure;
use crate::protocols::mailbox::ask;
use crate::protocols::messages::{Inbox, Offered, Progress, Watcher};

/// Copies of each blob: the devices closest to its recipient.
pub const COPIES: usize = 3;
/// How often a device collects, and a node checks where its blobs belong.
const EVERY: Duration = Duration::from_secs(30);

/// How long a collecting device waits for one node's answer before it
/// leaves that node for the next beat (an offline node must not hold up
/// the others).
const COLLECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the others may take once one node answered a collection.
const STRAGGLER_GRACE: Duration = Duration::from_millis(250);
/// Messages sealed and deposited at the same time.
const DEPOSITS_AT_ONCE: usize = 32;

/// Where and how one device's messages are sealed.
struct Sealing {
    device: Did,
    key: carrier_proto::identity::NoisePublicKey,
    network: carrier_proto::ledger::EntryHash,
    nodes: Vec<Did>,
}

/// A message across copies: its sender's epoch and its seq (in that order,
/// so a sender's messages sort as they were sent).
type MessageKey = (Vec<u8>, u64);

impl Delivery {
    /// Seals `parked` for `device` and deposits each on its closest devices.
    pub(super) async fn deposit_for(self: Arc<Self>, device: Did, parked: Vec<(Arc<pb::Envelope>, u64)>) {
        let (Some(standing), Some(network)) = (self.ledger.standing(&device), self.ledger.network()) else { return };
        let nodes = self.overlay.closest(device, COPIES).await.map(|c| c.peers).unwrap_or_default();
        let nodes: Vec<Did> = nodes.into_iter().filter(|n| *n != self.device).collect();
        let sealing = Sealing { device, key: standing.keys.noise, network: network.id, nodes };
        // A few at a time: the nodes keep them in about the order sent.
        for chunk in parked.chunks(DEPOSITS_AT_ONCE) {
            let deposits = chunk.iter().map(|(envelope, prev_seq)| self.deposit_one(&sealing, envelope, *prev_seq));
            futures::future::join_all(deposits).await;
        }
    }

    /// Seals one message and deposits it on every node of `sealing`.
    async fn deposit_one(&self, sealing: &Sealing, envelope: &pb::Envelope, prev_seq: u64) {
        let (device, seq) = (sealing.device, envelope.seq);
        let letter = pb::Letter { from_device: self.device.key_bytes(), envelope: Some(envelope.clone()), prev_seq };
        let sealed = seal::seal(self.ctx.identity(), &device, &sealing.key, &sealing.network, &letter.encode_to_vec());
        let blob = match sealed {
            Ok(blob) => blob,
            Err(error) => {
                tracing::warn!(%device, %error, "could not seal a message for the mailboxes");
                return self.couriers.unpark(device, seq);
            }
        };
        let expires_at_ms = envelope.expires_at_ms;
        let id = seal::blob_id(&blob);
        let origin_signature =
            seal::sign_deposit(self.ctx.identity(), &sealing.network, &device, &id, expires_at_ms).to_vec();
        let origin = self.device.key_bytes();
        let deposit = pb::Deposit { recipient: device.key_bytes(), blob, expires_at_ms, origin, origin_signature };
        let asks = sealing.nodes.iter().map(|node| {
            let request = Request::Deposit(deposit.clone());
            ask(&self.overlay, &self.router, *node, request, self.max_frame())
        });
        let (mut copies, mut full) = (0u32, Vec::new());
        for (node, answer) in sealing.nodes.iter().zip(futures::future::join_all(asks).await) {
            match answer.map(|a| a.answer) {
                Ok(Some(Answer::Deposited(_))) => copies += 1,
                Ok(Some(Answer::Refused(why))) if why.reason == Reason::Quota as i32 => full.push(why.detail),
                Ok(other) => tracing::debug!(%node, ?other, "a mailbox node refused a deposit"),
                Err(error) => tracing::debug!(%node, %error, "a mailbox node could not be asked"),
            }
        }
        if copies > 0 {
            self.mark_stored(seq, copies);
        } else if !full.is_empty() {
            self.couriers.cancel(device, seq);
            let detail = format!("{device} is offline and its mailboxes are full: {}", full.join("; "));
            let failure = Failure::new(Outcome::MailboxFull, detail);
            crate::protocols::messages::Settle::settle(self, seq, Err(failure));
        } else {
            self.couriers.unpark(device, seq);
        }
    }

    /// Collects our blobs from the devices closest to us, round after round
    /// while they have more and we take some.
    async fn collect_all(self: &Arc<Self>) {
        if !self.ledger.standing(&self.device).is_some_and(|s| s.is_active_device()) {
            return;
        }
        // Our table is enough to start with (a walk could wait on an
        // offline peer); the beat's next collection sees what it missed.
        let mut nodes = self.overlay.closest_local(self.device, 2 * COPIES).await.map(|c| c.peers).unwrap_or_default();
        let mut senders = HashSet::new();
        for _ in 0..10_000 {
            let (more, removed) = self.collect_round(&mut nodes, &mut senders).await;
            if !more || removed == 0 {
                break;
            }
        }
        // Their couriers hear DELIVERED once linked to us.
        for sender in senders {
            let overlay = self.overlay.clone();
            self.tasks().spawn(async move {
                let _ = overlay.connect(sender).await;
            });
        }
    }

    /// One Collect to each of `nodes`, all at once: each one's answer, or
    /// `None` for one that failed or did not answer in time. That is within
    /// [`COLLECT_TIMEOUT`], and once the first answer is in, within
    /// [`STRAGGLER_GRACE`] (or twice the first's time, if longer) of it: a
    /// node that is down must not hold up what the others brought (each
    /// blob is on several of them; what only it has comes next beat).
    async fn ask_all(&self, nodes: &[Did]) -> Vec<Option<pb::MailboxAnswer>> {
        use futures::StreamExt;
        let started = tokio::time::Instant::now();
        let mut asks: futures::stream::FuturesUnordered<_> = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| async move {
                let collect = Request::Collect(pb::Collect { max_blobs: PER_ANSWER });
                (index, ask(&self.overlay, &self.router, *node, collect, self.max_frame()).await)
            })
            .collect();
        let mut answers = vec![None; nodes.len()];
        let mut until = started + COLLECT_TIMEOUT;
        while let Ok(Some((index, answer))) = tokio::time::timeout_at(until, asks.next()).await {
            let Ok(answer) = answer else { continue };
            if answers.iter().all(Option::is_none) {
                let grace = STRAGGLER_GRACE.max(2 * started.elapsed());
                until = until.min(tokio::time::Instant::now() + grace);
            }
            answers[index] = Some(answer);
        }
        answers
    }

    /// One Collect from each of `nodes`, all at once: whether any has more,
    /// and how many blobs we removed. A node that does not answer in time
    /// (see [`Self::ask_all`]) is left out of the later rounds.
    async fn collect_round(self: &Arc<Self>, nodes: &mut Vec<Did>, senders: &mut HashSet<Did>) -> (bool, usize) {
        let Some(network) = self.ledger.network() else { return (false, 0) };
        let mut more = false;
        let answers = self.ask_all(nodes).await;
        let mut answered = Vec::new();
        // Every copy from every node first, so a pair's messages can be taken
        // in order whichever node kept which.
        let mut letters: BTreeMap<MessageKey, (pb::Letter, Did)> = BTreeMap::new();
        // Blobs to remove, per node.
        let mut from: HashMap<Did, Vec<BlobId>> = HashMap::new();
        // Which nodes hold a copy of each message.
        let mut copies_of: HashMap<MessageKey, Vec<(Did, BlobId)>> = HashMap::new();
        // Each node's blobs, in order; a blob kept on several nodes is the
        // same bytes, checked against its id and opened once.
        let mut seen: Vec<(Did, BlobId)> = Vec::new();
        let mut to_open: HashMap<BlobId, Vec<u8>> = HashMap::new();
        for (node, answer) in nodes.iter().zip(answers) {
            let blobs = match answer {
                Some(pb::MailboxAnswer { answer: Some(Answer::Blobs(blobs)) }) => {
                    answered.push(*node);
                    more |= blobs.more;
                    blobs.blobs
                }
                Some(_) => {
                    answered.push(*node);
                    continue;
                }
                None => continue,
            };
            for blob in blobs {
                let Ok(id) = <[u8; 32]>::try_from(blob.id.as_slice()) else { continue };
                if let std::collections::hash_map::Entry::Vacant(slot) = to_open.entry(id) {
                    // The id is the blob's hash: a node that lies about it
                    // only hides its own copy.
                    if carrier_proto::mailbox::blob_id(&blob.blob) != id {
                        tracing::warn!(%node, "a mailbox blob under another blob's id");
                        continue;
                    }
                    slot.insert(blob.blob);
                }
                seen.push((*node, id));
            }
        }
        let mut opened = self.open_letters(network.id, to_open).await;
        // What each blob came to: its message, or nothing (rejected).
        let mut keys: HashMap<BlobId, Option<MessageKey>> = HashMap::new();
        for (node, id) in seen {
            let key = match keys.get(&id) {
                Some(key) => key.clone(),
                None => {
                    let key = match opened.remove(&id) {
                        Some(Ok((letter, sender))) => {
                            let key = letter.envelope.as_ref().map(|e| (e.epoch.clone(), e.seq)).unwrap_or_default();
                            letters.entry(key.clone()).or_insert((letter, sender));
                            Some(key)
                        }
                        Some(Err(why)) => {
                            tracing::warn!(%node, %why, "rejected a mailbox blob");
                            None
                        }
                        // Not opened (the daemon is stopping): it stays
                        // on its nodes for the next collection.
                        None => continue,
                    };
                    keys.insert(id, key.clone());
                    key
                }
            };
            match key {
                Some(key) => copies_of.entry(key).or_default().push((node, id)),
                None => from.entry(node).or_default().push(id),
            }
        }
        *nodes = answered;
        // Letters held, each watched under its index here.
        let (watchers, mut progress) = Watcher::channel();
        let mut writing = Vec::new();
        for (key, (letter, sender)) in letters {
            let Some(envelope) = letter.envelope else { continue };
            if !self.predecessor_taken(&envelope, letter.prev_seq) {
                continue; // its predecessor comes first: a later round
            }
            let copies = copies_of.remove(&key).unwrap_or_default();
            senders.insert(sender);
            match self.offer(sender, envelope, watchers.watch(writing.len() as u64)) {
                Offered::Busy => continue, // our app's inbox is full: a later round
                Offered::Final(Err(failure)) => {
                    tracing::warn!(%sender, detail = %failure.detail, "dropped a mailbox blob");
                }
                Offered::Final(Ok(())) => {} // taken before (directly, or from another copy)
                Offered::Held => {
                    writing.push(Some(copies));
                    continue;
                }
            }
            for (node, id) in copies {
                from.entry(node).or_default().push(id);
            }
        }
        // Removed only once on our disk; one that could not be written
        // stays in its mailboxes for the next round.
        drop(watchers);
        let mut unsettled = writing.len();
        while unsettled > 0 {
            let Some((index, step)) = progress.recv().await else { break };
            let Some(copies) = writing.get_mut(index as usize).and_then(Option::take) else { continue };
            unsettled -= 1;
            if matches!(step, Progress::Stored | Progress::Taken(Ok(()))) {
                for (node, id) in copies {
                    from.entry(node).or_default().push(id);
                }
            }
        }
        let removed = from.values().map(Vec::len).sum();
        let removes = from.into_iter().map(|(node, ids)| async move {
            let remove = Request::Remove(pb::Remove { ids: ids.iter().map(|id| id.to_vec()).collect() });
            if let Err(error) = ask(&self.overlay, &self.router, node, remove, self.max_frame()).await {
                tracing::debug!(%node, %error, "could not remove collected blobs");
            }
        });
        futures::future::join_all(removes).await;
        (more, removed)
    }

    /// Opens `blobs` on the blocking pool, a share on each core (each costs
    /// two X25519 operations): what each came to.
    async fn open_letters(
        self: &Arc<Self>,
        network: carrier_proto::ledger::EntryHash,
        blobs: HashMap<BlobId, Vec<u8>>,
    ) -> HashMap<BlobId, Result<(pb::Letter, Did), String>> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let share = blobs.len().div_ceil(cores).max(64);
        let mut blobs: Vec<(BlobId, Vec<u8>)> = blobs.into_iter().collect();
        let mut shares = Vec::new();
        while !blobs.is_empty() {
            let chunk: Vec<_> = blobs.drain(..share.min(blobs.len())).collect();
            let this = Arc::clone(self);
            shares.push(tokio::task::spawn_blocking(move || {
                chunk.into_iter().map(|(id, blob)| (id, this.open_letter(&network, &blob))).collect::<Vec<_>>()
            }));
        }
        let mut opened = HashMap::new();
        for share in shares {
            // A share that did not finish (the daemon is stopping) is
            // collected next time.
            if let Ok(results) = share.await {
                opened.extend(results);
            }
        }
        opened
    }

    /// Opens a blob sealed to us: its letter and the device that sealed it,
    /// which must be active on the ledger with that Noise key.
    pub(super) fn open_letter(
        &self,
        network: &carrier_proto::ledger::EntryHash,
        blob: &[u8],
    ) -> Result<(pb::Letter, Did), String> {
        let opened = seal::open(self.ctx.identity(), network, blob, self.max_blob()).map_err(|e| e.to_string())?;
        let letter = pb::Letter::decode(opened.plaintext.as_slice()).map_err(|e| format!("its letter: {e}"))?;
        let sender = Did::from_key_bytes(&letter.from_device).map_err(|e| format!("its sender: {e}"))?;
        match self.ledger.standing(&sender) {
            Some(standing) if standing.is_active_device() && standing.keys.noise == opened.sender => {
                Ok((letter, sender))
            }
            Some(_) => Err(format!("{sender} is not an active device with the key that sealed it")),
            None => Err(format!("{sender} is not on the ledger")),
        }
    }

    /// Whether the message before `envelope` in its pair (`prev_seq`) was taken.
    fn predecessor_taken(&self, envelope: &pb::Envelope, prev_seq: u64) -> bool {
        if prev_seq == 0 {
            return true;
        }
        let (Some(from), Some(to), Ok(epoch)) = (
            self.ledger.find_did(&envelope.from_app),
            self.ledger.find_did(&envelope.to_app),
            <[u8; 16]>::try_from(envelope.epoch.as_slice()),
        ) else {
            return true; // the inbox refuses it, with the reason
        };
        let prev = carrier_proto::messaging::MessageId { epoch, seq: prev_seq };
        self.lock_held().replay.seen(from, to, prev)
    }

    /// Pushes the blobs we keep to where they belong now; drops ours when we
    /// are no longer among the recipient's closest devices. Each blob goes
    /// with its origin's signature, so the target charges its origin, not
    /// us. Targets are asked at once, each with a short deadline; one that
    /// does not answer is skipped until the next beat, and a refusal for
    /// quota is final (it would refuse again), so a dead or full node
    /// never holds the others up.
    async fn rebalance(self: &Arc<Self>) {
        let recipients = self.lock_mailbox().recipients();
        for recipient in recipients {
            let Ok(closest) = self.overlay.closest(recipient, COPIES).await else { continue };
            // Where the copies belong now: with us too, if we are among the
            // closest.
            let others = if closest.ours { COPIES - 1 } else { COPIES };
            let targets: Vec<Did> = closest.peers.iter().take(others).copied().collect();
            if targets.is_empty() || self.lock_mailbox().pushed_to(&recipient) == Some(&targets) {
                continue;
            }
            let ids: Vec<BlobId> = self.lock_mailbox().kept_for(&recipient).iter().map(|k| k.id).collect();
            let Ok(blobs) = self.committer.read(|store| store.stored_blobs(&recipient, &ids)) else { continue };
            let pushes = targets.iter().map(|node| self.push_all(recipient, *node, &blobs));
            let everywhere = futures::future::join_all(pushes).await.into_iter().all(|done| done);
            if !everywhere {
                continue; // again on the next beat
            }
            tracing::info!(%recipient, to = ?targets, blobs = ids.len(), "mailbox copies pushed");
            self.lock_mailbox().set_pushed(recipient, targets);
            if !closest.ours {
                tracing::info!(%recipient, blobs = ids.len(), "mailbox copies moved to the recipient's closest devices");
                let _ = self.remove_blobs(recipient, ids).await;
            }
        }
    }

    /// Pushes `blobs` to `node`; `false` if it did not answer (try again
    /// later). Refusals are final for the blob they refuse.
    async fn push_all(&self, recipient: Did, node: Did, blobs: &[(BlobId, pb::StoredBlob)]) -> bool {
        for (_, stored) in blobs {
            let deposit = pb::Deposit {
                recipient: recipient.key_bytes(),
                blob: stored.blob.clone(),
                expires_at_ms: stored.expires_at_ms,
                origin: stored.origin.clone(),
                origin_signature: stored.origin_signature.clone(),
            };
            let asked = ask(&self.overlay, &self.router, node, Request::Deposit(deposit), self.max_frame());
            match tokio::time::timeout(REBALANCE_ASK_TIMEOUT, asked).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
        true
    }
}

/// How long a node being handed blobs may take to answer each.
const REBALANCE_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Collects now, every [`EVERY`], and soon after a link comes up or a
/// device enters the routing table; checks where kept blobs belong on the
/// same beat.
pub(super) async fn run(delivery: Weak<Delivery>) {
    let Some(mut events) = delivery.upgrade().map(|d| d.overlay.events()) else { return };
    loop {
        let Some(this) = delivery.upgrade() else { return };
        this.collect_all().await;
        // Beside collection, never in its way; one at a time.
        if !this.rebalancing.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let rebalancing = Arc::clone(&this);
            this.tasks().spawn_until_stop(async move {
                rebalancing.rebalance().await;
                rebalancing.rebalancing.store(false, std::sync::atomic::Ordering::Release);
            });
        }
        drop(this);
        let wait = tokio::time::sleep(EVERY);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                event = events.recv() => match event {
                    // A link up (we may collect now) or a device in the routing
                    // table (closest sets may have changed): after a moment
                    // for the rest of its routes.
                    Ok(crate::overlay::OverlayEvent::PeerUp(_) | crate::overlay::OverlayEvent::Routable(_)) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}
