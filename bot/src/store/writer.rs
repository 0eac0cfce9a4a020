//! Group commit for audit and outbox rows: callers hand rows to one task that writes
//! everything waiting in a single multi-row INSERT, then acknowledges each caller. A
//! caller's rows are durable when its `write` returns; under load many messages share
//! one commit, which is what lets the audit log stay on at thousands of messages a second.
//! The dedupe marker of the event a caller's rows answer rides in the same commit and
//! decides it: when the marker is already there (the event was handled before, by this
//! process or another), that caller's rows are not written and it is told so.

use std::collections::HashSet;

use sea_orm::sea_query::Query;
use sea_orm::sqlx::{self, PgPool, Row};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryTrait,
    TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use super::entities::{message, seen_update};
use super::{StoreError, sqlx_error};

/// Rows and markers in one commit at most; for SQLite, also in one INSERT (16 columns ×
/// 1,000 rows stays under its limit of 32,766 bound parameters).
const MAX_ROWS: usize = 1000;

struct Batch {
    rows: Vec<message::Model>,
    /// The platform event these rows answer, now handled (see `Store::begin_sighting`).
    marker: Option<seen_update::Model>,
    /// `Ok(false)`: the marker was taken, nothing of this batch was written.
    done: oneshot::Sender<Result<bool, String>>,
}

/// A marker's key: (external id, platform).
type Key = (String, String);

fn key(m: &seen_update::Model) -> Key {
    (m.external_id.clone(), m.platform.clone())
}

