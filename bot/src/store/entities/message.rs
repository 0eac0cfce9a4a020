//! `messages`: the audit log of every inbound and outbound message, and the outbox (the
//! outbound rows not yet delivered).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    /// Time-ordered id from [`crate::ids::IdGenerator`].
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    /// `in` or `out`.
    pub direction: String,
    pub platform: String,
    pub chat_id: String,
    pub user_id: Option<i64>,
    /// The platform's id: for an inbound event its own (see `seen_updates` for dedupe);
    /// for an outbound edit in place, the message it replaces.
    pub external_id: Option<String>,
    /// For a reply: the inbound message it answers.
    pub in_reply_to: Option<i64>,
    pub text: String,
    /// Outbound buttons as JSON.
    pub buttons: Option<String>,
    /// See [`status`].
    pub status: String,
    /// Why: the command, the delivery error.
    pub detail: Option<String>,
    pub attempts: i32,
    /// Outbound `pending` rows: when to try (again); also the lease of a claimed row.
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    /// When it was handled (inbound) or delivered / given up (outbound).
    pub finished_at: Option<i64>,
    /// Inbound: time spent handling it.
    pub duration_ms: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The `status` column's values.
pub mod status {
    /// Inbound: a handler ran and answered.
    pub const HANDLED: &str = "handled";
    /// Inbound: the handler failed internally.
    pub const FAILED: &str = "failed";
    /// Inbound: answered with help (unknown command, bad arguments, plain text).
    pub const REJECTED: &str = "rejected";
    /// Inbound: over the per-user rate limit.
    pub const LIMITED: &str = "limited";
    /// Inbound: from a banned user; not answered.
    pub const BANNED: &str = "banned";
    /// Inbound: not for us (group chatter, another bot's command).
    pub const IGNORED: &str = "ignored";
    /// Outbound: waiting to be delivered.
    pub const PENDING: &str = "pending";
    /// Outbound: waiting for the recipient to come back (web console not open).
    pub const HELD: &str = "held";
    /// Outbound: delivered.
    pub const DELIVERED: &str = "delivered";
    /// Outbound: failed for good; kept for the audit log.
    pub const DEAD: &str = "dead";
    /// Outbound: held past the retention period.
    pub const EXPIRED: &str = "expired";
}
