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

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    updates: Vec<Value>,
    webhook_url: String,
    next_message_id: i64,
    rejected: Vec<String>,
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

    /// Requests the fake refused as not fitting the spec (should stay empty).
    pub fn rejected(&self) -> Vec<String> {
        self.inner.lock().unwrap().rejected.clone()
    }

    /// Waits until `check` holds on the fake's state (up to 10 s).
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Self) -> bool) {
        let ok =
            crate::helpers::eventually(Duration::from_secs(10), || async { check(self) }).await;
        assert!(
            ok,
            "timed out waiting for {what}; calls: {:?}",
            self.inner.lock().unwrap().calls
        );
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
        "sendmessage" | "editmessagetext" => {
            let id = {
                let mut inner = fake.inner.lock().unwrap();
                inner.next_message_id += 1;
                inner.next_message_id
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
