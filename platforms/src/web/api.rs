//! The console's HTTP side: the page, `POST /console/api/session`,
//! `POST /console/api/messages` and the `GET /console/api/events` stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use segue_bot::store::WebSession;
use segue_bot::store::entities::message::{self, status};
use segue_bot::{
    ChatAddress, ChatKind, Content, Handled, Incoming, Platform, ReplyMode, Router, UserRef,
};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::hub::{Hub, WebEvent};
use crate::http::{ApiError, ApiJson, ApiQuery};

/// The longest display name and message text the console accepts.
const MAX_NAME: usize = 64;
const MAX_TEXT: usize = 4096;
/// Messages replayed to a reconnecting stream at most.
const MAX_REPLAY: u64 = 1000;

#[derive(Clone, Debug)]
pub(super) struct State {
    pub router: Arc<Router>,
    pub hub: Arc<Hub>,
    pub shutdown: CancellationToken,
}

pub(super) fn routes(state: State) -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(page))
        .route("/console/api/session", post(create_session))
        .route("/console/api/messages", post(send_message))
        .route("/console/api/events", get(events))
        .with_state(state)
}

async fn page() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("console.html")),
    )
}

#[derive(Deserialize)]
struct NewSession {
    name: String,
}

async fn create_session(
    AxState(state): AxState<State>,
    ApiJson(body): ApiJson<NewSession>,
) -> Result<Response, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`name` must be 1 to {MAX_NAME} characters, without control characters."
        )));
    }
    let web_id = random_id();
    let user = UserRef {
        platform: Platform::Web,
        id: web_id.clone(),
        display_name: name.to_owned(),
        username: None,
    };
    let store = &state.router.core().store;
    let person = store
        .resolve(
            &user,
            &ChatAddress::new(Platform::Web, &web_id),
            ChatKind::Private,
        )
        .await?;
    let token = store.create_session(person.identity_id).await?;
    tracing::info!(user_id = person.user_id, handle = %person.handle, "web console session opened");
    let body = serde_json::json!({ "session": token, "user": name, "handle": person.handle });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

fn random_id() -> String {
    let bytes: [u8; 12] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session from `Authorization: Bearer …` or `?session=…`.
async fn session(
    state: &State,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<WebSession, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or(query)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(ApiError::unauthorized(
            "Missing session: send `Authorization: Bearer <session>` (POST /console/api/session gives one).",
        ));
    };
    state
        .router
        .core()
        .store
        .session(token)
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized(
                "Unknown session: open a new one with POST /console/api/session.",
            )
        })
}

#[derive(Deserialize)]
struct NewMessage {
    /// What the user typed.
    text: Option<String>,
    /// A button's callback data, when a button was pressed.
    data: Option<String>,
}

async fn send_message(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewMessage>,
) -> Result<Response, ApiError> {
    let who = session(&state, &headers, None).await?;
    let (raw, pressed) = match (body.text, body.data) {
        (Some(text), None) => (text, false),
        (None, Some(data)) => (data, true),
        _ => {
            return Err(ApiError::bad_request(
                "Send `{\"text\": \"/help\"}` (or `{\"data\": …}` for a button press).",
            ));
        }
    };
    if raw.trim().is_empty() || raw.chars().count() > MAX_TEXT {
        return Err(ApiError::bad_request(format!(
            "The text must have 1 to {MAX_TEXT} characters."
        )));
    }
    if raw
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::bad_request(
            "The text may not contain control characters.",
        ));
    }
    let content = if pressed {
        Content::Button { data: raw }
    } else {
        Content::Text(raw)
    };
    let incoming = Incoming {
        external_id: None,
        chat: ChatAddress::new(Platform::Web, &who.web_id),
        chat_kind: ChatKind::Private,
        user: UserRef {
            platform: Platform::Web,
            id: who.web_id.clone(),
            display_name: who.display_name.clone(),
            username: None,
        },
        content,
        bot_username: None,
        private_chat: None,
        to_bot: false,
        on_message: None,
    };
    // Its own task: a client that hangs up must not cut a message off half handled.
    let router = state.router.clone();
    let handled = tokio::spawn(async move { router.handle(incoming, ReplyMode::Inline).await })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "console message handling panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Something went wrong on our side.",
            )
        })?;
    let replies = match handled? {
        Handled::Replied(recorded) => recorded,
        Handled::Duplicate => Vec::new(),
    };
    let events: Vec<WebEvent> = replies
        .iter()
        .map(|r| WebEvent::new(r.id, &r.text, &r.buttons))
        .collect();
    for e in &events {
        state.hub.publish(&who.web_id, e.clone());
    }
    Ok(axum::Json(serde_json::json!({ "replies": events })).into_response())
}

#[derive(Deserialize)]
struct EventsQuery {
    session: Option<String>,
    /// For a fresh page: the last event it saw (reconnects send `Last-Event-ID`).
    last_event_id: Option<i64>,
}

