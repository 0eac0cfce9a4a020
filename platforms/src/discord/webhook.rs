//! `POST /webhooks/discord` (interactions mode): every request is checked against
//! `X-Signature-Ed25519` over `X-Signature-Timestamp || body` with the application's
//! public key (401 and a log line when wrong or missing, as Discord requires), parsed
//! with serenity's models (400 and the body logged when it can't be), and answered in
//! the response body: PONG, the reply, or a deferral edited later.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serenity::all::{CreateInteractionResponse, Interaction};

use super::PublicKey;
use super::inbound::{Converted, convert};
use super::respond::Responder;
use crate::http::ApiError;

#[derive(Clone)]
pub(super) struct State {
    pub responder: Responder,
    pub key: PublicKey,
}

pub(super) fn routes(state: State) -> axum::Router {
    axum::Router::new()
        .route("/webhooks/discord", post(receive))
        .with_state(state)
}

async fn receive(AxState(state): AxState<State>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(signature), Some(timestamp)) = (
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    ) else {
        tracing::warn!("Discord interaction without a signature refused");
        return ApiError::unauthorized("Missing X-Signature-Ed25519 or X-Signature-Timestamp.")
            .into_response();
    };
    if !state.key.verify(signature, timestamp, &body) {
        tracing::warn!("Discord interaction with a bad signature refused");
        return ApiError::unauthorized("Invalid request signature.").into_response();
    }
    let interaction: Interaction = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(
                body = %String::from_utf8_lossy(&body[..body.len().min(4096)]),
                error = %e,
                "Discord webhook body is not an interaction"
            );
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_interaction",
                format!("The body is not a Discord interaction: {e}"),
            )
            .into_response();
        }
    };
    match convert(&interaction) {
        Converted::Ping => Json(CreateInteractionResponse::Pong).into_response(),
        Converted::Skip(why) => {
            tracing::debug!(why, "Discord interaction skipped");
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_interaction",
                format!("Segue does not answer this kind of interaction ({why})."),
            )
            .into_response()
        }
        Converted::Autocomplete(incoming, option) => {
            Json(state.responder.complete(*incoming, &option).await).into_response()
        }
        Converted::Message(incoming, token) => {
            let (first, later) = state.responder.answer(*incoming, token).await;
            if let Some(later) = later {
                tokio::spawn(later.run());
            }
            Json(first).into_response()
        }
    }
}
