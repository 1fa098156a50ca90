//! The job store: runs, shards and jobs, and every state change a job goes through. One trait, two
//! implementations (Postgres for the farm, SQLite for embedded mode) held to one conformance suite
//! (`tests/store_conformance.rs`).
//!
//! Most operations follow one shape in both backends: lock the rows a request names, ask the pure
//! state machine ([`crate::state`]) what to do with each (the `plan_*` functions here), write the
//! answer back, commit. The claim and the heartbeat are single guarded statements instead, because
//! they are the hot path; their SQL mirrors [`crate::state::claim`] and [`crate::state::extend`].

pub mod history;
mod plan;
pub mod postgres;
pub mod sqlite;

pub(crate) use plan::{RunAction, plan_complete, plan_fail, plan_reap, plan_resubmit, regenerated_outputs, run_transition, shard_statuses, validate_new_run};

use crate::error::StoreError;
use crate::quarantine::{Outcomes, Quarantined};
use crate::retry::RetryPolicy;
use crate::state::{Completion, Expiry, Failure, JobView, ShardState, StateCounts};
use acufarm_core::{Attempt, FailureClass, JobId, JobState, RunId, ShardId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::str::FromStr;

/// The manifest-claim statements read the same on both stores (only the timestamp binding differs).
const RENEW_MANIFEST_CLAIM: &str = "UPDATE runs SET manifest_claimed_until = $3 WHERE id = $1 AND manifest_writer = $2";
const END_MANIFEST_CLAIM: &str = "UPDATE runs SET manifest_writer = NULL, manifest_claimed_until = NULL, \
     manifest_succeeded = COALESCE($3, manifest_succeeded), manifest_failed = COALESCE($4, manifest_failed) \
     WHERE id = $1 AND manifest_writer = $2";
/// Ends a worker's running failure streak on a run after a success (a quarantine stays).
const RESET_STREAK: &str = "UPDATE run_workers SET failures = 0, errors = '[]', updated_at = $3 \
     WHERE run_id = $1 AND worker = $2 AND quarantined_at IS NULL AND failures > 0";
use std::time::Duration;

pub use history::{AttemptOutcome, AttemptRecord};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A run to insert with its shards and jobs, all in one transaction.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Unique among runs: submitting the same name twice is refused unless forced.
    pub name: String,
    /// The run spec as submitted (TOML text), kept so a resubmit can re-resolve against it.
    pub spec: String,
    /// Higher runs are leased first.
    pub priority: i32,
    /// Only workers holding this model bundle may lease the run's jobs.
    pub bundle_sha256: String,
    /// Leases a job of this run may lose before it fails (`[retry] max_lost`); stored with the
    /// run so the reaper applies each run's own cap.
    pub max_lost: u32,
    /// Shard keys (by default one per anatomical model).
    pub shards: Vec<String>,
    pub jobs: Vec<NewJob>,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    /// One of the run's shard keys.
    pub shard_key: String,
    /// The input sample this job re-renders; unique within the run.
    pub sample_id: String,
    /// The fully resolved job spec, opaque to the store.
    pub spec: serde_json::Value,
}

/// Whether a run's queued jobs may be leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Active,
    /// Queued jobs wait; leased ones finish.
    Paused,
    /// Every unfinished job was cancelled; final.
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = StoreError;
    fn from_str(text: &str) -> Result<Self> {
        [Self::Active, Self::Paused, Self::Cancelled]
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt { detail: format!("unknown run state `{text}`") })
    }
}

/// Parses a job state read from the database.
pub(crate) fn parse_job_state(text: &str) -> Result<JobState> {
    text.parse().map_err(|error: acufarm_core::job::UnknownJobState| StoreError::Corrupt { detail: error.to_string() })
}

/// Reads one column, turning a decoding failure into a store error.
pub(crate) fn column<'r, R, T>(row: &'r R, name: &'static str) -> Result<T>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.try_get(name).map_err(StoreError::db("reading query results"))
}

/// A row of `succeeded_jobs.sql` (the same columns on both backends).
pub(crate) fn succeeded_from_row<'r, R>(row: &'r R) -> Result<SucceededJob>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SucceededJob {
        job: JobId(column(row, "id")?),
        shard_key: column(row, "shard_key")?,
        sample_id: column(row, "sample_id")?,
        attempt: Attempt(column(row, "attempt")?),
        result: column(row, "result")?,
    })
}

