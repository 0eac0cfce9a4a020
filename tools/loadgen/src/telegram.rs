//! `loadgen telegram`: measures any Telegram bot in webhook mode. It serves a fake Bot
//! API (point the bot's API URL at it), waits for the bot to register its webhook, then
//! posts updates to the bot's webhook URL at a chosen concurrency and times each one from
//! the POST to the bot's `sendMessage` to that chat. A chat's replies arrive in order, so
//! the k-th reply to a chat answers its k-th update.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

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
    /// Updates in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Distinct users (each in their own private chat).
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// The message text.
    #[arg(long, default_value = "/ping")]
    text: String,
    /// Start without waiting for the bot's setWebhook call.
    #[arg(long)]
    no_wait: bool,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Fake {
    /// POST times per chat, oldest first, waiting for their reply.
    waiting: HashMap<i64, VecDeque<Instant>>,
    latency: Option<Histogram<u64>>,
    replies: u64,
    last_reply: Option<Instant>,
    webhook_set: bool,
}

type Shared = Arc<Mutex<Fake>>;

async fn api(
    State(fake): State<Shared>,
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
            let now = Instant::now();
            let mut f = fake.lock().unwrap();
            let sent = f.waiting.get_mut(&chat).and_then(VecDeque::pop_front);
            if let Some(sent) = sent {
                let micros = now.duration_since(sent).as_micros() as u64;
                if let Some(h) = f.latency.as_mut() {
                    let _ = h.record(micros.max(1));
                }
                f.replies += 1;
                f.last_reply = Some(now);
            }
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
    if args.concurrency == 0 || args.users == 0 {
        bail!("--concurrency and --users must be at least 1");
    }
    let fake: Shared = Arc::new(Mutex::new(Fake {
        latency: Some(Histogram::new_with_bounds(1, 120_000_000, 3)?),
        ..Fake::default()
    }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.api_port))
        .await
        .with_context(|| format!("binding the fake Bot API on 127.0.0.1:{}", args.api_port))?;
    let app = axum::Router::new()
        .route("/{bot}/{method}", axum::routing::post(api))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    eprintln!("fake Bot API on http://127.0.0.1:{}", args.api_port);
    if !args.no_wait {
        eprintln!("waiting for the bot to call setWebhook…");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !fake.lock().unwrap().webhook_set {
            if Instant::now() > deadline {
                bail!("the bot did not call setWebhook within 2 minutes (use --no-wait to skip)");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Fresh update ids each run (bots dedupe by update id); Telegram's ids fit in 31 bits.
    let base_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 2_000_000 * 1000)
        .unwrap_or(1_000_000);
    let started = Instant::now();
    let workers = (0..args.concurrency).map(|_| {
        let (client, next, fake) = (client.clone(), next.clone(), fake.clone());
        let (url, secret, text) = (
            args.webhook_url.clone(),
            args.secret.clone(),
            args.text.clone(),
        );
        let (total, users) = (args.updates, args.users);
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
                    "from": { "id": chat, "is_bot": false, "first_name": "L" },
                    "text": text
                }});
                fake.lock()
                    .unwrap()
                    .waiting
                    .entry(chat)
                    .or_default()
                    .push_back(Instant::now());
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
    // Wait for the replies still on their way (up to 30 s of silence).
    let mut last_count = 0;
    let mut quiet_since = Instant::now();
    loop {
        let replies = fake.lock().unwrap().replies;
        if replies + errors >= args.updates || quiet_since.elapsed() > Duration::from_secs(30) {
            break;
        }
        if replies != last_count {
            last_count = replies;
            quiet_since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let f = fake.lock().unwrap();
    let elapsed = f
        .last_reply
        .map_or(started.elapsed(), |t| t.duration_since(started));
    let rate = f.replies as f64 / elapsed.as_secs_f64();
    let h = f.latency.as_ref().expect("histogram");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "updates": args.updates, "replies": f.replies, "errors": errors,
                "seconds": elapsed.as_secs_f64(), "updates_per_second": rate,
                "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0,
                "concurrency": args.concurrency, "users": args.users,
            })
        )?;
    } else {
        writeln!(
            out,
            "{} updates, {} replies, {errors} errors in {:.1} s: {rate:.0} updates/s; POST→sendMessage p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            args.updates,
            f.replies,
            elapsed.as_secs_f64(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            h.max() as f64 / 1000.0
        )?;
    }
    if f.replies == 0 {
        bail!(
            "the bot sent no replies (is its API URL http://127.0.0.1:{}?)",
            args.api_port
        );
    }
    Ok(())
}
