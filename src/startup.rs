//! The composition root: `Application::build` opens and migrates the database, registers
//! the platforms, builds the core, router and HTTP apps and binds both listeners (so a
//! test can use port 0 and read the port back); `run_until_stopped` serves until the
//! shutdown token is cancelled, then drains requests and workers. A [`Role`] runs one
//! part only, for scaling out on one database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use segue_bot::crypto::Keys;
use segue_bot::outbox::OutboxSettings;
use segue_bot::sharing::Sharing;
use segue_bot::spotify::{Spotify, SpotifySettings};
use segue_bot::store::{self, DbOptions};
use segue_bot::{Core, CoreSettings, Deliver, Metrics, Outbox, Platform, Router, Secret, Store};
use segue_jobs::WorkerSettings;
use segue_jobs::play_check::PlayChecks;
use segue_migrations::{Migrator, MigratorTrait};
use segue_platforms::discord::{self, Discord, DiscordSettings};
use segue_platforms::messenger::{Messenger, MessengerSettings};
use segue_platforms::telegram::{Limits, Mode, Telegram, TelegramSettings};
use segue_platforms::web::WebConsole;
use segue_platforms::{Adapter, AdapterContext};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DiscordMode, TelegramMode};

/// The enabled platforms. Adding a platform: its folder in `platforms/`, one line here.
fn adapters(config: &Config, secret_key: &[u8; 32]) -> anyhow::Result<Vec<Box<dyn Adapter>>> {
    let mut adapters: Vec<Box<dyn Adapter>> = Vec::new();
    if config.web.console {
        adapters.push(Box::new(WebConsole::new()));
    }
    if let Some(telegram) = telegram(config, secret_key)? {
        adapters.push(Box::new(telegram));
    }
    if let Some(discord) = discord(config)? {
        adapters.push(Box::new(discord));
    }
    adapters.extend(messenger(config).map(|m| Box::new(m) as Box<dyn Adapter>));
    Ok(adapters)
}

/// The Messenger adapter, when `messenger.page_access_token` is set.
pub fn messenger(config: &Config) -> Option<Messenger> {
    let m = &config.messenger;
    if m.page_access_token.is_empty() {
        return None;
    }
    Some(Messenger::new(MessengerSettings {
        page_access_token: m.page_access_token.clone(),
        app_secret: m.app_secret.clone(),
        verify_token: m.verify_token.clone(),
        graph_url: m.graph_url.as_str().trim_end_matches('/').to_owned(),
        max_per_second: m.max_per_second,
    }))
}

/// The Telegram adapter, when `telegram.token` is set.
pub fn telegram(config: &Config, secret_key: &[u8; 32]) -> anyhow::Result<Option<Telegram>> {
    let t = &config.telegram;
    if t.token.is_empty() {
        return Ok(None);
    }
    let webhook_secret = if t.webhook_secret.is_empty() {
        // Stable across restarts and processes, and nothing more to configure.
        Secret::new(crate::keys::derive_hex(
            secret_key,
            "telegram-webhook-secret",
        ))
    } else {
        t.webhook_secret.clone()
    };
    let public = config.server.public_url.as_str().trim_end_matches('/');
    let settings = TelegramSettings {
        token: t.token.clone(),
        api_url: t.api_url.as_str().trim_end_matches('/').to_owned(),
        mode: match t.mode {
            TelegramMode::Polling => Mode::Polling,
            TelegramMode::Webhook => Mode::Webhook,
        },
        webhook_secret,
        webhook_url: format!("{public}/webhooks/telegram"),
        limits: Limits {
            max_per_second: t.max_per_second,
            max_per_chat_per_second: t.max_per_chat_per_second,
            max_per_group_per_minute: t.max_per_group_per_minute,
        },
    };
    Ok(Some(Telegram::new(settings)?))
}

/// The Discord adapter, when `discord.token` is set.
pub fn discord(config: &Config) -> anyhow::Result<Option<Discord>> {
    let d = &config.discord;
    if d.token.is_empty() {
        return Ok(None);
    }
    let public_key = if d.public_key.is_empty() {
        None
    } else {
        Some(discord::parse_public_key(&d.public_key)?)
    };
    let settings = DiscordSettings {
        token: d.token.clone(),
        application_id: d.application_id.clone(),
        public_key,
        api_url: d.api_url.as_str().trim_end_matches('/').to_owned(),
        mode: match d.mode {
            DiscordMode::Gateway => discord::Mode::Gateway,
            DiscordMode::Interactions => discord::Mode::Interactions,
        },
        guild_id: (!d.guild_id.is_empty()).then(|| d.guild_id.clone()),
        defer_after: d.defer_after,
        max_per_second: d.max_per_second,
    };
    Ok(Some(Discord::new(settings)))
}

