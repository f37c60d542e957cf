//! App-socket authentication: the daemon sends a fresh challenge, the app
//! signs it with its app key, and the ledger must show that key as an
//! active app hosted by this device.

use std::time::Duration;

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::messaging::{NONCE_LEN, verify_challenge};
use carrier_proto::pb::{self, app_event::Event, app_hello::Purpose, app_request::Request};
use rand_core::{OsRng, RngCore};

use super::{AppSocketError, Reader, Writer};
use crate::delivery::Delivery;
use crate::ledger::{Denial, Policy};

/// How long an app has to answer the challenge.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// An app that proved who it is, and what it came for.
#[derive(Debug)]
pub(super) struct Hello {
    pub app: Did,
    /// The key it proved: the session lasts only while the ledger holds it.
    pub key: SigningPublicKey,
    pub purpose: Purpose,
}

/// Runs the challenge on a new connection.
pub(super) async fn authenticate(
    delivery: &Delivery,
    reader: &mut Reader,
    writer: &mut Writer,
) -> Result<Hello, AppSocketError> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let device = delivery.device();
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
    let key = delivery.ledger().app_key(&app, &device).map_err(|denial| {
        AppSocketError::Unauthenticated(match denial {
            Denial::Unknown(_) => {
                format!("{app} is not registered on the ledger; register it with `carrierctl ledger register-app`")
            }
            Denial::WrongHost { host, .. } => format!("{app} is an app of {host}, not of this device ({device})"),
            other => other.to_string(),
        })
    })?;
    if !verify_challenge(&key, &nonce, &device, &hello.signature) {
        return Err(AppSocketError::Unauthenticated(format!(
            "the hello's signature does not match {app}'s key on the ledger"
        )));
    }
    Ok(Hello { app, key, purpose })
}
