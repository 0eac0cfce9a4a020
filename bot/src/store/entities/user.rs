//! `users`: one row per person, whatever platforms they use.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub handle: String,
    pub created_at: i64,
    pub banned_at: Option<i64>,
    /// `/public on`: now playing is served at `/api/users/{handle}/now-playing`.
    pub public_now_playing: bool,
    /// The identity that gets notifications (`/notify here`); none: where they last talked.
    pub notify_identity_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
