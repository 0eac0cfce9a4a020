//! A fake Telegram Bot API server: the methods Segue calls, in the `{"ok":…}` envelope,
//! rejecting unknown methods, unknown parameters and missing required ones according to
//! `../shared/specs/telegram-bot-api-9.1.min.json`. Method names match case-insensitively
//! (teloxide sends `SendMessage`); `setWebhook` arrives as multipart, the rest as JSON.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// One call the fake received.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub params: Value,
}

/// A token bucket: `cap` at once, refilled at `rate` per second.
struct Bucket {
    tokens: f64,
    cap: f64,
    rate: f64,
    last: tokio::time::Instant,
}

impl Bucket {
    fn new(cap: f64, rate: f64) -> Self {
        Self {
            tokens: cap,
            cap,
            rate,
            last: tokio::time::Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Telegram's documented limits: about 30 messages/s overall, about 1/s per chat with
/// short bursts, 20/min per group. One token of slack covers network reordering.
struct Limits {
    overall: Bucket,
    chats: HashMap<i64, Bucket>,
    groups: HashMap<i64, Bucket>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            overall: Bucket::new(31.0, 30.0),
            chats: HashMap::new(),
            groups: HashMap::new(),
        }
    }
}

impl Limits {
    /// `Err(what)` when this message breaks a limit.
    fn admit(&mut self, chat: i64) -> Result<(), &'static str> {
        if chat < 0
            && !self
                .groups
                .entry(chat)
                .or_insert_with(|| Bucket::new(4.0, 20.0 / 60.0))
                .take()
        {
            return Err("20 per minute per group");
        }
        if !self
            .chats
            .entry(chat)
            .or_insert_with(|| Bucket::new(4.0, 1.0))
            .take()
        {
            return Err("1 per second per chat");
        }
        if !self.overall.take() {
            return Err("30 per second overall");
        }
        Ok(())
    }
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    updates: Vec<Value>,
    webhook_url: String,
    next_message_id: i64,
    rejected: Vec<String>,
    limits: Limits,
    violations: Vec<String>,
    blocked: Vec<i64>,
    /// What each message the fake sent now shows, by (chat, message id): text and
    /// keyboard, as editMessageText compares them.
    messages: HashMap<(i64, i64), (Value, Value)>,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeTelegram {
    pub url: String,
    pub token: String,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
    spec: Arc<HashMap<String, Vec<(String, bool)>>>,
}

fn load_spec() -> HashMap<String, Vec<(String, bool)>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/specs/telegram-bot-api-9.1.min.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let spec: Value = serde_json::from_str(&text).expect("spec is JSON");
    spec["methods"]
        .as_object()
        .expect("methods")
        .iter()
        .map(|(name, m)| {
            let fields = m["fields"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .map(|f| {
                            (
                                f["name"].as_str().unwrap().to_owned(),
                                f["required"].as_bool().unwrap_or(false),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (name.to_ascii_lowercase(), fields)
        })
        .collect()
}

impl FakeTelegram {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            url: format!("http://{}", listener.local_addr().unwrap()),
            token: "123456:TEST-token_x".to_owned(),
            inner: Arc::default(),
            arrived: Arc::default(),
            spec: Arc::new(load_spec()),
        };
        let app = axum::Router::new()
            .route("/{bot}/{method}", axum::routing::post(handle))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// Queues an update for getUpdates.
    pub fn push_update(&self, update: Value) {
        self.inner.lock().unwrap().updates.push(update);
        self.arrived.notify_waiters();
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.inner
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method))
            .cloned()
            .collect()
    }

    /// Texts sent to one chat, in order.
    pub fn sent_to(&self, chat: i64) -> Vec<String> {
        self.calls("sendMessage")
            .iter()
            .filter(|c| c.params["chat_id"].as_i64() == Some(chat))
            .map(|c| c.params["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The id the fake gave the message it sent to `chat` with this text.
    pub fn message_id(&self, chat: i64, text: &str) -> Option<i64> {
        let inner = self.inner.lock().unwrap();
        inner
            .messages
            .iter()
            .find(|((c, _), (t, _))| *c == chat && t.as_str() == Some(text))
            .map(|((_, id), _)| *id)
    }

    /// What a message the fake sent shows now: its text and keyboard.
    pub fn shown(&self, chat: i64, id: i64) -> Option<(Value, Value)> {
        self.inner
            .lock()
            .unwrap()
            .messages
            .get(&(chat, id))
            .cloned()
    }

    /// Messages that broke Telegram's rate limits (answered 429).
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }

    /// From now on, sending to this chat answers 403 "bot was blocked by the user".
    pub fn block(&self, chat: i64) {
        self.inner.lock().unwrap().blocked.push(chat);
    }

    /// Requests the fake refused as not fitting the spec (should stay empty).
    pub fn rejected(&self) -> Vec<String> {
        self.inner.lock().unwrap().rejected.clone()
    }

    /// Waits until `check` holds on the fake's state (up to 20 s: CI machines are busy).
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Self) -> bool) {
        self.wait_up_to(Duration::from_secs(20), what, check).await;
    }

    /// Waits until `check` holds on the fake's state, up to `wait`.
    pub async fn wait_up_to(&self, wait: Duration, what: &str, check: impl Fn(&Self) -> bool) {
        let ok = crate::helpers::eventually(wait, || async { check(self) }).await;
        let calls = self.inner.lock().unwrap().calls.len();
        assert!(ok, "timed out waiting for {what} ({calls} calls so far)");
    }
}

fn ok(result: Value) -> Response {
    axum::Json(json!({ "ok": true, "result": result })).into_response()
}

fn error(status: StatusCode, description: &str) -> Response {
    (
        status,
        axum::Json(
            json!({ "ok": false, "error_code": status.as_u16(), "description": description }),
        ),
    )
        .into_response()
}

async fn params_of(req: Request) -> Result<Value, String> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| e.to_string())?;
        let mut map = serde_json::Map::new();
        while let Some(field) = form.next_field().await.map_err(|e| e.to_string())? {
            let name = field.name().unwrap_or_default().to_owned();
            let text = field.text().await.map_err(|e| e.to_string())?;
            let value = if text.starts_with('[') || text.starts_with('{') {
                serde_json::from_str(&text).map_err(|e| e.to_string())?
            } else {
                Value::String(text)
            };
            map.insert(name, value);
        }
        return Ok(Value::Object(map));
    }
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))
}