async fn events(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let who = session(&state, &headers, q.session.as_deref()).await?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(q.last_event_id);
    let (tx, rx) = mpsc::channel::<Event>(64);
    // Subscribe before reading the backlog, so nothing falls between the two.
    let live = state.hub.subscribe(&who.web_id);
    tokio::spawn(stream_events(state, who, last_event_id, live, tx));
    let stream = futures::StreamExt::map(ReceiverStream::new(rx), Ok::<_, Infallible>);
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok(([(header::CACHE_CONTROL, "no-cache")], sse).into_response())
}

/// Feeds one stream: the backlog first (messages after `Last-Event-ID`, or those held
/// while the user was away), then live messages, until the client leaves or the server
/// shuts down.
async fn stream_events(
    state: State,
    who: WebSession,
    last_event_id: Option<i64>,
    mut live: broadcast::Receiver<WebEvent>,
    tx: mpsc::Sender<Event>,
) {
    let chat = ChatAddress::new(Platform::Web, &who.web_id);
    let store = state.router.core().store.clone();
    let mut last = last_event_id.unwrap_or(0);
    // Messages are published out of id order (a reply can overtake an older
    // notification), so duplicates are recognised by id, not by a high-water mark.
    let mut sent = SentIds::default();
    let backlog = match last_event_id {
        Some(after) => store.outbound_after(&chat, after, MAX_REPLAY).await,
        None => store.held_for(&chat).await,
    };
    match backlog {
        Ok(rows) => {
            if replay(&store, rows, &tx, &mut sent, &mut last)
                .await
                .is_err()
            {
                return;
            }
        }
        Err(e) => tracing::error!(error = %e, "reading the console backlog failed"),
    }
    // A delivery attempt that started before this stream subscribed may have found no
    // stream and be about to mark its message held: look at the held rows once more
    // after it has surely finished.
    let second_look = tokio::time::sleep(SECOND_LOOK);
    tokio::pin!(second_look);
    let mut looked = false;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = tx.closed() => break,
            () = &mut second_look, if !looked => {
                looked = true;
                match store.held_for(&chat).await {
                    Ok(rows) => {
                        let held = rows.into_iter().filter(|r| r.status == status::HELD).collect();
                        if replay(&store, held, &tx, &mut sent, &mut last).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "reading held console messages failed"),
                }
            }
            msg = live.recv() => match msg {
                Ok(ev) => {
                    let id = ev.numeric_id();
                    if !sent.insert(id) {
                        continue;
                    }
                    if tx.send(sse_event(&ev)).await.is_err() {
                        break;
                    }
                    last = last.max(id);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the live channel: catch up from the database.
                    match store.outbound_after(&chat, last, MAX_REPLAY).await {
                        Ok(rows) => {
                            for row in rows {
                                if !sent.insert(row.id) {
                                    continue;
                                }
                                if tx.send(sse_event(&event_of(&row))).await.is_err() {
                                    return;
                                }
                                last = last.max(row.id);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "console catch-up failed");
                            break;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
    drop(live);
    state.hub.release(&who.web_id);
}

/// When a new stream looks at its held messages a second time.
const SECOND_LOOK: Duration = Duration::from_secs(2);

/// Sends backlog rows the stream hasn't sent yet and marks the held and pending ones
/// delivered; `Err` when the client is gone.
async fn replay(
    store: &segue_bot::Store,
    rows: Vec<message::Model>,
    tx: &mpsc::Sender<Event>,
    sent: &mut SentIds,
    last: &mut i64,
) -> Result<(), ()> {
    let mut delivered = Vec::new();
    for row in &rows {
        if !sent.insert(row.id) {
            continue;
        }
        tx.send(sse_event(&event_of(row))).await.map_err(|_| ())?;
        *last = (*last).max(row.id);
        if row.status == status::HELD || row.status == status::PENDING {
            delivered.push(row);
        }
    }
    if let Err(e) = store.mark_delivered(&delivered).await {
        tracing::error!(error = %e, "marking held console messages delivered failed");
    }
    Ok(())
}

/// The ids a stream has sent recently (the newest 4,096).
#[derive(Default)]
struct SentIds {
    set: std::collections::HashSet<i64>,
    order: std::collections::VecDeque<i64>,
}

impl SentIds {
    /// `false` when the id was sent already.
    fn insert(&mut self, id: i64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > 4096
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

fn event_of(row: &message::Model) -> WebEvent {
    let buttons: Vec<segue_bot::Button> = row
        .buttons
        .as_deref()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or_default();
    WebEvent::new(row.id, &row.text, &buttons)
}

fn sse_event(ev: &WebEvent) -> Event {
    Event::default()
        .id(ev.id.clone())
        .data(serde_json::to_string(ev).unwrap_or_default())
}
