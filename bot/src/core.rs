//! The core's shared state, built once at start-up and handed to the router, handlers,
//! workers and platform adapters.

use std::sync::Arc;
use std::time::Duration;

use crate::command::CommandTable;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::sharing::Sharing;
use crate::spotify::Spotify;
use crate::store::Store;

/// Settings the core takes from configuration.
#[derive(Clone, Debug)]
pub struct CoreSettings {
    /// Commands a user may send at once …
    pub user_burst: u32,
    /// … refilled at this rate.
    pub user_per_second: f64,
    /// The public base URL (for links in messages).
    pub public_url: String,
    /// How long undelivered web console messages are kept.
    pub web_retention: Duration,
}

/// Everything handlers and adapters share.
#[derive(Debug)]
pub struct Core {
    pub store: Arc<Store>,
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<Metrics>,
    pub commands: CommandTable,
    pub settings: CoreSettings,
    /// Spotify, when `spotify.client_id` is set.
    pub spotify: Option<Arc<Spotify>>,
    /// Song sharing and its play checks (needs Spotify).
    pub sharing: Option<Arc<Sharing>>,
}

impl Core {
    /// A user's Spotify link was just made: the shares waiting for it start being watched.
    pub async fn spotify_linked(&self, user_id: i64) {
        if let Some(sharing) = &self.sharing
            && let Err(e) = sharing.resume(user_id).await
        {
            tracing::error!(error = %e, user_id, "could not resume watching shares");
        }
    }
}
