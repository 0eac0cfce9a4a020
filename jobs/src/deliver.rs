//! The outbox delivery worker: delivers pending messages as soon as they are recorded
//! (the outbox wakes it) and on a slow poll for retries and for rows another process left;
//! once a minute it expires messages held past their retention and prunes expired
//! one-time codes and spent OAuth states.

use std::sync::Arc;
use std::time::Duration;

use segue_bot::Outbox;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::WorkerSettings;

/// Platform event ids are remembered this long for dedupe.
const SEEN_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// The shortest sleep after a rate-limited round.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// Runs until `shutdown`; the delivery round in progress is finished first.
pub async fn run(outbox: Arc<Outbox>, settings: WorkerSettings, shutdown: CancellationToken) {
    let mut next_expiry = Instant::now();
    loop {
        if Instant::now() >= next_expiry {
            for (platform, retention) in &settings.retention {
                if let Err(e) = outbox.expire_held(*platform, *retention).await {
                    tracing::error!(error = %e, "expiring held messages failed");
                }
            }
            if let Err(e) = outbox.prune_sightings(SEEN_KEPT).await {
                tracing::error!(error = %e, "pruning seen event ids failed");
            }
            let now = segue_bot::ids::now_millis();
            if let Err(e) = outbox.store().prune_expired(now).await {
                tracing::error!(error = %e, "pruning expired codes and states failed");
            }
            next_expiry = Instant::now() + EXPIRE_EVERY;
        }
        // Deliver while rounds make progress through full batches.
        let mut wait = settings.outbox_poll;
        loop {
            match outbox.deliver_due().await {
                Ok(round) => {
                    if let Some(w) = round.wait {
                        wait = wait.min(w.max(MIN_WAIT));
                    }
                    let full = round.due as u64 >= segue_bot::outbox::BATCH;
                    if !(full && round.attempted > 0) || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "outbox scan failed; retrying shortly");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = outbox.woken() => {}
            _ = sleep_until(Instant::now() + wait) => {}
        }
    }
    tracing::debug!("outbox worker stopped");
}
