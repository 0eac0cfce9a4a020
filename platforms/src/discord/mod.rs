//! The Discord platform (serenity): slash commands arrive as interactions, over the
//! gateway (`gateway.rs`, serenity's client) or at `POST /webhooks/discord` (`webhook.rs`,
//! Ed25519-verified). Both are converted to `Incoming` (`inbound.rs`), answered within
//! Discord's 3 seconds (`respond.rs`: at once, or deferred then edited), and
//! notifications leave through the outbox and `deliver.rs` (DMs and channel messages).
//! `commands.rs` turns the command table into slash command definitions; `rest.rs` is
//! the REST client, keeping Discord's rate-limit buckets.

mod commands;
mod deliver;
mod gateway;
mod inbound;
mod respond;
mod rest;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use segue_bot::{CommandTable, Deliver, Platform, Secret};
use serenity::interactions_endpoint::Verifier;

use crate::{Adapter, AdapterContext};
pub use commands::definitions;
pub use rest::RestError;

/// How interactions reach Segue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Over the gateway websocket (INTERACTION_CREATE): no public URL needed.
    Gateway,
    /// Discord posts them to `<public_url>/webhooks/discord` (the Interactions Endpoint
    /// URL in the developer portal).
    Interactions,
}

/// The Discord settings from configuration.
#[derive(Clone)]
pub struct DiscordSettings {
    pub token: Secret,
    pub application_id: String,
    /// The application's Ed25519 public key (checked with [`parse_public_key`]); needed
    /// in interactions mode.
    pub public_key: Option<PublicKey>,
    /// Discord's base URL (`https://discord.com`); REST calls go to `<api_url>/api/v10`.
    pub api_url: String,
    pub mode: Mode,
    /// Register commands in this guild (instant) instead of globally.
    pub guild_id: Option<String>,
    /// How long a handler may run before the interaction is deferred (Discord allows 3 s).
    pub defer_after: Duration,
    /// Outbound messages per second overall (0: no limit).
    pub max_per_second: f64,
}

impl std::fmt::Debug for DiscordSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordSettings")
            .field("application_id", &self.application_id)
            .field("api_url", &self.api_url)
            .field("mode", &self.mode)
            .field("guild_id", &self.guild_id)
            .finish_non_exhaustive()
    }
}

/// An application's public key, parsed once at start.
#[derive(Clone)]
pub struct PublicKey(Verifier);

/// `discord.public_key` is not a 64-digit hex Ed25519 public key.
#[derive(Debug, thiserror::Error)]
#[error(
    "discord.public_key must be the application's public key: 64 hex digits (General Information in the developer portal)"
)]
pub struct BadPublicKey;

/// Parses the hex public key the developer portal shows.
pub fn parse_public_key(hex: &str) -> Result<PublicKey, BadPublicKey> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(BadPublicKey);
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| BadPublicKey)?;
    }
    Verifier::try_new(bytes)
        .map(PublicKey)
        .map_err(|_| BadPublicKey)
}

impl PublicKey {
    /// Whether `signature` (hex) signs `timestamp || body`.
    pub fn verify(&self, signature: &str, timestamp: &str, body: &[u8]) -> bool {
        self.0.verify(signature, timestamp, body).is_ok()
    }
}

/// The Discord adapter.
#[derive(Clone)]
pub struct Discord {
    settings: Arc<DiscordSettings>,
    rest: Arc<rest::Rest>,
}

impl std::fmt::Debug for Discord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discord")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Discord {
    pub fn new(settings: DiscordSettings) -> Self {
        let rest = rest::Rest::new(
            &settings.api_url,
            settings.token.clone(),
            settings.application_id.clone(),
        );
        Self {
            settings: Arc::new(settings),
            rest: Arc::new(rest),
        }
    }

    /// Pushes the command table as slash commands (one bulk overwrite), to
    /// `discord.guild_id` when set, else globally. Returns how many were registered.
    pub async fn register_commands(&self, table: &CommandTable) -> Result<usize, RestError> {
        let defs = definitions(table);
        let count = defs.len();
        self.rest
            .bulk_overwrite_commands(self.settings.guild_id.as_deref(), &defs)
            .await?;
        Ok(count)
    }
}

impl Adapter for Discord {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    fn deliverer(&self) -> Arc<dyn Deliver> {
        Arc::new(deliver::DiscordDeliver::new(
            self.rest.clone(),
            self.settings.max_per_second,
        ))
    }

    fn routes(&self, cx: &AdapterContext) -> axum::Router {
        match (self.settings.mode, &self.settings.public_key) {
            (Mode::Interactions, Some(key)) => webhook::routes(webhook::State {
                responder: respond::Responder::new(
                    cx.router.clone(),
                    self.rest.clone(),
                    self.settings.defer_after,
                ),
                key: key.clone(),
            }),
            _ => axum::Router::new(),
        }
    }

    fn spawn(&self, cx: &AdapterContext) -> Vec<tokio::task::JoinHandle<()>> {
        let this = self.clone();
        let cx = cx.clone();
        vec![tokio::spawn(async move {
            // Commands are pushed at every start, like Telegram's menu.
            match this.register_commands(&cx.router.core().commands).await {
                Ok(n) => tracing::info!(commands = n, "discord slash commands registered"),
                Err(e) => tracing::warn!(error = %e, "could not register discord slash commands"),
            }
            if this.settings.mode == Mode::Gateway {
                let responder = respond::Responder::new(
                    cx.router.clone(),
                    this.rest.clone(),
                    this.settings.defer_after,
                );
                gateway::run(&this.settings, responder, cx.shutdown.clone()).await;
            }
        })]
    }
}
