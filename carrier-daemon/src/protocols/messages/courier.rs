//! The courier: one task per remote device that carries our apps' messages
//! to it until each has a FINAL receipt, over one `/carrier/msg/2.0.0`
//! stream at a time, and retries when a stream or link breaks.
//!
//! ```text
//!  Couriers::queue ─▶ Queue (per device) ─▶ link (Overlay::connect) ─▶ stream ─▶ MsgHello
//!    writer: the queue's next envelopes (window 8192 / 16 MiB), pings when owed and quiet
//!    reader: HELD / BUSY / FINAL ─▶ Queue; FINAL ─▶ Settle::settle
//!  stream broke ─▶ every unanswered message queued again ─▶ retry at once, then
//!                  after 0.5 s, 1 s, 2 s … 30 s, or as soon as the device's link is up
//! ```
//!
//! A device that cannot be reached has its messages handed to the
//! delivery layer for its mailboxes ([`Settle::unreachable`], once each);
//! the courier still keeps them and goes on trying.
//!
//! Dead links are found by the courier, not by QUIC's idle timeout: while
//! messages are on the wire without an answer, a silence of
//! [`PING_AFTER`] sends a ping, and one of [`DEAD_AFTER`] closes the link
//! and retries. An idle link, or one whose messages the receiver already
//! holds, costs nothing extra.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carrier_proto::identity::Did;
use carrier_proto::pb::{self, Outcome, envelope_receipt::Stage, to_receiver, to_sender};
use tokio::sync::Notify;

use super::queue::Queue;
use super::{PROTOCOL, Settle};
use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::overlay::{Overlay, OverlayEvent};
use crate::protocols::{Failure, PeerStream, ProtocolError, Router, verdict_of};

/// Most time to link, open the stream and hear the hello.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages on the wire without an answer, at most.
const WINDOW: usize = 8192;
/// Payload bytes on the wire without an answer, at most.
const WINDOW_BYTES: usize = 16 << 20;
/// Silence, with answers owed, after which the courier pings.
pub(crate) const PING_AFTER: Duration = Duration::from_millis(1000);
/// Silence, with answers owed, after which the link is taken for dead.
pub(crate) const DEAD_AFTER: Duration = Duration::from_millis(3000);
/// The longest wait between two attempts to reach a device.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long a courier with nothing to carry lingers before it ends.
const LINGER: Duration = Duration::from_secs(60);

/// One device's queue, shared by the couriers' map and its task.
#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One courier per remote device, started on the first message to it.
pub(crate) struct Couriers {
    overlay: Overlay,
    router: Router,
    settle: Arc<dyn Settle>,
    /// Largest frame.
    max_frame: usize,
    live: Mutex<HashMap<Did, Arc<Shared>>>,
}

impl std::fmt::Debug for Couriers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Couriers").field("max_frame", &self.max_frame).finish_non_exhaustive()
    }
}

impl Couriers {
    /// Couriers that find devices through `overlay`, write frames of up to
    /// `max_frame` bytes and report each message's fate to `settle`.
    pub(crate) fn new(overlay: Overlay, router: Router, settle: Arc<dyn Settle>, max_frame: usize) -> Arc<Self> {
        Arc::new(Self { overlay, router, settle, max_frame, live: Mutex::default() })
    }

