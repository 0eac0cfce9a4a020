//! A fake Graph API: the Send API (`POST /v21.0/me/messages`) and the Messenger Profile
//! API (`POST /v21.0/me/messenger_profile`), in Graph's error envelope. It checks the
//! page token (code 190), validates bodies strictly (unknown fields, missing recipient or
//! message, text over 2,000 characters, more than 3 template buttons or 13 quick replies,
//! titles over 20 characters: code 100), and enforces the 24-hour window: a message to a
//! person who last wrote more than 24 hours ago, without a message tag, is refused with
//! code 10, subcode 2018278, as Meta does. Tests tell it when each PSID last wrote.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub const WINDOW_MS: i64 = 24 * 3600 * 1000;

/// One message the fake accepted.
#[derive(Clone, Debug)]
pub struct Sent {
    pub psid: String,
    pub messaging_type: String,
    pub message: Value,
}

impl Sent {
    /// The text people see: the message's text, or the button template's.
    pub fn text(&self) -> &str {
        self.message["text"]
            .as_str()
            .or_else(|| self.message["attachment"]["payload"]["text"].as_str())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    sent: Vec<Sent>,
    profiles: Vec<Value>,
    rejected: Vec<String>,
    wrote_at: HashMap<String, i64>,
    blocked: Vec<String>,
    next_id: u64,
}

#[derive(Clone)]
pub struct FakeMessenger {
    /// The Graph base URL to configure (`…/v21.0`).
    pub url: String,
    pub token: String,
    inner: Arc<Mutex<Inner>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn graph_error(status: StatusCode, code: i64, subcode: Option<i64>, message: &str) -> Response {
    let mut error = json!({
        "message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEfGh"
    });
    if let Some(s) = subcode {
        error["error_subcode"] = json!(s);
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// `Err(why)` when `obj` has keys outside `allowed` or lacks one of `required`.
fn keys(
    obj: &Map<String, Value>,
    allowed: &[&str],
    required: &[&str],
    what: &str,
) -> Result<(), String> {
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{what}: unknown field {k}"));
    }
    if let Some(k) = required.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("{what}: {k} is required"));
    }
    Ok(())
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{what} must be an object"))
}

fn string_up_to(v: &Value, max: usize, what: &str) -> Result<(), String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{what} must be a string"))?;
    if s.is_empty() || s.chars().count() > max {
        return Err(format!("{what} must be 1-{max} characters"));
    }
    Ok(())
}

fn check_button(b: &Value) -> Result<(), String> {
    let b = object(b, "button")?;
    match b.get("type").and_then(Value::as_str) {
        Some("web_url") => keys(
            b,
            &["type", "url", "title"],
            &["type", "url", "title"],
            "web_url button",
        )?,
        Some("postback") => {
            keys(
                b,
                &["type", "payload", "title"],
                &["type", "payload", "title"],
                "postback button",
            )?;
            string_up_to(&b["payload"], 1000, "button payload")?;
        }
        other => return Err(format!("button type {other:?} is not supported")),
    }
    string_up_to(&b["title"], 20, "button title")
}

fn check_message(m: &Value) -> Result<(), String> {
    let m = object(m, "message")?;
    keys(
        m,
        &["text", "attachment", "quick_replies", "metadata"],
        &[],
        "message",
    )?;
    match (m.get("text"), m.get("attachment")) {
        (Some(text), None) => string_up_to(text, 2000, "message.text")?,
        (None, Some(a)) => {
            let a = object(a, "attachment")?;
            keys(a, &["type", "payload"], &["type", "payload"], "attachment")?;
            if a["type"] != "template" {
                return Err("attachment.type must be template".into());
            }
            let p = object(&a["payload"], "attachment.payload")?;
            keys(
                p,
                &["template_type", "text", "buttons"],
                &["template_type", "text", "buttons"],
                "button template",
            )?;
            if p["template_type"] != "button" {
                return Err("template_type must be button".into());
            }
            string_up_to(&p["text"], 640, "button template text")?;
            let buttons = p["buttons"].as_array().ok_or("buttons must be an array")?;
            if buttons.is_empty() || buttons.len() > 3 {
                return Err("a button template takes 1-3 buttons".into());
            }
            buttons.iter().try_for_each(check_button)?;
        }
        _ => return Err("message needs exactly one of text and attachment".into()),
    }
    if let Some(q) = m.get("quick_replies") {
        let q = q.as_array().ok_or("quick_replies must be an array")?;
        if q.is_empty() || q.len() > 13 {
            return Err("quick_replies takes 1-13 items".into());
        }
        for r in q {
            let r = object(r, "quick reply")?;
            keys(
                r,
                &["content_type", "title", "payload", "image_url"],
                &["content_type"],
                "quick reply",
            )?;
            if r["content_type"] == "text" {
                string_up_to(&r["title"], 20, "quick reply title")?;
                string_up_to(&r["payload"], 1000, "quick reply payload")?;
            }
        }
    }
    Ok(())
}

