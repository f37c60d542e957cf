//! What apps send and receive: messages, receipts and why a message failed.

use std::fmt;
use std::time::SystemTime;

use carrier_proto::identity::Did;
use carrier_proto::pb;

pub use carrier_proto::messaging::{AllowList, MessageId};

/// A message another app sent this app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id: unique per sender, increasing between one pair of apps.
    pub id: MessageId,
    /// The sending app (checked by the daemons against the ledger).
    pub from_app: Did,
    /// The device hosting the sending app.
    pub from_device: Did,
    /// The bytes sent.
    pub payload: Vec<u8>,
    /// When this daemon received it.
    pub received_at: SystemTime,
    /// Given to an earlier session of this app that ended before it was
    /// acknowledged: the app may have seen it (same id). Ids between two
    /// apps only grow, so an app that keeps the last id it handled can
    /// drop anything at or below it.
    pub redelivered: bool,
}

/// How to send one message ([`Client::submit_with`](crate::Client::submit_with)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// How long the daemons keep trying (default: the daemon's, 7 days;
    /// at most 30 days). Past it the receipt is `Expired`.
    pub ttl: Option<std::time::Duration>,
    /// Up to 64 bytes naming this message for the daemon: sending again
    /// with the same key (say, after the session broke before the message
    /// was accepted) does not queue it twice.
    pub key: Option<Vec<u8>>,
}

/// What the daemon knows of a message this app sent
/// ([`Client::receipt_states`](crate::Client::receipt_states)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptState {
    /// No such message of this app (or its receipt is over 7 days old).
    Unknown,
    /// Still on its way.
    Pending,
    /// On its way, and meanwhile sealed on mailbox nodes (its recipient's
    /// device is offline).
    Stored,
    /// Its fate.
    Final(Receipt),
}

/// The fate of one sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// The recipient app took it.
    Delivered,
    /// It did not reach the recipient app.
    Failed(Failure),
}

impl Receipt {
    /// Whether the recipient app took the message.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered)
    }
}

/// Why a message (or stream) did not reach its app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind of failure.
    pub reason: Reason,
    /// For people: the daemon's explanation.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.reason, self.detail)
    }
}

/// The kinds of failure.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The ledger has no such app.
    UnknownRecipient,
    /// The recipient, the sender or a hosting device is revoked.
    Revoked,
    /// The recipient app is not listening on the service (streams), or its
    /// daemon stopped before it took the message.
    AppNotRunning,
    /// The recipient's device could not be reached.
    Unreachable,
    /// Over the message limit.
    TooLarge,
    /// The recipient's access rules refuse this app.
    Refused,
    /// A stream's link broke. (Messages are retried instead.)
    LinkLost,
    /// Its time to live passed before it could be delivered.
    Expired,
    /// This app's outbox on its daemon is full: wait for receipts, then
    /// send again.
    QueueFull,
    /// The recipient's device was offline and the mailbox nodes closest to
    /// it refused the message (their quota is used up).
    MailboxFull,
    /// A reason this SDK does not know.
    Other,
}

impl Failure {
    pub(crate) fn from_wire(outcome: i32, detail: String) -> Self {
        use pb::Outcome::*;
        let reason = match pb::Outcome::try_from(outcome) {
            Ok(UnknownRecipient) => Reason::UnknownRecipient,
            Ok(Revoked) => Reason::Revoked,
            Ok(AppNotRunning) => Reason::AppNotRunning,
            Ok(Unreachable) => Reason::Unreachable,
            Ok(TooLarge) => Reason::TooLarge,
            Ok(Refused) => Reason::Refused,
            Ok(LinkLost) => Reason::LinkLost,
            Ok(Expired) => Reason::Expired,
            Ok(QueueFull) => Reason::QueueFull,
            Ok(MailboxFull) => Reason::MailboxFull,
            Ok(Delivered | Unspecified) | Err(_) => Reason::Other,
        };
        Self { reason, detail }
    }
}

pub(crate) fn allow_list_to_wire(list: &AllowList) -> pb::AllowList {
    pb::AllowList { any_active: list.any_active, dids: list.dids.iter().map(Did::to_string).collect() }
}