    /// Queues `envelope` for `device`; never waits (the delivery layer
    /// bounds what it queues).
    pub(crate) fn queue(self: &Arc<Self>, device: Did, envelope: pb::Envelope) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let shared = live.entry(device).or_insert_with(|| {
            let shared = Arc::new(Shared::default());
            let span = tracing::debug_span!("courier", %device);
            let run = tracing::Instrument::instrument(run(Arc::clone(self), device, Arc::clone(&shared)), span);
            self.router.handlers().spawn_until_stop(run);
            shared
        });
        shared.lock().push(envelope);
        shared.wake.notify_one();
    }

    /// Ends the courier if it has nothing left; whether it did.
    fn retire(&self, device: Did, shared: &Arc<Shared>) -> bool {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if !shared.lock().is_empty() {
            return false;
        }
        if live.get(&device).is_some_and(|s| Arc::ptr_eq(s, shared)) {
            live.remove(&device);
        }
        true
    }

    /// Drops `seq` from `device`'s queue without settling it (the delivery
    /// layer settled it).
    pub(crate) fn cancel(&self, device: Did, seq: u64) {
        let shared = self.live.lock().unwrap_or_else(|p| p.into_inner()).get(&device).cloned();
        if let Some(shared) = shared {
            shared.lock().finish(seq);
        }
    }

    /// `seq` could not be left in a mailbox: offer it again after the next
    /// failure to reach `device`.
    pub(crate) fn unpark(&self, device: Did, seq: u64) {
        let shared = self.live.lock().unwrap_or_else(|p| p.into_inner()).get(&device).cloned();
        if let Some(shared) = shared {
            shared.lock().unpark(seq);
        }
    }

    fn finish(&self, shared: &Shared, seq: u64, verdict: crate::protocols::Verdict) {
        if shared.lock().finish(seq).is_some() {
            self.settle.settle(seq, verdict);
        }
    }

    /// Settles what `doomed` picks from `shared`'s queue with `outcome`.
    fn drop_if(&self, shared: &Shared, outcome: Outcome, detail: &str, doomed: impl FnMut(&pb::Envelope) -> bool) {
        let gone = shared.lock().drop_if(doomed);
        for seq in gone {
            self.settle.settle(seq, Err(Failure::new(outcome, detail)));
        }
    }
}

async fn run(couriers: Arc<Couriers>, device: Did, shared: Arc<Shared>) {
    let mut events = couriers.overlay.events();
    let mut failures = 0u32;
    loop {
        // Wait for something to carry, or end.
        while shared.lock().is_empty() {
            if tokio::time::timeout(LINGER, shared.wake.notified()).await.is_err() && couriers.retire(device, &shared) {
                return;
            }
        }
        let now_ms = now_ms();
        let expired = |e: &pb::Envelope| e.expires_at_ms != 0 && e.expires_at_ms <= now_ms;
        couriers.drop_if(&shared, Outcome::Expired, "its time to live passed before it could be delivered", expired);
        if shared.lock().is_empty() {
            continue;
        }
        match open(&couriers, device).await {
            Ok((stream, max_message)) => {
                failures = 0;
                let too_large = |e: &pb::Envelope| e.payload.len() as u64 > max_message;
                let detail = format!("over the receiving daemon's limit of {max_message} bytes");
                couriers.drop_if(&shared, Outcome::TooLarge, &detail, too_large);
                let ended = exchange(&couriers, &shared, stream, max_message).await;
                let left = shared.lock().len();
                let dead = matches!(ended, Err(ProtocolError::Timeout(_)));
                match ended {
                    Ok(()) => tracing::debug!(left, "message stream closed; retrying"),
                    Err(error) => tracing::debug!(left, %error, "message stream broke; retrying"),
                }
                if dead {
                    // Taken for dead: close it, so the retry dials afresh.
                    let _ = couriers.overlay.disconnect(device).await;
                }
                shared.lock().requeue_all();
                // The first retry comes at once.
                continue;
            }
            Err(error) => {
                failures += 1;
                tracing::debug!(%error, failures, "device unreachable; retrying");
                let parked = shared.lock().park_new();
                if !parked.is_empty() {
                    couriers.settle.unreachable(device, parked);
                }
            }
        }
        let delay = Duration::from_millis(500).saturating_mul(1 << failures.min(8).saturating_sub(1)).min(MAX_RETRY);
        let retry_at = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(retry_at) => break,
                event = events.recv() => match event {
                    Ok(OverlayEvent::PeerUp(did)) if did == device => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(retry_at).await;
                        break;
                    }
                },
            }
        }
    }
}

