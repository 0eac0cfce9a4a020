//! The outbox delivery worker: delivers pending messages as soon as they are recorded
//! (the outbox wakes it) and on a slow poll for retries and for rows another process left;
//! once a minute it expires messages held past their retention and prunes expired
//! one-time codes and spent OAuth states. Replies the router hands over in memory (the
//! outbox's fast lane) are delivered without a scan.

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

/// Runs until `shutdown`; the delivery round in progress is finished first, and replies
/// handed over but not yet sent are put back in the table, due at once.
pub async fn run(outbox: Arc<Outbox>, settings: WorkerSettings, shutdown: CancellationToken) {
    // Until the table's pending rows are known, replies take the table lane.
    while let Err(e) = outbox.open_fast_lane().await {
        tracing::error!(error = %e, "reading the outbox failed; retrying shortly");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sleep_until(Instant::now() + settings.outbox_poll) => {}
        }
    }
    let mut next_expiry = Instant::now();
    let mut next_scan = Instant::now();
    loop {
        if Instant::now() >= next_expiry {
            housekeeping(&outbox, &settings).await;
            next_expiry = Instant::now() + EXPIRE_EVERY;
        }
        // Deliver while rounds have more ready. The table is scanned when rows were
        // added to it, and on the poll for retries and for rows another process left.
        let mut wait = settings.outbox_poll;
        let mut failed = false;
        loop {
            let scan = outbox.take_scan() || Instant::now() >= next_scan;
            if scan {
                next_scan = Instant::now() + settings.outbox_poll;
            }
            match outbox.deliver_round(scan).await {
                Ok(round) => {
                    if let Some(w) = round.wait {
                        wait = wait.min(w.max(MIN_WAIT));
                    }
                    if !round.more || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "outbox delivery round failed; retrying shortly");
                    failed = true;
                    break;
                }
            }
        }
        let until = if failed {
            // A poll's pause, then a scan: what the failed round took may be due again.
            next_scan = Instant::now() + settings.outbox_poll;
            next_scan
        } else {
            (Instant::now() + wait).min(next_scan.max(Instant::now() + MIN_WAIT))
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = outbox.woken() => {}
            _ = sleep_until(until) => {}
        }
    }
    if let Err(e) = outbox.return_handed_over().await {
        tracing::error!(error = %e, "returning handed-over replies to the table failed; they go once their lease runs out");
    }
    tracing::debug!("outbox worker stopped");
}

/// Once a minute: expire held messages, prune old event ids, expired codes and states,
/// and forget stale slow-chat entries.
async fn housekeeping(outbox: &Outbox, settings: &WorkerSettings) {
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
    if let Err(e) = outbox.tidy_lanes(EXPIRE_EVERY).await {
        tracing::error!(error = %e, "tidying the outbox lanes failed");
    }
}
