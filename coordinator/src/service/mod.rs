//! The coordinator's gRPC service: the `Worker` calls GPU workers make and the `Admin` calls the
//! CLI makes, over one [`Store`] (PostgreSQL in the farm), the object stores of each run, and
//! Redis for presence, live events and rates. The service keeps no job state of its own: a
//! restarted coordinator serves the same workers and runs from the database.

mod admin;
pub use admin::spec_files;
mod finish;
mod worker;

use crate::config::Config;
use crate::events::Events;
use crate::retry::RetryPolicy;
use crate::store::{RunInfo, Store};
use crate::StoreError;
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
    runs: tokio::sync::RwLock<HashMap<RunId, Arc<RunContext>>>,
    /// Runs that changed since the last finish check.
    touched: Mutex<HashSet<RunId>>,
    /// Runs whose manifest was written for their current (finished) counts.
    finished: Mutex<HashMap<RunId, (u64, u64)>>,
    /// The QA section of each finished run's manifest summary (JSON, empty without `[qa]`), for
    /// the counts it was written at, so `Status` does not read the summary file on every call.
    qa_summaries: Mutex<HashMap<RunId, ((u64, u64), String)>>,
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

/// Checks the bearer token of every call in constant time.
#[derive(Clone)]
pub struct TokenCheck {
    expected: Arc<String>,
}

impl TokenCheck {
    pub fn new(token: &str) -> Self {
        Self { expected: Arc::new(format!("Bearer {token}")) }
    }

    fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.expected.as_bytes();
        let mut difference = expected.len() ^ presented.len();
        for (index, byte) in expected.iter().enumerate() {
            difference |= usize::from(byte ^ presented.get(index).copied().unwrap_or(0));
        }
        difference == 0
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match request.metadata().get(AUTHORIZATION) {
            Some(value) if self.matches(value.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated(
                "the coordinator refused the token; set ACUFARM_TOKEN (or --token) to the coordinator's token",
            )),
            None => Err(Status::unauthenticated(
                "the call carried no token; set ACUFARM_TOKEN (or --token) to the coordinator's token",
            )),
        }
    }
}

impl<S: Store> Coordinator<S> {
    pub fn new(store: S, config: Config) -> Result<Self, String> {
        let events = Events::new(config.redis_url.expose(), &config.redis_prefix, Duration::from_secs(config.presence_ttl_seconds))?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                config,
                events,
                runs: tokio::sync::RwLock::new(HashMap::new()),
                touched: Mutex::new(HashSet::new()),
                finished: Mutex::new(HashMap::new()),
                qa_summaries: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Serves both gRPC services on `listener` and runs the reaper until `shutdown` resolves.
    pub async fn serve(self, listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()> + Send) -> Result<(), tonic::transport::Error> {
        let check = TokenCheck::new(self.inner.config.token.expose());
        let worker = InterceptedService::new(
            WorkerServer::new(worker::WorkerService(self.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES),
            check.clone(),
        );
        let admin = InterceptedService::new(
            AdminServer::new(admin::AdminService(self.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            check,
        );
        let reaper = tokio::spawn(self.clone().reaper());
        // TCP_NODELAY on the accepted sockets themselves: the builder's `tcp_nodelay` only reaches
        // sockets tonic binds, and with Nagle on, small replies waited for delayed ACKs (~40 ms
        // per call).
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let result = tonic::transport::Server::builder()
            .add_service(worker)
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        reaper.abort();
        result
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

    pub(crate) fn touch(&self, run: RunId) {
        self.inner.touched.lock().unwrap_or_else(|p| p.into_inner()).insert(run);
    }

    /// The files of a run, cached.
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

pub(crate) fn unix_ms(time: chrono::DateTime<chrono::Utc>) -> i64 {
    time.timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn call(check: &mut TokenCheck, header: Option<&str>) -> Result<(), Status> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request.metadata_mut().insert(AUTHORIZATION, value.parse().unwrap());
        }
        check.call(request).map(|_| ())
    }

    #[test]
    fn token_check_accepts_only_the_exact_bearer_token() {
        let mut check = TokenCheck::new("s3cret");
        assert!(call(&mut check, Some("Bearer s3cret")).is_ok());
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "s3cret", "Bearer S3CRET", ""] {
            let error = call(&mut check, Some(wrong)).unwrap_err();
            assert_eq!(error.code(), tonic::Code::Unauthenticated, "{wrong}");
            assert!(error.message().contains("refused the token") && !error.message().contains("s3cret"), "{}", error.message());
        }
        assert!(call(&mut check, None).unwrap_err().message().contains("carried no token"));
    }
}
