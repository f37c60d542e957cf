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
use std::sync::Arc;

use carrier_proto::identity::Did;
use carrier_proto::pb;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::{Inbox, Verdict, await_verdict};
use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::protocols::{Handling, PeerStream, ProtocolHandler, outcome_of};

/// Receipts owed on one stream before its reader waits.
const OWED: usize = 8192;

type Answer = Pin<Box<dyn Future<Output = (u64, Verdict)> + Send>>;

/// The receiving side of the protocol, handing envelopes to `I`.
#[derive(Debug)]
pub(crate) struct Inbound<I> {
    inbox: Arc<I>,
    /// Largest envelope frame.
    max_frame: usize,
}

impl<I: Inbox> Inbound<I> {
    /// Takes envelopes of up to `max_frame` bytes for `inbox`.
    pub(crate) fn new(inbox: Arc<I>, max_frame: usize) -> Self {
        Self { inbox, max_frame }
    }
}

impl<I: Inbox> ProtocolHandler for Inbound<I> {
    fn handle(self: Arc<Self>, peer: Did, stream: PeerStream) -> Handling {
        Box::pin(async move {
            let (read, write) = tokio::io::split(stream);
            let (owed, answers) = mpsc::channel(OWED);
            let ended = tokio::select! {
                ended = read_envelopes(&*self.inbox, peer, FrameReader::new(read, self.max_frame), owed) => ended,
                ended = write_receipts(FrameWriter::new(write, self.max_frame), answers) => ended,
            };
            Ok(ended?)
        })
    }
}

async fn read_envelopes<R: tokio::io::AsyncRead + Unpin>(
    inbox: &impl Inbox,
    device: Did,
    mut reader: FrameReader<R>,
    owed: mpsc::Sender<Answer>,
) -> Result<(), FramedError> {
    while let Some(envelope) = reader.read::<pb::Envelope>().await? {
        let seq = envelope.seq;
        let answer: Answer = match inbox.offer(device, envelope).await {
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
    let (outcome, detail) = outcome_of(verdict);
    pb::EnvelopeReceipt { seq, outcome, detail }
}
