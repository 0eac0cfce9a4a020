//! The public now-playing API: `GET /api/users/{handle}/now-playing` for people who
//! turned it on with `/public on`, in the original tutorial's shape (`songName`,
//! `artistName`, `isPlaying`, `response`) plus `trackUrl` and `playedAt`, with
//! `Access-Control-Allow-Origin: *` so any website can show it. Answers come from the
//! Spotify service's 10-second cache: at most one Spotify call per user per 10 seconds.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use segue_bot::Core;
use segue_bot::spotify::{NowPlaying, SpotifyError};
use segue_platforms::http::ApiError;
use serde::Serialize;
use tower_http::cors::{Any, CorsLayer};

pub fn routes(core: Arc<Core>) -> axum::Router {
    axum::Router::new()
        .route("/api/users/{handle}/now-playing", get(now_playing))
        .with_state(core)
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET]),
        )
}

/// The JSON answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    song_name: Option<String>,
    artist_name: Option<String>,
    is_playing: bool,
    /// One sentence, ready to show.
    response: String,
    track_url: Option<String>,
    /// RFC 3339 UTC; null while playing.
    played_at: Option<String>,
}

impl Answer {
    fn from(handle: &str, now: NowPlaying) -> Self {
        match now {
            Some(l) => Self {
                response: l.sentence(handle),
                song_name: Some(l.item.title),
                artist_name: Some(l.item.by),
                is_playing: l.playing,
                track_url: l.item.url,
                played_at: l
                    .played_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            },
            None => Self::nothing(format!("{handle} hasn't played anything on Spotify lately")),
        }
    }

    fn nothing(response: String) -> Self {
        Self {
            song_name: None,
            artist_name: None,
            is_playing: false,
            response,
            track_url: None,
            played_at: None,
        }
    }
}

async fn now_playing(State(core): State<Arc<Core>>, Path(handle): Path<String>) -> Response {
    let hidden = || {
        ApiError::not_found(format!(
            "{handle} has no public now playing (they can turn it on with /public on)."
        ))
        .into_response()
    };
    let user = match core.store.user_by_handle(&handle).await {
        Ok(Some(u)) if u.public_now_playing => u,
        Ok(_) => return hidden(),
        Err(e) => {
            tracing::error!(error = %e, "now-playing API: storage failed");
            return ApiError::unavailable().into_response();
        }
    };
    let Some(spotify) = &core.spotify else {
        return hidden();
    };
    let answer = match spotify.now_playing(user.id).await {
        Ok(now) => Answer::from(&user.handle, now),
        Err(SpotifyError::NotLinked | SpotifyError::LinkBroken) => {
            Answer::nothing(format!("{} hasn't linked Spotify", user.handle))
        }
        Err(e) => {
            tracing::warn!(error = %e, handle = %user.handle, "now-playing API: Spotify failed");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "spotify_unavailable",
                e.user_message(),
            )
            .into_response();
        }
    };
    axum::Json(answer).into_response()
}
