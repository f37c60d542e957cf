//! One app's messaging session: its requests in, its events out.
//!
//! ```text
//!  reader (this task): Send ─▶ Delivery::send (receipt comes back later)
//!                      Ack ─▶ the sender's verdict: delivered
//!                      SetAccess / Listen / Unlisten ─▶ the app's rules
//!  writer (own task):  receipts, replies, incoming messages and streams ─▶ app,
//!                      flushed whenever nothing more is waiting
//! ```
//!
//! A ledger update that revokes the app (or its device) ends the session.
//!
//! The reader never waits on the app's acknowledgements, so two apps
//! messaging each other flat out cannot stall each other. An app may have
//! at most [`MAX_IN_FLIGHT`] messages and [`MAX_IN_FLIGHT_BYTES`] payload
//! bytes without receipt; past that it is closed with an error (the SDK
//! stays under both by itself).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::messaging::AllowList;
use carrier_proto::pb::{self, AppErrorCode, app_event::Event, app_request::Request};
use tokio::sync::{mpsc, oneshot};

use super::{AppSocketError, Reader, Writer, error_event};
use crate::delivery::{Access, Delivery, Incoming};
use crate::framed::FramedError;
use crate::ledger::Policy;
use crate::protocols::messages::{Receipt, ReceiptSink};
use crate::protocols::{Failure, Verdict, outcome_of};

/// Most messages an app may have sent without a receipt yet.
pub(super) const MAX_IN_FLIGHT: usize = 65_536;
/// Most payload bytes an app may have sent without a receipt yet (the
/// welcome tells the app; the SDK stays under it by itself).
pub(super) const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

/// What an app has sent and not yet had a receipt for.
#[derive(Debug, Default)]
struct InFlight {
    messages: AtomicUsize,
    bytes: AtomicUsize,
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

    /// A receipt came for a send of `bytes`.
    fn release(&self, bytes: usize) {
        self.messages.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}
/// Incoming messages and streams queued for an app before senders wait.
const INCOMING_QUEUE: usize = 1024;

type Acks = Arc<Mutex<HashMap<u64, oneshot::Sender<Verdict>>>>;

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
    };
    writer.send(&pb::AppEvent { id: 0, event: Some(Event::Welcome(welcome)) }).await?;
    tracing::debug!("session open");
    let (receipts_tx, receipts) = mpsc::unbounded_channel();
    let (replies_tx, replies) = mpsc::unbounded_channel();
    let acks: Acks = Arc::default();
    let in_flight = Arc::new(InFlight::default());
    // The writer runs beside the reader in this same task.
    let mut writing =
        std::pin::pin!(write_events(writer, receipts, replies, incoming, Arc::clone(&acks), Arc::clone(&in_flight)));
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
                    let sink = ReceiptSink { tx: receipts_tx.clone(), request: id, bytes };
                    match delivery.ledger().find_did(&send.to) {
                        Some(to) => delivery.send(app, to, send.payload, sink).await,
                        None => sink.resolve(
                            None,
                            Err(Failure::new(pb::Outcome::UnknownRecipient, "the ledger has no app with that key")),
                        ),
                    }
                }
                Some(Request::Ack(ack)) => {
                    let mut acks = acks.lock().unwrap_or_else(|p| p.into_inner());
                    for delivery in ack.deliveries {
                        if let Some(verdict) = acks.remove(&delivery) {
                            let _ = verdict.send(Ok(()));
                        }
                    }
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
                    let message = "a session takes send, ack, set_access, listen and unlisten".to_string();
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

async fn write_events(
    mut writer: Writer,
    mut receipts: mpsc::UnboundedReceiver<Receipt>,
    mut replies: mpsc::UnboundedReceiver<pb::AppEvent>,
    mut incoming: mpsc::Receiver<Incoming>,
    acks: Acks,
    in_flight: Arc<InFlight>,
) -> Result<(), FramedError> {
    let mut next_delivery = 0u64;
    loop {
        let event = tokio::select! {
            biased;
            reply = replies.recv() => match reply {
                Some(reply) => reply,
                // The reader is done: so is the session.
                None => return writer.flush().await,
            },
            Some(receipt) = receipts.recv() => {
                in_flight.release(receipt.bytes);
                receipt_event(receipt)
            }
            Some(incoming) = incoming.recv() => match incoming {
                Incoming::Message { id, from_app, from_device, payload, received_at_ms, verdict } => {
                    next_delivery += 1;
                    acks.lock().unwrap_or_else(|p| p.into_inner()).insert(next_delivery, verdict);
                    let message = pb::IncomingMessage {
                        delivery: next_delivery,
                        message_id: id.to_bytes().to_vec(),
                        from_app: from_app.key_bytes(),
                        from_device: from_device.key_bytes(),
                        payload,
                        received_at_ms,
                    };
                    pb::AppEvent { id: 0, event: Some(Event::Message(message)) }
                }
                Incoming::Stream { token, from_app, from_device, service } => {
                    let stream = pb::IncomingStream {
                        token,
                        from_app: from_app.to_string(),
                        from_device: from_device.to_string(),
                        service,
                    };
                    pb::AppEvent { id: 0, event: Some(Event::IncomingStream(stream)) }
                }
            },
        };
        writer.feed(&event).await?;
        if replies.is_empty() && receipts.is_empty() && incoming.is_empty() {
            writer.flush().await?;
        }
    }
}

fn receipt_event(receipt: Receipt) -> pb::AppEvent {
    let (outcome, detail) = outcome_of(receipt.verdict);
    let message_id = receipt.message_id.map(|id| id.to_bytes().to_vec()).unwrap_or_default();
    pb::AppEvent {
        id: receipt.request,
        event: Some(Event::Receipt(pb::MessageReceipt { outcome, detail, message_id })),
    }
}
