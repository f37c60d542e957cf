//! The app streams this device carries now, and who is at each end, so a
//! revocation or a key rotation on the ledger cuts them as it stops
//! messages: within moments of the ledger change reaching this daemon.
//!
//! ```text
//!  stream joined ─▶ LiveStreams::track(parties) ─▶ guard (its cut token)
//!  ledger update ─▶ each live stream: both apps still active, still hosted
//!                   where they were, with the keys they had? no ─▶ cut
//!  stream ends   ─▶ guard dropped ─▶ untracked
//! ```
//!
//! Both devices check on their own ledger copy: a daemon that has not yet
//! heard of the change keeps its end until the other end closes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use carrier_proto::identity::{Did, SigningPublicKey};
use tokio_util::sync::CancellationToken;

use crate::ledger::{Ledger, Policy};

/// Who is at the ends of one stream, as the ledger had them when it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parties {
    /// The app on this device.
    pub local_app: Did,
    /// Its key, as it authenticated.
    pub local_key: SigningPublicKey,
    /// The app at the other end.
    pub remote_app: Did,
    /// The device hosting it (this one, for two apps here).
    pub remote_device: Did,
    /// Its key when the stream opened.
    pub remote_key: SigningPublicKey,
}

impl Parties {
    /// Whether the ledger (as this device, `here`, holds it) still lets
    /// these two apps have this stream.
    pub(crate) fn allowed(&self, ledger: &dyn Ledger, here: &Did) -> bool {
        let local = ledger.app_key(&self.local_app, here).is_ok_and(|key| key == self.local_key);
        let remote = ledger.app_key(&self.remote_app, &self.remote_device).is_ok_and(|key| key == self.remote_key);
        let device = *here == self.remote_device || ledger.linkable(&self.remote_device).is_some();
        local && remote && device
    }
}

/// Every live app stream on this device.
#[derive(Debug, Default)]
pub(crate) struct LiveStreams {
    next: AtomicU64,
    live: Mutex<HashMap<u64, (Parties, CancellationToken)>>,
}

/// One tracked stream; untracked when dropped.
#[derive(Debug)]
pub(crate) struct LiveGuard {
    id: u64,
    cut: CancellationToken,
    streams: Weak<LiveStreams>,
}

impl LiveGuard {
    /// Cancelled when the ledger no longer allows the stream.
    pub(crate) fn cut(&self) -> CancellationToken {
        self.cut.clone()
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if let Some(streams) = self.streams.upgrade() {
            streams.live.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
        }
    }
}

impl LiveStreams {
    /// Tracks a stream between `parties`.
    pub(crate) fn track(self: &Arc<Self>, parties: Parties) -> LiveGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cut = CancellationToken::new();
        self.live.lock().unwrap_or_else(PoisonError::into_inner).insert(id, (parties, cut.clone()));
        LiveGuard { id, cut, streams: Arc::downgrade(self) }
    }

    /// Cuts every stream the ledger no longer allows; returns how many.
    pub(crate) fn enforce(&self, ledger: &dyn Ledger, here: &Did) -> usize {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cut = 0;
        for (parties, token) in live.values() {
            if !token.is_cancelled() && !parties.allowed(ledger, here) {
                tracing::info!(app = %parties.local_app, peer = %parties.remote_app, "cutting an app stream the ledger no longer allows");
                token.cancel();
                cut += 1;
            }
        }
        cut
    }

    /// Streams live now.
    pub(crate) fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}
