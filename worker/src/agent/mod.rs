//! The remote worker agent (`acufarm worker`): pulls jobs from one or more coordinators over gRPC
//! and runs them through the same executor as the embedded mode.
//!
//! The loop: register, lease a batch, download and decode its inputs, render it on a blocking
//! thread while the next batch is leased and fetched, upload each output to its staging key, and
//! report the batch in one `Complete` and one `Fail` call. A separate task heartbeats every held
//! lease; a job the coordinator no longer keeps is dropped. Coordinator restarts and database
//! outages are ridden out with backoff (rotating through the endpoints); reports are retried
//! until they are answered. SIGTERM or SIGINT stops leasing, finishes what is in hand and exits;
//! a second signal quits at once. Running out of GPU memory halves the batch size and renders the
//! same jobs again in smaller calls.

mod credentials;
mod held;
mod link;
mod plan;

pub use credentials::{ClientTls, Token, TokenSource, tls_failure};
pub use link::{Auth, error_chain, parse_endpoints};

use crate::executor::{self, Fetched, JobError, Roots, SceneCache, Staged};
use crate::pipeline::engine::{Pipeline, PipelineError, SamplerParams};
use crate::pipeline::runtime::Ep;
use acufarm_core::{FailureClass, JobSpec};
use acufarm_proto::{
    CompleteRequest, Completion, FailRequest, HeartbeatRequest, JobAttempt, JobFailure, LeaseRequest, LeaseResponse, Outcome, RegisterRequest, ReportOutcome,
    RunContext,
};
use acufarm_storage::Storage;
use held::{Held, JobKey};
use link::{CallError, Link, describe};
use plan::{Backoff, Pacer};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why the agent stopped; each message names the problem and the fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    #[error("no coordinator given; pass --coordinator http://host:7171 (several separated by commas) or set ACUFARM_COORDINATOR")]
    NoEndpoint,
    #[error("invalid coordinator URL `{url}`: {reason}; pass one like http://127.0.0.1:7171")]
    BadEndpoint { url: String, reason: String },
    #[error("no token given; pass --token-file FILE (or set ACUFARM_TOKEN_FILE) holding the coordinator's token")]
    NoToken,
    #[error("the token in {from} contains characters a request header cannot carry; put the coordinator's token there (printable ASCII, no spaces)")]
    BadToken { from: String },
    #[error("cannot read the token file {path} ({reason}); check --token-file / ACUFARM_TOKEN_FILE")]
    TokenFile { path: String, reason: String },
    #[error("cannot read {flag} {path} ({reason}); check the path")]
    TlsFile { flag: &'static str, path: String, reason: String },
    #[error("--client-cert and --client-key go together (ACUFARM_CLIENT_CERT and ACUFARM_CLIENT_KEY); give both or neither")]
    ClientCertPair,
    #[error("coordinator {endpoint} refused this worker: {reason}")]
    Unauthenticated { endpoint: String, reason: String },
    #[error("{0}")]
    Tls(String),
    #[error("coordinator {endpoint} refused to register this worker ({reason}); fix what it names and start the worker again")]
    RegisterRefused { endpoint: String, reason: String },
    #[error("the {what} stopped unexpectedly ({reason}); the jobs in hand go back to the queue when their leases expire, so start the worker again")]
    Crashed { what: &'static str, reason: String },
    #[error("interrupted again before the jobs in hand were finished; they go back to the queue when their leases expire")]
    Interrupted,
    #[error("cannot listen for SIGTERM and SIGINT ({0}); the worker needs them to stop cleanly")]
    Signals(String),
}

/// What the agent needs besides the loaded pipeline.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Coordinator URLs as returned by [`parse_endpoints`], tried in this order.
    pub coordinators: Vec<String>,
    /// Where the token comes from; it is sent as `authorization: Bearer <token>`.
    pub token: TokenSource,
    /// TLS settings for `https://` coordinators.
    pub tls: ClientTls,
    /// Worker name shown to operators (e.g. the host name).
    pub name: String,
    /// The machine's host name.
    pub hostname: String,
    /// Execution providers the sessions were opened with, in priority order.
    pub execution_providers: Vec<Ep>,
    /// Images per render call and jobs per lease (halved on out-of-memory, never below one).
    pub batch: usize,
}