fn check_send(body: &Value) -> Result<(String, String, bool), String> {
    let b = object(body, "body")?;
    keys(
        b,
        &[
            "recipient",
            "messaging_type",
            "message",
            "tag",
            "notification_type",
        ],
        &["recipient", "messaging_type", "message"],
        "body",
    )?;
    let r = object(&b["recipient"], "recipient")?;
    keys(r, &["id"], &["id"], "recipient")?;
    let psid = r["id"]
        .as_str()
        .ok_or("recipient.id must be a string")?
        .to_owned();
    let kind = b["messaging_type"].as_str().unwrap_or_default().to_owned();
    let tagged = match kind.as_str() {
        "RESPONSE" | "UPDATE" => {
            if b.contains_key("tag") {
                return Err("tag goes only with MESSAGE_TAG".into());
            }
            false
        }
        "MESSAGE_TAG" => {
            // Meta's remaining tags; none fits "your friend played it".
            let tag = b["tag"].as_str().unwrap_or_default();
            if ![
                "CONFIRMED_EVENT_UPDATE",
                "POST_PURCHASE_UPDATE",
                "ACCOUNT_UPDATE",
                "HUMAN_AGENT",
            ]
            .contains(&tag)
            {
                return Err(format!("tag {tag:?} is not valid"));
            }
            true
        }
        other => return Err(format!("messaging_type {other:?} is not valid")),
    };
    check_message(&b["message"])?;
    Ok((psid, kind, tagged))
}

fn check_profile(body: &Value) -> Result<(), String> {
    let b = object(body, "body")?;
    keys(
        b,
        &[
            "get_started",
            "persistent_menu",
            "greeting",
            "ice_breakers",
            "whitelisted_domains",
        ],
        &[],
        "profile",
    )?;
    if let Some(g) = b.get("get_started") {
        let g = object(g, "get_started")?;
        keys(g, &["payload"], &["payload"], "get_started")?;
        string_up_to(&g["payload"], 1000, "get_started.payload")?;
    }
    if let Some(menus) = b.get("persistent_menu") {
        if b.get("get_started").is_none() {
            return Err("a persistent menu needs a Get Started button".into());
        }
        for menu in menus.as_array().ok_or("persistent_menu must be an array")? {
            let menu = object(menu, "menu")?;
            keys(
                menu,
                &[
                    "locale",
                    "composer_input_disabled",
                    "call_to_actions",
                    "disabled_surfaces",
                ],
                &["locale", "call_to_actions"],
                "menu",
            )?;
            let items = menu["call_to_actions"]
                .as_array()
                .ok_or("call_to_actions must be an array")?;
            if items.is_empty() || items.len() > 20 {
                return Err("call_to_actions takes 1-20 items".into());
            }
            for item in items {
                let item = object(item, "menu item")?;
                keys(
                    item,
                    &["type", "title", "payload", "url"],
                    &["type", "title"],
                    "menu item",
                )?;
                string_up_to(&item["title"], 30, "menu item title")?;
            }
        }
    }
    Ok(())
}

impl FakeMessenger {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            url: format!("http://{}/v21.0", listener.local_addr().unwrap()),
            token: "EAAtestpagetoken".to_owned(),
            inner: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/v21.0/me/{api}", axum::routing::post(handle))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// The person behind `psid` wrote to the page just now.
    pub fn user_wrote(&self, psid: &str) {
        self.user_wrote_at(psid, now_ms());
    }

