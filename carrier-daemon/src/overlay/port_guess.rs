//! Port guessing over relayed links, for the pairs hole punching cannot
//! link: one device behind a NAT that maps a new port per destination, the
//! other behind one that lets in only the ports it has sent to. The rules
//! and the numbers are in `carrier_proto::nat`; this module does the IO.
//!
//! ```text
//!  actor sweep: a link relayed for GUESS_AFTER, no direct one, and our
//!  mapping is endpoint-dependent ──▶ guess(): stream /carrier/port-guess/1.0.0
//!     offer ─▶ answer ◀─ ; open GUESS_SOCKETS sockets, probe the answer's address
//!     ready ─▶ the peer sprays probes from its listening port (serve())
//!     a probe arrives on socket k ─▶ QUIC from socket k ─▶ the Carrier handshake
//!  the admitted link joins the transport's inbound links; the relayed one
//!  is retired as for any direct link (`relayed.rs`)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use carrier_proto::identity::Did;
use carrier_proto::nat::{self, GuessError, Mapping, Offer, SprayBudget};
use carrier_proto::pb;
use futures::FutureExt;
use libp2p::{PeerId, StreamProtocol};
use rand_core::OsRng;
use tokio::sync::mpsc;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::Instrument;

use super::reachability::Reachability;
use super::streams::StreamControl;
use crate::framed::{FrameReader, FrameWriter, FramedError};
use crate::link::{Link, LinkContext, LinkError, quic};

/// The protocol, over a relayed link.
pub(super) const PROTOCOL: StreamProtocol = StreamProtocol::new("/carrier/port-guess/1.0.0");
/// How long a relayed link is left to hole punching before we guess. Our
/// NAT's mapping already says punching alone cannot link us, unless the
/// peer lets anyone in; that takes a punch about 300 ms.
pub(super) const GUESS_AFTER: Duration = Duration::from_millis(500);
/// How often the actor looks for relayed links due a guess.
pub(super) const GUESS_TICK: Duration = Duration::from_millis(250);
/// Most guesses per peer while we reach it only through a relay.
pub(super) const MAX_GUESSES: u32 = 3;
/// The wait between them: a little longer than the peer makes us wait for
/// another spray (its clock starts when our offer arrives, not when we
/// start).
pub(super) const GUESS_RETRY: Duration = nat::SPRAY_INTERVAL.saturating_add(Duration::from_secs(1));
/// How long a whole guess may take, from opening the stream to the link.
const GUESS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each side waits for the other's next message.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the sprayer waits for the guessing side to be ready (it opens
/// its sockets in well under a second) while it holds its one spray slot.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guessing side waits for a probe once it is ready.
const HIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Probes go out in bursts, so a NAT or a send buffer is not swamped.
const BURST: usize = 128;
const BURST_GAP: Duration = Duration::from_millis(10);
/// The messages are a few dozen bytes.
const MAX_FRAME: usize = 512;

