//! The one job loop, shared by the remote agent (`acufarm worker`, jobs over gRPC) and embedded
//! mode (`acufarm run`, jobs straight from the SQLite store). Each provides a [`JobSource`]: lease,
//! heartbeat, complete, fail. Everything else exists once, here: batching, prefetching the next
//! batch while one renders, dropping jobs whose lease was lost, QA retries (inside the executor),
//! error classification and the out-of-memory halving of the batch size.
//!
//! The loop: lease a batch, download and decode its inputs, render it on a blocking thread while
//! the next batch is leased and fetched, upload each output to its staging key, and report the
//! batch (one `complete` and one `fail`). A separate task heartbeats every held lease; a job the
//! source no longer keeps is dropped. A [`Shutdown`] drains the loop: lease no more, finish what
//! is in hand.

mod held;
pub mod logtail;
pub(crate) mod plan;
mod render;
mod shutdown;

use held::Held;
pub use held::JobKey;
pub use render::Render;
pub use shutdown::Shutdown;

use crate::executor::{self, Fetched, JobError, Roots, SceneCache, Staged};
use crate::pipeline::engine::SamplerParams;
use acufarm_core::{FailureClass, JobSpec};
use acufarm_storage::Storage;
use plan::Backoff;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Why the loop itself stopped (a source's own errors travel as its `Error`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Stopped {
    #[error("the {what} stopped unexpectedly ({reason}); the jobs in hand go back to the queue when their leases expire, so start again")]
    Crashed { what: &'static str, reason: String },
    #[error("interrupted again before the jobs in hand were finished; they go back to the queue when their leases expire")]
    Interrupted,
}

/// One leased job attempt as the loop tracks it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The run the job belongs to (its id in the store).
    pub run: i64,
    pub key: JobKey,
    pub sample_id: String,
    /// Where its output is uploaded before `complete`.
    pub staging_key: String,
    /// The job's own span, which every step's hangs under: its fields (worker, run, job,
    /// attempt, sample) are on every log line of the job, and with trace export it continues the
    /// trace the coordinator's lease started.
    pub trace: tracing::Span,
}

impl Job {
    /// A job leased by `worker`; `traceparent` is the lease's trace context (empty for none).
    pub fn new(run: i64, key: JobKey, sample_id: String, staging_key: String, worker: &str, traceparent: &str) -> Self {
        let trace = tracing::info_span!(parent: None, "job", worker = %worker, run, job = key.0, attempt = key.1, sample = %sample_id);
        acufarm_proto::trace::set_parent(&trace, traceparent);
        Self { run, key, sample_id, staging_key, trace }
    }

    /// A span for one step of this job (`download`, `upload`, `complete`, `fail`), named after it
    /// in traces.
    pub fn span(&self, step: &'static str) -> tracing::Span {
        tracing::info_span!(parent: &self.trace, "step", step, otel.name = step)
    }
}

/// A run's storage roots, shared by the jobs of that run in a lease.
#[derive(Debug, Clone)]
pub struct RunRoots {
    pub input: Storage,
    pub output: Storage,
    pub scenes: Storage,
    /// Identifies the scene root, so decoded scene images are cached once per root.
    pub scenes_url: String,
}

/// A job as a source hands it out: the spec still as text (parsed by the loop, so an unreadable
/// one fails the same way everywhere) and its run's roots, or why they are unknown.
pub struct LeasedJob {
    pub job: Job,
    pub spec_json: String,
    pub roots: Result<Arc<RunRoots>, JobError>,
}

/// What the loop does when a lease came back empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Wait (with backoff) and lease again.
    Wait,
    /// Stop: the source has no more work for this loop (embedded: the run is done, or this worker
    /// is quarantined on it).
    Stop,
}

/// Where jobs come from and where their results go.
pub trait JobSource: Send + Sync + 'static {
    /// A source's own fatal error; the loop's own stops convert into it.
    type Error: From<Stopped> + Send + 'static;

    /// Up to `max` jobs; none when nothing is ready now (or the lease was refused, which the
    /// source logs).
    fn lease(&self, max: usize) -> impl Future<Output = Result<Vec<LeasedJob>, Self::Error>> + Send;

    /// Asked after an empty lease.
    fn idle(&self) -> impl Future<Output = Result<Idle, Self::Error>> + Send;

    /// How long to wait between heartbeats (may wait until the source knows).
    fn heartbeat_interval(&self) -> impl Future<Output = Result<Duration, Self::Error>> + Send;

    /// Extends the leases of `held`; returns those the source still keeps, or `None` when it did
    /// not answer (all stay held).
    fn heartbeat(&self, held: &[JobKey]) -> impl Future<Output = Result<Option<Vec<JobKey>>, Self::Error>> + Send;

    /// Reports staged outputs (the source commits them).
    fn complete(&self, jobs: Vec<(Job, Staged)>) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Reports jobs that failed, each with its class and reason.
    fn fail(&self, jobs: Vec<(Job, JobError)>) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// How one loop runs.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Worker name for logs.
    pub worker: String,
    /// Images per render call and jobs per lease; halved on out-of-memory, never below one.
    pub batch: usize,
}