/// The markers that were already there: those of `markers` the commit did not insert.
fn taken(markers: &[&seen_update::Model], inserted: &HashSet<Key>) -> HashSet<Key> {
    markers
        .iter()
        .map(|m| key(m))
        .filter(|k| !inserted.contains(k))
        .collect()
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

    /// Writes the rows with the event's marker; returns once they are committed. `false`
    /// when the marker was already there: the event was handled before, and none of the
    /// rows were written.
    pub(super) async fn write(
        &self,
        rows: Vec<message::Model>,
        marker: Option<seen_update::Model>,
    ) -> Result<bool, StoreError> {
        if rows.is_empty() && marker.is_none() {
            return Ok(true);
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Batch { rows, marker, done })
            .map_err(|_| StoreError::WriterStopped)?;
        match wait.await {
            Ok(Ok(written)) => Ok(written),
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
    let weight = |b: &Batch| b.rows.len() + 1;
    super::batch::run(rx, in_flight, MAX_ROWS, weight, move |waiting| {
        let db = db.clone();
        async move { commit(&db, waiting).await }
    })
    .await;
}

/// Writes the batches of several callers together and acknowledges each.
async fn commit(db: &DatabaseConnection, waiting: Vec<Batch>) {
    let batches: Vec<(&[message::Model], Option<&seen_update::Model>)> = waiting
        .iter()
        .map(|b| (b.rows.as_slice(), b.marker.as_ref()))
        .collect();
    if let Ok(taken) = insert(db, &batches).await {
        for b in waiting {
            let written = b.marker.as_ref().is_none_or(|m| !taken.contains(&key(m)));
            let _ = b.done.send(Ok(written));
        }
        return;
    }
    // Something in the shared commit failed: give each caller its own, so one bad row
    // fails only its own caller.
    for b in waiting {
        let result = insert(db, &[(b.rows.as_slice(), b.marker.as_ref())])
            .await
            .map(|taken| taken.is_empty())
            .map_err(|e| {
                tracing::error!(error = %e, rows = b.rows.len(), "writing audit/outbox rows failed");
                e.to_string()
            });
        let _ = b.done.send(result);
    }
}

/// Inserts the batches' markers and, atomically with them, the rows of every batch whose
/// marker was new (or that has none). Returns the markers that were already there: their
/// batches wrote nothing. PostgreSQL takes it all in one statement of array parameters
/// ([`insert_pg`]); SQLite in multi-row INSERTs in one transaction, chunked under its
/// limit on bound parameters.
async fn insert(
    db: &DatabaseConnection,
    batches: &[(&[message::Model], Option<&seen_update::Model>)],
) -> Result<HashSet<Key>, DbErr> {
    let markers: Vec<&seen_update::Model> = batches.iter().filter_map(|(_, m)| *m).collect();
    if db.get_database_backend() == DbBackend::Postgres {
        let new = insert_pg(db.get_postgres_connection_pool(), batches, &markers).await?;
        return Ok(taken(&markers, &new));
    }
    let active = |r: &message::Model| message::ActiveModel::from(r.clone());
    if markers.is_empty() {
        let rows: Vec<&message::Model> = batches.iter().flat_map(|(r, _)| r.iter()).collect();
        if rows.len() <= MAX_ROWS {
            // One statement is atomic by itself: spare the BEGIN/COMMIT round trips.
            message::Entity::insert_many(rows.into_iter().map(active))
                .exec_without_returning(db)
                .await?;
            return Ok(HashSet::new());
        }
    }
    let txn = db.begin().await?;
    let mut new = HashSet::new();
    for chunk in markers.chunks(MAX_ROWS) {
        let mut query = seen_update::Entity::insert_many(
            chunk
                .iter()
                .map(|m| seen_update::ActiveModel::from((*m).clone())),
        )
        .on_conflict_do_nothing()
        .into_query();
        query.returning(Query::returning().columns([
            seen_update::Column::ExternalId,
            seen_update::Column::Platform,
        ]));
        for row in txn.query_all(&query).await? {
            new.insert((row.try_get_by_index(0)?, row.try_get_by_index(1)?));
        }
    }
    let taken = taken(&markers, &new);
    let rows: Vec<&message::Model> = batches
        .iter()
        .filter(|(_, m)| m.is_none_or(|m| !taken.contains(&key(m))))
        .flat_map(|(r, _)| r.iter())
        .collect();
    for chunk in rows.chunks(MAX_ROWS) {
        message::Entity::insert_many(chunk.iter().map(|r| active(r)))
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(taken)
}

/// The audit/outbox rows and the dedupe markers in one atomic statement (data-modifying
/// CTEs run as part of their statement). A row carries its batch's marker key (or NULLs)
/// and is inserted only when that marker is new; the statement returns the new markers.
const INSERT_PG: &str = "\
WITH markers AS (
    INSERT INTO seen_updates (external_id, platform, seen_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
    ON CONFLICT DO NOTHING
    RETURNING external_id, platform
), written AS (
    INSERT INTO messages (id, direction, platform, chat_id, user_id, external_id,
        in_reply_to, text, buttons, status, detail, attempts, next_attempt_at, created_at,
        finished_at, duration_ms)
    SELECT r.id, r.direction, r.platform, r.chat_id, r.user_id, r.external_id,
        r.in_reply_to, r.text, r.buttons, r.status, r.detail, r.attempts, r.next_attempt_at,
        r.created_at, r.finished_at, r.duration_ms
    FROM unnest($4::int8[], $5::text[], $6::text[], $7::text[], $8::int8[], $9::text[],
        $10::int8[], $11::text[], $12::text[], $13::text[], $14::text[], $15::int4[],
        $16::int8[], $17::int8[], $18::int8[], $19::int4[], $20::text[], $21::text[])
        AS r(id, direction, platform, chat_id, user_id, external_id, in_reply_to, text,
            buttons, status, detail, attempts, next_attempt_at, created_at, finished_at,
            duration_ms, marker_id, marker_platform)
    WHERE r.marker_id IS NULL
        OR EXISTS (SELECT 1 FROM markers k
            WHERE k.external_id = r.marker_id AND k.platform = r.marker_platform)
)
SELECT external_id, platform FROM markers";

/// PostgreSQL's form of [`insert`], returning the markers it inserted: the rows and
/// markers go in as array parameters, so it
/// is one statement text whatever the batch size. PostgreSQL parses and plans it once per
/// connection instead of once per commit (every batch size used to be a statement of its
/// own), and Segue binds 21 arrays instead of building SQL with 16 parameters a row.
async fn insert_pg(
    pool: &PgPool,
    batches: &[(&[message::Model], Option<&seen_update::Model>)],
    markers: &[&seen_update::Model],
) -> Result<HashSet<Key>, DbErr> {
    let rows: Vec<(&message::Model, Option<&seen_update::Model>)> = batches
        .iter()
        .flat_map(|(rows, m)| rows.iter().map(move |r| (r, *m)))
        .collect();
    fn col<R, T>(items: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
        items.iter().map(f).collect()
    }
    sqlx::query(INSERT_PG)
        .bind(col(markers, |m| m.external_id.as_str()))
        .bind(col(markers, |m| m.platform.as_str()))
        .bind(col(markers, |m| m.seen_at))
        .bind(col(&rows, |(m, _)| m.id))
        .bind(col(&rows, |(m, _)| m.direction.as_str()))
        .bind(col(&rows, |(m, _)| m.platform.as_str()))
        .bind(col(&rows, |(m, _)| m.chat_id.as_str()))
        .bind(col(&rows, |(m, _)| m.user_id))
        .bind(col(&rows, |(m, _)| m.external_id.as_deref()))
        .bind(col(&rows, |(m, _)| m.in_reply_to))
        .bind(col(&rows, |(m, _)| m.text.as_str()))
        .bind(col(&rows, |(m, _)| m.buttons.as_deref()))
        .bind(col(&rows, |(m, _)| m.status.as_str()))
        .bind(col(&rows, |(m, _)| m.detail.as_deref()))
        .bind(col(&rows, |(m, _)| m.attempts))
        .bind(col(&rows, |(m, _)| m.next_attempt_at))
        .bind(col(&rows, |(m, _)| m.created_at))
        .bind(col(&rows, |(m, _)| m.finished_at))
        .bind(col(&rows, |(m, _)| m.duration_ms))
        .bind(col(&rows, |(_, k)| k.map(|k| k.external_id.as_str())))
        .bind(col(&rows, |(_, k)| k.map(|k| k.platform.as_str())))
        .fetch_all(pool)
        .await
        .map_err(sqlx_error)?
        .into_iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<HashSet<Key>, sqlx::Error>>()
        .map_err(sqlx_error)
}