    pub fn user_wrote_at(&self, psid: &str, at_ms: i64) {
        self.inner
            .lock()
            .unwrap()
            .wrote_at
            .insert(psid.to_owned(), at_ms);
    }

    /// From now on, messages to `psid` fail with 551 "This person isn't available".
    pub fn block(&self, psid: &str) {
        self.inner.lock().unwrap().blocked.push(psid.to_owned());
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.inner.lock().unwrap().sent.clone()
    }

    pub fn sent_to(&self, psid: &str) -> Vec<Sent> {
        self.sent().into_iter().filter(|s| s.psid == psid).collect()
    }

    pub fn texts_to(&self, psid: &str) -> Vec<String> {
        self.sent_to(psid)
            .iter()
            .map(|s| s.text().to_owned())
            .collect()
    }

    pub fn profiles(&self) -> Vec<Value> {
        self.inner.lock().unwrap().profiles.clone()
    }

    /// Requests refused as malformed or unauthorized (should stay empty).
    pub fn rejected(&self) -> Vec<String> {
        self.inner.lock().unwrap().rejected.clone()
    }

    /// Waits until `check` holds (up to 20 s: CI machines are busy).
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Self) -> bool) {
        let ok =
            crate::helpers::eventually(Duration::from_secs(20), || async { check(self) }).await;
        assert!(
            ok,
            "timed out waiting for {what}; sent {:#?}; rejected {:?}",
            self.sent(),
            self.rejected()
        );
    }
}

async fn handle(
    State(fake): State<FakeMessenger>,
    Path(api): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    let reject = |why: String| {
        fake.inner
            .lock()
            .unwrap()
            .rejected
            .push(format!("{api}: {why}"));
    };
    if query.get("access_token") != Some(&fake.token) {
        reject("wrong or missing access_token".into());
        return graph_error(
            StatusCode::BAD_REQUEST,
            190,
            None,
            "Invalid OAuth access token - Cannot parse access token",
        );
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            reject(format!("not JSON: {e}"));
            return graph_error(StatusCode::BAD_REQUEST, 100, None, "(#100) Invalid JSON");
        }
    };
    match api.as_str() {
        "messenger_profile" => match check_profile(&body) {
            Ok(()) => {
                fake.inner.lock().unwrap().profiles.push(body);
                axum::Json(json!({ "result": "success" })).into_response()
            }
            Err(why) => {
                reject(why.clone());
                graph_error(StatusCode::BAD_REQUEST, 100, None, &format!("(#100) {why}"))
            }
        },
        "messages" => {
            let (psid, kind, tagged) = match check_send(&body) {
                Ok(v) => v,
                Err(why) => {
                    reject(why.clone());
                    return graph_error(
                        StatusCode::BAD_REQUEST,
                        100,
                        None,
                        &format!("(#100) {why}"),
                    );
                }
            };
            let mut inner = fake.inner.lock().unwrap();
            if inner.blocked.contains(&psid) {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    551,
                    Some(1_545_041),
                    "(#551) This person isn't available right now.",
                );
            }
            let Some(wrote) = inner.wrote_at.get(&psid).copied() else {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    100,
                    Some(2_018_001),
                    "(#100) No matching user found",
                );
            };
            if !tagged && now_ms() - wrote > WINDOW_MS {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    10,
                    Some(2_018_278),
                    "(#10) This message is sent outside of allowed window. Learn more about the new policy here: https://developers.facebook.com/docs/messenger-platform/policy-overview",
                );
            }
            inner.next_id += 1;
            let id = format!("m_fake{}", inner.next_id);
            inner.sent.push(Sent {
                psid: psid.clone(),
                messaging_type: kind,
                message: body["message"].clone(),
            });
            axum::Json(json!({ "recipient_id": psid, "message_id": id })).into_response()
        }
        other => {
            reject(format!("unknown API {other}"));
            graph_error(
                StatusCode::BAD_REQUEST,
                100,
                None,
                "(#100) Unknown path components",
            )
        }
    }
}
