//! Storage: sea-orm entities and the queries the core needs, as methods on [`Store`].
//! Hot paths (resolving who sent a message, web sessions) are cached in memory; audit and
//! outbox rows go through a group-commit [`writer`] so many messages share one commit,
//! and dedupe reads through a batching [`seen`] reader.

mod batch;
pub mod entities;
mod lifecycle;
mod messages;
mod node;
mod people;
mod seen;
mod sessions;
mod sharing;
mod spotify;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

pub use messages::{MessageCounts, NewMessage};
pub use node::NODE_LOCK_CLASS;
use node::{NodeLease, claim_node};
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
    /// Every node number for message ids is held by another process on this database.
    #[error(
        "all {} node numbers for message ids are held by other Segue processes on this \
         database; stop some of them",
        crate::ids::NODES
    )]
    NoNodeFree,
}

/// A statement sent straight through sqlx (on sea-orm's pool) failed: as sea-orm's error.
pub fn sqlx_error(e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e.into()))
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
    seen: seen::SeenReader,
    ids: IdGenerator,
    /// Keeps this process's node number its own while the store lives.
    _node: NodeLease,
    people: Mutex<HashMap<(Platform, String), people::Cached>>,
    sessions: Mutex<HashMap<String, WebSession>>,
    chats: Mutex<HashSet<(Platform, String)>>,
    /// Platform events being handled right now (see [`Store::begin_sighting`]).
    in_flight: Mutex<HashSet<(Platform, String)>>,
    /// Identity id → (user id, when its messaging window was last written).
    windows: Mutex<HashMap<i64, (i64, std::time::Instant)>>,
}

/// Entries kept in each in-memory cache before it is cleared.
const CACHE_LIMIT: usize = 100_000;

impl Store {
    /// Wraps an open, migrated database, with a node number held by nobody (see
    /// [`Store::open`] for a process that shares its database). Must be called inside a
    /// Tokio runtime (it starts the writer task).
    pub fn new(db: DatabaseConnection) -> Self {
        Self::with_node(db, NodeLease::unclaimed())
    }

    /// Wraps an open, migrated database, first claiming a node number no other process
    /// on it holds (`claim_node`, an advisory lock).
    pub async fn open(db: DatabaseConnection) -> Result<Self, StoreError> {
        let node = claim_node(&db).await?;
        Ok(Self::with_node(db, node))
    }

    fn with_node(db: DatabaseConnection, node: NodeLease) -> Self {
        Self {
            writer: writer::Writer::start(db.clone()),
            seen: seen::SeenReader::start(db.clone()),
            db,
            ids: IdGenerator::with_node(node.node),
            _node: node,
            people: Mutex::default(),
            sessions: Mutex::default(),
            chats: Mutex::default(),
            in_flight: Mutex::default(),
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

    /// The node number in this process's message ids.
    pub fn node(&self) -> u16 {
        self.ids.node()
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        Ok(())
    }

    /// Starts handling a platform event: `None` when it is being handled now (a second
    /// copy arriving while the first is in flight, in this process). Whether it was
    /// handled before is [`Sighting::seen_before`]'s question, or, for an event whose
    /// handling changes nothing, the group commit's: the marker is written with the
    /// event's audit rows ([`Store::record_seen`]), and when it is already there nothing is
    /// written. An event whose handling fails leaves no marker and is handled when the
    /// platform redelivers it.
    pub fn begin_sighting(
        self: &Arc<Self>,
        platform: Platform,
        external_id: &str,
    ) -> Option<Sighting> {
        let key = (platform, external_id.to_owned());
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
            .then(|| Sighting {
                store: self.clone(),
                key,
            })
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

/// A platform event being handled (from [`Store::begin_sighting`]); dropped once its rows
/// are recorded, or its handling failed.
#[derive(Debug)]
pub struct Sighting {
    store: Arc<Store>,
    key: (Platform, String),
}

impl Sighting {
    /// Whether the event was handled before: one indexed read, shared with the other
    /// events asking meanwhile ([`seen`]).
    pub async fn seen_before(&self) -> Result<bool, StoreError> {
        self.store.seen.seen(self.key.0, &self.key.1).await
    }

    pub(super) fn marker(&self) -> entities::seen_update::Model {
        entities::seen_update::Model {
            platform: self.key.0.as_str().to_owned(),
            external_id: self.key.1.clone(),
            seen_at: crate::ids::now_millis(),
        }
    }
}

impl Drop for Sighting {
    fn drop(&mut self) {
        self.store
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
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