/// The Spotify service, when `spotify.client_id` is set.
fn spotify(config: &Config, keys: Arc<Keys>, store: Arc<Store>) -> Option<Arc<Spotify>> {
    let s = &config.spotify;
    if s.client_id.is_empty() {
        return None;
    }
    let public = config.server.public_url.as_str().trim_end_matches('/');
    let settings = SpotifySettings {
        client_id: s.client_id.clone(),
        client_secret: s.client_secret.clone(),
        accounts_url: s.accounts_url.as_str().trim_end_matches('/').to_owned(),
        api_url: s.api_url.as_str().trim_end_matches('/').to_owned(),
        redirect_uri: format!("{public}/auth/spotify/callback"),
        max_retry_wait: Duration::from_secs(5),
    };
    Some(Arc::new(Spotify::new(settings, keys, store)))
}

/// One part of Segue, for running the parts as separate processes on one database
/// (`segue serve --role …`). Without a role a process runs all three. Every role serves
/// `/healthz`, `/readyz` and `/metrics` on `server.bind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP listeners: web console, webhooks, OAuth, public API, admin dashboard.
    Web,
    /// The background workers: outbox delivery, play checks, pruning.
    Worker,
    /// The platforms' own connections: command menus and webhook registration, Telegram
    /// long polling, the Discord gateway.
    Gateway,
}

impl Role {
    /// The name `--role` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Worker => "worker",
            Self::Gateway => "gateway",
        }
    }

    fn runs(role: Option<Self>, part: Self) -> bool {
        role.is_none_or(|r| r == part)
    }
}

/// What the configuration file doesn't set: the role, extra delivery implementations
/// (fake platforms in tests, or an embedding program's own), outbox timing, and a
/// listener bound beforehand (so a test knows its public URL before the app is built).
#[derive(Default)]
pub struct Extras {
    /// The one part to run; every part when `None`.
    pub role: Option<Role>,
    pub deliverers: Vec<Arc<dyn Deliver>>,
    pub outbox: OutboxSettings,
    pub listener: Option<TcpListener>,
}

/// The HTTP listeners: the public one always (in the worker and gateway roles it serves
/// only health, readiness and metrics), the admin one in the web role.
struct Http {
    listener: TcpListener,
    app: axum::Router,
    admin: Option<(TcpListener, axum::Router)>,
}

/// A built, bound, not yet running Segue.
pub struct Application {
    config: Config,
    core: Arc<Core>,
    router: Arc<Router>,
    adapters: Vec<Box<dyn Adapter>>,
    role: Option<Role>,
    http: Http,
    shutdown: CancellationToken,
    admin_token: Secret,
    admin_token_generated: bool,
    play_checks: PlayChecks,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("address", &self.address())
            .field("admin_address", &self.admin_address())
            .finish_non_exhaustive()
    }
}

/// Opens the database and brings its schema up to date.
pub async fn open_database(config: &Config) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = store::connect(&DbOptions {
        url: config.database.url.expose().to_owned(),
        max_connections: config.database.max_connections,
    })
    .await
    .context("opening the database (database.url)")?;
    migrate_up(&db)
        .await
        .context("running database migrations")?;
    Ok(db)
}

/// Applies pending migrations. On PostgreSQL, processes starting together (the roles of
/// `segue serve --role`) take turns under an advisory lock: the first migrates, the
/// others then find nothing to do, instead of racing to add the same column.
async fn migrate_up(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    use sea_orm::sqlx;
    use segue_bot::store::sqlx_error;
    /// Any fixed number; `pg_advisory_lock` keys are per database.
    const MIGRATION_LOCK: i64 = 0x5365_6775_654d_6967; // "SegueMig"
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Migrator::up(db, None).await;
    }
    let mut lock = db
        .get_postgres_connection_pool()
        .acquire()
        .await
        .map_err(sqlx_error)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *lock)
        .await
        .map_err(sqlx_error)?;
    let result = Migrator::up(db, None).await;
    // Closing the session would release it too; unlocking keeps the connection usable.
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *lock)
        .await
        .map_err(sqlx_error)?;
    result
}