/// Checks the token and TLS settings can be used, without connecting (so a bad one fails before
/// the bundle loads).
pub fn check_credentials(token: &TokenSource, tls: &ClientTls) -> Result<(), AgentError> {
    Token::load(token.clone())?;
    tls.check()
}

/// The machine's host name (`localhost` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The first GPU's name and memory from `nvidia-smi`, or nothing when it cannot tell.
fn detect_gpu() -> (String, u64) {
    let output = std::process::Command::new("nvidia-smi").args(["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]).output();
    let Some(output) = output.ok().filter(|o| o.status.success()) else {
        return (String::new(), 0);
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or_default();
    match line.rsplit_once(',') {
        Some((name, mib)) => (name.trim().to_string(), mib.trim().parse::<u64>().unwrap_or(0) * 1024 * 1024),
        None => (line.trim().to_string(), 0),
    }
}

/// Runs the agent until a signal drains it (`Ok`) or the worker must stop (`Err`). Install the
/// signal handlers with [`Shutdown::install`] before loading the pipeline, so a signal during the
/// load is a clean stop too.
///
/// Prints `acufarm worker: registered as <id> with <endpoint>` on stderr at each registration and
/// `acufarm worker: drained, exiting` when it stops after a signal.
pub async fn run(pipeline: Pipeline, options: AgentOptions, shutdown: Shutdown) -> Result<(), AgentError> {
    let auth = Auth::new(Token::load(options.token.clone())?);
    options.tls.check()?;
    // SIGHUP re-reads the token file at once (as the coordinator does its files) rather than
    // ending the worker, which is what it would do unhandled.
    if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let token = auth.0.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                if !token.reread() {
                    tracing::info!("SIGHUP: the token in use stays (its file is unchanged or unusable)");
                }
            }
        });
    }
    if options.coordinators.is_empty() {
        return Err(AgentError::NoEndpoint);
    }
    let bundle = pipeline.bundle();
    let (bundle_name, bundle_sha256) = (bundle.manifest.name.clone(), bundle.sha256.clone());
    let eps: Vec<String> = options.execution_providers.iter().map(ToString::to_string).collect();
    let (gpu, gpu_memory_bytes) = if options.execution_providers.iter().any(|ep| *ep != Ep::Cpu) { detect_gpu() } else { (String::new(), 0) };
    let batch = options.batch.max(1);
    let register = RegisterRequest {
        name: options.name.clone(),
        hostname: options.hostname.clone(),
        execution_providers: eps.clone(),
        gpu,
        gpu_memory_bytes,
        bundle_name: bundle_name.clone(),
        bundle_sha256: bundle_sha256.clone(),
        max_batch: u32::try_from(batch).unwrap_or(u32::MAX),
        version: env!("CARGO_PKG_VERSION").to_string(),
        worker_id: String::new(),
    };
    let link = Arc::new(Link::new(options.coordinators.clone(), auth, options.tls.clone(), register));
    let held = Arc::new(Held::default());
    let mut heartbeat = tokio::spawn(heartbeat_loop(link.clone(), held.clone()));

    let ctx =
        Ctx { link, held, shutdown: shutdown.clone(), bundle_name, bundle_sha256, execution_provider: eps.join(","), batch: Arc::new(AtomicUsize::new(batch)) };
    let mut renderer = Renderer { pipeline: Some(pipeline) };
    let mut fetcher = Fetcher::default();
    let result = tokio::select! {
        r = work(&ctx, &mut renderer, &mut fetcher) => r,
        r = &mut heartbeat => Err(match r {
            Ok(fatal) => fatal,
            Err(e) => AgentError::Crashed { what: "heartbeat task", reason: e.to_string() },
        }),
        _ = shutdown.aborted() => Err(AgentError::Interrupted),
    };
    heartbeat.abort();
    if result.is_ok() {
        eprintln!("acufarm worker: drained, exiting");
    }
    result
}

/// What the job loop shares between its parts.
struct Ctx {
    link: Arc<Link>,
    held: Arc<Held>,
    shutdown: Shutdown,
    bundle_name: String,
    bundle_sha256: String,
    /// The execution providers, recorded with every completion.
    execution_provider: String,
    /// The current batch size, shared by leasing and rendering.
    batch: Arc<AtomicUsize>,
}

