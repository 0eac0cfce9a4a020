//! The admin dashboard, on its own listener (`admin.bind`): HTTP Basic (any user name,
//! the admin token as password) or `Authorization: Bearer <admin token>`; anything else
//! gets 401. A successful login also sets an HttpOnly, SameSite=Strict session cookie,
//! so a browser's follow-up requests get in. `/` is apalis-board's job board (its prebuilt UI only works at a site root)
//! with its API under `/api/v1`; `/admin` is Segue's status page.

use std::sync::Arc;

use apalis_board::axum::framework::{ApiBuilder, RegisterRoute};
use apalis_board::axum::ui::ServeUI;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use segue_bot::{Core, Secret};
use segue_jobs::play_check::{PlayChecks, QUEUE};
use segue_platforms::http::ApiError;

#[derive(Clone)]
struct AdminState {
    core: Arc<Core>,
}

/// The admin app, every route behind the admin token (the board's UI and API too).
pub fn app(core: Arc<Core>, token: Secret, play_checks: &PlayChecks) -> axum::Router {
    axum::Router::new()
        .route("/admin", get(status_page))
        .route("/admin/login", get(login_page))
        .route("/admin/api/status", get(status_json))
        .with_state(AdminState { core })
        .nest("/api/v1", board_api(play_checks))
        // Everything else is the board's single-page app (it falls back to index.html).
        .fallback_service(ServeUI::new())
        .layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
}

/// apalis-board's API over the play-check queue, on either backend.
fn board_api(play_checks: &PlayChecks) -> axum::Router {
    let api = ApiBuilder::new(axum::Router::new());
    let api = match play_checks.clone() {
        PlayChecks::Postgres(storage) => api.register(QUEUE, storage),
        PlayChecks::Sqlite(storage) => api.register(QUEUE, storage),
    };
    // Built without the board's live tracing log (`/events`, feature `events`): Segue
    // doesn't feed it, and an endless event stream keeps headless browsers from ever
    // settling (the CI check loads the board in headless Chromium).
    api.build()
}

/// Whether `Authorization` carries the token (Basic password or Bearer; schemes are
/// case-insensitive), compared with [`Secret::matches`] (constant time).
fn authorized(header_value: Option<&str>, token: &Secret) -> bool {
    let Some((scheme, credentials)) = header_value.and_then(|v| v.trim().split_once(' ')) else {
        return false;
    };
    let credentials = credentials.trim();
    let presented = if scheme.eq_ignore_ascii_case("bearer") {
        credentials.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        match text.split_once(':') {
            Some((_, password)) => password.to_owned(),
            None => return false,
        }
    } else {
        return false;
    };
    token.matches(&presented)
}

/// The session cookie set after a successful Basic or Bearer login, so that a browser's
/// later requests (the board's scripts, styles and API calls) are let in too. Its value
/// is derived from the token: a new token (each start without `security.admin_token`)
/// ends every session.
const COOKIE: &str = "segue_admin";

fn cookie_value(token: &Secret) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(format!("segue-admin-session:{}", token.expose()).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the request carries the session cookie (compared in constant time).
fn has_session(req: &Request, token: &Secret) -> bool {
    let expected = Secret::new(cookie_value(token));
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && expected.matches(value))
}

