//! [`Client`]: an app's session with its daemon, as the app uses it
//! (the session's tasks and shared state are in `session.rs`).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use carrier_proto::identity::Did;
use carrier_proto::pb::{self, app_event::Event, app_hello::Purpose, app_request::Request};
use tokio::sync::{mpsc, oneshot};

use crate::message::{AllowList, Failure, Message, MessageId, Receipt, ReceiptState, SendOptions, allow_list_to_wire};
use crate::session::{Shared, closed};
use crate::stream::{AppStream, Listener};
use crate::{AppIdentity, SdkError, wire};

/// Environment variable naming the daemon's app socket.
pub const SOCKET_ENV: &str = "CARRIER_APP_SOCKET";

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
        Ok(Self { shared: Shared::start(identity, socket, reader, welcome)? })
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
    /// while 4,096 messages are not yet accepted by the daemon): await the
    /// returned receipt later. Messages submitted in order arrive in order.
    pub async fn submit(&self, to: &Did, payload: impl Into<Vec<u8>>) -> Result<PendingReceipt, SdkError> {
        self.submit_with(to, payload, SendOptions::default()).await
    }

    /// [`submit`](Self::submit) with a time to live or an idempotency key.
    pub async fn submit_with(
        &self,
        to: &Did,
        payload: impl Into<Vec<u8>>,
        options: SendOptions,
    ) -> Result<PendingReceipt, SdkError> {
        let payload = payload.into();
        if payload.len() > self.shared.max_message {
            return Err(SdkError::TooLarge { len: payload.len(), max: self.shared.max_message });
        }
        let permit = self.shared.send_permit(payload.len()).await?;
        let ttl_ms = options.ttl.map_or(0, |ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let send = pb::SendMessage { to: to.key_bytes(), payload, ttl_ms, key: options.key.unwrap_or_default() };
        let (accepted_tx, accepted) = oneshot::channel();
        let (stored_tx, stored) = oneshot::channel();
        let answer = self.shared.request_send(Request::Send(send), permit, accepted_tx, stored_tx).await?;
        Ok(PendingReceipt { accepted: Some(accepted), id: None, stored: Some(stored), answer })
    }

    /// What became of messages this app sent, in this session or an
    /// earlier one (receipts are kept for 7 days), by id.
    pub async fn receipt_states(&self, ids: &[MessageId]) -> Result<Vec<(MessageId, ReceiptState)>, SdkError> {
        let mut states = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(4096) {
            let query = pb::QueryReceipts { message_ids: chunk.iter().map(|id| id.to_bytes().to_vec()).collect() };
            let answer = self.request(Request::QueryReceipts(query)).await?.await.map_err(|_| closed())?;
            let answered = match answer.event {
                Some(Event::ReceiptStates(answered)) => answered,
                Some(Event::Error(error)) => return Err(SdkError::Rejected(error.message)),
                other => return Err(SdkError::Protocol(format!("expected receipt states, got {other:?}"))),
            };
            for (id, state) in chunk.iter().zip(answered.states) {
                use pb::receipt_state::State;
                let state = match State::try_from(state.state) {
                    Ok(State::Pending) => ReceiptState::Pending,
                    Ok(State::Stored) => ReceiptState::Stored,
                    Ok(State::Final) => ReceiptState::Final(receipt_of(state.outcome, state.detail)),
                    Ok(State::Unknown) | Err(_) => ReceiptState::Unknown,
                };
                states.push((*id, state));
            }
        }
        Ok(states)
    }

    /// The messages sent to this app, in the order they arrived (in the
    /// order sent, between any two apps). Each is acknowledged to its
    /// sender when it reaches this process while fewer than 4,096 wait
    /// here, and past that when the app takes it; the daemon holds the
    /// rest on disk (it hands over at most 4,096, and 8 MiB, not yet
    /// acknowledged) until the app reads on. Stream offers and receipts
    /// never wait behind them. Several `Messages` share one queue.
    pub fn messages(&self) -> Messages {
        Messages { shared: Arc::clone(&self.shared), pending: None }
    }

    /// Lets only `allow` message this app (default: any active app).
    pub async fn set_access(&self, allow: &AllowList) -> Result<(), SdkError> {
        let set = pb::SetAccess { messages: Some(allow_list_to_wire(allow)) };
        done(self.request(Request::SetAccess(set)).await?.await).await
    }

    /// Accepts streams to `service` from the apps `allow` lets in.
    pub async fn listen(&self, service: &str, allow: &AllowList) -> Result<Listener, SdkError> {
        let (tx, rx) = mpsc::channel(64);
        self.shared.listeners.lock().unwrap_or_else(|p| p.into_inner()).insert(service.to_owned(), tx);
        let listen = pb::Listen { service: service.to_owned(), allow: Some(allow_list_to_wire(allow)) };
        if let Err(error) = done(self.request(Request::Listen(listen)).await?.await).await {
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

    async fn request(&self, request: Request) -> Result<oneshot::Receiver<pb::AppEvent>, SdkError> {
        self.shared.request(request).await
    }
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
    accepted: Option<oneshot::Receiver<pb::MessageAccepted>>,
    id: Option<MessageId>,
    stored: Option<oneshot::Receiver<u32>>,
    answer: oneshot::Receiver<pb::AppEvent>,
}

impl PendingReceipt {
    /// Waits until the daemon has the message on disk, and gives its id
    /// (to ask for its receipt later, in another session); `None` if the
    /// daemon refused it at once (the receipt says why).
    pub async fn accepted(&mut self) -> Result<Option<MessageId>, SdkError> {
        if let Some(accepted) = self.accepted.take() {
            // Dropped unanswered: refused before acceptance, or the session ended.
            if let Ok(accepted) = accepted.await {
                self.id = MessageId::from_bytes(&accepted.message_id);
            }
        }
        Ok(self.id)
    }

    /// Waits until the message is sealed on mailbox nodes (its recipient's
    /// device is offline) and gives how many hold it; `None` if its receipt
    /// came first (await it: delivered, or why not). The receipt follows
    /// once the recipient has collected it.
    pub async fn stored(&mut self) -> Result<Option<u32>, SdkError> {
        match self.stored.take() {
            Some(stored) => Ok(stored.await.ok()),
            None => Ok(None),
        }
    }
}

fn receipt_of(outcome: i32, detail: String) -> Receipt {
    if outcome == pb::Outcome::Delivered as i32 {
        Receipt::Delivered
    } else {
        Receipt::Failed(Failure::from_wire(outcome, detail))
    }
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
            Some(Event::Receipt(receipt)) => Ok(receipt_of(receipt.outcome, receipt.detail)),
            Some(Event::Error(error)) => Err(SdkError::Rejected(error.message)),
            other => Err(SdkError::Protocol(format!("expected a receipt, got {other:?}"))),
        })
    }
}

type NextMessage = Pin<Box<dyn std::future::Future<Output = Option<crate::session::Waiting>> + Send>>;

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
        Poll::Ready(taken.map(|(delivery, message)| {
            self.shared.taken(delivery);
            message
        }))
    }
}

impl futures_core::Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.poll_message(cx)
    }
}