/// Links to `device` (finding it through Kademlia if need be), opens the
/// message stream and reads the receiver's hello: its message limit. A
/// link that cannot open a stream and answer within [`DEAD_AFTER`] is
/// taken for dead and closed, so the next attempt dials afresh.
async fn open(couriers: &Couriers, device: Did) -> Result<(PeerStream, u64), ProtocolError> {
    tokio::time::timeout(OPEN_TIMEOUT, couriers.overlay.connect(device))
        .await
        .map_err(|_| ProtocolError::Timeout("linking to the device"))??;
    let opening = async {
        let mut stream = couriers.router.open(device, PROTOCOL).await?;
        let mut reader = FrameReader::new(&mut stream, couriers.max_frame);
        let hello = match reader.read::<pb::ToSender>().await? {
            Some(pb::ToSender { frame: Some(to_sender::Frame::Hello(hello)) }) => hello,
            other => return Err(ProtocolError::Violation(format!("expected the receiver's hello, got {other:?}"))),
        };
        let (_, rest) = reader.into_parts();
        if !rest.is_empty() {
            return Err(ProtocolError::Violation("bytes after the receiver's hello before any envelope".into()));
        }
        Ok((stream, hello.max_message))
    };
    match tokio::time::timeout(DEAD_AFTER, opening).await {
        Ok(opened) => opened,
        Err(_) => {
            let _ = couriers.overlay.disconnect(device).await;
            Err(ProtocolError::Timeout("opening a message stream (the link seems dead)"))
        }
    }
}

/// Carries the queue over one stream until it breaks.
async fn exchange(
    couriers: &Couriers,
    shared: &Shared,
    stream: PeerStream,
    max_message: u64,
) -> Result<(), ProtocolError> {
    let (read, write) = tokio::io::split(stream);
    let started = Instant::now();
    // Milliseconds after `started` when the receiver was last heard.
    let heard = AtomicU64::new(0);
    let max_frame = couriers.max_frame.min(usize::try_from(max_message).unwrap_or(usize::MAX).saturating_add(64 << 10));
    tokio::select! {
        ended = write_envelopes(shared, FrameWriter::new(write, max_frame), started, &heard) => ended,
        ended = read_receipts(couriers, shared, FrameReader::new(read, couriers.max_frame), started, &heard) => Ok(ended?),
    }
}

async fn write_envelopes<W: tokio::io::AsyncWrite + Unpin>(
    shared: &Shared,
    mut writer: FrameWriter<W>,
    started: Instant,
    heard: &AtomicU64,
) -> Result<(), ProtocolError> {
    let mut nonce = 0u64;
    let mut last_ping = Duration::ZERO;
    loop {
        let (next, resume) = {
            let mut queue = shared.lock();
            queue.resume(Instant::now());
            (queue.next(WINDOW, WINDOW_BYTES), queue.next_resume())
        };
        if let Some(envelope) = next {
            let frame = pb::ToReceiver { frame: Some(to_receiver::Frame::Envelope((*envelope).clone())) };
            writer.feed(&frame).await?;
            continue;
        }
        writer.flush().await?;
        // Nothing to write now: wait for more, a pause to end, or a tick.
        let tick = tokio::time::sleep(PING_AFTER / 2);
        let resume = async {
            match resume {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = resume => {}
            _ = tick => {}
        }
        if shared.lock().in_flight() == 0 {
            continue;
        }
        let now = started.elapsed();
        let quiet = now.saturating_sub(Duration::from_millis(heard.load(Ordering::Relaxed)).max(last_ping));
        let silent = now.saturating_sub(Duration::from_millis(heard.load(Ordering::Relaxed)));
        if silent >= DEAD_AFTER && last_ping > Duration::ZERO {
            return Err(ProtocolError::Timeout("the receiver's answer (the link seems dead)"));
        }
        if quiet >= PING_AFTER {
            nonce += 1;
            last_ping = now;
            writer.send(&pb::ToReceiver { frame: Some(to_receiver::Frame::Ping(pb::Ping { nonce })) }).await?;
        }
    }
}

async fn read_receipts<R: tokio::io::AsyncRead + Unpin>(
    couriers: &Couriers,
    shared: &Shared,
    mut reader: FrameReader<R>,
    started: Instant,
    heard: &AtomicU64,
) -> Result<(), FramedError> {
    while let Some(frame) = reader.read::<pb::ToSender>().await? {
        heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let Some(to_sender::Frame::Receipt(receipt)) = frame.frame else { continue };
        let seq = receipt.seq;
        match Stage::try_from(receipt.stage) {
            Ok(Stage::Held) => shared.lock().held(seq),
            Ok(Stage::Busy) => shared.lock().busy(seq, Instant::now()),
            Ok(Stage::Final) | Err(_) => couriers.finish(shared, seq, verdict_of(receipt.outcome, receipt.detail)),
        }
        // Room in the window, or a pair to pause: the writer looks again.
        shared.wake.notify_one();
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
