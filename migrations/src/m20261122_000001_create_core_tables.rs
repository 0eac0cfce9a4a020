//! First schema: people (`users`), their accounts on each platform (`identities`), the
//! chats we talk in, the `messages` table that is both the audit log and the outbox, web
//! console `sessions`, and `seen_updates` for deduplicating redelivered platform events.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Handle,
    CreatedAt,
    BannedAt,
}

#[derive(DeriveIden)]
enum Identities {
    Table,
    Id,
    UserId,
    Platform,
    PlatformUserId,
    DisplayName,
    Username,
    LastChatId,
    LastSeenAt,
    UnreachableAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Chats {
    Table,
    Id,
    Platform,
    ChatId,
    Kind,
    Title,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    Direction,
    Platform,
    ChatId,
    UserId,
    ExternalId,
    InReplyTo,
    Text,
    Buttons,
    Status,
    Detail,
    Attempts,
    NextAttemptAt,
    CreatedAt,
    FinishedAt,
    DurationMs,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    TokenHash,
    IdentityId,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum SeenUpdates {
    Table,
    Platform,
    ExternalId,
    SeenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(big_pk_auto(Users::Id))
                    .col(string_len_uniq(Users::Handle, 32))
                    .col(big_integer(Users::CreatedAt))
                    .col(big_integer_null(Users::BannedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Identities::Table)
                    .col(big_pk_auto(Identities::Id))
                    .col(big_integer(Identities::UserId))
                    .col(string_len(Identities::Platform, 16))
                    .col(string_len(Identities::PlatformUserId, 128))
                    .col(string_len(Identities::DisplayName, 128))
                    .col(string_len_null(Identities::Username, 128))
                    .col(string_len_null(Identities::LastChatId, 128))
                    .col(big_integer(Identities::LastSeenAt))
                    .col(big_integer_null(Identities::UnreachableAt))
                    .col(big_integer(Identities::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Identities::Table, Identities::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("identities_platform_user")
                    .table(Identities::Table)
                    .col(Identities::Platform)
                    .col(Identities::PlatformUserId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("identities_user")
                    .table(Identities::Table)
                    .col(Identities::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Chats::Table)
                    .col(big_pk_auto(Chats::Id))
                    .col(string_len(Chats::Platform, 16))
                    .col(string_len(Chats::ChatId, 128))
                    .col(string_len(Chats::Kind, 16))
                    .col(string_len_null(Chats::Title, 256))
                    .col(big_integer(Chats::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("chats_platform_chat")
                    .table(Chats::Table)
                    .col(Chats::Platform)
                    .col(Chats::ChatId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .col(big_integer(Messages::Id).primary_key())
                    .col(string_len(Messages::Direction, 3))
                    .col(string_len(Messages::Platform, 16))
                    .col(string_len(Messages::ChatId, 128))
                    .col(big_integer_null(Messages::UserId))
                    .col(string_len_null(Messages::ExternalId, 128))
                    .col(big_integer_null(Messages::InReplyTo))
                    .col(text(Messages::Text))
                    .col(text_null(Messages::Buttons))
                    .col(string_len(Messages::Status, 16))
                    .col(text_null(Messages::Detail))
                    .col(integer(Messages::Attempts).default(0))
                    .col(big_integer_null(Messages::NextAttemptAt))
                    .col(big_integer(Messages::CreatedAt))
                    .col(big_integer_null(Messages::FinishedAt))
                    .col(integer_null(Messages::DurationMs))
                    .to_owned(),
            )
            .await?;
        // The outbox scan: pending rows that are due.
        manager
            .create_index(
                Index::create()
                    .name("messages_outbox_due")
                    .table(Messages::Table)
                    .col(Messages::Status)
                    .col(Messages::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        // Replaying a chat's messages after an event id (web console, audit pages).
        manager
            .create_index(
                Index::create()
                    .name("messages_chat")
                    .table(Messages::Table)
                    .col(Messages::Platform)
                    .col(Messages::ChatId)
                    .col(Messages::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(string_len(Sessions::TokenHash, 64).primary_key())
                    .col(big_integer(Sessions::IdentityId))
                    .col(big_integer(Sessions::CreatedAt))
                    .col(big_integer(Sessions::LastUsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Sessions::Table, Sessions::IdentityId)
                            .to(Identities::Table, Identities::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SeenUpdates::Table)
                    .col(string_len(SeenUpdates::Platform, 16))
                    .col(string_len(SeenUpdates::ExternalId, 128))
                    .col(big_integer(SeenUpdates::SeenAt))
                    .primary_key(
                        Index::create()
                            .col(SeenUpdates::Platform)
                            .col(SeenUpdates::ExternalId),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            SeenUpdates::Table.into_iden(),
            Sessions::Table.into_iden(),
            Messages::Table.into_iden(),
            Chats::Table.into_iden(),
            Identities::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
