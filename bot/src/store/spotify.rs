//! Spotify rows: links with their sealed tokens, parked links waiting for a 16-digit code,
//! and spent OAuth states. Sealing and opening happen in `spotify::vault`; this module
//! only stores what it is given.

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set, TryInsertResult};

use super::entities::{spotify_link, spotify_link_code, used_state};
use super::{Store, StoreError};
use crate::ids::now_millis;

impl Store {
    pub async fn spotify_link(
        &self,
        user_id: i64,
    ) -> Result<Option<spotify_link::Model>, StoreError> {
        Ok(spotify_link::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?)
    }

    /// Stores a link, replacing the user's older one.
    pub async fn save_spotify_link(&self, row: spotify_link::Model) -> Result<(), StoreError> {
        use spotify_link::Column as C;
        let active: spotify_link::ActiveModel = row.into();
        spotify_link::Entity::insert(active)
            .on_conflict(
                OnConflict::column(C::UserId)
                    .update_columns([
                        C::SpotifyId,
                        C::SpotifyName,
                        C::KeyId,
                        C::RefreshToken,
                        C::AccessToken,
                        C::AccessExpiresAt,
                        C::Scopes,
                        C::BrokenAt,
                        C::LinkedAt,
                        C::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// After a refresh: the new access token, and the refresh token (rotated or the same,
    /// sealed again under the current key).
    pub async fn update_spotify_tokens(
        &self,
        user_id: i64,
        key_id: &str,
        access_token: &str,
        access_expires_at: i64,
        refresh_token: &str,
    ) -> Result<(), StoreError> {
        use spotify_link::Column as C;
        spotify_link::Entity::update_many()
            .col_expr(C::KeyId, Expr::value(key_id))
            .col_expr(C::AccessToken, Expr::value(access_token))
            .col_expr(C::AccessExpiresAt, Expr::value(access_expires_at))
            .col_expr(C::RefreshToken, Expr::value(refresh_token))
            .col_expr(C::UpdatedAt, Expr::value(now_millis()))
            .filter(C::UserId.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Spotify rejected the refresh token: keep the row (so `/me` can say so), unusable.
    pub async fn mark_spotify_broken(&self, user_id: i64) -> Result<(), StoreError> {
        use spotify_link::Column as C;
        spotify_link::Entity::update_many()
            .col_expr(C::BrokenAt, Expr::value(now_millis()))
            .filter(C::UserId.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Deletes a user's link; `false` when there was none.
    pub async fn delete_spotify_link(&self, user_id: i64) -> Result<bool, StoreError> {
        let res = spotify_link::Entity::delete_by_id(user_id)
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected > 0)
    }

    /// Parks a link from the generic start page under its code's hash.
    pub async fn park_link_code(&self, row: spotify_link_code::Model) -> Result<(), StoreError> {
        let active: spotify_link_code::ActiveModel = row.into();
        spotify_link_code::Entity::insert(active)
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Takes a parked link by its code's hash, once: of two concurrent claims one wins.
    pub async fn claim_link_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<Option<spotify_link_code::Model>, StoreError> {
        use spotify_link_code::Column as C;
        let Some(row) = spotify_link_code::Entity::find_by_id(code_hash.to_owned())
            .filter(C::ExpiresAt.gt(now))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let taken = spotify_link_code::Entity::delete_many()
            .filter(C::CodeHash.eq(code_hash))
            .exec(&self.db)
            .await?;
        Ok((taken.rows_affected == 1).then_some(row))
    }

    /// Marks an OAuth state's nonce spent; `false` when it already was.
    pub async fn spend_state(&self, nonce: &str, expires_at: i64) -> Result<bool, StoreError> {
        let row = used_state::ActiveModel {
            nonce: Set(nonce.to_owned()),
            expires_at: Set(expires_at),
        };
        let res = used_state::Entity::insert(row)
            .on_conflict_do_nothing()
            .exec_without_returning(&self.db)
            .await?;
        Ok(matches!(res, TryInsertResult::Inserted(n) if n > 0))
    }

    /// Deletes expired one-time things: parked links, spent states, codes.
    pub async fn prune_expired(&self, now: i64) -> Result<u64, StoreError> {
        use super::entities::code;
        let mut n = spotify_link_code::Entity::delete_many()
            .filter(spotify_link_code::Column::ExpiresAt.lte(now))
            .exec(&self.db)
            .await?
            .rows_affected;
        n += used_state::Entity::delete_many()
            .filter(used_state::Column::ExpiresAt.lte(now))
            .exec(&self.db)
            .await?
            .rows_affected;
        n += code::Entity::delete_many()
            .filter(code::Column::ExpiresAt.lte(now))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(n)
    }
}