impl Ctx {
    fn batch(&self) -> usize {
        self.batch.load(Ordering::Relaxed).max(1)
    }
}

/// The job loop: lease, then render each batch while the next one is leased and fetched, until
/// a signal asks to stop and nothing is left in hand.
async fn work(ctx: &Ctx, renderer: &mut Renderer, fetcher: &mut Fetcher) -> Result<(), AgentError> {
    let mut pending: Option<Batch> = None;
    loop {
        let batch = match pending.take() {
            Some(batch) => batch,
            None => match fetcher.next_batch(ctx).await? {
                Some(batch) => batch,
                None => return Ok(()),
            },
        };
        let (done, next) = tokio::join!(renderer.process(ctx, batch), fetcher.prefetch(ctx));
        done?;
        pending = next?;
    }
}

/// One leased job.
#[derive(Debug, Clone)]
struct Job {
    key: JobKey,
    sample_id: String,
    staging_key: String,
}

/// A job whose inputs are downloaded and decoded.
struct Ready {
    job: Job,
    spec: JobSpec,
    fetched: Fetched,
    params: SamplerParams,
    output: Storage,
}

/// One lease's jobs: those ready to render and those that already failed (bad spec or inputs).
#[derive(Default)]
struct Batch {
    ready: Vec<Ready>,
    failures: Vec<(Job, JobError)>,
}

/// Leases jobs and prepares their inputs; caches run contexts, storage roots and scene images.
#[derive(Default)]
struct Fetcher {
    runs: HashMap<i64, RunContext>,
    storages: HashMap<String, Storage>,
    scenes: HashMap<String, SceneCache>,
    refused: Option<Pacer>,
}

impl Fetcher {
    /// Leases until jobs arrive (backing off while the queue is empty) or a signal asks to stop.
    async fn next_batch(&mut self, ctx: &Ctx) -> Result<Option<Batch>, AgentError> {
        let mut idle = Backoff::idle();
        loop {
            if ctx.shutdown.is_draining() {
                return Ok(None);
            }
            let leased = tokio::select! {
                r = self.lease(ctx) => r?,
                _ = ctx.shutdown.draining() => return Ok(None),
            };
            if let Some(response) = leased {
                return Ok(Some(self.prepare(ctx, response).await));
            }
            tokio::select! {
                _ = idle.sleep() => {}
                _ = ctx.shutdown.draining() => return Ok(None),
            }
        }
    }

    /// One lease attempt for the batch after the current one, fetched while the current renders.
    async fn prefetch(&mut self, ctx: &Ctx) -> Result<Option<Batch>, AgentError> {
        if ctx.shutdown.is_draining() {
            return Ok(None);
        }
        let leased = tokio::select! {
            r = self.lease(ctx) => r?,
            _ = ctx.shutdown.draining() => return Ok(None),
        };
        match leased {
            Some(response) => Ok(Some(self.prepare(ctx, response).await)),
            None => Ok(None),
        }
    }

    /// Asks for up to one batch of jobs; `None` when there are none (or the coordinator refused).
    async fn lease(&mut self, ctx: &Ctx) -> Result<Option<LeaseResponse>, AgentError> {
        let max_jobs = u32::try_from(ctx.batch()).unwrap_or(u32::MAX);
        let sha = ctx.bundle_sha256.clone();
        let result = ctx
            .link
            .call("lease", |mut client, worker_id| {
                let request = LeaseRequest { worker_id, bundle_sha256: sha.clone(), max_jobs };
                async move { client.lease(request).await }
            })
            .await;
        let response = match result {
            Ok(response) => response,
            Err(CallError::Fatal(e)) => return Err(e),
            Err(CallError::Refused { endpoint, status }) => {
                if self.refused.get_or_insert_with(|| Pacer::new(Duration::from_secs(10))).ready(Instant::now()) {
                    tracing::warn!("coordinator {endpoint} refused to lease jobs ({}); asking again", describe(&status));
                }
                return Ok(None);
            }
        };
        if response.jobs.is_empty() {
            return Ok(None);
        }
        // Held from now on, so the heartbeat extends them while they wait and render.
        ctx.held.add(response.jobs.iter().map(|j| (j.job_id, j.attempt)));
        Ok(Some(response))
    }

