//! What the webhook modes share: a tracker of replies per chat (a chat's replies arrive
//! in order, so the k-th reply to a chat answers its k-th post), waiting for the last
//! replies, and the report.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::json;

/// The options every webhook mode takes.
#[derive(clap::Args)]
pub struct Common {
    /// Posts in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Distinct users (each in their own private chat).
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    /// The message text.
    #[arg(long, default_value = "/ping")]
    pub text: String,
    /// Start without waiting for the bot's start-up call to the fake API (setWebhook,
    /// the Messenger profile).
    #[arg(long)]
    pub no_wait: bool,
    /// Print one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Serves a fake platform API on loopback.
pub async fn serve(port: u16, what: &str, app: axum::Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| anyhow::anyhow!("binding the {what} on 127.0.0.1:{port}: {e}"))?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}

/// Waits (up to 2 minutes) until the bot has made its start-up call to the fake API.
pub async fn wait_until(call: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    eprintln!("waiting for the bot to {call}…");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        if Instant::now() > deadline {
            bail!("the bot did not {call} within 2 minutes (use --no-wait to skip)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Posts waiting for their reply, and the replies' latencies.
pub struct Tracker {
    waiting: HashMap<String, VecDeque<Instant>>,
    latency: Histogram<u64>,
    replies: u64,
    last_reply: Option<Instant>,
}

pub type Shared = Arc<Mutex<Tracker>>;

impl Tracker {
    pub fn shared() -> anyhow::Result<Shared> {
        Ok(Arc::new(Mutex::new(Self {
            waiting: HashMap::new(),
            latency: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            replies: 0,
            last_reply: None,
        })))
    }

    /// A post to `chat` is about to leave.
    pub fn posted(&mut self, chat: &str) {
        self.waiting
            .entry(chat.to_owned())
            .or_default()
            .push_back(Instant::now());
    }

    /// The bot sent `chat` a message: it answers that chat's oldest waiting post.
    pub fn replied(&mut self, chat: &str) {
        let now = Instant::now();
        if let Some(sent) = self.waiting.get_mut(chat).and_then(VecDeque::pop_front) {
            let micros = now.duration_since(sent).as_micros() as u64;
            let _ = self.latency.record(micros.max(1));
            self.replies += 1;
            self.last_reply = Some(now);
        }
    }
}

/// What one run was.
pub struct Run<'a> {
    /// "updates", "events".
    pub unit: &'a str,
    /// The bot's outbound call that answers a post ("sendMessage", "Send API").
    pub answer: &'a str,
    pub posted: u64,
    pub errors: u64,
    pub started: Instant,
    pub concurrency: usize,
    pub users: u64,
    pub json: bool,
}

/// Prints a run's figures (text, or one JSON line): `replies` answered posts over
/// `elapsed`, with their post → answer latency in `h` (microseconds).
pub fn report(
    run: &Run<'_>,
    replies: u64,
    elapsed: Duration,
    h: &Histogram<u64>,
) -> anyhow::Result<()> {
    let rate = replies as f64 / elapsed.as_secs_f64();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut out = std::io::stdout().lock();
    let unit = run.unit;
    if run.json {
        writeln!(
            out,
            "{}",
            json!({
                unit: run.posted, "replies": replies, "errors": run.errors,
                "seconds": elapsed.as_secs_f64(), format!("{unit}_per_second"): rate,
                "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0,
                "concurrency": run.concurrency, "users": run.users,
            })
        )?;
    } else {
        writeln!(
            out,
            "{} {unit}, {replies} replies, {} errors in {:.1} s: {rate:.0} {unit}/s; POST→{} p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            run.posted,
            run.errors,
            elapsed.as_secs_f64(),
            run.answer,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            h.max() as f64 / 1000.0
        )?;
    }
    Ok(())
}

/// Waits for the replies still on their way (up to 30 s of silence), then reports.
pub async fn finish(tracker: &Shared, run: Run<'_>) -> anyhow::Result<()> {
    let mut last_count = 0;
    let mut quiet_since = Instant::now();
    loop {
        let replies = tracker.lock().unwrap().replies;
        if replies + run.errors >= run.posted || quiet_since.elapsed() > Duration::from_secs(30) {
            break;
        }
        if replies != last_count {
            last_count = replies;
            quiet_since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = tracker.lock().unwrap();
    let elapsed = t
        .last_reply
        .map_or(run.started.elapsed(), |at| at.duration_since(run.started));
    report(&run, t.replies, elapsed, &t.latency)?;
    if t.replies == 0 {
        bail!("the bot sent no replies (is its API URL pointed at this tool?)");
    }
    Ok(())
}
