//! Carrier links as a libp2p `Transport`, so libp2p's behaviours (Kademlia,
//! identify, ping) run over them unchanged.
//!
//! One UDP port: the first `listen_on` binds the quinn endpoint, and dials
//! go out from the same endpoint, unless the dial asks for a new port
//! ([`PortUse::New`]): that one leaves from an endpoint of its own, which
//! lives as long as its link. Addresses are
//! `/ip4/…/udp/…/quic-v1/noise` (or `/ip6/…`), which standard libp2p-QUIC
//! nodes will not dial by mistake. A dial address ending in `/p2p/<peer>`
//! names the DID expected on the other end, which enables Noise IK.
//!
//! A dial with the listener role (DCUtR's hole punch) does not connect: it
//! punches from the listening port and resolves with the peer's own
//! connection once that is admitted (`punch.rs`). Links that port guessing
//! makes (`port_guess.rs`) join the inbound ones.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use carrier_proto::addr::LocalNets;
use futures::future::{BoxFuture, Ready};
use futures::{FutureExt, future};
use libp2p::PeerId;
use libp2p::core::multiaddr::{Multiaddr, Protocol};
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent};
use tokio::sync::mpsc;

use super::muxer::LinkMuxer;
use super::port_guess::PortGuessing;
use super::punch::{self, PUNCH_TIMEOUT, Punches};
use crate::link::{Link, LinkContext, LinkError, quic};

/// What the transport yields: the peer (by its current key) and its link.
pub type Output = (PeerId, LinkMuxer);

/// Carrier's libp2p transport.
pub struct CarrierTransport {
    ctx: Arc<LinkContext>,
    endpoint: Option<quinn::Endpoint>,
    /// The listener and the addresses it is reachable at.
    listener: Option<(ListenerId, Vec<Multiaddr>)>,
    /// Admitted inbound links from the accept task.
    inbound: Option<mpsc::Receiver<Link>>,
    events: VecDeque<TransportEvent<Ready<Result<Output, LinkError>>, LinkError>>,
    /// The listening socket, for punch datagrams.
    punch_socket: Option<Arc<std::net::UdpSocket>>,
    /// Hole punches waiting for their peer's connection.
    punches: Punches,
    /// Port guessing, told of the listening socket and our inbound queue.
    port_guessing: Option<Arc<PortGuessing>>,
}

impl CarrierTransport {
    /// A transport that admits peers with `ctx`.
    pub fn new(ctx: Arc<LinkContext>) -> Self {
        Self {
            ctx,
            endpoint: None,
            listener: None,
            inbound: None,
            events: VecDeque::new(),
            punch_socket: None,
            punches: Punches::default(),
            port_guessing: None,
        }
    }

    /// Lets `port_guessing` spray from the listening socket and hand the
    /// links it makes to the swarm, as inbound ones.
    pub(super) fn with_port_guessing(mut self, port_guessing: Arc<PortGuessing>) -> Self {
        self.port_guessing = Some(port_guessing);
        self
    }

    /// DCUtR's dial as listener: punch towards `target` and wait for
    /// `peer`'s connection to arrive and be admitted. If none has come
    /// after [`CONNECT_TOO_AFTER`], also connect to `target` ourselves: a
    /// peer behind a NAT that lets anyone in (while ours maps a new port
    /// per destination) is reached that way, not by waiting.
    fn punch(&mut self, target: SocketAddr, peer: Option<PeerId>) -> Option<<Self as Transport>::Dial> {
        let (socket, peer) = (Arc::clone(self.punch_socket.as_ref()?), peer?);
        let endpoint = self.endpoint.clone()?;
        let mut arrival = self.punches.arrival(peer);
        let ctx = Arc::clone(&self.ctx);
        let expected = super::did_of(&*ctx.ledger, &peer);
        Some(
            async move {
                tracing::debug!(%target, %peer, "punching a hole for a direct link");
                let connect = async {
                    tokio::time::sleep(CONNECT_TOO_AFTER).await;
                    match ctx.dial(&endpoint, target, expected).await {
                        Ok(link) => Ok(link),
                        // Let the punch go on until its deadline.
                        Err(_) => futures::future::pending().await,
                    }
                };
                let wait = async {
                    tokio::select! {
                        biased;
                        link = arrival.link() => link.map_err(|_| LinkError::Stream("the transport stopped".into())),
                        link = connect => link,
                        () = punch::punch(socket, target) => Err(LinkError::Stream("punching ended".into())),
                    }
                };
                let link = tokio::time::timeout(PUNCH_TIMEOUT, wait).await.map_err(|_| LinkError::Timeout)??;
                Ok((peer_id_of(&link), LinkMuxer::new(link.connection)))
            }
            .boxed(),
        )
    }
}

