//! Offline mailboxes (`/carrier/mailbox/1.0.0`): one request and one
//! answer per stream, between a device and a mailbox node.
//!
//! ```text
//!  sender's daemon ──Deposit(recipient, sealed blob, expiry)──▶ node: Keeper::deposit (quotas)
//!  recipient ──Collect──▶ node ──Blobs (its own only: the link says who asks)──▶ recipient
//!  recipient ──Remove(ids)──▶ node: Keeper::remove
//! ```
//!
//! What a node keeps and for whom is the [`Keeper`]'s business (the
//! delivery layer); this module moves the frames, and the link's device
//! is who asks.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use carrier_proto::identity::Did;
use carrier_proto::pb::{self, mailbox_request::Request};

use super::{Handling, PeerStream, ProtocolError, ProtocolHandler, Router};
use crate::framed::{FrameReader, FrameWriter};
use crate::overlay::Overlay;

/// The protocol name.
pub(crate) const PROTOCOL: &str = "/carrier/mailbox/1.0.0";
/// Most time for one request and its answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A mailbox node's side: implemented by the delivery layer.
pub(crate) trait Keeper: Send + Sync + 'static {
    /// `depositor` (the link's device) leaves a blob.
    fn deposit(&self, depositor: Did, deposit: pb::Deposit) -> impl Future<Output = pb::MailboxAnswer> + Send;
    /// `recipient` (the link's device) asks for its blobs.
    fn collect(&self, recipient: Did, max_blobs: u32) -> pb::MailboxAnswer;
    /// `recipient` (the link's device) has taken these blobs.
    fn remove(&self, recipient: Did, ids: Vec<Vec<u8>>) -> impl Future<Output = pb::MailboxAnswer> + Send;
}

/// Serves mailbox requests with `K`.
#[derive(Debug)]
pub(crate) struct MailboxService<K> {
    keeper: Arc<K>,
    max_frame: usize,
}

impl<K: Keeper> MailboxService<K> {
    /// Frames of up to `max_frame` bytes, for `keeper`.
    pub(crate) fn new(keeper: Arc<K>, max_frame: usize) -> Self {
        Self { keeper, max_frame }
    }
}

impl<K: Keeper> ProtocolHandler for MailboxService<K> {
    fn handle(self: Arc<Self>, peer: Did, stream: PeerStream) -> Handling {
        Box::pin(async move {
            let (read, write) = tokio::io::split(stream);
            let mut reader = FrameReader::new(read, self.max_frame);
            let request = tokio::time::timeout(TIMEOUT, reader.read::<pb::MailboxRequest>())
                .await
                .map_err(|_| ProtocolError::Timeout("a mailbox request"))??;
            let answer = match request.and_then(|r| r.request) {
                Some(Request::Deposit(deposit)) => self.keeper.deposit(peer, deposit).await,
                Some(Request::Collect(collect)) => self.keeper.collect(peer, collect.max_blobs),
                Some(Request::Remove(remove)) => self.keeper.remove(peer, remove.ids).await,
                None => return Err(ProtocolError::Violation("an empty mailbox request".into())),
            };
            let mut writer = FrameWriter::new(write, self.max_frame);
            writer.send(&answer).await?;
            Ok(writer.shutdown().await?)
        })
    }
}

/// Asks mailbox node `node` (linking to it if need be).
pub(crate) async fn ask(
    overlay: &Overlay,
    router: &Router,
    node: Did,
    request: Request,
    max_frame: usize,
) -> Result<pb::MailboxAnswer, ProtocolError> {
    let asking = async {
        overlay.connect(node).await?;
        let stream = router.open(node, PROTOCOL).await?;
        let (read, write) = tokio::io::split(stream);
        let mut writer = FrameWriter::new(write, max_frame);
        writer.send(&pb::MailboxRequest { request: Some(request) }).await?;
        let mut reader = FrameReader::new(read, max_frame);
        reader
            .read::<pb::MailboxAnswer>()
            .await?
            .ok_or_else(|| ProtocolError::Violation(format!("{node} closed the mailbox stream without an answer")))
    };
    tokio::time::timeout(TIMEOUT, asking).await.map_err(|_| ProtocolError::Timeout("a mailbox node's answer"))?
}
