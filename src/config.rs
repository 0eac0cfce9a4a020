//! Configuration, read in one place: built-in defaults, then the TOML file (`--config`,
//! else `$SEGUE_CONFIG`, else `./segue.toml` when present), then `SEGUE_<SECTION>__<KEY>`
//! environment variables. Everything else gets typed values from here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use segue_bot::Secret;
use serde::{Deserialize, Serialize};
use url::Url;

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub security: SecurityConfig,
    pub admin: AdminConfig,
    pub limits: LimitsConfig,
    pub web: WebConfig,
    pub telegram: TelegramConfig,
    pub discord: DiscordConfig,
    pub messenger: MessengerConfig,
    pub spotify: SpotifyConfig,
    pub sharing: SharingConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the public HTTP server listens.
    pub bind: SocketAddr,
    /// The public base URL (OAuth redirects, webhook URLs, links in messages).
    pub public_url: Url,
    /// How long a shutdown waits for requests in flight.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: Url::parse("http://127.0.0.1:8080").expect("valid default URL"),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` or `postgres://user@host/db`.
    pub url: Secret,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://segue.db?mode=rwc"),
            max_connections: 10,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Base64 of 32 bytes. Empty: read from (or generated into) `key_file`.
    pub secret_key: Secret,
    /// Where the generated secret key is kept (mode 0600), never in the database.
    pub key_file: PathBuf,
    /// The admin listener's password. Empty: a fresh one at each start, printed once.
    pub admin_token: Secret,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            secret_key: Secret::default(),
            key_file: PathBuf::from("segue.key"),
            admin_token: Secret::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin dashboard's own listener; keep it private.
    pub bind: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8081)),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Commands a user may send at once …
    pub user_burst: u32,
    /// … refilled at this rate.
    pub user_per_second: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            user_burst: 20,
            user_per_second: 1.0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the web console at `/console`.
    pub console: bool,
    /// Undelivered console messages are kept this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            console: true,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    Polling,
    Webhook,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot token from @BotFather; Telegram is enabled when it is set.
    pub token: Secret,
    /// The Bot API server (tests and self-hosted Bot API servers change it).
    pub api_url: Url,
    /// `polling` (no public URL needed) or `webhook` (POST /webhooks/telegram).
    pub mode: TelegramMode,
    /// The webhook's secret token. Empty: derived from the secret key.
    pub webhook_secret: Secret,
    /// Outbound messages per second overall (0: no limit, for benchmarks).
    pub max_per_second: f64,
    /// Outbound messages per second to one chat.
    pub max_per_chat_per_second: f64,
    /// Outbound messages per minute to one group.
    pub max_per_group_per_minute: f64,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            token: Secret::default(),
            api_url: Url::parse("https://api.telegram.org").expect("valid default URL"),
            mode: TelegramMode::Polling,
            webhook_secret: Secret::default(),
            max_per_second: 30.0,
            max_per_chat_per_second: 1.0,
            max_per_group_per_minute: 20.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscordMode {
    Gateway,
    Interactions,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscordConfig {
    /// The bot token (Bot page of the application); Discord is enabled when it is set.
    pub token: Secret,
    /// The application id (General Information).
    pub application_id: String,
    /// The application's hex Ed25519 public key (General Information), for
    /// `POST /webhooks/discord`.
    pub public_key: String,
    /// Discord's base URL; REST calls go to `<api_url>/api/v10` (tests change it).
    pub api_url: Url,
    /// `gateway` (no public URL needed) or `interactions` (POST /webhooks/discord).
    pub mode: DiscordMode,
    /// Register commands in this guild only (instant) instead of globally.
    pub guild_id: String,
    /// How long a command may run before its answer is deferred (Discord allows 3 s).
    #[serde(with = "humantime_serde")]
    pub defer_after: Duration,
    /// Outbound messages per second overall (0: no limit, for benchmarks).
    pub max_per_second: f64,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        Self {
            token: Secret::default(),
            application_id: String::new(),
            public_key: String::new(),
            api_url: Url::parse("https://discord.com").expect("valid default URL"),
            mode: DiscordMode::Gateway,
            guild_id: String::new(),
            defer_after: Duration::from_millis(2000),
            max_per_second: 45.0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessengerConfig {
    /// The page access token; Messenger is enabled when it is set.
    pub page_access_token: Secret,
    /// The Meta app's secret, which signs webhook posts (`X-Hub-Signature-256`).
    pub app_secret: Secret,
    /// What Meta must send as `hub.verify_token` when the webhook is set up.
    pub verify_token: Secret,
    /// The Graph API base, with its version.
    pub graph_url: Url,
    /// Outbound messages per second overall (0: no limit, for benchmarks).
    pub max_per_second: f64,
    /// Notifications held outside the 24-hour window are kept this long, then expire.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for MessengerConfig {
    fn default() -> Self {
        Self {
            page_access_token: Secret::default(),
            app_secret: Secret::default(),
            verify_token: Secret::default(),
            graph_url: Url::parse("https://graph.facebook.com/v21.0").expect("valid default URL"),
            max_per_second: 250.0,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpotifyConfig {
    /// The app's client id from Spotify's developer dashboard; Spotify features are on
    /// when it is set.
    pub client_id: String,
    pub client_secret: Secret,
    /// The accounts service (authorize and token endpoints).
    pub accounts_url: Url,
    /// The Web API base.
    pub api_url: Url,
}

impl Default for SpotifyConfig {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret: Secret::default(),
            accounts_url: Url::parse("https://accounts.spotify.com").expect("valid default URL"),
            api_url: Url::parse("https://api.spotify.com/v1").expect("valid default URL"),
        }
    }
}

/// The play-check schedule: first check at `max(track length, min_first_check)` after
/// sharing, then every `fast_interval` for `fast_for`, then every `slow_interval` until
/// `give_up_after` after sharing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharingConfig {
    #[serde(with = "humantime_serde")]
    pub min_first_check: Duration,
    #[serde(with = "humantime_serde")]
    pub fast_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub fast_for: Duration,
    #[serde(with = "humantime_serde")]
    pub slow_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// How often the worker enqueues checks that have no job and expires unwatched shares.
    #[serde(with = "humantime_serde")]
    pub reconcile_every: Duration,
}

impl Default for SharingConfig {
    fn default() -> Self {
        let d = segue_bot::sharing::SharingSettings::default();
        Self {
            min_first_check: d.min_first_check,
            fast_interval: d.fast_interval,
            fast_for: d.fast_for,
            slow_interval: d.slow_interval,
            give_up_after: d.give_up_after,
            reconcile_every: d.reconcile_every,
        }
    }
}

impl SharingConfig {
    pub fn settings(&self) -> segue_bot::sharing::SharingSettings {
        segue_bot::sharing::SharingSettings {
            min_first_check: self.min_first_check,
            fast_interval: self.fast_interval,
            fast_for: self.fast_for,
            slow_interval: self.slow_interval,
            give_up_after: self.give_up_after,
            reconcile_every: self.reconcile_every,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `segue=debug,info`. `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: "text".to_owned(),
        }
    }
}

/// Keys whose environment values are always taken as text, never parsed as numbers.
const VERBATIM_KEYS: &[&str] = &[
    "database.url",
    "security.secret_key",
    "security.admin_token",
    "telegram.token",
    "telegram.webhook_secret",
    "discord.token",
    "discord.application_id",
    "discord.public_key",
    "discord.guild_id",
    "messenger.page_access_token",
    "messenger.app_secret",
    "messenger.verify_token",
    "spotify.client_id",
    "spotify.client_secret",
    "log.level",
];

/// A configuration that can't be used, with a message meant for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Which file to read: the `--config` flag, else `$SEGUE_CONFIG`, else `./segue.toml`
    /// when it exists.
    pub fn file(flag: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
        let chosen = flag
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("SEGUE_CONFIG").map(PathBuf::from));
        match chosen {
            Some(p) if !p.exists() => Err(ConfigError::MissingFile(p)),
            Some(p) => Ok(Some(p)),
            None => Ok(Some(PathBuf::from("segue.toml")).filter(|p| p.exists())),
        }
    }

    /// Loads and validates the configuration.
    pub fn load(flag: Option<&Path>) -> Result<Self, ConfigError> {
        // Defaults come from the types' `#[serde(default)]` (not a serialized provider:
        // secrets serialize redacted).
        let mut figment = Figment::new();
        if let Some(file) = Self::file(flag)? {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(
            Env::prefixed("SEGUE_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        // Env values are parsed like TOML, which turns `007123` into 7123: keys that are
        // always text are taken verbatim.
        for key in VERBATIM_KEYS {
            let var = format!("SEGUE_{}", key.replace('.', "__").to_ascii_uppercase());
            if let Ok(value) = std::env::var(&var) {
                figment = figment.merge((*key, value));
            }
        }
        let config: Self = figment.extract().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(|e| describe(&e)).collect();
            ConfigError::Invalid(messages.join("\n"))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone can't.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let db = self.database.url.expose();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            problems.push("database.url must start with sqlite: or postgres://".to_owned());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".to_owned());
        }
        if !matches!(self.server.public_url.scheme(), "http" | "https") {
            problems.push("server.public_url must be an http:// or https:// URL".to_owned());
        }
        if !self.security.secret_key.is_empty()
            && crate::keys::decode_key(self.security.secret_key.expose()).is_none()
        {
            problems.push(
                "security.secret_key must be base64 of exactly 32 bytes (try: openssl rand -base64 32)"
                    .to_owned(),
            );
        }
        if self.limits.user_burst == 0 {
            problems.push("limits.user_burst must be at least 1".to_owned());
        }
        if !(self.limits.user_per_second > 0.0 && self.limits.user_per_second.is_finite()) {
            problems.push("limits.user_per_second must be a positive number".to_owned());
        }
        let secret = self.telegram.webhook_secret.expose();
        if !secret.is_empty()
            && (secret.len() > 256
                || !secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            problems.push(
                "telegram.webhook_secret must be 1-256 of A-Z a-z 0-9 _ - (Telegram's rule)"
                    .to_owned(),
            );
        }
        let token = self.telegram.token.expose();
        if !token.is_empty() && !token.contains(':') {
            problems.push(
                "telegram.token does not look like a bot token (id:secret from @BotFather)"
                    .to_owned(),
            );
        }
        if self.telegram.max_per_second < 0.0
            || self.telegram.max_per_chat_per_second < 0.0
            || self.telegram.max_per_group_per_minute < 0.0
        {
            problems.push("telegram rate limits can't be negative (0 lifts a limit)".to_owned());
        }
        problems.extend(self.discord.problems());
        if !self.messenger.page_access_token.is_empty() {
            for (key, value) in [
                ("messenger.app_secret", &self.messenger.app_secret),
                ("messenger.verify_token", &self.messenger.verify_token),
            ] {
                if value.is_empty() {
                    problems.push(format!(
                        "{key} must be set when messenger.page_access_token is (from the Meta app's settings)"
                    ));
                }
            }
        }
        if !matches!(self.messenger.graph_url.scheme(), "http" | "https") {
            problems.push("messenger.graph_url must be an http:// or https:// URL".to_owned());
        }
        if !(self.messenger.max_per_second >= 0.0 && self.messenger.max_per_second.is_finite()) {
            problems
                .push("messenger.max_per_second can't be negative (0 lifts the limit)".to_owned());
        }
        if self.spotify.client_id.is_empty() != self.spotify.client_secret.is_empty() {
            problems.push(
                "spotify.client_id and spotify.client_secret go together: set both (from Spotify's developer dashboard) or neither"
                    .to_owned(),
            );
        }
        for (key, url) in [
            ("spotify.accounts_url", &self.spotify.accounts_url),
            ("spotify.api_url", &self.spotify.api_url),
        ] {
            if !matches!(url.scheme(), "http" | "https") {
                problems.push(format!("{key} must be an http:// or https:// URL"));
            }
        }
        for (key, value) in [
            ("sharing.fast_interval", self.sharing.fast_interval),
            ("sharing.slow_interval", self.sharing.slow_interval),
            ("sharing.give_up_after", self.sharing.give_up_after),
            ("sharing.reconcile_every", self.sharing.reconcile_every),
        ] {
            if value < Duration::from_secs(1) {
                problems.push(format!("{key} must be at least 1s"));
            }
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            problems.push("log.format must be `text` or `json`".to_owned());
        }
        if let Err(e) = self.log.level.parse::<tracing_subscriber::EnvFilter>() {
            problems.push(format!("log.level is not a valid filter: {e}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("\n")))
        }
    }

    /// The effective configuration as TOML, secrets shown as `[redacted]`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not render: {e}\n"))
    }
}

impl DiscordConfig {
    /// What is wrong with the `[discord]` section, for `check-config` and start.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let snowflake =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !self.public_key.is_empty()
            && segue_platforms::discord::parse_public_key(&self.public_key).is_err()
        {
            problems.push(segue_platforms::discord::BadPublicKey.to_string());
        }
        if !self.guild_id.is_empty() && !snowflake(&self.guild_id) {
            problems.push("discord.guild_id must be a server id (digits)".to_owned());
        }
        if !matches!(self.api_url.scheme(), "http" | "https") {
            problems.push("discord.api_url must be an http:// or https:// URL".to_owned());
        }
        if self.defer_after >= Duration::from_millis(2900) {
            problems.push(
                "discord.defer_after must be under 2.9s (Discord wants an answer within 3 seconds)"
                    .to_owned(),
            );
        }
        if self.max_per_second < 0.0 {
            problems
                .push("discord.max_per_second can't be negative (0 lifts the limit)".to_owned());
        }
        if self.token.is_empty() {
            return problems;
        }
        if !snowflake(&self.application_id) {
            problems.push(
                "discord.application_id must be set to the application id (digits, General Information in the developer portal)"
                    .to_owned(),
            );
        }
        if self.mode == DiscordMode::Interactions && self.public_key.is_empty() {
            problems.push(
                "discord.public_key must be set in interactions mode (it verifies every request)"
                    .to_owned(),
            );
        }
        problems
    }
}

fn describe(e: &figment::Error) -> String {
    let key = if e.path.is_empty() {
        String::new()
    } else {
        format!("{}: ", e.path.join("."))
    };
    let source = match &e.metadata {
        Some(m) => format!(
            " (from {})",
            m.source
                .as_ref()
                .map_or_else(|| m.name.to_string(), |s| s.to_string())
        ),
        None => String::new(),
    };
    format!("{key}{}{source}", e.kind)
}
