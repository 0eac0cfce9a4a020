//! `loadgen discord`: measures any Discord bot's interactions endpoint. It signs each
//! interaction (a slash command from a DM) with an Ed25519 key as Discord does, posts it
//! at a chosen concurrency, and times the POST until the bot's response; it also serves a
//! minimal fake REST API (point the bot's API base at it) that accepts whatever the bot
//! calls there (command registration, follow-ups).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use ed25519_dalek::{Signer, SigningKey};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct DiscordArgs {
    /// The bot's interactions endpoint URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/discord")]
    endpoint: String,
    /// The Ed25519 seed (hex) whose public key the bot trusts. The default is RFC 8032's
    /// test 1 key: public key d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a.
    #[arg(
        long,
        default_value = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
    )]
    seed: String,
    /// The application id put in interactions.
    #[arg(long, default_value = "1100000000000000001")]
    application_id: String,
    /// Port for the fake REST API (set the bot's API base to http://127.0.0.1:PORT).
    #[arg(long, default_value_t = 8090)]
    api_port: u16,
    /// Interactions to send.
    #[arg(long, default_value_t = 20_000)]
    interactions: u64,
    /// Interactions in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Distinct users (each in their own DM).
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// The slash command to invoke (no options).
    #[arg(long, default_value = "ping")]
    command: String,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

fn signing_key(hex: &str) -> anyhow::Result<SigningKey> {
    if hex.len() != 64 {
        bail!("--seed must be 64 hex digits");
    }
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).context("--seed is not hex")?;
    }
    Ok(SigningKey::from_bytes(&seed))
}

fn interaction(args: &DiscordArgs, id: u64, user: u64) -> Value {
    let user = json!({"id": user.to_string(), "username": format!("u{user}"), "global_name": null,
        "discriminator": "0", "avatar": null, "public_flags": 0});
    json!({
        "id": id.to_string(), "type": 2, "token": format!("load-{id}"),
        "application_id": args.application_id, "channel_id": (user["id"].as_str().unwrap().parse::<u64>().unwrap_or(0) + 1).to_string(),
        "user": user, "version": 1, "locale": "en-US", "entitlements": [],
        "authorizing_integration_owners": {}, "context": 1, "attachment_size_limit": 10_485_760,
        "data": {"id": "1400000000000000001", "name": args.command, "type": 1}
    })
}

pub async fn run(args: DiscordArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.users == 0 {
        bail!("--concurrency and --users must be at least 1");
    }
    let key = Arc::new(signing_key(&args.seed)?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.api_port))
        .await
        .with_context(|| format!("binding the fake REST API on 127.0.0.1:{}", args.api_port))?;
    let app = axum::Router::new().fallback(|| async { axum::Json(json!([])) });
    tokio::spawn(async move { axum::serve(listener, app).await });
    eprintln!(
        "fake Discord REST API on http://127.0.0.1:{}",
        args.api_port
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    // Fresh interaction ids each run (bots dedupe by id).
    let base_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64 * 1_000_000)
        .unwrap_or(1);
    let next = Arc::new(AtomicU64::new(0));
    let args = Arc::new(args);
    let started = Instant::now();
    let workers = (0..args.concurrency).map(|_| {
        let (client, next, key, args) = (client.clone(), next.clone(), key.clone(), args.clone());
        async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.interactions {
                    break;
                }
                let body =
                    interaction(&args, base_id + i, 80_000_000_000 + i % args.users).to_string();
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    .to_string();
                let sig: String = key
                    .sign(&[ts.as_bytes(), body.as_bytes()].concat())
                    .to_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let sent = Instant::now();
                let res = client
                    .post(&args.endpoint)
                    .header("content-type", "application/json")
                    .header("x-signature-ed25519", sig)
                    .header("x-signature-timestamp", ts)
                    .body(body)
                    .send()
                    .await;
                let answered = match res {
                    Ok(r) if r.status().is_success() => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| matches!(v["type"].as_u64(), Some(4 | 5))),
                    _ => false,
                };
                if answered {
                    let _ = h.record((sent.elapsed().as_micros() as u64).max(1));
                } else {
                    errors += 1;
                }
            }
            (h, errors)
        }
    });
    let mut latency = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut errors = 0;
    for (h, e) in futures::future::join_all(workers).await {
        latency.add(h)?;
        errors += e;
    }
    let answered = latency.len();
    let run = crate::replies::Run {
        unit: "interactions",
        answer: "response",
        posted: args.interactions,
        errors,
        started,
        concurrency: args.concurrency,
        users: args.users,
        json: args.json,
    };
    crate::replies::report(&run, answered, started.elapsed(), &latency)?;
    if answered == 0 {
        bail!("the bot answered no interaction (is its public key the one for --seed?)");
    }
    Ok(())
}
