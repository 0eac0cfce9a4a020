//! Group commit for audit and outbox rows: callers hand rows to one task that writes
//! everything waiting in a single multi-row INSERT, then acknowledges each caller. A
//! caller's rows are durable when its `write` returns; under load many messages share
//! one commit, which is what lets the audit log stay on at thousands of messages a second.
//! The dedupe markers of the events those rows answer ride in the same commit.

use sea_orm::sqlx::{self, PgPool};
use sea_orm::{DatabaseConnection, DbBackend, DbErr, EntityTrait, RuntimeErr, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::entities::{message, seen_update};

/// Rows and markers in one commit at most; for SQLite, also in one INSERT (16 columns ×
/// 1,000 rows stays under its limit of 32,766 bound parameters).
const MAX_ROWS: usize = 1000;

struct Batch {
    rows: Vec<message::Model>,
    /// Platform event ids now handled (see `Store::begin_sighting`).
    seen: Vec<seen_update::Model>,
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Debug, Clone)]
pub(super) struct Writer {
    tx: mpsc::UnboundedSender<Batch>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch({} rows)", self.rows.len())
    }
}

impl Writer {
    pub(super) fn start(db: DatabaseConnection) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db, rx));
        Self { tx }
    }

    /// Writes the rows and markers; returns once they are committed.
    pub(super) async fn write(
        &self,
        rows: Vec<message::Model>,
        seen: Vec<seen_update::Model>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() && seen.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Batch { rows, seen, done })
            .map_err(|_| StoreError::WriterStopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Db(sea_orm::DbErr::Custom(e))),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }
}

async fn run(db: DatabaseConnection, rx: mpsc::UnboundedReceiver<Batch>) {
    // PostgreSQL flushes the WAL for several committing transactions at once, so a few
    // commits in flight multiply throughput on a slow disk; SQLite has one write lock.
    let in_flight = match db.get_database_backend() {
        DbBackend::Postgres => 4,
        _ => 1,
    };
    let weight = |b: &Batch| b.rows.len() + b.seen.len();
    super::batch::run(rx, in_flight, MAX_ROWS, weight, move |waiting| {
        let db = db.clone();
        async move { commit(&db, waiting).await }
    })
    .await;
}

/// Writes the batches of several callers together and acknowledges each.
async fn commit(db: &DatabaseConnection, waiting: Vec<Batch>) {
    let all: Vec<&message::Model> = waiting.iter().flat_map(|b| &b.rows).collect();
    let seen: Vec<&seen_update::Model> = waiting.iter().flat_map(|b| &b.seen).collect();
    if insert(db, &all, &seen).await.is_ok() {
        for b in waiting {
            let _ = b.done.send(Ok(()));
        }
        return;
    }
    // Something in the shared commit failed: give each caller its own, so one bad row
    // fails only its own caller.
    for b in waiting {
        let rows: Vec<&message::Model> = b.rows.iter().collect();
        let seen: Vec<&seen_update::Model> = b.seen.iter().collect();
        let result = insert(db, &rows, &seen).await.map_err(|e| {
            tracing::error!(error = %e, rows = rows.len(), "writing audit/outbox rows failed");
            e.to_string()
        });
        let _ = b.done.send(result);
    }
}

/// Inserts rows and markers atomically. PostgreSQL takes them all in one statement of
/// array parameters ([`insert_pg`]); SQLite in multi-row INSERTs, chunked under
/// its limit on bound parameters, in one transaction. A marker already there (another
/// process handled the same event) is left as it is.
async fn insert(
    db: &DatabaseConnection,
    rows: &[&message::Model],
    seen: &[&seen_update::Model],
) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        return insert_pg(db.get_postgres_connection_pool(), rows, seen).await;
    }
    let active = |r: &&message::Model| message::ActiveModel::from((*r).clone());
    if seen.is_empty() && rows.len() <= MAX_ROWS {
        // One statement is atomic by itself: spare the BEGIN/COMMIT round trips.
        message::Entity::insert_many(rows.iter().map(active))
            .exec_without_returning(db)
            .await?;
        return Ok(());
    }
    let txn = db.begin().await?;
    for chunk in rows.chunks(MAX_ROWS) {
        message::Entity::insert_many(chunk.iter().map(active))
            .exec_without_returning(&txn)
            .await?;
    }
    for chunk in seen.chunks(MAX_ROWS) {
        seen_update::Entity::insert_many(
            chunk
                .iter()
                .map(|m| seen_update::ActiveModel::from((*m).clone())),
        )
        .on_conflict_do_nothing()
        .exec_without_returning(&txn)
        .await?;
    }
    txn.commit().await
}

fn db_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e.into()))
}

/// The audit/outbox rows and the dedupe markers in one atomic statement (a data-modifying
/// CTE runs as part of its statement).
const INSERT_PG: &str = "\
WITH markers AS (
    INSERT INTO seen_updates (external_id, platform, seen_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
    ON CONFLICT DO NOTHING
)
INSERT INTO messages (id, direction, platform, chat_id, user_id, external_id, in_reply_to,
    text, buttons, status, detail, attempts, next_attempt_at, created_at, finished_at,
    duration_ms)
SELECT * FROM unnest($4::int8[], $5::text[], $6::text[], $7::text[], $8::int8[],
    $9::text[], $10::int8[], $11::text[], $12::text[], $13::text[], $14::text[],
    $15::int4[], $16::int8[], $17::int8[], $18::int8[], $19::int4[])";

/// PostgreSQL's form of [`insert`]: the rows and markers go in as array parameters, so it
/// is one statement text whatever the batch size. PostgreSQL parses and plans it once per
/// connection instead of once per commit (every batch size used to be a statement of its
/// own), and Segue binds 19 arrays instead of building SQL with 16 parameters a row.
async fn insert_pg(
    pool: &PgPool,
    rows: &[&message::Model],
    seen: &[&seen_update::Model],
) -> Result<(), DbErr> {
    fn col<'a, R, T>(rows: &[&'a R], f: impl Fn(&'a R) -> T) -> Vec<T> {
        rows.iter().map(|r| f(r)).collect()
    }
    sqlx::query(INSERT_PG)
        .bind(col(seen, |m| m.external_id.as_str()))
        .bind(col(seen, |m| m.platform.as_str()))
        .bind(col(seen, |m| m.seen_at))
        .bind(col(rows, |m| m.id))
        .bind(col(rows, |m| m.direction.as_str()))
        .bind(col(rows, |m| m.platform.as_str()))
        .bind(col(rows, |m| m.chat_id.as_str()))
        .bind(col(rows, |m| m.user_id))
        .bind(col(rows, |m| m.external_id.as_deref()))
        .bind(col(rows, |m| m.in_reply_to))
        .bind(col(rows, |m| m.text.as_str()))
        .bind(col(rows, |m| m.buttons.as_deref()))
        .bind(col(rows, |m| m.status.as_str()))
        .bind(col(rows, |m| m.detail.as_deref()))
        .bind(col(rows, |m| m.attempts))
        .bind(col(rows, |m| m.next_attempt_at))
        .bind(col(rows, |m| m.created_at))
        .bind(col(rows, |m| m.finished_at))
        .bind(col(rows, |m| m.duration_ms))
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(())
}
