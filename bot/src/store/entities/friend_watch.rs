//! `friend_watches`: how far a friend's recently-played history has been read (the
//! `after` cursor) and when, so one Spotify call answers every share to them.

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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
