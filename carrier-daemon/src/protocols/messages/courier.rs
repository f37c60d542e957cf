//! The courier: one task per remote device that carries our apps' messages
//! to it over one `/carrier/msg/1.0.0` stream, in the order they were sent,
//! and routes each receipt back to its sender.
//!
//! ```text
//!  Handle::send ─▶ queue ─▶ link up? (Overlay::connect: Kademlia) ─▶ open stream
//!                           writer: Envelope frames, flushed when the queue is empty
//!                           reader: EnvelopeReceipt ─▶ pending[seq] ─▶ ReceiptSink
//! ```
//!
//! If the device cannot be reached, everything queued fails `UNREACHABLE`;
//! if the link breaks, what was sent and not yet answered fails `LINK_LOST`.
//! Either way the courier ends and the next message starts a new one.
//! [`Couriers`] keeps one live courier per device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::messaging::MessageId;
use carrier_proto::pb::{self, Outcome};
use tokio::sync::mpsc;

use super::{Failure, PROTOCOL, ReceiptSink};
use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::overlay::Overlay;
use crate::protocols::{PeerStream, ProtocolError, Router, verdict_of};

/// Messages queued for one device before senders wait.
const QUEUE: usize = 4096;
/// Most time to open the stream once linked.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One message for the courier.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub envelope: pb::Envelope,
    pub sink: ReceiptSink,
}

impl Outgoing {
    fn id(&self) -> Option<MessageId> {
        Some(MessageId { epoch: self.envelope.epoch.as_slice().try_into().ok()?, seq: self.envelope.seq })
    }

    fn fail(self, outcome: Outcome, detail: String) {
        let id = self.id();
        self.sink.resolve(id, Err(Failure::new(outcome, detail)));
    }
}

/// A courier's queue.
#[derive(Debug, Clone)]
struct Handle {
    queue: mpsc::Sender<Outgoing>,
}

impl Handle {
    /// Queues `outgoing`; gives it back if the courier has ended.
    async fn send(&self, outgoing: Outgoing) -> Result<(), Outgoing> {
        self.queue.send(outgoing).await.map_err(|e| e.0)
    }

    /// Whether both handles reach the same courier.
    fn same(&self, other: &Handle) -> bool {
        self.queue.same_channel(&other.queue)
    }
}

/// One courier per remote device, started on the first message to it.
#[derive(Debug)]
pub(crate) struct Couriers {
    overlay: Overlay,
    router: Router,
    /// Largest envelope frame.
    max_frame: usize,
    live: Mutex<HashMap<Did, Handle>>,
}

impl Couriers {
    /// Couriers that find devices through `overlay` and carry envelopes of
    /// up to `max_frame` bytes.
    pub(crate) fn new(overlay: Overlay, router: Router, max_frame: usize) -> Self {
        Self { overlay, router, max_frame, live: Mutex::default() }
    }

    /// Queues `outgoing` for `device`; waits only while that device's queue
    /// is full. A courier that died (its link broke) is replaced once.
    pub(crate) async fn send(self: &Arc<Self>, device: Did, mut outgoing: Outgoing) {
        for _ in 0..2 {
            let handle = self.courier(device);
            match handle.send(outgoing).await {
                Ok(()) => return,
                Err(back) => {
                    self.forget(device, &handle);
                    outgoing = back;
                }
            }
        }
        outgoing.fail(Outcome::Unreachable, format!("no courier to {device} could be started"));
    }

    fn courier(self: &Arc<Self>, device: Did) -> Handle {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.entry(device).or_insert_with(|| self.spawn(device)).clone()
    }

    fn forget(&self, device: Did, dead: &Handle) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.get(&device).is_some_and(|h| h.same(dead)) {
            live.remove(&device);
        }
    }

    fn spawn(self: &Arc<Self>, device: Did) -> Handle {
        let (queue, rx) = mpsc::channel(QUEUE);
        let span = tracing::debug_span!("courier", %device);
        let run = tracing::Instrument::instrument(run(Arc::clone(self), device, rx), span);
        self.router.handlers().spawn_until_stop(run);
        Handle { queue }
    }
}

/// A written message waiting for its receipt.
#[derive(Debug)]
struct Parked {
    id: Option<MessageId>,
    sink: ReceiptSink,
}

type Pending = Arc<Mutex<HashMap<u64, Parked>>>;

async fn run(couriers: Arc<Couriers>, device: Did, mut queue: mpsc::Receiver<Outgoing>) {
    let stream = match open(&couriers, device).await {
        Ok(stream) => stream,
        Err(error) => {
            let detail = error.to_string();
            tracing::debug!(%detail, "device unreachable");
            queue.close();
            while let Some(outgoing) = queue.recv().await {
                outgoing.fail(Outcome::Unreachable, detail.clone());
            }
            return;
        }
    };
    let (read, write) = tokio::io::split(stream);
    let max_frame = couriers.max_frame;
    let pending: Pending = Arc::default();
    let ended = tokio::select! {
        ended = write_envelopes(FrameWriter::new(write, max_frame), &mut queue, &pending) => ended,
        ended = read_receipts(FrameReader::new(read, max_frame), &pending) => ended,
    };
    let detail = match ended {
        Ok(()) => format!("the link to {device} closed before the receipt came"),
        Err(error) => format!("the link to {device} broke before the receipt came: {error}"),
    };
    tracing::debug!(%detail, "courier ends");
    queue.close();
    let unanswered: Vec<Parked> = pending.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, p)| p).collect();
    for parked in unanswered {
        let detail = format!("{detail}; the message may or may not have arrived");
        parked.sink.resolve(parked.id, Err(Failure::new(Outcome::LinkLost, detail)));
    }
    // Queued but never written: nothing was sent, so they may be retried.
    while let Some(outgoing) = queue.recv().await {
        outgoing.fail(Outcome::Unreachable, detail.clone());
    }
}

/// Links to `device` (finding it through Kademlia if need be) and opens
/// the message stream.
async fn open(couriers: &Couriers, device: Did) -> Result<PeerStream, ProtocolError> {
    couriers.overlay.connect(device).await?;
    tokio::time::timeout(OPEN_TIMEOUT, couriers.router.open(device, PROTOCOL))
        .await
        .map_err(|_| ProtocolError::Timeout("opening a message stream"))?
}

async fn write_envelopes<W: tokio::io::AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    queue: &mut mpsc::Receiver<Outgoing>,
    pending: &Pending,
) -> Result<(), FramedError> {
    while let Some(outgoing) = queue.recv().await {
        // Parked before it is written, so its receipt always finds it.
        let id = outgoing.id();
        let Outgoing { envelope, sink } = outgoing;
        pending.lock().unwrap_or_else(|p| p.into_inner()).insert(envelope.seq, Parked { id, sink });
        writer.feed(&envelope).await?;
        if queue.is_empty() {
            writer.flush().await?;
        }
    }
    Ok(())
}

async fn read_receipts<R: tokio::io::AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    pending: &Pending,
) -> Result<(), FramedError> {
    while let Some(receipt) = reader.read::<pb::EnvelopeReceipt>().await? {
        let Some(parked) = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&receipt.seq) else {
            tracing::debug!(seq = receipt.seq, "receipt for no pending message");
            continue;
        };
        parked.sink.resolve(parked.id, verdict_of(receipt.outcome, receipt.detail));
    }
    Ok(())
}
