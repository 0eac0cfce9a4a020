//! A fake Discord: the REST routes Segue calls under `/api/v10` (gateway URL, command bulk
//! overwrite, interaction callback, original-response edit, follow-ups, DM creation,
//! channel messages), each body checked against `../shared/specs/discord-openapi-v10.json`
//! (closed objects: unknown fields are refused), with real rate-limit headers and 429s
//! (a channel takes 5 messages per 5 s), error 50007 for people whose DMs are closed, and
//! a gateway websocket speaking HELLO / IDENTIFY / READY / heartbeat ACK that dispatches
//! INTERACTION_CREATE on demand.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use crate::openapi::Spec;

pub const TOKEN: &str = "discord-test-token";
pub const APP_ID: &str = "1100000000000000001";
/// RFC 8032 test 1's key pair, as the shared fixtures are signed with.
pub const SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
pub const PUBLIC_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

/// One REST call the fake took.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    /// What it answered.
    pub status: u16,
}

/// A fixed window of `limit` requests per `window`.
struct Window {
    start: tokio::time::Instant,
    used: u32,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// Requests the real Discord would refuse: spec mismatches, bad auth, limit breaches.
    violations: Vec<String>,
    closed_dms: HashSet<String>,
    /// DM channel id → user id.
    dms: HashMap<String, String>,
    channels: HashMap<String, Window>,
    /// Interaction tokens answered through the callback (and how).
    answered: HashMap<String, u64>,
    /// Injected answers for the next matching call: (method, path prefix, status, body).
    inject: Vec<(String, String, u16, Value)>,
    identified: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeDiscord {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    spec: Arc<Spec>,
    changed: Arc<Notify>,
    dispatch: broadcast::Sender<Value>,
}

/// Messages a channel takes per window (Discord: 5 per 5 s).
const CHANNEL_LIMIT: u32 = 5;
const CHANNEL_WINDOW: Duration = Duration::from_secs(5);

impl FakeDiscord {
    pub async fn start() -> Self {
        let spec = Arc::new(Spec::load(&format!(
            "{}/../shared/specs/discord-openapi-v10.json",
            env!("CARGO_MANIFEST_DIR")
        )));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (dispatch, _) = broadcast::channel(64);
        let fake = Self {
            url,
            inner: Arc::default(),
            spec,
            changed: Arc::default(),
            dispatch,
        };
        let app = axum::Router::new()
            .route("/gateway", axum::routing::get(gateway))
            .fallback(rest)
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// The bodies of calls to paths containing `part` with `method`, in order.
    pub fn bodies(&self, method: &str, part: &str) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.path.contains(part) && c.status < 300)
            .map(|c| c.body)
            .collect()
    }

    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }

    /// Makes `user_id`'s DMs closed to the bot (error 50007 on send).
    pub fn close_dms(&self, user_id: &str) {
        self.inner
            .lock()
            .unwrap()
            .closed_dms
            .insert(user_id.to_owned());
    }

    /// The next `method` call whose path starts with `/api/v10{prefix}` gets this answer.
    pub fn inject(&self, method: &str, prefix: &str, status: u16, body: Value) {
        self.inner.lock().unwrap().inject.push((
            method.to_owned(),
            format!("/api/v10{prefix}"),
            status,
            body,
        ));
    }

    /// Waits until `check` holds of the fake's calls (or `wait` passes).
    pub async fn wait_for(&self, wait: Duration, check: impl Fn(&[Call]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            if check(&self.calls()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(&self.calls());
            }
        }
    }

    /// Waits for a gateway session to identify; its IDENTIFY payload.
    pub async fn identified(&self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            if let Some(first) = self.inner.lock().unwrap().identified.first().cloned() {
                return Some(first);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Sends INTERACTION_CREATE to every identified gateway session.
    pub fn dispatch_interaction(&self, interaction: Value) {
        let _ = self.dispatch.send(interaction);
    }

    fn record(&self, call: Call) {
        self.inner.lock().unwrap().calls.push(call);
        self.changed.notify_waiters();
    }

    fn violation(&self, what: String) {
        self.inner.lock().unwrap().violations.push(what);
    }
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

/// Which route of the spec a path is, with its parameters.
fn route_of(method: &Method, path: &str) -> Option<(&'static str, Vec<String>)> {
    let parts: Vec<&str> = path.strip_prefix("/api/v10/")?.split('/').collect();
    let p = |i: usize| parts[i].to_owned();
    Some(match (method.as_str(), parts.as_slice()) {
        ("GET", ["gateway"]) => ("/gateway", vec![]),
        ("GET", ["gateway", "bot"]) => ("/gateway/bot", vec![]),
        ("PUT", ["applications", _, "commands"]) => {
            ("/applications/{application_id}/commands", vec![p(1)])
        }
        ("PUT", ["applications", _, "guilds", _, "commands"]) => (
            "/applications/{application_id}/guilds/{guild_id}/commands",
            vec![p(1), p(3)],
        ),
        ("POST", ["interactions", _, _, "callback"]) => (
            "/interactions/{interaction_id}/{interaction_token}/callback",
            vec![p(1), p(2)],
        ),
        ("PATCH", ["webhooks", _, _, "messages", "@original"]) => (
            "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
            vec![p(1), p(2)],
        ),
        ("POST", ["webhooks", _, _]) => {
            ("/webhooks/{webhook_id}/{webhook_token}", vec![p(1), p(2)])
        }
        ("POST", ["users", "@me", "channels"]) => ("/users/@me/channels", vec![]),
        ("POST", ["channels", _, "messages"]) => ("/channels/{channel_id}/messages", vec![p(1)]),
        _ => return None,
    })
}

async fn rest(
    State(fake): State<FakeDiscord>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                fake.violation(format!("{method} {path}: body is not JSON: {e}"));
                return error(
                    StatusCode::BAD_REQUEST,
                    50109,
                    "The request body contains invalid JSON.",
                );
            }
        }
    };
    let (status, response) = answer(&fake, &method, &path, &headers, &body);
    fake.record(Call {
        method: method.to_string(),
        path,
        body,
        status: status.as_u16(),
    });
    response
}

