//! Fresh checkpoints: the sequencer dates its checkpoint anew while the log
//! is quiet, and every daemon warns when its newest checkpoint grows old,
//! so a frozen log (a dead sequencer, or this daemon cut off from it) is
//! told from a quiet one.
//!
//! ```text
//!  every check:  sequencer, log date older than fresh_checkpoint_s ─▶ redate (witnesses cosign it again)
//!                age (newest signature time) > stale_checkpoint_s  ─▶ warn once, count ledger_checkpoint_stale
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Ledger;
use crate::observe::Counters;
use crate::tasks::Tasks;

/// Longest wait between checks.
const MAX_CHECK: Duration = Duration::from_secs(60);

/// Keeps `ledger`'s checkpoint fresh (if it sequences) and warns when it is
/// stale. `fresh_s` and `stale_s` of 0 turn either off.
pub fn watch(ledger: Arc<dyn Ledger>, counters: Arc<Counters>, fresh_s: u64, stale_s: u64, tasks: &Tasks) {
    let every = [fresh_s, stale_s]
        .into_iter()
        .filter(|&s| s > 0)
        .map(|s| Duration::from_secs(s).div_f64(4.0))
        .min()
        .map_or(MAX_CHECK, |d| d.clamp(Duration::from_millis(250), MAX_CHECK));
    tasks.spawn_until_stop(async move {
        let mut warned = false;
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let dated = ledger.checkpoint().and_then(|c| c.log_time_s());
            if fresh_s > 0 && ledger.is_sequencer() && dated.is_some_and(|t| now_s.saturating_sub(t) >= fresh_s) {
                ledger.redate();
            }
            let Some((age_s, stale)) = ledger.freshness() else { continue };
            match (stale, warned) {
                (true, false) => {
                    counters.count("ledger_checkpoint_stale");
                    tracing::warn!(
                        age_s,
                        stale_after_s = stale_s,
                        "no fresh checkpoint: the sequencer may be gone, or this daemon cut off from it"
                    );
                }
                (false, true) => tracing::info!(age_s, "a fresh checkpoint again"),
                _ => {}
            }
            warned = stale;
        }
    });
}
