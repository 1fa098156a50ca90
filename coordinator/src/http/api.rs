//! The JSON API's reads under `/api/v1/`: runs, shards, jobs (filtered, keyset-paginated), one
//! job, workers. Run and shard counts come from the state counters, so no read counts the jobs
//! table; the run views are the same `Admin.Status` answers the CLI prints.

use super::session::Reader;
use super::{ApiError, Params};
use crate::service::Coordinator;
use crate::service::admin::AdminService;
use crate::store::{JobFilter, JobRecord, Store};
use acufarm_core::{FailureClass, JobId, JobState};
use acufarm_proto::v1 as pb;
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Failed jobs shown with one run.
const RUN_FAILURES: u32 = 20;
/// Jobs per page unless `limit` says otherwise, and the most one page may hold.
const PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

#[derive(Debug, Serialize, ToSchema)]
pub struct Counts {
    pub queued: u64,
    pub leased: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl From<Option<pb::Counts>> for Counts {
    fn from(counts: Option<pb::Counts>) -> Self {
        let c = counts.unwrap_or_default();
        Self { queued: c.queued, leased: c.leased, succeeded: c.succeeded, failed: c.failed, cancelled: c.cancelled }
    }
}

impl Counts {
    fn total(&self) -> u64 {
        self.queued + self.leased + self.succeeded + self.failed + self.cancelled
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Run {
    pub id: i64,
    pub name: String,
    /// `active`, `paused` or `cancelled`.
    pub state: String,
    /// Whether every job has ended (none queued or leased).
    pub finished: bool,
    pub priority: i32,
    pub bundle_sha256: String,
    /// RFC 3339.
    pub created_at: String,
    pub counts: Counts,
    pub total: u64,
    /// Images per second over the last minute.
    pub rate_per_s: f64,
    /// Seconds until the queued and leased jobs are done at that rate; absent when nothing moves.
    pub eta_seconds: Option<f64>,
    pub output_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailedJob {
    pub id: i64,
    pub shard: String,
    pub sample_id: String,
    /// `retryable`, `permanent` or `qa`.
    pub class: String,
    pub message: String,
    pub attempt: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantinedWorker {
    pub worker: String,
    /// RFC 3339.
    pub since: String,
    pub failures: u32,
    /// The newest of its errors.
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    /// The run spec as submitted (TOML).
    pub spec_toml: String,
    /// The same spec as JSON, for display.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    /// The finished run's QA summary (drift per point), absent without `[qa]` or before the end.
    #[schema(value_type = Option<Object>)]
    pub qa: Option<serde_json::Value>,
    /// The newest failed jobs (see `/jobs?state=failed` for all).
    pub failures: Vec<FailedJob>,
    pub quarantined: Vec<QuarantinedWorker>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Shard {
    pub id: i64,
    pub key: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub counts: Counts,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShardList {
    pub run: String,
    pub shards: Vec<Shard>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    pub id: i64,
    pub run_id: i64,
    pub shard: String,
    pub sample_id: String,
    /// `queued`, `leased`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub attempt: i32,
    /// The worker that took the latest attempt.
    pub worker: Option<String>,
    pub failure_class: Option<String>,
    pub message: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<&JobRecord> for Job {
    fn from(job: &JobRecord) -> Self {
        Self {
            id: job.job.0,
            run_id: job.run.0,
            shard: job.shard_key.clone(),
            sample_id: job.sample_id.clone(),
            state: job.state.to_string(),
            attempt: job.attempt.0,
            worker: job.worker.clone(),
            failure_class: job.failure_class.map(|class| class.as_str().to_string()),
            message: job.last_error.clone(),
            updated_at: job.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    pub run: String,
    /// The fully resolved job spec (seeds, parameters, inputs).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// The completion's record (output key, sha256, per-stage timings, QA checks), once succeeded.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The attempts that did not succeed, oldest first.
    pub attempts: Vec<AttemptView>,
    /// The QA checks to show (of the succeeded attempt, else of the newest failed one that has
    /// them): each try's verdict, reason, drift per point and the 8 points on source and output.
    #[schema(value_type = Vec<Object>)]
    pub qa: Vec<serde_json::Value>,
    /// Whether the run checks outputs (`[qa]`); without it there are no landmarks to show.
    pub qa_enabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    pub worker: Option<String>,
    /// RFC 3339.
    pub ended_at: String,
    /// `retried`, `failed` or `lost`.
    pub outcome: String,
    pub failure_class: Option<String>,
    pub message: String,
    /// The worker's last log lines for this attempt.
    pub log: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub qa: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Worker {
    pub worker_id: String,
    pub name: String,
    pub hostname: String,
    pub gpu: String,
    /// The accelerator's memory in bytes (0 on CPU nodes).
    pub gpu_memory_bytes: u64,
    pub execution_providers: Vec<String>,
    pub bundle_name: String,
    pub bundle_sha256: String,
    pub jobs_held: u32,
    /// Completions through this coordinator over the last minute, per second.
    pub images_per_second: f64,
    /// RFC 3339; absent for a quarantined worker no longer seen.
    pub last_heartbeat: Option<String>,
    /// `busy`, `idle`, `quarantined` (on some run) or `gone`.
    pub state: String,
    /// The runs this worker is quarantined on, with why.
    pub quarantine: Vec<WorkerQuarantine>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerQuarantine {
    pub run: String,
    /// RFC 3339.
    pub since: String,
    pub failures: u32,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<Worker>,
    /// Whether live presence (Redis) is reachable; without it only quarantined workers are known.
    pub presence: bool,
}

/// A failure class of the gRPC answer in the API's words.
fn class_name(class: i32) -> &'static str {
    match pb::FailureClass::try_from(class) {
        Ok(pb::FailureClass::Retryable) => FailureClass::Retryable.as_str(),
        Ok(pb::FailureClass::Qa) => FailureClass::Qa.as_str(),
        _ => FailureClass::Permanent.as_str(),
    }
}

fn rfc3339_ms(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms).unwrap_or_default().to_rfc3339()
}

fn run_view(status: &pb::RunStatus) -> Run {
    let counts = Counts::from(status.counts);
    let remaining = counts.queued + counts.leased;
    let eta_seconds = (remaining > 0 && status.rate_per_s > 0.0).then(|| remaining as f64 / status.rate_per_s);
    Run {
        id: status.run_id,
        name: status.name.clone(),
        state: status.state.clone(),
        finished: remaining == 0,
        priority: status.priority,
        bundle_sha256: status.bundle_sha256.clone(),
        created_at: rfc3339_ms(status.created_unix_ms),
        total: counts.total(),
        counts,
        rate_per_s: status.rate_per_s,
        eta_seconds,
        output_url: status.output_url.clone(),
    }
}

/// A path's run name to the run, 404 when there is none.
async fn find_run<S: Store>(coordinator: &Coordinator<S>, name: &str) -> Result<crate::store::RunInfo, ApiError> {
    Ok(AdminService(coordinator.clone()).find(name).await?)
}

/// Every run, oldest first, with its counts, rate and ETA.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs",
    responses((status = 200, body = RunList), (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody)))]
pub async fn runs<S: Store>(State(coordinator): State<Coordinator<S>>, _: Reader) -> Result<Json<RunList>, ApiError> {
    Ok(Json(RunList { runs: run_list(&coordinator).await? }))
}

/// Every run's view, oldest first.
pub(super) async fn run_list<S: Store>(coordinator: &Coordinator<S>) -> Result<Vec<Run>, ApiError> {
    Ok(runs_with_shards(coordinator).await?.into_iter().map(|(run, _)| run).collect())
}

/// Every run's view with its shards, oldest first, from one status read per run.
pub(super) async fn runs_with_shards<S: Store>(coordinator: &Coordinator<S>) -> Result<Vec<(Run, Vec<Shard>)>, ApiError> {
    let admin = AdminService(coordinator.clone());
    let infos = coordinator.store().list_runs().await.map_err(ApiError::from_store)?;
    let mut runs = Vec::with_capacity(infos.len());
    for info in &infos {
        let status = admin.run_status(info, 1).await?;
        let shards = status
            .shards
            .iter()
            .map(|shard| Shard { id: shard.shard_id, key: shard.key.clone(), state: shard.state.clone(), counts: Counts::from(shard.counts) })
            .collect();
        runs.push((run_view(&status), shards));
    }
    Ok(runs)
}

/// One run: counts, rate, ETA, spec and parameters, QA summary, newest failures, quarantines.
#[utoipa::path(get, path = "/api/v1/runs/{run}", tag = "runs", params(("run" = String, Path, description = "The run's name")),
    responses((status = 200, body = RunDetail), (status = 404, body = super::ErrorBody)))]
pub async fn run<S: Store>(State(coordinator): State<Coordinator<S>>, _: Reader, Path(name): Path<String>) -> Result<Json<RunDetail>, ApiError> {
    let info = find_run(&coordinator, &name).await?;
    let status = AdminService(coordinator.clone()).run_status(&info, RUN_FAILURES).await?;
    let parameters = toml::from_str::<toml::Table>(&info.spec).ok().and_then(|table| serde_json::to_value(table).ok()).unwrap_or_default();
    let qa = (!status.qa_json.is_empty()).then(|| serde_json::from_str(&status.qa_json).ok()).flatten();
    let failures = status
        .failures
        .iter()
        .map(|job| FailedJob {
            id: job.job_id,
            shard: job.shard.clone(),
            sample_id: job.sample_id.clone(),
            class: class_name(job.class).to_string(),
            message: job.message.clone(),
            attempt: job.attempt,
        })
        .collect();
    let quarantined = status
        .quarantined
        .iter()
        .map(|q| QuarantinedWorker { worker: q.worker.clone(), since: rfc3339_ms(q.since_unix_ms), failures: q.failures, errors: q.errors.clone() })
        .collect();
    Ok(Json(RunDetail { run: run_view(&status), spec_toml: info.spec.clone(), parameters, qa, failures, quarantined }))
}

/// The run's shards with their state and counts (one cell each on the dashboard's grid).
#[utoipa::path(get, path = "/api/v1/runs/{run}/shards", tag = "runs", params(("run" = String, Path, description = "The run's name")),
    responses((status = 200, body = ShardList), (status = 404, body = super::ErrorBody)))]
pub async fn shards<S: Store>(State(coordinator): State<Coordinator<S>>, _: Reader, Path(name): Path<String>) -> Result<Json<ShardList>, ApiError> {
    let info = find_run(&coordinator, &name).await?;
    let status = coordinator.store().run_status(info.id).await.map_err(ApiError::from_store)?;
    let shards = status
        .shards
        .iter()
        .map(|shard| Shard {
            id: shard.shard.0,
            key: shard.key.clone(),
            state: shard.state.to_string(),
            counts: Counts {
                queued: shard.counts.queued,
                leased: shard.counts.leased,
                succeeded: shard.counts.succeeded,
                failed: shard.counts.failed,
                cancelled: shard.counts.cancelled,
            },
        })
        .collect();
    Ok(Json(ShardList { shards, run: info.name }))
}

/// The filters of the jobs listing; every one is optional.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// `queued`, `leased`, `succeeded`, `failed` or `cancelled`.
    pub state: Option<String>,
    /// A shard key.
    pub shard: Option<String>,
    /// The name of the worker that took the latest attempt.
    pub worker: Option<String>,
    /// `retryable`, `permanent` or `qa`.
    pub class: Option<String>,
    /// Only sample ids starting with this text.
    pub sample: Option<String>,
    /// The `next_after` of the previous page.
    pub after: Option<i64>,
    /// Jobs per page (1 to 500, default 50).
    pub limit: Option<u32>,
    /// `oldest` (default, by id) or `newest` (highest id first; `after` then pages backwards).
    pub order: Option<String>,
}

impl JobQuery {
    /// The store filter of one page, or a 400 naming the bad value.
    pub fn filter(&self) -> Result<JobFilter, ApiError> {
        let limit = self.limit.unwrap_or(PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::bad_request(format!("`limit={limit}` is out of range; ask for 1 to {MAX_PAGE} jobs per page")));
        }
        Ok(JobFilter { limit: Some(limit), ..self.filter_unlimited()? })
    }

    /// The store filter without a page size (`limit` ignored).
    pub fn filter_unlimited(&self) -> Result<JobFilter, ApiError> {
        let state = self
            .state
            .as_deref()
            .map(|text| {
                text.parse::<JobState>().map_err(|_| {
                    let states: Vec<&str> = JobState::ALL.iter().map(|state| state.as_str()).collect();
                    ApiError::bad_request(format!("`state={text}` is not a job state; use one of {}", states.join(", ")))
                })
            })
            .transpose()?;
        let failure_class = self
            .class
            .as_deref()
            .map(|text| {
                [FailureClass::Retryable, FailureClass::Permanent, FailureClass::Qa]
                    .into_iter()
                    .find(|class| class.as_str() == text)
                    .ok_or_else(|| ApiError::bad_request(format!("`class={text}` is not a failure class; use retryable, permanent or qa")))
            })
            .transpose()?;
        let nonempty = |value: &Option<String>| value.clone().filter(|text| !text.is_empty());
        Ok(JobFilter {
            state,
            shard_keys: nonempty(&self.shard).map(|key| vec![key]),
            worker: nonempty(&self.worker),
            failure_class,
            sample_prefix: nonempty(&self.sample),
            after: self.after.map(JobId),
            limit: None,
            newest_first: match self.order.as_deref() {
                None | Some("" | "oldest") => false,
                Some("newest") => true,
                Some(other) => return Err(ApiError::bad_request(format!("`order={other}` is not an order; use oldest or newest"))),
            },
        })
    }
}

/// A run's jobs that pass the filters, in id order, one page at a time.
#[utoipa::path(get, path = "/api/v1/runs/{run}/jobs", tag = "jobs", params(("run" = String, Path, description = "The run's name"), JobQuery),
    responses((status = 200, body = JobPage), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn jobs<S: Store>(
    State(coordinator): State<Coordinator<S>>,
    _: Reader,
    Path(name): Path<String>,
    Params(query): Params<JobQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let filter = query.filter()?;
    let info = find_run(&coordinator, &name).await?;
    let jobs = coordinator.store().run_jobs(info.id, &filter).await.map_err(ApiError::from_store)?;
    let full = filter.limit.is_some_and(|limit| jobs.len() == limit as usize);
    let next_after = if full { jobs.last().map(|job| job.job.0) } else { None };
    Ok(Json(JobPage { jobs: jobs.iter().map(Job::from).collect(), next_after }))
}

/// One job: its spec, state, latest attempt and worker, failure and result.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path, description = "The job id")),
    responses((status = 200, body = JobDetail), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn job<S: Store>(State(coordinator): State<Coordinator<S>>, _: Reader, Path(id): Path<String>) -> Result<Json<JobDetail>, ApiError> {
    let id: i64 =
        id.parse().map_err(|_| ApiError::bad_request(format!("`{id}` is not a job id; job ids are whole numbers, as the jobs listing shows them")))?;
    let store = coordinator.store();
    let record = store.job_records(&[JobId(id)]).await.map_err(ApiError::from_store)?.into_iter().next();
    let record = record.ok_or_else(|| ApiError::not_found(format!("there is no job {id}; find jobs with /api/v1/runs/RUN/jobs")))?;
    let run = store.run(record.run).await.map_err(ApiError::from_store)?;
    let spec: serde_json::Value = serde_json::from_str(&record.spec).unwrap_or(serde_json::Value::Null);
    let result: Option<serde_json::Value> = record.result.as_deref().and_then(|text| serde_json::from_str(text).ok());
    let attempts: Vec<AttemptView> = store
        .attempts(record.job)
        .await
        .map_err(ApiError::from_store)?
        .into_iter()
        .map(|attempt| {
            let detail: serde_json::Value = attempt.detail.as_deref().and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
            let list = |key: &str| detail.get(key).and_then(|v| v.as_array()).cloned().unwrap_or_default();
            AttemptView {
                attempt: attempt.attempt.0,
                worker: attempt.worker,
                ended_at: attempt.ended_at.to_rfc3339(),
                outcome: attempt.outcome.as_str().to_string(),
                failure_class: attempt.failure_class.map(|class| class.as_str().to_string()),
                message: attempt.message,
                log: list("log").iter().filter_map(|line| line.as_str().map(str::to_string)).collect(),
                qa: list("qa"),
            }
        })
        .collect();
    let from_result = result.as_ref().and_then(|r| r.get("qa")).and_then(|qa| qa.as_array()).cloned().unwrap_or_default();
    let qa = if from_result.is_empty() { attempts.iter().rev().find(|a| !a.qa.is_empty()).map(|a| a.qa.clone()).unwrap_or_default() } else { from_result };
    let qa_enabled = spec.get("qa").is_some_and(|plan| !plan.is_null());
    Ok(Json(JobDetail { job: Job::from(&record), run: run.name, spec, result, attempts, qa, qa_enabled }))
}

/// The workers: live ones from presence (GPU, providers, bundle, jobs in hand, rate, last
/// heartbeat), and every quarantined one with its reasons.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", responses((status = 200, body = WorkerList), (status = 401, body = super::ErrorBody)))]
pub async fn workers<S: Store>(State(coordinator): State<Coordinator<S>>, _: Reader) -> Result<Json<WorkerList>, ApiError> {
    Ok(Json(worker_list(&coordinator).await?))
}

pub(super) async fn worker_list<S: Store>(coordinator: &Coordinator<S>) -> Result<WorkerList, ApiError> {
    let store = coordinator.store();
    let presence = coordinator.has_redis() && coordinator.redis_ok().await;
    let live = if presence { coordinator.live_workers().await } else { Vec::new() };
    let rates = coordinator.metrics().worker_rates();
    let quarantines = store.quarantined_workers(None).await.map_err(ApiError::from_store)?;
    let mut names = std::collections::HashSet::new();
    let quarantine_of = |worker: &str| -> Vec<&crate::quarantine::Quarantined> { quarantines.iter().filter(|q| q.worker == worker).collect() };
    let mut run_names: std::collections::HashMap<acufarm_core::RunId, String> = std::collections::HashMap::new();
    for q in &quarantines {
        if let std::collections::hash_map::Entry::Vacant(entry) = run_names.entry(q.run) {
            entry.insert(store.run(q.run).await.map_err(ApiError::from_store)?.name);
        }
    }
    let describe = |list: Vec<&crate::quarantine::Quarantined>| -> Vec<WorkerQuarantine> {
        list.into_iter()
            .map(|q| WorkerQuarantine {
                run: run_names.get(&q.run).cloned().unwrap_or_default(),
                since: q.since.to_rfc3339(),
                failures: q.failures,
                errors: q.errors.clone(),
            })
            .collect()
    };
    let mut workers: Vec<Worker> = Vec::with_capacity(live.len());
    for presence in live {
        names.insert(presence.name.clone());
        let quarantine = describe(quarantine_of(&presence.name));
        let state = match (quarantine.is_empty(), presence.jobs_held) {
            (false, _) => "quarantined",
            (true, 0) => "idle",
            (true, _) => "busy",
        };
        workers.push(Worker {
            images_per_second: rates.get(&presence.name).copied().unwrap_or(0.0),
            last_heartbeat: Some(rfc3339_ms(presence.last_seen_unix_ms)),
            state: state.to_string(),
            quarantine,
            worker_id: presence.worker_id,
            name: presence.name,
            hostname: presence.hostname,
            gpu: presence.gpu,
            gpu_memory_bytes: presence.gpu_memory_bytes,
            execution_providers: presence.execution_providers,
            bundle_name: presence.bundle_name,
            bundle_sha256: presence.bundle_sha256,
            jobs_held: presence.jobs_held,
        });
    }
    // Quarantined on some run but no longer live; once each, however many runs quarantined it.
    let gone: std::collections::BTreeSet<String> = quarantines.iter().map(|q| q.worker.clone()).filter(|name| !names.contains(name)).collect();
    for name in gone {
        workers.push(Worker {
            worker_id: String::new(),
            images_per_second: rates.get(&name).copied().unwrap_or(0.0),
            quarantine: describe(quarantine_of(&name)),
            name,
            hostname: String::new(),
            gpu: String::new(),
            gpu_memory_bytes: 0,
            execution_providers: Vec::new(),
            bundle_name: String::new(),
            bundle_sha256: String::new(),
            jobs_held: 0,
            last_heartbeat: None,
            state: "gone".to_string(),
        });
    }
    workers.sort_by(|a, b| a.name.cmp(&b.name).then(a.worker_id.cmp(&b.worker_id)));
    Ok(WorkerList { workers, presence })
}
