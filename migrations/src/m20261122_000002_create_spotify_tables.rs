//! Spotify accounts and joining people: a user's Spotify link with its tokens sealed
//! (`spotify_links`), links made through the generic page waiting for their 16-digit code
//! (`spotify_link_codes`), OAuth states already used (`used_states`), one-time codes that
//! belong to a user (`codes`: `/connect`, later `/invite`), and two settings on `users`: the public now-playing switch and the
//! identity that gets notifications.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    PublicNowPlaying,
    NotifyIdentityId,
}

#[derive(DeriveIden)]
enum SpotifyLinks {
    Table,
    UserId,
    SpotifyId,
    SpotifyName,
    KeyId,
    RefreshToken,
    AccessToken,
    AccessExpiresAt,
    Scopes,
    BrokenAt,
    LinkedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SpotifyLinkCodes {
    Table,
    CodeHash,
    SpotifyId,
    SpotifyName,
    KeyId,
    RefreshToken,
    AccessToken,
    AccessExpiresAt,
    Scopes,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum UsedStates {
    Table,
    Nonce,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Codes {
    Table,
    CodeHash,
    Purpose,
    UserId,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(boolean(Users::PublicNowPlaying).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(big_integer_null(Users::NotifyIdentityId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SpotifyLinks::Table)
                    .col(big_integer(SpotifyLinks::UserId).primary_key())
                    .col(string_len(SpotifyLinks::SpotifyId, 128))
                    .col(string_len(SpotifyLinks::SpotifyName, 256))
                    .col(string_len(SpotifyLinks::KeyId, 16))
                    .col(text(SpotifyLinks::RefreshToken))
                    .col(text(SpotifyLinks::AccessToken))
                    .col(big_integer(SpotifyLinks::AccessExpiresAt))
                    .col(text(SpotifyLinks::Scopes))
                    .col(big_integer_null(SpotifyLinks::BrokenAt))
                    .col(big_integer(SpotifyLinks::LinkedAt))
                    .col(big_integer(SpotifyLinks::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(SpotifyLinks::Table, SpotifyLinks::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SpotifyLinkCodes::Table)
                    .col(string_len(SpotifyLinkCodes::CodeHash, 64).primary_key())
                    .col(string_len(SpotifyLinkCodes::SpotifyId, 128))
                    .col(string_len(SpotifyLinkCodes::SpotifyName, 256))
                    .col(string_len(SpotifyLinkCodes::KeyId, 16))
                    .col(text(SpotifyLinkCodes::RefreshToken))
                    .col(text(SpotifyLinkCodes::AccessToken))
                    .col(big_integer(SpotifyLinkCodes::AccessExpiresAt))
                    .col(text(SpotifyLinkCodes::Scopes))
                    .col(big_integer(SpotifyLinkCodes::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UsedStates::Table)
                    .col(string_len(UsedStates::Nonce, 64).primary_key())
                    .col(big_integer(UsedStates::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Codes::Table)
                    .col(string_len(Codes::CodeHash, 64).primary_key())
                    .col(string_len(Codes::Purpose, 16))
                    .col(big_integer(Codes::UserId))
                    .col(big_integer(Codes::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Codes::Table, Codes::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Codes::Table.into_iden(),
            UsedStates::Table.into_iden(),
            SpotifyLinkCodes::Table.into_iden(),
            SpotifyLinks::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        for column in [
            Users::NotifyIdentityId.into_iden(),
            Users::PublicNowPlaying.into_iden(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
