//! The coordinator's gRPC service: the `Worker` calls GPU workers make and the `Admin` calls the
//! CLI makes, over one [`Store`] (PostgreSQL in the farm), the object stores of each run, and
//! Redis for presence, live events and rates. The service keeps no job state of its own: a
//! restarted coordinator serves the same workers and runs from the database.

pub(crate) mod admin;
mod finish;
mod worker;

use crate::StoreError;
use crate::auth::{Role, Tokens};
use crate::config::Config;
use crate::events::Events;
use crate::retry::RetryPolicy;
use crate::store::{RunInfo, Store};
use crate::tls::{ConnInfo, FileWatch, ServerTls};
use acufarm_core::{RunId, RunSpec};
use acufarm_proto::{AUTHORIZATION, admin_server::AdminServer, worker_server::WorkerServer};
use acufarm_storage::{Storage, StorageError};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

/// Largest message accepted (a submit carries its scene images).
const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// How often token and certificate files are looked at for changes (SIGHUP reloads at once).
const SECRET_WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Most jobs one lease call may claim.
pub const MAX_LEASE: u32 = 1024;

/// Where one run's files live, resolved once from its stored spec.
pub(crate) struct RunContext {
    pub id: RunId,
    pub name: String,
    pub input: Storage,
    pub output: Storage,
    pub input_url: String,
    pub output_url: String,
    pub scenes_url: String,
    pub bundle_sha256: String,
    pub policy: RetryPolicy,
}

pub(crate) struct Inner<S> {
    pub store: S,
    pub config: Config,
    pub events: Events,
    /// The tokens of every role, re-read when their files change.
    tokens: Arc<Tokens>,
    /// The TLS listener's settings, when TLS is on; re-read when the files change.
    tls: Option<Arc<ServerTls>>,
    runs: tokio::sync::RwLock<HashMap<RunId, Arc<RunContext>>>,
    /// Runs that changed since the last finish check.
    touched: Mutex<HashSet<RunId>>,
    /// Runs whose manifest was written for their current (finished) counts.
    finished: Mutex<HashMap<RunId, (u64, u64)>>,
    /// The QA section of each finished run's manifest summary (JSON, empty without `[qa]`), for
    /// the counts it was written at, so `Status` does not read the summary file on every call.
    qa_summaries: Mutex<HashMap<RunId, ((u64, u64), String)>>,
    pub metrics: crate::metrics::Metrics,
    /// Signs the dashboard's session cookies.
    session_key: crate::http::SessionKey,
    /// Live updates for the dashboard.
    hub: crate::http::Hub,
    /// Job image thumbnails.
    thumbs: crate::http::Thumbs,
}

/// The coordinator: cheap to clone, shared by both gRPC services and the background tasks.
pub struct Coordinator<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Coordinator<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

/// The retry policy a run spec asks for.
pub fn retry_policy(spec: &RunSpec) -> RetryPolicy {
    let retry = &spec.retry;
    RetryPolicy::builder()
        .max_attempts(retry.max_attempts)
        .backoff_base(Duration::from_secs_f64(retry.backoff_base_s.max(0.0)))
        .backoff_max(Duration::from_secs_f64(retry.backoff_max_s.max(0.0)))
        .max_lost(retry.max_lost)
        .quarantine_after(retry.quarantine_after)
        .build()
}

/// Maps a store error to the gRPC status a client can act on; the message is the store's
/// sentence.
pub(crate) fn store_status(error: StoreError) -> Status {
    let message = error.to_string();
    match error {
        StoreError::RunNameTaken { .. } => Status::already_exists(message),
        StoreError::RunNotFound { .. } => Status::not_found(message),
        StoreError::InvalidRun { .. } => Status::invalid_argument(message),
        StoreError::RunCancelled { .. } => Status::failed_precondition(message),
        error if error.is_retryable() => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

pub(crate) fn storage_status(error: StorageError) -> Status {
    if error.is_retryable() { Status::unavailable(error.to_string()) } else { Status::failed_precondition(error.to_string()) }
}

/// Guards one service: the connection must be TLS when the coordinator serves TLS (with a
/// client certificate under mutual TLS), and the call must carry a token of the service's role.
#[derive(Clone)]
pub struct Guard {
    tokens: Arc<Tokens>,
    role: Role,
    /// The coordinator serves TLS, so a plaintext call is a client that forgot `https://`.
    tls: bool,
    /// Mutual TLS: a client certificate is required.
    mutual: bool,
}

impl Guard {
    pub fn new(tokens: Arc<Tokens>, role: Role, tls: bool, mutual: bool) -> Self {
        Self { tokens, role, tls, mutual }
    }
}

impl tonic::service::Interceptor for Guard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.tls {
            match request.extensions().get::<ConnInfo>() {
                Some(info) if info.tls => {
                    if self.mutual && !info.client_cert {
                        return Err(Status::unauthenticated(
                            "this coordinator requires a client certificate (mutual TLS); pass --client-cert and --client-key (or ACUFARM_CLIENT_CERT and ACUFARM_CLIENT_KEY) with a certificate signed by its tls_client_ca",
                        ));
                    }
                }
                _ => {
                    return Err(Status::unauthenticated(
                        "this coordinator serves TLS only; use an https:// coordinator URL (with --ca-cert or ACUFARM_CA_CERT when its certificate is not from a public CA)",
                    ));
                }
            }
        }
        self.tokens.check(request.metadata().get(AUTHORIZATION).map(|value| value.as_bytes()), self.role)?;
        Ok(request)
    }
}

