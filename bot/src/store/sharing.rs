//! Friends and shares: friendships (both directions), shares and their watch state, and
//! the per-friend history cursor. Every status change is a conditional UPDATE, so a
//! retried job or two racing workers change a share (and notify about it) once.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use super::entities::share::status;
use super::entities::{friend_watch, friendship, share, user};
use super::{NewMessage, Store, StoreError, is_unique_violation};

impl Store {
    /// Makes two users friends (both directions); `false` when they already were.
    pub async fn befriend(&self, a: i64, b: i64, now: i64) -> Result<bool, StoreError> {
        let txn = self.db.begin().await?;
        let mut added = 0;
        for (user_id, friend_id) in [(a, b), (b, a)] {
            let row = friendship::ActiveModel {
                user_id: Set(user_id),
                friend_id: Set(friend_id),
                created_at: Set(now),
            };
            let res = friendship::Entity::insert(row)
                .on_conflict_do_nothing()
                .exec_without_returning(&txn)
                .await?;
            if matches!(res, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
                added += 1;
            }
        }
        txn.commit().await?;
        Ok(added > 0)
    }

    pub async fn are_friends(&self, a: i64, b: i64) -> Result<bool, StoreError> {
        Ok(friendship::Entity::find_by_id((a, b))
            .one(&self.db)
            .await?
            .is_some())
    }

