//! A person's settings and life cycle: the public now-playing switch, where notifications
//! go, one-time codes (`/connect`, `/invite`), joining two users into one, and `/forget`, which deletes
//! everything kept about someone.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};

use super::entities::{
    chat, code, friend_watch, friendship, identity, message, share, spotify_link, user,
};
use super::{Store, StoreError};
use crate::message::{ChatAddress, Platform};

impl Store {
    /// A user by handle (handles are stored lowercase; the lookup ignores case).
    pub async fn user_by_handle(&self, handle: &str) -> Result<Option<user::Model>, StoreError> {
        Ok(user::Entity::find()
            .filter(user::Column::Handle.eq(handle.trim_start_matches('@').to_lowercase()))
            .one(&self.db)
            .await?)
    }

    /// The user behind a platform username (Telegram's `@name`), ignoring case.
    pub async fn user_by_username(
        &self,
        platform: Platform,
        username: &str,
    ) -> Result<Option<user::Model>, StoreError> {
        use sea_orm::sea_query::Func;
        self.user_by_identity(
            platform,
            Expr::expr(Func::lower(Expr::col(identity::Column::Username)))
                .eq(username.to_lowercase()),
        )
        .await
    }

    /// The user behind a platform account, by the platform's user id.
    pub async fn user_by_platform_id(
        &self,
        platform: Platform,
        platform_user_id: &str,
    ) -> Result<Option<user::Model>, StoreError> {
        self.user_by_identity(
            platform,
            identity::Column::PlatformUserId.eq(platform_user_id),
        )
        .await
    }

    /// The user of the first identity on `platform` that `which` picks.
    async fn user_by_identity(
        &self,
        platform: Platform,
        which: sea_orm::sea_query::SimpleExpr,
    ) -> Result<Option<user::Model>, StoreError> {
        let found = identity::Entity::find()
            .filter(identity::Column::Platform.eq(platform.as_str()))
            .filter(which)
            .one(&self.db)
            .await?;
        match found {
            Some(i) => self.user(i.user_id).await,
            None => Ok(None),
        }
    }

    pub async fn user(&self, user_id: i64) -> Result<Option<user::Model>, StoreError> {
        Ok(user::Entity::find_by_id(user_id).one(&self.db).await?)
    }

    pub async fn identity(&self, identity_id: i64) -> Result<Option<identity::Model>, StoreError> {
        Ok(identity::Entity::find_by_id(identity_id)
            .one(&self.db)
            .await?)
    }

