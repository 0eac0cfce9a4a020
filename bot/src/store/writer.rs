//! Group commit for audit and outbox rows: callers hand rows to one task that writes
//! everything waiting in a single multi-row INSERT, then acknowledges each caller. A
//! caller's rows are durable when its `write` returns; under load many messages share
//! one commit, which is what lets the audit log stay on at thousands of messages a second.
//! The dedupe markers of the events those rows answer ride in the same commit.

use sea_orm::sea_query::{Alias, CommonTableExpression, WithClause};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryTrait,
    TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::entities::{message, seen_update};

/// Rows in one INSERT at most (well under SQLite's and PostgreSQL's parameter limits).
const MAX_ROWS: usize = 1000;

struct Batch {
    rows: Vec<message::ActiveModel>,
    /// Platform event ids now handled (see `Store::begin_sighting`).
    seen: Vec<seen_update::ActiveModel>,
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
        rows: Vec<message::ActiveModel>,
        seen: Vec<seen_update::ActiveModel>,
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
    let all: Vec<&message::ActiveModel> = waiting.iter().flat_map(|b| &b.rows).collect();
    let seen: Vec<&seen_update::ActiveModel> = waiting.iter().flat_map(|b| &b.seen).collect();
    if insert(db, &all, &seen).await.is_ok() {
        for b in waiting {
            let _ = b.done.send(Ok(()));
        }
        return;
    }
    // Something in the shared commit failed: give each caller its own, so one bad row
    // fails only its own caller.
    for b in waiting {
        let rows: Vec<&message::ActiveModel> = b.rows.iter().collect();
        let seen: Vec<&seen_update::ActiveModel> = b.seen.iter().collect();
        let result = insert(db, &rows, &seen).await.map_err(|e| {
            tracing::error!(error = %e, rows = rows.len(), "writing audit/outbox rows failed");
            e.to_string()
        });
        let _ = b.done.send(result);
    }
}

/// Inserts rows and markers in one transaction, in chunks that stay under the backends'
/// limits on bound parameters. A marker already there (another process handled the same
/// event) is left as it is.
async fn insert(
    db: &DatabaseConnection,
    rows: &[&message::ActiveModel],
    seen: &[&seen_update::ActiveModel],
) -> Result<(), DbErr> {
    if seen.is_empty() && rows.len() <= MAX_ROWS {
        // One statement is atomic by itself: spare the BEGIN/COMMIT round trips.
        message::Entity::insert_many(rows.iter().map(|r| (*r).clone()))
            .exec_without_returning(db)
            .await?;
        return Ok(());
    }
    if db.get_database_backend() == DbBackend::Postgres
        && !rows.is_empty()
        && rows.len() <= MAX_ROWS
        && seen.len() <= MAX_ROWS
    {
        // PostgreSQL runs a data-modifying CTE and its statement as one: the markers and
        // the rows in one atomic statement, again without BEGIN/COMMIT round trips.
        let markers = seen_update::Entity::insert_many(seen.iter().map(|r| (*r).clone()))
            .on_conflict_do_nothing()
            .into_query();
        let both = WithClause::new()
            .cte(
                CommonTableExpression::new()
                    .query(markers)
                    .table_name(Alias::new("markers"))
                    .to_owned(),
            )
            .to_owned()
            .query(message::Entity::insert_many(rows.iter().map(|r| (*r).clone())).into_query());
        db.execute(&both).await?;
        return Ok(());
    }
    let txn = db.begin().await?;
    for chunk in rows.chunks(MAX_ROWS) {
        message::Entity::insert_many(chunk.iter().map(|r| (*r).clone()))
            .exec_without_returning(&txn)
            .await?;
    }
    for chunk in seen.chunks(MAX_ROWS) {
        seen_update::Entity::insert_many(chunk.iter().map(|r| (*r).clone()))
            .on_conflict_do_nothing()
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await
}