async fn require_token(State(token): State<Arc<Secret>>, req: Request, next: Next) -> Response {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !token.is_empty() && has_session(&req, &token) {
        return next.run(req).await;
    }
    if authorized(value, &token) {
        let mut res = next.run(req).await;
        let cookie = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            cookie_value(&token)
        );
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
        return res;
    }
    tracing::warn!(path = %req.uri().path(), "admin request without a valid token refused");
    let mut res = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "The admin dashboard needs the admin token (HTTP Basic password or Bearer).",
    )
    .into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"Segue admin\", charset=\"UTF-8\""),
    );
    res
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// A browser opened with credentials in the URL (`http://admin:TOKEN@host/admin/login`)
/// got the session cookie on the way here; this page moves it on to `next` (default: the
/// board) at an address without them, since scripts can't fetch relative to a URL with
/// credentials.
async fn login_page(Query(q): Query<LoginQuery>) -> Html<String> {
    let next = q
        .next
        .filter(|n| {
            n.starts_with('/')
                && !n.starts_with("//")
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c))
        })
        .unwrap_or_else(|| "/".to_owned());
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Segue admin</title>\
         <script>location.replace(location.origin + '{next}')</script>\
         <p>Signed in. <a href=\"{next}\">Go on</a>, or open <a href=\"/admin\">the status page</a>.</p>"
    ))
}

async fn status_json(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let counts = s.core.store.counts().await?;
    Ok(axum::Json(counts).into_response())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `YYYY-MM-DD HH:MM:SS` UTC from Unix milliseconds.
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

async fn status_page(State(s): State<AdminState>) -> Response {
    let store = &s.core.store;
    let (counts, users, messages) = match tokio::try_join!(
        store.counts(),
        store.recent_users(20),
        store.recent_messages(30)
    ) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "admin status page: database failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(
                    "<!doctype html><title>Segue admin</title><p>The database does not answer.</p>",
                ),
            )
                .into_response();
        }
    };
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>Segue admin</title><style>\
         body{font:14px system-ui,sans-serif;margin:24px;color:#1d1d1f}table{border-collapse:collapse;margin-bottom:24px}\
         td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}\
         .n{font-size:22px;font-weight:600}.cards{display:flex;gap:24px;margin-bottom:24px}\
         .cards div{border:1px solid #ddd;border-radius:8px;padding:10px 16px}</style></head><body>\
         <h1>Segue admin</h1>",
    );
    html.push_str(&format!(
        "<div class=cards><div><div class=n>{}</div>users</div><div><div class=n>{}</div>messages in</div>\
         <div><div class=n>{}</div>messages out</div><div><div class=n>{}</div>outbox depth</div>\
         <div><div class=n>{}</div>dead letters</div></div>",
        counts.users, counts.inbound, counts.outbound, counts.outbox_depth, counts.dead
    ));
    html.push_str("<h2>Newest users</h2><table><tr><th>id</th><th>handle</th><th>since</th><th>banned</th></tr>");
    for u in users {
        html.push_str(&format!(
            "<tr><td>{}</td><td>@{}</td><td>{}</td><td>{}</td></tr>",
            u.id,
            esc(&u.handle),
            when(u.created_at),
            u.banned_at.map(when).unwrap_or_default()
        ));
    }
    html.push_str("</table><h2>Audit log (newest)</h2><table><tr><th>time</th><th>dir</th><th>chat</th><th>user</th><th>text</th><th>status</th><th>detail</th><th>ms</th></tr>");
    for m in messages {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}:{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(m.created_at),
            m.direction,
            esc(&m.platform),
            esc(&m.chat_id),
            m.user_id.map(|u| u.to_string()).unwrap_or_default(),
            esc(&m.text.chars().take(120).collect::<String>()),
            esc(&m.status),
            esc(m.detail.as_deref().unwrap_or("")),
            m.duration_ms.map(|d| d.to_string()).unwrap_or_default()
        ));
    }
    html.push_str("</table></body></html>");
    Html(html).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_basic_and_bearer_only_with_the_token() {
        let t = Secret::new("s3cret");
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(authorized(Some("Bearer s3cret"), &t));
        assert!(authorized(Some("bearer s3cret"), &t));
        assert!(authorized(Some(&basic("anyone:s3cret")), &t));
        assert!(!authorized(Some(&basic("s3cret:nope")), &t));
        assert!(!authorized(Some("Bearer s3cre"), &t));
        assert!(!authorized(None, &t));
        assert!(!authorized(Some("Bearer "), &Secret::default()));
    }
}