    /// Reads each leased job's spec and downloads its inputs; what cannot be read fails here.
    async fn prepare(&mut self, ctx: &Ctx, response: LeaseResponse) -> Batch {
        let started = Instant::now();
        for run in response.runs {
            self.runs.insert(run.run_id, run);
        }
        let mut batch = Batch::default();
        for leased in response.jobs {
            let job = Job { key: (leased.job_id, leased.attempt), sample_id: leased.sample_id.clone(), staging_key: leased.staging_key.clone() };
            match self.prepare_one(&leased.spec_json, leased.run_id, &leased.sample_id).await {
                Ok((spec, fetched, params, output)) => batch.ready.push(Ready { job, spec, fetched, params, output }),
                Err(e) => batch.failures.push((job, e)),
            }
        }
        tracing::info!(
            jobs = batch.ready.len() + batch.failures.len(),
            unusable = batch.failures.len(),
            held = ctx.held.len(),
            seconds = started.elapsed().as_secs_f64(),
            "leased and fetched a batch"
        );
        batch
    }

    async fn prepare_one(&mut self, spec_json: &str, run_id: i64, sample_id: &str) -> Result<(JobSpec, Fetched, SamplerParams, Storage), JobError> {
        let spec = parse_spec(spec_json, sample_id)?;
        let params = executor::sampler_params(&spec);
        let run = self.runs.get(&run_id).cloned().ok_or_else(|| JobError {
            class: FailureClass::Retryable,
            message: format!("the coordinator leased job {sample_id} of run {run_id} without that run's storage locations"),
        })?;
        let input = self.storage(&run.input_url)?;
        let output = self.storage(&run.output_url)?;
        let scenes_root = self.storage(&run.scenes_url)?;
        let roots = Roots { input: &input, output: &output, scenes: &scenes_root };
        let scenes = self.scenes.entry(run.scenes_url.clone()).or_default();
        let fetched = executor::fetch(&spec, &roots, scenes).await?;
        Ok((spec, fetched, params, output))
    }

    /// The storage root at `url`, opened once.
    fn storage(&mut self, url: &str) -> Result<Storage, JobError> {
        if let Some(storage) = self.storages.get(url) {
            return Ok(storage.clone());
        }
        let storage = Storage::open(url)?;
        self.storages.insert(url.to_string(), storage.clone());
        Ok(storage)
    }
}

/// Reads a leased job's spec: a `JobSpec`, or `{"error": …}` for an image the coordinator could
/// not resolve, which fails permanently with that reason.
fn parse_spec(spec_json: &str, sample_id: &str) -> Result<JobSpec, JobError> {
    let unreadable =
        |e: serde_json::Error| JobError { class: FailureClass::Permanent, message: format!("job spec of {sample_id} cannot be read ({e}); resubmit the run") };
    let value: serde_json::Value = serde_json::from_str(spec_json).map_err(unreadable)?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        return Err(JobError { class: FailureClass::Permanent, message: error.to_string() });
    }
    serde_json::from_value(value).map_err(unreadable)
}

/// Owns the pipeline; renders on a blocking thread so heartbeats keep flowing.
struct Renderer {
    /// `None` only while a render runs on the blocking thread.
    pipeline: Option<Pipeline>,
}

impl Renderer {
    /// Renders a batch (jobs with equal settings and image size together), stages the outputs and
    /// reports the batch.
    async fn process(&mut self, ctx: &Ctx, batch: Batch) -> Result<(), AgentError> {
        let started = Instant::now();
        let Batch { ready, mut failures } = batch;
        let mut completions = Vec::new();
        let keys: Vec<(SamplerParams, (u32, u32))> = ready.iter().map(|r| (r.params, r.fetched.source.rgb.dimensions())).collect();
        let mut slots: Vec<Option<Ready>> = ready.into_iter().map(Some).collect();
        for group in plan::group_by(&keys) {
            let jobs: Vec<Ready> = group.iter().filter_map(|&i| slots[i].take()).collect();
            if let Some(params) = jobs.first().map(|r| r.params) {
                self.render_group(ctx, params, jobs, &mut completions, &mut failures).await?;
            }
        }
        let (rendered, unusable) = (completions.len(), failures.len());
        let (succeeded, failed) = report(ctx, completions, failures).await?;
        let lost = rendered + unusable - succeeded - failed;
        tracing::info!(succeeded, failed, lost, seconds = started.elapsed().as_secs_f64(), batch_size = ctx.batch(), "finished a batch");
        Ok(())
    }

