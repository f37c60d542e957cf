//! One app's messaging session: its requests in, its events out.
//!
//! ```text
//!  reader (this task): Send ─▶ Delivery::send (accepted, then the receipt, come back later)
//!                      Ack ─▶ Delivery::taken (off the inbox; the sender hears delivered)
//!                      QueryReceipts ─▶ what became of earlier messages
//!                      SetAccess / Listen / Unlisten ─▶ the app's rules
//!  writer (same task): answers, replies and stream offers first, then the
//!                      app's inbox in order, HAND_BURST at a time (at most
//!                      HANDED_WINDOW messages and HANDED_WINDOW_BYTES
//!                      unacknowledged) ─▶ app, flushed whenever nothing more is waiting
//! ```
//!
//! Control never waits behind bulk: an app that leaves its messages
//! unread still gets its stream offers, receipts and replies at once (the
//! window stops the messages, never the rest).
//!
//! A ledger update that revokes the app (or its device) ends the session.
//!
//! The reader never waits on the app's acknowledgements, so two apps
//! messaging each other flat out cannot stall each other. An app may have
//! at most [`MAX_IN_FLIGHT`] messages and [`MAX_IN_FLIGHT_BYTES`] payload
//! bytes not yet accepted; past that it is closed with an error (the SDK
//! stays under both by itself).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::messaging::{AllowList, MessageId};
use carrier_proto::pb::{self, AppErrorCode, app_event::Event, app_request::Request};
use tokio::sync::mpsc;

use super::{AppSocketError, Reader, Writer, error_event};
use crate::delivery::{Access, Delivery, Incoming, SendOptions};
use crate::framed::FramedError;
use crate::ledger::Policy;
use crate::protocols::messages::{Answer, ReceiptSink};
use crate::protocols::{Failure, outcome_of};

/// Most messages an app may have sent without a receipt yet.
pub(super) const MAX_IN_FLIGHT: usize = 65_536;
/// Most payload bytes an app may have sent without a receipt yet (the
/// welcome tells the app; the SDK stays under it by itself).
pub(super) const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

/// Messages given to the app and not acknowledged yet, at most.
const HANDED_WINDOW: usize = 4096;
/// Payload bytes given to the app and not acknowledged yet, at most (one
/// message past it may go, so a message at the size limit always can).
const HANDED_WINDOW_BYTES: usize = 8 << 20;
/// Messages handed in one go before control events are looked at again.
const HAND_BURST: usize = 64;
/// Most message ids one QueryReceipts may name.
const MAX_QUERY: usize = 4096;

/// What an app has sent and not yet had an answer for.
#[derive(Debug, Default)]
struct InFlight {
    messages: AtomicUsize,
    bytes: AtomicUsize,
    /// Request id ─▶ payload bytes, until the first answer.
    requests: Mutex<HashMap<u64, usize>>,
}

impl InFlight {
    /// Counts a send of `bytes`, or says which limit it would pass.
    fn take(&self, bytes: usize) -> Result<(), String> {
        if self.messages.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            return Err(format!("more than {MAX_IN_FLIGHT} messages without a receipt"));
        }
        if self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > MAX_IN_FLIGHT_BYTES {
            return Err(format!("more than {MAX_IN_FLIGHT_BYTES} bytes of messages without a receipt"));
        }
        Ok(())
    }

    /// The first answer to `request` came: its send no longer counts.
    fn release(&self, request: u64) {
        let Some(bytes) = self.requests.lock().unwrap_or_else(|p| p.into_inner()).remove(&request) else { return };
        self.messages.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}
/// Incoming streams queued for an app before their openers wait.
const INCOMING_QUEUE: usize = 1024;

/// Messages given to the app and not acknowledged yet: their sizes, and
/// the sum.
#[derive(Debug, Default)]
struct Unacked {
    sizes: HashMap<u64, usize>,
    bytes: usize,
}

impl Unacked {
    fn insert(&mut self, delivery: u64, len: usize) {
        if let Some(old) = self.sizes.insert(delivery, len) {
            self.bytes -= old;
        }
        self.bytes += len;
    }

    fn remove(&mut self, delivery: &u64) -> bool {
        let Some(len) = self.sizes.remove(delivery) else { return false };
        self.bytes -= len;
        true
    }

