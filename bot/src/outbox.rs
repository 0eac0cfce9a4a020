//! The outbox: every outgoing message is recorded first, then delivered by its
//! platform's [`Deliver`] implementation under that platform's rate limits. Transient
//! failures are retried with exponential backoff; permanent ones are dead-lettered and
//! the recipient marked unreachable; messages for someone not there right now are held.
//! The delivery loop itself runs in the jobs crate; this module is the logic.
//!
//! Two ways in. A reply the router has just recorded is written already claimed and
//! handed to the delivery worker in memory (the fast lane): no scan finds it, no claim
//! takes it. Everything else (notifications, retries, held rows released, rows left by
//! a restart) is found by the worker's scan of the table (the table lane). A chat with
//! rows in the table lane is *slow*: its replies take the table lane too, behind them,
//! so a chat's messages still go out in order.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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

/// A chat, as the lanes key it.
type ChatKey = (Platform, String);

/// A row with its message, ready to deliver.
type Item = (message::Model, OutboundMessage);

/// What the two lanes know (see the module docs).
#[derive(Default)]
struct Lanes {
    /// The fast lane is open once the table's pending rows are known
    /// ([`Outbox::open_fast_lane`]); until then every reply takes the table lane.
    open: bool,
    /// Slow chats, with the ids of their rows in the table lane.
    slow: HashMap<ChatKey, HashSet<i64>>,
    /// Replies recorded already claimed, waiting for the worker, in the order handed over.
    fast: VecDeque<Item>,
}

fn key(chat: &ChatAddress) -> ChatKey {
    (chat.platform, chat.chat_id.clone())
}

impl Lanes {
    /// Rows of `chat` now wait in the table lane.
    fn slow(&mut self, chat: &ChatAddress, ids: impl IntoIterator<Item = i64>) {
        let mut ids = ids.into_iter().peekable();
        if ids.peek().is_some() {
            self.slow.entry(key(chat)).or_default().extend(ids);
        }
    }

    fn is_slow(&self, chat: &ChatAddress) -> bool {
        self.slow.contains_key(&key(chat))
    }

    /// A table-lane row is finished (delivered, dead, held): its chat may turn fast.
    fn settled(&mut self, chat: &ChatAddress, id: i64) {
        let key = key(chat);
        if let Some(ids) = self.slow.get_mut(&key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.slow.remove(&key);
            }
        }
    }
}

/// Replies for the fast lane, built by [`Outbox::reply_rows`] and handed to the worker by
/// [`Outbox::hand_over`] once their rows are committed.
#[derive(Debug, Default)]
pub struct Handover(Vec<Item>);