async fn handle(
    State(fake): State<FakeTelegram>,
    Path((bot, method)): Path<(String, String)>,
    req: Request,
) -> Response {
    if bot != format!("bot{}", fake.token) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let params = match params_of(req).await {
        Ok(p) => p,
        Err(e) => {
            fake.inner
                .lock()
                .unwrap()
                .rejected
                .push(format!("{method}: {e}"));
            return error(StatusCode::BAD_REQUEST, &format!("Bad Request: {e}"));
        }
    };
    // Validate against the Bot API spec.
    let Some(fields) = fake.spec.get(&method.to_ascii_lowercase()) else {
        fake.inner
            .lock()
            .unwrap()
            .rejected
            .push(format!("unknown method {method}"));
        return error(StatusCode::NOT_FOUND, "Not Found: method not found");
    };
    let given = params.as_object().cloned().unwrap_or_default();
    for key in given.keys() {
        if !fields.iter().any(|(name, _)| name == key) {
            fake.inner
                .lock()
                .unwrap()
                .rejected
                .push(format!("{method}: unknown parameter {key}"));
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Bad Request: unknown parameter {key}"),
            );
        }
    }
    for (name, required) in fields {
        if *required && !given.contains_key(name) {
            fake.inner
                .lock()
                .unwrap()
                .rejected
                .push(format!("{method}: missing {name}"));
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Bad Request: parameter {name} is required"),
            );
        }
    }
    if method.eq_ignore_ascii_case("sendMessage") {
        let chat = params["chat_id"].as_i64().unwrap_or(0);
        let mut inner = fake.inner.lock().unwrap();
        if inner.blocked.contains(&chat) {
            return error(
                StatusCode::FORBIDDEN,
                "Forbidden: bot was blocked by the user",
            );
        }
        if let Err(limit) = inner.limits.admit(chat) {
            inner.violations.push(format!("chat {chat}: {limit}"));
            return (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({
                    "ok": false, "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": { "retry_after": 1 }
                })),
            )
                .into_response();
        }
    }
    fake.inner.lock().unwrap().calls.push(Call {
        method: method.clone(),
        params: params.clone(),
    });
    match method.to_ascii_lowercase().as_str() {
        "getme" => ok(json!({
            "id": 42, "is_bot": true, "first_name": "Segue", "username": "segue_bot",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "has_main_web_app": false
        })),
        "getwebhookinfo" => {
            let url = fake.inner.lock().unwrap().webhook_url.clone();
            ok(json!({ "url": url, "has_custom_certificate": false, "pending_update_count": 0 }))
        }
        "deletewebhook" => {
            fake.inner.lock().unwrap().webhook_url.clear();
            ok(json!(true))
        }
        "setwebhook" => {
            fake.inner.lock().unwrap().webhook_url =
                params["url"].as_str().unwrap_or_default().to_owned();
            ok(json!(true))
        }
        "getupdates" => {
            let offset = params["offset"].as_i64().unwrap_or(0);
            let timeout = params["timeout"].as_u64().unwrap_or(0).min(2);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let notified = fake.arrived.notified();
                let ready: Vec<Value> = {
                    let inner = fake.inner.lock().unwrap();
                    inner
                        .updates
                        .iter()
                        .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
                        .cloned()
                        .collect()
                };
                if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
                    return ok(Value::Array(ready));
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        }
        "editmessagetext" => {
            // Telegram's answers: only messages the bot sent can be edited, and an edit
            // that changes nothing is an error.
            let chat = params["chat_id"].as_i64().unwrap_or(0);
            let id = params["message_id"].as_i64().unwrap_or(0);
            let shown = (params["text"].clone(), params["reply_markup"].clone());
            let mut inner = fake.inner.lock().unwrap();
            match inner.messages.get_mut(&(chat, id)) {
                None => error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: message to edit not found",
                ),
                Some(now) if *now == shown => error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: message is not modified: specified new message content and \
                     reply markup are exactly the same as a current content and reply markup \
                     of the message",
                ),
                Some(now) => {
                    *now = shown;
                    ok(json!({
                        "message_id": id, "date": 1_700_000_000, "edit_date": 1_700_000_001,
                        "chat": { "id": chat, "type": "private", "first_name": "X" },
                        "text": params["text"]
                    }))
                }
            }
        }
        "sendmessage" => {
            let id = {
                let mut inner = fake.inner.lock().unwrap();
                inner.next_message_id += 1;
                let id = inner.next_message_id;
                let chat = params["chat_id"].as_i64().unwrap_or(0);
                inner.messages.insert(
                    (chat, id),
                    (params["text"].clone(), params["reply_markup"].clone()),
                );
                id
            };
            ok(json!({
                "message_id": id, "date": 1_700_000_000,
                "chat": { "id": params["chat_id"], "type": "private", "first_name": "X" },
                "text": params["text"]
            }))
        }
        _ => ok(json!(true)),
    }
}
