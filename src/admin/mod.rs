//! Admin HTTP endpoint: `/metrics`, `/health`, `/health/read`, `/topology` and a status page at `/`.
//!
//! The endpoint only reads: it encodes the metrics registry, loads one topology snapshot per
//! request and never publishes or changes anything. What each page says is decided by the pure
//! functions in `status`; this file only maps routes to them. It listens on its own socket (the
//! caller binds it), so it never shares a port or a connection limit with PostgreSQL clients.

pub mod failover;
mod status;
mod switchover;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::topology::TopologyHandle;

/// The content type of the OpenMetrics text format that `/metrics` answers with.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// The handles the admin endpoint reads.
#[derive(Clone)]
pub struct AdminState {
    /// The registry that [`Metrics::new`] registered into; encoded by `/metrics`.
    pub registry: Arc<Registry>,
    /// The topology, loaded once per request.
    pub topology: TopologyHandle,
    /// The metrics, refreshed from the topology before each `/metrics` encoding.
    pub metrics: Arc<Metrics>,
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
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// The admin routes over `state` (for embedding in another server, or for tests).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/health/read", get(health_read))
        .route("/topology", get(topology))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    state.metrics.topology(&state.topology.load());
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed\n").into_response(),
    }
}

async fn health(State(state): State<AdminState>) -> Response {
    health_response(status::write_health(&state.topology.load()))
}

async fn health_read(State(state): State<AdminState>) -> Response {
    health_response(status::read_health(&state.topology.load()))
}

fn health_response(verdict: Result<(), &'static str>) -> Response {
    match verdict {
        Ok(()) => ([(header::CONTENT_TYPE, TEXT)], "ok\n").into_response(),
        Err(why) => {
            (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, TEXT)], format!("{why}\n")).into_response()
        }
    }
}

async fn topology(State(state): State<AdminState>) -> Response {
    ([(header::CONTENT_TYPE, JSON)], status::topology_json(&state.topology.load())).into_response()
}

async fn status_page(State(state): State<AdminState>) -> Response {
    let page = status::page(&state.topology.load(), state.metrics.clients());
    ([(header::CONTENT_TYPE, TEXT)], page).into_response()
}

#[cfg(test)]
mod tests;
