//! Friends and shares: friendships (both directions), shares and their watch state, and
//! per friend the history cursor and the one play-check job. Every status change is a
//! conditional UPDATE, so a retried job or two racing workers change a share (and notify
//! about it) once; a friend's job is claimed by a conditional UPDATE too, so a duplicate
//! or stale job does nothing.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
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

    /// Moves the next check of these pending shares to `next` (one statement; shares
    /// that are no longer pending are left alone).
    pub async fn move_checks(&self, ids: &[i64], next: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        share::Entity::update_many()
            .col_expr(share::Column::NextCheckAt, Expr::value(next))
            .filter(share::Column::Id.is_in(ids.iter().copied()))
            .filter(share::Column::Status.eq(status::PENDING))
            .exec(&self.db)
            .await?;
        Ok(())
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
    /// linked Spotify, with a check due at `due_at`: the shares resumed (as they were).
    pub async fn resume_shares_to(
        &self,
        friend_id: i64,
        due_at: i64,
    ) -> Result<Vec<share::Model>, StoreError> {
        let open = [status::WAITING, status::PAUSED];
        let shares = share::Entity::find()
            .filter(share::Column::FriendId.eq(friend_id))
            .filter(share::Column::Status.is_in(open))
            .all(&self.db)
            .await?;
        if shares.is_empty() {
            return Ok(shares);
        }
        share::Entity::update_many()
            .col_expr(share::Column::Status, Expr::value(status::PENDING))
            .col_expr(share::Column::NextCheckAt, Expr::value(due_at))
            .filter(share::Column::Id.is_in(shares.iter().map(|s| s.id)))
            .filter(share::Column::Status.is_in(open))
            .exec(&self.db)
            .await?;
        Ok(shares)
    }

    pub async fn friend_watch(
        &self,
        friend_id: i64,
    ) -> Result<Option<friend_watch::Model>, StoreError> {
        Ok(friend_watch::Entity::find_by_id(friend_id)
            .one(&self.db)
            .await?)
    }

    /// Makes the friend's play-check job due at `due_at` unless one is already due at or
    /// before it: `true` when it changed, so the caller enqueues that job (and then
    /// [`Store::mark_friend_check_scheduled`]). `cursor_ms` is the history cursor of a
    /// friend never read before. An in-flight job's lease counts as its due time: a
    /// share due before the lease gets a job of its own, which supersedes the running one.
    pub async fn bring_friend_check_forward(
        &self,
        friend_id: i64,
        due_at: i64,
        cursor_ms: i64,
    ) -> Result<bool, StoreError> {
        use friend_watch::Column as C;
        let row = friend_watch::ActiveModel {
            friend_id: Set(friend_id),
            cursor_ms: Set(cursor_ms),
            fetched_at: Set(0),
            check_at: Set(Some(due_at)),
            check_scheduled: Set(false),
        };
        let current = Expr::col((friend_watch::Entity, C::CheckAt));
        let res = friend_watch::Entity::insert(row)
            .on_conflict(
                OnConflict::column(C::FriendId)
                    .update_columns([C::CheckAt, C::CheckScheduled])
                    .action_and_where(current.clone().is_null().or(current.gt(due_at)))
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(res > 0)
    }

    /// Claims the friend's job due at `due_at`: its due time becomes `lease` (when a
    /// retry is due, should this run die before it schedules the next job), not known
    /// to be enqueued. The watch as it was, or `None` when the job is superseded (another
    /// run claimed it, or the friend's job is now due at another time).
    pub async fn claim_friend_check(
        &self,
        friend_id: i64,
        due_at: i64,
        lease: i64,
    ) -> Result<Option<friend_watch::Model>, StoreError> {
        use friend_watch::Column as C;
        let rows = friend_watch::Entity::update_many()
            .col_expr(C::CheckAt, Expr::value(lease))
            .col_expr(C::CheckScheduled, Expr::value(false))
            .filter(C::FriendId.eq(friend_id))
            .filter(C::CheckAt.eq(due_at))
            .exec_with_returning(&self.db)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Ends the run that claimed the friend's job with `lease`: records how far their
    /// history was read (`read`: cursor, when) and makes their job due at the earliest
    /// next check of their pending shares. `Some(due)` (`None` inside: nothing left to
    /// watch) for the caller to enqueue; `None` when another job took over meanwhile.
    pub async fn end_friend_check(
        &self,
        friend_id: i64,
        lease: i64,
        read: Option<(i64, i64)>,
    ) -> Result<Option<Option<i64>>, StoreError> {
        use friend_watch::Column as C;
        use sea_orm::sea_query::{Query, SimpleExpr};
        let earliest = Query::select()
            .expr(Expr::col((share::Entity, share::Column::NextCheckAt)).min())
            .from(share::Entity)
            .and_where(Expr::col((share::Entity, share::Column::FriendId)).eq(friend_id))
            .and_where(Expr::col((share::Entity, share::Column::Status)).eq(status::PENDING))
            .to_owned();
        let mut update = friend_watch::Entity::update_many()
            .col_expr(
                C::CheckAt,
                SimpleExpr::SubQuery(None, Box::new(earliest.into())),
            )
            .col_expr(C::CheckScheduled, Expr::value(false));
        if let Some((cursor_ms, fetched_at)) = read {
            update = update
                .col_expr(C::CursorMs, Expr::value(cursor_ms))
                .col_expr(C::FetchedAt, Expr::value(fetched_at));
        }
        let rows = update
            .filter(C::FriendId.eq(friend_id))
            .filter(C::CheckAt.eq(lease))
            .exec_with_returning(&self.db)
            .await?;
        Ok(rows.into_iter().next().map(|w| w.check_at))
    }

    /// Records that the friend's job due at `due_at` is enqueued (unless their job has
    /// moved on meanwhile).
    pub async fn mark_friend_check_scheduled(
        &self,
        friend_id: i64,
        due_at: i64,
    ) -> Result<(), StoreError> {
        mark_scheduled(friend_id, due_at).exec(&self.db).await?;
        Ok(())
    }

    /// [`Store::mark_friend_check_scheduled`] for many, in one transaction.
    pub async fn mark_friend_checks_scheduled(
        &self,
        checks: &[(i64, i64)],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        for &(friend_id, due_at) in checks {
            mark_scheduled(friend_id, due_at).exec(&txn).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Friends whose job may not be enqueued (the process stopped, or the queue failed,
    /// between deciding it and enqueuing it; or a run died holding its lease):
    /// `(friend_id, due_at)`.
    pub async fn unscheduled_friend_checks(
        &self,
        limit: u64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        use friend_watch::Column as C;
        Ok(friend_watch::Entity::find()
            .filter(C::CheckScheduled.eq(false))
            .filter(C::CheckAt.is_not_null())
            .order_by_asc(C::FriendId)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|w| Some((w.friend_id, w.check_at?)))
            .collect())
    }

    /// Gives a job time to every friend whose pending shares have none before their
    /// earliest check: no watch row, no job time, or an enqueued job due later (a share
    /// stored by a process that stopped before bringing the job forward). A running job
    /// (its lease, not enqueued) is left alone: it ends by computing the next job from
    /// the shares. The jobs themselves are enqueued by [`Store::unscheduled_friend_checks`]
    /// and its caller. One statement; how many friends changed.
    pub async fn heal_friend_checks(&self) -> Result<u64, StoreError> {
        let sql = format!(
            "INSERT INTO friend_watches (friend_id, cursor_ms, fetched_at, check_at, check_scheduled) \
             SELECT p.friend_id, p.oldest - 1, 0, p.due, false FROM \
             (SELECT friend_id, MIN(shared_at) AS oldest, MIN(next_check_at) AS due FROM shares \
              WHERE status = '{pending}' AND next_check_at IS NOT NULL GROUP BY friend_id) p \
             LEFT JOIN friend_watches w ON w.friend_id = p.friend_id \
             WHERE w.friend_id IS NULL OR w.check_at IS NULL OR (w.check_scheduled AND w.check_at > p.due) \
             ON CONFLICT (friend_id) DO UPDATE SET check_at = excluded.check_at, check_scheduled = false \
             WHERE friend_watches.check_at IS NULL \
             OR (friend_watches.check_scheduled AND friend_watches.check_at > excluded.check_at)",
            pending = status::PENDING
        );
        Ok(self.db.execute_unprepared(&sql).await?.rows_affected())
    }
}

/// The update marking a friend's job due at `due_at` as enqueued.
fn mark_scheduled(friend_id: i64, due_at: i64) -> sea_orm::UpdateMany<friend_watch::Entity> {
    use friend_watch::Column as C;
    friend_watch::Entity::update_many()
        .col_expr(C::CheckScheduled, Expr::value(true))
        .filter(C::FriendId.eq(friend_id))
        .filter(C::CheckAt.eq(due_at))
}
