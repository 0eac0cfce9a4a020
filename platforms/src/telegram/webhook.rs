//! `POST /webhooks/telegram`: checks `X-Telegram-Bot-Api-Secret-Token` (401 and a log
//! line when wrong), parses the update (400 and the body logged when it can't be parsed,
//! never silently dropped), and handles it before answering 200, so Telegram redelivers
//! what could not be stored.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use segue_bot::{Router, Secret};
use teloxide::Bot;
use teloxide::types::{Update, UpdateKind};

use crate::http::ApiError;

#[derive(Clone, Debug)]
pub(super) struct State {
    pub router: Arc<Router>,
    pub bot: Bot,
    pub secret: Secret,
    pub me: Arc<OnceLock<String>>,
}

pub(super) fn routes(state: State) -> axum::Router {
    axum::Router::new()
        .route("/webhooks/telegram", post(receive))
        .with_state(state)
}

async fn receive(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Response {
    let presented = headers
        .get("x-telegram-bot-api-secret-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !state.secret.matches(presented) {
        tracing::warn!(
            present = !presented.is_empty(),
            "Telegram webhook call with a wrong or missing secret token refused"
        );
        return ApiError::unauthorized("Wrong or missing X-Telegram-Bot-Api-Secret-Token.")
            .into_response();
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => return unparseable(&body, &e.to_string()),
    };
    if let UpdateKind::Error(_) = update.kind {
        return unparseable(&body, "not an update Segue understands");
    }
    // Handled before answering: a failure answers 503 and Telegram redelivers.
    let router = state.router.clone();
    let bot = state.bot.clone();
    let me = state.me.get().cloned();
    let handled = tokio::spawn(async move {
        super::polling::handle_update(&bot, &router, &update, me.as_deref()).await
    })
    .await;
    match handled {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Telegram update handling panicked");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn unparseable(body: &[u8], why: &str) -> Response {
    tracing::warn!(
        body = %String::from_utf8_lossy(&body[..body.len().min(4096)]),
        why,
        "Telegram webhook body is not a valid update"
    );
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_update",
        format!("The body is not a Telegram update: {why}"),
    )
    .into_response()
}
