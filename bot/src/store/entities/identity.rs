//! `identities`: a person's account on one platform.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "identities")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: i64,
    pub platform: String,
    pub platform_user_id: String,
    pub display_name: String,
    pub username: Option<String>,
    /// The private chat we last talked to them in (where notifications go).
    pub last_chat_id: Option<String>,
    pub last_seen_at: i64,
    /// Set when a platform said we can never reach them (blocked the bot, closed DMs).
    pub unreachable_at: Option<i64>,
    /// When they last wrote to us, on a platform that lets us message people unprompted
    /// only for a while after that (Messenger's 24-hour window); written at most once a minute.
    pub window_opened_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
