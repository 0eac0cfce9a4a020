//! `seen_updates`: platform event ids already handled, so redeliveries are not answered twice.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "seen_updates")]
pub struct Model {
    // The event id leads the key (migration m20261203_000001): dedupe reads look up a
    // batch of ids, and the ids must be the index condition.
    #[sea_orm(primary_key, auto_increment = false)]
    pub external_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub platform: String,
    pub seen_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
