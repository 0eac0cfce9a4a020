//! `codes`: one-time codes that stand for a user (`/connect`, `/invite`), stored as their
//! SHA-256 with what they are for and until when they work.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "codes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub code_hash: String,
    /// [`purpose`]: what redeeming the code does.
    pub purpose: String,
    pub user_id: i64,
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The values of `purpose`.
pub mod purpose {
    /// `/connect <code>`: join the redeemer's user into the code's.
    pub const CONNECT: &str = "connect";
    /// `/accept <code>`: become friends with the code's user.
    pub const INVITE: &str = "invite";
}
