//! The app-socket connections that have not proved an app key yet. There
//! are at most [`MAX_WAITING`]; a new connection past that evicts the
//! oldest, so idle connections cannot lock apps out: an app that sends its
//! hello at once is through long before it could be the oldest.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::observe::Counters;

/// Most connections waiting for their hello at once.
pub(super) const MAX_WAITING: usize = 64;

/// Connections waiting for their hello, oldest first.
#[derive(Debug)]
pub(super) struct Waiting {
    queue: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
    next_id: AtomicU64,
    /// Where evictions are counted (`app_socket_evicted`).
    counters: Arc<Counters>,
}

/// One waiting connection's place; it leaves the queue when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    id: u64,
    waiting: Arc<Waiting>,
    evicted: Option<oneshot::Receiver<()>>,
}

impl Waiting {
    /// No connection waiting yet.
    pub(super) fn new(counters: Arc<Counters>) -> Self {
        Self { queue: Mutex::default(), next_id: AtomicU64::new(0), counters }
    }

    /// A place for a new connection, evicting the oldest if all are taken.
    pub(super) fn admit(self: &Arc<Self>) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        while queue.len() >= MAX_WAITING {
            if let Some((_, oldest)) = queue.pop_front() {
                let _ = oldest.send(());
                self.counters.count("app_socket_evicted");
            }
        }
        queue.push_back((id, tx));
        Slot { id, waiting: Arc::clone(self), evicted: Some(rx) }
    }

    /// Connections waiting now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Slot {
    /// Resolves if this connection is evicted. Cancel-safe.
    pub(super) async fn evicted(&mut self) {
        if let Some(rx) = &mut self.evicted {
            if rx.await.is_ok() {
                return;
            }
            // The queue dropped its end without evicting: it never will.
            self.evicted = None;
        }
        std::future::pending().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut queue = self.waiting.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = queue.iter().position(|(id, _)| *id == self.id) {
            queue.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_connection_evicts_the_oldest_and_a_left_one_frees_its_place() {
        let counters = Arc::new(Counters::default());
        let waiting = Arc::new(Waiting::new(Arc::clone(&counters)));
        let evicted = || counters.snapshot().get("app_socket_evicted").copied().unwrap_or(0);
        let mut slots: Vec<Slot> = (0..MAX_WAITING).map(|_| waiting.admit()).collect();
        assert_eq!(waiting.len(), MAX_WAITING);
        let _newest = waiting.admit();
        assert_eq!((waiting.len(), evicted()), (MAX_WAITING, 1));
        let mut oldest = slots.remove(0);
        tokio::time::timeout(std::time::Duration::from_secs(1), oldest.evicted()).await.expect("not evicted");
        // One that authenticated leaves, and makes room without evicting.
        drop(slots.pop());
        let _another = waiting.admit();
        assert_eq!((waiting.len(), evicted()), (MAX_WAITING, 1));
        let mut second = slots.remove(0);
        let still = tokio::time::timeout(std::time::Duration::from_millis(50), second.evicted()).await;
        assert!(still.is_err(), "the second oldest was evicted too");
    }
}
