//! Which apps are connected to this daemon now, what each lets in, and the
//! incoming streams waiting for their app to take them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use carrier_proto::identity::Did;
use carrier_proto::messaging::{AllowList, MessageId};
use tokio::sync::{mpsc, oneshot};

use crate::protocols::app_stream::AppEnd;

/// What a session's writer hands its app.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A message from the app's inbox, to acknowledge by `delivery`.
    Message {
        delivery: u64,
        id: MessageId,
        from_app: Did,
        from_device: Did,
        payload: Vec<u8>,
        received_at_ms: u64,
        redelivered: bool,
    },
    /// A stream for one of the app's services, to take with `token`.
    Stream { token: u64, from_app: Did, from_device: Did, service: String },
}

/// Who may reach one app.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    /// Who may message it.
    pub messages: AllowList,
    /// Its services and who may open each.
    pub services: HashMap<String, AllowList>,
}

/// A connected app's session, as others reach it.
#[derive(Debug, Clone)]
pub(crate) struct SessionHandle {
    /// Tells this session from a later one of the same app.
    pub id: u64,
    pub incoming: mpsc::Sender<Incoming>,
    pub access: Arc<RwLock<Access>>,
}

/// A stream announced to an app, claimed by the app's new connection:
/// who opened it, and where the app's end goes once told.
#[derive(Debug)]
pub(crate) struct StreamClaim {
    /// The app that opened the stream.
    pub from_app: Did,
    /// Its device.
    pub from_device: Did,
    /// The service it was opened to.
    pub service: String,
    /// Takes the app's end of the stream.
    pub deliver: oneshot::Sender<AppEnd>,
}

/// A stream waiting for its app: whose it is, and its claim.
#[derive(Debug)]
struct Pending {
    app: Did,
    claim: StreamClaim,
}

/// Connected apps and pending streams.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    sessions: Mutex<HashMap<Did, SessionHandle>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
}

impl Sessions {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers `app`'s session; `None` if it already has one.
    pub(crate) fn register(&self, app: Did, incoming: mpsc::Sender<Incoming>) -> Option<SessionHandle> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.contains_key(&app) {
            return None;
        }
        let handle = SessionHandle { id: self.next_id(), incoming, access: Arc::default() };
        sessions.insert(app, handle.clone());
        Some(handle)
    }

    /// Removes `app`'s session `id` (not a newer one).
    pub(crate) fn unregister(&self, app: &Did, id: u64) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.get(app).is_some_and(|s| s.id == id) {
            sessions.remove(app);
        }
    }

    /// The apps with a session, sorted.
    pub(crate) fn connected(&self) -> Vec<Did> {
        let mut apps: Vec<Did> = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        apps.sort();
        apps
    }

    /// The session of `app`, if it is connected.
    pub(crate) fn session(&self, app: &Did) -> Option<SessionHandle> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(app).cloned()
    }

    /// A token for a stream from `from_app` (on `from_device`) to `service`
    /// of `app`, and where the app's end will arrive.
    pub(crate) fn expect_stream(
        &self,
        app: Did,
        from_app: Did,
        from_device: Did,
        service: String,
    ) -> (u64, oneshot::Receiver<AppEnd>) {
        let (deliver, rx) = oneshot::channel();
        let token = self.next_id();
        let claim = StreamClaim { from_app, from_device, service, deliver };
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(token, Pending { app, claim });
        (token, rx)
    }

    /// Forgets a token nobody took.
    pub(crate) fn forget_stream(&self, token: u64) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&token);
    }

    /// The stream announced to `app` with `token`; `None` if the token is
    /// not `app`'s or has expired.
    pub(crate) fn claim_stream(&self, app: &Did, token: u64) -> Option<StreamClaim> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.remove(&token) {
            Some(entry) if entry.app == *app => Some(entry.claim),
            Some(other) => {
                pending.insert(token, other);
                None
            }
            None => None,
        }
    }
}
