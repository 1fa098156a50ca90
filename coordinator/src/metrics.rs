//! Prometheus metrics (`/metrics` on the HTTP server), in the OpenMetrics text format.
//!
//! - `acufarm_jobs{run,state}`: jobs of each run by state (a gauge, read from the store at
//!   scrape time); a finished run's series stay for `metrics_keep_finished_seconds` after its last
//!   change, then go.
//! - `acufarm_queue_depth{bundle}`: queued + leased jobs of active runs per bundle (the spec's
//!   `run.bundle`, or the first 12 hex digits of the bundle sha256): the autoscaling signal.
//! - `acufarm_jobs_completed_total`, `acufarm_job_failures_total{class}`: reports the store
//!   accepted (a retryable failure that is retried counts too).
//! - `acufarm_lease_seconds`: how long a Lease call took, a histogram.
//! - `acufarm_worker_images_per_second{worker}`: completions through this coordinator over the
//!   last minute (replicas each export their share: sum by worker); `acufarm_workers{state}`: live
//!   workers from Redis presence, busy (holding jobs) or idle.
//! - `acufarm_stage_seconds{stage,bundle}`: a job's seconds per stage (download, encode, sample,
//!   decode, qa, upload from the worker's report; commit measured here), a histogram.
//!
//! No job or attempt labels: the series stay bounded by runs × states.

use crate::store::{RunInfo, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunStateLabels {
    run: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BundleLabels {
    bundle: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerStateLabels {
    state: String,
}

/// The window of the per-worker images/s gauge.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
    bundle: String,
}

/// The stages of a job as metrics name them, from the timing keys of a completion (the worker's
/// `fetch` is the download); `commit` is the coordinator's own.
const STAGES: &[(&str, &str)] =
    &[("fetch", "download"), ("render/encode", "encode"), ("render/sample", "sample"), ("render/decode", "decode"), ("qa", "qa"), ("upload", "upload")];

/// Drops a worker's completions older than the rate window.
fn prune(events: &mut std::collections::VecDeque<(std::time::Instant, u64)>, now: std::time::Instant) {
    while events.front().is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW) {
        events.pop_front();
    }
}

fn stage_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
}

impl Metrics {
    /// Per-worker images/s over the last minute (a worker gone quiet for a minute drops out), and
    /// live workers by state.
    fn refresh_workers(&self, live: Option<Vec<crate::events::Presence>>) {
        let now = std::time::Instant::now();
        let mut done = self.done_by.lock().unwrap_or_else(|p| p.into_inner());
        done.retain(|_, events| {
            prune(events, now);
            !events.is_empty()
        });
        self.worker_rate.clear();
        for (worker, events) in done.iter() {
            let images: u64 = events.iter().map(|(_, n)| n).sum();
            self.worker_rate.get_or_create(&WorkerLabels { worker: worker.clone() }).set(images as f64 / RATE_WINDOW.as_secs_f64());
        }
        self.workers.clear();
        if let Some(live) = live {
            let busy = live.iter().filter(|w| w.jobs_held > 0).count() as i64;
            self.workers.get_or_create(&WorkerStateLabels { state: "busy".into() }).set(busy);
            self.workers.get_or_create(&WorkerStateLabels { state: "idle".into() }).set(live.len() as i64 - busy);
        }
    }
}

/// A run's bundle as metrics name it: the spec's `run.bundle`, else the first 12 hex digits of
/// the bundle's sha256.
pub fn bundle_label(run: &RunInfo) -> String {
    let named = toml::from_str::<toml::Table>(&run.spec)
        .ok()
        .and_then(|spec| spec.get("run")?.get("bundle")?.as_str().map(str::to_string))
        .filter(|name| !name.is_empty());
    named.unwrap_or_else(|| run.bundle_sha256.chars().take(12).collect())
}

/// The coordinator's metrics; counters and histograms are fed by the gRPC service, gauges are
/// refreshed from the store when scraped.
pub struct Metrics {
    registry: Registry,
    jobs: Family<RunStateLabels, Gauge>,
    queue_depth: Family<BundleLabels, Gauge>,
    completed: Counter,
    failures: Family<ClassLabels, Counter>,
    lease_seconds: Histogram,
    stage_seconds: Family<StageLabels, Histogram>,
    worker_rate: Family<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    workers: Family<WorkerStateLabels, Gauge>,
    /// Completions this coordinator accepted per worker name, for the images/s gauge.
    done_by: std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<(std::time::Instant, u64)>>>,
    /// The same per run.
    done_in: std::sync::Mutex<std::collections::HashMap<acufarm_core::RunId, std::collections::VecDeque<(std::time::Instant, u64)>>>,
    /// One scrape at a time: the gauges are cleared and refilled for each.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let jobs = Family::<RunStateLabels, Gauge>::default();
        registry.register("acufarm_jobs", "Jobs of each run by state", jobs.clone());
        let queue_depth = Family::<BundleLabels, Gauge>::default();
        registry.register("acufarm_queue_depth", "Queued and leased jobs of active runs, per bundle", queue_depth.clone());
        let completed = Counter::default();
        registry.register("acufarm_jobs_completed", "Job completions the store accepted", completed.clone());
        let failures = Family::<ClassLabels, Counter>::default();
        registry.register("acufarm_job_failures", "Job failure reports the store accepted, by failure class", failures.clone());
        let lease_seconds = Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        registry.register("acufarm_lease_seconds", "Time to answer a Lease call", lease_seconds.clone());
        let stage_seconds = Family::<StageLabels, Histogram>::new_with_constructor(stage_histogram as fn() -> Histogram);
        registry.register("acufarm_stage_seconds", "Seconds one job spent in each stage (per image where a stage renders a batch)", stage_seconds.clone());
        let worker_rate = Family::<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "acufarm_worker_images_per_second",
            "Images per second each worker completed through this coordinator over the last minute",
            worker_rate.clone(),
        );
        let workers = Family::<WorkerStateLabels, Gauge>::default();
        registry.register("acufarm_workers", "Live workers (Redis presence) by state: busy holds jobs, idle holds none", workers.clone());
        Self {
            registry,
            jobs,
            queue_depth,
            completed,
            failures,
            lease_seconds,
            stage_seconds,
            worker_rate,
            workers,
            done_by: Default::default(),
            done_in: Default::default(),
            scrape: tokio::sync::Mutex::new(()),
        }
    }
}