    /// Renders jobs sharing settings and size in calls of the current batch size; a call that
    /// runs out of memory halves the batch size and its jobs are rendered again in smaller calls.
    async fn render_group(
        &mut self,
        ctx: &Ctx,
        params: SamplerParams,
        jobs: Vec<Ready>,
        completions: &mut Vec<(Job, Staged)>,
        failures: &mut Vec<(Job, JobError)>,
    ) -> Result<(), AgentError> {
        let mut calls = plan::Calls::new(jobs, ctx.batch());
        while let Some(call) = calls.next_call(ctx.batch()) {
            // A job whose lease was lost meanwhile is not worth rendering.
            let call: Vec<Ready> = call.into_iter().filter(|r| !ctx.held.is_lost(r.job.key)).collect();
            if call.is_empty() {
                continue;
            }
            let size = call.len();
            let (call, result) = self.render(params, call).await?;
            let error = match result {
                Ok(rendered) => {
                    let mut images = rendered.images.iter().zip(rendered.qa);
                    for ready in call {
                        let outcome = match images.next() {
                            Some((image, Ok(qa))) => {
                                executor::stage(&ready.spec, &ready.fetched, image, rendered.timing, qa, &ready.job.staging_key, &ready.output).await
                            }
                            Some((_, Err(qa_failure))) => Err(qa_failure),
                            None => {
                                Err(JobError { class: FailureClass::Retryable, message: format!("the pipeline returned no image for {}", ready.job.sample_id) })
                            }
                        };
                        match outcome {
                            Ok(staged) => completions.push((ready.job, staged)),
                            Err(e) => failures.push((ready.job, e)),
                        }
                    }
                    continue;
                }
                Err(e) => e,
            };
            let call = if matches!(error, PipelineError::OutOfMemory { .. }) {
                let was = ctx.batch();
                match calls.out_of_memory(call, was) {
                    Ok(now) => {
                        ctx.batch.store(now, Ordering::Relaxed);
                        tracing::warn!("{error}; batch size {was} → {now}, rendering these {size} jobs again in smaller calls");
                        continue;
                    }
                    // A single job that does not fit fails retryably (maybe a bigger GPU takes it).
                    Err(call) => call,
                }
            } else {
                call
            };
            let error = JobError::from(error);
            failures.extend(call.into_iter().map(|r| (r.job, error.clone())));
        }
        Ok(())
    }

    /// One pipeline call on a blocking thread; the jobs travel there and back with the pipeline.
    async fn render(&mut self, params: SamplerParams, chunk: Vec<Ready>) -> Result<(Vec<Ready>, Result<executor::RenderedBatch, PipelineError>), AgentError> {
        let mut pipeline =
            self.pipeline.take().ok_or_else(|| AgentError::Crashed { what: "render thread", reason: "an earlier render lost the pipeline".into() })?;
        let handle = tokio::task::spawn_blocking(move || {
            let result = {
                let jobs: Vec<(&JobSpec, &Fetched)> = chunk.iter().map(|r| (&r.spec, &r.fetched)).collect();
                executor::render(&mut pipeline, &params, &jobs)
            };
            (pipeline, chunk, result)
        });
        let (pipeline, chunk, result) = handle.await.map_err(|e| AgentError::Crashed { what: "render thread", reason: e.to_string() })?;
        self.pipeline = Some(pipeline);
        Ok((chunk, result))
    }
}

