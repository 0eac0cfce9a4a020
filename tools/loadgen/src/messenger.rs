//! `loadgen messenger`: measures any Messenger bot's webhook. It serves a fake Graph API
//! (point the bot's Graph URL at `http://127.0.0.1:PORT/v21.0`) that accepts every Send
//! API and Messenger Profile call, posts page events signed with the app secret
//! (`X-Hub-Signature-256`) to the bot's webhook at a chosen concurrency, and times each
//! event from the POST to the bot's Send API call to that sender.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::bail;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::replies;

#[derive(clap::Args)]
pub struct MessengerArgs {
    /// The bot's webhook URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/messenger")]
    webhook_url: String,
    /// The Meta app secret the bot checks signatures with.
    #[arg(long, default_value = "loadsecret")]
    app_secret: String,
    /// Port for the fake Graph API (set the bot's Graph URL to http://127.0.0.1:PORT/v21.0).
    #[arg(long, default_value_t = 8090)]
    api_port: u16,
    /// Events to send.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Events per webhook POST (Meta batches them).
    #[arg(long, default_value_t = 1)]
    batch: u64,
    #[command(flatten)]
    common: replies::Common,
}

#[derive(Clone)]
struct ApiState {
    profile_set: Arc<AtomicBool>,
    tracker: replies::Shared,
}

async fn api(
    State(state): State<ApiState>,
    Path((_version, api)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let params: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match api.as_str() {
        "messages" => {
            let psid = params["recipient"]["id"].as_str().unwrap_or_default();
            state.tracker.lock().unwrap().replied(psid);
            axum::Json(json!({ "recipient_id": psid, "message_id": "m_load" }))
        }
        _ => {
            state.profile_set.store(true, Ordering::SeqCst);
            axum::Json(json!({ "result": "success" }))
        }
    }
}

fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

pub async fn run(args: MessengerArgs) -> anyhow::Result<()> {
    if args.common.concurrency == 0 || args.common.users == 0 || args.batch == 0 {
        bail!("--concurrency, --users and --batch must be at least 1");
    }
    let tracker = replies::Tracker::shared()?;
    let profile_set = Arc::new(AtomicBool::new(false));
    let app = axum::Router::new()
        .route("/{version}/me/{api}", axum::routing::post(api))
        .with_state(ApiState {
            profile_set: profile_set.clone(),
            tracker: tracker.clone(),
        });
    replies::serve(args.api_port, "fake Graph API", app).await?;
    eprintln!("fake Graph API on http://127.0.0.1:{}/v21.0", args.api_port);
    if !args.common.no_wait {
        replies::wait_until("set its Messenger profile", || {
            profile_set.load(Ordering::SeqCst)
        })
        .await?;
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.common.concurrency)
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    // Fresh mids each run (bots dedupe by mid).
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let secret = Arc::new(args.app_secret.clone().into_bytes());
    let started = Instant::now();
    let workers = (0..args.common.concurrency).map(|_| {
        let (client, next, tracker, secret) =
            (client.clone(), next.clone(), tracker.clone(), secret.clone());
        let (url, text) = (args.webhook_url.clone(), args.common.text.clone());
        let (total, users, batch) = (args.events, args.common.users, args.batch);
        async move {
            let mut errors = 0u64;
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    break;
                }
                let last = (first + batch).min(total);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or_default();
                let events: Vec<Value> = (first..last)
                    .map(|i| {
                        let psid = (10_000_000 + i % users).to_string();
                        json!({
                            "sender": { "id": psid }, "recipient": { "id": "PAGE" }, "timestamp": now,
                            "message": { "mid": format!("m_load_{run_id}_{i}"), "text": text }
                        })
                    })
                    .collect();
                let body = serde_json::to_vec(&json!({
                    "object": "page",
                    "entry": [{ "id": "PAGE", "time": now, "messaging": events }]
                }))
                .expect("JSON");
                {
                    let mut t = tracker.lock().unwrap();
                    for i in first..last {
                        t.posted(&(10_000_000 + i % users).to_string());
                    }
                }
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("X-Hub-Signature-256", signature(&secret, &body))
                    .body(body)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => {}
                    _ => errors += last - first,
                }
            }
            errors
        }
    });
    let errors: u64 = futures::future::join_all(workers).await.into_iter().sum();
    replies::finish(
        &tracker,
        replies::Run {
            unit: "events",
            answer: "Send API",
            posted: args.events,
            errors,
            started,
            concurrency: args.common.concurrency,
            users: args.common.users,
            json: args.common.json,
        },
    )
    .await
}
