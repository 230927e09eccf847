//! A node's HTTP admin listener (`kvstore serve --admin-addr`): `GET /metrics` in the
//! Prometheus text format, `GET /health` (200 with a known leader and a quorum reachable, 503
//! with the reason otherwise) and `GET /ready` (200 once the node serves clients). Served by
//! axum; it reads only what the node publishes into its [`NodeMetrics`].
//!
//! **Access.** With `--admin-tls` it speaks HTTPS with the node's peer certificate (each
//! connection's handshake in its own task, within a timeout; SIGHUP reloads the certificate).
//! With `--admin-token` (or `--admin-token-file`), `/metrics` answers only a request carrying
//! `Authorization: Bearer TOKEN`, compared in constant time; others get 401. `/health` and
//! `/ready` stay open: load balancers and orchestrators probe them without credentials, and
//! they tell only whether the node is up and has a quorum, which anyone who can reach the port
//! learns by trying it anyway; `/metrics` tells much more (the cluster's shape, its load, its
//! key counts).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::metrics::{self, NodeMetrics};
use crate::tls::{Reloadable, TlsStream, DEFAULT_HANDSHAKE_TIMEOUT};

mod token;

pub use token::AdminToken;

/// What Prometheus is told the text is (prometheus-client writes OpenMetrics text).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the admin address; the caller reports a failure as the node's.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Who may read the admin endpoints, and over what.
#[derive(Clone, Default)]
pub struct AdminAccess {
    /// Serve HTTPS with this configuration (the node's certificate).
    pub tls: Option<Reloadable<rustls::ServerConfig>>,
    /// `/metrics` needs this bearer token.
    pub token: Option<AdminToken>,
}

/// Serves the admin endpoints on `listener` until `shutdown` turns true.
pub fn spawn(
    listener: TcpListener,
    metrics: Arc<NodeMetrics>,
    access: AdminAccess,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let app = router(metrics, access.token);
    let serving = async move {
        let stopped = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let served = match access.tls {
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            Some(config) => {
                let listener = HttpsListener {
                    tcp: listener,
                    config,
                };
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::warn!(error = %e, "the admin listener failed");
        }
    };
    tokio::spawn(serving.in_current_span())
}

/// The admin routes; `/metrics` behind `token` if one is given.
pub fn router(metrics: Arc<NodeMetrics>, token: Option<AdminToken>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(Arc::new(Admin { metrics, token }))
}

struct Admin {
    metrics: Arc<NodeMetrics>,
    token: Option<AdminToken>,
}

async fn scrape(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Some(token) = &admin.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !token.authorizes(presented) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is needed: Authorization: Bearer TOKEN\n",
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        metrics::encode(&admin.metrics),
    )
        .into_response()
}

async fn health(State(admin): State<Arc<Admin>>) -> (StatusCode, String) {
    let decided = admin
        .metrics
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

async fn ready(State(admin): State<Arc<Admin>>) -> (StatusCode, &'static str) {
    if admin.metrics.status.ready.get() == 1 {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the node is not serving clients yet\n",
        )
    }
}

/// The admin port over TLS: each accepted connection does its handshake when axum's task for it
/// first reads, never in this accept loop.
struct HttpsListener {
    tcp: TcpListener,
    config: Reloadable<rustls::ServerConfig>,
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.tcp.accept().await {
                Ok((tcp, addr)) => {
                    let tls =
                        TlsStream::accept(tcp, self.config.current(), DEFAULT_HANDSHAKE_TIMEOUT);
                    return (tls, addr);
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::debug!(error = %e, "accepting an admin connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
