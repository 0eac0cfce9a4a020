//! `loadgen`: measures a chat bot under load from outside the process, the way users
//! reach it. `loadgen console` drives Segue's web console API: it opens sessions, then
//! sends `/ping` from many of them at once (as fast as possible, or at a fixed rate) and
//! reports commands per second and latency percentiles. `loadgen telegram` and
//! `loadgen messenger` measure any Telegram or Messenger bot's webhook against a fake
//! platform API they serve; `loadgen discord` any Discord bot's interactions endpoint
//! with signed interactions.

mod discord;
mod messenger;
mod replies;
mod telegram;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for chat bots")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive Segue's web console API: sessions sending a command concurrently.
    Console(ConsoleArgs),
    /// Drive any Telegram bot's webhook, serving it a fake Bot API.
    Telegram(telegram::TelegramArgs),
    /// Drive any Discord bot's interactions endpoint with signed interactions.
    Discord(discord::DiscordArgs),
    /// Drive any Messenger bot's webhook with signed events, serving it a fake Graph API.
    Messenger(messenger::MessengerArgs),
}

#[derive(clap::Args)]
struct ConsoleArgs {
    /// Base URL of the Segue server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Console sessions (simulated users).
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to measure (after a 1 s warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Fixed arrival rate in commands/s; 0 sends as fast as replies come back.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The command text to send.
    #[arg(long, default_value = "/ping")]
    text: String,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Console(args) => console(args).await,
        Cmd::Telegram(args) => telegram::run(args).await,
        Cmd::Discord(args) => discord::run(args).await,
        Cmd::Messenger(args) => messenger::run(args).await,
    }
}

struct Report {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

async fn console(args: ConsoleArgs) -> anyhow::Result<()> {
    if args.sessions == 0 || args.concurrency == 0 {
        bail!("--sessions and --concurrency must be at least 1");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let mut tokens = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let res: serde_json::Value = client
            .post(format!("{base}/console/api/session"))
            .json(&serde_json::json!({ "name": format!("load{i}") }))
            .send()
            .await
            .with_context(|| format!("is Segue running at {base}?"))?
            .error_for_status()?
            .json()
            .await?;
        tokens.push(
            res["session"]
                .as_str()
                .context("no session in the answer")?
                .to_owned(),
        );
    }
    let tokens = Arc::new(tokens);
    let body = serde_json::json!({ "text": args.text }).to_string();

    // Warm-up, then the measured run.
    run(
        &client,
        &base,
        &tokens,
        &body,
        &args,
        Duration::from_secs(1),
    )
    .await;
    let report = run(&client, &base, &tokens, &body, &args, args.duration).await;

    let rate = report.ok as f64 / report.elapsed.as_secs_f64();
    let ms = |q: f64| report.latency.value_at_quantile(q) as f64 / 1000.0;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "ok": report.ok, "errors": report.errors, "seconds": report.elapsed.as_secs_f64(),
                "commands_per_second": rate, "p50_ms": ms(0.5), "p90_ms": ms(0.9),
                "p99_ms": ms(0.99), "max_ms": report.latency.max() as f64 / 1000.0,
                "sessions": args.sessions, "concurrency": args.concurrency, "target_rate": args.rate,
            })
        )?;
    } else {
        writeln!(
            out,
            "{} ok, {} errors in {:.1} s: {rate:.0} commands/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            report.ok,
            report.errors,
            report.elapsed.as_secs_f64(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            report.latency.max() as f64 / 1000.0
        )?;
    }
    if report.ok == 0 {
        bail!("no command succeeded");
    }
    Ok(())
}

/// Sends for `duration` with `concurrency` workers; at a fixed rate each request is
/// scheduled ahead of time and latency counts from the scheduled moment (no
/// coordinated omission).
async fn run(
    client: &reqwest::Client,
    base: &str,
    tokens: &Arc<Vec<String>>,
    body: &str,
    args: &ConsoleArgs,
    duration: Duration,
) -> Report {
    let start = Instant::now();
    let deadline = start + duration;
    let next = Arc::new(AtomicU64::new(0));
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let url = format!("{base}/console/api/messages");
    let workers = (0..args.concurrency).map(|_| {
        let (client, url, tokens, next, body) = (
            client.clone(),
            url.clone(),
            tokens.clone(),
            next.clone(),
            body.to_owned(),
        );
        async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let (mut ok, mut errors) = (0u64, 0u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let scheduled = match interval {
                    Some(i) => start + i.mul_f64(n as f64),
                    None => Instant::now(),
                };
                if scheduled >= deadline {
                    break;
                }
                tokio::time::sleep_until(scheduled.into()).await;
                let token = &tokens[(n as usize) % tokens.len()];
                let res = client
                    .post(&url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let good = match res {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                let micros = scheduled.elapsed().as_micros() as u64;
                if good {
                    ok += 1;
                    let _ = hist.record(micros.max(1));
                } else {
                    errors += 1;
                }
            }
            (ok, errors, hist)
        }
    });
    let results = futures::future::join_all(workers).await;
    let elapsed = start.elapsed().min(duration.max(start.elapsed()));
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut ok, mut errors) = (0, 0);
    for (o, e, h) in results {
        ok += o;
        errors += e;
        let _ = latency.add(h);
    }
    Report {
        ok,
        errors,
        elapsed,
        latency,
    }
}