    /// `/public on|off`.
    pub async fn set_public(&self, user_id: i64, public: bool) -> Result<(), StoreError> {
        user::Entity::update_many()
            .col_expr(user::Column::PublicNowPlaying, Expr::value(public))
            .filter(user::Column::Id.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// `/notify here`: this identity gets the user's notifications.
    pub async fn set_notify_identity(
        &self,
        user_id: i64,
        identity_id: i64,
    ) -> Result<(), StoreError> {
        user::Entity::update_many()
            .col_expr(user::Column::NotifyIdentityId, Expr::value(identity_id))
            .filter(user::Column::Id.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Where a user's notifications go: the identity chosen with `/notify here` when it is
    /// still reachable, else the reachable identity they talked to us from last.
    pub async fn notify_address(&self, user_id: i64) -> Result<Option<ChatAddress>, StoreError> {
        let Some(u) = self.user(user_id).await? else {
            return Ok(None);
        };
        let identities = identity::Entity::find()
            .filter(identity::Column::UserId.eq(user_id))
            .order_by_desc(identity::Column::LastSeenAt)
            .all(&self.db)
            .await?;
        let reachable =
            |i: &&identity::Model| i.unreachable_at.is_none() && i.last_chat_id.is_some();
        let chosen = identities
            .iter()
            .filter(reachable)
            .find(|i| Some(i.id) == u.notify_identity_id)
            .or_else(|| identities.iter().find(reachable));
        Ok(chosen.and_then(|i| {
            let platform = i.platform.parse::<Platform>().ok()?;
            Some(ChatAddress::new(platform, i.last_chat_id.clone()?))
        }))
    }

    /// Issues a one-time code (stored as its hash) for `user_id`, valid until
    /// `expires_at`; `purpose` is one of [`code::purpose`].
    pub async fn create_code(
        &self,
        purpose: &str,
        user_id: i64,
        code_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        code::ActiveModel {
            code_hash: Set(code_hash.to_owned()),
            purpose: Set(purpose.to_owned()),
            user_id: Set(user_id),
            expires_at: Set(expires_at),
        }
        .insert(&self.db)
        .await?;
        Ok(())
    }

    /// Takes a one-time code for `purpose` once (of two concurrent claims one wins); the
    /// user it stands for.
    pub async fn claim_code(
        &self,
        purpose: &str,
        code_hash: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        use code::Column as C;
        let Some(row) = code::Entity::find_by_id(code_hash.to_owned())
            .filter(C::Purpose.eq(purpose))
            .filter(C::ExpiresAt.gt(now))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let taken = code::Entity::delete_many()
            .filter(C::CodeHash.eq(code_hash))
            .exec(&self.db)
            .await?;
        Ok((taken.rows_affected == 1).then_some(row.user_id))
    }

    /// Joins `gone` into `keep`: identities, message history, friends and shares move
    /// over; `keep` keeps its handle, settings and Spotify link (it takes `gone`'s link
    /// when it has none).
    /// Returns whether a Spotify link moved. Everything happens in one transaction.
    pub async fn merge_users(&self, keep: i64, gone: i64) -> Result<bool, StoreError> {
        let txn = self.db.begin().await?;
        identity::Entity::update_many()
            .col_expr(identity::Column::UserId, Expr::value(keep))
            .filter(identity::Column::UserId.eq(gone))
            .exec(&txn)
            .await?;
        message::Entity::update_many()
            .col_expr(message::Column::UserId, Expr::value(keep))
            .filter(message::Column::UserId.eq(gone))
            .exec(&txn)
            .await?;
        let keep_has_link = spotify_link::Entity::find_by_id(keep)
            .one(&txn)
            .await?
            .is_some();
        let moved = if keep_has_link {
            spotify_link::Entity::delete_by_id(gone).exec(&txn).await?;
            false
        } else {
            spotify_link::Entity::update_many()
                .col_expr(spotify_link::Column::UserId, Expr::value(keep))
                .filter(spotify_link::Column::UserId.eq(gone))
                .exec(&txn)
                .await?
                .rows_affected
                > 0
        };
        code::Entity::delete_many()
            .filter(code::Column::UserId.eq(gone))
            .exec(&txn)
            .await?;
        // Friends and shares move over; `keep` can't befriend itself.
        let friends: Vec<i64> = friendship::Entity::find()
            .filter(friendship::Column::UserId.eq(gone))
            .all(&txn)
            .await?
            .into_iter()
            .map(|f| f.friend_id)
            .filter(|f| *f != keep)
            .collect();
        friendship::Entity::delete_many()
            .filter(
                friendship::Column::UserId
                    .eq(gone)
                    .or(friendship::Column::FriendId.eq(gone)),
            )
            .exec(&txn)
            .await?;
        let now = crate::ids::now_millis();
        for friend in friends {
            for (user_id, friend_id) in [(keep, friend), (friend, keep)] {
                friendship::Entity::insert(friendship::ActiveModel {
                    user_id: Set(user_id),
                    friend_id: Set(friend_id),
                    created_at: Set(now),
                })
                .on_conflict_do_nothing()
                .exec_without_returning(&txn)
                .await?;
            }
        }
        for column in [share::Column::SharerId, share::Column::FriendId] {
            share::Entity::update_many()
                .col_expr(column, Expr::value(keep))
                .filter(column.eq(gone))
                .exec(&txn)
                .await?;
        }
        friend_watch::Entity::delete_by_id(gone).exec(&txn).await?;
        user::Entity::delete_by_id(gone).exec(&txn).await?;
        txn.commit().await?;
        self.forget_cached_user(keep);
        self.forget_cached_user(gone);
        tracing::info!(keep, gone, "users joined");
        Ok(moved)
    }

    /// Deletes everything kept about a user: the user, their identities and sessions,
    /// Spotify link, codes, friendships, shares from and to them, their private chats
    /// and every message from, to or about them.
    pub async fn forget_user(&self, user_id: i64) -> Result<(), StoreError> {
        let identities = identity::Entity::find()
            .filter(identity::Column::UserId.eq(user_id))
            .all(&self.db)
            .await?;
        // Their private chats with us: a chat whose id is their own (Telegram, the web
        // console) or the one we last talked to them in.
        let mut private: Vec<(String, String)> = Vec::new();
        for i in &identities {
            private.push((i.platform.clone(), i.platform_user_id.clone()));
            if let Some(c) = &i.last_chat_id {
                private.push((i.platform.clone(), c.clone()));
            }
        }
        let txn = self.db.begin().await?;
        message::Entity::delete_many()
            .filter(message::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        for (platform, chat_id) in &private {
            let is_private = chat::Entity::find()
                .filter(chat::Column::Platform.eq(platform))
                .filter(chat::Column::ChatId.eq(chat_id))
                .filter(chat::Column::Kind.eq("private"))
                .one(&txn)
                .await?
                .is_some();
            if !is_private {
                continue;
            }
            message::Entity::delete_many()
                .filter(message::Column::Platform.eq(platform))
                .filter(message::Column::ChatId.eq(chat_id))
                .exec(&txn)
                .await?;
            chat::Entity::delete_many()
                .filter(chat::Column::Platform.eq(platform))
                .filter(chat::Column::ChatId.eq(chat_id))
                .exec(&txn)
                .await?;
        }
        delete_user_rows(&txn, user_id).await?;
        txn.commit().await?;
        self.forget_cached_user(user_id);
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        for (platform, chat_id) in private {
            if let Ok(p) = platform.parse::<Platform>() {
                chats.remove(&(p, chat_id));
            }
        }
        tracing::info!(user_id, "user forgotten");
        Ok(())
    }
}

/// Deletes the user row and every row hanging off it (without relying on the database's
/// cascades, which SQLite only applies with `foreign_keys` on).
async fn delete_user_rows(db: &impl ConnectionTrait, user_id: i64) -> Result<(), StoreError> {
    use super::entities::session;
    let identity_ids: Vec<i64> = identity::Entity::find()
        .filter(identity::Column::UserId.eq(user_id))
        .all(db)
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    session::Entity::delete_many()
        .filter(session::Column::IdentityId.is_in(identity_ids))
        .exec(db)
        .await?;
    identity::Entity::delete_many()
        .filter(identity::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    spotify_link::Entity::delete_by_id(user_id).exec(db).await?;
    friendship::Entity::delete_many()
        .filter(
            friendship::Column::UserId
                .eq(user_id)
                .or(friendship::Column::FriendId.eq(user_id)),
        )
        .exec(db)
        .await?;
    share::Entity::delete_many()
        .filter(
            share::Column::SharerId
                .eq(user_id)
                .or(share::Column::FriendId.eq(user_id)),
        )
        .exec(db)
        .await?;
    friend_watch::Entity::delete_by_id(user_id).exec(db).await?;
    code::Entity::delete_many()
        .filter(code::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    user::Entity::delete_by_id(user_id).exec(db).await?;
    Ok(())
}
