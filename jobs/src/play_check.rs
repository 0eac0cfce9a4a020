//! The play-check queue and worker on apalis, in the same database as everything else:
//! apalis-postgres on PostgreSQL, apalis-sqlite on SQLite. [`PlayChecks`] is the core's
//! [`CheckQueue`]; [`run`] works the queue, calling `Sharing::run_check` for each job.
//! A job is one friend's check, settling every due share to them (see
//! `segue_bot::sharing`).
//!
//! Timing: apalis stores `run_at` in whole seconds, so a check is enqueued for the second
//! after its `due_at` (never early), and the worker polls every [`POLL`]; a check runs
//! at most about two seconds after it is due.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use sea_orm::{DatabaseConnection, DbBackend};
use segue_bot::jobs::{CheckQueue, PlayCheck, QueueError};
use segue_bot::sharing::Sharing;
use tokio_util::sync::CancellationToken;

/// How often an idle worker looks for due checks.
pub const POLL: Duration = Duration::from_secs(1);
/// The queue's name in apalis's tables.
pub const QUEUE: &str = "play-checks";

/// Friends' checks worked on at once (each waits on the database or Spotify most of the
/// time).
const CONCURRENCY: usize = 32;
/// Due checks fetched per query.
const BATCH: usize = 50;
/// Heartbeats a worker may miss before its running checks go to another worker: with a
/// 1 s heartbeat (the poll), a busy moment must not count as death.
const MISSED_HEARTBEATS: usize = 15;
/// How long to wait before restarting a worker whose backend failed.
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// Why the queue could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("setting up apalis's tables: {0}")]
    Setup(String),
    #[error("opening apalis's SQLite connection: {0}")]
    Sqlite(String),
}

/// The play-check queue on whichever backend the database is.
#[derive(Clone)]
pub enum PlayChecks {
    Postgres(PostgresStorage<PlayCheck>),
    Sqlite(SqliteStorage<PlayCheck>),
}

impl std::fmt::Debug for PlayChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgres(_) => "PlayChecks(postgres)",
            Self::Sqlite(_) => "PlayChecks(sqlite)",
        })
    }
}

/// An idle worker fetches when its heartbeat fires (or when woken), so the heartbeat is
/// the poll interval.
fn pg_config() -> apalis_postgres::Config {
    apalis_postgres::Config::default()
        .queue(QUEUE)
        .batch_size(BATCH)
        .heartbeat_interval(POLL)
        .missed_heartbeats(MISSED_HEARTBEATS)
}

fn sqlite_config() -> apalis_sqlite::Config {
    apalis_sqlite::Config::default()
        .queue(QUEUE)
        .batch_size(BATCH)
        .heartbeat_interval(POLL)
        .missed_heartbeats(MISSED_HEARTBEATS)
}

impl PlayChecks {
    /// Sets up apalis's tables (idempotent) and opens the queue. On SQLite apalis gets
    /// its own single connection: its set-up turns `synchronous` off on the connection
    /// it runs on, which must not be one of ours, and is set back to NORMAL after.
    pub async fn open(db: &DatabaseConnection, url: &str) -> Result<Self, OpenError> {
        match db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = db.get_postgres_connection_pool().clone();
                PostgresStorage::setup(&pool)
                    .await
                    .map_err(|e| OpenError::Setup(e.to_string()))?;
                Ok(Self::Postgres(
                    PostgresStorage::new(&pool).with_config(pg_config()),
                ))
            }
            _ => {
                use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
                use std::str::FromStr;
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|e| OpenError::Sqlite(e.to_string()))?
                    .busy_timeout(Duration::from_secs(10));
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .map_err(|e| OpenError::Sqlite(e.to_string()))?;
                SqliteStorage::setup(&pool)
                    .await
                    .map_err(|e| OpenError::Setup(e.to_string()))?;
                // The set-up turned `synchronous` off on this (only) connection, and it
                // writes to our database file: back to Segue's NORMAL (durable across
                // process crashes; OFF risks the file on power loss).
                sea_orm::sqlx::query("PRAGMA synchronous = NORMAL")
                    .execute(&pool)
                    .await
                    .map_err(|e| OpenError::Sqlite(e.to_string()))?;
                Ok(Self::Sqlite(
                    SqliteStorage::new(&pool).with_config(sqlite_config()),
                ))
            }
        }
    }
}

