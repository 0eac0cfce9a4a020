//! `friend_watches`: how far a friend's recently-played history has been read (the
//! `after` cursor) and when, so one Spotify call answers every share to them; and the
//! friend's one play-check job: when it is due, and whether it is known to be enqueued.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "friend_watches")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub friend_id: i64,
    /// Plays up to this time (Unix ms) have been seen.
    pub cursor_ms: i64,
    /// When the history was last read (Unix ms).
    pub fetched_at: i64,
    /// When the friend's current play-check job is due (Unix ms): at or before the
    /// earliest `next_check_at` of their pending shares; `None` when nothing is watched.
    /// A job due at any other time is superseded. While a job runs this is its lease
    /// (the time a retry is due, should the run die).
    pub check_at: Option<i64>,
    /// Whether the job for `check_at` is known to be enqueued (reconciled when not).
    pub check_scheduled: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
