//! The session the SDK keeps with its daemon: what a [`Client`](crate::Client),
//! its [`Listener`](crate::Listener)s and streams share, and the two tasks
//! that move its frames.
//!
//! ```text
//!  send / submit ─▶ requests ─▶ writer task ─▶ app socket ─▶ daemon
//!  messages()    ◀─ inbox    ◀─ reader task ◀─ app socket ◀─ daemon
//!                   receipts and replies go to whoever waits on their id;
//!                   a message is acknowledged once it is in this process,
//!                   or, past INBOX waiting here, once the app takes it
//! ```
//!
//! The reader never waits, so stream offers and receipts always get
//! through: messages wait in the inbox, and past [`INBOX`] of them their
//! acknowledgements wait for the app instead, so the daemon's window
//! (4,096 messages and 8 MiB handed and not acknowledged) stops the flow.

use foldhash::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use carrier_proto::identity::{Did, DidCache};
use carrier_proto::pb::{self, app_event::Event, app_request::Request};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::message::{Message, MessageId};
use crate::wire::{self, EventReader};
use crate::{AppIdentity, SdkError};

/// Messages sent and not yet accepted, per client; `submit` waits beyond it.
const IN_FLIGHT: usize = 4096;

/// Messages waiting for the app that were acknowledged on arrival; past
/// this many, acknowledgements wait for the app to take them.
const INBOX: usize = 4096;

/// A message waiting for the app: the number it is still to be
/// acknowledged by (`None`: done on arrival), and itself.
pub(crate) type Waiting = (Option<u64>, Message);

/// Who waits for the answers to one request.
#[derive(Debug)]
struct Waiter {
    /// The final answer (a receipt, done, an error).
    answer: oneshot::Sender<pb::AppEvent>,
    /// For a send: the daemon's `accepted`, which comes first.
    accepted: Option<oneshot::Sender<pb::MessageAccepted>>,
    /// For a send: `stored` (the recipient is offline), if it comes.
    stored: Option<oneshot::Sender<u32>>,
    /// For a send: its place under the limits, until accepted or answered.
    permit: Option<SendPermit>,
}

type Waiters = Arc<Mutex<HashMap<u64, Waiter>>>;

/// A send's place under the daemon's limits (messages and payload bytes
/// without a receipt), held until its receipt comes.
#[derive(Debug)]
pub(crate) struct SendPermit {
    _message: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}
pub(crate) type Listeners = Arc<Mutex<HashMap<String, mpsc::Sender<pb::IncomingStream>>>>;

/// What the client's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) identity: AppIdentity,
    pub(crate) socket: PathBuf,
    pub(crate) device: Did,
    pub(crate) max_message: usize,
    next_id: AtomicU64,
    requests: mpsc::Sender<pb::AppRequest>,
    waiting: Waiters,
    /// Set when the session has ended; no request is answered after that.
    closed: Arc<AtomicBool>,
    pub(crate) listeners: Listeners,
    in_flight: Arc<Semaphore>,
    /// Payload bytes sent without a receipt, up to the daemon's limit.
    in_flight_bytes: Arc<Semaphore>,
    pub(crate) inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Waiting>>,
    /// Acknowledgements, written ahead of any request.
    acks: mpsc::UnboundedSender<u64>,
    /// Messages in the inbox that were acknowledged on arrival.
    acked_waiting: Arc<AtomicUsize>,
}

