//! App messages between daemons (`/carrier/msg/1.0.0`).
//!
//! ```text
//!  sender daemon                                     receiver daemon
//!  Couriers::send ─▶ courier (one per device) ══Envelope══▶ inbound ─▶ Inbox::offer
//!                  ◀══EnvelopeReceipt (delivered | why)══   (the verdict, once the app took it)
//! ```
//!
//! One stream per device pair carries every envelope in the order it was
//! sent; receipts come back on the same stream, in whatever order the
//! recipient apps take their messages. What the receiving side does with a
//! message is the [`Inbox`]'s business (the delivery layer); this module
//! only moves envelopes and receipts.

mod courier;
mod inbound;

use std::future::Future;

use carrier_proto::identity::Did;
use carrier_proto::messaging::MessageId;
use carrier_proto::pb;
use tokio::sync::{mpsc, oneshot};

pub(crate) use courier::{Couriers, Outgoing};
pub(crate) use inbound::Inbound;

use super::{Failure, Verdict};

/// The protocol name.
pub(crate) const PROTOCOL: &str = "/carrier/msg/1.0.0";

/// Where an incoming envelope goes: implemented by the delivery layer.
pub(crate) trait Inbox: Send + Sync + 'static {
    /// Offers `envelope`, which arrived from device `from`. On success the
    /// receiver answers once the recipient app has taken it (or is gone).
    fn offer(
        &self,
        from: Did,
        envelope: pb::Envelope,
    ) -> impl Future<Output = Result<oneshot::Receiver<Verdict>, Failure>> + Send;
}

/// A finished send, on its way back to the sending app.
#[derive(Debug)]
pub(crate) struct Receipt {
    /// The app's request id.
    pub request: u64,
    /// The id the message travelled under, once it had one.
    pub message_id: Option<MessageId>,
    pub verdict: Verdict,
    /// The payload bytes the send held against its sender's budget.
    pub bytes: usize,
}

/// Where the receipt of one send goes.
#[derive(Debug)]
pub(crate) struct ReceiptSink {
    pub tx: mpsc::UnboundedSender<Receipt>,
    pub request: u64,
    /// Handed back with the receipt (see [`Receipt::bytes`]).
    pub bytes: usize,
}

impl ReceiptSink {
    /// Hands the receipt back; a gone session has nobody to tell.
    pub(crate) fn resolve(self, message_id: Option<MessageId>, verdict: Verdict) {
        let receipt = Receipt { request: self.request, message_id, verdict, bytes: self.bytes };
        let _ = self.tx.send(receipt);
    }
}

/// What became of an offered message.
pub(crate) async fn await_verdict(taken: oneshot::Receiver<Verdict>) -> Verdict {
    taken.await.unwrap_or_else(|_| {
        Err(Failure::new(pb::Outcome::AppNotRunning, "the recipient app disconnected before taking the message"))
    })
}
