//! A node's HTTP admin listener (`kvstore serve --admin-addr`): `GET /metrics` in the
//! Prometheus text format, `GET /health` (200 with a known leader and a quorum reachable, 503
//! with the reason otherwise) and `GET /ready` (200 once the node serves clients). Served by
//! axum; it reads only what the node publishes into its [`NodeMetrics`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::metrics::{self, NodeMetrics};

/// What Prometheus is told the text is (prometheus-client writes OpenMetrics text).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the admin address; the caller reports a failure as the node's.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the admin endpoints on `listener` until `shutdown` turns true.
pub fn spawn(
    listener: TcpListener,
    metrics: Arc<NodeMetrics>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let app = router(metrics);
    let serving = async move {
        let stopped = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::warn!(error = %e, "the admin listener failed");
        }
    };
    tokio::spawn(serving.in_current_span())
}

pub fn router(metrics: Arc<NodeMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(metrics)
}

async fn scrape(State(m): State<Arc<NodeMetrics>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        metrics::encode(&m),
    )
        .into_response()
}

async fn health(State(m): State<Arc<NodeMetrics>>) -> (StatusCode, String) {
    let decided = m
        .status
        .health
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    let code = if decided.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{decided}\n"))
}

async fn ready(State(m): State<Arc<NodeMetrics>>) -> (StatusCode, &'static str) {
    if m.status.ready.get() == 1 {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the node is not serving clients yet\n",
        )
    }
}
