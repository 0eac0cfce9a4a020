//! The outbox: every outgoing message is recorded first, then delivered by its
//! platform's [`Deliver`] implementation under that platform's rate limits. Transient
//! failures are retried with exponential backoff; permanent ones are dead-lettered and
//! the recipient marked unreachable; messages for someone not there right now are held.
//! The delivery loop itself runs in the jobs crate; this module is the logic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

use crate::ids::now_millis;
use crate::message::{Button, ChatAddress, Outgoing, Platform};
use crate::metrics::Metrics;
use crate::split::split_text;
use crate::store::entities::message::{self, status};
use crate::store::{NewMessage, Store, StoreError};

/// A message as a [`Deliver`] implementation gets it.
#[derive(Clone, Debug)]
pub struct OutboundMessage {
    pub id: i64,
    pub to: ChatAddress,
    pub text: String,
    pub buttons: Vec<Button>,
    pub user_id: Option<i64>,
    /// For a reply: the inbound message it answers (`None` for notifications).
    pub in_reply_to: Option<i64>,
    /// Earlier attempts (0 on the first).
    pub attempts: i32,
    /// The platform's id of the message this one replaces, for an edit in place
    /// ([`crate::Reply::in_place`]). A platform that can't edit sends it as a new message.
    pub edits: Option<String>,
}

impl OutboundMessage {
    fn from_row(row: &message::Model) -> Result<Self, String> {
        let platform = row
            .platform
            .parse::<Platform>()
            .map_err(|e| e.to_string())?;
        let buttons = match &row.buttons {
            Some(json) => serde_json::from_str(json).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        Ok(Self {
            id: row.id,
            to: ChatAddress::new(platform, row.chat_id.clone()),
            text: row.text.clone(),
            buttons,
            user_id: row.user_id,
            in_reply_to: row.in_reply_to,
            attempts: row.attempts,
            edits: row.external_id.clone(),
        })
    }
}

/// Why a delivery did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliverError {
    /// Worth trying again (network, 5xx, 429), after `retry_after` if the platform said.
    #[error("transient: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Will never work (blocked the bot, closed DMs): dead-letter it.
    #[error("permanent: {reason}")]
    Permanent { reason: String },
    /// The recipient can't take it now (not connected, outside a messaging window): keep
    /// it until they come back.
    #[error("held: {reason}")]
    Held { reason: String },
}

/// A platform's outbound limits.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeliveryPolicy {
    /// Messages per second overall; `None` for no limit.
    pub max_per_second: Option<f64>,
    /// Messages per second to one chat; `None` for no limit.
    pub max_per_chat_per_second: Option<f64>,
    /// How many a chat may get at once before its per-second limit applies.
    pub chat_burst: u32,
    /// Messages per minute to one group chat (see [`Deliver::is_group`]); `None` for no
    /// limit.
    pub max_per_group_per_minute: Option<f64>,
}

/// Sends neutral messages to one platform. One implementation per platform folder.
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    fn platform(&self) -> Platform;

    fn policy(&self) -> DeliveryPolicy {
        DeliveryPolicy::default()
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliverError>;

    /// Whether a chat id names a group (for the group limit); no groups by default.
    fn is_group(&self, _chat_id: &str) -> bool {
        false
    }

    /// How long after a person's last message this platform lets us message them
    /// unprompted (Messenger: 24 hours); `None` (the default) when there is no such rule.
    /// Outside it the outbox holds notifications, replies still go, and the person's
    /// next message releases what was held.
    fn reply_window(&self) -> Option<Duration> {
        None
    }
}

/// Retry and lease timing.
#[derive(Clone, Copy, Debug)]
pub struct OutboxSettings {
    /// How long a claimed row is reserved for one attempt (a crashed attempt is retried
    /// after this).
    pub lease: Duration,
    /// Backoff after the first failure; doubles each time, capped at `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts before a transiently failing message is dead-lettered.
    pub max_attempts: i32,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            max_attempts: 12,
        }
    }
}

struct Limits {
    overall: Option<DefaultDirectRateLimiter>,
    per_chat: Option<DefaultKeyedRateLimiter<String>>,
    per_group: Option<DefaultKeyedRateLimiter<String>>,
}

fn quota(per_second: f64, burst: u32) -> Option<Quota> {
    if per_second <= 0.0 {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / per_second);
    Quota::with_period(period)
        .map(|q| q.allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN)))
}