impl<S: Store> Coordinator<S> {
    pub fn new(store: S, config: Config) -> Result<Self, String> {
        let redis_ca = match &config.redis_ca_cert {
            Some(path) => Some(std::fs::read(path).map_err(|e| format!("cannot read redis_ca_cert {} ({e}); check the path", path.display()))?),
            None => None,
        };
        let events = Events::with_ca(config.redis_url.expose(), &config.redis_prefix, Duration::from_secs(config.presence_ttl_seconds), redis_ca)?;
        let tokens = Arc::new(config.tokens().map_err(|e| e.to_string())?);
        let tls = config.tls().map(ServerTls::load).transpose()?.map(Arc::new);
        let session_key = crate::http::SessionKey::new(Some(config.session_key.expose()));
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                config,
                events,
                tokens,
                tls,
                runs: tokio::sync::RwLock::new(HashMap::new()),
                touched: Mutex::new(HashSet::new()),
                finished: Mutex::new(HashMap::new()),
                qa_summaries: Mutex::new(HashMap::new()),
                metrics: crate::metrics::Metrics::default(),
                session_key,
                hub: crate::http::Hub::default(),
                thumbs: crate::http::Thumbs::default(),
            }),
        })
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Serves both gRPC services on `listener` (over TLS when configured) and runs the reaper
    /// and the secret-file watch until `shutdown` resolves.
    pub async fn serve(self, listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()> + Send) -> Result<(), tonic::transport::Error> {
        let tls = self.inner.tls.clone();
        let mutual = tls.as_ref().is_some_and(|tls| tls.mutual());
        let guard = |role| Guard::new(self.inner.tokens.clone(), role, tls.is_some(), mutual);
        let worker =
            InterceptedService::new(WorkerServer::new(worker::WorkerService(self.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES), guard(Role::Worker));
        let admin = InterceptedService::new(
            AdminServer::new(admin::AdminService(self.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES),
            guard(Role::Operator),
        );
        if let Some(warning) = listener.local_addr().ok().and_then(|address| cleartext_warning(address, tls.is_some())) {
            tracing::warn!("{warning}");
        }
        let reaper = tokio::spawn(self.clone().reaper());
        let watch = tokio::spawn(self.clone().watch_secret_files());
        let router = tonic::transport::Server::builder().add_service(worker).add_service(admin);
        let result = match tls {
            Some(tls) => router.serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), shutdown).await,
            None => {
                // TCP_NODELAY on the accepted sockets themselves: the builder's `tcp_nodelay` only
                // reaches sockets tonic binds, and with Nagle on, small replies waited for delayed
                // ACKs (~40 ms per call).
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, shutdown).await
            }
        };
        reaper.abort();
        watch.abort();
        result
    }

    /// Re-reads the token files and the TLS certificate files (SIGHUP, or a change the watch
    /// saw). What cannot be read keeps its current value and is logged; nothing in use is lost.
    pub fn reload_secrets(&self) {
        match self.inner.tokens.reload() {
            Ok([worker, operator, read]) => tracing::info!(worker, operator, read, "reloaded the tokens"),
            Err(error) => tracing::warn!("kept the tokens in use: {error}"),
        }
        if let Some(tls) = &self.inner.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("reloaded the TLS certificate"),
                Err(error) => tracing::warn!("kept the TLS certificate in use: {error}"),
            }
        }
    }

    /// Looks at the token and certificate files every few seconds and reloads when one changed.
    async fn watch_secret_files(self) {
        let mut files = self.inner.tokens.files();
        files.extend(self.inner.tls.iter().flat_map(|tls| tls.files()));
        if files.is_empty() {
            return;
        }
        let mut watch = FileWatch::new(&files);
        let mut tick = tokio::time::interval(SECRET_WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if watch.changed() {
                self.reload_secrets();
            }
        }
    }

    /// Takes back expired leases, and writes the manifest of runs that finished, every
    /// `reap_interval_seconds`. A database outage only delays it.
    async fn reaper(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.inner.config.reap_interval_seconds));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Every run may have finished while no coordinator was running.
        let mut first = true;
        loop {
            tick.tick().await;
            if let Err(error) = self.reap_once().await {
                tracing::warn!("lease reaper: {error}");
            }
            if first {
                match self.inner.store.list_runs().await {
                    Ok(runs) => {
                        self.inner.touched.lock().unwrap_or_else(|p| p.into_inner()).extend(runs.iter().map(|run| run.id));
                        first = false;
                    }
                    Err(error) => tracing::warn!("listing runs: {error}"),
                }
            }
            self.finish_runs().await;
        }
    }

    /// One reaper pass: expired leases go back to the queue (or fail past their run's
    /// `[retry] max_lost`), and whatever the lost attempts staged is deleted.
    pub async fn reap_once(&self) -> Result<usize, StoreError> {
        // Each job's run supplies its own lost-lease cap (joined in the store's one statement).
        let reaped = self.inner.store.reap_expired(chrono::Utc::now()).await?;
        if reaped.is_empty() {
            return Ok(0);
        }
        tracing::info!(jobs = reaped.len(), "took back expired leases");
        let ids: Vec<_> = reaped.iter().map(|job| job.job).collect();
        let records = self.inner.store.job_records(&ids).await?;
        for (reap, record) in reaped.iter().zip(records.iter()) {
            if let Ok(run) = self.run_context(record.run).await {
                let key = Storage::staging_key(&run.name, reap.job.0, reap.attempt.0);
                if let Err(error) = run.output.delete(&key).await {
                    tracing::warn!("cannot delete {key} of a lost lease: {error}");
                }
            }
            self.touch(record.run);
        }
        self.inner.events.publish(&crate::events::Event::LeasesExpired { jobs: reaped.len() }).await;
        Ok(reaped.len())
    }

    /// Progress made outside the gRPC service (embedded mode's own job loops): feeds the rates
    /// and wakes the dashboard's live updates.
    pub fn record_progress(&self, run: RunId, worker: &str, completed: u64) {
        self.inner.metrics.completed(worker, completed);
        self.inner.metrics.run_completed(run, completed);
        self.touch(run);
    }

    pub(crate) fn touch(&self, run: RunId) {
        self.inner.touched.lock().unwrap_or_else(|p| p.into_inner()).insert(run);
        self.inner.hub.poke();
    }

    /// The files of a run, cached.
    pub(crate) fn server_tls(&self) -> Option<Arc<ServerTls>> {
        self.inner.tls.clone()
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    pub(crate) fn thumbs(&self) -> &crate::http::Thumbs {
        &self.inner.thumbs
    }

    pub(crate) fn hub(&self) -> &crate::http::Hub {
        &self.inner.hub
    }

    pub(crate) fn session_key(&self) -> &crate::http::SessionKey {
        &self.inner.session_key
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Whether a Redis URL is configured.
    pub(crate) fn has_redis(&self) -> bool {
        !self.inner.config.redis_url.expose().is_empty()
    }

    pub(crate) async fn redis_ok(&self) -> bool {
        self.inner.events.ok().await
    }

    pub(crate) async fn live_workers(&self) -> Vec<crate::events::Presence> {
        self.inner.events.workers().await
    }

    pub(crate) async fn run_context(&self, run: RunId) -> Result<Arc<RunContext>, Status> {
        if let Some(context) = self.inner.runs.read().await.get(&run) {
            return Ok(context.clone());
        }
        let info = self.inner.store.run(run).await.map_err(store_status)?;
        let context = Arc::new(Self::context_of(&info)?);
        self.inner.runs.write().await.insert(run, context.clone());
        Ok(context)
    }

    pub(crate) async fn forget_run(&self, run: RunId) {
        self.inner.runs.write().await.remove(&run);
        self.inner.finished.lock().unwrap_or_else(|p| p.into_inner()).remove(&run);
    }

    fn context_of(info: &RunInfo) -> Result<RunContext, Status> {
        let label = format!("<stored spec of run {}>", info.name);
        let spec = RunSpec::parse(&info.spec, Path::new(&label)).map_err(|e| Status::internal(e.to_string()))?;
        let dataset = spec
            .dataset
            .as_ref()
            .ok_or_else(|| Status::internal(format!("the stored spec of run {} has no [dataset]; resubmit it with --force", info.name)))?;
        let input = Storage::open(&dataset.input).map_err(storage_status)?;
        let output = Storage::open(&dataset.output).map_err(storage_status)?;
        Ok(RunContext {
            id: info.id,
            name: info.name.clone(),
            input,
            output,
            input_url: dataset.input.clone(),
            output_url: dataset.output.clone(),
            scenes_url: acufarm_storage::shipped_url(&dataset.output, &info.name),
            bundle_sha256: info.bundle_sha256.clone(),
            policy: retry_policy(&spec),
        })
    }
}

/// The loud warning of a coordinator reachable from the network without TLS.
fn cleartext_warning(address: std::net::SocketAddr, tls: bool) -> Option<String> {
    (!tls && !address.ip().is_loopback()).then(|| {
        format!(
            "listening on {address} WITHOUT TLS: tokens and all job traffic cross the network in cleartext; set tls_cert and tls_key (see examples/coordinator.toml) or listen on a loopback address"
        )
    })
}

pub(crate) fn unix_ms(time: chrono::DateTime<chrono::Utc>) -> i64 {
    time.timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn call(guard: &mut Guard, info: Option<ConnInfo>, header: Option<&str>) -> Result<(), Status> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request.metadata_mut().insert(AUTHORIZATION, value.parse().unwrap());
        }
        if let Some(info) = info {
            request.extensions_mut().insert(info);
        }
        guard.call(request).map(|_| ())
    }

    fn tokens() -> Arc<Tokens> {
        let source = |setting: &str, token: &str| crate::auth::TokenSource::Inline { setting: setting.into(), tokens: vec![token.into()] };
        Arc::new(Tokens::load(source("worker_token", "w"), source("operator_token", "op"), source("read_token", "ro")).unwrap())
    }

    #[test]
    fn only_a_network_address_without_tls_is_warned_about() {
        let warning = cleartext_warning("0.0.0.0:7171".parse().unwrap(), false).unwrap();
        assert!(warning.starts_with("listening on 0.0.0.0:7171 WITHOUT TLS") && warning.contains("tls_cert"), "{warning}");
        assert!(cleartext_warning("10.0.0.5:7171".parse().unwrap(), false).is_some());
        assert!(cleartext_warning("0.0.0.0:7171".parse().unwrap(), true).is_none());
        assert!(cleartext_warning("127.0.0.1:7171".parse().unwrap(), false).is_none());
        assert!(cleartext_warning("[::1]:7171".parse().unwrap(), false).is_none());
    }

    #[test]
    fn the_guard_checks_the_role_and_under_tls_the_connection() {
        let plain = ConnInfo { remote: None, tls: false, client_cert: false };
        let tls = ConnInfo { tls: true, ..plain };
        let tls_with_cert = ConnInfo { client_cert: true, ..tls };

        let mut worker = Guard::new(tokens(), Role::Worker, false, false);
        assert!(call(&mut worker, None, Some("Bearer w")).is_ok());
        assert_eq!(call(&mut worker, None, Some("Bearer op")).unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(call(&mut worker, None, Some("Bearer x")).unwrap_err().code(), tonic::Code::Unauthenticated);

        let mut admin = Guard::new(tokens(), Role::Operator, true, false);
        let refused = call(&mut admin, Some(plain), Some("Bearer op")).unwrap_err();
        assert!(refused.message().starts_with("this coordinator serves TLS only; use an https:// coordinator URL"), "{}", refused.message());
        assert!(call(&mut admin, None, Some("Bearer op")).is_err(), "no connection info is not TLS");
        assert!(call(&mut admin, Some(tls), Some("Bearer op")).is_ok());
        assert_eq!(call(&mut admin, Some(tls), Some("Bearer w")).unwrap_err().code(), tonic::Code::PermissionDenied);

        let mut mutual = Guard::new(tokens(), Role::Operator, true, true);
        let refused = call(&mut mutual, Some(tls), Some("Bearer op")).unwrap_err();
        assert!(refused.message().starts_with("this coordinator requires a client certificate (mutual TLS); pass --client-cert"), "{}", refused.message());
        assert!(call(&mut mutual, Some(tls_with_cert), Some("Bearer op")).is_ok());
        // The certificate is checked before the token, so a refusal never says whether a token was right.
        assert!(call(&mut mutual, Some(tls), Some("Bearer x")).unwrap_err().message().contains("client certificate"));
    }
}
