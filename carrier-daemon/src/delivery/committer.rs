//! Groups changes to the message store: whatever [`Op`]s arrived while the
//! last transaction was being written go into the next one, so the cost of
//! a commit (an fsync) is shared by every message in it.
//!
//! ```text
//!  submit(op, done) ─▶ queue ─▶ batch (all waiting, up to 8192) ─▶ one transaction
//!                               ─▶ each op's `done`, in submission order
//! ```
//!
//! Completions run in the order ops were submitted, on the daemon's
//! runtime, so callers may hand work on in order from them.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::store::{Applied, MessageStore, Op, StoreError};
use crate::tasks::Tasks;

/// Most ops in one transaction.
const BATCH: usize = 8192;

/// What runs once an op is on disk (or failed to get there), given the op
/// back.
pub(crate) type Done = Box<dyn FnOnce(Op, Result<Applied, Arc<StoreError>>) + Send>;

/// The store, and the queue in front of it.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<(Op, Done)>,
    store: Arc<Mutex<MessageStore>>,
}

impl Committer {
    /// Starts committing to `store` on `tasks`.
    pub(crate) fn start(store: MessageStore, tasks: &Tasks) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let store = Arc::new(Mutex::new(store));
        tasks.spawn_until_stop(run(Arc::clone(&store), rx));
        Self { queue, store }
    }

    /// Queues `op`; `done` runs once it is committed. Never calls `done`
    /// itself, so a caller may hold its own locks: once the daemon is
    /// stopping, an op is dropped unwritten, with `done` (whoever waits on
    /// it hears that it was dropped).
    pub(crate) fn submit(&self, op: Op, done: impl FnOnce(Result<Applied, Arc<StoreError>>) + Send + 'static) {
        self.submit_returning(op, move |_, applied| done(applied));
    }

    /// [`submit`](Self::submit), with `done` given the op back (so that
    /// what it carries need not be copied to be used afterwards).
    pub(crate) fn submit_returning(
        &self,
        op: Op,
        done: impl FnOnce(Op, Result<Applied, Arc<StoreError>>) + Send + 'static,
    ) {
        if self.queue.send((op, Box::new(done))).is_err() {
            tracing::debug!("the message store is closed; a change was not written");
        }
    }

    /// Reads the store (a short read transaction).
    pub(crate) fn read<T>(&self, read: impl FnOnce(&MessageStore) -> T) -> T {
        read(&self.store.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

async fn run(store: Arc<Mutex<MessageStore>>, mut queue: mpsc::UnboundedReceiver<(Op, Done)>) {
    // One batch's ops and completions, allocated once: a batch is a few
    // MiB at its largest, and fresh memory of that size costs page faults.
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let store = Arc::clone(&store);
        let written = tokio::task::spawn_blocking(move || {
            let applied = store.lock().unwrap_or_else(|p| p.into_inner()).apply(batch.iter().map(|(op, _)| op));
            (batch, applied)
        });
        let applied = match written.await {
            Ok((taken_back, applied)) => {
                batch = taken_back;
                applied
            }
            // The blocking pool is shutting down: so is the daemon.
            Err(_) => return,
        };
        match applied {
            Ok(applied) => {
                for ((op, done), applied) in batch.drain(..).zip(applied) {
                    done(op, Ok(applied));
                }
            }
            Err(error) => {
                tracing::error!(%error, ops = batch.len(), "could not write to the message store");
                let error = Arc::new(error);
                for (op, done) in batch.drain(..) {
                    done(op, Err(Arc::clone(&error)));
                }
            }
        }
    }
}
