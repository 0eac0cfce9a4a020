//! The `segue` command line: `serve` (the default), `migrate`, `check-config`,
//! `commands`. Logs go to stderr; stdout carries only a command's own output.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use segue::config::Config;
use segue::startup::{Application, Extras, Role, open_database, shutdown_signal};
use segue_migrations::{Migrator, MigratorTrait};

/// mimalloc: the server allocates many small short-lived buffers per message, and glibc's
/// allocator spent a fifth of the CPU on them under load (see docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "segue",
    version,
    about = "Share a song, hear when it's played: a multi-platform music bot"
)]
struct Cli {
    /// Configuration file (default: $SEGUE_CONFIG, else ./segue.toml when present).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything enabled: HTTP server, platform adapters, workers (the default).
    Serve {
        /// Run one part only, for scaling out on one database: `web` (HTTP listeners),
        /// `worker` (outbox delivery, play checks, pruning) or `gateway` (command menus,
        /// webhook registration, Telegram polling, the Discord gateway).
        #[arg(long, value_enum)]
        role: Option<Role>,
    },
    /// Database migrations (serve runs `up` by itself).
    Migrate {
        #[arg(value_enum, default_value_t = MigrateAction::Up)]
        action: MigrateAction,
    },
    /// Validate the configuration and print it with secrets redacted; exit 1 on errors.
    CheckConfig,
    /// Push the command table to the configured platforms (Telegram's command menu,
    /// Discord's slash commands).
    RegisterCommands,
    /// Print the command table every platform gets.
    Commands {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum MigrateAction {
    /// Apply all pending migrations.
    Up,
    /// Revert the most recent migration.
    Down,
    /// List applied and pending migrations.
    Status,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve { role: None });
    if let Command::Commands { format } = command {
        return print_commands(format);
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: the configuration is not valid:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::CheckConfig = command {
        return match std::io::stdout().write_all(config.to_redacted_toml().as_bytes()) {
            Ok(()) => {
                eprintln!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(_) => ExitCode::FAILURE,
        };
    }
    segue::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Migrate { action } => migrate(&config, action).await,
            Command::RegisterCommands => register_commands(&config).await,
            Command::Serve { role } => serve(config, role).await,
            Command::CheckConfig | Command::Commands { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_commands(format: Format) -> ExitCode {
    let table = segue_bot::handlers::table();
    let text = match format {
        Format::Text => table.to_text(),
        Format::Json => serde_json::to_string_pretty(&table.to_json()).unwrap_or_default() + "\n",
    };
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn serve(config: Config, role: Option<Role>) -> anyhow::Result<()> {
    let app = Application::build_with(
        config,
        Extras {
            role,
            ..Extras::default()
        },
    )
    .await?;
    let (token, generated) = app.admin_token();
    let address = app.address();
    let admin = app.admin_address();
    match role {
        None => eprintln!("\nSegue is running."),
        Some(role) => eprintln!("\nSegue is running the {} role only.", role.as_str()),
    }
    if matches!(role, None | Some(Role::Web)) {
        eprintln!("  web console:     http://{address}/console");
        eprintln!("  admin dashboard: http://{admin}/  (user: any, password: the admin token)");
        if generated {
            eprintln!(
                "  admin token for this run: {}\n  (set security.admin_token to keep one across restarts)",
                token.expose()
            );
        }
    } else {
        eprintln!("  health and metrics: http://{address}/healthz, http://{address}/metrics");
    }
    eprintln!();
    let stop = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    app.run_until_stopped().await
}

async fn register_commands(config: &Config) -> anyhow::Result<()> {
    let key = segue::keys::secret_key(
        config.security.secret_key.expose(),
        &config.security.key_file,
    )?;
    let table = segue_bot::handlers::table();
    let mut out = std::io::stdout().lock();
    let mut any = false;
    if let Some(telegram) = segue::startup::telegram(config, &key)? {
        telegram
            .register_commands(&table)
            .await
            .map_err(|e| anyhow::anyhow!("Telegram setMyCommands failed: {e}"))?;
        writeln!(
            out,
            "telegram: {} commands set (setMyCommands)",
            table.iter().count()
        )?;
        any = true;
    }
    if let Some(discord) = segue::startup::discord(config)? {
        let n = discord
            .register_commands(&table)
            .await
            .map_err(|e| anyhow::anyhow!("Discord bulk overwrite of slash commands failed: {e}"))?;
        let scope = if config.discord.guild_id.is_empty() {
            "globally".to_owned()
        } else {
            format!("in guild {}", config.discord.guild_id)
        };
        writeln!(out, "discord: {n} slash commands registered {scope}")?;
        any = true;
    }
    if let Some(messenger) = segue::startup::messenger(config) {
        let items = messenger
            .register_commands(&table)
            .await
            .map_err(|e| anyhow::anyhow!("Messenger Profile API call failed: {e}"))?;
        writeln!(
            out,
            "messenger: Get Started button and {items} menu items set (messenger_profile)"
        )?;
        any = true;
    }
    if !any {
        anyhow::bail!(
            "no platform with a command menu is configured (set telegram.token, discord.token or messenger.page_access_token)"
        );
    }
    Ok(())
}

async fn migrate(config: &Config, action: MigrateAction) -> anyhow::Result<()> {
    let db = segue_bot::store::connect(&segue_bot::store::DbOptions {
        url: config.database.url.expose().to_owned(),
        max_connections: 2,
    })
    .await?;
    let mut out = std::io::stdout().lock();
    match action {
        MigrateAction::Up => {
            drop(db);
            open_database(config).await?;
            writeln!(out, "database is up to date")?;
        }
        MigrateAction::Down => {
            Migrator::down(&db, Some(1)).await?;
            writeln!(out, "reverted the most recent migration")?;
        }
        MigrateAction::Status => {
            for m in Migrator::get_migration_with_status(&db).await? {
                writeln!(
                    out,
                    "{:<8} {}",
                    format!("{:?}", m.status()).to_lowercase(),
                    m.name()
                )?;
            }
        }
    }
    Ok(())
}
