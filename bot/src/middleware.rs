//! Middleware around every handled message, in the order the router runs them:
//! ban check, then the per-user rate limit. Dedupe, per-chat ordering and the audit
//! record are built into the router itself because they must wrap everything else.
//! A middleware either answers itself or calls [`Next::run`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::message::Reply;
use crate::router::{Ctx, Next, Outcome};
use crate::store::entities::message::status;

/// A step around handling one message.
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    async fn call(&self, ctx: &Ctx, next: Next<'_>) -> Outcome;
}

/// Banned users get no answer (and their messages are audited as `banned`).
#[derive(Debug, Default)]
pub struct BanCheck;

#[async_trait]
impl Middleware for BanCheck {
    async fn call(&self, ctx: &Ctx, next: Next<'_>) -> Outcome {
        if ctx.person.banned {
            return Outcome::silent(status::BANNED);
        }
        next.run(ctx).await
    }
}

/// A token bucket per user: `burst` commands at once, refilled at `per_second`. Only
/// messages meant for the bot count; the first message over the limit is answered, the
/// rest of the flood is not (so a flooder can't spend the platform's send budget).
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<i64>,
    burst: u32,
    per_second: f64,
    warned: Mutex<HashMap<i64, Instant>>,
}

/// A limited user is told again at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("burst", &self.burst)
            .field("per_second", &self.per_second)
            .finish()
    }
}

impl RateLimit {
    pub fn new(burst: u32, per_second: f64) -> Self {
        let burst = burst.max(1);
        let period = Duration::from_secs_f64(1.0 / per_second.max(1e-6));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: RateLimiter::keyed(quota),
            burst,
            per_second,
            warned: Mutex::default(),
        }
    }
}

#[async_trait]
impl Middleware for RateLimit {
    async fn call(&self, ctx: &Ctx, next: Next<'_>) -> Outcome {
        let user = ctx.person.user_id;
        if self.limiter.check_key(&user).is_ok() {
            return next.run(ctx).await;
        }
        {
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            if warned
                .get(&user)
                .is_some_and(|at| at.elapsed() < WARN_EVERY)
            {
                return Outcome::silent(status::LIMITED);
            }
            if warned.len() > 100_000 {
                warned.retain(|_, at| at.elapsed() < WARN_EVERY);
            }
            warned.insert(user, Instant::now());
        }
        let every = if self.per_second >= 1.0 {
            format!("{} a second", self.per_second)
        } else {
            format!("one every {:.0} seconds", 1.0 / self.per_second)
        };
        Outcome {
            replies: vec![Reply::text(format!(
                "Slow down a little: you can send {} commands at once, then {every}. \
                 Try again in a moment.",
                self.burst
            ))],
            status: status::LIMITED,
            command: None,
        }
    }
}
