//! The coordinator's HTTP server (axum) on its own address (`http_listen`, default
//! `127.0.0.1:7172`): `/healthz`, `/readyz` and `/metrics` now; the JSON API and the dashboard
//! build on it (ARCHITECTURE.md, "operating the farm from a browser"). It serves TLS with the
//! gRPC side's certificate (the same files, reloaded together) and refuses plaintext on a TLS
//! port with a sentence, as the gRPC side does.

mod error;

pub use error::ApiError;

use crate::auth::Role;
use crate::service::Coordinator;
use crate::store::Store;
use crate::tls::{Conn, ConnInfo};
use axum::Router;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// Serves until `shutdown` resolves.
pub async fn serve<S: Store>(
    coordinator: Coordinator<S>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = coordinator.server_tls();
    let app = router(coordinator);
    match tls {
        Some(tls) => {
            let listener = TlsListener { local: listener.local_addr()?, incoming: Box::pin(crate::tls::incoming(listener, tls)) };
            axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).with_graceful_shutdown(shutdown).await
        }
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
    }
}

/// The routes, generic over the store so embedded mode can serve them too.
pub fn router<S: Store>(coordinator: Coordinator<S>) -> Router {
    let mutual = coordinator.server_tls().is_some_and(|tls| tls.mutual());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics::<S>))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(mutual, https_only))
        .with_state(coordinator)
}

/// A plaintext request on a TLS port, or one without a client certificate under mutual TLS, is
/// answered with how to fix it (TLS mode only: the connection info exists only there).
async fn https_only(State(mutual): State<bool>, request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(info)) = request.extensions().get::<ConnectInfo<ConnInfo>>() {
        if !info.tls {
            return ApiError::tls_required().into_response();
        }
        if mutual && !info.client_cert {
            return ApiError::from(tonic::Status::unauthenticated(
                "this coordinator requires a client certificate (mutual TLS); present one signed by its tls_client_ca",
            ))
            .into_response();
        }
    }
    next.run(request).await
}

/// The process is up; depends on nothing external.
async fn healthz() -> Response {
    json_response(serde_json::json!({"status": "ok"}))
}

/// Ready when the database answers; Redis down is reported as degraded but never makes the
/// coordinator unready (it is disposable by design).
async fn readyz<S: Store>(State(coordinator): State<Coordinator<S>>) -> Response {
    let redis = match (coordinator.has_redis(), coordinator.redis_ok().await) {
        (false, _) => "off",
        (true, true) => "ok",
        (true, false) => "degraded",
    };
    match coordinator.store().find_run("").await {
        Ok(_) => json_response(serde_json::json!({"status": "ready", "database": "ok", "redis": redis})),
        Err(error) => ApiError::unavailable(format!("the database does not answer ({error}); the coordinator retries, check PostgreSQL")).into_response(),
    }
}

/// Prometheus text; behind the read token when `metrics_require_token` is set.
async fn metrics<S: Store>(State(coordinator): State<Coordinator<S>>, headers: HeaderMap) -> Response {
    if coordinator.config().metrics_require_token
        && let Err(status) = coordinator.tokens().check(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes), Role::Read)
    {
        return ApiError::from(status).into_response();
    }
    let keep = chrono::Duration::seconds(i64::try_from(coordinator.config().metrics_keep_finished_seconds).unwrap_or(i64::MAX));
    let live = if coordinator.has_redis() && coordinator.redis_ok().await { Some(coordinator.live_workers().await) } else { None };
    match coordinator.metrics().scrape(coordinator.store(), keep, live).await {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response(),
        Err(error) => ApiError::from_store(error).into_response(),
    }
}

async fn not_found(request: Request) -> Response {
    ApiError::not_found(format!("no such page: {}; the coordinator serves /healthz, /readyz and /metrics", request.uri().path())).into_response()
}

fn json_response(body: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The gRPC side's TLS accept loop (TLS or plaintext told apart by the first byte) as an axum
/// listener.
struct TlsListener {
    local: SocketAddr,
    incoming: Pin<Box<dyn futures_util::Stream<Item = Result<Conn, std::io::Error>> + Send>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = Conn;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Conn, ConnInfo) {
        loop {
            match self.incoming.next().await {
                Some(Ok(conn)) => {
                    let info = match &conn {
                        Conn::Tls(_, info) | Conn::Plain(_, info) => *info,
                    };
                    return (conn, info);
                }
                Some(Err(error)) => tracing::info!("HTTP connection refused: {error}"),
                // The accept loop ended: nothing more will arrive.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<ConnInfo> {
        Ok(ConnInfo { remote: Some(self.local), tls: true, client_cert: false })
    }
}

impl Connected<axum::serve::IncomingStream<'_, TlsListener>> for ConnInfo {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        *stream.remote_addr()
    }
}
