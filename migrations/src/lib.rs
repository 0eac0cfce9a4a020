//! The database schema, as ordered sea-orm migrations: `segue migrate` and `segue serve`
//! run them; the same statements serve SQLite and PostgreSQL.
//!
//! Timestamps are stored as BIGINT milliseconds since the Unix epoch (UTC) so that both
//! backends compare and index them the same way.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_core_tables;
mod m20261122_000002_create_spotify_tables;
mod m20261122_000003_create_sharing_tables;
mod m20261201_000001_add_messaging_window;
mod m20261201_000002_per_friend_play_checks;
mod m20261203_000001_seen_updates_key_order;
mod m20261203_000002_identities_last_chat_key_order;

/// Every migration, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_core_tables::Migration),
            Box::new(m20261122_000002_create_spotify_tables::Migration),
            Box::new(m20261122_000003_create_sharing_tables::Migration),
            Box::new(m20261201_000001_add_messaging_window::Migration),
            Box::new(m20261201_000002_per_friend_play_checks::Migration),
            Box::new(m20261203_000001_seen_updates_key_order::Migration),
            Box::new(m20261203_000002_identities_last_chat_key_order::Migration),
        ]
    }
}
