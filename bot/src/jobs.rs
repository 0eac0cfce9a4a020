//! Job payloads and the queue they go through: the "what" of background work. The
//! sharing service enqueues [`PlayCheck`]s through [`CheckQueue`]; the `jobs` crate
//! implements the queue on apalis (PostgreSQL or SQLite) and runs the workers.

use serde::{Deserialize, Serialize};

/// Check a friend's recently-played history for every pending share to them, due at
/// `due_at` (Unix ms): one job per friend, not per share. Idempotent: a job the friend's
/// watch no longer names (`friend_watches.check_at`: another run claimed it, or a share
/// brought the check forward) does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayCheck {
    /// Defaults to 0 (nobody) so a job of the older per-share kind, still queued when
    /// the schema moved to per-friend jobs, decodes and is superseded.
    #[serde(default)]
    pub friend_id: i64,
    pub due_at: i64,
}

/// The queue could not take a job; the friend's check stays unscheduled and is
/// reconciled later.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_per_share_job_decodes_as_superseded() {
        let old: PlayCheck = serde_json::from_str(r#"{"share_id":42,"due_at":7}"#).unwrap();
        assert_eq!(
            old,
            PlayCheck {
                friend_id: 0,
                due_at: 7
            },
            "friend 0 has no watch, so the job claims nothing"
        );
        let new = PlayCheck {
            friend_id: 3,
            due_at: 9,
        };
        let json = serde_json::to_string(&new).unwrap();
        assert_eq!(json, r#"{"friend_id":3,"due_at":9}"#);
        assert_eq!(serde_json::from_str::<PlayCheck>(&json).unwrap(), new);
    }
}
