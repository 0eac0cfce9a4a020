//! Background workers: the "how" of work that happens after a request: the outbox
//! delivery loop ([`register_all`]) and the apalis play checks ([`play_check::run`]).

pub mod deliver;
pub mod play_check;

use std::sync::Arc;
use std::time::Duration;

use segue_bot::{Outbox, Platform};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Worker settings from configuration.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// How often the outbox is scanned when nothing wakes it.
    pub outbox_poll: Duration,
    /// How long held messages are kept, per platform that holds them.
    pub retention: Vec<(Platform, Duration)>,
}

/// Starts every worker; each stops when `shutdown` is cancelled.
pub fn register_all(
    outbox: Arc<Outbox>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    vec![tokio::spawn(deliver::run(outbox, settings, shutdown))]
}
