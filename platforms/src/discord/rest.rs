//! Discord's REST API as the adapter calls it: command registration, interaction
//! callbacks and edits, DMs and channel messages. Our own reqwest client rather than
//! serenity's `Http`: serenity's ratelimiter ignores a custom base URL, and without it
//! serenity drops the `X-RateLimit-*` and `Retry-After` headers that the outbox needs.
//! Bodies are serenity's builders, so the wire format is serenity's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use segue_bot::Secret;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// Why a REST call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RestError {
    /// A 429, or a bucket known to be empty: try again after this.
    #[error("rate limited for {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// Discord answered with an error (`code` is Discord's JSON error code, 0 if none).
    #[error("discord answered {status}: {message} (code {code})")]
    Api {
        status: u16,
        code: i64,
        message: String,
    },
    /// No answer (connection, timeout) or an answer we could not read.
    #[error("discord request failed: {0}")]
    Network(String),
}

/// Discord JSON error codes the adapter tells apart.
pub mod codes {
    /// Unknown channel (a DM channel that is gone).
    pub const UNKNOWN_CHANNEL: i64 = 10003;
    /// Cannot send messages to this user (closed DMs, blocked the bot): permanent.
    pub const CANNOT_MESSAGE_USER: i64 = 50007;
}

impl RestError {
    /// Whether trying again later can work.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Network(_) => true,
            // A bad token stays bad until the operator fixes it; keep the message until then.
            Self::Api { status, .. } if *status >= 500 || *status == 401 => true,
            Self::Api { .. } => false,
        }
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    /// Seconds (a float), on 429.
    retry_after: Option<f64>,
}

/// What Discord's rate-limit headers said about one bucket.
#[derive(Clone, Copy, Debug)]
struct BucketState {
    remaining: u64,
    reset_at: Instant,
}

#[derive(Default)]
struct Buckets {
    /// Route key (method and path with its major parameter) → Discord's bucket id.
    routes: HashMap<String, String>,
    buckets: HashMap<String, BucketState>,
    /// A global 429 holds every request until then.
    global_until: Option<Instant>,
}

impl Buckets {
    /// How long a request on `route` must wait, if its bucket is known to be empty.
    fn wait_for(&self, route: &str, now: Instant) -> Option<Duration> {
        let mut until = self.global_until.filter(|t| *t > now);
        if let Some(state) = self.routes.get(route).and_then(|b| self.buckets.get(b))
            && state.remaining == 0
            && state.reset_at > now
        {
            until = until.max(Some(state.reset_at));
        }
        until.map(|t| t - now)
    }

    fn learn(&mut self, route: &str, headers: &reqwest::header::HeaderMap, now: Instant) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(bucket) = header("x-ratelimit-bucket") else {
            return;
        };
        let remaining = header("x-ratelimit-remaining").and_then(|v| v.parse().ok());
        let reset_after = header("x-ratelimit-reset-after").and_then(|v| v.parse::<f64>().ok());
        if let (Some(remaining), Some(reset_after)) = (remaining, reset_after) {
            self.buckets.insert(
                bucket.to_owned(),
                BucketState {
                    remaining,
                    reset_at: now + Duration::from_secs_f64(reset_after.max(0.0)),
                },
            );
        }
        if self.routes.len() > 10_000 {
            self.routes.clear();
            self.buckets.clear();
        }
        self.routes.insert(route.to_owned(), bucket.to_owned());
    }
}

/// The REST client.
pub struct Rest {
    client: reqwest::Client,
    /// `<api_url>/api/v10`.
    base: String,
    authorization: Secret,
    application_id: String,
    buckets: Mutex<Buckets>,
}

