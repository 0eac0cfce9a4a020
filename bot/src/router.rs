//! The router: takes one [`Incoming`] from a platform adapter, drops redeliveries, keeps
//! each chat's messages in order, resolves the sender, runs the middleware chain and the
//! command's handler, and records the inbound message and its replies (audit log and
//! outbox) in one write. On platforms with a messaging window (Messenger) it also records
//! that the sender wrote and releases what was held for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::command::{Args, CommandLine, CommandSpec};
use crate::core::Core;
use crate::error::{APOLOGY, CommandError};
use crate::ids::now_millis;
use crate::message::{ChatAddress, ChatKind, Content, Incoming, Outgoing, Reply};
use crate::middleware::{BanCheck, Middleware, RateLimit};
use crate::outbox::{Handover, Recorded};
use crate::store::entities::message::status;
use crate::store::{NewMessage, Person, Sighting, StoreError};

/// How replies leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    /// The platform carries them in its response to the inbound request (web console,
    /// Discord interactions): recorded as delivered.
    Inline,
    /// Through the outbox and the platform's `Deliver` implementation.
    Outbox,
}

/// What became of one incoming message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Handled; these replies were recorded (and, in outbox mode, queued).
    Replied(Vec<Recorded>),
    /// Seen before (same platform event id): nothing done.
    Duplicate,
}

/// What a handler invocation sees.
#[derive(Debug)]
pub struct Ctx {
    pub core: Arc<Core>,
    pub incoming: Incoming,
    pub person: Person,
    /// Set by a handler that changed who the sender is; the router records the message
    /// accordingly.
    sender_change: Mutex<Option<SenderChange>>,
}

/// A handler's change to the sender itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderChange {
    /// `/forget`: the person's rows are gone; record this message without them.
    Forgotten,
    /// `/connect`: the sender's user was joined into this one.
    JoinedInto(i64),
}

impl Ctx {
    pub fn new(core: Arc<Core>, incoming: Incoming, person: Person) -> Self {
        Self {
            core,
            incoming,
            person,
            sender_change: Mutex::default(),
        }
    }

    /// Tells the router that the sender changed while handling this message.
    pub fn sender_changed(&self, change: SenderChange) {
        *self.sender_change.lock().unwrap_or_else(|e| e.into_inner()) = Some(change);
    }
}

/// The result of the middleware chain for one message.
#[derive(Debug)]
pub struct Outcome {
    pub replies: Vec<Reply>,
    /// The inbound row's audit status.
    pub status: &'static str,
    /// The command that ran, if any (for the audit log and metrics).
    pub command: Option<&'static str>,
}

impl Outcome {
    pub fn silent(status: &'static str) -> Self {
        Self {
            replies: Vec::new(),
            status,
            command: None,
        }
    }

    fn rejected(text: String) -> Self {
        Self {
            replies: vec![Reply::text(text)],
            status: status::REJECTED,
            command: None,
        }
    }
}

/// What a message asks for, decided before the middleware runs.
#[derive(Debug)]
enum Route<'a> {
    /// Run this command with these arguments (or answer with its usage line).
    Command(&'a CommandSpec, Result<Args, String>),
    /// Answer with this text, no handler (unknown command, chatter in a private chat).
    Answer(String),
    /// Not for us (group chatter, another bot's command): recorded, not answered.
    Ignore,
}

impl Route<'_> {
    /// Whether handling the message changes nothing a second run would change again: no
    /// handler runs, or the command's handler only reads ([`CommandSpec::read_only`]).
    fn reads_only(&self) -> bool {
        match self {
            Route::Command(spec, Ok(_)) => spec.read_only,
            Route::Command(_, Err(_)) | Route::Answer(_) | Route::Ignore => true,
        }
    }
}

/// The rest of the middleware chain, ending in the command dispatch.
pub struct Next<'a> {
    chain: &'a [Arc<dyn Middleware>],
    route: &'a Route<'a>,
}

impl Next<'_> {
    pub async fn run(self, ctx: &Ctx) -> Outcome {
        match self.chain.split_first() {
            Some((first, rest)) => {
                first
                    .call(
                        ctx,
                        Next {
                            chain: rest,
                            route: self.route,
                        },
                    )
                    .await
            }
            None => run_route(ctx, self.route).await,
        }
    }
}

