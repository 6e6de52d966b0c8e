//! Admin HTTP endpoint: `/metrics`, `/health`, `/health/read`, `/topology`, `/stats`, the live
//! status page at `/`, and `POST /reload`.
//!
//! Apart from `POST /reload` (which asks the proxy's one applier through [`crate::reload::Control`])
//! the endpoint only reads: it encodes the metrics registry and loads one topology snapshot per
//! request. What each page says is decided by the pure functions in `status` and `stats`; this
//! file only maps routes to them. With `admin.token` set, every path but `/health` and
//! `/health/read` (for load balancers) needs `Authorization: Bearer <token>`. It listens on its
//! own socket (the caller binds it), so it never shares a port or a connection limit with
//! PostgreSQL clients. More routes (failover actions) are merged into [`router`]'s result.

mod events;
pub mod failover;
mod stats;
mod status;
mod switchover;

pub use events::{role_reason, topology_changes, Event, Events};
pub use status::lag_seconds;
pub use switchover::Switched;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::topology::TopologyHandle;

/// The content type of the OpenMetrics text format that `/metrics` answers with.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";

/// The handles the admin endpoint reads.
#[derive(Clone)]
pub struct AdminState {
    /// The registry that [`Metrics::new`] registered into; encoded by `/metrics`.
    pub registry: Arc<Registry>,
    /// The topology, loaded once per request.
    pub topology: TopologyHandle,
    /// The metrics, refreshed from the topology before each `/metrics` encoding.
    pub metrics: Arc<Metrics>,
    /// The proxy's shared handles: live configuration (token), pools, clients, control.
    pub shared: Arc<crate::frontend::Shared>,
    /// Recent events for the status page.
    pub events: Arc<Events>,
}

/// Serve the admin endpoint on `listener` until `shutdown` completes, then finish the requests
/// in flight and return.
///
/// # Errors
///
/// An IO error of the HTTP server (accept errors are retried by the server itself).
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state, extra)).with_graceful_shutdown(shutdown).await
}

/// The admin routes over `state`, plus `extra` routes (the failover actions), all behind the
/// token check (for embedding in another server, or for tests).
pub fn router(state: AdminState, extra: Router) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/health/read", get(health_read))
        .route("/topology", get(topology))
        .route("/stats", get(stats_json))
        .route("/reload", post(reload))
        .with_state(state.clone())
        .merge(extra)
        .layer(middleware::from_fn_with_state(state, require_token))
}

/// `admin.token`, when set, guards everything but the health checks.
async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let open = matches!(request.uri().path(), "/health" | "/health/read");
    let Some(token) = state.shared.config.ops.admin.token.as_deref() else { return next.run(request).await };
    let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if open || given.and_then(|v| v.strip_prefix("Bearer ")).is_some_and(|t| same_secret(t, token)) {
        return next.run(request).await;
    }
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a bearer token is required\n").into_response()
}

/// Compare without stopping at the first difference (no timing hint about the token).
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn reload(State(state): State<AdminState>) -> Response {
    use crate::reload::ReloadError;
    let (status, body) = match state.shared.control.reload().await {
        Ok(report) => (
            StatusCode::OK,
            serde_json::json!({ "ok": true, "changes": report.changes, "needs_restart": report.needs_restart }),
        ),
        Err(ReloadError::Invalid(e)) => {
            let errors: Vec<_> = e.0.iter().map(|p| serde_json::json!({ "key": p.key, "reason": p.reason })).collect();
            (StatusCode::UNPROCESSABLE_ENTITY, serde_json::json!({ "ok": false, "errors": errors }))
        }
        Err(e) => (
            StatusCode::CONFLICT,
            serde_json::json!({ "ok": false, "errors": [{ "key": "", "reason": e.to_string() }] }),
        ),
    };
    (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
}

async fn stats_json(State(state): State<AdminState>, uri: axum::http::Uri) -> Response {
    let wait = uri.query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("wait_generation="));
    if let Some(generation) = wait.and_then(|g| g.parse().ok()) {
        stats::wait_for_change(&state, generation).await;
    }
    ([(header::CONTENT_TYPE, JSON)], stats::stats_json(&state)).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    state.metrics.topology(&state.topology.load());
    let (hits, misses) = state.shared.classifiers.cache_counts();
    state.metrics.classify_cache(hits, misses);
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed\n").into_response(),
    }
}

async fn health(State(state): State<AdminState>) -> Response {
    let topology = state.topology.load();
    let health = status::health(&topology);
    let code = match health.status() {
        status::Verdict::Ok | status::Verdict::Degraded => StatusCode::OK,
        status::Verdict::Down => StatusCode::SERVICE_UNAVAILABLE,
    };
    // Plain structs with string keys always serialize.
    let body = serde_json::to_string(&health).expect("health serializes to JSON");
    (code, [(header::CONTENT_TYPE, JSON)], body).into_response()
}

async fn health_read(State(state): State<AdminState>) -> Response {
    match status::read_health(&state.topology.load()) {
        Ok(()) => ([(header::CONTENT_TYPE, TEXT)], "ok\n").into_response(),
        Err(why) => {
            (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, TEXT)], format!("{why}\n")).into_response()
        }
    }
}

async fn topology(State(state): State<AdminState>) -> Response {
    ([(header::CONTENT_TYPE, JSON)], status::topology_json(&state.topology.load())).into_response()
}

async fn status_page() -> Response {
    ([(header::CONTENT_TYPE, HTML)], stats::PAGE).into_response()
}

#[cfg(test)]
mod tests;
