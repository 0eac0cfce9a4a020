//! Platform adapters, one folder each. An adapter converts its platform's events into the
//! core's `Incoming`, delivers `OutboundMessage`s through the platform's API (its
//! [`Deliver`] implementation), and may add HTTP routes (webhooks, the console) and
//! background tasks (polling, gateways). The composition root registers them.

pub mod discord;
pub mod http;
pub mod messenger;
pub mod telegram;
pub mod web;

use std::sync::Arc;

use segue_bot::{Deliver, Platform, Router};
use tokio_util::sync::CancellationToken;

/// What an adapter gets once the core is built.
#[derive(Clone, Debug)]
pub struct AdapterContext {
    pub router: Arc<Router>,
    /// Cancelled when the process shuts down: stop polling, end streams.
    pub shutdown: CancellationToken,
}

/// One platform, as the composition root sees it.
pub trait Adapter: Send + Sync {
    fn platform(&self) -> Platform;

    /// How messages reach this platform (registered with the outbox before the core exists).
    fn deliverer(&self) -> Arc<dyn Deliver>;

    /// HTTP routes this platform serves on the public listener.
    fn routes(&self, cx: &AdapterContext) -> axum::Router;

    /// Background tasks (polling, gateways); none by default.
    fn spawn(&self, _cx: &AdapterContext) -> Vec<tokio::task::JoinHandle<()>> {
        Vec::new()
    }
}
