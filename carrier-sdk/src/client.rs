//! [`Client`]: an app's session with its daemon.
//!
//! ```text
//!  send / submit ─▶ requests ─▶ writer task ─▶ app socket ─▶ daemon
//!  messages()    ◀─ inbox    ◀─ reader task ◀─ app socket ◀─ daemon
//!                   receipts and replies go to whoever waits on their id;
//!                   a message is acknowledged once it is in this process
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use carrier_proto::identity::{Did, DidCache};
use carrier_proto::pb::{self, app_event::Event, app_hello::Purpose, app_request::Request};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::message::{AllowList, Failure, Message, MessageId, Receipt, allow_list_to_wire};
use crate::stream::{AppStream, Listener};
use crate::wire::{self, EventReader};
use crate::{AppIdentity, SdkError};

/// Environment variable naming the daemon's app socket.
pub const SOCKET_ENV: &str = "CARRIER_APP_SOCKET";
/// Messages sent and not yet answered, per client; `submit` waits beyond it.
const IN_FLIGHT: usize = 4096;
/// Received messages held for the app before the daemon is made to wait.
const INBOX: usize = 4096;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    app_name: String,
    data_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
}

impl ClientOptions {
    /// Options for the app called `app_name` (used for its default data
    /// directory, where its key lives).
    pub fn new(app_name: impl Into<String>) -> Self {
        Self { app_name: app_name.into(), data_dir: None, socket: None }
    }

    /// Keeps the app key in `dir` instead of the default data directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Talks to the daemon at `socket` instead of the default.
    pub fn socket(mut self, socket: impl Into<PathBuf>) -> Self {
        self.socket = Some(socket.into());
        self
    }
}

/// The daemon's app socket: `$CARRIER_APP_SOCKET`, else the user daemon's
/// (`$XDG_RUNTIME_DIR/carrier/app.sock`) if it exists, else the system
/// daemon's (`/run/carrier/app.sock`).
pub fn default_socket() -> PathBuf {
    if let Some(path) = std::env::var_os(SOCKET_ENV) {
        return PathBuf::from(path);
    }
    let system = PathBuf::from("/run/carrier/app.sock");
    let user = directories::ProjectDirs::from("", "", "carrier")
        .map(|dirs| dirs.runtime_dir().map(Path::to_owned).unwrap_or_else(|| dirs.data_dir().join("run")))
        .map(|dir| dir.join("app.sock"));
    match user {
        Some(user) if user.exists() || !system.exists() => user,
        _ => system,
    }
}

type Waiting = Arc<Mutex<HashMap<u64, (oneshot::Sender<pb::AppEvent>, Option<OwnedSemaphorePermit>)>>>;
pub(crate) type Listeners = Arc<Mutex<HashMap<String, mpsc::Sender<pb::IncomingStream>>>>;

/// What the client's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) identity: AppIdentity,
    pub(crate) socket: PathBuf,
    pub(crate) device: Did,
    max_message: usize,
    next_id: AtomicU64,
    requests: mpsc::Sender<pb::AppRequest>,
    waiting: Waiting,
    /// Set when the session has ended; no request is answered after that.
    closed: Arc<AtomicBool>,
    pub(crate) listeners: Listeners,
    in_flight: Arc<Semaphore>,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Message>>,
}

