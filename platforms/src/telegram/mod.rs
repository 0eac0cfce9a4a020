//! The Telegram platform (teloxide): updates arrive by long polling or at
//! `POST /webhooks/telegram`, are converted to `Incoming` (`inbound.rs`) and handed to
//! the router one at a time, in order; replies and notifications leave through the outbox
//! and `deliver.rs` (sendMessage with inline keyboards) under Telegram's rate limits.

mod deliver;
mod inbound;
mod polling;
mod webhook;

use std::sync::{Arc, OnceLock};

use segue_bot::{CommandTable, Deliver, Platform, Secret};
use teloxide::Bot;
use teloxide::prelude::Requester;
use teloxide::types::{AllowedUpdate, BotCommand};

use crate::{Adapter, AdapterContext};
pub use inbound::{Converted, convert};

/// How updates reach Segue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Segue asks Telegram for updates (getUpdates): works anywhere, no public URL.
    Polling,
    /// Telegram posts updates to `<public_url>/webhooks/telegram`.
    Webhook,
}

/// The Telegram settings from configuration.
#[derive(Clone, Debug)]
pub struct TelegramSettings {
    pub token: Secret,
    /// The Bot API base URL, without a trailing slash.
    pub api_url: String,
    pub mode: Mode,
    /// `X-Telegram-Bot-Api-Secret-Token` for webhook mode (1-256 of A-Z a-z 0-9 _ -).
    pub webhook_secret: Secret,
    /// `<public_url>/webhooks/telegram`.
    pub webhook_url: String,
    pub limits: Limits,
}

/// Telegram's outbound limits (0 lifts one).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Messages per second overall (Telegram: about 30).
    pub max_per_second: f64,
    /// Messages per second to one chat (Telegram: about 1, short bursts allowed).
    pub max_per_chat_per_second: f64,
    /// Messages per minute to one group (Telegram: 20).
    pub max_per_group_per_minute: f64,
}

/// The updates Segue asks Telegram for.
pub const ALLOWED_UPDATES: [AllowedUpdate; 3] = [
    AllowedUpdate::Message,
    AllowedUpdate::EditedMessage,
    AllowedUpdate::CallbackQuery,
];

/// The Telegram adapter.
#[derive(Debug, Clone)]
pub struct Telegram {
    bot: Bot,
    settings: TelegramSettings,
    /// The bot's username, from getMe (for `/cmd@username` in groups).
    me: Arc<OnceLock<String>>,
}

/// A configuration that can't make a bot.
#[derive(Debug, thiserror::Error)]
#[error("telegram.api_url is not a valid URL: {0}")]
pub struct BadApiUrl(String);

impl Telegram {
    pub fn new(settings: TelegramSettings) -> Result<Self, BadApiUrl> {
        let url = settings
            .api_url
            .trim_end_matches('/')
            .parse()
            .map_err(|e: url::ParseError| BadApiUrl(e.to_string()))?;
        let bot = Bot::new(settings.token.expose()).set_api_url(url);
        Ok(Self {
            bot,
            settings,
            me: Arc::default(),
        })
    }

    /// Pushes the command table to Telegram's command menu (setMyCommands).
    pub async fn register_commands(
        &self,
        table: &CommandTable,
    ) -> Result<(), teloxide::RequestError> {
        let commands = table.iter().map(|c| BotCommand::new(c.name, c.description));
        self.bot.set_my_commands(commands).await?;
        Ok(())
    }
}

impl Adapter for Telegram {
    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    fn deliverer(&self) -> Arc<dyn Deliver> {
        Arc::new(deliver::TelegramDeliver::new(
            self.bot.clone(),
            &self.settings.limits,
        ))
    }

    fn routes(&self, cx: &AdapterContext) -> axum::Router {
        match self.settings.mode {
            Mode::Webhook => webhook::routes(webhook::State {
                router: cx.router.clone(),
                bot: self.bot.clone(),
                secret: self.settings.webhook_secret.clone(),
                me: self.me.clone(),
            }),
            Mode::Polling => axum::Router::new(),
        }
    }

    fn spawn(&self, cx: &AdapterContext) -> Vec<tokio::task::JoinHandle<()>> {
        let this = self.clone();
        let cx = cx.clone();
        vec![tokio::spawn(async move { polling::start(this, cx).await })]
    }
}