/// How long a punch waits for the peer's connection before connecting too.
const CONNECT_TOO_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

/// The socket address in `/ip4|ip6/…/udp/…/quic-v1/noise[/p2p/…]`, and the
/// peer id if one is named.
pub fn parse_addr(addr: &Multiaddr) -> Option<(SocketAddr, Option<PeerId>)> {
    let mut parts = addr.iter();
    let ip: IpAddr = match parts.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Udp(port) = parts.next()? else {
        return None;
    };
    let (Protocol::QuicV1, Protocol::Noise) = (parts.next()?, parts.next()?) else {
        return None;
    };
    let peer = match parts.next() {
        None => None,
        Some(Protocol::P2p(peer)) => Some(peer),
        Some(_) => return None,
    };
    parts.next().is_none().then_some((SocketAddr::new(ip, port), peer))
}

/// This host's interface addresses (none if they cannot be listed).
fn interface_ips() -> Vec<IpAddr> {
    let interfaces = if_addrs::get_if_addrs().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list network interfaces; reporting loopback only");
        Vec::new()
    });
    interfaces.iter().map(|i| i.ip()).collect()
}

/// The addresses a listener bound to `bound` can be reached at: `bound`
/// itself, or for an unspecified address (0.0.0.0, ::) one per local
/// interface address of that family, so peers never learn "0.0.0.0".
fn reachable_addrs(bound: SocketAddr, interfaces: &[IpAddr]) -> Vec<Multiaddr> {
    if !bound.ip().is_unspecified() {
        return vec![to_multiaddr(bound)];
    }
    let mut ips: Vec<IpAddr> =
        interfaces.iter().copied().filter(|ip| ip.is_ipv4() == bound.is_ipv4() && !ip.is_unspecified()).collect();
    if ips.is_empty() {
        ips.push(if bound.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    ips.into_iter().map(|ip| to_multiaddr(SocketAddr::new(ip, bound.port()))).collect()
}

/// The multiaddr of a socket address.
pub fn to_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::from(addr.ip()).with(Protocol::Udp(addr.port())).with(Protocol::QuicV1).with(Protocol::Noise)
}

fn peer_id_of(link: &Link) -> PeerId {
    link.peer.keys.signing.peer_id()
}

impl Transport for CarrierTransport {
    type Output = Output;
    type Error = LinkError;
    type ListenerUpgrade = Ready<Result<Output, LinkError>>;
    type Dial = BoxFuture<'static, Result<Output, LinkError>>;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<LinkError>> {
        let Some((socket, None)) = parse_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        if self.endpoint.is_some() {
            // One UDP port per node: a second listener is not supported.
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let (endpoint, punch_socket) =
            quic::punching_endpoint(socket).map_err(|e| TransportError::Other(LinkError::Stream(e.to_string())))?;
        let punch_socket = Arc::new(punch_socket);
        self.punch_socket = Some(Arc::clone(&punch_socket));
        let bound = endpoint.local_addr().map_err(|e| TransportError::Other(LinkError::Stream(e.to_string())))?;
        let (tx, rx) = mpsc::channel(64);
        if let Some(port_guessing) = &self.port_guessing {
            port_guessing.attach(punch_socket, &tx);
        }
        self.ctx.tasks().spawn(accept_loop(endpoint.clone(), Arc::clone(&self.ctx), tx));
        let interfaces = interface_ips();
        self.ctx.set_local_nets(LocalNets::new(bound.ip(), &interfaces));
        let addrs = reachable_addrs(bound, &interfaces);
        for listen_addr in &addrs {
            self.events.push_back(TransportEvent::NewAddress { listener_id: id, listen_addr: listen_addr.clone() });
        }
        self.listener = Some((id, addrs));
        self.ctx.set_endpoint(endpoint.clone());
        self.endpoint = Some(endpoint);
        self.inbound = Some(rx);
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        match &self.listener {
            Some((listener, _)) if *listener == id => {
                self.inbound = None;
                self.listener = None;
                self.events.push_back(TransportEvent::ListenerClosed { listener_id: id, reason: Ok(()) });
                true
            }
            _ => false,
        }
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<LinkError>> {
        let Some((socket, peer)) = parse_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        // Whoever proposed it (Kademlia, identify, hole punching, the peer
        // cache), an address on a network we are not on is not dialed.
        if let Err(refusal) = self.ctx.admit_addr(socket) {
            tracing::debug!(%addr, %refusal, "not dialing a peer's address");
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        if opts.role.is_listener() {
            return self.punch(socket, peer).ok_or(TransportError::MultiaddrNotSupported(addr));
        }
        let unspecified: IpAddr =
            if socket.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
        let setup = |e: quic::QuicSetupError| TransportError::Other(LinkError::Stream(e.to_string()));
        let endpoint = match (&self.endpoint, opts.port_use) {
            (_, PortUse::New) => quic::client_endpoint(SocketAddr::new(unspecified, 0)).map_err(setup)?,
            (Some(endpoint), PortUse::Reuse) => endpoint.clone(),
            (None, PortUse::Reuse) => {
                let endpoint = quic::endpoint(SocketAddr::new(unspecified, 0)).map_err(setup)?;
                self.ctx.set_endpoint(endpoint.clone());
                self.endpoint = Some(endpoint.clone());
                endpoint
            }
        };
        // The peer id names the key we expect; the ledger says whose it is.
        let expected = peer.and_then(|p| super::did_of(&*self.ctx.ledger, &p));
        let ctx = Arc::clone(&self.ctx);
        Ok(async move {
            let link = ctx.dial(&endpoint, socket, expected).await?;
            Ok((peer_id_of(&link), LinkMuxer::new(link.connection)))
        }
        .boxed())
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TransportEvent<Self::ListenerUpgrade, LinkError>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        let Some((listener_id, addrs)) = &self.listener else { return Poll::Pending };
        let (listener_id, fallback) = (*listener_id, addrs.first().cloned().unwrap_or_else(Multiaddr::empty));
        loop {
            let Some(inbound) = self.inbound.as_mut() else { return Poll::Pending };
            let link = match inbound.poll_recv(cx) {
                Poll::Ready(Some(link)) => link,
                Poll::Ready(None) => {
                    self.listener = None;
                    return Poll::Ready(TransportEvent::ListenerClosed { listener_id, reason: Ok(()) });
                }
                Poll::Pending => return Poll::Pending,
            };
            // A punch waiting for this peer takes its link as its dial.
            let Some(link) = self.punches.claim(peer_id_of(&link), link) else { continue };
            let send_back_addr = to_multiaddr(link.connection.remote_address());
            // The address this connection reached us at, where the OS says.
            let local_addr = match (link.connection.local_ip(), parse_addr(&fallback)) {
                (Some(ip), Some((bound, _))) => to_multiaddr(SocketAddr::new(ip, bound.port())),
                _ => fallback,
            };
            let output = (peer_id_of(&link), LinkMuxer::new(link.connection));
            return Poll::Ready(TransportEvent::Incoming {
                listener_id,
                upgrade: future::ready(Ok(output)),
                local_addr,
                send_back_addr,
            });
        }
    }
}

/// Accepts connections, runs the handshake on each in its own task, and
/// hands admitted links to the transport.
async fn accept_loop(endpoint: quinn::Endpoint, ctx: Arc<LinkContext>, admitted: mpsc::Sender<Link>) {
    while let Some(incoming) = endpoint.accept().await {
        if admitted.is_closed() {
            break;
        }
        let (ctx, admitted) = (Arc::clone(&ctx), admitted.clone());
        let tasks = ctx.tasks().clone();
        tasks.spawn(async move {
            if let Ok(link) = ctx.accept(incoming).await
                && admitted.send(link.clone()).await.is_err()
            {
                link.connection.close(carrier_proto::handshake::Refusal::Shutdown.code().into(), b"");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use carrier_proto::identity::Identity;
    use carrier_proto::testing::TestNetwork;
    use libp2p::core::Endpoint;

    use super::*;
    use crate::ledger::{EmbeddedLedger, Ledger};
    use crate::link::LinkLimits;

    fn transport(device: Identity, net: &TestNetwork) -> CarrierTransport {
        let ledger = Arc::new(EmbeddedLedger::in_memory(net.ledger.clone()));
        let did = device.did();
        CarrierTransport::new(Arc::new(LinkContext::new(device, did, ledger as Arc<dyn Ledger>, LinkLimits::default())))
    }

    async fn next_event(t: &mut CarrierTransport) -> TransportEvent<Ready<Result<Output, LinkError>>, LinkError> {
        let event = future::poll_fn(|cx| Pin::new(&mut *t).poll(cx));
        tokio::time::timeout(std::time::Duration::from_secs(20), event).await.unwrap()
    }

    /// Listens on loopback; the address.
    async fn listen(t: &mut CarrierTransport) -> Multiaddr {
        t.listen_on(ListenerId::next(), "/ip4/127.0.0.1/udp/0/quic-v1/noise".parse().unwrap()).unwrap();
        match next_event(t).await {
            TransportEvent::NewAddress { listen_addr, .. } => listen_addr,
            _ => panic!("expected the listening address first"),
        }
    }

    #[tokio::test]
    async fn a_dial_for_a_new_port_leaves_from_a_port_of_its_own_and_others_from_the_listening_one() {
        let mut net = TestNetwork::new("ports");
        let (a, b) = (net.register_device(), net.register_device());
        let (mut a, mut b) = (transport(a, &net), transport(b, &net));
        let (a_addr, b_addr) = (listen(&mut a).await, listen(&mut b).await);
        let b_port = parse_addr(&b_addr).unwrap().0.port();
        for (port_use, from_listening_port) in [(PortUse::Reuse, true), (PortUse::New, false), (PortUse::Reuse, true)] {
            let dial = b.dial(a_addr.clone(), DialOpts { role: Endpoint::Dialer, port_use }).unwrap();
            let (_, link) = dial.await.unwrap();
            let TransportEvent::Incoming { send_back_addr, .. } = next_event(&mut a).await else {
                panic!("expected the dial to arrive")
            };
            let came_from = parse_addr(&send_back_addr).unwrap().0.port();
            assert_eq!(came_from == b_port, from_listening_port, "{port_use:?} came from port {came_from}");
            drop(link);
        }
    }

    #[test]
    fn unspecified_listen_address_is_reported_per_interface() {
        let addrs = reachable_addrs("0.0.0.0:4001".parse().unwrap(), &interface_ips());
        assert!(!addrs.is_empty());
        for addr in &addrs {
            let (socket, _) = parse_addr(addr).unwrap();
            assert!(socket.is_ipv4() && !socket.ip().is_unspecified() && socket.port() == 4001, "{addr}");
        }
        assert!(addrs.contains(&"/ip4/127.0.0.1/udp/4001/quic-v1/noise".parse().unwrap()));
        let fixed = reachable_addrs("127.0.0.1:9".parse().unwrap(), &interface_ips());
        assert_eq!(fixed, vec!["/ip4/127.0.0.1/udp/9/quic-v1/noise".parse::<Multiaddr>().unwrap()]);
    }

    #[test]
    fn parses_carrier_addresses_only() {
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1/noise".parse().unwrap();
        assert_eq!(parse_addr(&addr), Some(("127.0.0.1:4001".parse().unwrap(), None)));
        assert_eq!(to_multiaddr("127.0.0.1:4001".parse().unwrap()), addr);
        let v6: Multiaddr = "/ip6/::1/udp/9/quic-v1/noise".parse().unwrap();
        assert_eq!(parse_addr(&v6).map(|(s, _)| s), Some("[::1]:9".parse().unwrap()));
        for other in ["/ip4/127.0.0.1/udp/4001/quic-v1", "/ip4/127.0.0.1/tcp/4001", "/dns4/x/udp/1/quic-v1/noise"] {
            assert_eq!(parse_addr(&other.parse().unwrap()), None, "{other}");
        }
    }
}
