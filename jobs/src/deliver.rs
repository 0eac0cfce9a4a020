//! The outbox delivery worker: delivers pending messages as soon as they are recorded
//! (the outbox wakes it) and on a slow poll for retries and for rows another process left;
//! once a minute it expires messages held past their retention.

use std::sync::Arc;
use std::time::Duration;

use segue_bot::Outbox;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::WorkerSettings;

const EXPIRE_EVERY: Duration = Duration::from_secs(60);

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
            next_expiry = Instant::now() + EXPIRE_EVERY;
        }
        // Deliver until nothing is due (a full batch means there may be more).
        loop {
            match outbox.deliver_due().await {
                Ok(n) if n >= 200 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "outbox scan failed; retrying shortly");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = outbox.woken() => {}
            _ = sleep_until(Instant::now() + settings.outbox_poll) => {}
        }
    }
    tracing::debug!("outbox worker stopped");
}
