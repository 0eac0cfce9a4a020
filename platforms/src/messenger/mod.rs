//! The Facebook Messenger platform: Meta posts page events to `/webhooks/messenger`
//! (`webhook.rs`: verification GET, signed POSTs answered at once and handled in the
//! background, each sender's events in order), `inbound.rs` turns them into `Incoming`
//! (text, quick replies, postbacks); replies and notifications leave through the outbox
//! and `deliver.rs` (the Send API, `graph.rs`). Messenger's 24-hour rule is declared as
//! the deliverer's reply window: the outbox holds notifications for someone who hasn't
//! written within it, and their next message releases them. `profile.rs` sets the Get
//! Started button and the persistent menu from the command table.

mod deliver;
mod graph;
mod inbound;
mod profile;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use segue_bot::{CommandTable, Deliver, Platform, Secret};

use crate::{Adapter, AdapterContext};
pub use graph::GraphError;
pub use inbound::{Converted, Event, convert, parse};
pub use profile::{GET_STARTED, profile};

/// How long after a person's last message a page may message them freely.
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The Messenger settings from configuration.
#[derive(Clone, Debug)]
pub struct MessengerSettings {
    /// The page access token (Send API, Messenger Profile API).
    pub page_access_token: Secret,
    /// The Meta app's secret: webhook posts are signed with it (`X-Hub-Signature-256`).
    pub app_secret: Secret,
    /// What Meta sends as `hub.verify_token` when the webhook is set up.
    pub verify_token: Secret,
    /// The Graph API base, with its version and without a trailing slash.
    pub graph_url: String,
    /// Outbound messages per second overall (0: no limit, for benchmarks).
    pub max_per_second: f64,
}

/// The Messenger adapter.
#[derive(Clone, Debug)]
pub struct Messenger {
    settings: MessengerSettings,
    graph: graph::Graph,
    queues: Arc<webhook::Queues>,
}

impl Messenger {
    pub fn new(settings: MessengerSettings) -> Self {
        let graph = graph::Graph::new(&settings.graph_url, settings.page_access_token.clone());
        Self {
            settings,
            graph,
            queues: Arc::default(),
        }
    }

    /// Sets the Get Started button and the persistent menu from the command table
    /// (Messenger Profile API); returns how many menu items were set.
    pub async fn register_commands(&self, table: &CommandTable) -> Result<usize, GraphError> {
        let body = profile(table);
        let items = body["persistent_menu"][0]["call_to_actions"]
            .as_array()
            .map_or(0, Vec::len);
        self.graph.post("me/messenger_profile", &body).await?;
        Ok(items)
    }
}

impl Adapter for Messenger {
    fn platform(&self) -> Platform {
        Platform::Messenger
    }

    fn deliverer(&self) -> Arc<dyn Deliver> {
        Arc::new(deliver::MessengerDeliver::new(
            self.graph.clone(),
            self.settings.max_per_second,
        ))
    }

    fn routes(&self, cx: &AdapterContext) -> axum::Router {
        webhook::routes(webhook::State {
            router: cx.router.clone(),
            app_secret: self.settings.app_secret.clone(),
            verify_token: self.settings.verify_token.clone(),
            queues: self.queues.clone(),
        })
    }

    /// Sets the profile at start (retried in the background, like Telegram's command
    /// menu), and on shutdown waits for accepted events to be handled.
    fn spawn(&self, cx: &AdapterContext) -> Vec<tokio::task::JoinHandle<()>> {
        let this = self.clone();
        let router = cx.router.clone();
        let shutdown = cx.shutdown.clone();
        let setup = tokio::spawn(async move {
            let mut wait = Duration::from_millis(500);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    res = this.register_commands(&router.core().commands) => match res {
                        Ok(n) => {
                            tracing::info!(menu_items = n, "Messenger profile set (Get Started, persistent menu)");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "setting the Messenger profile failed");
                        }
                    },
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(300));
            }
        });
        let queues = self.queues.clone();
        let shutdown = cx.shutdown.clone();
        let drain = tokio::spawn(async move {
            shutdown.cancelled().await;
            queues.drained().await;
        });
        vec![setup, drain]
    }
}
