//! The `messages` table as audit log and outbox: recording rows (through the group-commit
//! writer), claiming due outbound rows, finishing them, and replaying a chat's messages.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, Condition, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::Sighting;
use super::entities::message::{self, status};
use super::{Store, StoreError};
use crate::ids::now_millis;
use crate::message::{Button, ChatAddress};
use crate::redact;

/// One row to record.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub id: i64,
    pub inbound: bool,
    pub chat: ChatAddress,
    pub user_id: Option<i64>,
    pub external_id: Option<String>,
    pub in_reply_to: Option<i64>,
    pub text: String,
    pub buttons: Vec<Button>,
    pub status: &'static str,
    pub detail: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i32>,
}

impl NewMessage {
    /// The row as stored. Inbound rows, and outbound rows already delivered (inline), are
    /// stored with their one-time secrets masked ([`redact::mask`]); an outbox row keeps
    /// its text until it is delivered ([`Store::mark_delivered`]).
    pub(super) fn into_model(self) -> message::Model {
        let masked = self.inbound || self.status == status::DELIVERED;
        let buttons = (!self.buttons.is_empty())
            .then(|| serde_json::to_string(&self.buttons).unwrap_or_default());
        let (text, buttons) = if masked {
            (
                redact::mask(&self.text).into_owned(),
                buttons.map(|b| redact::mask(&b).into_owned()),
            )
        } else {
            (self.text, buttons)
        };
        message::Model {
            id: self.id,
            direction: if self.inbound { "in" } else { "out" }.to_owned(),
            platform: self.chat.platform.as_str().to_owned(),
            chat_id: self.chat.chat_id,
            user_id: self.user_id,
            external_id: self.external_id,
            in_reply_to: self.in_reply_to,
            text,
            buttons,
            status: self.status.to_owned(),
            detail: self.detail,
            attempts: i32::from(self.status == status::DELIVERED),
            next_attempt_at: self.next_attempt_at,
            created_at: self.created_at,
            finished_at: self.finished_at,
            duration_ms: self.duration_ms,
        }
    }

    /// [`Self::into_model`], ready to insert.
    pub(super) fn into_active(self) -> message::ActiveModel {
        self.into_model().into()
    }

    /// The row as [`Self::into_model`] stores it, without a read back.
    pub fn model(&self) -> message::Model {
        self.clone().into_model()
    }
}

/// A filter for a statement that already names its rows by id: checked on those rows, and
/// never answered from an index. Left bare, PostgreSQL's planner likes
/// `messages_outbox_due` for a status filter (few rows are pending, its statistics say) and
/// ANDs it with the primary key; but that index keeps an entry for every row version that
/// was ever pending until VACUUM, so the lookup read thousands of dead entries to find a
/// few dozen rows: 1.3 ms instead of 0.1 ms per marking at 20,000 replies, and growing.
fn by_id_only(backend: DbBackend, filter: Condition) -> Expr {
    // Each backend's builder fills in only its own placeholder style.
    let sql = match backend {
        DbBackend::Postgres => "($1) IS TRUE",
        _ => "(?) IS TRUE",
    };
    Expr::cust_with_expr(sql, Expr::from(filter))
}

/// Totals for `/metrics` and the admin status page.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MessageCounts {
    pub users: u64,
    pub inbound: u64,
    pub outbound: u64,
    /// Outbound rows not yet delivered: pending plus held.
    pub outbox_depth: u64,
    pub dead: u64,
}

impl Store {
    /// Records rows; durable when this returns. Many callers share one commit.
    pub async fn record(&self, rows: Vec<NewMessage>) -> Result<(), StoreError> {
        self.record_seen(rows, None).await.map(|_| ())
    }

    /// [`Self::record`], marking the platform event the rows answer as handled in the
    /// same commit (see [`Store::begin_sighting`]). `false` when the event's marker was
    /// already there (handled before, here or by another process): then none of the rows
    /// were written.
    pub async fn record_seen(
        &self,
        rows: Vec<NewMessage>,
        seen: Option<&Sighting>,
    ) -> Result<bool, StoreError> {
        self.writer
            .write(
                rows.into_iter().map(NewMessage::into_model).collect(),
                seen.map(Sighting::marker),
            )
            .await
    }