impl Rest {
    pub fn new(api_url: &str, token: Secret, application_id: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!(
                "DiscordBot (https://example.invalid/segue, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()
            .unwrap_or_default();
        Self {
            client,
            base: format!("{}/api/v10", api_url.trim_end_matches('/')),
            authorization: Secret::new(format!("Bot {}", token.expose())),
            application_id,
            buckets: Mutex::default(),
        }
    }

    /// One call. `route` names its rate-limit bucket; a known-empty bucket is waited out
    /// when that takes at most `wait_up_to`, else answered with `RateLimited` unsent.
    async fn call<B, T>(
        &self,
        method: Method,
        path: &str,
        route: &str,
        body: &B,
        wait_up_to: Duration,
    ) -> Result<T, RestError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let wait = self
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wait_for(route, Instant::now());
        if let Some(wait) = wait {
            if wait > wait_up_to {
                return Err(RestError::RateLimited { retry_after: wait });
            }
            tokio::time::sleep(wait).await;
        }
        let res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("authorization", self.authorization.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| RestError::Network(e.without_url().to_string()))?;
        let status = res.status();
        let now = Instant::now();
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .learn(route, res.headers(), now);
        if status.is_success() {
            let bytes = res
                .bytes()
                .await
                .map_err(|e| RestError::Network(e.without_url().to_string()))?;
            let bytes = if bytes.is_empty() || status == StatusCode::NO_CONTENT {
                &b"null"[..]
            } else {
                &bytes[..]
            };
            return serde_json::from_slice(bytes)
                .map_err(|e| RestError::Network(format!("unreadable answer: {e}")));
        }
        let retry_header = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok());
        let global = res
            .headers()
            .get("x-ratelimit-global")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let body: ErrorBody = res.json().await.unwrap_or(ErrorBody {
            code: 0,
            message: status.canonical_reason().unwrap_or("error").to_owned(),
            retry_after: None,
        });
        if status == StatusCode::TOO_MANY_REQUESTS {
            let secs = body.retry_after.or(retry_header).unwrap_or(1.0).max(0.0);
            let retry_after = Duration::from_secs_f64(secs);
            if global {
                self.buckets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .global_until = Some(now + retry_after);
            }
            tracing::warn!(route, ?retry_after, global, "discord rate limit hit");
            return Err(RestError::RateLimited { retry_after });
        }
        Err(RestError::Api {
            status: status.as_u16(),
            code: body.code,
            message: body.message,
        })
    }

    /// [`Self::call`] for an answer we don't read.
    async fn send<B>(
        &self,
        method: Method,
        path: &str,
        route: &str,
        body: &B,
        wait_up_to: Duration,
    ) -> Result<(), RestError>
    where
        B: Serialize + ?Sized,
    {
        self.call::<B, serde_json::Value>(method, path, route, body, wait_up_to)
            .await
            .map(drop)
    }

    /// Replaces every slash command (PUT, bulk overwrite), in one guild or globally.
    pub async fn bulk_overwrite_commands<C: Serialize>(
        &self,
        guild_id: Option<&str>,
        commands: &[C],
    ) -> Result<(), RestError> {
        let app = &self.application_id;
        let path = match guild_id {
            Some(g) => format!("/applications/{app}/guilds/{g}/commands"),
            None => format!("/applications/{app}/commands"),
        };
        self.send(
            Method::PUT,
            &path,
            &format!("PUT {path}"),
            commands,
            Duration::from_secs(10),
        )
        .await
    }

    /// The first answer to an interaction (gateway mode; the endpoint answers in its body).
    pub async fn interaction_callback<B: Serialize>(
        &self,
        interaction_id: &str,
        token: &str,
        body: &B,
    ) -> Result<(), RestError> {
        let path = format!("/interactions/{interaction_id}/{token}/callback");
        self.send(
            Method::POST,
            &path,
            "POST /interactions/callback",
            body,
            Duration::from_secs(2),
        )
        .await
    }

    /// Edits the first answer of an interaction (after a deferral).
    pub async fn edit_original<B: Serialize>(
        &self,
        token: &str,
        body: &B,
    ) -> Result<(), RestError> {
        let path = format!(
            "/webhooks/{}/{token}/messages/@original",
            self.application_id
        );
        let route = format!("PATCH /webhooks/{token}");
        self.send(Method::PATCH, &path, &route, body, Duration::from_secs(10))
            .await
    }

    /// A further message in answer to an interaction.
    pub async fn followup<B: Serialize>(&self, token: &str, body: &B) -> Result<(), RestError> {
        let path = format!("/webhooks/{}/{token}", self.application_id);
        let route = format!("POST /webhooks/{token}");
        self.send(Method::POST, &path, &route, body, Duration::from_secs(10))
            .await
    }

    /// Opens (or finds) the DM channel with a user; its channel id.
    pub async fn create_dm(&self, user_id: &str) -> Result<String, RestError> {
        #[derive(serde::Deserialize)]
        struct Channel {
            id: String,
        }
        let body = serde_json::json!({ "recipient_id": user_id });
        let channel: Channel = self
            .call(
                Method::POST,
                "/users/@me/channels",
                "POST /users/@me/channels",
                &body,
                Duration::ZERO,
            )
            .await?;
        Ok(channel.id)
    }

    /// Posts a message to a channel; never waits for an empty bucket (the outbox retries).
    pub async fn create_message<B: Serialize>(
        &self,
        channel_id: &str,
        body: &B,
    ) -> Result<(), RestError> {
        let path = format!("/channels/{channel_id}/messages");
        let route = format!("POST {path}");
        self.send(Method::POST, &path, &route, body, Duration::ZERO)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn an_empty_bucket_holds_its_routes_until_reset() {
        let mut b = Buckets::default();
        let now = Instant::now();
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-bucket", HeaderValue::from_static("abc"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset-after", HeaderValue::from_static("1.5"));
        b.learn("POST /channels/1/messages", &h, now);
        let wait = b.wait_for("POST /channels/1/messages", now).unwrap();
        assert_eq!(wait, Duration::from_millis(1500));
        assert!(b.wait_for("POST /channels/2/messages", now).is_none());
        assert!(
            b.wait_for("POST /channels/1/messages", now + Duration::from_secs(2))
                .is_none()
        );
    }
}
