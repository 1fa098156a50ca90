//! The coordinator's HTTP server (axum) on its own address (`http_listen`, default
//! `127.0.0.1:7172`): `/healthz`, `/readyz`, `/metrics`, the JSON API under `/api/v1/` (described
//! by `/api/openapi.json`, generated from the handlers' annotations) and the dashboard at `/`
//! (ARCHITECTURE.md, "operating the farm from a browser"). It serves TLS with the gRPC side's
//! certificate (the same files, reloaded together) and refuses plaintext on a TLS port with a
//! sentence, as the gRPC side does. Every answer carries a strict Content-Security-Policy.

mod actions;
mod api;
mod assets;
mod error;
mod session;
mod sse;
mod thumbs;

pub use error::{ApiError, ErrorBody};
pub use session::SessionKey;
pub use sse::Hub;
pub use thumbs::Thumbs;

use crate::auth::Role;
use crate::service::Coordinator;
use crate::store::Store;
use crate::tls::{Conn, ConnInfo};
use axum::Router;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use utoipa::OpenApi;

/// Pages may load only this server's own scripts, styles and images, and no one may frame them.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The OpenAPI document: every API route, from the handlers' `#[utoipa::path]` annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "acufarm coordinator API", description = "Runs, shards, jobs and workers of an acufarm render farm, and the actions on them. \
        Reads take a read-only or operator token (`Authorization: Bearer …`) or a dashboard session cookie; actions an operator one."),
    paths(
        api::runs, api::run, api::shards, api::jobs, api::job, api::workers, sse::events, thumbs::image,
        actions::pause, actions::resume, actions::cancel, actions::resubmit, actions::regenerate, actions::release,
        session::sign_in, session::current, session::sign_out,
        healthz, readyz, metrics, openapi,
    ),
    tags(
        (name = "runs", description = "Runs and their shards"),
        (name = "jobs", description = "Jobs, filtered and paged"),
        (name = "workers", description = "GPU workers"),
        (name = "actions", description = "Changes (operator)"),
        (name = "session", description = "The dashboard's sign-in"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

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

/// The routes, generic over the store so embedded mode can serve them too. Each one is listed in
/// [`ApiDoc`]; a test checks that every documented route answers.
pub fn router<S: Store>(coordinator: Coordinator<S>) -> Router {
    let mutual = coordinator.server_tls().is_some_and(|tls| tls.mutual());
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::file))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/api/openapi.json", get(openapi))
        .route("/api/v1/runs", get(api::runs::<S>))
        .route("/api/v1/runs/{run}", get(api::run::<S>))
        .route("/api/v1/runs/{run}/shards", get(api::shards::<S>))
        .route("/api/v1/runs/{run}/jobs", get(api::jobs::<S>))
        .route("/api/v1/runs/{run}/pause", post(actions::pause::<S>))
        .route("/api/v1/runs/{run}/resume", post(actions::resume::<S>))
        .route("/api/v1/runs/{run}/cancel", post(actions::cancel::<S>))
        .route("/api/v1/runs/{run}/resubmit", post(actions::resubmit::<S>))
        .route("/api/v1/runs/{run}/regenerate", post(actions::regenerate::<S>))
        .route("/api/v1/jobs/{id}", get(api::job::<S>))
        .route("/api/v1/jobs/{id}/image", get(thumbs::image::<S>))
        .route("/api/v1/workers", get(api::workers::<S>))
        .route("/api/v1/events", get(sse::events::<S>))
        .route("/api/v1/workers/{name}/release", post(actions::release::<S>))
        .route("/api/v1/session", post(session::sign_in::<S>).get(session::current::<S>).delete(session::sign_out::<S>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(mutual, https_only))
        .layer(middleware::from_fn(security_headers))
        .with_state(coordinator)
}

/// The headers every answer carries: the CSP, no MIME sniffing, no referrer, no framing.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The OpenAPI document of this API (absolute paths).
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], ApiDoc::openapi().to_json().unwrap_or_default()).into_response()
}

/// A JSON request body; a missing body reads as the type's default (`{}`), a bad one is a 400
/// naming what is wrong.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|error| ApiError::bad_request(format!("the request body could not be read ({error}); send JSON")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|error| ApiError::bad_request(format!("the request body is not what this call takes ({error}); see /api/openapi.json")))
    }
}

/// Query parameters; a bad one is a 400 naming it.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|query| Params(query.0))
            .map_err(|error| ApiError::bad_request(format!("the query is not valid ({}); see /api/openapi.json for this call's parameters", error.body_text())))
    }
}

async fn method_not_allowed(request: Request) -> Response {
    ApiError::method_not_allowed(format!("{} is not a method {} takes; see /api/openapi.json", request.method(), request.uri().path())).into_response()
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
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Up")))]
async fn healthz() -> Response {
    json_response(serde_json::json!({"status": "ok"}))
}

/// Ready when the database answers; Redis down is reported as degraded but never makes the
/// coordinator unready (it is disposable by design).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready; `redis` is ok, degraded or off"), (status = 503, description = "The database does not answer", body = ErrorBody)))]
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
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "OpenMetrics text")))]
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
    ApiError::not_found(format!("no such page: {}; the API is under /api/v1/ (see /api/openapi.json)", request.uri().path())).into_response()
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
