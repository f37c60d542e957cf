//! Who owns every task the daemon spawns, and the order they stop in.
//!
//! Every task belongs to a [`Tasks`] group: a task tracker (so the daemon
//! can wait until the group is empty) and two cancellation tokens:
//!
//! - `stop` asks the group's tasks to finish what they are doing: accept
//!   loops stop accepting, handlers finish their exchange and return;
//! - `abort` drops whatever is still running at its next await point.
//!
//! The daemon keeps two groups, `accepting` (listeners of the sockets and of
//! the network protocols) and `handlers` (everything they start), and stops
//! them in one order ([`shut_down`]):
//!
//! ```text
//!  stop accepting ─▶ drain handlers (until the deadline) ─▶ close links
//!                 ─▶ abort stragglers ─▶ nothing left running
//! ```

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A group of owned tasks that stop together.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
    abort: CancellationToken,
}

impl Tasks {
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` in this group. It ends on its own, or is dropped when
    /// the group is aborted; to end gracefully it watches [`stopping`](Self::stopping).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let abort = self.abort.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                _ = abort.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Runs `task` in this group until it ends or the group is asked to
    /// stop, whichever comes first: for work with nothing to finish.
    pub fn spawn_until_stop<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Resolves once the group is asked to stop.
    pub async fn stopping(&self) {
        self.stop.cancelled().await
    }

    /// Whether the group was asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Asks every task to finish; spawning stays possible (a stopping
    /// handler may still hand work on), but the group can now become empty.
    pub fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
    }

    /// Drops every task still running.
    pub fn abort(&self) {
        self.stop();
        self.abort.cancel();
    }

    /// Waits until every task has ended (call [`stop`](Self::stop) first).
    pub async fn wait(&self) {
        self.tracker.wait().await
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// True when no task is running.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

/// What [`shut_down`] did, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Handlers that were still running at the drain deadline and were aborted.
    pub aborted: usize,
}

/// Stops `accepting`, drains `handlers` for at most `drain`, runs
/// `close_links`, then aborts whatever is left in both groups and waits
/// until nothing runs.
pub async fn shut_down<F>(accepting: &Tasks, handlers: &Tasks, drain: Duration, close_links: F) -> Stopped
where
    F: Future<Output = ()>,
{
    accepting.stop();
    accepting.wait().await;
    handlers.stop();
    let drained = tokio::time::timeout(drain, handlers.wait()).await.is_ok();
    let aborted = if drained { 0 } else { handlers.len() };
    close_links.await;
    accepting.abort();
    handlers.abort();
    handlers.wait().await;
    Stopped { aborted }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Log = Arc<Mutex<Vec<&'static str>>>;

    fn note(log: &Log, what: &'static str) {
        log.lock().unwrap_or_else(|p| p.into_inner()).push(what);
    }

    /// A guard that notes when its task is dropped (ended or aborted).
    struct OnDrop(Log, &'static str);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            note(&self.0, self.1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_accepting_drains_closes_links_then_aborts_stragglers() {
        let (accepting, handlers) = (Tasks::new(), Tasks::new());
        let log: Log = Arc::default();
        // An accept loop: runs until asked to stop.
        let (a, l) = (accepting.clone(), log.clone());
        accepting.spawn(async move {
            let _guard = OnDrop(l, "accept loop ended");
            a.stopping().await;
        });
        // A handler that needs a second to finish once asked.
        let (h, l) = (handlers.clone(), log.clone());
        handlers.spawn(async move {
            let _guard = OnDrop(l.clone(), "handler ended");
            h.stopping().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            note(&l, "handler finished its work");
        });
        // A straggler that ignores the stop request.
        let l = log.clone();
        handlers.spawn(async move {
            let _guard = OnDrop(l, "straggler aborted");
            std::future::pending::<()>().await;
        });
        assert_eq!((accepting.len(), handlers.len()), (1, 2));

        let started = tokio::time::Instant::now();
        let l = log.clone();
        let stopped = shut_down(&accepting, &handlers, Duration::from_secs(5), async move {
            note(&l, "links closed");
        })
        .await;

        assert_eq!(
            *log.lock().unwrap(),
            ["accept loop ended", "handler finished its work", "handler ended", "links closed", "straggler aborted"]
        );
        assert_eq!(stopped, Stopped { aborted: 1 });
        // The drain waited its full deadline for the straggler, no longer.
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(accepting.is_empty() && handlers.is_empty(), "no task outlives shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drained_group_does_not_wait_for_the_deadline() {
        let (accepting, handlers) = (Tasks::new(), Tasks::new());
        let h = handlers.clone();
        handlers.spawn(async move { h.stopping().await });
        let started = tokio::time::Instant::now();
        let stopped = shut_down(&accepting, &handlers, Duration::from_secs(30), async {}).await;
        assert_eq!(stopped, Stopped { aborted: 0 });
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(handlers.is_empty());
    }
}