/// Parses and dispatches messages. One per process, shared by all platforms.
pub struct Router {
    core: Arc<Core>,
    chain: Vec<Arc<dyn Middleware>>,
    chats: Mutex<HashMap<ChatAddress, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("middleware", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router with the standard middleware: ban check, then the per-user rate limit.
    pub fn new(core: Arc<Core>) -> Self {
        let limit = RateLimit::new(core.settings.user_burst, core.settings.user_per_second);
        Self::with_middleware(core, vec![Arc::new(BanCheck), Arc::new(limit)])
    }

    pub fn with_middleware(core: Arc<Core>, chain: Vec<Arc<dyn Middleware>>) -> Self {
        Self {
            core,
            chain,
            chats: Mutex::default(),
        }
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Handles one message end to end. Errors only when storage fails (the adapter then
    /// answers "try again": the platform will redeliver, and nothing was recorded).
    pub async fn handle(&self, incoming: Incoming, mode: ReplyMode) -> Result<Handled, StoreError> {
        // The chat's turn is taken before the first await, so a chat's messages are
        // handled in the order adapters hand them over.
        let chat = incoming.chat.clone();
        let lock = self.chat_lock(&chat);
        let guard = lock.lock().await;
        let result = self.handle_in_turn(incoming, mode).await;
        drop(guard);
        self.release_chat_lock(&chat, lock);
        result
    }

    async fn handle_in_turn(
        &self,
        incoming: Incoming,
        mode: ReplyMode,
    ) -> Result<Handled, StoreError> {
        let store = &self.core.store;
        let platform = incoming.chat.platform;
        let route = self.route(&incoming);
        let Some(ext) = incoming.external_id.clone() else {
            return self.handle_in_order(incoming, mode, None, route).await;
        };
        let Some(sighting) = store.begin_sighting(platform, &ext) else {
            tracing::debug!(%platform, id = %ext, "event already in flight ignored");
            return Ok(Handled::Duplicate);
        };
        // An event whose handling changes nothing skips the read: if it is a redelivery
        // after all, its marker is found taken at commit and its replies are dropped.
        if !route.reads_only() && sighting.seen_before().await? {
            tracing::debug!(%platform, id = %ext, "redelivered event ignored");
            return Ok(Handled::Duplicate);
        }
        // The marker is written with the audit rows; if handling fails, nothing is, and
        // the platform's redelivery is handled.
        self.handle_in_order(incoming, mode, Some(&sighting), route)
            .await
    }

    async fn handle_in_order(
        &self,
        incoming: Incoming,
        mode: ReplyMode,
        sighting: Option<&Sighting>,
        route: Route<'_>,
    ) -> Result<Handled, StoreError> {
        let started = Instant::now();
        let received_at = now_millis();
        let store = &self.core.store;
        let person = store
            .resolve_reaching(
                &incoming.user,
                &incoming.chat,
                incoming.chat_kind,
                incoming.private_chat.as_deref(),
            )
            .await?;
        if incoming.chat_kind == ChatKind::Private
            && self
                .core
                .outbox
                .reply_window(incoming.chat.platform)
                .is_some()
        {
            // They wrote: the platform's messaging window is open again, and what was
            // held for it goes out now, ahead of this message's replies. Both are written
            // at most once a minute per person (held rows only arise while the window
            // is closed, i.e. before that first message).
            if store.open_window(&person, received_at).await? {
                let released = store.release_held(&incoming.chat).await?;
                self.core.outbox.requeued(&incoming.chat, &released);
            }
        }
        let ctx = Ctx::new(self.core.clone(), incoming, person);
        let outcome = match route {
            Route::Ignore => Outcome::silent(status::IGNORED),
            _ => {
                Next {
                    chain: &self.chain,
                    route: &route,
                }
                .run(&ctx)
                .await
            }
        };

        let inbound_id = store.next_id();
        let elapsed = started.elapsed();
        let platform = ctx.incoming.chat.platform;
        let change = *ctx.sender_change.lock().unwrap_or_else(|e| e.into_inner());
        let (user_id, text) = match change {
            None => (
                Some(ctx.person.user_id),
                inbound_text(&ctx.incoming.content),
            ),
            Some(SenderChange::JoinedInto(user)) => {
                (Some(user), inbound_text(&ctx.incoming.content))
            }
            Some(SenderChange::Forgotten) => (None, String::new()),
        };
        let mut rows = vec![NewMessage {
            id: inbound_id,
            inbound: true,
            chat: ctx.incoming.chat.clone(),
            user_id,
            external_id: ctx.incoming.external_id.clone(),
            in_reply_to: None,
            text,
            buttons: Vec::new(),
            status: outcome.status,
            detail: outcome.command.map(str::to_owned),
            next_attempt_at: None,
            created_at: received_at,
            finished_at: Some(now_millis()),
            duration_ms: Some(i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX)),
        }];
        let forgotten = change == Some(SenderChange::Forgotten);
        if forgotten {
            // Nothing about them is kept, this message included.
            rows.clear();
        }
        let mut recorded = Vec::new();
        let mut handover = Handover::default();
        for reply in outcome.replies {
            let edits = if reply.in_place {
                ctx.incoming.on_message.clone()
            } else {
                None
            };
            let mut out = Outgoing::new(ctx.incoming.chat.clone(), reply);
            out.user_id = user_id;
            out.edits = edits;
            let outbox = &self.core.outbox;
            let (r, rec) = match mode {
                ReplyMode::Inline => outbox.rows_for(out, Some(inbound_id), true),
                ReplyMode::Outbox => {
                    let (r, rec, fast) = outbox.reply_rows(out, inbound_id);
                    handover.extend(fast);
                    (r, rec)
                }
            };
            // A forgotten person's replies are kept only while they wait for the outbox.
            if !(forgotten && mode == ReplyMode::Inline) {
                rows.extend(r);
            }
            recorded.extend(rec);
        }
        let table_lane = mode == ReplyMode::Outbox && recorded.len() > handover.len();
        if !store.record_seen(rows, sighting).await? {
            // Handled before after all (a redelivery of a read-only command): the first
            // handling's replies went out, these are dropped unsent.
            tracing::debug!(%platform, id = ?ctx.incoming.external_id, "redelivered event: replies dropped");
            return Ok(Handled::Duplicate);
        }
        let metrics = &self.core.metrics;
        metrics.message(platform.as_str(), true, outcome.status);
        metrics.handled(outcome.command.unwrap_or("-"), elapsed.as_secs_f64());
        if mode == ReplyMode::Outbox {
            // Committed: the fast lane's replies go to the worker in memory, the others
            // wait for its scan.
            self.core.outbox.hand_over(handover);
            if table_lane {
                self.core.outbox.wake();
            }
        } else {
            for _ in &recorded {
                metrics.message(platform.as_str(), false, status::DELIVERED);
            }
        }
        Ok(Handled::Replied(recorded))
    }

    /// Decides what a message asks for.
    fn route<'a>(&'a self, incoming: &Incoming) -> Route<'a> {
        // Private chats, and group messages meant for the bot (a reply to it), get answers
        // even without a command; other group chatter is ignored.
        let for_me = incoming.chat_kind == ChatKind::Private || incoming.to_bot;
        let unknown = |name: &str| {
            Route::Answer(format!(
                "I don't know /{name}. Send /help to see what I can do."
            ))
        };
        match &incoming.content {
            Content::Text(text) | Content::Button { data: text } => {
                let Some(line) = CommandLine::parse(text) else {
                    return if for_me {
                        Route::Answer(
                            "I answer commands. Send /help to see what I can do.".to_owned(),
                        )
                    } else {
                        Route::Ignore
                    };
                };
                let addressed = match (line.bot, &incoming.bot_username) {
                    (Some(to), Some(me)) if !to.eq_ignore_ascii_case(me) => return Route::Ignore,
                    (Some(_), _) => true,
                    (None, _) => false,
                };
                match self.core.commands.get(line.name) {
                    Some(spec) => Route::Command(spec, spec.parse_args(line.args)),
                    None if for_me || addressed => unknown(line.name),
                    None => Route::Ignore,
                }
            }
            Content::Command { name, options } => match self.core.commands.get(name) {
                Some(spec) => Route::Command(spec, spec.args_from_options(options)),
                None => unknown(name),
            },
        }
    }