fn answer(
    fake: &FakeDiscord,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> (StatusCode, Response) {
    let respond = |status: StatusCode, r: Response| (status, r);
    let Some((route, params)) = route_of(method, path) else {
        fake.violation(format!("{method} {path}: not a route Segue should call"));
        return respond(
            StatusCode::NOT_FOUND,
            error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
        );
    };
    let interaction_route = route.starts_with("/interactions") || route.starts_with("/webhooks");
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if !interaction_route && auth != Some(&format!("Bot {TOKEN}")) {
        fake.violation(format!("{method} {path}: bad authorization {auth:?}"));
        return respond(
            StatusCode::UNAUTHORIZED,
            error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized"),
        );
    }
    if method != Method::GET {
        let schema = fake
            .spec
            .request_schema(&method.as_str().to_lowercase(), route);
        assert!(
            !schema.is_null(),
            "the spec has a body for {method} {route}"
        );
        let problems = fake.spec.check(schema, body);
        if !problems.is_empty() {
            fake.violation(format!("{method} {path}: {}", problems.join("; ")));
            return respond(
                StatusCode::BAD_REQUEST,
                error(
                    StatusCode::BAD_REQUEST,
                    50035,
                    &format!("Invalid Form Body: {problems:?}"),
                ),
            );
        }
    }
    let injected = {
        let mut inner = fake.inner.lock().unwrap();
        let at = inner
            .inject
            .iter()
            .position(|(m, prefix, _, _)| m == method.as_str() && path.starts_with(prefix));
        at.map(|i| inner.inject.remove(i))
    };
    if let Some((_, _, status, body)) = injected {
        let status = StatusCode::from_u16(status).unwrap();
        let mut r = (status, axum::Json(body.clone())).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let secs = body["retry_after"].as_f64().unwrap_or(1.0);
            r.headers_mut()
                .insert("retry-after", secs.ceil().to_string().parse().unwrap());
            r.headers_mut()
                .insert("x-ratelimit-scope", "user".parse().unwrap());
        }
        return respond(status, r);
    }
    let ok = |v: Value| respond(StatusCode::OK, axum::Json(v).into_response());
    match route {
        "/gateway" | "/gateway/bot" => {
            let ws = format!("{}/gateway", fake.url.replace("http://", "ws://"));
            ok(json!({
                "url": ws, "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
            }))
        }
        "/applications/{application_id}/commands"
        | "/applications/{application_id}/guilds/{guild_id}/commands" => {
            if params[0] != APP_ID {
                fake.violation(format!("{path}: wrong application id"));
                return respond(
                    StatusCode::FORBIDDEN,
                    error(StatusCode::FORBIDDEN, 50001, "Missing Access"),
                );
            }
            let created: Vec<Value> = body
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    c["id"] = json!(format!("14000000000000{i:05}"));
                    c["application_id"] = json!(APP_ID);
                    c["version"] = json!("1");
                    c
                })
                .collect();
            ok(Value::Array(created))
        }
        "/interactions/{interaction_id}/{interaction_token}/callback" => {
            let kind = body["type"].as_u64().unwrap_or(0);
            let mut inner = fake.inner.lock().unwrap();
            if inner.answered.contains_key(&params[1]) {
                drop(inner);
                fake.violation(format!("{path}: answered twice"));
                return respond(
                    StatusCode::BAD_REQUEST,
                    error(
                        StatusCode::BAD_REQUEST,
                        40060,
                        "Interaction has already been acknowledged.",
                    ),
                );
            }
            inner.answered.insert(params[1].clone(), kind);
            respond(
                StatusCode::NO_CONTENT,
                StatusCode::NO_CONTENT.into_response(),
            )
        }
        "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
        | "/webhooks/{webhook_id}/{webhook_token}" => {
            if params[0] != APP_ID {
                fake.violation(format!("{path}: webhook id is not the application id"));
                return respond(
                    StatusCode::NOT_FOUND,
                    error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook"),
                );
            }
            ok(message(body, "1200000000000000002"))
        }
        "/users/@me/channels" => {
            let Some(user) = body["recipient_id"].as_str().map(str::to_owned) else {
                return respond(
                    StatusCode::BAD_REQUEST,
                    error(StatusCode::BAD_REQUEST, 50035, "recipient_id"),
                );
            };
            let channel = format!("9{}", &user[1..]);
            fake.inner
                .lock()
                .unwrap()
                .dms
                .insert(channel.clone(), user.clone());
            ok(json!({
                "id": channel, "type": 1, "last_message_id": null, "flags": 0,
                "recipients": [{"id": user, "username": "someone", "discriminator": "0", "avatar": null, "global_name": null, "public_flags": 0}]
            }))
        }
        "/channels/{channel_id}/messages" => {
            let channel = &params[0];
            let mut inner = fake.inner.lock().unwrap();
            if let Some(user) = inner.dms.get(channel)
                && inner.closed_dms.contains(user)
            {
                return respond(
                    StatusCode::FORBIDDEN,
                    error(
                        StatusCode::FORBIDDEN,
                        50007,
                        "Cannot send messages to this user",
                    ),
                );
            }
            let now = tokio::time::Instant::now();
            let w = inner.channels.entry(channel.clone()).or_insert(Window {
                start: now,
                used: 0,
            });
            if now.duration_since(w.start) >= CHANNEL_WINDOW {
                *w = Window {
                    start: now,
                    used: 0,
                };
            }
            let reset_after = (CHANNEL_WINDOW - now.duration_since(w.start)).as_secs_f64();
            if w.used >= CHANNEL_LIMIT {
                drop(inner);
                fake.violation(format!(
                    "{path}: over the channel's {CHANNEL_LIMIT} per 5 s"
                ));
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({"message": "You are being rate limited.", "retry_after": reset_after, "global": false})),
                )
                    .into_response();
                r.headers_mut().insert(
                    "retry-after",
                    reset_after.ceil().to_string().parse().unwrap(),
                );
                return respond(StatusCode::TOO_MANY_REQUESTS, r);
            }
            w.used += 1;
            let remaining = CHANNEL_LIMIT - w.used;
            drop(inner);
            let mut r = axum::Json(message(body, channel)).into_response();
            let h = r.headers_mut();
            h.insert(
                "x-ratelimit-limit",
                CHANNEL_LIMIT.to_string().parse().unwrap(),
            );
            h.insert(
                "x-ratelimit-remaining",
                remaining.to_string().parse().unwrap(),
            );
            h.insert(
                "x-ratelimit-reset-after",
                format!("{reset_after:.3}").parse().unwrap(),
            );
            h.insert(
                "x-ratelimit-bucket",
                format!("channel-{channel}").parse().unwrap(),
            );
            respond(StatusCode::OK, r)
        }
        _ => unreachable!("every route above is answered"),
    }
}

