//! `spotify_links`: one person's Spotify account, with both tokens sealed by the vault.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "spotify_links")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: i64,
    pub spotify_id: String,
    pub spotify_name: String,
    /// Which key sealed the tokens (see `crypto::Keys::key_id`).
    pub key_id: String,
    /// Sealed: never stored in the clear.
    pub refresh_token: String,
    /// Sealed as well.
    pub access_token: String,
    pub access_expires_at: i64,
    pub scopes: String,
    /// Set when Spotify rejected the refresh token: the person must `/link` again.
    pub broken_at: Option<i64>,
    pub linked_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