/// The task for a check: due at the first whole second at or after `due_at`.
fn task(check: PlayCheck) -> Task<PlayCheck> {
    let secs = u64::try_from(check.due_at.max(0))
        .unwrap_or(0)
        .div_ceil(1000);
    TaskBuilder::new(check).run_at_timestamp(secs).build()
}

#[async_trait::async_trait]
impl CheckQueue for PlayChecks {
    async fn enqueue(&self, check: PlayCheck) -> Result<(), QueueError> {
        let res = match self.clone() {
            Self::Postgres(mut s) => s.push_task(task(check)).await.map_err(|e| e.to_string()),
            Self::Sqlite(mut s) => s.push_task(task(check)).await.map_err(|e| e.to_string()),
        };
        res.map_err(QueueError)
    }

    async fn enqueue_many(&self, checks: Vec<PlayCheck>) -> Result<(), QueueError> {
        let mut tasks = futures::stream::iter(checks.into_iter().map(task));
        let res = match self.clone() {
            Self::Postgres(mut s) => s.push_all(&mut tasks).await.map_err(|e| e.to_string()),
            Self::Sqlite(mut s) => s.push_all(&mut tasks).await.map_err(|e| e.to_string()),
        };
        res.map_err(QueueError)
    }
}

/// One job: run the check. A storage failure fails the job (a retry of it is superseded):
/// the friend's check is due again at the lease `run_check` took, and reconciled if need be.
async fn check(job: PlayCheck, sharing: Data<Arc<Sharing>>) -> Result<(), BoxDynError> {
    sharing.run_check(job).await.map_err(|e| {
        tracing::error!(error = %e, friend = job.friend_id, "play check failed; it is retried after its lease");
        Box::new(e) as BoxDynError
    })
}

/// Every `reconcile_every` until `shutdown`, starting now: enqueues the friends' checks
/// that have no job (an enqueue failed, or the process stopped before it) and expires the
/// unwatched shares past their give-up time.
async fn tend(sharing: Arc<Sharing>, shutdown: CancellationToken) {
    let every = sharing.settings().reconcile_every;
    loop {
        match sharing.tend().await {
            Ok((0, 0)) => {}
            Ok((reconciled, expired)) => {
                tracing::info!(
                    reconciled,
                    expired,
                    "play checks reconciled, unwatched shares expired"
                );
            }
            Err(e) => tracing::error!(error = %e, "reconciling play checks failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Works the queue until `shutdown`: enqueues checks that were never enqueued
/// (reconcile) at start and every `reconcile_every` after, and runs due checks.
pub async fn run(queue: PlayChecks, sharing: Arc<Sharing>, shutdown: CancellationToken) {
    let tending = tokio::spawn(tend(sharing.clone(), shutdown.clone()));
    // apalis refuses a worker whose name is still registered as alive (a restart within
    // its heartbeat window), so each run gets a name of its own.
    let name = format!(
        "segue-play-checks-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    loop {
        let stop = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                Ok::<(), std::io::Error>(())
            }
        };
        let result = match queue.clone() {
            PlayChecks::Postgres(storage) => {
                WorkerBuilder::new(name.as_str())
                    .backend(storage)
                    .data(sharing.clone())
                    .concurrency(CONCURRENCY)
                    .build(check)
                    .run_until(stop)
                    .await
            }
            PlayChecks::Sqlite(storage) => {
                WorkerBuilder::new(name.as_str())
                    .backend(storage)
                    .data(sharing.clone())
                    .concurrency(CONCURRENCY)
                    .build(check)
                    .run_until(stop)
                    .await
            }
        };
        if shutdown.is_cancelled() {
            break;
        }
        // The worker only stops by itself when its backend failed (the database went
        // away): start it again shortly, without losing a job (they are in the database).
        tracing::error!(error = ?result.err(), "the play-check worker stopped; restarting it in 5 s");
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(RESTART_AFTER) => {}
        }
    }
    if let Err(e) = tending.await {
        tracing::error!(error = %e, "the reconcile task panicked");
    }
    tracing::debug!("play-check worker stopped");
}
