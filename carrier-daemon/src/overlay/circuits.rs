//! Relayed links as libp2p sees them: circuit relay v2's client transport,
//! upgraded with the Carrier handshake end to end (`link::circuit`) and
//! yamux over the sealed stream.
//!
//! ```text
//!  /…/p2p/<relay>/p2p-circuit/p2p/<peer>
//!    relay::client::Transport ─▶ circuit (bytes through the relay)
//!      ─▶ LinkContext::dial_circuit / accept_circuit (Noise, ledger)
//!      ─▶ yamux over SealedStream ─▶ (PeerId, StreamMuxerBox)
//! ```
//!
//! Direct links need no second multiplexer (QUIC streams are libp2p
//! substreams); a circuit is one byte stream, so yamux splits it.

use std::sync::Arc;

use carrier_proto::handshake::circuit;
use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::core::ConnectedPoint;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, relay, yamux};

use crate::link::{LinkContext, LinkError};

/// What a relayed link yields: the peer (by its current key) and its muxer.
pub type Output = (PeerId, StreamMuxerBox);

/// The socket address dialed to reach `addr`: its own for a direct
/// Carrier address, its relay's for a circuit address.
pub(crate) fn dialed_socket(addr: &Multiaddr) -> Option<std::net::SocketAddr> {
    if let Some((socket, _)) = super::transport::parse_addr(addr) {
        return Some(socket);
    }
    parse_circuit_addr(addr)?;
    let relay: Multiaddr = addr.iter().take_while(|p| !matches!(p, Protocol::P2pCircuit)).collect();
    super::transport::parse_addr(&relay).map(|(socket, _)| socket)
}

/// The relay and the peer a circuit address names:
/// `/…/p2p/<relay>/p2p-circuit[/p2p/<peer>]`.
pub fn parse_circuit_addr(addr: &Multiaddr) -> Option<(PeerId, Option<PeerId>)> {
    let parts: Vec<Protocol<'_>> = addr.iter().collect();
    let circuit = parts.iter().position(|p| matches!(p, Protocol::P2pCircuit))?;
    let Some(Protocol::P2p(relay)) = circuit.checked_sub(1).and_then(|i| parts.get(i)) else {
        return None;
    };
    // The relay's own address must be one our transport dials.
    let relay_addr: Multiaddr = parts[..circuit].iter().cloned().collect();
    super::transport::parse_addr(&relay_addr)?;
    match &parts[circuit + 1..] {
        [] => Some((*relay, None)),
        [Protocol::P2p(peer)] => Some((*relay, Some(*peer))),
        _ => None,
    }
}

/// Whether `addr` goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Upgrades one circuit of the relay client transport into a link.
pub fn upgrade(
    ctx: Arc<LinkContext>,
    local: PeerId,
    connection: relay::client::Connection,
    endpoint: ConnectedPoint,
) -> BoxFuture<'static, Result<Output, LinkError>> {
    async move {
        let (link, dialer) = match &endpoint {
            ConnectedPoint::Dialer { address, .. } => {
                let Some((_, Some(peer))) = parse_circuit_addr(address) else {
                    return Err(LinkError::Stream(format!("not a circuit address: {address}")));
                };
                let expected = super::did_of(&*ctx.ledger, &peer)
                    .ok_or_else(|| LinkError::Stream(format!("{peer} is not a key on the ledger")))?;
                let binding = circuit::binding(&local.to_bytes(), &peer.to_bytes());
                (ctx.dial_circuit(connection, binding, expected).await?, true)
            }
            ConnectedPoint::Listener { send_back_addr, .. } => {
                // The relay names the dialer as `/p2p/<src>`.
                let Some(Protocol::P2p(src)) = send_back_addr.iter().last() else {
                    return Err(LinkError::Stream(format!("circuit from no named peer: {send_back_addr}")));
                };
                let claimed = super::did_of(&*ctx.ledger, &src);
                let binding = circuit::binding(&src.to_bytes(), &local.to_bytes());
                (ctx.accept_circuit(connection, binding, claimed).await?, false)
            }
        };
        let peer = link.peer.keys.signing.peer_id();
        let muxer = multiplex(link.stream, dialer).await?;
        tracing::info!(peer = %link.peer.did, "relayed link up");
        Ok((peer, muxer))
    }
    .boxed()
}

async fn multiplex<T>(stream: T, dialer: bool) -> Result<StreamMuxerBox, LinkError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = yamux::Config::default();
    let info = "/yamux/1.0.0";
    let muxer = match dialer {
        true => config.upgrade_outbound(stream, info).await,
        false => config.upgrade_inbound(stream, info).await,
    };
    muxer.map(StreamMuxerBox::new).map_err(|e| LinkError::Stream(format!("yamux over a circuit: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_addresses_name_their_relay_and_peer() {
        let (relay, peer) = (PeerId::random(), PeerId::random());
        let base = format!("/ip4/192.0.2.1/udp/7640/quic-v1/noise/p2p/{relay}/p2p-circuit");
        assert_eq!(parse_circuit_addr(&base.parse().unwrap()), Some((relay, None)));
        assert_eq!(parse_circuit_addr(&format!("{base}/p2p/{peer}").parse().unwrap()), Some((relay, Some(peer))));
        for bad in [
            // No relay peer id.
            "/ip4/192.0.2.1/udp/7640/quic-v1/noise/p2p-circuit".to_string(),
            // A relay reached over a transport we do not speak.
            format!("/ip4/192.0.2.1/tcp/7640/p2p/{relay}/p2p-circuit"),
            // Something after the peer.
            format!("{base}/p2p/{peer}/p2p-circuit"),
            // Not relayed.
            format!("/ip4/192.0.2.1/udp/7640/quic-v1/noise/p2p/{relay}"),
        ] {
            assert_eq!(parse_circuit_addr(&bad.parse().unwrap()), None, "{bad}");
        }
        assert!(is_relayed(&base.parse().unwrap()));
    }
}
