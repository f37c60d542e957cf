//! The one loop that drives a catch-up (`carrier_proto::ledger::CatchUp`)
//! with a peer's answers: ledger sync, join connections and `carrierctl
//! ledger publish` each supply the IO (how a [`Fetch`] is asked), and the
//! ledger checks and applies each answer atomically ([`Ledger::take`]).

use std::future::Future;

use carrier_proto::ledger::{Answer, CatchUp, Fetch, Fork};
use carrier_proto::pb;

use super::{ExtendError, Ledger, Taken, answer_proofs};

/// How a catch-up ended.
#[derive(Debug)]
pub enum Followed {
    /// The ledger holds the target now; this many entries were applied.
    Reached(u64),
    /// The target does not extend our checkpoint: evidence of a fork.
    Fork(Box<Fork>),
}

/// Why a catch-up stopped short.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FollowError<E: std::error::Error + 'static> {
    /// Asking the peer failed.
    #[error(transparent)]
    Fetch(E),
    /// A proof hash in the answer is not 32 bytes.
    #[error("the answer holds a malformed proof")]
    Malformed,
    /// The answer did not prove out, or could not be stored.
    #[error(transparent)]
    Refused(#[from] ExtendError),
}

/// Asks `ask` for what `catch_up` needs until the ledger holds its target.
pub async fn follow<E, F, Fut>(
    ledger: &dyn Ledger,
    mut catch_up: Box<CatchUp>,
    mut ask: F,
) -> Result<Followed, FollowError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(Fetch) -> Fut,
    Fut: Future<Output = Result<pb::SyncEntries, E>>,
{
    let mut applied = 0;
    while let Some(fetch) = catch_up.fetch(ledger.head().height) {
        let reply = ask(fetch).await.map_err(FollowError::Fetch)?;
        let (proof, prefix) =
            answer_proofs(&reply.proof, &reply.prefix_root, &reply.prefix_proof).ok_or(FollowError::Malformed)?;
        let prefix = prefix.as_ref().map(|(root, proof)| (*root, proof.as_slice()));
        match ledger.take(&mut catch_up, Answer { entries: &reply.entries, proof: &proof, prefix }) {
            Ok(Taken::Applied(n)) => applied += n,
            Ok(Taken::Fork(fork)) => return Ok(Followed::Fork(fork)),
            // Another catch-up grew the ledger meanwhile: ask from there.
            Err(ExtendError::Moved) => {}
            Err(error) => return Err(FollowError::Refused(error)),
        }
    }
    Ok(Followed::Reached(applied))
}