/// A message object as Discord answers a send.
fn message(body: &Value, channel: &str) -> Value {
    json!({
        "id": "1500000000000000099", "channel_id": channel, "type": 0,
        "content": body["content"].as_str().unwrap_or(""),
        "author": {"id": APP_ID, "username": "segue", "discriminator": "0", "avatar": null, "bot": true, "global_name": null, "public_flags": 0},
        "attachments": [], "embeds": [], "mentions": [], "mention_roles": [], "pinned": false,
        "mention_everyone": false, "tts": false, "timestamp": "2026-12-01T00:00:00.000000+00:00",
        "edited_timestamp": null, "flags": 0, "components": body["components"].clone()
    })
}

async fn gateway(ws: WebSocketUpgrade, State(fake): State<FakeDiscord>) -> Response {
    ws.on_upgrade(move |socket| session(socket, fake))
}

async fn session(mut socket: WebSocket, fake: FakeDiscord) {
    let send = |v: Value| Message::Text(v.to_string().into());
    if socket
        .send(send(json!({"op": 10, "d": {"heartbeat_interval": 41250}})))
        .await
        .is_err()
    {
        return;
    }
    let mut dispatches = fake.dispatch.subscribe();
    let mut seq = 1u64;
    let mut identified = false;
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                match v["op"].as_u64() {
                    Some(1) => {
                        let _ = socket.send(send(json!({"op": 11}))).await;
                    }
                    Some(2) => {
                        let token = v["d"]["token"].as_str().unwrap_or("");
                        if token.trim_start_matches("Bot ") != TOKEN {
                            fake.violation("IDENTIFY with a wrong token".to_owned());
                            let _ = socket.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                                code: 4004,
                                reason: "Authentication failed.".into(),
                            }))).await;
                            return;
                        }
                        fake.inner.lock().unwrap().identified.push(v["d"].clone());
                        identified = true;
                        let ready = json!({
                            "op": 0, "t": "READY", "s": seq,
                            "d": {
                                "v": 10,
                                "user": {"id": APP_ID, "username": "segue", "discriminator": "0", "avatar": null, "bot": true, "global_name": null, "public_flags": 0, "flags": 0, "verified": true, "mfa_enabled": false},
                                "guilds": [], "session_id": "fake-session",
                                "resume_gateway_url": format!("{}/gateway", fake.url.replace("http://", "ws://")),
                                "shard": [0, 1],
                                "application": {"id": APP_ID, "flags": 0}
                            }
                        });
                        let _ = socket.send(send(ready)).await;
                        fake.changed.notify_waiters();
                    }
                    _ => {}
                }
            }
            d = dispatches.recv(), if identified => {
                let Ok(d) = d else { continue };
                seq += 1;
                let event = json!({"op": 0, "t": "INTERACTION_CREATE", "s": seq, "d": d});
                if socket.send(send(event)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Signs a body as Discord does: Ed25519 over `timestamp || body`, hex.
pub fn sign(timestamp: &str, body: &[u8]) -> String {
    use ed25519_dalek::Signer;
    let seed: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&SEED_HEX[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap());
    let sig = key.sign(&[timestamp.as_bytes(), body].concat());
    sig.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A shared fixture from `../shared/fixtures/discord/`, raw.
pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../shared/fixtures/discord/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fixture's recorded (timestamp, signature) from SIGNATURES.tsv.
pub fn fixture_signature(name: &str) -> (String, String) {
    let tsv = fixture("SIGNATURES.tsv");
    let line = tsv
        .lines()
        .find(|l| l.split('\t').next() == Some(name))
        .unwrap_or_else(|| panic!("{name} in SIGNATURES.tsv"));
    let cols: Vec<&str> = line.split('\t').collect();
    (cols[1].to_owned(), cols[2].to_owned())
}

/// An interaction like the fixture, with a fresh id and token.
pub fn fresh(name: &str, id: u64) -> Value {
    let mut v: Value = serde_json::from_str(&fixture(name)).unwrap();
    v["id"] = json!(id.to_string());
    v["token"] = json!(format!("token-{id}"));
    v
}