/// Reports a batch: one `Complete` and one `Fail` call, each retried until answered. Jobs whose
/// lease was lost are left out. Returns how many completions and failures were reported.
async fn report(ctx: &Ctx, completions: Vec<(Job, Staged)>, failures: Vec<(Job, JobError)>) -> Result<(usize, usize), AgentError> {
    let completions = reportable(ctx, completions);
    let failures = reportable(ctx, failures);
    let reported = (completions.len(), failures.len());
    if !completions.is_empty() {
        let keys: Vec<JobKey> = completions.iter().map(|(job, _)| job.key).collect();
        let request = CompleteRequest {
            worker_id: String::new(),
            bundle_name: ctx.bundle_name.clone(),
            completions: completions
                .iter()
                .map(|(job, staged)| Completion {
                    job_id: job.key.0,
                    attempt: job.key.1,
                    staging_key: staged.staging_key.clone(),
                    sha256: staged.sha256.clone(),
                    source_sha256: staged.source_sha256.clone(),
                    timings: staged.timings.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    execution_provider: ctx.execution_provider.clone(),
                    qa_json: if staged.qa.is_empty() { String::new() } else { serde_json::to_string(&staged.qa).unwrap_or_default() },
                })
                .collect(),
        };
        let result = ctx
            .link
            .call("complete", |mut client, worker_id| {
                let request = CompleteRequest { worker_id, ..request.clone() };
                async move { client.complete(request).await }
            })
            .await;
        match result {
            Ok(response) => log_outcomes("completion", &response.outcomes),
            Err(CallError::Fatal(e)) => return Err(e),
            Err(CallError::Refused { endpoint, status }) => {
                tracing::warn!(
                    "coordinator {endpoint} refused the completion of {} jobs ({}); they are queued again when their leases expire",
                    keys.len(),
                    describe(&status)
                );
            }
        }
        ctx.held.release(&keys);
    }

    if !failures.is_empty() {
        let keys: Vec<JobKey> = failures.iter().map(|(job, _)| job.key).collect();
        for (job, e) in &failures {
            tracing::warn!(job = job.key.0, attempt = job.key.1, sample = %job.sample_id, class = e.class.as_str(), "{}", e.message);
        }
        let request = FailRequest {
            worker_id: String::new(),
            failures: failures
                .iter()
                .map(|(job, e)| JobFailure {
                    job_id: job.key.0,
                    attempt: job.key.1,
                    class: acufarm_proto::FailureClass::from(e.class) as i32,
                    message: e.message.clone(),
                })
                .collect(),
        };
        let result = ctx
            .link
            .call("fail", |mut client, worker_id| {
                let request = FailRequest { worker_id, ..request.clone() };
                async move { client.fail(request).await }
            })
            .await;
        match result {
            Ok(response) => log_outcomes("failure", &response.outcomes),
            Err(CallError::Fatal(e)) => return Err(e),
            Err(CallError::Refused { endpoint, status }) => {
                tracing::warn!(
                    "coordinator {endpoint} refused the failure report of {} jobs ({}); they are queued again when their leases expire",
                    keys.len(),
                    describe(&status)
                );
            }
        }
        ctx.held.release(&keys);
    }
    Ok(reported)
}

/// Keeps the jobs whose lease is still held (and marks them as being reported).
fn reportable<T>(ctx: &Ctx, items: Vec<(Job, T)>) -> Vec<(Job, T)> {
    let keys: Vec<JobKey> = items.iter().map(|(job, _)| job.key).collect();
    let allowed = ctx.held.begin_report(&keys);
    let (keep, drop): (Vec<_>, Vec<_>) = items.into_iter().zip(allowed).partition(|(_, ok)| *ok);
    if !drop.is_empty() {
        tracing::warn!(
            "not reporting {} finished jobs whose lease was lost (the job was cancelled, or is queued again for whoever leases it next)",
            drop.len()
        );
    }
    keep.into_iter().map(|(item, _)| item).collect()
}

fn log_outcomes(what: &str, outcomes: &[ReportOutcome]) {
    for o in outcomes {
        if o.outcome == Outcome::Stale as i32 {
            tracing::warn!(job = o.job_id, attempt = o.attempt, "the coordinator ignored a stale {what} report: {}", o.detail);
        }
    }
}