/// An app's connection to its daemon. Cheap to clone; all clones share one
/// session, which closes when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Loads (or makes) the app's key, connects to the daemon and proves
    /// the key. The ledger must show the app as registered under this
    /// daemon's device and active.
    pub async fn connect(options: ClientOptions) -> Result<Self, SdkError> {
        let dir = match options.data_dir {
            Some(dir) => dir,
            None => AppIdentity::default_dir(&options.app_name)?,
        };
        let identity = AppIdentity::load_or_create(&dir)?;
        Self::connect_as(identity, options.socket.unwrap_or_else(default_socket)).await
    }

    /// Connects with an identity already loaded.
    pub async fn connect_as(identity: AppIdentity, socket: PathBuf) -> Result<Self, SdkError> {
        let (reader, answer) = wire::connect(&socket, &identity, Purpose::Session(pb::SessionPurpose {})).await?;
        let Some(Event::Welcome(welcome)) = answer.event else {
            return Err(SdkError::Protocol(format!("expected a welcome, got {:?}", answer.event)));
        };
        let device = Did::parse(&welcome.device).map_err(|e| SdkError::Protocol(format!("welcome device: {e}")))?;
        let max_message = usize::try_from(welcome.max_message).unwrap_or(usize::MAX);
        let (stream, rest) = reader.into_parts();
        let (read, write) = stream.into_split();
        let reader = EventReader::with_rest(read, max_message.saturating_add(wire::FRAME_OVERHEAD), &rest);
        let (requests, requests_rx) = mpsc::channel(1024);
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        let waiting: Waiting = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let listeners: Listeners = Arc::default();
        tokio::spawn(write_requests(write, requests_rx, acks_rx));
        let ended =
            Ended { waiting: Arc::clone(&waiting), closed: Arc::clone(&closed), listeners: Arc::clone(&listeners) };
        tokio::spawn(read_events(reader, ended, inbox_tx, acks));
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
            inbox: tokio::sync::Mutex::new(inbox),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// This app's DID.
    pub fn did(&self) -> Did {
        self.shared.identity.did()
    }

    /// The DID of the device whose daemon this app is connected to.
    pub fn device(&self) -> Did {
        self.shared.device
    }

    /// The largest payload the daemon carries.
    pub fn max_message(&self) -> usize {
        self.shared.max_message
    }

    /// Sends `payload` to app `to` and waits for its receipt.
    pub async fn send(&self, to: &Did, payload: impl Into<Vec<u8>>) -> Result<Receipt, SdkError> {
        self.submit(to, payload).await?.await
    }

    /// Queues `payload` for app `to` and returns at once (waiting only
    /// while [`IN_FLIGHT`](self) messages are unanswered): await the
    /// returned receipt later. Messages submitted in order arrive in order.
    pub async fn submit(&self, to: &Did, payload: impl Into<Vec<u8>>) -> Result<PendingReceipt, SdkError> {
        let payload = payload.into();
        if payload.len() > self.shared.max_message {
            return Err(SdkError::TooLarge { len: payload.len(), max: self.shared.max_message });
        }
        let permit = Arc::clone(&self.shared.in_flight).acquire_owned().await.map_err(|_| closed())?;
        let send = pb::SendMessage { to: to.key_bytes(), payload };
        let answer = self.request(Request::Send(send), Some(permit)).await?;
        Ok(PendingReceipt { answer })
    }

    /// The messages sent to this app, in the order they arrived (in the
    /// order sent, between any two apps). Each was acknowledged to its
    /// sender when it reached this process; up to 4,096 wait here, and past
    /// that the daemon holds the rest (and this app's receipts) until the
    /// app reads on. Several `Messages` share one queue.
    pub fn messages(&self) -> Messages {
        Messages { shared: Arc::clone(&self.shared), pending: None }
    }

    /// Lets only `allow` message this app (default: any active app).
    pub async fn set_access(&self, allow: &AllowList) -> Result<(), SdkError> {
        let set = pb::SetAccess { messages: Some(allow_list_to_wire(allow)) };
        done(self.request(Request::SetAccess(set), None).await?.await).await
    }

    /// Accepts streams to `service` from the apps `allow` lets in.
    pub async fn listen(&self, service: &str, allow: &AllowList) -> Result<Listener, SdkError> {
        let (tx, rx) = mpsc::channel(64);
        self.shared.listeners.lock().unwrap_or_else(|p| p.into_inner()).insert(service.to_owned(), tx);
        let listen = pb::Listen { service: service.to_owned(), allow: Some(allow_list_to_wire(allow)) };
        if let Err(error) = done(self.request(Request::Listen(listen), None).await?.await).await {
            self.shared.listeners.lock().unwrap_or_else(|p| p.into_inner()).remove(service);
            return Err(error);
        }
        Ok(Listener::new(Arc::clone(&self.shared), service.to_owned(), rx))
    }

    /// Opens a byte stream to `service` of app `to`.
    pub async fn open_stream(&self, to: &Did, service: &str) -> Result<AppStream, SdkError> {
        let purpose = Purpose::OpenStream(pb::OpenStream { to: to.to_string(), service: service.to_owned() });
        AppStream::establish(&self.shared, purpose).await
    }

    async fn request(
        &self,
        request: Request,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<oneshot::Receiver<pb::AppEvent>, SdkError> {
        self.shared.request(request, permit).await
    }
}

impl Shared {
    pub(crate) async fn request(
        &self,
        request: Request,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<oneshot::Receiver<pb::AppEvent>, SdkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (tx, permit));
        // The reader sets `closed` before it drops every waiter: either it
        // dropped ours, or we see the flag.
        if self.closed.load(Ordering::SeqCst) {
            self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(closed());
        }
        self.requests.send(pb::AppRequest { id, request: Some(request) }).await.map_err(|_| closed())?;
        Ok(rx)
    }

    /// Sends a request nobody waits for (from `Drop`).
    pub(crate) fn request_detached(&self, request: Request) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.requests.try_send(pb::AppRequest { id, request: Some(request) });
    }
}