impl Metrics {
    /// `jobs` completions of `worker` (its name) the store accepted, once per report. Entries
    /// older than the rate window go on the way, so memory stays bounded without scrapes.
    pub fn completed(&self, worker: &str, jobs: u64) {
        if jobs == 0 {
            return;
        }
        self.completed.inc_by(jobs);
        let now = std::time::Instant::now();
        let mut done = self.done_by.lock().unwrap_or_else(|p| p.into_inner());
        let events = done.entry(worker.to_string()).or_default();
        prune(events, now);
        events.push_back((now, jobs));
    }

    /// `jobs` completions of run `run` through this coordinator, for its rate without Redis.
    pub fn run_completed(&self, run: acufarm_core::RunId, jobs: u64) {
        if jobs == 0 {
            return;
        }
        let now = std::time::Instant::now();
        let mut done = self.done_in.lock().unwrap_or_else(|p| p.into_inner());
        let events = done.entry(run).or_default();
        prune(events, now);
        events.push_back((now, jobs));
    }

    /// Images/s of a run through this coordinator over the last minute.
    pub fn run_rate(&self, run: acufarm_core::RunId) -> f64 {
        let now = std::time::Instant::now();
        let mut done = self.done_in.lock().unwrap_or_else(|p| p.into_inner());
        let Some(events) = done.get_mut(&run) else { return 0.0 };
        prune(events, now);
        events.iter().map(|(_, n)| n).sum::<u64>() as f64 / RATE_WINDOW.as_secs_f64()
    }

    /// Images/s of each worker (by name) through this coordinator over the last minute.
    pub fn worker_rates(&self) -> std::collections::HashMap<String, f64> {
        let now = std::time::Instant::now();
        let mut done = self.done_by.lock().unwrap_or_else(|p| p.into_inner());
        done.iter_mut()
            .map(|(worker, events)| {
                prune(events, now);
                (worker.clone(), events.iter().map(|(_, n)| n).sum::<u64>() as f64 / RATE_WINDOW.as_secs_f64())
            })
            .collect()
    }

    pub fn failed(&self, class: acufarm_core::FailureClass) {
        self.failures.get_or_create(&ClassLabels { class: class.as_str().to_string() }).inc();
    }

    pub fn lease_took(&self, seconds: f64) {
        self.lease_seconds.observe(seconds);
    }

    /// Records a committed completion's stage timings (`timings` as the worker reported them).
    pub fn stages<'a>(&self, bundle: &str, timings: impl IntoIterator<Item = (&'a String, &'a f64)>) {
        for (key, seconds) in timings {
            if let Some((_, stage)) = STAGES.iter().find(|(from, _)| from == key) {
                self.stage(stage, bundle, *seconds);
            }
        }
    }

    /// One job's seconds in `stage`.
    pub fn stage(&self, stage: &str, bundle: &str, seconds: f64) {
        self.stage_seconds.get_or_create(&StageLabels { stage: stage.into(), bundle: bundle.into() }).observe(seconds);
    }

    /// The text of one scrape: the gauges refreshed from `store` and the live workers (`None`
    /// without Redis), then everything encoded.
    pub async fn scrape<S: Store>(
        &self,
        store: &S,
        keep_finished: chrono::Duration,
        live: Option<Vec<crate::events::Presence>>,
    ) -> Result<String, crate::StoreError> {
        let _one = self.scrape.lock().await;
        self.refresh_workers(live);
        let now = chrono::Utc::now();
        let mut jobs = Vec::new();
        let mut depth: BTreeMap<String, i64> = BTreeMap::new();
        for run in store.list_runs().await? {
            let status = store.run_status(run.id).await?;
            let c = status.counts;
            let finished = c.queued == 0 && c.leased == 0;
            if finished && status.last_change.is_some_and(|at| now - at > keep_finished) {
                continue;
            }
            if run.state == crate::store::RunState::Active && !finished {
                *depth.entry(bundle_label(&run)).or_default() += (c.queued + c.leased) as i64;
            }
            for (state, n) in [("queued", c.queued), ("leased", c.leased), ("succeeded", c.succeeded), ("failed", c.failed), ("cancelled", c.cancelled)] {
                jobs.push((RunStateLabels { run: run.name.clone(), state: state.into() }, n as i64));
            }
        }
        self.jobs.clear();
        for (labels, n) in jobs {
            self.jobs.get_or_create(&labels).set(n);
        }
        self.queue_depth.clear();
        for (bundle, n) in depth {
            self.queue_depth.get_or_create(&BundleLabels { bundle }).set(n);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        Ok(text)
    }
}
