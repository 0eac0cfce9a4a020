//! Friends and song sharing: `friendships` (one row per direction; `/invite` codes live
//! in `codes`), `shares` (what was shared with whom, its status and the next
//! play check) and `friend_watches` (per friend, how far their recently-played history
//! has been read, so one Spotify call serves every share to them).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Friendships {
    Table,
    UserId,
    FriendId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Shares {
    Table,
    Id,
    ShortId,
    SharerId,
    FriendId,
    TrackId,
    TrackName,
    TrackArtist,
    TrackUrl,
    DurationMs,
    SharedAt,
    Status,
    NextCheckAt,
    Scheduled,
    PlayedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum FriendWatches {
    Table,
    FriendId,
    CursorMs,
    FetchedAt,
}

fn user_fk(from: (impl IntoIden, impl IntoIden)) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from.0, from.1)
        .to(Users::Table, Users::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Friendships::Table)
                    .col(big_integer(Friendships::UserId))
                    .col(big_integer(Friendships::FriendId))
                    .col(big_integer(Friendships::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Friendships::UserId)
                            .col(Friendships::FriendId),
                    )
                    .foreign_key(&mut user_fk((Friendships::Table, Friendships::UserId)))
                    .foreign_key(&mut user_fk((Friendships::Table, Friendships::FriendId)))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Shares::Table)
                    .col(big_integer(Shares::Id).primary_key())
                    .col(string_len_uniq(Shares::ShortId, 8))
                    .col(big_integer(Shares::SharerId))
                    .col(big_integer(Shares::FriendId))
                    .col(string_len(Shares::TrackId, 32))
                    .col(string_len(Shares::TrackName, 256))
                    .col(string_len(Shares::TrackArtist, 256))
                    .col(string_len_null(Shares::TrackUrl, 256))
                    .col(big_integer(Shares::DurationMs))
                    .col(big_integer(Shares::SharedAt))
                    .col(string_len(Shares::Status, 16))
                    .col(big_integer_null(Shares::NextCheckAt))
                    .col(boolean(Shares::Scheduled).default(false))
                    .col(big_integer_null(Shares::PlayedAt))
                    .col(big_integer_null(Shares::FinishedAt))
                    .foreign_key(&mut user_fk((Shares::Table, Shares::SharerId)))
                    .foreign_key(&mut user_fk((Shares::Table, Shares::FriendId)))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "idx_shares_friend_status",
                [Shares::FriendId, Shares::Status],
            ),
            ("idx_shares_sharer", [Shares::SharerId, Shares::Id]),
            (
                "idx_shares_status_scheduled",
                [Shares::Status, Shares::Scheduled],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Shares::Table);
            for c in cols {
                index.col(c);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(FriendWatches::Table)
                    .col(big_integer(FriendWatches::FriendId).primary_key())
                    .col(big_integer(FriendWatches::CursorMs))
                    .col(big_integer(FriendWatches::FetchedAt))
                    .foreign_key(&mut user_fk((
                        FriendWatches::Table,
                        FriendWatches::FriendId,
                    )))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            FriendWatches::Table.into_iden(),
            Shares::Table.into_iden(),
            Friendships::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