    /// Whether another message may go to the app now.
    fn open(&self) -> bool {
        self.sizes.len() < HANDED_WINDOW && self.bytes < HANDED_WINDOW_BYTES
    }
}

type Handed = Arc<Mutex<Unacked>>;

/// Serves `app`'s session until it closes.
pub(super) async fn run(
    delivery: Arc<Delivery>,
    app: Did,
    key: SigningPublicKey,
    mut reader: Reader,
    mut writer: Writer,
) -> Result<(), AppSocketError> {
    let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
    let Some(handle) = delivery.sessions().register(app, incoming_tx) else {
        let message = format!("{app} already has a session on this daemon");
        writer.send(&error_event(0, AppErrorCode::AlreadyConnected, message.clone())).await?;
        return Err(AppSocketError::BadRequest(message));
    };
    let welcome = pb::AppWelcome {
        app: app.to_string(),
        device: delivery.device().to_string(),
        max_message: delivery.max_message() as u64,
        max_in_flight_bytes: MAX_IN_FLIGHT_BYTES as u64,
        default_ttl_ms: delivery.default_ttl().as_millis() as u64,
    };
    writer.send(&pb::AppEvent { id: 0, event: Some(Event::Welcome(welcome)) }).await?;
    tracing::debug!("session open");
    let (receipts_tx, receipts) = mpsc::unbounded_channel();
    let (replies_tx, replies) = mpsc::unbounded_channel();
    let handed: Handed = Arc::default();
    let in_flight = Arc::new(InFlight::default());
    let inbox = delivery.inbox_wake(app);
    let (last_handed, last_handed_rx) = tokio::sync::watch::channel(0u64);
    // The writer runs beside the reader in this same task.
    let events =
        Events { delivery: Arc::clone(&delivery), app, access: Arc::clone(&handle.access), inbox: Arc::clone(&inbox) };
    let mut writing = std::pin::pin!(write_events(
        writer,
        events,
        receipts,
        replies,
        incoming,
        Arc::clone(&handed),
        Arc::clone(&in_flight),
        last_handed
    ));
    let mut ledger_updates = delivery.ledger().subscribe();
    let reading = async {
        loop {
            let read = tokio::select! {
                read = reader.read::<pb::AppRequest>() => read,
                _ = ledger_updates.recv() => {
                    // A revoked app (or an app of a revoked device) loses its
                    // session, and so does one whose key was rotated out.
                    // Missed updates (a lagging feed) end up here too.
                    let why = match delivery.ledger().app_key(&app, &delivery.device()) {
                        Ok(current) if current == key => continue,
                        Ok(_) => "its key was rotated on the ledger",
                        Err(_) => "it was revoked on the ledger",
                    };
                    let message = format!("{app}: {why}; closing its session");
                    let _ = replies_tx.send(error_event(0, AppErrorCode::Unauthenticated, message.clone()));
                    return Err(AppSocketError::Unauthenticated(message));
                }
            };
            let request = match read {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(()),
                Err(error) => {
                    let message = format!("{error}; closing this connection");
                    let _ = replies_tx.send(error_event(0, AppErrorCode::BadRequest, message));
                    return Err(error.into());
                }
            };
            let id = request.id;
            match request.request {
                Some(Request::Send(send)) => {
                    let bytes = send.payload.len();
                    if let Err(message) = in_flight.take(bytes) {
                        let _ = replies_tx.send(error_event(id, AppErrorCode::BadRequest, message.clone()));
                        return Err(AppSocketError::BadRequest(message));
                    }
                    in_flight.requests.lock().unwrap_or_else(|p| p.into_inner()).insert(id, bytes);
                    let sink = ReceiptSink { tx: receipts_tx.clone(), request: id };
                    let ttl = (send.ttl_ms > 0).then(|| Duration::from_millis(send.ttl_ms));
                    let options = SendOptions { ttl, key: send.key };
                    match delivery.ledger().find_did(&send.to) {
                        Some(to) => delivery.send(app, to, send.payload, options, sink),
                        None => sink.resolve(
                            None,
                            Err(Failure::new(pb::Outcome::UnknownRecipient, "the ledger has no app with that key")),
                        ),
                    }
                }
                Some(Request::Ack(ack)) => {
                    let taken: Vec<u64> = {
                        let mut handed = handed.lock().unwrap_or_else(|p| p.into_inner());
                        ack.deliveries.into_iter().filter(|d| handed.remove(d)).collect()
                    };
                    // Room in the window: the writer may hand more.
                    inbox.notify_one();
                    delivery.taken(app, taken);
                }
                Some(Request::QueryReceipts(query)) if query.message_ids.len() > MAX_QUERY => {
                    let message = format!("at most {MAX_QUERY} message ids per query");
                    let _ = replies_tx.send(error_event(id, AppErrorCode::BadRequest, message));
                }
                Some(Request::QueryReceipts(query)) => {
                    let states = query
                        .message_ids
                        .iter()
                        .map(|bytes| match MessageId::from_bytes(bytes) {
                            Some(message_id) => delivery.receipt_state(&app, &message_id),
                            None => pb::ReceiptState { message_id: bytes.clone(), ..Default::default() },
                        })
                        .collect();
                    let event = Event::ReceiptStates(pb::ReceiptStates { states });
                    let _ = replies_tx.send(pb::AppEvent { id, event: Some(event) });
                }
                Some(Request::SetAccess(set)) => {
                    let reply = match allow_list(set.messages) {
                        Ok(list) => {
                            write_access(&handle.access, |a| a.messages = list);
                            done(id)
                        }
                        Err(message) => error_event(id, AppErrorCode::BadRequest, message),
                    };
                    let _ = replies_tx.send(reply);
                }
                Some(Request::Listen(listen)) => {
                    let reply = match allow_list(listen.allow) {
                        Ok(_) if listen.service.is_empty() || listen.service.len() > 255 => {
                            error_event(id, AppErrorCode::BadRequest, "a service name is 1 to 255 bytes".into())
                        }
                        Ok(list) => {
                            write_access(&handle.access, |a| {
                                a.services.insert(listen.service, list);
                            });
                            done(id)
                        }
                        Err(message) => error_event(id, AppErrorCode::BadRequest, message),
                    };
                    let _ = replies_tx.send(reply);
                }
                Some(Request::Unlisten(unlisten)) => {
                    write_access(&handle.access, |a| {
                        a.services.remove(&unlisten.service);
                    });
                    let _ = replies_tx.send(done(id));
                }
                Some(Request::Hello(_)) | None => {
                    let message =
                        "a session takes send, ack, query_receipts, set_access, listen and unlisten".to_string();
                    let _ = replies_tx.send(error_event(id, AppErrorCode::BadRequest, message.clone()));
                    return Err(AppSocketError::BadRequest(message));
                }
            }
        }
    };
    let (ended, written) = {
        let mut reading = std::pin::pin!(reading);
        tokio::select! {
            ended = &mut reading => (ended, false),
            // The app went away or stopped reading: the session is over.
            written = &mut writing => (written.map_err(AppSocketError::from), true),
        }
    };
    delivery.sessions().unregister(&app, handle.id);
    delivery.session_ended(&app, *last_handed_rx.borrow());
    // The writer sends what replies are left (an error event) and ends.
    drop((handle, receipts_tx, replies_tx));
    if !written {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut writing).await;
    }
    tracing::debug!(?ended, "session closed");
    ended
}

