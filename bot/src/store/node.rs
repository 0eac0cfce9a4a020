//! Storage, at start-up: a process sharing a PostgreSQL database with others claims a
//! node number of its own for its message ids ([`crate::ids`]), so two processes never
//! make the same id. The claim is a session-level advisory lock held on a connection
//! kept for the life of the process; PostgreSQL lets it go when the process ends.

use sea_orm::sqlx::{self, Connection, PgConnection};
use sea_orm::{DatabaseConnection, DbBackend};

use super::{StoreError, sqlx_error};
use crate::ids::NODES;

/// The first key of the two-key advisory locks that stand for node numbers (the second
/// is the node number). Two-key locks never clash with one-key ones, such as the lock
/// migrations take.
pub const NODE_LOCK_CLASS: i32 = 0x5365_6775; // "Segu"

/// A node number, and on PostgreSQL the session that holds it.
pub(super) struct NodeLease {
    pub(super) node: u16,
    session: Option<std::sync::Mutex<PgConnection>>,
}

impl std::fmt::Debug for NodeLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLease")
            .field("node", &self.node)
            .field("held", &self.session.is_some())
            .finish()
    }
}

impl NodeLease {
    /// A random node number, held by nobody: for SQLite (one process per file in
    /// practice) and for tools that make no ids another process could also make.
    pub(super) fn unclaimed() -> Self {
        Self {
            node: rand::random::<u16>() % NODES,
            session: None,
        }
    }
}

/// Claims a node number no other Segue process on this database holds: on PostgreSQL,
/// tries the numbers in turn from a random one until a lock is free; elsewhere, a
/// random number.
pub(super) async fn claim_node(db: &DatabaseConnection) -> Result<NodeLease, StoreError> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(NodeLease::unclaimed());
    }
    // A connection of its own, out of the pool: the pool may close idle connections,
    // and with them the lock.
    let mut session = db
        .get_postgres_connection_pool()
        .acquire()
        .await
        .map_err(sqlx_error)?
        .detach();
    let start = rand::random::<u16>() % NODES;
    for i in 0..NODES {
        let node = (start + i) % NODES;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(NODE_LOCK_CLASS)
            .bind(i32::from(node))
            .fetch_one(&mut session)
            .await
            .map_err(sqlx_error)?;
        if held {
            tracing::debug!(node, "claimed a node number for message ids");
            return Ok(NodeLease {
                node,
                session: Some(std::sync::Mutex::new(session)),
            });
        }
    }
    let _ = session.close().await;
    Err(StoreError::NoNodeFree)
}
