//! `spotify_link_codes`: a link made through the generic start page, waiting for its
//! 16-digit code in `/link <code>`. Only the code's SHA-256 is stored; tokens are sealed.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "spotify_link_codes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub code_hash: String,
    pub spotify_id: String,
    pub spotify_name: String,
    pub key_id: String,
    pub refresh_token: String,
    pub access_token: String,
    pub access_expires_at: i64,
    pub scopes: String,
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