fn closed() -> SdkError {
    SdkError::Disconnected("the session with the daemon is closed".into())
}

async fn done(answer: Result<pb::AppEvent, oneshot::error::RecvError>) -> Result<(), SdkError> {
    match answer.map_err(|_| closed())?.event {
        Some(Event::Done(_)) => Ok(()),
        Some(Event::Error(error)) => Err(SdkError::Rejected(error.message)),
        other => Err(SdkError::Protocol(format!("expected done, got {other:?}"))),
    }
}

/// A sent message's receipt, to await.
#[derive(Debug)]
pub struct PendingReceipt {
    answer: oneshot::Receiver<pb::AppEvent>,
}

impl std::future::Future for PendingReceipt {
    type Output = Result<Receipt, SdkError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let event = match Pin::new(&mut self.answer).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(closed())),
            Poll::Ready(Ok(event)) => event,
        };
        Poll::Ready(match event.event {
            Some(Event::Receipt(receipt)) if receipt.outcome == pb::Outcome::Delivered as i32 => Ok(Receipt::Delivered),
            Some(Event::Receipt(receipt)) => Ok(Receipt::Failed(Failure::from_wire(receipt.outcome, receipt.detail))),
            Some(Event::Error(error)) => Err(SdkError::Rejected(error.message)),
            other => Err(SdkError::Protocol(format!("expected a receipt, got {other:?}"))),
        })
    }
}

type NextMessage = Pin<Box<dyn std::future::Future<Output = Option<Message>> + Send>>;

/// The app's incoming messages: `next().await`, or use it as a
/// `futures::Stream`.
pub struct Messages {
    shared: Arc<Shared>,
    pending: Option<NextMessage>,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages").field("app", &self.shared.identity.did()).finish()
    }
}

impl Messages {
    /// The next message; `None` once the session with the daemon is closed.
    pub async fn next(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let shared = Arc::clone(&self.shared);
        let pending =
            self.pending.get_or_insert_with(|| Box::pin(async move { shared.inbox.lock().await.recv().await }));
        let taken = match pending.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(taken) => taken,
        };
        self.pending = None;
        Poll::Ready(taken)
    }
}

impl futures_core::Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.poll_message(cx)
    }
}

/// Writes requests, acknowledgements first, flushing when nothing waits.
async fn write_requests(
    mut write: OwnedWriteHalf,
    mut requests: mpsc::Receiver<pb::AppRequest>,
    mut acks: mpsc::UnboundedReceiver<u64>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        tokio::select! {
            biased;
            Some(delivery) = acks.recv() => {
                let mut deliveries = vec![delivery];
                while let Ok(more) = acks.try_recv() {
                    deliveries.push(more);
                }
                let ack = pb::AckDeliveries { deliveries };
                wire::encode_request(&pb::AppRequest { id: 0, request: Some(Request::Ack(ack)) }, &mut buf);
            }
            Some(request) = requests.recv() => wire::encode_request(&request, &mut buf),
            else => return,
        }
        if buf.len() >= 64 * 1024 || (acks.is_empty() && requests.is_empty()) {
            if write.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
    }
}

/// What the reader clears when the session ends.
struct Ended {
    waiting: Waiting,
    closed: Arc<AtomicBool>,
    listeners: Listeners,
}

/// Routes the daemon's events until the connection ends.
async fn read_events(
    mut reader: EventReader<OwnedReadHalf>,
    ended: Ended,
    inbox: mpsc::Sender<Message>,
    acks: mpsc::UnboundedSender<u64>,
) {
    let mut dids = DidCache::new();
    while let Ok(event) = reader.read().await {
        match event.event {
            Some(Event::Message(message)) => {
                let _ = acks.send(message.delivery);
                let Some(message) = incoming(message, &mut dids) else { continue };
                if inbox.send(message).await.is_err() {
                    break;
                }
            }
            Some(Event::IncomingStream(stream)) => {
                let listener = ended.listeners.lock().unwrap_or_else(|p| p.into_inner()).get(&stream.service).cloned();
                if let Some(listener) = listener {
                    let _ = listener.try_send(stream);
                }
            }
            _ if event.id != 0 => {
                let waiter = ended.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&event.id);
                if let Some((tx, _permit)) = waiter {
                    let _ = tx.send(event);
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
    Some(Message { id, from_app, from_device, payload: message.payload, received_at })
}
