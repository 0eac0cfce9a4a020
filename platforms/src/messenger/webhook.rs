//! `GET /webhooks/messenger` answers Meta's verification (`hub.challenge` when
//! `hub.verify_token` matches, 403 otherwise). `POST /webhooks/messenger` checks
//! `X-Hub-Signature-256` over the raw body (401 and a log line when wrong), parses it
//! (400 and a log line when it isn't a page webhook), queues its events and answers 200
//! at once, as Meta asks. Each sender's events are handled in order by one task per
//! sender; a storage failure is retried with backoff there, since Meta won't redeliver
//! what was answered 200.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use segue_bot::{ReplyMode, Router, Secret};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};

use super::inbound::{Converted, Event, convert, parse};
use crate::http::ApiError;

/// Events accepted but not yet handled, at most; beyond it Meta is told to retry (503).
const MAX_QUEUED: usize = 10_000;
/// Attempts at handling one event when storage fails.
const ATTEMPTS: u32 = 5;

#[derive(Clone, Debug)]
pub(super) struct State {
    pub router: Arc<Router>,
    pub app_secret: Secret,
    pub verify_token: Secret,
    pub queues: Arc<Queues>,
}

pub(super) fn routes(state: State) -> axum::Router {
    axum::Router::new()
        .route("/webhooks/messenger", get(verify).post(receive))
        .with_state(state)
}

#[derive(Deserialize)]
struct Verification {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn verify(AxState(state): AxState<State>, Query(q): Query<Verification>) -> Response {
    let token_ok = q
        .verify_token
        .as_deref()
        .is_some_and(|t| state.verify_token.matches(t));
    match (q.mode.as_deref(), token_ok, q.challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            tracing::info!("Messenger webhook verified");
            (StatusCode::OK, challenge).into_response()
        }
        (mode, _, _) => {
            tracing::warn!(
                mode = mode.unwrap_or(""),
                token_present = q.verify_token.is_some(),
                token_ok,
                "Messenger webhook verification refused"
            );
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Wrong hub.mode or hub.verify_token.",
            )
            .into_response()
        }
    }
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub(super) fn signature_ok(secret: &Secret, header: &str, body: &[u8]) -> bool {
    let Some(tag) = header.strip_prefix("sha256=").and_then(decode_hex) else {
        return false;
    };
    !secret.is_empty()
        && segue_bot::crypto::hmac_sha256_matches(secret.expose().as_bytes(), body, &tag)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn receive(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Response {
    let presented = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !signature_ok(&state.app_secret, presented, &body) {
        tracing::warn!(
            present = !presented.is_empty(),
            bytes = body.len(),
            "Messenger webhook call with a wrong or missing X-Hub-Signature-256 refused"
        );
        return ApiError::unauthorized("Wrong or missing X-Hub-Signature-256.").into_response();
    }
    let events = match parse(&body) {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(
                body = %String::from_utf8_lossy(&body[..body.len().min(4096)]),
                why = %e,
                "Messenger webhook body is not a page event"
            );
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_event",
                format!("The body is not a Messenger page webhook: {e}"),
            )
            .into_response();
        }
    };
    if !state.queues.push(&state.router, events) {
        tracing::warn!(
            queued = MAX_QUEUED,
            "Messenger events are arriving faster than they are handled; asked Meta to retry"
        );
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "Too many events waiting; try again shortly.",
        )
        .into_response();
    }
    (StatusCode::OK, "EVENT_RECEIVED").into_response()
}

/// One queue (and task) per sender with events waiting, so a sender's events are handled
/// one after another in arrival order and different senders' in parallel.
#[derive(Debug, Default)]
pub(super) struct Queues {
    senders: Mutex<HashMap<String, mpsc::UnboundedSender<Event>>>,
    waiting: AtomicUsize,
    idle: Notify,
}

impl Queues {
    /// Queues a webhook's events; `false` (nothing queued) when too many are waiting.
    fn push(self: &Arc<Self>, router: &Arc<Router>, events: Vec<Event>) -> bool {
        if self.waiting.load(Ordering::SeqCst) + events.len() > MAX_QUEUED {
            return false;
        }
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let psid = event.sender_id().to_owned();
            let event = match senders.get(&psid) {
                Some(tx) => match tx.send(event) {
                    Ok(()) => continue,
                    Err(mpsc::error::SendError(event)) => event,
                },
                None => event,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(event);
            senders.insert(psid.clone(), tx);
            tokio::spawn(self.clone().work(router.clone(), psid, rx));
        }
        true
    }

    /// Handles one sender's events until their queue is empty.
    async fn work(
        self: Arc<Self>,
        router: Arc<Router>,
        psid: String,
        mut rx: mpsc::UnboundedReceiver<Event>,
    ) {
        loop {
            let event = match rx.try_recv() {
                Ok(event) => event,
                Err(_) => {
                    // Pushers send under this lock: empty here means empty for good.
                    let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
                    if let Ok(event) = rx.try_recv() {
                        drop(senders);
                        event
                    } else {
                        senders.remove(&psid);
                        return;
                    }
                }
            };
            handle(&router, &event).await;
            if self.waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.idle.notify_waiters();
            }
        }
    }

    /// Resolves when every accepted event has been handled.
    pub(super) async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            if self.waiting.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Converts and handles one event, retrying storage failures with backoff.
async fn handle(router: &Router, event: &Event) {
    let incoming = match convert(event) {
        Converted::Message(m) => m,
        Converted::Skip(why) => {
            tracing::debug!(sender = event.sender_id(), why, "Messenger event skipped");
            return;
        }
    };
    let mut wait = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        match router.handle((*incoming).clone(), ReplyMode::Outbox).await {
            Ok(_) => return,
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, retry_in_ms = wait.as_millis() as u64, "handling a Messenger event failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    sender = event.sender_id(),
                    mid = incoming.external_id.as_deref().unwrap_or(""),
                    attempts = ATTEMPTS,
                    "a Messenger event was LOST: storage kept failing after it was accepted"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked() {
        let secret = Secret::new("test_app_secret");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/messenger/docs_sample.json"
        );
        let body = std::fs::read(path).unwrap();
        let good = "sha256=eec1906d2e5dc1a43a1014f196b421cf9d7b6696ead890eadf906dbbfe03f791";
        assert!(signature_ok(&secret, good, &body));
        assert!(!signature_ok(&secret, &good.replace("eec1", "eec2"), &body));
        assert!(!signature_ok(&secret, "sha256=zz", &body));
        assert!(!signature_ok(&secret, "", &body));
        assert!(!signature_ok(&Secret::default(), good, &body));
    }
}
