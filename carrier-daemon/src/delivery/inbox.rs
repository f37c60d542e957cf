//! The receiving side's rules, for messages and streams alike, whether they
//! came over a link or from an app on this same device: who the sender and
//! recipient are on the ledger, the size limit, at most once, the
//! recipient's allow lists, and handing over to the recipient's session.

use carrier_proto::identity::Did;
use carrier_proto::messaging::MessageId;
use carrier_proto::pb::{self, Outcome};
use tokio::sync::oneshot;

use super::{Delivery, Incoming};
use crate::ledger::{Denial, Party, Policy, Refused};
use crate::protocols::app_stream::{ACCEPT_TIMEOUT, AppEnd, StreamAcceptor};
use crate::protocols::messages::Inbox;
use crate::protocols::{Failure, Verdict};

impl Delivery {
    /// Checks `to_app` is ours and active, and `from_app` is an active app
    /// of `from_device` (the device at the other end of the link, or us).
    fn check_parties(&self, from_device: Did, from_app: &Did, to_app: &Did) -> Result<(), Failure> {
        self.ledger.may_deliver(&from_device, from_app, to_app, &self.device).map_err(|refused| {
            let detail = refused.to_string();
            match refused {
                Refused { party: Party::Sender, .. } => Failure::new(
                    Outcome::Refused,
                    format!("the sender is not an active app of {from_device}: {detail}"),
                ),
                Refused { denial: Denial::Revoked(..), .. } => {
                    Failure::new(Outcome::Revoked, format!("the recipient {to_app} is revoked"))
                }
                Refused { .. } => Failure::new(
                    Outcome::UnknownRecipient,
                    format!("{to_app} is not an app of {}: {detail}", self.device),
                ),
            }
        })
    }

    /// Offers a message to local app `to_app`. On success the receiver
    /// answers once the app has taken it (or has gone).
    pub(crate) async fn offer_message(
        &self,
        from_device: Did,
        from_app: Did,
        to_app: Did,
        id: MessageId,
        payload: Vec<u8>,
    ) -> Result<oneshot::Receiver<Verdict>, Failure> {
        if payload.len() > self.config.max_message {
            let detail = format!(
                "message of {} bytes is over this daemon's limit of {}",
                payload.len(),
                self.config.max_message
            );
            return Err(Failure::new(Outcome::TooLarge, detail));
        }
        self.check_parties(from_device, &from_app, &to_app)?;
        let session = self
            .sessions
            .session(&to_app)
            .ok_or_else(|| Failure::new(Outcome::AppNotRunning, format!("{to_app} is not connected to its daemon")))?;
        let permitted = session.access.read().map(|a| a.messages.permits(&from_app, true)).unwrap_or(false);
        if !permitted {
            return Err(Failure::new(Outcome::Refused, format!("{to_app} does not take messages from {from_app}")));
        }
        if !self.replay.lock().unwrap_or_else(|p| p.into_inner()).admit(from_app, to_app, id) {
            return Err(Failure::new(Outcome::Refused, format!("message {id} was already delivered or is stale")));
        }
        let (verdict, taken) = oneshot::channel();
        let incoming = Incoming::Message { id, from_app, from_device, payload, received_at_ms: now_ms(), verdict };
        session
            .incoming
            .send(incoming)
            .await
            .map_err(|_| Failure::new(Outcome::AppNotRunning, format!("{to_app} disconnected")))?;
        Ok(taken)
    }
}

impl Inbox for Delivery {
    async fn offer(&self, from: Did, envelope: pb::Envelope) -> Result<oneshot::Receiver<Verdict>, Failure> {
        let bad = |what: &str| Failure::new(Outcome::Refused, format!("malformed envelope: {what}"));
        let sender =
            self.ledger.find_did(&envelope.from_app).ok_or_else(|| bad("the sending app is not on the ledger"))?;
        let recipient = self
            .ledger
            .find_did(&envelope.to_app)
            .ok_or_else(|| Failure::new(Outcome::UnknownRecipient, "the ledger has no app with that key"))?;
        let epoch: [u8; 16] = envelope.epoch.as_slice().try_into().map_err(|_| bad("epoch is not 16 bytes"))?;
        let id = MessageId { epoch, seq: envelope.seq };
        self.offer_message(from, sender, recipient, id, envelope.payload).await
    }
}

impl StreamAcceptor for Delivery {
    /// Offers a stream to `service` of local app `to_app`, and waits (up to
    /// [`ACCEPT_TIMEOUT`]) for the app to take it.
    async fn offer_stream(
        &self,
        from_device: Did,
        from_app: Did,
        to_app: Did,
        service: String,
    ) -> Result<AppEnd, Failure> {
        self.check_parties(from_device, &from_app, &to_app)?;
        let session = self
            .sessions
            .session(&to_app)
            .ok_or_else(|| Failure::new(Outcome::AppNotRunning, format!("{to_app} is not connected to its daemon")))?;
        let permitted =
            session.access.read().ok().and_then(|a| a.services.get(&service).map(|l| l.permits(&from_app, true)));
        match permitted {
            None => {
                let detail = format!("{to_app} does not listen on service {service:?}");
                return Err(Failure::new(Outcome::AppNotRunning, detail));
            }
            Some(false) => {
                let detail = format!("{to_app} does not let {from_app} open service {service:?}");
                return Err(Failure::new(Outcome::Refused, detail));
            }
            Some(true) => {}
        }
        let (token, accepted) = self.sessions.expect_stream(to_app, from_app, from_device, service.clone());
        let announce = Incoming::Stream { token, from_app, from_device, service };
        if session.incoming.send(announce).await.is_err() {
            self.sessions.forget_stream(token);
            return Err(Failure::new(Outcome::AppNotRunning, format!("{to_app} disconnected")));
        }
        match tokio::time::timeout(ACCEPT_TIMEOUT, accepted).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(_)) | Err(_) => {
                self.sessions.forget_stream(token);
                let detail = format!("{to_app} did not take the stream within {}s", ACCEPT_TIMEOUT.as_secs());
                Err(Failure::new(Outcome::AppNotRunning, detail))
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
