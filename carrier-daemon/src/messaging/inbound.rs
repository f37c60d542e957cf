//! Message streams from peers (`/carrier/msg/1.0.0`): each envelope is
//! offered to its local recipient in arrival order, and its receipt is
//! written back when the recipient's app has taken it or it failed.
//!
//! ```text
//!  reader: Envelope ─▶ offer_message ─▶ (seq, verdict to come) ─▶ writer
//!  writer: whichever verdict is ready first ─▶ EnvelopeReceipt
//! ```
//!
//! A frame over the limit or one that does not decode ends this stream
//! only; the link and every other stream go on.

use std::future::Future;
use std::pin::Pin;

use carrier_proto::identity::Did;
use carrier_proto::messaging::MessageId;
use carrier_proto::pb::{self, Outcome};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::inbox::await_verdict;
use super::{FRAME_OVERHEAD, Failure, Messaging, Verdict};
use crate::framed::{FrameReader, FrameWriter, FramedError};

/// Receipts owed on one stream before its reader waits.
const OWED: usize = 8192;

type Answer = Pin<Box<dyn Future<Output = (u64, Verdict)> + Send>>;

pub(super) async fn serve(messaging: &Messaging, peer: PeerId, stream: libp2p::Stream) -> Result<(), FramedError> {
    let Some(device) = messaging.device_of(&peer) else {
        tracing::debug!(%peer, "message stream from a peer not on the ledger");
        return Ok(());
    };
    let (read, write) = tokio::io::split(stream.compat());
    let max_frame = messaging.config.max_message + FRAME_OVERHEAD;
    let (owed, answers) = mpsc::channel(OWED);
    tokio::select! {
        ended = read_envelopes(messaging, device, FrameReader::new(read, max_frame), owed) => ended,
        ended = write_receipts(FrameWriter::new(write, max_frame), answers) => ended,
    }
}

async fn read_envelopes<R: tokio::io::AsyncRead + Unpin>(
    messaging: &Messaging,
    device: Did,
    mut reader: FrameReader<R>,
    owed: mpsc::Sender<Answer>,
) -> Result<(), FramedError> {
    while let Some(envelope) = reader.read::<pb::Envelope>().await? {
        let seq = envelope.seq;
        let answer: Answer = match offer(messaging, device, envelope).await {
            Ok(taken) => Box::pin(async move { (seq, await_verdict(taken).await) }),
            Err(failure) => Box::pin(std::future::ready((seq, Err(failure)))),
        };
        if owed.send(answer).await.is_err() {
            break;
        }
    }
    // The sender finished: wait for the writer to answer what is owed.
    drop(owed);
    std::future::pending().await
}

async fn offer(
    messaging: &Messaging,
    device: Did,
    envelope: pb::Envelope,
) -> Result<tokio::sync::oneshot::Receiver<Verdict>, Failure> {
    let bad = |what: &str| Failure::new(Outcome::Refused, format!("malformed envelope: {what}"));
    let (from, to) = messaging.ctx.ledger.read(|l| (l.find_did(&envelope.from_app), l.find_did(&envelope.to_app)));
    let from = from.ok_or_else(|| bad("the sending app is not on the ledger"))?;
    let to = to.ok_or_else(|| Failure::new(Outcome::UnknownRecipient, "the ledger has no app with that key"))?;
    let epoch: [u8; 16] = envelope.epoch.as_slice().try_into().map_err(|_| bad("epoch is not 16 bytes"))?;
    let id = MessageId { epoch, seq: envelope.seq };
    messaging.offer_message(device, from, to, id, envelope.payload).await
}

async fn write_receipts<W: tokio::io::AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut owed: mpsc::Receiver<Answer>,
) -> Result<(), FramedError> {
    let mut waiting = FuturesUnordered::new();
    let mut reading = true;
    let mut unflushed = false;
    loop {
        // Write every receipt that is ready now, then flush them as one.
        loop {
            loop {
                match owed.try_recv() {
                    Ok(answer) => waiting.push(answer),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        reading = false;
                        break;
                    }
                }
            }
            let Some(Some((seq, verdict))) = waiting.next().now_or_never() else { break };
            writer.feed(&receipt(seq, verdict)).await?;
            unflushed = true;
        }
        if unflushed {
            writer.flush().await?;
            unflushed = false;
        }
        tokio::select! {
            answer = owed.recv(), if reading => match answer {
                Some(answer) => waiting.push(answer),
                None => reading = false,
            },
            Some((seq, verdict)) = waiting.next(), if !waiting.is_empty() => {
                writer.feed(&receipt(seq, verdict)).await?;
                unflushed = true;
            }
            else => break,
        }
    }
    writer.shutdown().await
}

fn receipt(seq: u64, verdict: Verdict) -> pb::EnvelopeReceipt {
    let (outcome, detail) = match verdict {
        Ok(()) => (Outcome::Delivered, String::new()),
        Err(failure) => (failure.outcome, failure.detail),
    };
    pb::EnvelopeReceipt { seq, outcome: outcome as i32, detail }
}