/// Why a guess ended without a link.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub(super) enum GuessFailure {
    /// The stream could not be opened or broke.
    #[error("stream: {0}")]
    Stream(String),
    /// The exchange itself failed (refused, malformed).
    #[error(transparent)]
    Exchange(#[from] GuessError),
    /// The other side took too long.
    #[error("the peer did not answer in time")]
    Timeout,
    /// No probe reached any of our sockets.
    #[error("no probe reached any of {0} sockets")]
    Missed(usize),
    /// Sockets could not be opened, or no probe could be sent.
    #[error("sockets: {0}")]
    Sockets(std::io::Error),
    /// The socket that was hit could not carry QUIC.
    #[error("QUIC on the hit socket: {0}")]
    Quic(#[from] quic::QuicSetupError),
    /// The probe arrived, the link did not come up.
    #[error("link: {0}")]
    Link(#[from] LinkError),
    /// The transport has stopped listening.
    #[error("the transport is not listening")]
    NotListening,
    /// The peer named an address on a network we are not on.
    #[error(transparent)]
    Address(#[from] carrier_proto::addr::AddrRefusal),
}

impl From<FramedError> for GuessFailure {
    fn from(error: FramedError) -> Self {
        Self::Stream(error.to_string())
    }
}

/// What port guessing shares between the actor, the transport and the
/// tasks that run the exchanges; one per overlay.
pub(crate) struct PortGuessing {
    ctx: Arc<LinkContext>,
    /// Where peers see our listening port, so how our NAT maps it.
    reachability: Reachability,
    /// Whom we spray for, and when.
    budget: Mutex<SprayBudget<PeerId>>,
    /// The listening socket (sprays go out from it) and where admitted
    /// links go (the transport's inbound queue, held weakly so the queue
    /// closes with the transport); set when it listens.
    transport: OnceLock<(Arc<UdpSocket>, mpsc::WeakSender<Link>)>,
    /// A guess of ours is under way (one at a time: each opens many sockets).
    guessing: AtomicBool,
}

impl PortGuessing {
    pub(super) fn new(ctx: Arc<LinkContext>, reachability: Reachability) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            reachability,
            budget: Mutex::default(),
            transport: OnceLock::new(),
            guessing: AtomicBool::new(false),
        })
    }

    /// The transport listens on `socket` and takes links from `links`.
    pub(super) fn attach(&self, socket: Arc<UdpSocket>, links: &mpsc::Sender<Link>) {
        let _ = self.transport.set((socket, links.downgrade()));
    }

    /// Starts a guess towards `peer` (of `did`), from our public `ip`, in a
    /// task of its own; `false` if one is under way already.
    pub(super) fn start(self: &Arc<Self>, streams: StreamControl, peer: PeerId, did: Did, ip: IpAddr) -> bool {
        if self.guessing.swap(true, Ordering::AcqRel) {
            return false;
        }
        let this = Arc::clone(self);
        let span = tracing::info_span!("port guess", peer = %did);
        self.ctx.tasks().spawn(
            async move {
                // However the task ends (even cancelled), the next may start.
                let _running = Running(&this.guessing);
                let started = Instant::now();
                let guess = tokio::time::timeout(GUESS_TIMEOUT, this.guess(&streams, peer, did, ip));
                match guess.await.unwrap_or(Err(GuessFailure::Timeout)) {
                    Ok(port) => {
                        this.ctx.counters().count("port_guess_links");
                        let after_ms = started.elapsed().as_millis() as u64;
                        tracing::info!(port, after_ms, "port guess hit: direct link up");
                    }
                    Err(error) => {
                        this.ctx.counters().count("port_guess_failures");
                        tracing::info!(%error, "port guess failed; the link stays relayed");
                    }
                }
            }
            .instrument(span),
        );
        true
    }

    /// The guessing side; the local port that was hit.
    async fn guess(&self, streams: &StreamControl, peer: PeerId, did: Did, ip: IpAddr) -> Result<u16, GuessFailure> {
        let (_, links) = self.transport.get().ok_or(GuessFailure::NotListening)?;
        let stream = streams.open_stream(peer, PROTOCOL).await.map_err(|e| GuessFailure::Stream(e.to_string()))?;
        let (read, write) = tokio::io::split(stream.compat());
        let (mut reader, mut writer) = (FrameReader::new(read, MAX_FRAME), FrameWriter::new(write, MAX_FRAME));
        let offer = Offer::new(ip, &mut OsRng);
        writer.send(&offer.to_pb()).await?;
        let answer: pb::GuessAnswer = step(reader.read(), STEP_TIMEOUT).await?;
        let target = nat::read_answer(&answer)?;
        // Our 256 probes go only to an address on a network we are on.
        let target = self.ctx.admit_addr(target)?;
        let sockets = open_mappings(target, &offer.nonce).await.map_err(GuessFailure::Sockets)?;
        let count = sockets.len();
        writer.send(&pb::GuessReady {}).await?;
        let hit = tokio::time::timeout(HIT_TIMEOUT, first_probe(sockets, target, offer.nonce))
            .await
            .map_err(|_| GuessFailure::Missed(count))?
            .ok_or(GuessFailure::Missed(count))?;
        let port = hit.local_addr().map(|a| a.port()).unwrap_or(0);
        tracing::debug!(port, %target, "a probe reached one of our sockets; linking from it");
        // Closing the stream tells the peer to stop spraying.
        drop((reader, writer));
        let endpoint = quic::client_endpoint_on(hit.into_std().map_err(GuessFailure::Sockets)?)?;
        let link = self.ctx.dial(&endpoint, target, Some(did)).await?;
        let links = links.upgrade().ok_or(GuessFailure::NotListening)?;
        links.send(link).await.map_err(|_| GuessFailure::NotListening)?;
        Ok(port)
    }

    /// Serves the spraying side of guesses that peers start.
    pub(super) async fn serve(self: Arc<Self>, streams: StreamControl) {
        let mut incoming = match streams.accept(PROTOCOL) {
            Ok(incoming) => incoming,
            Err(error) => return tracing::error!(%error, "port guessing already served"),
        };
        while let Some((peer, stream)) = incoming.next().await {
            let this = Arc::clone(&self);
            let who = super::did_of(&*self.ctx.ledger, &peer).map_or_else(|| peer.to_string(), |d| d.to_string());
            let span = tracing::info_span!("port guess spray", peer = %who);
            // Only for a peer we cannot reach directly: a direct link
            // needs no guessing, and asking over one would be asking us to
            // spray for nothing.
            let relayed_only = streams.only_relayed(&peer);
            self.ctx.tasks().spawn(
                async move {
                    match this.spray(peer, relayed_only, stream.compat()).await {
                        Ok(sent) => tracing::debug!(sent, "port guess probes sent"),
                        Err(error) => tracing::info!(%error, "port guess not served"),
                    }
                }
                .instrument(span),
            );
        }
    }

    /// Whether we spray for `peer`, which offers `offer`: our address to
    /// give and the socket to spray from, or why not.
    fn admit(
        &self,
        peer: PeerId,
        relayed_only: bool,
        offer: &pb::GuessOffer,
    ) -> Result<(Offer, SocketAddr, Arc<UdpSocket>), String> {
        let offer = Offer::from_pb(offer).map_err(|e| e.to_string())?;
        // Our probes go only to an address on a network we are on.
        self.ctx.admit_addr(SocketAddr::new(offer.ip, 1)).map_err(|e| e.to_string())?;
        if !relayed_only {
            return Err("we have a direct link already".into());
        }
        let v4 = offer.ip.is_ipv4();
        let addr = match (self.reachability.mapping_in(v4), self.reachability.agreed_in(v4)) {
            (Mapping::Independent(_), Some(addr)) => addr,
            (Mapping::Independent(_), None) => return Err("fewer than two peers agree where they see us".into()),
            (Mapping::Dependent(_), _) => return Err("our NAT maps a new port per destination too".into()),
            (Mapping::Unknown, _) => return Err("no peer has told us where it sees us yet".into()),
        };
        let (socket, _) = self.transport.get().ok_or("not listening")?;
        let family = socket.local_addr().map(|a| a.is_ipv4()).map_err(|e| e.to_string())?;
        if family != offer.ip.is_ipv4() {
            return Err(format!("we listen on another IP family than {}", offer.ip));
        }
        lock(&self.budget).start(peer, Instant::now()).map_err(|e| e.to_string())?;
        Ok((offer, addr, Arc::clone(socket)))
    }

    /// The spraying side of one exchange; how many probes it sent.
    async fn spray<S>(&self, peer: PeerId, relayed_only: bool, stream: S) -> Result<usize, GuessFailure>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (read, write) = tokio::io::split(stream);
        let (mut reader, mut writer) = (FrameReader::new(read, MAX_FRAME), FrameWriter::new(write, MAX_FRAME));
        let offer: pb::GuessOffer = step(reader.read(), STEP_TIMEOUT).await?;
        let (offer, addr, socket) = match self.admit(peer, relayed_only, &offer) {
            Ok(admitted) => admitted,
            Err(reason) => {
                writer.send(&nat::answer(Err(reason.clone()))).await?;
                return Err(GuessFailure::Exchange(GuessError::Refused(reason)));
            }
        };
        let slot = Finish(&self.budget);
        writer.send(&nat::answer(Ok(addr))).await?;
        let _: pb::GuessReady = step(reader.read(), READY_TIMEOUT).await?;
        self.ctx.counters().count("port_guess_sprays");
        let probe = nat::probe(&offer.nonce);
        let (mut sent, mut first_error) = (0, None);
        for burst in nat::guess_ports(&mut OsRng, nat::GUESS_PROBES).chunks(BURST) {
            for port in burst {
                match send_probe(&socket, &probe, SocketAddr::new(offer.ip, *port)).await {
                    Ok(()) => sent += 1,
                    Err(error) => first_error = first_error.or(Some(error)),
                }
            }
            // The other side closes the stream once a probe got through.
            if let Some(ended) = reader.read::<pb::GuessReady>().now_or_never() {
                tracing::debug!(ended = ?ended.map(|m| m.is_none()), "the guessing side is done");
                return Ok(sent);
            }
            tokio::time::sleep(BURST_GAP).await;
        }
        drop(slot);
        if let (0, Some(error)) = (sent, first_error) {
            return Err(GuessFailure::Sockets(error));
        }
        let _ = tokio::time::timeout(HIT_TIMEOUT, reader.read::<pb::GuessReady>()).await;
        Ok(sent)
    }
}