/// Heartbeats every held lease at the coordinator's period; returns only when the worker must stop.
async fn heartbeat_loop(link: Arc<Link>, held: Arc<Held>) -> AgentError {
    // The period is the coordinator's: wait for the registration that tells it before the first sleep.
    if let Err(e) = link.connection().await {
        return e;
    }
    loop {
        tokio::time::sleep(link.heartbeat_interval()).await;
        let result = link
            .call("heartbeat", |mut client, worker_id| {
                let sent = held.snapshot();
                let request = HeartbeatRequest { worker_id, held: sent.iter().map(|&(job_id, attempt)| JobAttempt { job_id, attempt }).collect() };
                async move { client.heartbeat(request).await.map(|r| tonic::Response::new((sent, r.into_inner()))) }
            })
            .await;
        match result {
            Ok((sent, response)) => {
                if response.register_again {
                    tracing::info!("the coordinator lost this worker's presence record; registering again");
                    link.register_again().await;
                    if let Err(e) = link.connection().await {
                        return e;
                    }
                }
                let kept: Vec<JobKey> = response.kept.iter().map(|k| (k.job_id, k.attempt)).collect();
                for (job, attempt) in held.apply_heartbeat(&sent, &kept) {
                    tracing::warn!(job, attempt, "the coordinator no longer holds this job's lease for this worker; dropping it");
                }
            }
            Err(CallError::Fatal(e)) => return e,
            Err(CallError::Refused { endpoint, status }) => tracing::warn!("coordinator {endpoint} refused a heartbeat ({})", describe(&status)),
        }
    }
}

/// The stop state set by SIGTERM and SIGINT: running, draining (first signal: finish the jobs in
/// hand, lease no more), aborted (second signal: quit at once).
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<u8>);

const DRAINING: u8 = 1;
const ABORTED: u8 = 2;

impl Shutdown {
    /// Listens for SIGTERM and SIGINT (inside a Tokio runtime).
    pub fn install() -> Result<Self, AgentError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| AgentError::Signals(e.to_string()))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| AgentError::Signals(e.to_string()))?;
        let (tx, rx) = watch::channel(0u8);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if *tx.borrow() == 0 {
                    eprintln!("acufarm worker: stopping: finishing the jobs in hand and leasing no more (signal again to quit at once)");
                    tx.send_replace(DRAINING);
                } else {
                    tx.send_replace(ABORTED);
                }
            }
        });
        Ok(Self(rx))
    }

    fn is_draining(&self) -> bool {
        *self.0.borrow() >= DRAINING
    }

    async fn reached(&self, level: u8) {
        let mut rx = self.0.clone();
        if rx.wait_for(|s| *s >= level).await.is_err() {
            // The signal task is gone: no signal can arrive any more.
            std::future::pending::<()>().await;
        }
    }

    async fn draining(&self) {
        self.reached(DRAINING).await
    }

    async fn aborted(&self) {
        self.reached(ABORTED).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unresolved_job_fails_permanently_with_its_reason() {
        let e = parse_spec(r#"{"error": "images/x.png: bad sample id", "source": "images/x.png"}"#, "images/x.png").unwrap_err();
        assert_eq!(e, JobError { class: FailureClass::Permanent, message: "images/x.png: bad sample id".into() });
        let e = parse_spec("{not json", "s1").unwrap_err();
        assert_eq!(e.class, FailureClass::Permanent);
        assert!(e.message.starts_with("job spec of s1 cannot be read"), "{}", e.message);
        let e = parse_spec(r#"{"sample_id": "s1"}"#, "s1").unwrap_err();
        assert!(e.message.contains("resubmit the run"), "{}", e.message);
    }

    #[test]
    fn errors_a_user_causes_name_the_fix() {
        let e =
            AgentError::Unauthenticated { endpoint: "http://127.0.0.1:7171".into(), reason: "the coordinator refused the token; pass …".into() }.to_string();
        assert_eq!(e, "coordinator http://127.0.0.1:7171 refused this worker: the coordinator refused the token; pass …");
        let none = check_credentials(&TokenSource::Value(String::new()), &ClientTls::default()).unwrap_err().to_string();
        assert!(none.contains("--token-file") && none.contains("ACUFARM_TOKEN_FILE"), "{none}");
        assert!(check_credentials(&TokenSource::Value("t".into()), &ClientTls::default()).is_ok());
    }

    #[test]
    fn the_host_name_is_never_empty() {
        assert!(!hostname().is_empty());
    }
}