    fn chat_lock(&self, chat: &ChatAddress) -> Arc<tokio::sync::Mutex<()>> {
        self.chats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(chat.clone())
            .or_default()
            .clone()
    }

    /// Drops a chat's lock entry when nobody else holds or waits for it.
    fn release_chat_lock(&self, chat: &ChatAddress, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        // Ours plus the map's: nobody is waiting.
        if Arc::strong_count(&lock) == 2 {
            chats.remove(chat);
        }
    }
}

/// Runs what the route says (the end of the middleware chain).
async fn run_route(ctx: &Ctx, route: &Route<'_>) -> Outcome {
    let (spec, args) = match route {
        Route::Ignore => return Outcome::silent(status::IGNORED),
        Route::Answer(text) => return Outcome::rejected(text.clone()),
        Route::Command(spec, Err(problem)) => {
            return Outcome {
                replies: vec![Reply::text(usage_text(spec, problem))],
                status: status::REJECTED,
                command: Some(spec.name),
            };
        }
        Route::Command(spec, Ok(args)) => (spec, args.clone()),
    };
    let (replies, status) = match (spec.handler)(ctx, args).await {
        Ok(replies) => (replies, status::HANDLED),
        Err(CommandError::User(text)) => (vec![Reply::text(text)], status::HANDLED),
        Err(CommandError::Usage(problem)) => (
            vec![Reply::text(usage_text(spec, &problem))],
            status::REJECTED,
        ),
        Err(CommandError::Store(e)) => {
            tracing::error!(error = %e, command = spec.name, "handler failed");
            (vec![Reply::text(APOLOGY)], status::FAILED)
        }
    };
    Outcome {
        replies,
        status,
        command: Some(spec.name),
    }
}

fn usage_text(spec: &CommandSpec, problem: &str) -> String {
    let mut text = format!("Usage: {}", spec.usage());
    if !problem.is_empty() {
        text.push_str(&format!(" ({problem})"));
    }
    text.push_str(&format!("\n{}", spec.description));
    text
}

fn inbound_text(content: &Content) -> String {
    match content {
        Content::Text(t) => t.clone(),
        Content::Button { data } => format!("[button] {data}"),
        Content::Command { name, options } => {
            let mut s = format!("/{name}");
            for (k, v) in options {
                s.push_str(&format!(" {k}:{v}"));
            }
            s
        }
    }
}