/// Runs the loop until the source says stop or a shutdown drains it (`Ok`), or it must stop
/// (`Err`). Returns the batch size it ended with (smaller than asked after running out of memory).
pub async fn run<S: JobSource, R: Render>(source: Arc<S>, renderer: R, options: LoopOptions, shutdown: Shutdown) -> Result<usize, S::Error> {
    let held = Arc::new(Held::default());
    let ctx = Ctx { source: source.clone(), held: held.clone(), shutdown: shutdown.clone(), batch: Arc::new(AtomicUsize::new(options.batch.max(1))) };
    let mut heartbeat = tokio::spawn(heartbeat_loop(source, held));
    let mut renderer = render::Renderer::new(renderer);
    let mut fetcher = Fetcher::default();
    let span = tracing::info_span!("worker", worker = %options.worker);
    let result = tokio::select! {
        r = tracing::Instrument::instrument(work(&ctx, &mut renderer, &mut fetcher), span) => r,
        r = &mut heartbeat => Err(match r {
            Ok(Err(fatal)) => fatal,
            Ok(Ok(())) => S::Error::from(Stopped::Crashed { what: "heartbeat task", reason: "it returned".into() }),
            Err(e) => S::Error::from(Stopped::Crashed { what: "heartbeat task", reason: e.to_string() }),
        }),
        _ = shutdown.aborted() => Err(S::Error::from(Stopped::Interrupted)),
    };
    heartbeat.abort();
    result.map(|()| ctx.batch())
}

/// How long a drain waits for the answer of a lease call that was in flight when it began.
const LEASE_IN_FLIGHT: Duration = Duration::from_secs(10);

/// What the loop's parts share.
struct Ctx<S> {
    source: Arc<S>,
    held: Arc<Held>,
    shutdown: Shutdown,
    /// The current batch size, shared by leasing and rendering.
    batch: Arc<AtomicUsize>,
}

impl<S> Ctx<S> {
    fn batch(&self) -> usize {
        self.batch.load(Ordering::Relaxed).max(1)
    }
}