/// Converts a lease or backoff length; lengths beyond chrono's range (centuries) are clamped.
pub(crate) fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    pub id: RunId,
    pub name: String,
    pub spec: String,
    pub priority: i32,
    pub bundle_sha256: String,
    /// The run's lost-lease cap, as the reaper applies it.
    pub max_lost: u32,
    pub state: RunState,
    pub created_at: DateTime<Utc>,
}

/// A worker asking for work.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    pub worker_id: String,
    /// The name the worker registered with: runs that quarantined it are skipped.
    pub worker_name: String,
    /// The bundle the worker has loaded; runs of other bundles are not offered.
    pub bundle_sha256: String,
    pub max_jobs: u32,
    /// How long the worker may hold a job without a heartbeat.
    pub lease_duration: Duration,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeasedJob {
    pub job: JobId,
    pub run: RunId,
    pub shard: ShardId,
    /// The fencing token: every report about this job must carry it.
    pub attempt: Attempt,
    pub sample_id: String,
    /// The job spec as JSON text, passed through to the worker unparsed.
    pub spec: String,
    pub lease_expires_at: DateTime<Utc>,
}

/// A job as held by one attempt, for heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct JobAttempt {
    pub job: JobId,
    pub attempt: Attempt,
}

#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub job: JobId,
    pub attempt: Attempt,
    /// What the manifest writer needs (output key, sha256, timings) as JSON text; opaque to the
    /// store, which stores it unparsed.
    pub result: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompletionReport {
    pub job: JobId,
    pub attempt: Attempt,
    pub outcome: Completion,
}

#[derive(Debug, Clone)]
pub struct FailureRequest {
    pub job: JobId,
    pub attempt: Attempt,
    pub class: FailureClass,
    pub message: String,
    /// JSON text kept with the attempt's history (QA checks, the worker's log lines).
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FailureReport {
    pub job: JobId,
    pub attempt: Attempt,
    pub outcome: Failure,
}

/// A lease the reaper took back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReapedJob {
    pub job: JobId,
    /// The attempt whose lease was lost.
    pub attempt: Attempt,
    pub outcome: Expiry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardStatus {
    pub shard: ShardId,
    pub key: String,
    pub state: ShardState,
    pub counts: StateCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunStatus {
    pub run: RunInfo,
    pub counts: StateCounts,
    /// When a job of the run last changed state (for a finished run, when its last job ended);
    /// `None` for a run without jobs.
    pub last_change: Option<DateTime<Utc>>,
    /// In shard id order (the order of the submitted shard keys).
    pub shards: Vec<ShardStatus>,
}

/// A failed job to queue again, with its spec re-resolved against the current files and run spec.
#[derive(Debug, Clone)]
pub struct Resubmission {
    pub job: JobId,
    pub spec: serde_json::Value,
    /// A regeneration with new seeds: succeeded jobs are queued again too (their run's manifest
    /// is then written again once they finish).
    pub regenerate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Resubmitted {
    /// `failed → queued` with a fresh attempt budget and the new spec.
    Requeued,
    /// Only failed jobs are resubmitted; this one is in another state and was left alone.
    NotFailed {
        state: JobState,
    },
    UnknownJob,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResubmitReport {
    pub job: JobId,
    pub outcome: Resubmitted,
}

/// The job counts a manifest is written for: a finished run's manifest is written again only when
/// they change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ManifestCounts {
    pub succeeded: u64,
    pub failed: u64,
}

impl ManifestCounts {
    pub fn of(counts: &StateCounts) -> Self {
        Self { succeeded: counts.succeeded, failed: counts.failed }
    }
}

/// What [`Store::claim_manifest`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "claim", rename_all = "snake_case")]
pub enum ManifestClaim {
    /// The caller is now the one writer, until the time it asked for (renewable); it must end the
    /// claim with [`Store::end_manifest_claim`].
    Claimed,
    /// The files were already written for exactly these counts: nothing to write.
    Current,
    /// Another writer holds a valid claim; ask again once it ends or lapses.
    Busy { writer: String, until: DateTime<Utc> },
}

/// The succeeded jobs of a run, as the database returns them.
pub type SucceededStream<'a> = futures_util::stream::BoxStream<'a, Result<SucceededJob>>;

/// A finished job, for the manifest writer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SucceededJob {
    pub job: JobId,
    pub shard_key: String,
    pub sample_id: String,
    pub attempt: Attempt,
    /// The completion's result as JSON text (a manifest row).
    pub result: String,
}

/// A job as the operator and the committing coordinator see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub job: JobId,
    pub run: RunId,
    pub shard_key: String,
    pub sample_id: String,
    pub state: JobState,
    pub attempt: Attempt,
    /// The worker holding the lease, while leased.
    pub leased_by: Option<String>,
    /// The job spec as JSON text (parse it with `serde_json::from_str` where needed).
    pub spec: String,
    pub failure_class: Option<FailureClass>,
    pub last_error: Option<String>,
    /// The name of the worker that took the latest attempt (kept after it ended).
    pub worker: Option<String>,
    /// The completion's result as JSON text, once succeeded.
    pub result: Option<String>,
    /// When the job last changed (state, lease or report).
    pub updated_at: DateTime<Utc>,
}

impl JobRecord {
    /// Whether `attempt` of `worker` still holds the job's lease (so its report may commit).
    pub fn held_by(&self, attempt: Attempt, worker: &str) -> bool {
        self.state == JobState::Leased && self.attempt == attempt && self.leased_by.as_deref() == Some(worker)
    }
}

/// Which jobs of a run to list; every field left `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    /// Only these shard keys (all shards when `None`).
    pub shard_keys: Option<Vec<String>>,
    /// Only jobs whose latest attempt was taken by the worker of this name.
    pub worker: Option<String>,
    pub failure_class: Option<FailureClass>,
    /// Only sample ids starting with this text.
    pub sample_prefix: Option<String>,
    /// Only jobs after this one in id order (keyset pagination: pass the last id of a page);
    /// with `newest_first`, only jobs before it.
    pub after: Option<JobId>,
    pub limit: Option<u32>,
    /// Highest id (newest) first.
    pub newest_first: bool,
}