impl Application {
    /// Builds Segue from its configuration.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Extras::default()).await
    }

    /// Builds Segue with [`Extras`] (tests use them for fake platforms and short retries).
    pub async fn build_with(config: Config, extras: Extras) -> anyhow::Result<Self> {
        let db = open_database(&config).await?;
        let secret_key = crate::keys::secret_key(
            config.security.secret_key.expose(),
            &config.security.key_file,
        )?;
        let (admin_token, admin_token_generated) = if config.security.admin_token.is_empty() {
            (Secret::new(crate::keys::generate_admin_token()), true)
        } else {
            (config.security.admin_token.clone(), false)
        };

        let adapters = adapters(&config, &secret_key)?;
        let mut deliverers: Vec<Arc<dyn Deliver>> =
            adapters.iter().map(|a| a.deliverer()).collect();
        deliverers.extend(extras.deliverers);

        let play_checks = PlayChecks::open(&db, config.database.url.expose())
            .await
            .context("opening the play-check queue (apalis)")?;
        let store = Arc::new(Store::open(db).await?);
        let keys = Arc::new(Keys::new(&secret_key));
        let spotify = spotify(&config, keys, store.clone());
        let metrics = Arc::new(Metrics::new());
        let outbox = Arc::new(Outbox::new(
            store.clone(),
            metrics.clone(),
            deliverers,
            extras.outbox,
        ));
        let sharing = spotify.as_ref().map(|spotify| {
            Arc::new(Sharing::new(
                config.sharing.settings(),
                store.clone(),
                outbox.clone(),
                spotify.clone(),
                Arc::new(play_checks.clone()),
            ))
        });
        let core = Arc::new(Core {
            store,
            outbox,
            metrics,
            commands: segue_bot::handlers::table(),
            settings: CoreSettings {
                user_burst: config.limits.user_burst,
                user_per_second: config.limits.user_per_second,
                public_url: config.server.public_url.to_string(),
                web_retention: config.web.retention,
            },
            spotify,
            sharing,
        });
        let router = Arc::new(Router::new(core.clone()));
        let shutdown = CancellationToken::new();
        let cx = AdapterContext {
            router: router.clone(),
            shutdown: shutdown.clone(),
        };
        let listener = match extras.listener {
            Some(l) => l,
            None => TcpListener::bind(config.server.bind)
                .await
                .with_context(|| format!("listening on {} (server.bind)", config.server.bind))?,
        };
        let http = if Role::runs(extras.role, Role::Web) {
            let mut routes: Vec<axum::Router> = adapters.iter().map(|a| a.routes(&cx)).collect();
            routes.push(crate::oauth::routes(core.clone()));
            routes.push(crate::public_api::routes(core.clone()));
            let admin_listener = TcpListener::bind(config.admin.bind)
                .await
                .with_context(|| format!("listening on {} (admin.bind)", config.admin.bind))?;
            Http {
                listener,
                app: crate::http::app(core.clone(), routes),
                admin: Some((
                    admin_listener,
                    crate::admin::app(core.clone(), admin_token.clone(), &play_checks),
                )),
            }
        } else {
            // Health and this process's metrics (the worker's outbox figures live here).
            Http {
                listener,
                app: crate::http::app(core.clone(), Vec::new()),
                admin: None,
            }
        };
        Ok(Self {
            config,
            core,
            router,
            adapters,
            role: extras.role,
            http,
            shutdown,
            admin_token,
            admin_token_generated,
            play_checks,
        })
    }

    /// The public listener's address.
    pub fn address(&self) -> SocketAddr {
        self.http
            .listener
            .local_addr()
            .unwrap_or(self.config.server.bind)
    }

    /// The admin listener's address (`admin.bind` in a role without it).
    pub fn admin_address(&self) -> SocketAddr {
        self.http
            .admin
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
            .unwrap_or(self.config.admin.bind)
    }

    pub fn port(&self) -> u16 {
        self.address().port()
    }

    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    pub fn router(&self) -> Arc<Router> {
        self.router.clone()
    }

    /// Cancel it to stop the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The admin token, and whether it was generated for this run.
    pub fn admin_token(&self) -> (&Secret, bool) {
        (&self.admin_token, self.admin_token_generated)
    }

    /// The worker role's tasks: outbox delivery and pruning, and the play checks.
    fn spawn_workers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut retention = Vec::new();
        if self.config.web.console {
            retention.push((Platform::Web, self.config.web.retention));
        }
        if !self.config.messenger.page_access_token.is_empty() {
            retention.push((Platform::Messenger, self.config.messenger.retention));
        }
        let mut tasks = segue_jobs::register_all(
            self.core.outbox.clone(),
            WorkerSettings {
                outbox_poll: Duration::from_secs(1),
                retention,
            },
            self.shutdown.clone(),
        );
        if let Some(sharing) = &self.core.sharing {
            tasks.push(tokio::spawn(segue_jobs::play_check::run(
                self.play_checks.clone(),
                sharing.clone(),
                self.shutdown.clone(),
            )));
        }
        tasks
    }

    /// Serves until the shutdown token is cancelled, then lets requests in flight finish
    /// (up to `server.shutdown_grace`) and stops the workers.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let cx = AdapterContext {
            router: self.router.clone(),
            shutdown: shutdown.clone(),
        };
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        if Role::runs(self.role, Role::Gateway) {
            tasks.extend(self.adapters.iter().flat_map(|a| a.spawn(&cx)));
        }
        if Role::runs(self.role, Role::Worker) {
            tasks.extend(self.spawn_workers());
        }
        let grace = self.config.server.shutdown_grace;
        serve_http(self.http, &shutdown, grace).await?;
        shutdown.cancel();
        for task in tasks {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("a background task did not stop in time");
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Serves the listeners until the shutdown token is cancelled, then gives requests in
/// flight up to `grace` to finish.
async fn serve_http(
    http: Http,
    shutdown: &CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let public = axum::serve(http.listener, http.app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let admin = async {
        match http.admin {
            Some((listener, app)) => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
            }
            None => Ok(()),
        }
    };
    let servers = async { tokio::try_join!(public.into_future(), admin) };
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        res = servers => { res.context("serving HTTP")?; }
        () = drained => tracing::warn!(?grace, "requests still open after the shutdown grace period; stopping anyway"),
    }
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