/// Lease, then render each batch while the next one is leased and fetched, until the source has
/// nothing more or a shutdown asks to stop, and nothing is left in hand.
async fn work<S: JobSource, R: Render>(ctx: &Ctx<S>, renderer: &mut render::Renderer<R>, fetcher: &mut Fetcher) -> Result<(), S::Error> {
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

/// A job whose inputs are downloaded and decoded.
pub(crate) struct Ready {
    job: Job,
    spec: JobSpec,
    fetched: Fetched,
    params: SamplerParams,
    output: Storage,
}

/// One lease's jobs: those ready to render and those that already failed (bad spec or inputs).
#[derive(Default)]
pub(crate) struct Batch {
    ready: Vec<Ready>,
    failures: Vec<(Job, JobError)>,
}

/// Leases jobs and prepares their inputs; caches decoded scene images per scene root.
#[derive(Default)]
struct Fetcher {
    scenes: HashMap<String, SceneCache>,
}

impl Fetcher {
    /// Leases until jobs arrive (backing off while none are ready) or the loop should stop.
    async fn next_batch<S: JobSource>(&mut self, ctx: &Ctx<S>) -> Result<Option<Batch>, S::Error> {
        let mut idle = Backoff::idle();
        loop {
            if let Some(batch) = self.prefetch(ctx).await? {
                return Ok(Some(batch));
            }
            if ctx.shutdown.is_draining() || ctx.source.idle().await? == Idle::Stop {
                return Ok(None);
            }
            tokio::select! {
                _ = idle.sleep() => {}
                _ = ctx.shutdown.draining() => return Ok(None),
            }
        }
    }

    /// One lease attempt (the batch after the current one is fetched while the current renders).
    async fn prefetch<S: JobSource>(&mut self, ctx: &Ctx<S>) -> Result<Option<Batch>, S::Error> {
        if ctx.shutdown.is_draining() {
            return Ok(None);
        }
        let lease = ctx.source.lease(ctx.batch());
        tokio::pin!(lease);
        let leased = tokio::select! {
            r = &mut lease => r?,
            // A lease call already sent may have been granted: its answer is awaited (briefly, in
            // case the coordinator is gone), so those jobs are rendered with the rest in hand
            // instead of waiting out their lease on the coordinator.
            _ = ctx.shutdown.draining() => match tokio::time::timeout(LEASE_IN_FLIGHT, &mut lease).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            },
        };
        if leased.is_empty() {
            return Ok(None);
        }
        // Held from now on, so the heartbeat extends them while they wait and render.
        ctx.held.add(leased.iter().map(|leased| leased.job.key));
        Ok(Some(self.prepare(ctx, leased).await))
    }

    /// Reads each leased job's spec and downloads its inputs; what cannot be read fails here.
    async fn prepare<S>(&mut self, ctx: &Ctx<S>, leased: Vec<LeasedJob>) -> Batch {
        let started = Instant::now();
        let mut batch = Batch::default();
        for LeasedJob { job, spec_json, roots } in leased {
            let span = job.span("download");
            match tracing::Instrument::instrument(self.prepare_one(&spec_json, &job.sample_id, roots), span).await {
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

    async fn prepare_one(
        &mut self,
        spec_json: &str,
        sample_id: &str,
        roots: Result<Arc<RunRoots>, JobError>,
    ) -> Result<(JobSpec, Fetched, SamplerParams, Storage), JobError> {
        let spec = parse_spec(spec_json, sample_id)?;
        let params = executor::sampler_params(&spec);
        let run = roots?;
        let roots = Roots { input: &run.input, output: &run.output, scenes: &run.scenes };
        let scenes = self.scenes.entry(run.scenes_url.clone()).or_default();
        let fetched = executor::fetch(&spec, &roots, scenes).await?;
        Ok((spec, fetched, params, run.output.clone()))
    }
}

/// Reads a leased job's spec: a `JobSpec`, or `{"error": …}` for an image the coordinator could
/// not resolve, which fails permanently with that reason.
pub fn parse_spec(spec_json: &str, sample_id: &str) -> Result<JobSpec, JobError> {
    let unreadable = |e: serde_json::Error| JobError::new(FailureClass::Permanent, format!("job spec of {sample_id} cannot be read ({e}); resubmit the run"));
    let value: serde_json::Value = serde_json::from_str(spec_json).map_err(unreadable)?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        return Err(JobError::new(FailureClass::Permanent, error.to_string()));
    }
    serde_json::from_value(value).map_err(unreadable)
}

/// Reports a batch: one `complete` and one `fail`. Jobs whose lease was lost are left out.
/// Returns how many completions and failures were reported.
async fn report<S: JobSource>(ctx: &Ctx<S>, completions: Vec<(Job, Staged)>, failures: Vec<(Job, JobError)>) -> Result<(usize, usize), S::Error> {
    let completions = reportable(ctx, completions);
    let failures = reportable(ctx, failures);
    let reported = (completions.len(), failures.len());
    if !completions.is_empty() {
        let keys: Vec<JobKey> = completions.iter().map(|(job, _)| job.key).collect();
        for key in &keys {
            logtail::forget(key.0);
        }
        ctx.source.complete(completions).await?;
        ctx.held.release(&keys);
    }
    if !failures.is_empty() {
        let keys: Vec<JobKey> = failures.iter().map(|(job, _)| job.key).collect();
        let mut failures = failures;
        for (job, e) in &mut failures {
            job.span("fail").in_scope(|| tracing::warn!(class = e.class.as_str(), "{}", e.message));
            e.log = logtail::take(job.key.0);
        }
        ctx.source.fail(failures).await?;
        ctx.held.release(&keys);
    }
    Ok(reported)
}

/// Keeps the jobs whose lease is still held (and marks them as being reported).
fn reportable<S, T>(ctx: &Ctx<S>, items: Vec<(Job, T)>) -> Vec<(Job, T)> {
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

/// Heartbeats every held lease at the source's period; returns only when the loop must stop.
async fn heartbeat_loop<S: JobSource>(source: Arc<S>, held: Arc<Held>) -> Result<(), S::Error> {
    loop {
        tokio::time::sleep(source.heartbeat_interval().await?).await;
        // Sent even with nothing held: for the agent it also says the worker is alive.
        let sent = held.snapshot();
        if let Some(kept) = source.heartbeat(&sent).await? {
            for (job, attempt) in held.apply_heartbeat(&sent, &kept) {
                tracing::warn!(job, attempt, "the lease of this job is no longer held by this worker; dropping it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unresolved_job_fails_permanently_with_its_reason() {
        let e = parse_spec(r#"{"error": "images/x.png: bad sample id", "source": "images/x.png"}"#, "images/x.png").unwrap_err();
        assert_eq!(e, JobError::new(FailureClass::Permanent, "images/x.png: bad sample id"));
        let e = parse_spec("{not json", "s1").unwrap_err();
        assert_eq!(e.class, FailureClass::Permanent);
        assert!(e.message.starts_with("job spec of s1 cannot be read"), "{}", e.message);
        let e = parse_spec(r#"{"sample_id": "s1"}"#, "s1").unwrap_err();
        assert!(e.message.contains("resubmit the run"), "{}", e.message);
    }
}