impl Shared {
    /// Starts the session on an authenticated connection: `reader` holds
    /// it, and the daemon's `welcome` says its device and message limit.
    pub(crate) fn start(
        identity: AppIdentity,
        socket: PathBuf,
        reader: EventReader<UnixStream>,
        welcome: pb::AppWelcome,
    ) -> Result<Arc<Self>, SdkError> {
        let device = Did::parse(&welcome.device).map_err(|e| SdkError::Protocol(format!("welcome device: {e}")))?;
        let max_message = usize::try_from(welcome.max_message).unwrap_or(usize::MAX);
        // A daemon that names no byte limit has none; a budget under one
        // message could never be met, so it is at least that.
        let byte_budget = match usize::try_from(welcome.max_in_flight_bytes) {
            Ok(0) | Err(_) => Semaphore::MAX_PERMITS,
            Ok(budget) => budget.max(max_message).min(Semaphore::MAX_PERMITS),
        };
        let (stream, rest) = reader.into_parts();
        let (read, write) = stream.into_split();
        let reader = EventReader::with_rest(read, max_message.saturating_add(wire::FRAME_OVERHEAD), &rest);
        let (requests, requests_rx) = mpsc::channel(1024);
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let waiting: Waiters = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let listeners: Listeners = Arc::default();
        tokio::spawn(write_requests(write, requests_rx, acks_rx));
        let ended =
            Ended { waiting: Arc::clone(&waiting), closed: Arc::clone(&closed), listeners: Arc::clone(&listeners) };
        let acked_waiting = Arc::new(AtomicUsize::new(0));
        let inbox_in = Inbox { tx: inbox_tx, acks: acks.clone(), acked_waiting: Arc::clone(&acked_waiting) };
        tokio::spawn(read_events(reader, ended, inbox_in));
        let shared = Shared {
            identity,
            socket,
            device,
            max_message,
            next_id: AtomicU64::new(1),
            requests,
            waiting,
            closed,
            listeners,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            in_flight_bytes: Arc::new(Semaphore::new(byte_budget)),
            inbox: tokio::sync::Mutex::new(inbox),
            acks,
            acked_waiting,
        };
        Ok(Arc::new(shared))
    }

    /// Waits for room to send a message of `len` payload bytes.
    pub(crate) async fn send_permit(&self, len: usize) -> Result<SendPermit, SdkError> {
        let message = Arc::clone(&self.in_flight).acquire_owned().await.map_err(|_| closed())?;
        let len = u32::try_from(len.max(1)).map_err(|_| SdkError::TooLarge { len, max: self.max_message })?;
        let bytes = Arc::clone(&self.in_flight_bytes).acquire_many_owned(len).await.map_err(|_| closed())?;
        Ok(SendPermit { _message: message, _bytes: bytes })
    }

    /// Sends `request`; the answer comes on the returned channel.
    pub(crate) async fn request(&self, request: Request) -> Result<oneshot::Receiver<pb::AppEvent>, SdkError> {
        self.request_with(request, None, None).await
    }

    /// Sends a send request: `accepted` hears the daemon's acceptance, the
    /// returned channel the receipt.
    pub(crate) async fn request_send(
        &self,
        request: Request,
        permit: SendPermit,
        accepted: oneshot::Sender<pb::MessageAccepted>,
        stored: oneshot::Sender<u32>,
    ) -> Result<oneshot::Receiver<pb::AppEvent>, SdkError> {
        self.request_with(request, Some(permit), Some((accepted, stored))).await
    }

