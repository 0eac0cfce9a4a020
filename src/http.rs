//! The public HTTP app: health, readiness, metrics, every adapter's routes, JSON errors,
//! a body size limit and panic catching. `app()` returns the `Router` value, so tests
//! can drive it without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use segue_bot::Core;
use segue_platforms::http::ApiError;
use tower_http::catch_panic::CatchPanicLayer;

/// The largest request body accepted (webhook payloads are far smaller).
pub const BODY_LIMIT: usize = 256 * 1024;

/// The public app: health endpoints, then the adapters' routes.
pub fn app(core: Arc<Core>, adapter_routes: Vec<axum::Router>) -> axum::Router {
    let mut app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(core);
    for routes in adapter_routes {
        app = app.merge(routes);
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Something went wrong on our side.",
            )
            .into_response()
        }))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(core): State<Arc<Core>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), core.store.ping()).await {
        Ok(Ok(())) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: database does not answer");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "The database does not answer.",
            )
            .into_response()
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "The database did not answer within 2 seconds.",
        )
        .into_response(),
    }
}

async fn metrics(State(core): State<Arc<Core>>) -> Response {
    let depth = match core.store.outbox_depth().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: outbox depth unavailable");
            0
        }
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        core.metrics.render(depth),
    )
        .into_response()
}

async fn method_not_allowed(uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take that method.", uri.path()),
    )
    .into_response()
}

async fn not_found(uri: Uri, req: Request<Body>) -> Response {
    let path = uri.path();
    let wants_json = path.starts_with("/api/")
        || path.starts_with("/console/api/")
        || path.starts_with("/webhooks/")
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        ApiError::not_found(format!("Nothing at {path}.")).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::response::Html(
                "<!doctype html><title>Not found</title><p>Nothing here. The console is at <a href=\"/console\">/console</a>.</p>",
            ),
        )
            .into_response()
    }
}
