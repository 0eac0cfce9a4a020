//! `shares`: a track one person shared with a friend, and the watch on it.
//!
//! ```text
//! waiting (friend not linked) ─┐
//! paused (friend's link broke) ┼─► pending ─► played | expired
//!                              └──────────┴─► cancelled
//! ```

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shares")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    /// What people type in `/cancel`.
    #[sea_orm(unique)]
    pub short_id: String,
    pub sharer_id: i64,
    pub friend_id: i64,
    pub track_id: String,
    pub track_name: String,
    pub track_artist: String,
    pub track_url: Option<String>,
    pub duration_ms: i64,
    pub shared_at: i64,
    pub status: String,
    /// When the next play check is due (pending shares); the friend's play-check job
    /// (`friend_watches.check_at`) is due at or before the earliest of these.
    pub next_check_at: Option<i64>,
    pub played_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The outbox row telling the friend about the share (to say when it is still held).
    pub notice_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The values of `status`.
pub mod status {
    /// The friend hasn't linked Spotify: delivered, not watched yet.
    pub const WAITING: &str = "waiting";
    /// Watched: play checks are scheduled.
    pub const PENDING: &str = "pending";
    /// The friend's Spotify link broke: the watch resumes when they link again.
    pub const PAUSED: &str = "paused";
    pub const PLAYED: &str = "played";
    pub const EXPIRED: &str = "expired";
    pub const CANCELLED: &str = "cancelled";

    /// Statuses a share can still leave.
    pub const OPEN: [&str; 3] = [WAITING, PENDING, PAUSED];
}