impl Handover {
    pub fn extend(&mut self, other: Handover) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Records and delivers outgoing messages.
pub struct Outbox {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    deliverers: HashMap<Platform, (Arc<dyn Deliver>, Limits)>,
    settings: OutboxSettings,
    wake: Notify,
    lanes: Mutex<Lanes>,
    /// Rows were added to the table lane since the worker last scanned it.
    scan: AtomicBool,
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
    /// Due rows found in the table (at most [`BATCH`]).
    pub due: usize,
    /// Replies taken from the fast lane (at most [`BATCH`]).
    pub handed_over: usize,
    /// Rows attempted (delivered, failed, held).
    pub attempted: usize,
    /// When a rate limit stopped the round: how long until it allows the next send.
    pub wait: Option<Duration>,
    /// More is ready now: run another round straight away.
    pub more: bool,
}

/// What one chat's sends in a round came to.
#[derive(Default)]
struct ChatRound {
    attempted: usize,
    sent: Vec<(message::Model, ChatAddress)>,
    /// Rows now waiting in the table lane (a retry, and the chat's rows behind it).
    requeued: Vec<(i64, ChatAddress)>,
    /// Rows finished without delivery (dead, held).
    settled: Vec<(i64, ChatAddress)>,
}

/// Where a new outbound row goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// Delivered already, in the platform's response.
    Inline,
    /// Pending, found by the worker's scan.
    Table,
    /// Pending and claimed, handed to the worker in memory.
    Fast,
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
            lanes: Mutex::default(),
            scan: AtomicBool::new(true),
        }
    }

    fn lanes(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
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
    /// with the last piece): delivered already (`delivered_inline`), or pending in the
    /// table lane, where the worker's scan finds them.
    pub fn rows_for(
        &self,
        out: Outgoing,
        in_reply_to: Option<i64>,
        delivered_inline: bool,
    ) -> (Vec<NewMessage>, Vec<Recorded>) {
        let lane = if delivered_inline {
            Lane::Inline
        } else {
            Lane::Table
        };
        self.rows(out, in_reply_to, lane)
    }

    /// Rows for a reply the router is about to record, for delivery by the worker: in the
    /// fast lane when its chat has nothing waiting in the table (then hand the
    /// [`Handover`] to [`Outbox::hand_over`] once the rows are committed), otherwise in
    /// the table lane behind what waits.
    pub fn reply_rows(
        &self,
        out: Outgoing,
        in_reply_to: i64,
    ) -> (Vec<NewMessage>, Vec<Recorded>, Handover) {
        let fast = self.deliverers.contains_key(&out.to.platform) && {
            let lanes = self.lanes();
            lanes.open && !lanes.is_slow(&out.to)
        };
        if !fast {
            let (rows, recorded) = self.rows(out, Some(in_reply_to), Lane::Table);
            return (rows, recorded, Handover::default());
        }
        let (rows, recorded) = self.rows(out, Some(in_reply_to), Lane::Fast);
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let model = row.model();
            match OutboundMessage::from_row(&model) {
                Ok(msg) => items.push((model, msg)),
                // Not reachable (the row was made from a parsed platform and our own
                // button JSON); were it, the lease runs out and a scan settles the row.
                Err(e) => tracing::error!(error = %e, id = row.id, "reply not handed over"),
            }
        }
        (rows, recorded, Handover(items))
    }

    fn rows(
        &self,
        out: Outgoing,
        in_reply_to: Option<i64>,
        lane: Lane,
    ) -> (Vec<NewMessage>, Vec<Recorded>) {
        let now = now_millis();
        let pieces = split_text(&out.text, out.to.platform.text_limit());
        let last = pieces.len() - 1;
        let mut rows = Vec::with_capacity(pieces.len());
        let mut recorded = Vec::with_capacity(pieces.len());
        let inline = lane == Lane::Inline;
        let next_attempt_at = match lane {
            Lane::Inline => None,
            Lane::Table => Some(now),
            // Claimed from the start: no scan takes it while the worker has it, and if
            // the process dies first, a scan delivers it once the lease runs out.
            Lane::Fast => Some(now + self.settings.lease.as_millis() as i64),
        };
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
                status: if inline {
                    status::DELIVERED
                } else {
                    status::PENDING
                },
                detail: inline.then(|| "inline".to_owned()),
                next_attempt_at,
                created_at: now,
                finished_at: inline.then_some(now),
                duration_ms: None,
            });
        }
        if lane == Lane::Table {
            // Slow from before the rows are committed: a reply recorded meanwhile must
            // not overtake them.
            self.lanes().slow(&out.to, rows.iter().map(|r| r.id));
        }
        (rows, recorded)
    }

    /// Hands committed fast-lane replies to the delivery worker.
    pub fn hand_over(&self, handover: Handover) {
        if handover.is_empty() {
            return;
        }
        self.lanes().fast.extend(handover.0);
        self.wake.notify_one();
    }

    /// Table-lane rows of a chat made due again by someone else (held rows released):
    /// the chat is slow until they are delivered.
    pub fn requeued(&self, chat: &ChatAddress, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        self.lanes().slow(chat, ids.iter().copied());
        self.wake();
    }

    /// Learns which chats have rows waiting in the table (left by a restart, or by
    /// another process) and opens the fast lane. The delivery worker calls this when it
    /// starts; without a worker, every reply takes the table lane.
    pub async fn open_fast_lane(&self) -> Result<(), StoreError> {
        let pending = self.store.pending_outbound().await?;
        let mut lanes = self.lanes();
        for (id, platform, chat_id) in pending {
            if let Ok(platform) = platform.parse::<Platform>() {
                lanes.slow(&ChatAddress::new(platform, chat_id), [id]);
            }
        }
        lanes.open = true;
        Ok(())
    }

    /// Whether replies may take the fast lane yet ([`Outbox::open_fast_lane`]).
    pub fn fast_lane_open(&self) -> bool {
        self.lanes().open
    }

    /// Whether a chat's replies take the table lane now (it has rows waiting there).
    pub fn is_slow(&self, chat: &ChatAddress) -> bool {
        self.lanes().is_slow(chat)
    }

    /// Forgets slow-lane ids whose rows are no longer pending (delivered by a console
    /// stream or another process, say), so their chats turn fast again. Only rows older
    /// than `age` are asked about: a younger one may not be committed yet.
    pub async fn tidy_lanes(&self, age: Duration) -> Result<usize, StoreError> {
        let before = crate::ids::id_floor(now_millis() - age.as_millis() as i64);
        let old: Vec<i64> = self
            .lanes()
            .slow
            .values()
            .flatten()
            .copied()
            .filter(|id| *id < before)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let statuses = self.store.message_statuses(&old).await?;
        let gone: HashSet<i64> = old
            .into_iter()
            .filter(|id| statuses.get(id).map(String::as_str) != Some(status::PENDING))
            .collect();
        let mut lanes = self.lanes();
        lanes.slow.retain(|_, ids| {
            ids.retain(|id| !gone.contains(id));
            !ids.is_empty()
        });
        Ok(gone.len())
    }

    /// Puts the fast lane's waiting replies back in the table, due now (at shutdown, so
    /// the next start delivers them at once rather than after their lease).
    pub async fn return_handed_over(&self) -> Result<(), StoreError> {
        let items: Vec<Item> = self.lanes().fast.drain(..).collect();
        let ids: Vec<i64> = items.iter().map(|(row, _)| row.id).collect();
        self.store.release(&ids).await
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

    /// Wakes the delivery loop to scan the table (after recording pending rows).
    pub fn wake(&self) {
        self.scan.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether the table has rows the worker hasn't scanned for yet (clears the flag).
    pub fn take_scan(&self) -> bool {
        self.scan.swap(false, Ordering::AcqRel)
    }

    /// Resolves when [`Outbox::wake`] was called since the last time.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// A delivery round that scans the table ([`Outbox::deliver_round`]).
    pub async fn deliver_due(&self) -> Result<Round, StoreError> {
        self.deliver_round(true).await
    }

    /// Delivers what is ready: the replies handed over (the fast lane) and, with `scan`,
    /// the table's due rows. Rate limits are checked in each chat's order, the table's
    /// rows claimed in one statement, chats sent in parallel (each in order), and the
    /// delivered rows marked in one statement.
    pub async fn deliver_round(&self, scan: bool) -> Result<Round, StoreError> {
        let mut round = Round::default();
        let (fast, spill) = self.take_handed_over(&mut round);
        let taken: Vec<(i64, ChatAddress)> = fast
            .iter()
            .map(|(row, msg)| (row.id, msg.to.clone()))
            .chain(spill.iter().cloned())
            .collect();
        let result = self.round_with(round, fast, spill, scan).await;
        if result.is_err() {
            // Whether the replies taken went out is unknown: their chats are slow until
            // their rows are settled, so nothing overtakes them (a scan finds them when
            // their lease runs out).
            let mut lanes = self.lanes();
            for (id, to) in taken {
                lanes.slow(&to, [id]);
            }
        }
        result
    }

    async fn round_with(
        &self,
        mut round: Round,
        fast: Vec<Item>,
        mut spill: Vec<(i64, ChatAddress)>,
        scan: bool,
    ) -> Result<Round, StoreError> {
        let due = if scan {
            self.store.due_outbound(BATCH).await?
        } else {
            Vec::new()
        };
        round.due = due.len();
        self.metrics.outbox_lane("fast", fast.len());
        self.metrics.outbox_lane("table", due.len());
        let mut claimed: HashSet<i64> = fast.iter().map(|(row, _)| row.id).collect();
        let mut by_chat: BTreeMap<(String, String), Vec<Item>> = BTreeMap::new();
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
        for (row, msg) in fast {
            by_chat
                .entry((row.platform.clone(), row.chat_id.clone()))
                .or_default()
                .push((row, msg));
        }
        let windows = self.open_windows(&by_chat).await?;
        // What each chat may send now, in order, within the platform's limits.
        let mut chats = Vec::new();
        let mut ids = Vec::new();
        let mut held = Vec::new();
        for mut rows in by_chat.into_values() {
            // Ids grow in the order messages were made.
            rows.sort_by_key(|(row, _)| row.id);
            let mut take = Vec::new();
            let mut rows = rows.into_iter();
            while let Some((row, msg)) = rows.next() {
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
                    held.push((row.id, msg.to, window));
                    continue;
                }
                let group = deliverer.is_group(&msg.to.chat_id);
                if let Some(wait) = Self::over_limit(limits, &msg.to.chat_id, group) {
                    round.wait = Some(round.wait.map_or(wait, |w| w.min(wait)));
                    // Handed-over replies that must wait go to the table, where the wait
                    // can't outlast their lease.
                    spill.extend(
                        std::iter::once((row, msg))
                            .chain(rows)
                            .filter(|(row, _)| claimed.contains(&row.id))
                            .map(|(row, msg)| (row.id, msg.to)),
                    );
                    break;
                }
                if !claimed.contains(&row.id) {
                    ids.push(row.id);
                }
                take.push((row, msg));
            }
            if !take.is_empty() {
                chats.push(take);
            }
        }
        for (id, to, window) in held {
            let reason = format!(
                "outside {}'s {}-hour messaging window: sent when they next write",
                to.platform,
                window.as_secs().div_ceil(3600)
            );
            if self.store.hold(id, &reason).await? {
                round.attempted += 1;
                self.metrics
                    .message(to.platform.as_str(), false, status::HELD);
                self.lanes().settled(&to, id);
            }
        }
        if !spill.is_empty() {
            let ids: Vec<i64> = spill.iter().map(|(id, _)| *id).collect();
            self.store.release(&ids).await?;
            let mut lanes = self.lanes();
            for (id, to) in &spill {
                lanes.slow(to, [*id]);
            }
            drop(lanes);
            self.scan.store(true, Ordering::Release);
            round.more |= round.wait.is_none();
        }
        let lease = self.settings.lease.as_millis() as i64;
        claimed.extend(self.store.claim_many(&ids, lease).await?);
        let claimed = &claimed;
        let sends = chats
            .into_iter()
            .map(|rows| async move { self.send_chat(rows, claimed).await });
        let mut sent = Vec::new();
        for chat in futures::future::join_all(sends).await {
            round.attempted += chat.attempted;
            sent.extend(chat.sent);
            let mut lanes = self.lanes();
            for (id, to) in chat.requeued {
                lanes.slow(&to, [id]);
            }
            for (id, to) in chat.settled {
                lanes.settled(&to, id);
            }
        }
        let rows: Vec<&message::Model> = sent.iter().map(|(row, _)| row).collect();
        self.store.mark_delivered(&rows).await?;
        let mut lanes = self.lanes();
        for (row, to) in &sent {
            lanes.settled(to, row.id);
        }
        drop(lanes);
        for (_, to) in &sent {
            self.metrics
                .message(to.platform.as_str(), false, status::DELIVERED);
        }
        if round.due as u64 >= BATCH && round.attempted > 0 {
            // A full batch: there may be more due in the table.
            self.scan.store(true, Ordering::Release);
            round.more = true;
        }
        Ok(round)
    }

    /// Takes up to a batch of handed-over replies; those whose chat turned slow since
    /// they were handed over are returned apart, for the table lane (behind what waits).
    fn take_handed_over(&self, round: &mut Round) -> (Vec<Item>, Vec<(i64, ChatAddress)>) {
        let mut lanes = self.lanes();
        let n = lanes.fast.len().min(BATCH as usize);
        let taken: Vec<Item> = lanes.fast.drain(..n).collect();
        round.handed_over = taken.len();
        round.more = !lanes.fast.is_empty();
        let mut fast = Vec::with_capacity(taken.len());
        let mut spill = Vec::new();
        for (row, msg) in taken {
            if lanes.is_slow(&msg.to) {
                spill.push((row.id, msg.to));
            } else {
                fast.push((row, msg));
            }
        }
        (fast, spill)
    }

    /// Sends one chat's claimed messages in order, stopping at the first that must wait.
    async fn send_chat(&self, rows: Vec<Item>, claimed: &HashSet<i64>) -> ChatRound {
        let mut done = ChatRound::default();
        let mut rest = rows.into_iter();
        while let Some((row, msg)) = rest.next() {
            // Another worker has it: leave the rest of this chat to keep its order.
            if !claimed.contains(&row.id) {
                break;
            }
            let Some((deliverer, _)) = self.deliverers.get(&msg.to.platform) else {
                break;
            };
            done.attempted += 1;
            match deliverer.deliver(&msg).await {
                Ok(()) => done.sent.push((row, msg.to)),
                Err(e) => {
                    let retrying = match self.failed(&row, &msg, e).await {
                        Ok(false) => {
                            done.settled.push((row.id, msg.to));
                            continue;
                        }
                        Ok(true) => true,
                        Err(e) => {
                            tracing::error!(error = %e, id = row.id, "recording a failed delivery failed");
                            false
                        }
                    };
                    // The chat's later messages wait in the table lane behind this one.
                    let later: Vec<(i64, ChatAddress)> = rest
                        .filter(|(r, _)| claimed.contains(&r.id))
                        .map(|(r, m)| (r.id, m.to))
                        .collect();
                    if retrying {
                        // Released from their lease, so they follow as soon as it goes.
                        // (Otherwise all stay claimed: a scan takes them once the lease
                        // runs out.)
                        let ids: Vec<i64> = later.iter().map(|(id, _)| *id).collect();
                        if let Err(e) = self.store.release(&ids).await {
                            tracing::error!(error = %e, "releasing claimed rows failed");
                        }
                    }
                    done.requeued.push((row.id, msg.to));
                    done.requeued.extend(later);
                    break;
                }
            }
        }
        done
    }

    /// The private chats among `due` whose person may be messaged unprompted now (on
    /// platforms with a [`Deliver::reply_window`]).
    async fn open_windows(
        &self,
        due: &BTreeMap<(String, String), Vec<Item>>,
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
