//! App-socket authentication: the daemon sends a fresh challenge, the app
//! signs it with its app key, and the ledger must show that key as an
//! active app hosted by this device.

use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::ledger::Subject;
use carrier_proto::messaging::{NONCE_LEN, verify_challenge};
use carrier_proto::pb::{self, app_event::Event, app_hello::Purpose, app_request::Request};
use rand_core::{OsRng, RngCore};

use super::{AppSocketError, Reader, Writer};
use crate::messaging::Messaging;

/// How long an app has to answer the challenge.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// An app that proved who it is, and what it came for.
#[derive(Debug)]
pub(super) struct Hello {
    pub app: Did,
    pub purpose: Purpose,
}

/// Runs the challenge on a new connection.
pub(super) async fn authenticate(
    messaging: &Messaging,
    reader: &mut Reader,
    writer: &mut Writer,
) -> Result<Hello, AppSocketError> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let device = messaging.device();
    let challenge = pb::AppChallenge { nonce: nonce.to_vec(), device: device.to_string() };
    writer.send(&pb::AppEvent { id: 0, event: Some(Event::Challenge(challenge)) }).await?;
    let request = tokio::time::timeout(HELLO_TIMEOUT, reader.read::<pb::AppRequest>())
        .await
        .map_err(|_| AppSocketError::Unauthenticated(format!("no hello within {}s", HELLO_TIMEOUT.as_secs())))??
        .ok_or_else(|| AppSocketError::Unauthenticated("closed before the hello".into()))?;
    let Some(Request::Hello(hello)) = request.request else {
        return Err(AppSocketError::BadRequest("the first request must be a hello".into()));
    };
    let purpose = hello.purpose.ok_or_else(|| AppSocketError::BadRequest("the hello has no purpose".into()))?;
    let app = Did::parse(&hello.app).map_err(|e| AppSocketError::Unauthenticated(format!("{:?}: {e}", hello.app)))?;
    let key = messaging.ctx.ledger.read(|l| {
        let unauthenticated = |why: String| Err(AppSocketError::Unauthenticated(why));
        let Some(resolution) = l.resolve(&app) else {
            return unauthenticated(format!(
                "{app} is not registered on the ledger; register it with `carrierctl ledger register-app`"
            ));
        };
        match &resolution.record.subject {
            Subject::App { device: host, .. } if *host == device => {}
            Subject::App { device: host, .. } => {
                return unauthenticated(format!("{app} is an app of {host}, not of this device ({device})"));
            }
            Subject::Device { .. } => return unauthenticated(format!("{app} is a device, not an app")),
        }
        if !resolution.is_active() {
            return unauthenticated(format!("{app} is revoked ({:?})", resolution.status));
        }
        Ok(resolution.record.keys.signing)
    })?;
    if !verify_challenge(&key, &nonce, &device, &hello.signature) {
        return Err(AppSocketError::Unauthenticated(format!(
            "the hello's signature does not match {app}'s key on the ledger"
        )));
    }
    Ok(Hello { app, purpose })
}
