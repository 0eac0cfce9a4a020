//! Messaging windows (Messenger's 24-hour rule): `identities.window_opened_at` is when the
//! person last wrote to us on a platform that limits unprompted messages;
//! `shares.notice_id` is the outbox row that told the friend about the share, so
//! `/shares` can say when it is still held for the window. The index serves look-ups of
//! the person behind a private chat (window checks, unreachable marks).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Identities {
    Table,
    Platform,
    LastChatId,
    WindowOpenedAt,
}

#[derive(DeriveIden)]
enum Shares {
    Table,
    NoticeId,
}

const INDEX: &str = "identities_platform_last_chat";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Identities::Table)
                    .add_column(
                        ColumnDef::new(Identities::WindowOpenedAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Shares::Table)
                    .add_column(ColumnDef::new(Shares::NoticeId).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Identities::Table)
                    .col(Identities::Platform)
                    .col(Identities::LastChatId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(Identities::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Shares::Table)
                    .drop_column(Shares::NoticeId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Identities::Table)
                    .drop_column(Identities::WindowOpenedAt)
                    .to_owned(),
            )
            .await
    }
}