    /// A user's friends, by handle.
    pub async fn friends_of(&self, user_id: i64) -> Result<Vec<user::Model>, StoreError> {
        let ids: Vec<i64> = friendship::Entity::find()
            .filter(friendship::Column::UserId.eq(user_id))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|f| f.friend_id)
            .collect();
        Ok(user::Entity::find()
            .filter(user::Column::Id.is_in(ids))
            .order_by_asc(user::Column::Handle)
            .all(&self.db)
            .await?)
    }

    /// Ends a friendship (both directions); `false` when there was none.
    pub async fn unfriend(&self, a: i64, b: i64) -> Result<bool, StoreError> {
        let res = friendship::Entity::delete_many()
            .filter(
                friendship::Column::UserId
                    .eq(a)
                    .and(friendship::Column::FriendId.eq(b))
                    .or(friendship::Column::UserId
                        .eq(b)
                        .and(friendship::Column::FriendId.eq(a))),
            )
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected > 0)
    }

    /// Stores a new share; [`StoreError::Duplicate`] when its short id is taken.
    pub async fn insert_share(&self, row: share::Model) -> Result<(), StoreError> {
        let active: share::ActiveModel = row.into();
        match share::Entity::insert(active)
            .exec_without_returning(&self.db)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn share(&self, id: i64) -> Result<Option<share::Model>, StoreError> {
        Ok(share::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// A share by the short id its sharer sees.
    pub async fn share_by_short_id(
        &self,
        short_id: &str,
    ) -> Result<Option<share::Model>, StoreError> {
        Ok(share::Entity::find()
            .filter(share::Column::ShortId.eq(short_id.to_ascii_lowercase()))
            .one(&self.db)
            .await?)
    }

    /// The newest shares a user sent (`sent`) or received, newest first.
    pub async fn recent_shares(
        &self,
        user_id: i64,
        sent: bool,
        limit: u64,
    ) -> Result<Vec<share::Model>, StoreError> {
        let column = if sent {
            share::Column::SharerId
        } else {
            share::Column::FriendId
        };
        Ok(share::Entity::find()
            .filter(column.eq(user_id))
            .order_by_desc(share::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// The shares to this friend that are being watched.
    pub async fn pending_shares_to(&self, friend_id: i64) -> Result<Vec<share::Model>, StoreError> {
        Ok(share::Entity::find()
            .filter(share::Column::FriendId.eq(friend_id))
            .filter(share::Column::Status.eq(status::PENDING))
            .all(&self.db)
            .await?)
    }

    /// Moves an open share to a final status (`played`, `expired`, `cancelled`) and, in
    /// the same transaction, records the messages that tell people about it. `false`
    /// when the share was no longer open (someone else finished it): nothing is recorded.
    pub async fn finish_share(
        &self,
        id: i64,
        new_status: &str,
        played_at: Option<i64>,
        now: i64,
        notices: Vec<NewMessage>,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin().await?;
        let res = share::Entity::update_many()
            .col_expr(share::Column::Status, Expr::value(new_status))
            .col_expr(share::Column::PlayedAt, Expr::value(played_at))
            .col_expr(share::Column::FinishedAt, Expr::value(now))
            .col_expr(share::Column::NextCheckAt, Expr::value(Option::<i64>::None))
            .filter(share::Column::Id.eq(id))
            .filter(share::Column::Status.is_in(status::OPEN))
            .exec(&txn)
            .await?;
        if res.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        for notice in notices {
            notice.into_active().insert(&txn).await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Claims the check due at `due_at` by moving the share's next check to `next`:
    /// `false` when another job already did (or the share is no longer watched).
    pub async fn claim_check(&self, id: i64, due_at: i64, next: i64) -> Result<bool, StoreError> {
        let res = share::Entity::update_many()
            .col_expr(share::Column::NextCheckAt, Expr::value(next))
            .col_expr(share::Column::Scheduled, Expr::value(false))
            .filter(share::Column::Id.eq(id))
            .filter(share::Column::Status.eq(status::PENDING))
            .filter(share::Column::NextCheckAt.eq(due_at))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Records that the job for the check due at `due_at` is enqueued.
    pub async fn mark_scheduled(&self, id: i64, due_at: i64) -> Result<(), StoreError> {
        share::Entity::update_many()
            .col_expr(share::Column::Scheduled, Expr::value(true))
            .filter(share::Column::Id.eq(id))
            .filter(share::Column::NextCheckAt.eq(due_at))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// [`Store::mark_scheduled`] for many checks, in one transaction.
    pub async fn mark_scheduled_many(&self, checks: &[(i64, i64)]) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        for (id, due_at) in checks {
            share::Entity::update_many()
                .col_expr(share::Column::Scheduled, Expr::value(true))
                .filter(share::Column::Id.eq(*id))
                .filter(share::Column::NextCheckAt.eq(*due_at))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Watched shares whose next check may have no job (the process stopped between
    /// deciding the check and enqueuing it): `(id, due_at)`.
    pub async fn unscheduled_checks(&self, limit: u64) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(share::Entity::find()
            .filter(share::Column::Status.eq(status::PENDING))
            .filter(share::Column::Scheduled.eq(false))
            .order_by_asc(share::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|s| Some((s.id, s.next_check_at?)))
            .collect())
    }

    /// Shares nobody watches (waiting for the friend to link, or paused by a broken link)
    /// made at or before `cutoff`, oldest first.
    pub async fn unwatched_shares_before(
        &self,
        cutoff: i64,
        limit: u64,
    ) -> Result<Vec<share::Model>, StoreError> {
        Ok(share::Entity::find()
            .filter(share::Column::Status.is_in([status::WAITING, status::PAUSED]))
            .filter(share::Column::SharedAt.lte(cutoff))
            .order_by_asc(share::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Pauses the watch on every pending share to a friend whose link broke; how many.
    pub async fn pause_shares_to(&self, friend_id: i64) -> Result<u64, StoreError> {
        let res = share::Entity::update_many()
            .col_expr(share::Column::Status, Expr::value(status::PAUSED))
            .col_expr(share::Column::NextCheckAt, Expr::value(Option::<i64>::None))
            .filter(share::Column::FriendId.eq(friend_id))
            .filter(share::Column::Status.eq(status::PENDING))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }

    /// Starts (or restarts) watching the waiting and paused shares to a friend who just
    /// linked Spotify, with a check due at `due_at`: `(id, due_at)` of each.
    pub async fn resume_shares_to(
        &self,
        friend_id: i64,
        due_at: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let open = [status::WAITING, status::PAUSED];
        let ids: Vec<i64> = share::Entity::find()
            .filter(share::Column::FriendId.eq(friend_id))
            .filter(share::Column::Status.is_in(open))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        share::Entity::update_many()
            .col_expr(share::Column::Status, Expr::value(status::PENDING))
            .col_expr(share::Column::NextCheckAt, Expr::value(due_at))
            .col_expr(share::Column::Scheduled, Expr::value(false))
            .filter(share::Column::Id.is_in(ids.clone()))
            .filter(share::Column::Status.is_in(open))
            .exec(&self.db)
            .await?;
        Ok(ids.into_iter().map(|id| (id, due_at)).collect())
    }

    pub async fn friend_watch(
        &self,
        friend_id: i64,
    ) -> Result<Option<friend_watch::Model>, StoreError> {
        Ok(friend_watch::Entity::find_by_id(friend_id)
            .one(&self.db)
            .await?)
    }

    /// Records how far a friend's history was read, and when.
    pub async fn save_friend_watch(
        &self,
        friend_id: i64,
        cursor_ms: i64,
        fetched_at: i64,
    ) -> Result<(), StoreError> {
        use friend_watch::Column as C;
        let row = friend_watch::ActiveModel {
            friend_id: Set(friend_id),
            cursor_ms: Set(cursor_ms),
            fetched_at: Set(fetched_at),
        };
        friend_watch::Entity::insert(row)
            .on_conflict(
                OnConflict::column(C::FriendId)
                    .update_columns([C::CursorMs, C::FetchedAt])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }
}
