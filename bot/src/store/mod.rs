//! Storage: sea-orm entities and the queries the core needs, as methods on [`Store`].
//! Hot paths (resolving who sent a message, web sessions) are cached in memory; audit and
//! outbox rows go through a group-commit [`writer`] so many messages share one commit.

pub mod entities;
mod lifecycle;
mod messages;
mod people;
mod sessions;
mod sharing;
mod spotify;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

pub use messages::{MessageCounts, NewMessage};
pub use people::{Person, PersonDetails};
pub use sessions::WebSession;

use crate::ids::IdGenerator;
use crate::message::Platform;

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// Someone else already has that handle.
    #[error("that handle is taken")]
    HandleTaken,
    /// A unique value (a share's short id) is taken: pick another and try again.
    #[error("a unique value is taken")]
    Duplicate,
    /// The group-commit writer has stopped (the process is shutting down).
    #[error("the database writer has stopped")]
    WriterStopped,
}

/// How to open the database.
#[derive(Clone, Debug)]
pub struct DbOptions {
    pub url: String,
    pub max_connections: u32,
}

/// Opens a connection pool. SQLite files are created when missing and run in WAL mode
/// with `synchronous=NORMAL` (durable across process crashes, not power loss).
pub async fn connect(options: &DbOptions) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(options.url.clone());
    opts.max_connections(options.max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    Database::connect(opts).await
}

/// The database plus the caches and writer around it. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    db: DatabaseConnection,
    writer: writer::Writer,
    ids: IdGenerator,
    people: Mutex<HashMap<(Platform, String), people::Cached>>,
    sessions: Mutex<HashMap<String, WebSession>>,
    chats: Mutex<HashSet<(Platform, String)>>,
    /// Identity id → (user id, when its messaging window was last written).
    windows: Mutex<HashMap<i64, (i64, std::time::Instant)>>,
}

/// Entries kept in each in-memory cache before it is cleared.
const CACHE_LIMIT: usize = 100_000;

impl Store {
    /// Wraps an open, migrated database. Must be called inside a Tokio runtime (it starts
    /// the writer task).
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            writer: writer::Writer::start(db.clone()),
            db,
            ids: IdGenerator::new(),
            people: Mutex::default(),
            sessions: Mutex::default(),
            chats: Mutex::default(),
            windows: Mutex::default(),
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// A new time-ordered message id.
    pub fn next_id(&self) -> i64 {
        self.ids.next_id()
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        Ok(())
    }

    /// Records a platform event id; `false` when it was seen before (a redelivery).
    pub async fn first_sighting(
        &self,
        platform: Platform,
        external_id: &str,
    ) -> Result<bool, StoreError> {
        use entities::seen_update;
        use sea_orm::{EntityTrait, Set, TryInsertResult};
        let row = seen_update::ActiveModel {
            platform: Set(platform.as_str().to_owned()),
            external_id: Set(external_id.to_owned()),
            seen_at: Set(crate::ids::now_millis()),
        };
        let res = seen_update::Entity::insert(row)
            .on_conflict_do_nothing()
            .exec_without_returning(&self.db)
            .await?;
        Ok(matches!(res, TryInsertResult::Inserted(n) if n > 0))
    }
}

impl Store {
    /// Undoes [`Store::first_sighting`] when handling failed, so a redelivery is handled.
    pub async fn forget_sighting(
        &self,
        platform: Platform,
        external_id: &str,
    ) -> Result<(), StoreError> {
        use entities::seen_update;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        seen_update::Entity::delete_many()
            .filter(seen_update::Column::Platform.eq(platform.as_str()))
            .filter(seen_update::Column::ExternalId.eq(external_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Forgets event ids seen before `before_ms` (redeliveries come within minutes).
    pub async fn prune_sightings(&self, before_ms: i64) -> Result<u64, StoreError> {
        use entities::seen_update;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let res = seen_update::Entity::delete_many()
            .filter(seen_update::Column::SeenAt.lt(before_ms))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }
}

fn clear_if_full<K, V>(map: &mut HashMap<K, V>) {
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
}

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
