//! The receiving side's rules, for messages and streams alike, whether they
//! came over a link or from an app on this same device: who the sender and
//! recipient are on the ledger, the size limit, at most once, the
//! recipient's allow lists, and handing over to the recipient's session.

use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::ledger::Subject;
use carrier_proto::messaging::MessageId;
use carrier_proto::pb::Outcome;
use tokio::sync::oneshot;

use super::{Failure, Messaging, Verdict, now_ms};
use crate::apps::{AcceptedConnection, Incoming};

/// How long a listening app has to take an incoming stream.
pub(crate) const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

impl Messaging {
    /// Checks `to_app` is ours and active, and `from_app` is an active app
    /// of `from_device` (the device at the other end of the link, or us).
    fn check_parties(&self, from_device: Did, from_app: &Did, to_app: &Did) -> Result<(), Failure> {
        let me = self.device();
        self.ctx.ledger.read(|l| {
            let recipient = l
                .resolve(to_app)
                .ok_or_else(|| Failure::new(Outcome::UnknownRecipient, format!("the ledger has no app {to_app}")))?;
            match &recipient.record.subject {
                Subject::App { device, .. } if *device == me => {}
                _ => {
                    return Err(Failure::new(Outcome::UnknownRecipient, format!("{to_app} is not an app of {me}")));
                }
            }
            if !recipient.is_active() {
                return Err(Failure::new(Outcome::Revoked, format!("the recipient {to_app} is revoked")));
            }
            let sender = l.resolve(from_app);
            let hosted = sender
                .as_ref()
                .is_some_and(|s| matches!(&s.record.subject, Subject::App { device, .. } if *device == from_device));
            if !hosted {
                let detail = format!("{from_app} is not an app of the sending device {from_device}");
                return Err(Failure::new(Outcome::Refused, detail));
            }
            if !sender.is_some_and(|s| s.is_active()) {
                return Err(Failure::new(Outcome::Refused, format!("the sender {from_app} is revoked")));
            }
            Ok(())
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
            .apps
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

    /// Offers a stream to `service` of local app `to_app`, and waits (up to
    /// [`ACCEPT_TIMEOUT`]) for the app to take it.
    pub(crate) async fn offer_stream(
        &self,
        from_device: Did,
        from_app: Did,
        to_app: Did,
        service: String,
    ) -> Result<AcceptedConnection, Failure> {
        self.check_parties(from_device, &from_app, &to_app)?;
        let session = self
            .apps
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
        let (token, accepted) = self.apps.expect_stream(to_app);
        let announce = Incoming::Stream { token, from_app, from_device, service };
        if session.incoming.send(announce).await.is_err() {
            self.apps.forget_stream(token);
            return Err(Failure::new(Outcome::AppNotRunning, format!("{to_app} disconnected")));
        }
        match tokio::time::timeout(ACCEPT_TIMEOUT, accepted).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(_)) | Err(_) => {
                self.apps.forget_stream(token);
                let detail = format!("{to_app} did not take the stream within {}s", ACCEPT_TIMEOUT.as_secs());
                Err(Failure::new(Outcome::AppNotRunning, detail))
            }
        }
    }
}

/// What became of an offered message.
pub(crate) async fn await_verdict(taken: oneshot::Receiver<Verdict>) -> Verdict {
    taken.await.unwrap_or_else(|_| {
        Err(Failure::new(Outcome::AppNotRunning, "the recipient app disconnected before taking the message"))
    })
}