    /// Outbound rows due for a delivery attempt, oldest first, leaving out every chat
    /// that has an older row still waiting (retrying or in flight): a chat's messages go
    /// out in order, and blocked rows never crowd out the others.
    pub async fn due_outbound(&self, limit: u64) -> Result<Vec<message::Model>, StoreError> {
        let now = now_millis();
        let earlier = Alias::new("earlier");
        let col = |c: message::Column| Expr::col((earlier.clone(), c));
        let waiting_before = Query::select()
            .expr(Expr::val(1))
            .from_as(message::Entity, earlier.clone())
            .and_where(
                col(message::Column::Platform).equals((message::Entity, message::Column::Platform)),
            )
            .and_where(
                col(message::Column::ChatId).equals((message::Entity, message::Column::ChatId)),
            )
            .and_where(col(message::Column::Status).eq(status::PENDING))
            .and_where(
                col(message::Column::Id).lt(Expr::col((message::Entity, message::Column::Id))),
            )
            .and_where(col(message::Column::NextAttemptAt).gt(now))
            .to_owned();
        Ok(message::Entity::find()
            .filter(message::Column::Status.eq(status::PENDING))
            .filter(message::Column::NextAttemptAt.lte(now))
            .filter(Expr::exists(waiting_before).not())
            .order_by_asc(message::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Claims a pending row for one delivery attempt, leasing it for `lease_ms`. `false`
    /// when another worker (or process) got it first.
    pub async fn claim(&self, id: i64, lease_ms: i64) -> Result<bool, StoreError> {
        let now = now_millis();
        let res = message::Entity::update_many()
            .col_expr(message::Column::NextAttemptAt, Expr::value(now + lease_ms))
            .filter(message::Column::Id.eq(id))
            .filter(message::Column::Status.eq(status::PENDING))
            .filter(message::Column::NextAttemptAt.lte(now))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Claims many pending, due rows at once (one statement); returns the ids this caller
    /// got. Rows another worker holds, or that are no longer due, are left out.
    pub async fn claim_many(&self, ids: &[i64], lease_ms: i64) -> Result<Vec<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_millis();
        let claimed = message::Entity::update_many()
            .col_expr(message::Column::NextAttemptAt, Expr::value(now + lease_ms))
            .filter(message::Column::Id.is_in(ids.iter().copied()))
            .filter(by_id_only(
                self.db.get_database_backend(),
                Condition::all()
                    .add(message::Column::Status.eq(status::PENDING))
                    .add(message::Column::NextAttemptAt.lte(now)),
            ))
            .exec_with_returning(&self.db)
            .await?;
        Ok(claimed.into_iter().map(|m| m.id).collect())
    }

    /// Makes claimed rows due again at once (their chat's earlier message failed).
    pub async fn release(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        message::Entity::update_many()
            .col_expr(message::Column::NextAttemptAt, Expr::value(now_millis()))
            .filter(message::Column::Id.is_in(ids.iter().copied()))
            .filter(by_id_only(
                self.db.get_database_backend(),
                Condition::all().add(message::Column::Status.eq(status::PENDING)),
            ))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Ends an attempt: a new status, the attempt count, and when to try next (pending).
    pub async fn finish_attempt(
        &self,
        id: i64,
        new_status: &str,
        detail: Option<String>,
        next_attempt_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let finished = matches!(
            new_status,
            status::DELIVERED | status::DEAD | status::EXPIRED
        )
        .then(now_millis);
        message::Entity::update_many()
            .col_expr(message::Column::Status, Expr::value(new_status))
            .col_expr(message::Column::Detail, Expr::value(detail))
            .col_expr(
                message::Column::Attempts,
                Expr::col(message::Column::Attempts).add(1),
            )
            .col_expr(message::Column::NextAttemptAt, Expr::value(next_attempt_at))
            .col_expr(message::Column::FinishedAt, Expr::value(finished))
            .filter(message::Column::Id.eq(id))
            // A console stream may have delivered it meanwhile: that stands.
            .filter(message::Column::Status.eq(status::PENDING))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Marks rows delivered in one statement: claimed rows a delivery round sent, or held
    /// rows a console stream replayed. Their one-time secrets are masked now
    /// ([`redact::mask`]): the outbox needed the text until delivery, the log must not
    /// keep it. The rows are at hand, so only a row that had something masked costs a
    /// statement of its own.
    pub async fn mark_delivered(&self, rows: &[&message::Model]) -> Result<(), StoreError> {
        use message::Column as C;
        if rows.is_empty() {
            return Ok(());
        }
        message::Entity::update_many()
            .col_expr(C::Status, Expr::value(status::DELIVERED))
            .col_expr(C::Detail, Expr::value(Option::<String>::None))
            .col_expr(C::Attempts, Expr::col(C::Attempts).add(1))
            .col_expr(C::NextAttemptAt, Expr::value(Option::<i64>::None))
            .col_expr(C::FinishedAt, Expr::value(now_millis()))
            .filter(C::Id.is_in(rows.iter().map(|r| r.id)))
            .filter(by_id_only(
                self.db.get_database_backend(),
                Condition::all().add(C::Status.is_in([status::HELD, status::PENDING])),
            ))
            .exec(&self.db)
            .await?;
        for row in rows {
            let text = redact::mask(&row.text);
            let buttons = row.buttons.as_deref().map(redact::mask);
            let buttons_changed = matches!(buttons, Some(std::borrow::Cow::Owned(_)));
            if matches!(text, std::borrow::Cow::Borrowed(_)) && !buttons_changed {
                continue;
            }
            message::Entity::update_many()
                .col_expr(C::Text, Expr::value(text.into_owned()))
                .col_expr(C::Buttons, Expr::value(buttons.map(|b| b.into_owned())))
                .filter(C::Id.eq(row.id))
                .filter(C::Status.eq(status::DELIVERED))
                .exec(&self.db)
                .await?;
        }
        Ok(())
    }

    /// Holds a due pending row for its recipient (outside a messaging window) without
    /// counting an attempt; `false` when another worker took it first.
    pub async fn hold(&self, id: i64, reason: &str) -> Result<bool, StoreError> {
        let res = message::Entity::update_many()
            .col_expr(message::Column::Status, Expr::value(status::HELD))
            .col_expr(message::Column::Detail, Expr::value(reason))
            .col_expr(
                message::Column::NextAttemptAt,
                Expr::value(Option::<i64>::None),
            )
            .filter(message::Column::Id.eq(id))
            .filter(message::Column::Status.eq(status::PENDING))
            .filter(message::Column::NextAttemptAt.lte(now_millis()))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Makes a chat's held outbound rows due again (their recipient is back); their ids.
    pub async fn release_held(&self, chat: &ChatAddress) -> Result<Vec<i64>, StoreError> {
        let res = message::Entity::update_many()
            .col_expr(message::Column::Status, Expr::value(status::PENDING))
            .col_expr(message::Column::Detail, Expr::value(Option::<String>::None))
            .col_expr(message::Column::NextAttemptAt, Expr::value(now_millis()))
            .filter(message::Column::Platform.eq(chat.platform.as_str()))
            .filter(message::Column::ChatId.eq(&chat.chat_id))
            .filter(message::Column::Status.eq(status::HELD))
            .exec_with_returning(&self.db)
            .await?;
        Ok(res.into_iter().map(|m| m.id).collect())
    }

    /// Every pending outbound row: id, platform, chat (what the outbox's lanes must know
    /// at start).
    pub async fn pending_outbound(&self) -> Result<Vec<(i64, String, String)>, StoreError> {
        use message::Column as C;
        Ok(message::Entity::find()
            .select_only()
            .columns([C::Id, C::Platform, C::ChatId])
            .filter(C::Status.eq(status::PENDING))
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// The statuses of outbound rows, by id (for `/shares`).
    pub async fn message_statuses(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, String>, StoreError> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        Ok(message::Entity::find()
            .filter(message::Column::Id.is_in(ids.iter().copied()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| (m.id, m.status))
            .collect())
    }

    /// Outbound messages to a chat still waiting for their recipient (held, or on their
    /// way), oldest first.
    pub async fn held_for(&self, chat: &ChatAddress) -> Result<Vec<message::Model>, StoreError> {
        Ok(message::Entity::find()
            .filter(message::Column::Platform.eq(chat.platform.as_str()))
            .filter(message::Column::ChatId.eq(&chat.chat_id))
            .filter(message::Column::Direction.eq("out"))
            .filter(
                Condition::any()
                    .add(message::Column::Status.eq(status::HELD))
                    // Pending and not claimed: a claimed row is being delivered right now
                    // and reaches an open stream through the hub, or is about to be held
                    // (the stream takes a second look for those).
                    .add(
                        Condition::all()
                            .add(message::Column::Status.eq(status::PENDING))
                            .add(message::Column::NextAttemptAt.lte(now_millis())),
                    ),
            )
            .order_by_asc(message::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Outbound messages to a chat after an id (for `Last-Event-ID` replays), oldest first.
    pub async fn outbound_after(
        &self,
        chat: &ChatAddress,
        after_id: i64,
        limit: u64,
    ) -> Result<Vec<message::Model>, StoreError> {
        Ok(message::Entity::find()
            .filter(message::Column::Platform.eq(chat.platform.as_str()))
            .filter(message::Column::ChatId.eq(&chat.chat_id))
            .filter(message::Column::Direction.eq("out"))
            .filter(message::Column::Id.gt(after_id))
            .filter(message::Column::Status.is_in([
                status::DELIVERED,
                status::HELD,
                status::PENDING,
            ]))
            .order_by_asc(message::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Gives up on held messages older than `before_ms` on one platform.
    pub async fn expire_held(
        &self,
        platform: crate::message::Platform,
        before_ms: i64,
    ) -> Result<u64, StoreError> {
        let res = message::Entity::update_many()
            .col_expr(message::Column::Status, Expr::value(status::EXPIRED))
            .col_expr(message::Column::FinishedAt, Expr::value(now_millis()))
            .filter(message::Column::Platform.eq(platform.as_str()))
            .filter(message::Column::Status.eq(status::HELD))
            .filter(message::Column::CreatedAt.lt(before_ms))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }

    /// One message by id.
    pub async fn message(&self, id: i64) -> Result<Option<message::Model>, StoreError> {
        Ok(message::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Messages of a chat, oldest first (the audit trail of one conversation).
    pub async fn chat_log(
        &self,
        chat: &ChatAddress,
        limit: u64,
    ) -> Result<Vec<message::Model>, StoreError> {
        Ok(message::Entity::find()
            .filter(message::Column::Platform.eq(chat.platform.as_str()))
            .filter(message::Column::ChatId.eq(&chat.chat_id))
            .order_by_asc(message::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// The newest messages of all chats, for the admin pages.
    pub async fn recent_messages(&self, limit: u64) -> Result<Vec<message::Model>, StoreError> {
        Ok(message::Entity::find()
            .order_by_desc(message::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Totals of users and messages.
    pub async fn counts(&self) -> Result<MessageCounts, StoreError> {
        use super::entities::user;
        let by = |cond: Condition| message::Entity::find().filter(cond).count(&self.db);
        Ok(MessageCounts {
            users: user::Entity::find().count(&self.db).await?,
            inbound: by(Condition::all().add(message::Column::Direction.eq("in"))).await?,
            outbound: by(Condition::all().add(message::Column::Direction.eq("out"))).await?,
            outbox_depth: self.outbox_depth().await?,
            dead: by(Condition::all().add(message::Column::Status.eq(status::DEAD))).await?,
        })
    }

    /// Outbound rows not yet delivered (pending or held).
    pub async fn outbox_depth(&self) -> Result<u64, StoreError> {
        Ok(message::Entity::find()
            .filter(message::Column::Status.is_in([status::PENDING, status::HELD]))
            .count(&self.db)
            .await?)
    }
}
