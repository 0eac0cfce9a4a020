//! Job payloads and the queue they go through: the "what" of background work. Handlers
//! and the sharing service enqueue [`PlayCheck`]s through [`CheckQueue`]; the `jobs`
//! crate implements the queue on apalis (PostgreSQL or SQLite) and runs the workers.

use serde::{Deserialize, Serialize};

/// Check whether a share's friend played it, due at `due_at` (Unix ms). Idempotent: a
/// check whose share has moved on (finished, or another job claimed its next check) does
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayCheck {
    pub share_id: i64,
    pub due_at: i64,
}

/// The queue could not take a job; the share stays unscheduled and is reconciled later.
#[derive(Debug, thiserror::Error)]
#[error("could not enqueue a play check: {0}")]
pub struct QueueError(pub String);

/// Where play checks are enqueued, to run at their `due_at`.
#[async_trait::async_trait]
pub trait CheckQueue: Send + Sync + std::fmt::Debug {
    async fn enqueue(&self, check: PlayCheck) -> Result<(), QueueError>;

    /// Enqueues many at once (a queue may batch them).
    async fn enqueue_many(&self, checks: Vec<PlayCheck>) -> Result<(), QueueError> {
        for check in checks {
            self.enqueue(check).await?;
        }
        Ok(())
    }
}
