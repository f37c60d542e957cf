//! Hole punching from the listening port, for DCUtR's "dial as listener".
//!
//! ```text
//!  A (dialed the circuit)                         B (accepted it, behind NAT)
//!     ◀──── DCUtR over the relayed link: addresses, then SYNC ────▶
//!  QUIC connect from A's listening port ──▶ │ B's NAT │ ◀── punch datagrams from
//!   (opens A's NAT towards B)               │         │     B's listening port
//!                                                            (open B's NAT towards A)
//!  B accepts A's connection as usual; the Carrier handshake admits it, and
//!  B's "dial" resolves with that link.
//! ```
//!
//! Punch datagrams start with a zero byte: QUIC v1 packets always set that
//! byte's fixed bit, so the peer's endpoint drops them without an answer.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::oneshot;

use crate::link::Link;

/// How long a punch waits for the peer's connection.
pub(super) const PUNCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Gap between punch datagrams: the first at once, then often while the
/// peer's first packets may still be in flight, then less often.
const GAPS_MS: [u64; 8] = [0, 10, 20, 50, 100, 200, 400, 800];
/// What a punch datagram carries (see the module docs).
const DATAGRAM: &[u8] = b"\0carrier hole punch";

/// Dials waiting for a punched connection, by peer.
pub(super) struct Punches<T = Link> {
    waiting: HashMap<PeerId, Vec<oneshot::Sender<T>>>,
}

impl<T> Default for Punches<T> {
    fn default() -> Self {
        Self { waiting: HashMap::new() }
    }
}

/// A punch's wait for its link. Dropped before taking it (the punch gave
/// up, or connecting won), a link handed over in the meantime is closed
/// rather than left open and unserved.
pub(super) struct Arrival(oneshot::Receiver<Link>);

impl Arrival {
    /// The link, once claimed for us.
    pub(super) async fn link(&mut self) -> Result<Link, oneshot::error::RecvError> {
        (&mut self.0).await
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.close();
        if let Ok(link) = self.0.try_recv() {
            // The peer has the link our own connect made.
            link.connection.close(0u32.into(), b"superseded");
        }
    }
}

impl Punches<Link> {
    /// [`expect`](Self::expect), as an [`Arrival`].
    pub(super) fn arrival(&mut self, peer: PeerId) -> Arrival {
        Arrival(self.expect(peer))
    }
}

impl<T> Punches<T> {
    /// Waits for the next admitted inbound link from `peer`.
    pub(super) fn expect(&mut self, peer: PeerId) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        self.waiting.retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
        self.waiting.entry(peer).or_default().push(tx);
        rx
    }

    /// Hands `link` to a punch waiting for its peer; gives it back if none
    /// is.
    pub(super) fn claim(&mut self, peer: PeerId, mut link: T) -> Option<T> {
        let Some(senders) = self.waiting.get_mut(&peer) else { return Some(link) };
        while let Some(sender) = senders.pop() {
            match sender.send(link) {
                Ok(()) => return None,
                Err(back) => link = back,
            }
        }
        self.waiting.remove(&peer);
        Some(link)
    }
}

/// Sends punch datagrams from `socket` to `target` until dropped.
pub(super) async fn punch(socket: Arc<UdpSocket>, target: SocketAddr) {
    let gaps = GAPS_MS.iter().chain(std::iter::repeat(&GAPS_MS[GAPS_MS.len() - 1]));
    for (sent, gap) in gaps.enumerate() {
        tokio::time::sleep(Duration::from_millis(*gap)).await;
        // A full send buffer only loses this datagram; the next goes out.
        if let Err(error) = socket.send_to(DATAGRAM, target)
            && error.kind() != std::io::ErrorKind::WouldBlock
        {
            tracing::debug!(%target, %error, sent, "punch datagram not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_punch_takes_its_peers_link_and_only_that() {
        let (peer, other) = (PeerId::random(), PeerId::random());
        let mut punches: Punches<u32> = Punches::default();
        // Nobody waits: the link goes on as an ordinary inbound one.
        assert_eq!(punches.claim(peer, 1), Some(1));
        drop(punches.expect(peer));
        let mut waiting = punches.expect(peer);
        // Another peer's link is not the one we punched for.
        assert_eq!(punches.claim(other, 2), Some(2));
        // A wait that gave up is skipped; the live one takes the link.
        assert_eq!(punches.claim(peer, 3), None);
        assert_eq!(waiting.try_recv(), Ok(3));
        // Once taken, the next link from the peer is ordinary again.
        assert_eq!(punches.claim(peer, 4), Some(4));
    }
}