fn done(id: u64) -> pb::AppEvent {
    pb::AppEvent { id, event: Some(Event::Done(pb::AppDone {})) }
}

fn write_access(access: &std::sync::RwLock<Access>, change: impl FnOnce(&mut Access)) {
    let mut access = access.write().unwrap_or_else(|p| p.into_inner());
    change(&mut access);
}

/// An allow list from the wire; none means any active app.
fn allow_list(list: Option<pb::AllowList>) -> Result<AllowList, String> {
    let Some(list) = list else { return Ok(AllowList::any_active()) };
    let dids = list
        .dids
        .iter()
        .map(|d| Did::parse(d).map_err(|e| format!("allow list: {d:?}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(AllowList { any_active: list.any_active, dids })
}

/// What the writer needs to hand the app its inbox.
struct Events {
    delivery: Arc<Delivery>,
    app: Did,
    access: Arc<std::sync::RwLock<Access>>,
    inbox: Arc<tokio::sync::Notify>,
}

#[allow(clippy::too_many_arguments)]
async fn write_events(
    mut writer: Writer,
    events: Events,
    mut answers: mpsc::UnboundedReceiver<Answer>,
    mut replies: mpsc::UnboundedReceiver<pb::AppEvent>,
    mut incoming: mpsc::Receiver<Incoming>,
    handed: Handed,
    in_flight: Arc<InFlight>,
    last_handed: tokio::sync::watch::Sender<u64>,
) -> Result<(), FramedError> {
    let mut cursor = 0u64;
    // Whether the inbox may have something to hand (woken on new messages
    // and on acknowledgements).
    let mut look = true;
    loop {
        // Control first: whatever is waiting now goes before any message.
        while let Ok(event) = replies.try_recv() {
            writer.feed(&event).await?;
        }
        while let Ok(answer) = answers.try_recv() {
            writer.feed(&answer_event(answer, &in_flight)).await?;
        }
        while let Ok(stream) = incoming.try_recv() {
            writer.feed(&incoming_event(stream)).await?;
        }
        // Then a burst of the inbox, in order, within the window, under
        // the access rules as they are now.
        if look {
            let access = events.access.read().unwrap_or_else(|p| p.into_inner()).clone();
            let mut burst = 0;
            while burst < HAND_BURST && window_open(&handed) {
                let Some(message) = events.delivery.next_incoming(&events.app, cursor, &access) else {
                    look = false;
                    break;
                };
                let Incoming::Message { delivery, payload, .. } = &message else { break };
                let (delivery, len) = (*delivery, payload.len());
                // On disk first: after a crash it comes again, marked.
                if !events.delivery.mark_handed(events.app, delivery).await {
                    tracing::warn!(delivery, "cannot record a hand-over; holding the app's messages");
                    look = false;
                    break;
                }
                cursor = delivery;
                handed.lock().unwrap_or_else(|p| p.into_inner()).insert(cursor, len);
                last_handed.send_replace(cursor);
                writer.feed(&incoming_event(message)).await?;
                burst += 1;
            }
            if burst == HAND_BURST {
                // More may wait: look at control, then go on.
                writer.flush().await?;
                continue;
            }
        }
        if replies.is_empty() && answers.is_empty() && incoming.is_empty() {
            writer.flush().await?;
        }
        let event = tokio::select! {
            biased;
            reply = replies.recv() => match reply {
                Some(reply) => reply,
                // The reader is done: so is the session.
                None => return writer.flush().await,
            },
            Some(answer) = answers.recv() => answer_event(answer, &in_flight),
            Some(stream) = incoming.recv() => incoming_event(stream),
            _ = events.inbox.notified() => {
                look = true;
                continue;
            }
        };
        writer.feed(&event).await?;
    }
}

/// Whether the app may be handed another message now.
fn window_open(handed: &Handed) -> bool {
    handed.lock().unwrap_or_else(|p| p.into_inner()).open()
}

fn incoming_event(incoming: Incoming) -> pb::AppEvent {
    let event = match incoming {
        Incoming::Message { delivery, id, from_app, from_device, payload, received_at_ms, redelivered } => {
            Event::Message(pb::IncomingMessage {
                delivery,
                message_id: id.to_bytes().to_vec(),
                from_app: from_app.key_bytes(),
                from_device: from_device.key_bytes(),
                payload,
                received_at_ms,
                redelivered,
            })
        }
        Incoming::Stream { token, from_app, from_device, service } => Event::IncomingStream(pb::IncomingStream {
            token,
            from_app: from_app.to_string(),
            from_device: from_device.to_string(),
            service,
        }),
    };
    pb::AppEvent { id: 0, event: Some(event) }
}

fn answer_event(answer: Answer, in_flight: &InFlight) -> pb::AppEvent {
    match answer {
        Answer::Accepted { request, id, duplicate } => {
            in_flight.release(request);
            let accepted = pb::MessageAccepted { message_id: id.to_bytes().to_vec(), duplicate };
            pb::AppEvent { id: request, event: Some(Event::Accepted(accepted)) }
        }
        Answer::Stored { request, id, copies } => {
            let stored = pb::MessageStored { message_id: id.to_bytes().to_vec(), copies };
            pb::AppEvent { id: request, event: Some(Event::Stored(stored)) }
        }
        Answer::Receipt { request, id, verdict } => {
            in_flight.release(request);
            let (outcome, detail) = outcome_of(verdict);
            let message_id = id.map(|id| id.to_bytes().to_vec()).unwrap_or_default();
            pb::AppEvent {
                id: request,
                event: Some(Event::Receipt(pb::MessageReceipt { outcome, detail, message_id })),
            }
        }
    }
}