/// The newest-first form of a jobs listing's SQL (the same text with the order and the keyset
/// bound turned around).
pub(crate) fn newest_first(sql: &str) -> String {
    let turned = sql.replace("> COALESCE($7", "< COALESCE($7").replace(", -1)", ", 9223372036854775807)").replace("ORDER BY jobs.id", "ORDER BY jobs.id DESC");
    debug_assert!(
        turned.contains("ORDER BY jobs.id DESC") && turned.contains("9223372036854775807") && !turned.contains("> COALESCE($7"),
        "the jobs listing's SQL changed shape"
    );
    turned
}

/// Everything the coordinator asks of its database. Time is always passed in (`now`), so tests
/// and the reaper decide what time it is. Futures are `Send` so operations can run on spawned
/// tasks.
pub trait Store: Clone + Send + Sync + 'static {
    /// Inserts a run, its shards and its jobs in one transaction. An existing run of that name is
    /// refused ([`StoreError::RunNameTaken`]) unless `force`, which deletes it and all its jobs.
    fn create_run(&self, run: &NewRun, force: bool, now: DateTime<Utc>) -> impl Future<Output = Result<RunId>> + Send;

    fn find_run(&self, name: &str) -> impl Future<Output = Result<Option<RunInfo>>> + Send;

    /// Claims up to `max_jobs` queued jobs of active runs with the worker's bundle whose
    /// `not_before` has passed: highest run priority first, then oldest job. Each claim increments
    /// the job's attempt. Returned in that order. Runs that quarantined the worker's name are
    /// skipped, and a job whose last attempt failed retryably on this worker is left to other
    /// workers for one more backoff after its own (then this worker may take it again).
    fn lease(&self, request: &LeaseRequest) -> impl Future<Output = Result<Vec<LeasedJob>>> + Send;

    /// Extends to `now + lease_duration` the leases `worker` still holds; returns those. A job
    /// missing from the answer was lost: the worker should stop working on it.
    fn heartbeat(
        &self,
        worker: &str,
        held: &[JobAttempt],
        lease_duration: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<JobAttempt>>> + Send;

    /// Records a batch of completions in one transaction, one report per request, in order.
    fn complete(&self, completions: &[CompletionRequest], now: DateTime<Utc>) -> impl Future<Output = Result<Vec<CompletionReport>>> + Send;

    /// Records a batch of failures in one transaction under `policy`, one report per request.
    fn fail(&self, failures: &[FailureRequest], policy: &RetryPolicy, now: DateTime<Utc>) -> impl Future<Output = Result<Vec<FailureReport>>> + Send;

    /// Takes back every lease that expired at or before `now`, of every run in one pass: back to
    /// queued (attempt untouched, `lost` + 1) or failed past the `max_lost` of the job's run.
    fn reap_expired(&self, now: DateTime<Utc>) -> impl Future<Output = Result<Vec<ReapedJob>>> + Send;

    fn run_status(&self, run: RunId) -> impl Future<Output = Result<RunStatus>> + Send;

    /// Queues failed jobs again with a new spec and a fresh attempt budget, in one transaction;
    /// a regeneration ([`Resubmission::regenerate`]) queues succeeded ones too and makes their
    /// run's manifest due again.
    fn resubmit(&self, jobs: &[Resubmission], now: DateTime<Utc>) -> impl Future<Output = Result<Vec<ResubmitReport>>> + Send;

    /// Cancels the run and every job of it not yet finished; later reports of those jobs are
    /// stale. Cancelling a cancelled run does nothing.
    fn cancel_run(&self, run: RunId, now: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;

    /// Stops leasing the run's queued jobs; leased ones run to the end.
    fn pause_run(&self, run: RunId, now: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;

    fn resume_run(&self, run: RunId, now: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;

    /// The succeeded jobs of a run with their results, streamed in the order of their output
    /// paths (bytewise; jobs whose result names no path last, by id) for the manifest writer, so
    /// a run of any size is written without holding it in memory.
    fn succeeded_jobs(&self, run: RunId) -> impl Future<Output = Result<SucceededStream<'_>>> + Send;

    /// One run by id ([`StoreError::RunNotFound`] when it does not exist).
    fn run(&self, run: RunId) -> impl Future<Output = Result<RunInfo>> + Send;

    /// Every run, oldest first.
    fn list_runs(&self) -> impl Future<Output = Result<Vec<RunInfo>>> + Send;

    /// Replaces the run spec a later resubmit re-resolves against (a corrected id grammar), and
    /// the lost-lease cap it names.
    fn set_run_spec(&self, run: RunId, spec: &str, max_lost: u32, now: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;

    /// Claims the write of a run's manifest for `counts` as `writer` (unique per write attempt)
    /// until `until`, in one conditional update: at most one caller gets [`ManifestClaim::Claimed`]
    /// while a claim is valid, and none when the files were already written for these counts.
    /// Read the counts before claiming: files written from a later snapshot than the counts they
    /// are recorded for are only ever written again, never wrongly skipped.
    fn claim_manifest(
        &self,
        run: RunId,
        counts: ManifestCounts,
        writer: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ManifestClaim>> + Send;

    /// Extends `writer`'s claim to `until`; `false` when it no longer holds it (it lapsed and
    /// another writer took it), and then it must not finish its files.
    fn renew_manifest_claim(&self, run: RunId, writer: &str, until: DateTime<Utc>) -> impl Future<Output = Result<bool>> + Send;

    /// Ends `writer`'s claim, recording that the files now match `written` (or nothing, after a
    /// failed write); `false` when it no longer held the claim.
    fn end_manifest_claim(&self, run: RunId, writer: &str, written: Option<ManifestCounts>) -> impl Future<Output = Result<bool>> + Send;

    /// The named jobs that exist, in id order (no lock taken: a snapshot).
    fn job_records(&self, jobs: &[JobId]) -> impl Future<Output = Result<Vec<JobRecord>>> + Send;

    /// Whether any job of the run is still queued or leased (cheap: reads the partial indexes of
    /// queued and leased jobs, not the whole run).
    fn has_unfinished(&self, run: RunId) -> impl Future<Output = Result<bool>> + Send;

    /// The jobs of a run that pass `filter`, in id order.
    fn run_jobs(&self, run: RunId, filter: &JobFilter) -> impl Future<Output = Result<Vec<JobRecord>>> + Send;

    /// Applies a worker's report on `run` to its failure streak ([`crate::quarantine::record`])
    /// in one transaction; returns the quarantine when this report started it.
    fn record_worker_outcomes(
        &self,
        run: RunId,
        worker: &str,
        outcomes: Outcomes<'_>,
        quarantine_after: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Quarantined>>> + Send;

    /// The quarantined workers of one run (of every run when `None`), by run, then name.
    fn quarantined_workers(&self, run: Option<RunId>) -> impl Future<Output = Result<Vec<Quarantined>>> + Send;

    /// The attempts of `job` that did not succeed, oldest first (its succeeded attempt, if any, is
    /// its `result`).
    fn attempts(&self, job: JobId) -> impl Future<Output = Result<Vec<AttemptRecord>>> + Send;

    /// Lifts the quarantine of `worker` on `run` (on every run when `None`), its streak cleared;
    /// returns the runs it was lifted on.
    fn release_worker(&self, worker: &str, run: Option<RunId>, now: DateTime<Utc>) -> impl Future<Output = Result<Vec<RunId>>> + Send;
}

/// A row of the attempts query (the same columns on both backends); `ended_at` is read by the
/// caller, as each backend stores times its own way.
pub(crate) fn attempt_from_row<'r, R>(row: &'r R, ended_at: DateTime<Utc>) -> Result<AttemptRecord>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AttemptRecord {
        attempt: Attempt(column(row, "attempt")?),
        worker: column(row, "worker")?,
        ended_at,
        outcome: parse_outcome(&column::<_, String>(row, "outcome")?)?,
        failure_class: parse_failure_class(column(row, "failure_class")?)?,
        message: column(row, "message")?,
        detail: column(row, "detail")?,
    })
}

/// Parses an attempt outcome read from the database.
pub(crate) fn parse_outcome(text: &str) -> Result<AttemptOutcome> {
    AttemptOutcome::parse(text).ok_or_else(|| StoreError::Corrupt { detail: format!("unknown attempt outcome `{text}`") })
}

/// Parses a failure class read from the database.
pub(crate) fn parse_failure_class(text: Option<String>) -> Result<Option<FailureClass>> {
    text.map(|text| {
        [FailureClass::Retryable, FailureClass::Permanent, FailureClass::Qa]
            .into_iter()
            .find(|class| class.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt { detail: format!("unknown failure class `{text}`") })
    })
    .transpose()
}

/// What a batch operation writes back for one job. Fields left `None` keep their value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobWrite<'a> {
    pub id: JobId,
    pub state: JobState,
    pub lost: u32,
    pub not_before: Option<DateTime<Utc>>,
    /// JSON text, borrowed from the completion it records.
    pub result: Option<&'a str>,
    pub failure_class: Option<FailureClass>,
    pub last_error: Option<String>,
    pub attempt_base: Option<Attempt>,
    /// JSON text of a new spec (resubmit).
    pub spec: Option<String>,
    /// The worker whose attempt failed retryably, and until when the claim offers the job to
    /// other workers only.
    pub failed_by: Option<String>,
    pub others_until: Option<DateTime<Utc>>,
}

impl JobWrite<'_> {
    fn new(id: JobId, state: JobState, view: &JobView) -> Self {
        Self {
            id,
            state,
            lost: view.lost,
            not_before: None,
            result: None,
            failure_class: None,
            last_error: None,
            attempt_base: None,
            spec: None,
            failed_by: None,
            others_until: None,
        }
    }
}

/// A quarantined worker from its row (only rows with `quarantined_at` are asked for).
pub(crate) fn quarantined(run: RunId, worker: String, streak: crate::quarantine::Streak) -> Result<Quarantined> {
    let since = streak.quarantined_at.ok_or_else(|| StoreError::Corrupt { detail: format!("worker {worker} is listed as quarantined without a time") })?;
    Ok(Quarantined { run, worker, since, failures: streak.failures, errors: streak.errors })
}

/// A quarantine row's error list, stored as a JSON array of strings.
pub(crate) fn parse_errors(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt { detail: format!("a worker's error list `{text}`: {error}") })
}

/// Tells apart why a manifest claim was refused, from the run's manifest columns read after it:
/// another writer's valid claim, or files already written for these counts. Neither (the other
/// writer ended its claim in between) reads as busy until `now`, so the caller asks again.
pub(crate) fn manifest_claim_from(
    counts: ManifestCounts,
    written: Option<ManifestCounts>,
    writer: Option<String>,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ManifestClaim {
    match (writer, until) {
        (Some(writer), Some(until)) if until > now => ManifestClaim::Busy { writer, until },
        _ if written == Some(counts) => ManifestClaim::Current,
        (writer, _) => ManifestClaim::Busy { writer: writer.unwrap_or_default(), until: now },
    }
}
