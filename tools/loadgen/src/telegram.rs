//! `loadgen telegram`: measures any Telegram bot in webhook mode. It serves a fake Bot
//! API (point the bot's API URL at it), waits for the bot to register its webhook, then
//! posts updates to the bot's webhook URL at a chosen concurrency and times each one from
//! the POST to the bot's `sendMessage` to that chat. A chat's replies arrive in order, so
//! the k-th reply to a chat answers its k-th update.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::bail;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::replies;

#[derive(clap::Args)]
pub struct TelegramArgs {
    /// The bot's webhook URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/telegram")]
    webhook_url: String,
    /// The webhook secret token the bot expects (X-Telegram-Bot-Api-Secret-Token).
    #[arg(long, default_value = "")]
    secret: String,
    /// Port for the fake Bot API (set the bot's API URL to http://127.0.0.1:PORT).
    #[arg(long, default_value_t = 8089)]
    api_port: u16,
    /// Updates to send.
    #[arg(long, default_value_t = 20_000)]
    updates: u64,
    #[command(flatten)]
    common: replies::Common,
}

#[derive(Default)]
struct Fake {
    webhook_set: bool,
}

type Shared = Arc<Mutex<Fake>>;

#[derive(Clone)]
struct ApiState {
    fake: Shared,
    tracker: replies::Shared,
}

async fn api(
    State(ApiState { fake, tracker }): State<ApiState>,
    Path((_bot, method)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let method = method.to_ascii_lowercase();
    let params: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let result = match method.as_str() {
        "getme" => json!({
            "id": 1, "is_bot": true, "first_name": "Bot", "username": "load_bot",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "has_main_web_app": false
        }),
        "getwebhookinfo" => {
            json!({ "url": "", "has_custom_certificate": false, "pending_update_count": 0 })
        }
        "getupdates" => json!([]),
        "setwebhook" => {
            fake.lock().unwrap().webhook_set = true;
            json!(true)
        }
        "sendmessage" => {
            let chat = params["chat_id"].as_i64().unwrap_or(0);
            tracker.lock().unwrap().replied(&chat.to_string());
            json!({
                "message_id": 1, "date": 1_700_000_000,
                "chat": { "id": chat, "type": "private", "first_name": "L" }, "text": params["text"]
            })
        }
        _ => json!(true),
    };
    axum::Json(json!({ "ok": true, "result": result }))
}

pub async fn run(args: TelegramArgs) -> anyhow::Result<()> {
    if args.common.concurrency == 0 || args.common.users == 0 {
        bail!("--concurrency and --users must be at least 1");
    }
    let fake: Shared = Arc::default();
    let tracker = replies::Tracker::shared()?;
    let app = axum::Router::new()
        .route("/{bot}/{method}", axum::routing::post(api))
        .with_state(ApiState {
            fake: fake.clone(),
            tracker: tracker.clone(),
        });
    replies::serve(args.api_port, "fake Bot API", app).await?;
    eprintln!("fake Bot API on http://127.0.0.1:{}", args.api_port);
    if !args.common.no_wait {
        replies::wait_until("call setWebhook", || fake.lock().unwrap().webhook_set).await?;
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.common.concurrency)
        .build()?;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Fresh update ids each run (bots dedupe by update id); Telegram's ids fit in 31 bits.
    let base_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 2_000_000 * 1000)
        .unwrap_or(1_000_000);
    let started = Instant::now();
    let workers = (0..args.common.concurrency).map(|_| {
        let (client, next, tracker) = (client.clone(), next.clone(), tracker.clone());
        let (url, secret, text) = (
            args.webhook_url.clone(),
            args.secret.clone(),
            args.common.text.clone(),
        );
        let (total, users) = (args.updates, args.common.users);
        async move {
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let chat = (1_000_000 + i % users) as i64;
                let update = json!({ "update_id": base_id + i, "message": {
                    "message_id": i, "date": 1_700_000_000,
                    "chat": { "id": chat, "type": "private", "first_name": "L" },
                    // People have names of their own (a name everyone shares would
                    // make each new user's handle take several tries).
                    "from": { "id": chat, "is_bot": false, "first_name": format!("L{chat}") },
                    "text": text
                }});
                tracker.lock().unwrap().posted(&chat.to_string());
                let mut req = client.post(&url).json(&update);
                if !secret.is_empty() {
                    req = req.header("X-Telegram-Bot-Api-Secret-Token", &secret);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {}
                    _ => errors += 1,
                }
            }
            errors
        }
    });
    let errors: u64 = futures::future::join_all(workers).await.into_iter().sum();
    replies::finish(
        &tracker,
        replies::Run {
            unit: "updates",
            answer: "sendMessage",
            posted: args.updates,
            errors,
            started,
            concurrency: args.common.concurrency,
            users: args.common.users,
            json: args.common.json,
        },
    )
    .await
}