    async fn request_with(
        &self,
        request: Request,
        permit: Option<SendPermit>,
        send: Option<(oneshot::Sender<pb::MessageAccepted>, oneshot::Sender<u32>)>,
    ) -> Result<oneshot::Receiver<pb::AppEvent>, SdkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let (accepted, stored) = send.unzip();
        let waiter = Waiter { answer: tx, accepted, stored, permit };
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(id, waiter);
        // The reader sets `closed` before it drops every waiter: either it
        // dropped ours, or we see the flag.
        if self.closed.load(Ordering::SeqCst) {
            self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(closed());
        }
        self.requests.send(pb::AppRequest { id, request: Some(request) }).await.map_err(|_| closed())?;
        Ok(rx)
    }

    /// The app took a message: acknowledge it now if that was left to the
    /// app (`delivery`), else make room for the next one to be
    /// acknowledged on arrival.
    pub(crate) fn taken(&self, delivery: Option<u64>) {
        match delivery {
            Some(delivery) => {
                let _ = self.acks.send(delivery);
            }
            None => {
                self.acked_waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Sends a request nobody waits for (from `Drop`).
    pub(crate) fn request_detached(&self, request: Request) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.requests.try_send(pb::AppRequest { id, request: Some(request) });
    }
}

/// The error every request gets once the session has ended.
pub(crate) fn closed() -> SdkError {
    SdkError::Disconnected("the session with the daemon is closed".into())
}

/// Writes requests, acknowledgements first, flushing when nothing waits.
async fn write_requests(
    mut write: OwnedWriteHalf,
    mut requests: mpsc::Receiver<pb::AppRequest>,
    mut acks: mpsc::UnboundedReceiver<u64>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let encoded = tokio::select! {
            biased;
            Some(delivery) = acks.recv() => {
                let mut deliveries = vec![delivery];
                while let Ok(more) = acks.try_recv() {
                    deliveries.push(more);
                }
                let ack = pb::AckDeliveries { deliveries };
                wire::encode_request(&pb::AppRequest { id: 0, request: Some(Request::Ack(ack)) }, &mut buf)
            }
            Some(request) = requests.recv() => wire::encode_request(&request, &mut buf),
            else => return,
        };
        // A request the frame format cannot carry ends the session: its
        // waiters then learn it is closed.
        if encoded.is_err() {
            return;
        }
        if buf.len() >= 64 * 1024 || (acks.is_empty() && requests.is_empty()) {
            if write.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
    }
}

/// Where the reader puts messages for the app.
struct Inbox {
    tx: mpsc::UnboundedSender<Waiting>,
    acks: mpsc::UnboundedSender<u64>,
    acked_waiting: Arc<AtomicUsize>,
}

impl Inbox {
    /// Queues `message` for the app, acknowledging it now while fewer than
    /// [`INBOX`] acknowledged ones wait; never waits itself.
    fn push(&self, delivery: u64, message: Message) -> bool {
        let ack_now = self.acked_waiting.fetch_add(1, Ordering::AcqRel) < INBOX;
        if ack_now {
            let _ = self.acks.send(delivery);
        } else {
            self.acked_waiting.fetch_sub(1, Ordering::AcqRel);
        }
        self.tx.send((if ack_now { None } else { Some(delivery) }, message)).is_ok()
    }
}

/// What the reader clears when the session ends.
struct Ended {
    waiting: Waiters,
    closed: Arc<AtomicBool>,
    listeners: Listeners,
}

/// Routes the daemon's events until the connection ends.
async fn read_events(mut reader: EventReader<OwnedReadHalf>, ended: Ended, inbox: Inbox) {
    let mut dids = DidCache::new();
    while let Ok(event) = reader.read().await {
        match event.event {
            Some(Event::Message(message)) => {
                let delivery = message.delivery;
                let Some(message) = incoming(message, &mut dids) else { continue };
                // Never waits: the daemon's window bounds what comes.
                if !inbox.push(delivery, message) {
                    break;
                }
            }
            Some(Event::IncomingStream(stream)) => {
                let listener = ended.listeners.lock().unwrap_or_else(|p| p.into_inner()).get(&stream.service).cloned();
                if let Some(listener) = listener {
                    let _ = listener.try_send(stream);
                }
            }
            Some(Event::Accepted(accepted)) if event.id != 0 => {
                // The daemon has it on disk: the send no longer counts
                // against the limits; its receipt comes later.
                let mut waiting = ended.waiting.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(waiter) = waiting.get_mut(&event.id) {
                    waiter.permit = None;
                    if let Some(tx) = waiter.accepted.take() {
                        let _ = tx.send(accepted);
                    }
                }
            }
            Some(Event::Stored(stored)) if event.id != 0 => {
                let mut waiting = ended.waiting.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(tx) = waiting.get_mut(&event.id).and_then(|w| w.stored.take()) {
                    let _ = tx.send(stored.copies);
                }
            }
            _ if event.id != 0 => {
                let waiter = ended.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&event.id);
                if let Some(waiter) = waiter {
                    let _ = waiter.answer.send(event);
                }
            }
            _ => {}
        }
    }
    // Everyone still waiting, and everyone who asks later, learns the
    // session is gone.
    ended.closed.store(true, Ordering::SeqCst);
    ended.waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
    ended.listeners.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

fn incoming(message: pb::IncomingMessage, dids: &mut DidCache) -> Option<Message> {
    let id = MessageId::from_bytes(&message.message_id)?;
    let from_app = dids.get(&message.from_app).ok()?;
    let from_device = dids.get(&message.from_device).ok()?;
    let received_at = SystemTime::UNIX_EPOCH + Duration::from_millis(message.received_at_ms);
    let redelivered = message.redelivered;
    Some(Message { id, from_app, from_device, payload: message.payload, received_at, redelivered })
}
