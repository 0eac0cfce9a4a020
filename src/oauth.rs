//! Spotify linking in the browser: `GET /auth/spotify/start` sends people to Spotify's
//! consent page (with the state from their `/link` message, or a fresh generic one) and
//! `GET /auth/spotify/callback` finishes: it spends the state, exchanges the code, stores
//! the tokens and tells the person in chat, or shows a 16-digit code for `/link <code>`.
//! Every failure ends on a plain page; nothing is stored unless the link worked.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use segue_bot::spotify::{Grant, Spotify, StateError};
use segue_bot::{Button, ChatAddress, Core, Outgoing, Platform, Reply};
use serde::Deserialize;

/// The linking routes. Without Spotify configured they answer with a page saying so.
pub fn routes(core: Arc<Core>) -> axum::Router {
    axum::Router::new()
        .route("/auth/spotify/start", get(start))
        .route("/auth/spotify/callback", get(callback))
        .with_state(core)
}

#[derive(Debug, Deserialize)]
struct StartQuery {
    state: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// A small HTML page: a title and paragraphs (escaped here).
fn page(status: StatusCode, title: &str, paragraphs: &[&str]) -> Response {
    let mut body = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{0} · Segue</title>\
         <style>body{{font:17px/1.5 system-ui,sans-serif;max-width:34em;margin:3em auto;padding:0 1em}}\
         code{{font-size:1.4em;letter-spacing:.08em}}</style><h1>{0}</h1>",
        escape(title)
    );
    for p in paragraphs {
        body.push_str(&format!("<p>{}</p>", escape(p)));
    }
    (status, Html(body)).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn not_configured() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Spotify isn't set up here",
        &[
            "This Segue has no Spotify app configured (spotify.client_id and spotify.client_secret).",
        ],
    )
}

fn state_problem(e: StateError) -> Response {
    let (title, text) = match e {
        StateError::Invalid => (
            "This link isn't valid",
            "It may have been cut short or changed. Send /link to Segue for a new one.",
        ),
        StateError::Expired => (
            "This link has expired",
            "Links work for 10 minutes. Send /link to Segue for a new one.",
        ),
        StateError::Used => (
            "This link was already used",
            "Each link works once. Send /link to Segue for a new one.",
        ),
    };
    page(StatusCode::BAD_REQUEST, title, &[text])
}

fn storage_trouble(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "Spotify linking: storage failed");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Something went wrong on our side",
        &["Nothing was linked. Please try again in a moment."],
    )
}

async fn start(State(core): State<Arc<Core>>, Query(q): Query<StartQuery>) -> Response {
    let Some(spotify) = &core.spotify else {
        return not_configured();
    };
    let state = match q.state {
        Some(state) => match spotify.check_state(&state) {
            Ok(_) => state,
            Err(e) => return state_problem(e),
        },
        // The generic page: anyone may start; the callback then shows a code.
        None => spotify.new_state(None),
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, spotify.authorize_url(&state)),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

async fn callback(State(core): State<Arc<Core>>, Query(q): Query<CallbackQuery>) -> Response {
    let Some(spotify) = &core.spotify else {
        return not_configured();
    };
    let Some(state) = q.state.as_deref() else {
        return page(
            StatusCode::BAD_REQUEST,
            "This page is the end of a Spotify link",
            &["Open the link Segue sent you (/link) to start."],
        );
    };
    let state = match spotify.check_state(state) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(problem = %e, "Spotify callback with a bad state");
            return state_problem(e);
        }
    };
    match spotify.spend_state(&state).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("Spotify callback with a state used before");
            return state_problem(StateError::Used);
        }
        Err(e) => return storage_trouble(e),
    }
    if let Some(error) = q.error.as_deref() {
        tracing::info!(error, "Spotify consent not given");
        return if error == "access_denied" {
            page(
                StatusCode::FORBIDDEN,
                "Nothing was linked",
                &[
                    "You didn't allow Segue to see your Spotify, so nothing was stored. Send /link to try again whenever you like.",
                ],
            )
        } else {
            page(
                StatusCode::BAD_REQUEST,
                "Spotify didn't finish the link",
                &[&format!(
                    "Spotify said: {error}. Nothing was stored; send /link to try again."
                )],
            )
        };
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Spotify didn't finish the link",
            &["The answer from Spotify had no code. Nothing was stored; send /link to try again."],
        );
    };
    let grant = match spotify.exchange(code).await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "Spotify code exchange failed");
            return page(
                StatusCode::BAD_GATEWAY,
                "Spotify didn't accept the link",
                &[
                    &e.user_message(),
                    "Nothing was stored. Send /link to Segue to try again.",
                ],
            );
        }
    };
    match state.identity_id {
        Some(identity_id) => link_identity(&core, spotify, identity_id, &grant).await,
        None => match spotify.park_grant(&grant).await {
            Ok(code) => page(
                StatusCode::OK,
                "Almost done",
                &[
                    &format!(
                        "Your Spotify account {} is ready to link.",
                        grant.spotify_name
                    ),
                    &format!("Send this to Segue in any chat within 10 minutes: /link {code}"),
                    "The code works once.",
                ],
            ),
            Err(e) => storage_trouble(e),
        },
    }
}

/// Stores the link for the person who sent `/link`, and tells them in that chat.
async fn link_identity(
    core: &Core,
    spotify: &Spotify,
    identity_id: i64,
    grant: &Grant,
) -> Response {
    let identity = match core.store.identity(identity_id).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            return page(
                StatusCode::GONE,
                "That chat account is gone",
                &[
                    "The account that asked for this link no longer exists (it was forgotten). Nothing was stored.",
                ],
            );
        }
        Err(e) => return storage_trouble(e),
    };
    if let Err(e) = spotify.save_link(identity.user_id, grant).await {
        return storage_trouble(e);
    }
    core.spotify_linked(identity.user_id).await;
    let chat = identity
        .platform
        .parse::<Platform>()
        .ok()
        .zip(identity.last_chat_id.clone());
    if let Some((platform, chat_id)) = chat {
        let mut out = Outgoing::new(
            ChatAddress::new(platform, chat_id),
            Reply::text(format!(
                "Done: your Spotify account {} is linked. Try /np to see what you play.",
                grant.spotify_name
            ))
            .with_button(Button::command("What am I playing?", "/np")),
        );
        out.user_id = Some(identity.user_id);
        if let Err(e) = core.outbox.send(vec![out]).await {
            tracing::error!(error = %e, "could not queue the 'linked' message");
        }
    }
    page(
        StatusCode::OK,
        "Spotify is linked",
        &[
            &format!("You're connected as {}.", grant.spotify_name),
            "You can close this page and go back to the chat.",
        ],
    )
}
