//! When to dial an address again that a peer told us (through identify, and
//! kept in the peer cache): at once the first time, then after a delay that
//! doubles with every attempt up to [`MAX_DELAY`], and afresh once a link is
//! up. So a cache full of dead or hostile addresses costs a few dials a
//! minute, not one every retry tick. Plain state, the clock passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;

/// The longest wait between two dials of one address.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(60);

/// Per-address dial schedule.
#[derive(Debug)]
pub(super) struct Backoff {
    first_delay: Duration,
    /// When each address may be dialled next, and the delay after that.
    due: HashMap<Multiaddr, (Instant, Duration)>,
}

impl Backoff {
    /// A schedule whose first retry comes after `first_delay`.
    pub(super) fn new(first_delay: Duration) -> Self {
        Self { first_delay, due: HashMap::new() }
    }

    /// Whether `addr` may be dialled at `now`; if so, the attempt is counted.
    pub(super) fn attempt(&mut self, addr: &Multiaddr, now: Instant) -> bool {
        match self.due.get_mut(addr) {
            Some((next, _)) if now < *next => false,
            Some((next, delay)) => {
                *next = now + *delay;
                *delay = (*delay * 2).min(MAX_DELAY);
                true
            }
            None => {
                self.due.insert(addr.clone(), (now + self.first_delay, (self.first_delay * 2).min(MAX_DELAY)));
                true
            }
        }
    }

    /// A link is up: every address starts afresh.
    pub(super) fn reset(&mut self) {
        self.due.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_its_cap_and_resets_on_a_link() {
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/9/quic-v1/noise".parse().unwrap();
        let mut backoff = Backoff::new(Duration::from_secs(2));
        let start = Instant::now();
        let mut dials = Vec::new();
        for second in 0..300u64 {
            let now = start + Duration::from_secs(second);
            if backoff.attempt(&addr, now) {
                dials.push(second);
            }
        }
        assert_eq!(&dials[..7], [0, 2, 6, 14, 30, 62, 122]);
        assert!(dials.windows(2).all(|w| w[1] - w[0] <= MAX_DELAY.as_secs()), "{dials:?}");
        backoff.reset();
        assert!(backoff.attempt(&addr, start + Duration::from_secs(300)));
    }
}
