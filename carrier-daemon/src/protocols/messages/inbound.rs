//! Message streams from peers (`/carrier/msg/2.0.0`): the receiver's hello
//! (its message limit), then each envelope offered to the [`Inbox`] in
//! arrival order, and its receipts written back as they become known.
//!
//! ```text
//!  writer: MsgHello, then whichever answer is ready first:
//!          HELD (on disk) ─▶ later FINAL (the app took it) | FINAL | BUSY | Pong
//!  reader: Envelope ─▶ blocked pair? BUSY : Inbox::offer ─▶ now, or through the watchers' channel
//! ```
//!
//! Once an envelope of a pair of apps got BUSY, every later envelope of
//! that pair on this stream gets BUSY too, until that envelope is offered
//! again: so the sender can pause one pair without its order breaking, and
//! other pairs go on. A frame over the limit or one that does not decode
//! ends this stream only; the link and every other stream go on.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;

use carrier_proto::identity::Did;
use carrier_proto::pb::{self, envelope_receipt::Stage, to_receiver, to_sender};
use tokio::sync::mpsc;

use super::{Inbox, Offered, Pair, Progress, ProgressRx, Watcher, pair_of};
use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::protocols::{Handling, PeerStream, ProtocolHandler, Verdict, outcome_of};

/// Answers ready but not yet written before the reader waits.
const OWED: usize = 8192;

/// What the reader tells the writer.
enum Read {
    /// An answer to write now (FINAL, BUSY, Pong).
    Now(pb::ToSender),
    /// A message is held: its answers come through the watchers' channel.
    Held,
}

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
            let (read_tx, read_rx) = mpsc::channel(OWED);
            let (watchers, progress) = Watcher::channel();
            let reader = FrameReader::new(read, self.max_frame);
            let ended = tokio::select! {
                ended = read_frames(&*self.inbox, peer, reader, read_tx, watchers) => ended,
                ended = write_answers(writer, read_rx, progress) => ended,
            };
            Ok(ended?)
        })
    }
}

async fn read_frames<R: tokio::io::AsyncRead + Unpin>(
    inbox: &impl Inbox,
    device: Did,
    mut reader: FrameReader<R>,
    read: mpsc::Sender<Read>,
    watchers: super::WatcherFactory,
) -> Result<(), FramedError> {
    let mut blocked: HashMap<Pair, u64> = HashMap::new();
    while let Some(frame) = reader.read::<pb::ToReceiver>().await? {
        let answer = match frame.frame {
            Some(to_receiver::Frame::Ping(ping)) => {
                Read::Now(pb::ToSender { frame: Some(to_sender::Frame::Pong(pb::Pong { nonce: ping.nonce })) })
            }
            Some(to_receiver::Frame::Envelope(envelope)) => {
                let (seq, pair) = (envelope.seq, pair_of(&envelope));
                match blocked.get(&pair) {
                    Some(&first) if first != seq => Read::Now(receipt(seq, Stage::Busy, Ok(()))),
                    _ => {
                        blocked.remove(&pair);
                        match inbox.offer(device, envelope, watchers.watch(seq)) {
                            Offered::Final(verdict) => Read::Now(receipt(seq, Stage::Final, verdict)),
                            Offered::Busy => {
                                blocked.insert(pair, seq);
                                Read::Now(receipt(seq, Stage::Busy, Ok(())))
                            }
                            Offered::Held => Read::Held,
                        }
                    }
                }
            }
            None => continue,
        };
        if read.send(answer).await.is_err() {
            break;
        }
    }
    // The sender finished: wait for the writer to answer what is owed.
    drop((read, watchers));
    std::future::pending().await
}

/// Writes answers as they become known, as many as are ready at once in
/// one flush. A held message whose FINAL is ready in the same pass gets
/// only its FINAL: HELD would tell the sender nothing more.
async fn write_answers<W: tokio::io::AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut read: mpsc::Receiver<Read>,
    mut progress: ProgressRx,
) -> Result<(), FramedError> {
    let (mut now, mut later) = (Vec::new(), Vec::new());
    let mut finals = HashSet::new();
    // Held messages whose FINAL is still to come (a FINAL may be read
    // before the reader's word that its message was held: signed).
    let mut owed = 0i64;
    let (mut reading, mut watching) = (true, true);
    // Until the reader is done and every answer it passed on is written,
    // and every held message answered (or none can be any more: every
    // watcher is gone).
    while reading || (owed > 0 && watching) {
        tokio::select! {
            n = read.recv_many(&mut now, OWED), if reading => reading = n > 0,
            n = progress.recv_many(&mut later, OWED), if watching => watching = n > 0,
        }
        while let Ok(answer) = read.try_recv() {
            now.push(answer);
        }
        while let Ok(step) = progress.try_recv() {
            later.push(step);
        }
        for answer in now.drain(..) {
            match answer {
                Read::Now(frame) => writer.feed(&frame).await?,
                Read::Held => owed += 1,
            }
        }
        finals.clear();
        finals.extend(later.iter().filter(|(_, p)| matches!(p, Progress::Taken(_))).map(|(seq, _)| *seq));
        for (seq, step) in later.drain(..) {
            let frame = match step {
                Progress::Stored if finals.contains(&seq) => continue,
                Progress::Stored => receipt(seq, Stage::Held, Ok(())),
                Progress::Taken(verdict) => {
                    owed -= 1;
                    receipt(seq, Stage::Final, verdict)
                }
            };
            writer.feed(&frame).await?;
        }
        writer.flush().await?;
    }
    writer.shutdown().await
}

fn receipt(seq: u64, stage: Stage, verdict: Verdict) -> pb::ToSender {
    let (outcome, detail) = outcome_of(verdict);
    let receipt = pb::EnvelopeReceipt { seq, outcome, detail, stage: stage as i32 };
    pb::ToSender { frame: Some(to_sender::Frame::Receipt(receipt)) }
}
