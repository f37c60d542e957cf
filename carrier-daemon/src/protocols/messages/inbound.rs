//! Message streams from peers (`/carrier/msg/2.0.0`): the receiver's hello
//! (its message limit), then each envelope offered to the [`Inbox`] in
//! arrival order, and its receipts written back as they become known.
//!
//! ```text
//!  writer: MsgHello, then whichever answer is ready first:
//!          HELD (on disk) ─▶ later FINAL (the app took it) | FINAL | BUSY | Pong
//!  reader: Envelope ─▶ blocked pair? BUSY : Inbox::offer ─▶ an answer to come
//! ```
//!
//! Once an envelope of a pair of apps got BUSY, every later envelope of
//! that pair on this stream gets BUSY too, until that envelope is offered
//! again: so the sender can pause one pair without its order breaking, and
//! other pairs go on. A frame over the limit or one that does not decode
//! ends this stream only; the link and every other stream go on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use carrier_proto::identity::Did;
use carrier_proto::pb::{self, envelope_receipt::Stage, to_receiver, to_sender};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::{Inbox, Offered, Pair, await_verdict, pair_of};
use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::protocols::{Failure, Handling, PeerStream, ProtocolHandler, Verdict, outcome_of};

/// Answers owed on one stream before its reader waits.
const OWED: usize = 8192;

/// One answer to come.
type Owed = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// An answer ready: the frame to write, and the answer that follows it.
struct Answered(pb::ToSender, Option<Owed>);

/// The receiving side of the protocol, handing envelopes to `I`.
#[derive(Debug)]
pub(crate) struct Inbound<I> {
    inbox: Arc<I>,
    /// Largest frame.
    max_frame: usize,
}

impl<I: Inbox> Inbound<I> {
    /// Takes frames of up to `max_frame` bytes for `inbox`.
    pub(crate) fn new(inbox: Arc<I>, max_frame: usize) -> Self {
        Self { inbox, max_frame }
    }
}

impl<I: Inbox> ProtocolHandler for Inbound<I> {
    fn handle(self: Arc<Self>, peer: Did, stream: PeerStream) -> Handling {
        Box::pin(async move {
            let (read, write) = tokio::io::split(stream);
            let mut writer = FrameWriter::new(write, self.max_frame);
            let hello = pb::MsgHello { max_message: self.inbox.max_message() as u64 };
            writer.send(&pb::ToSender { frame: Some(to_sender::Frame::Hello(hello)) }).await?;
            let (owed, answers) = mpsc::channel(OWED);
            let ended = tokio::select! {
                ended = read_frames(&*self.inbox, peer, FrameReader::new(read, self.max_frame), owed) => ended,
                ended = write_answers(writer, answers) => ended,
            };
            Ok(ended?)
        })
    }
}

async fn read_frames<R: tokio::io::AsyncRead + Unpin>(
    inbox: &impl Inbox,
    device: Did,
    mut reader: FrameReader<R>,
    owed: mpsc::Sender<Owed>,
) -> Result<(), FramedError> {
    let mut blocked: HashMap<Pair, u64> = HashMap::new();
    while let Some(frame) = reader.read::<pb::ToReceiver>().await? {
        let answer = match frame.frame {
            Some(to_receiver::Frame::Ping(ping)) => {
                let pong = pb::ToSender { frame: Some(to_sender::Frame::Pong(pb::Pong { nonce: ping.nonce })) };
                ready(pong)
            }
            Some(to_receiver::Frame::Envelope(envelope)) => {
                let (seq, pair) = (envelope.seq, pair_of(&envelope));
                match blocked.get(&pair) {
                    Some(&first) if first != seq => ready(receipt(seq, Stage::Busy, Ok(()))),
                    _ => {
                        blocked.remove(&pair);
                        match inbox.offer(device, envelope) {
                            Offered::Final(verdict) => ready(receipt(seq, Stage::Final, verdict)),
                            Offered::Busy => {
                                blocked.insert(pair, seq);
                                ready(receipt(seq, Stage::Busy, Ok(())))
                            }
                            Offered::Held { stored, taken } => held(seq, stored, taken),
                        }
                    }
                }
            }
            None => continue,
        };
        if owed.send(answer).await.is_err() {
            break;
        }
    }
    // The sender finished: wait for the writer to answer what is owed.
    drop(owed);
    std::future::pending().await
}

fn ready(frame: pb::ToSender) -> Owed {
    Box::pin(std::future::ready(Answered(frame, None)))
}

/// HELD once on disk, then FINAL once taken; FINAL at once if it could not
/// be stored.
fn held(
    seq: u64,
    stored: tokio::sync::oneshot::Receiver<Verdict>,
    taken: tokio::sync::oneshot::Receiver<Verdict>,
) -> Owed {
    Box::pin(async move {
        let stored = stored.await.unwrap_or_else(|_| {
            Err(Failure::new(pb::Outcome::Unreachable, "the receiving daemon stopped before storing the message"))
        });
        match stored {
            Ok(()) => {
                let then: Owed =
                    Box::pin(async move { Answered(receipt(seq, Stage::Final, await_verdict(taken).await), None) });
                Answered(receipt(seq, Stage::Held, Ok(())), Some(then))
            }
            Err(failure) => Answered(receipt(seq, Stage::Final, Err(failure)), None),
        }
    })
}

async fn write_answers<W: tokio::io::AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut owed: mpsc::Receiver<Owed>,
) -> Result<(), FramedError> {
    let mut waiting = FuturesUnordered::new();
    let mut reading = true;
    let mut unflushed = false;
    loop {
        // Write every answer that is ready now, then flush them as one.
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
            let Some(Some(Answered(frame, then))) = waiting.next().now_or_never() else { break };
            waiting.extend(then);
            writer.feed(&frame).await?;
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
            Some(Answered(frame, then)) = waiting.next(), if !waiting.is_empty() => {
                waiting.extend(then);
                writer.feed(&frame).await?;
                unflushed = true;
            }
            else => break,
        }
    }
    writer.shutdown().await
}

fn receipt(seq: u64, stage: Stage, verdict: Verdict) -> pb::ToSender {
    let (outcome, detail) = outcome_of(verdict);
    let receipt = pb::EnvelopeReceipt { seq, outcome, detail, stage: stage as i32 };
    pb::ToSender { frame: Some(to_sender::Frame::Receipt(receipt)) }
}
