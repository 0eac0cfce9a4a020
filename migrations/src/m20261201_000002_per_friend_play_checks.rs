//! Play checks per friend, not per share: `friend_watches.check_at` is when the friend's
//! current play-check job is due (a job for any other time is superseded) and
//! `friend_watches.check_scheduled` whether that job is known to be enqueued (reconciled
//! when not). `shares.scheduled` and its index go: a share no longer has a job of its own.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum FriendWatches {
    Table,
    CheckAt,
    CheckScheduled,
}

#[derive(DeriveIden)]
enum Shares {
    Table,
    Scheduled,
    Status,
}

const OLD_INDEX: &str = "idx_shares_status_scheduled";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(FriendWatches::Table)
                    .add_column(ColumnDef::new(FriendWatches::CheckAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(FriendWatches::Table)
                    .add_column(
                        ColumnDef::new(FriendWatches::CheckScheduled)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        // Shares pending before this migration had a job each: those jobs are superseded
        // now (their payload names no friend), and the worker's reconcile at start gives
        // every friend with pending shares a job of the new kind.
        manager
            .drop_index(
                Index::drop()
                    .name(OLD_INDEX)
                    .table(Shares::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Shares::Table)
                    .drop_column(Shares::Scheduled)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Shares::Table)
                    .add_column(
                        ColumnDef::new(Shares::Scheduled)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(OLD_INDEX)
                    .table(Shares::Table)
                    .col(Shares::Status)
                    .col(Shares::Scheduled)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(FriendWatches::Table)
                    .drop_column(FriendWatches::CheckScheduled)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(FriendWatches::Table)
                    .drop_column(FriendWatches::CheckAt)
                    .to_owned(),
            )
            .await
    }
}