/// Records and delivers outgoing messages.
pub struct Outbox {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    deliverers: HashMap<Platform, (Arc<dyn Deliver>, Limits)>,
    settings: OutboxSettings,
    wake: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("platforms", &self.deliverers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Rows one delivery round looks at, at most.
pub const BATCH: u64 = 200;

/// What one delivery round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Due rows found (at most [`BATCH`]).
    pub due: usize,
    /// Rows attempted (delivered, failed, held).
    pub attempted: usize,
    /// When a rate limit stopped the round: how long until it allows the next send.
    pub wait: Option<Duration>,
}

/// One recorded outbound message, as returned to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub id: i64,
    pub text: String,
    pub buttons: Vec<Button>,
    /// The platform's id of the message it replaces, for an edit in place.
    pub edits: Option<String>,
}

impl Outbox {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        deliverers: Vec<Arc<dyn Deliver>>,
        settings: OutboxSettings,
    ) -> Self {
        let deliverers = deliverers
            .into_iter()
            .map(|d| {
                let p = d.policy();
                let limits = Limits {
                    // Half a second's budget at once, not a whole one: sends to different
                    // chats go out in parallel, and network jitter can bunch them up on
                    // arrival; the headroom keeps the platform's count within its limit.
                    overall: p
                        .max_per_second
                        .and_then(|r| quota(r, (r / 2.0).ceil() as u32))
                        .map(RateLimiter::direct),
                    per_chat: p
                        .max_per_chat_per_second
                        .and_then(|r| quota(r, p.chat_burst))
                        .map(RateLimiter::keyed),
                    per_group: p
                        .max_per_group_per_minute
                        .and_then(|r| quota(r / 60.0, p.chat_burst))
                        .map(RateLimiter::keyed),
                };
                (d.platform(), (d, limits))
            })
            .collect();
        Self {
            store,
            metrics,
            deliverers,
            settings,
            wake: Notify::new(),
        }
    }

    /// The platforms that can deliver.
    pub fn platforms(&self) -> Vec<Platform> {
        self.deliverers.keys().copied().collect()
    }

    /// The platform's messaging window ([`Deliver::reply_window`]), if it has one.
    pub fn reply_window(&self, platform: Platform) -> Option<Duration> {
        self.deliverers
            .get(&platform)
            .and_then(|(d, _)| d.reply_window())
    }

    /// Rows for one outgoing message, split at its platform's text limit (the buttons go
    /// with the last piece).
    pub fn rows_for(
        &self,
        out: Outgoing,
        in_reply_to: Option<i64>,
        delivered_inline: bool,
    ) -> (Vec<NewMessage>, Vec<Recorded>) {
        let now = now_millis();
        let pieces = split_text(&out.text, out.to.platform.text_limit());
        let last = pieces.len() - 1;
        let mut rows = Vec::with_capacity(pieces.len());
        let mut recorded = Vec::with_capacity(pieces.len());
        for (i, text) in pieces.into_iter().enumerate() {
            let buttons = if i == last {
                out.buttons.clone()
            } else {
                Vec::new()
            };
            let id = self.store.next_id();
            // Only the first piece of a long text can replace the message.
            let edits = if i == 0 { out.edits.clone() } else { None };
            recorded.push(Recorded {
                id,
                text: text.clone(),
                buttons: buttons.clone(),
                edits: edits.clone(),
            });
            rows.push(NewMessage {
                id,
                inbound: false,
                chat: out.to.clone(),
                user_id: out.user_id,
                external_id: edits,
                in_reply_to,
                text,
                buttons,
                status: if delivered_inline {
                    status::DELIVERED
                } else {
                    status::PENDING
                },
                detail: delivered_inline.then(|| "inline".to_owned()),
                next_attempt_at: (!delivered_inline).then_some(now),
                created_at: now,
                finished_at: delivered_inline.then_some(now),
                duration_ms: None,
            });
        }
        (rows, recorded)
    }

    /// Accepts messages for delivery: durable when this returns, delivered soon after.
    pub async fn send(&self, messages: Vec<Outgoing>) -> Result<Vec<Recorded>, StoreError> {
        let mut rows = Vec::new();
        let mut recorded = Vec::new();
        for m in messages {
            let (r, rec) = self.rows_for(m, None, false);
            rows.extend(r);
            recorded.extend(rec);
        }
        self.store.record(rows).await?;
        self.wake();
        Ok(recorded)
    }

    /// Wakes the delivery loop (after recording pending rows).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Outbox::wake`] was called since the last time.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Delivers the due messages: rate limits checked in each chat's order, every
    /// candidate claimed in one statement, chats sent in parallel (each in order), and
    /// the delivered rows marked in one statement.
    pub async fn deliver_due(&self) -> Result<Round, StoreError> {
        let due = self.store.due_outbound(BATCH).await?;
        let mut round = Round {
            due: due.len(),
            ..Round::default()
        };
        let mut by_chat: BTreeMap<(String, String), Vec<(message::Model, OutboundMessage)>> =
            BTreeMap::new();
        for row in due {
            match OutboundMessage::from_row(&row) {
                Ok(msg) => by_chat
                    .entry((row.platform.clone(), row.chat_id.clone()))
                    .or_default()
                    .push((row, msg)),
                Err(e) => {
                    self.settle(&row, status::DEAD, format!("unreadable row: {e}"))
                        .await?;
                    round.attempted += 1;
                }
            }
        }
        let windows = self.open_windows(&by_chat).await?;
        // What each chat may send now, in order, within the platform's limits.
        let mut chats = Vec::new();
        let mut ids = Vec::new();
        let mut held = Vec::new();
        for rows in by_chat.into_values() {
            let mut take = Vec::new();
            for (row, msg) in rows {
                let Some((deliverer, limits)) = self.deliverers.get(&msg.to.platform) else {
                    self.park_disabled(&row, &msg).await?;
                    break;
                };
                if let Some(window) = deliverer.reply_window()
                    && msg.in_reply_to.is_none()
                    && !windows.contains(&(msg.to.platform, msg.to.chat_id.clone()))
                {
                    // Not a reply, and the person hasn't written lately: the platform
                    // forbids it. Held until they write again; the chat's replies go on.
                    held.push((row.id, msg.to.platform, window));
                    continue;
                }
                let group = deliverer.is_group(&msg.to.chat_id);
                if let Some(wait) = Self::over_limit(limits, &msg.to.chat_id, group) {
                    round.wait = Some(round.wait.map_or(wait, |w| w.min(wait)));
                    break;
                }
                ids.push(row.id);
                take.push((row, msg));
            }
            if !take.is_empty() {
                chats.push(take);
            }
        }
        for (id, platform, window) in held {
            let reason = format!(
                "outside {platform}'s {}-hour messaging window: sent when they next write",
                window.as_secs().div_ceil(3600)
            );
            if self.store.hold(id, &reason).await? {
                round.attempted += 1;
                self.metrics.message(platform.as_str(), false, status::HELD);
            }
        }
        let lease = self.settings.lease.as_millis() as i64;
        let claimed: HashSet<i64> = self
            .store
            .claim_many(&ids, lease)
            .await?
            .into_iter()
            .collect();
        let claimed = &claimed;
        let sends = chats.into_iter().map(|rows| async move {
            let mut attempted = 0;
            let mut sent = Vec::new();
            let mut rest = rows.into_iter();
            while let Some((row, msg)) = rest.next() {
                // Another worker has it: leave the rest of this chat to keep its order.
                if !claimed.contains(&row.id) {
                    break;
                }
                let Some((deliverer, _)) = self.deliverers.get(&msg.to.platform) else {
                    break;
                };
                attempted += 1;
                match deliverer.deliver(&msg).await {
                    Ok(()) => sent.push((row, msg.to.platform)),
                    Err(e) => match self.failed(&row, &msg, e).await {
                        Ok(false) => {}
                        Ok(true) => {
                            // Retrying: the chat's later messages wait for it, released
                            // from their lease so they follow as soon as it goes.
                            let later: Vec<i64> = rest
                                .map(|(r, _)| r.id)
                                .filter(|id| claimed.contains(id))
                                .collect();
                            if let Err(e) = self.store.release(&later).await {
                                tracing::error!(error = %e, "releasing claimed rows failed");
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, id = row.id, "recording a failed delivery failed");
                            break;
                        }
                    },
                }
            }
            (attempted, sent)
        });
        let mut sent = Vec::new();
        for (attempted, delivered) in futures::future::join_all(sends).await {
            round.attempted += attempted;
            sent.extend(delivered);
        }
        let rows: Vec<&message::Model> = sent.iter().map(|(row, _)| row).collect();
        self.store.mark_delivered(&rows).await?;
        for (_, platform) in &sent {
            self.metrics
                .message(platform.as_str(), false, status::DELIVERED);
        }
        Ok(round)
    }

    /// The private chats among `due` whose person may be messaged unprompted now (on
    /// platforms with a [`Deliver::reply_window`]).
    async fn open_windows(
        &self,
        due: &BTreeMap<(String, String), Vec<(message::Model, OutboundMessage)>>,
    ) -> Result<HashSet<(Platform, String)>, StoreError> {
        let mut open = HashSet::new();
        let now = now_millis();
        for (platform, (deliverer, _)) in &self.deliverers {
            let Some(window) = deliverer.reply_window() else {
                continue;
            };
            let chats: Vec<&str> = due
                .iter()
                .filter(|(_, rows)| {
                    rows.iter()
                        .any(|(_, m)| m.to.platform == *platform && m.in_reply_to.is_none())
                })
                .map(|((_, chat), _)| chat.as_str())
                .collect();
            if chats.is_empty() {
                continue;
            }
            let since = now - window.as_millis() as i64;
            for (chat, opened) in self.store.windows_opened(*platform, &chats).await? {
                if opened > since {
                    open.insert((*platform, chat));
                }
            }
        }
        Ok(open)
    }

    /// A row for a platform this process doesn't run: parked for a while (another
    /// process may deliver it, or a restart with the platform configured).
    async fn park_disabled(
        &self,
        row: &message::Model,
        msg: &OutboundMessage,
    ) -> Result<(), StoreError> {
        if self.store.claim(row.id, 0).await? {
            self.store
                .finish_attempt(
                    row.id,
                    status::PENDING,
                    Some(format!("{} is not enabled", msg.to.platform)),
                    Some(now_millis() + self.settings.max_backoff.as_millis() as i64),
                )
                .await?;
        }
        Ok(())
    }

    /// Checks the platform's limits without waiting; the wait when over them.
    fn over_limit(limits: &Limits, chat_id: &str, group: bool) -> Option<Duration> {
        // A refusal's wait is read off the refusing limiter's own clock. (Making a clock
        // here calibrated a new one, CPUID and all, for every message.)
        if group
            && let Some(l) = &limits.per_group
            && let Err(not_until) = l.check_key(&chat_id.to_owned())
        {
            return Some(not_until.wait_time_from(l.clock().now()));
        }
        if let Some(l) = &limits.per_chat
            && let Err(not_until) = l.check_key(&chat_id.to_owned())
        {
            return Some(not_until.wait_time_from(l.clock().now()));
        }
        if let Some(l) = &limits.overall
            && let Err(not_until) = l.check()
        {
            return Some(not_until.wait_time_from(l.clock().now()));
        }
        None
    }

    /// Records a failed attempt; `Ok(true)` when it will be retried (the chat waits).
    async fn failed(
        &self,
        row: &message::Model,
        msg: &OutboundMessage,
        error: DeliverError,
    ) -> Result<bool, StoreError> {
        match error {
            DeliverError::Held { reason } => {
                self.store
                    .finish_attempt(row.id, status::HELD, Some(reason), None)
                    .await?;
                Ok(false)
            }
            DeliverError::Permanent { reason } => {
                tracing::warn!(id = row.id, to = %msg.to, %reason, "delivery failed for good; dead-lettered");
                // Unreachable first: whoever sees the dead letter also sees why.
                self.store.mark_unreachable(&msg.to).await?;
                self.settle(row, status::DEAD, reason).await?;
                Ok(false)
            }
            DeliverError::Transient {
                reason,
                retry_after,
            } => {
                let attempts = row.attempts + 1;
                if attempts >= self.settings.max_attempts {
                    tracing::warn!(id = row.id, to = %msg.to, %reason, attempts, "giving up after repeated failures");
                    self.settle(
                        row,
                        status::DEAD,
                        format!("gave up after {attempts} attempts: {reason}"),
                    )
                    .await?;
                    return Ok(false);
                }
                let wait = retry_after.unwrap_or_else(|| self.backoff(attempts));
                tracing::info!(id = row.id, to = %msg.to, %reason, retry_in_ms = wait.as_millis() as u64, "delivery will be retried");
                self.store
                    .finish_attempt(
                        row.id,
                        status::PENDING,
                        Some(reason),
                        Some(now_millis() + wait.as_millis() as i64),
                    )
                    .await?;
                Ok(true)
            }
        }
    }

    async fn settle(
        &self,
        row: &message::Model,
        new_status: &'static str,
        reason: String,
    ) -> Result<(), StoreError> {
        self.metrics.message(&row.platform, false, new_status);
        self.store
            .finish_attempt(row.id, new_status, Some(reason), None)
            .await
    }

    /// Exponential backoff with ±20 % jitter.
    fn backoff(&self, attempts: i32) -> Duration {
        let exp = self
            .settings
            .first_backoff
            .saturating_mul(1u32 << (attempts - 1).clamp(0, 20));
        let capped = exp.min(self.settings.max_backoff);
        capped.mul_f64(0.8 + rand::random::<f64>() * 0.4)
    }

    /// Forgets platform event ids older than `kept` (dedupe only needs recent ones).
    /// The store the outbox writes to (for the worker's other housekeeping).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub async fn prune_sightings(&self, kept: Duration) -> Result<u64, StoreError> {
        self.store
            .prune_sightings(now_millis() - kept.as_millis() as i64)
            .await
    }

    /// Gives up on messages held longer than `retention` on `platform`.
    pub async fn expire_held(
        &self,
        platform: Platform,
        retention: Duration,
    ) -> Result<u64, StoreError> {
        let n = self
            .store
            .expire_held(platform, now_millis() - retention.as_millis() as i64)
            .await?;
        if n > 0 {
            tracing::info!(%platform, expired = n, "held messages past retention expired");
        }
        Ok(n)
    }
}