/// Sends one probe from the listening socket (which quinn reads and keeps
/// non-blocking); a full send buffer is waited out a few times before the
/// probe is given up.
async fn send_probe(socket: &UdpSocket, probe: &[u8], to: SocketAddr) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match socket.send_to(probe, to) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && tries < 4 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Clears the "a guess is under way" flag when the guess ends.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Ends a spray in the budget however the exchange ends.
struct Finish<'a>(&'a Mutex<SprayBudget<PeerId>>);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        lock(self.0).finish();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The next message within `timeout`; the end of the stream is a failure
/// too.
async fn step<M>(
    read: impl Future<Output = Result<Option<M>, FramedError>>,
    timeout: Duration,
) -> Result<M, GuessFailure> {
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| GuessFailure::Timeout)??
        .ok_or_else(|| GuessFailure::Stream("the peer closed the stream".into()))
}

/// Opens [`nat::GUESS_SOCKETS`] sockets and sends a probe from each to
/// `target`, so our NAT maps a port for each.
async fn open_mappings(
    target: SocketAddr,
    nonce: &[u8; nat::NONCE_LEN],
) -> std::io::Result<Vec<tokio::net::UdpSocket>> {
    let any: IpAddr = if target.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let probe = nat::probe(nonce);
    let mut sockets = Vec::with_capacity(nat::GUESS_SOCKETS);
    for _ in 0..nat::GUESS_SOCKETS {
        let socket = tokio::net::UdpSocket::bind(SocketAddr::new(any, 0)).await?;
        // A probe that is not sent maps no port; the others still count.
        let _ = socket.send_to(&probe, target).await;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// The first of `sockets` to receive a probe of ours from `target`.
async fn first_probe(
    sockets: Vec<tokio::net::UdpSocket>,
    target: SocketAddr,
    nonce: [u8; nat::NONCE_LEN],
) -> Option<tokio::net::UdpSocket> {
    let waits = sockets.into_iter().map(|socket| {
        async move {
            let mut buf = [0u8; 64];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, from)) if from == target && nat::is_probe(&buf[..n], &nonce) => return socket,
                    // A stray datagram is not the probe; keep listening.
                    Ok(_) => {}
                    // A socket that fails is out of the running.
                    Err(_) => futures::future::pending::<()>().await,
                }
            }
        }
        .boxed()
    });
    let waits: Vec<_> = waits.collect();
    if waits.is_empty() {
        return None;
    }
    Some(futures::future::select_all(waits).await.0)
}

#[cfg(test)]
#[path = "port_guess_tests.rs"]
mod tests;
