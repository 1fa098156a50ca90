//! The SQLite store for embedded mode (`acufarm run`): one file, no service. Every write runs in a
//! `BEGIN IMMEDIATE` transaction, which takes SQLite's single write lock up front: a claim's
//! select and update cannot interleave with another claim, and a transaction never has to upgrade
//! a read lock (which SQLite answers with SQLITE_BUSY instead of waiting).

use super::history::{self, AttemptRecord};
use super::{
    CompletionReport, CompletionRequest, FailureReport, FailureRequest, JobAttempt, JobFilter, JobRecord, JobWrite, LeaseRequest, LeasedJob, ManifestClaim,
    ManifestCounts, NewRun, RESET_STREAK, ReapedJob, Resubmission, ResubmitReport, Result, RunAction, RunInfo, RunState, RunStatus, Store, SucceededStream,
    chrono_duration, column, manifest_claim_from, parse_errors, parse_failure_class, parse_job_state, plan_complete, plan_fail, plan_reap, plan_resubmit,
    quarantined, run_transition, shard_statuses, succeeded_from_row, validate_new_run,
};
use crate::error::StoreError;
use crate::quarantine::{self, Outcomes, Quarantined, Streak};
use crate::retry::RetryPolicy;
use crate::state::{JobView, StateCounts};
use acufarm_core::{Attempt, JobId, RunId, ShardId};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const LEASE_CANDIDATES: &str = include_str!("sql/sqlite/lease_candidates.sql");
const LEASE_UPDATE: &str = include_str!("sql/sqlite/lease_update.sql");
const HEARTBEAT: &str = include_str!("sql/sqlite/heartbeat.sql");
const LOAD_JOBS: &str = include_str!("sql/sqlite/load_jobs.sql");
const LOAD_EXPIRED: &str = include_str!("sql/sqlite/load_expired.sql");
const WRITE_JOB: &str = include_str!("sql/sqlite/write_job.sql");
const CANCEL_JOBS: &str = include_str!("sql/sqlite/cancel_jobs.sql");
const SHARD_COUNTS: &str = include_str!("sql/sqlite/shard_counts.sql");
const SUCCEEDED_JOBS: &str = include_str!("sql/sqlite/succeeded_jobs.sql");
const JOB_RECORDS: &str = include_str!("sql/sqlite/job_records.sql");
const HAS_UNFINISHED: &str = include_str!("sql/sqlite/has_unfinished.sql");
static RUN_JOBS_NEWEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| super::newest_first(RUN_JOBS));
const RUN_JOBS: &str = include_str!("sql/sqlite/run_jobs.sql");
const CLAIM_MANIFEST: &str = include_str!("sql/sqlite/claim_manifest.sql");
const RECORD_ATTEMPT: &str = "INSERT OR IGNORE INTO job_attempts (job_id, attempt, worker, ended_at, outcome, failure_class, message, detail) \
     SELECT id, $2, worker, $3, $4, $5, $6, $7 FROM jobs WHERE id = $1";
const ATTEMPTS: &str = "SELECT attempt, worker, ended_at, outcome, failure_class, message, detail FROM job_attempts WHERE job_id = $1 ORDER BY attempt";
const RUN_COLUMNS: &str = "id, name, spec, priority, bundle_sha256, max_lost, state, created_at";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// A time as stored: UTC, fixed width, so text order is time order.
fn timestamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| StoreError::Corrupt { detail: format!("timestamp `{text}`: {error}") })
}

/// Ids as a JSON array, the one parameter `json_each` expands into a set.
fn id_array(ids: impl Iterator<Item = i64>) -> String {
    serde_json::Value::from(ids.collect::<Vec<_>>()).to_string()
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Unreachable { url: format!("sqlite://{}", path.display()), source })?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Applies the migrations in `migrations/sqlite`.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../migrations/sqlite").run(&self.pool).await.map_err(|source| StoreError::Migrate { source })
    }

    async fn begin_write(&self, operation: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::db(operation))
    }

    async fn run_info(&self, run: RunId) -> Result<RunInfo> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")))
            .bind(run.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a run"))?;
        row.map(|row| run_from_row(&row)).transpose()?.ok_or(StoreError::RunNotFound { run })
    }

    async fn change_run(&self, run: RunId, action: RunAction, now: DateTime<Utc>) -> Result<()> {
        const OPERATION: &str = "changing a run's state";
        let mut tx = self.begin_write(OPERATION).await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT state FROM runs WHERE id = $1").bind(run.0).fetch_optional(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
        let current: RunState = current.ok_or(StoreError::RunNotFound { run })?.parse()?;
        let Some(next) = run_transition(run, current, action)? else { return Ok(()) };
        sqlx::query("UPDATE runs SET state = $2, updated_at = $3 WHERE id = $1")
            .bind(run.0)
            .bind(next.as_str())
            .bind(timestamp(now))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        if next == RunState::Cancelled {
            sqlx::query(CANCEL_JOBS).bind(run.0).bind(timestamp(now)).execute(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
        }
        tx.commit().await.map_err(StoreError::db(OPERATION))
    }
}

fn run_from_row(row: &SqliteRow) -> Result<RunInfo> {
    Ok(RunInfo {
        id: RunId(column(row, "id")?),
        name: column(row, "name")?,
        spec: column(row, "spec")?,
        priority: column(row, "priority")?,
        bundle_sha256: column(row, "bundle_sha256")?,
        max_lost: cap(column(row, "max_lost")?)?,
        state: column::<_, String>(row, "state")?.parse()?,
        created_at: parse_timestamp(&column::<_, String>(row, "created_at")?)?,
    })
}

/// A lost-lease cap as stored.
fn cap(max_lost: i64) -> Result<u32> {
    u32::try_from(max_lost).map_err(|_| StoreError::Corrupt { detail: format!("a run has max_lost = {max_lost}") })
}

fn view_from_row(row: &SqliteRow) -> Result<(JobId, JobView)> {
    let id = JobId(column(row, "id")?);
    let lost: i64 = column(row, "lost")?;
    let view = JobView {
        state: parse_job_state(&column::<_, String>(row, "state")?)?,
        attempt: Attempt(column(row, "attempt")?),
        attempt_base: Attempt(column(row, "attempt_base")?),
        lost: u32::try_from(lost).map_err(|_| StoreError::Corrupt { detail: format!("job {id} has lost = {lost}") })?,
        holder: column(row, "leased_by")?,
    };
    Ok((id, view))
}

async fn load_jobs(tx: &mut Transaction<'_, Sqlite>, ids: impl Iterator<Item = i64>, operation: &'static str) -> Result<HashMap<JobId, JobView>> {
    let rows = sqlx::query(LOAD_JOBS).bind(id_array(ids)).fetch_all(&mut **tx).await.map_err(StoreError::db(operation))?;
    rows.iter().map(view_from_row).collect()
}

/// Writes a batch of decisions, one statement per job inside the caller's transaction (SQLite
/// statements are in-process calls, so there is no round trip to save).
/// Records ended attempts (the worker is the name on the job's latest attempt).
async fn record_attempts(tx: &mut Transaction<'_, Sqlite>, ends: &[history::AttemptEnd<'_>], now: DateTime<Utc>, operation: &'static str) -> Result<()> {
    let now = timestamp(now);
    for end in ends {
        sqlx::query(RECORD_ATTEMPT)
            .bind(end.job.0)
            .bind(end.attempt.0)
            .bind(&now)
            .bind(end.outcome.as_str())
            .bind(end.class.map(|class| class.as_str()))
            .bind(end.message.as_str())
            .bind(end.detail)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(operation))?;
    }
    Ok(())
}

async fn write_jobs(tx: &mut Transaction<'_, Sqlite>, writes: &[JobWrite<'_>], now: DateTime<Utc>, operation: &'static str) -> Result<()> {
    let now = timestamp(now);
    for write in writes {
        sqlx::query(WRITE_JOB)
            .bind(write.id.0)
            .bind(write.state.as_str())
            .bind(i64::from(write.lost))
            .bind(write.not_before.map(timestamp))
            .bind(write.result)
            .bind(write.failure_class.map(|class| class.as_str()))
            .bind(write.last_error.clone())
            .bind(write.attempt_base.map(|attempt| attempt.0))
            .bind(write.spec.as_deref())
            .bind(&now)
            .bind(write.failed_by.as_deref())
            .bind(write.others_until.map(timestamp))
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(operation))?;
    }
    Ok(())
}

impl Store for SqliteStore {
    async fn create_run(&self, run: &NewRun, force: bool, now: DateTime<Utc>) -> Result<RunId> {
        const OPERATION: &str = "creating a run";
        validate_new_run(run)?;
        let now = timestamp(now);
        let mut tx = self.begin_write(OPERATION).await?;
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM runs WHERE name = $1").bind(&run.name).fetch_optional(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
        if let Some(existing) = existing {
            if !force {
                return Err(StoreError::RunNameTaken { name: run.name.clone() });
            }
            tracing::info!(run_id = existing, name = %run.name, "replacing run (--force)");
            sqlx::query("DELETE FROM runs WHERE id = $1").bind(existing).execute(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
        }
        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (name, spec, priority, bundle_sha256, max_lost, created_at, updated_at) VALUES ($1, $2, $3, $4, $6, $5, $5) RETURNING id",
        )
        .bind(&run.name)
        .bind(&run.spec)
        .bind(run.priority)
        .bind(&run.bundle_sha256)
        .bind(&now)
        .bind(i64::from(run.max_lost))
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db(OPERATION))?;
        let mut shard_ids = HashMap::with_capacity(run.shards.len());
        for key in &run.shards {
            let shard_id: i64 = sqlx::query_scalar("INSERT INTO shards (run_id, key) VALUES ($1, $2) RETURNING id")
                .bind(run_id)
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db(OPERATION))?;
            shard_ids.insert(key.as_str(), shard_id);
        }
        for job in &run.jobs {
            // validate_new_run checked that every job's shard exists.
            sqlx::query("INSERT INTO jobs (run_id, shard_id, sample_id, spec, not_before, updated_at) VALUES ($1, $2, $3, $4, $5, $5)")
                .bind(run_id)
                .bind(shard_ids[job.shard_key.as_str()])
                .bind(&job.sample_id)
                .bind(job.spec.to_string())
                .bind(&now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OPERATION))?;
        }
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        tracing::info!(run_id, name = %run.name, shards = run.shards.len(), jobs = run.jobs.len(), "run created");
        Ok(RunId(run_id))
    }

    async fn find_run(&self, name: &str) -> Result<Option<RunInfo>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE name = $1")))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("finding a run"))?;
        row.map(|row| run_from_row(&row)).transpose()
    }

    async fn lease(&self, request: &LeaseRequest) -> Result<Vec<LeasedJob>> {
        const OPERATION: &str = "leasing jobs";
        if request.max_jobs == 0 {
            return Ok(Vec::new());
        }
        let expires = request.now + chrono_duration(request.lease_duration);
        let mut tx = self.begin_write(OPERATION).await?;
        let candidates = sqlx::query(LEASE_CANDIDATES)
            .bind(&request.bundle_sha256)
            .bind(timestamp(request.now))
            .bind(i64::from(request.max_jobs))
            .bind(&request.worker_id)
            .bind(&request.worker_name)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let order = candidates.iter().map(|row| column::<_, i64>(row, "id")).collect::<Result<Vec<_>>>()?;
        let rows = sqlx::query(LEASE_UPDATE)
            .bind(&request.worker_id)
            .bind(timestamp(expires))
            .bind(timestamp(request.now))
            .bind(id_array(order.iter().copied()))
            .bind(&request.worker_name)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        let mut leased = HashMap::with_capacity(rows.len());
        for row in &rows {
            let job = LeasedJob {
                job: JobId(column(row, "id")?),
                run: RunId(column(row, "run_id")?),
                shard: ShardId(column(row, "shard_id")?),
                attempt: Attempt(column(row, "attempt")?),
                sample_id: column(row, "sample_id")?,
                spec: column(row, "spec")?,
                lease_expires_at: expires,
            };
            leased.insert(job.job.0, job);
        }
        Ok(order.into_iter().filter_map(|id| leased.remove(&id)).collect())
    }

    async fn heartbeat(&self, worker: &str, held: &[JobAttempt], lease_duration: Duration, now: DateTime<Utc>) -> Result<Vec<JobAttempt>> {
        const OPERATION: &str = "extending leases";
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let expires = timestamp(now + chrono_duration(lease_duration));
        let now = timestamp(now);
        let mut tx = self.begin_write(OPERATION).await?;
        let mut extended = Vec::with_capacity(held.len());
        for lease in held {
            let result = sqlx::query(HEARTBEAT)
                .bind(lease.job.0)
                .bind(lease.attempt.0)
                .bind(worker)
                .bind(&expires)
                .bind(&now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OPERATION))?;
            if result.rows_affected() == 1 {
                extended.push(*lease);
            }
        }
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        Ok(extended)
    }

    async fn complete(&self, completions: &[CompletionRequest], now: DateTime<Utc>) -> Result<Vec<CompletionReport>> {
        const OPERATION: &str = "completing jobs";
        let mut tx = self.begin_write(OPERATION).await?;
        let mut views = load_jobs(&mut tx, completions.iter().map(|request| request.job.0), OPERATION).await?;
        let (reports, writes) = plan_complete(&mut views, completions);
        write_jobs(&mut tx, &writes, now, OPERATION).await?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        Ok(reports)
    }

    async fn fail(&self, failures: &[FailureRequest], policy: &RetryPolicy, now: DateTime<Utc>) -> Result<Vec<FailureReport>> {
        const OPERATION: &str = "recording job failures";
        let mut tx = self.begin_write(OPERATION).await?;
        let mut views = load_jobs(&mut tx, failures.iter().map(|request| request.job.0), OPERATION).await?;
        let (reports, writes) = plan_fail(&mut views, failures, policy, now);
        record_attempts(&mut tx, &history::ended_by_failures(failures, &reports), now, OPERATION).await?;
        write_jobs(&mut tx, &writes, now, OPERATION).await?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        Ok(reports)
    }

    async fn reap_expired(&self, now: DateTime<Utc>) -> Result<Vec<ReapedJob>> {
        const OPERATION: &str = "reaping expired leases";
        let mut tx = self.begin_write(OPERATION).await?;
        let rows = sqlx::query(LOAD_EXPIRED).bind(timestamp(now)).fetch_all(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
        let expired = rows
            .iter()
            .map(|row| {
                let (id, view) = view_from_row(row)?;
                Ok((id, view, cap(column(row, "max_lost")?)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let (reaped, writes) = plan_reap(&expired);
        record_attempts(&mut tx, &history::ended_by_reap(&reaped), now, OPERATION).await?;
        write_jobs(&mut tx, &writes, now, OPERATION).await?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        Ok(reaped)
    }

    async fn run_status(&self, run: RunId) -> Result<RunStatus> {
        const OPERATION: &str = "reading run status";
        let info = self.run_info(run).await?;
        // One read transaction, so the shard list and the counts agree.
        let mut tx = self.pool.begin().await.map_err(StoreError::db(OPERATION))?;
        let shard_rows =
            sqlx::query("SELECT id, key FROM shards WHERE run_id = $1 ORDER BY id").bind(run.0).fetch_all(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
        let count_rows = sqlx::query(SHARD_COUNTS).bind(run.0).fetch_all(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        let shards = shard_rows.iter().map(|row| Ok((ShardId(column(row, "id")?), column(row, "key")?))).collect::<Result<Vec<_>>>()?;
        let mut counts = Vec::with_capacity(count_rows.len());
        let mut total = StateCounts::default();
        let mut last_change = None;
        for row in &count_rows {
            let shard = ShardId(column(row, "shard_id")?);
            let state = parse_job_state(&column::<_, String>(row, "state")?)?;
            let jobs = u64::try_from(column::<_, i64>(row, "jobs")?)
                .map_err(|_| StoreError::Corrupt { detail: format!("the state counters of run {run} add up to a negative number") })?;
            total.add(state, jobs);
            counts.push((shard, state, jobs));
            if let Some(at) = column::<_, Option<String>>(row, "last_change")? {
                last_change = last_change.max(Some(parse_timestamp(&at)?));
            }
        }
        Ok(RunStatus { run: info, counts: total, last_change, shards: shard_statuses(shards, &counts) })
    }

    async fn resubmit(&self, jobs: &[Resubmission], now: DateTime<Utc>) -> Result<Vec<ResubmitReport>> {
        const OPERATION: &str = "resubmitting jobs";
        let mut tx = self.begin_write(OPERATION).await?;
        let mut views = load_jobs(&mut tx, jobs.iter().map(|request| request.job.0), OPERATION).await?;
        let outputs_replaced = super::regenerated_outputs(&views, jobs);
        let (reports, writes) = plan_resubmit(&mut views, jobs, now);
        write_jobs(&mut tx, &writes, now, OPERATION).await?;
        if !outputs_replaced.is_empty() {
            sqlx::query("UPDATE runs SET manifest_succeeded = NULL, manifest_failed = NULL WHERE id IN (SELECT run_id FROM jobs WHERE id IN (SELECT value FROM json_each($1)))")
                .bind(id_array(outputs_replaced.into_iter()))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OPERATION))?;
        }
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        Ok(reports)
    }

    async fn cancel_run(&self, run: RunId, now: DateTime<Utc>) -> Result<()> {
        self.change_run(run, RunAction::Cancel, now).await
    }

    async fn pause_run(&self, run: RunId, now: DateTime<Utc>) -> Result<()> {
        self.change_run(run, RunAction::Pause, now).await
    }

    async fn resume_run(&self, run: RunId, now: DateTime<Utc>) -> Result<()> {
        self.change_run(run, RunAction::Resume, now).await
    }

    async fn succeeded_jobs(&self, run: RunId) -> Result<SucceededStream<'_>> {
        self.run_info(run).await?;
        let rows = sqlx::query(SUCCEEDED_JOBS).bind(run.0).fetch(&self.pool);
        Ok(rows.map(|row| succeeded_from_row(&row.map_err(StoreError::db("listing succeeded jobs"))?)).boxed())
    }

    async fn run(&self, run: RunId) -> Result<RunInfo> {
        self.run_info(run).await
    }

    async fn list_runs(&self) -> Result<Vec<RunInfo>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id")))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing runs"))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn set_run_spec(&self, run: RunId, spec: &str, max_lost: u32, now: DateTime<Utc>) -> Result<()> {
        let done = sqlx::query("UPDATE runs SET spec = $2, updated_at = $3, max_lost = $4 WHERE id = $1")
            .bind(run.0)
            .bind(spec)
            .bind(timestamp(now))
            .bind(i64::from(max_lost))
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("replacing a run's spec"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::RunNotFound { run });
        }
        Ok(())
    }

    async fn job_records(&self, jobs: &[JobId]) -> Result<Vec<JobRecord>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(&jobs.iter().map(|job| job.0).collect::<Vec<_>>()).map_err(|e| StoreError::Corrupt { detail: e.to_string() })?;
        let rows = sqlx::query(JOB_RECORDS).bind(ids).fetch_all(&self.pool).await.map_err(StoreError::db("reading jobs"))?;
        rows.iter().map(record_from_row).collect()
    }

    async fn has_unfinished(&self, run: RunId) -> Result<bool> {
        sqlx::query_scalar(HAS_UNFINISHED).bind(run.0).fetch_one(&self.pool).await.map_err(StoreError::db("checking whether a run is finished"))
    }

    async fn run_jobs(&self, run: RunId, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let keys = filter.shard_keys.as_ref().map(serde_json::to_string).transpose().map_err(|e| StoreError::Corrupt { detail: e.to_string() })?;
        let rows = sqlx::query(if filter.newest_first { RUN_JOBS_NEWEST.as_str() } else { RUN_JOBS })
            .bind(run.0)
            .bind(filter.state.map(|state| state.as_str()))
            .bind(keys)
            .bind(filter.limit.map_or(-1, i64::from))
            .bind(filter.worker.as_deref())
            .bind(filter.failure_class.map(|class| class.as_str()))
            .bind(filter.after.map(|job| job.0))
            .bind(filter.sample_prefix.as_deref())
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing a run's jobs"))?;
        rows.iter().map(record_from_row).collect()
    }

    async fn claim_manifest(&self, run: RunId, counts: ManifestCounts, writer: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<ManifestClaim> {
        const OPERATION: &str = "claiming the write of a manifest";
        let mut tx = self.begin_write(OPERATION).await?;
        let claimed = sqlx::query(CLAIM_MANIFEST)
            .bind(run.0)
            .bind(writer)
            .bind(timestamp(until))
            .bind(timestamp(now))
            .bind(counts.succeeded as i64)
            .bind(counts.failed as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        let row = sqlx::query("SELECT manifest_succeeded, manifest_failed, manifest_writer, manifest_claimed_until FROM runs WHERE id = $1")
            .bind(run.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        if claimed.is_some() {
            return Ok(ManifestClaim::Claimed);
        }
        let row = row.ok_or(StoreError::RunNotFound { run })?;
        let written = match (column::<_, Option<i64>>(&row, "manifest_succeeded")?, column::<_, Option<i64>>(&row, "manifest_failed")?) {
            (Some(succeeded), Some(failed)) => Some(ManifestCounts { succeeded: succeeded as u64, failed: failed as u64 }),
            _ => None,
        };
        let until = column::<_, Option<String>>(&row, "manifest_claimed_until")?.map(|text| parse_timestamp(&text)).transpose()?;
        Ok(manifest_claim_from(counts, written, column(&row, "manifest_writer")?, until, now))
    }

    async fn renew_manifest_claim(&self, run: RunId, writer: &str, until: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(super::RENEW_MANIFEST_CLAIM)
            .bind(run.0)
            .bind(writer)
            .bind(timestamp(until))
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("renewing a manifest claim"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn end_manifest_claim(&self, run: RunId, writer: &str, written: Option<ManifestCounts>) -> Result<bool> {
        let done = sqlx::query(super::END_MANIFEST_CLAIM)
            .bind(run.0)
            .bind(writer)
            .bind(written.map(|c| c.succeeded as i64))
            .bind(written.map(|c| c.failed as i64))
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("ending a manifest claim"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_worker_outcomes(
        &self,
        run: RunId,
        worker: &str,
        outcomes: Outcomes<'_>,
        quarantine_after: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Quarantined>> {
        const OPERATION: &str = "recording a worker's failure streak";
        if outcomes.retryable_failures.is_empty() {
            // Successes only (the common report): end a running streak in one statement.
            if outcomes.succeeded > 0 {
                sqlx::query(RESET_STREAK).bind(run.0).bind(worker).bind(timestamp(now)).execute(&self.pool).await.map_err(StoreError::db(OPERATION))?;
            }
            return Ok(None);
        }
        let mut tx = self.begin_write(OPERATION).await?;
        let row = sqlx::query("SELECT failures, errors, quarantined_at FROM run_workers WHERE run_id = $1 AND worker = $2")
            .bind(run.0)
            .bind(worker)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        let mut streak = row.as_ref().map(streak_from_row).transpose()?.unwrap_or_default();
        let started = quarantine::record(&mut streak, outcomes, quarantine_after, now);
        sqlx::query(
            "INSERT INTO run_workers (run_id, worker, failures, errors, quarantined_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (run_id, worker) DO UPDATE SET failures = excluded.failures, errors = excluded.errors, \
             quarantined_at = excluded.quarantined_at, updated_at = excluded.updated_at",
        )
        .bind(run.0)
        .bind(worker)
        .bind(i64::from(streak.failures))
        .bind(serde_json::Value::from(streak.errors.clone()).to_string())
        .bind(streak.quarantined_at.map(timestamp))
        .bind(timestamp(now))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OPERATION))?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        Ok(started.then(|| Quarantined { run, worker: worker.to_string(), since: now, failures: streak.failures, errors: streak.errors }))
    }

    async fn quarantined_workers(&self, run: Option<RunId>) -> Result<Vec<Quarantined>> {
        let rows = sqlx::query(
            "SELECT run_id, worker, failures, errors, quarantined_at FROM run_workers \
             WHERE quarantined_at IS NOT NULL AND ($1 IS NULL OR run_id = $1) ORDER BY run_id, worker",
        )
        .bind(run.map(|run| run.0))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("listing quarantined workers"))?;
        rows.iter().map(quarantined_from_row).collect()
    }

    async fn attempts(&self, job: JobId) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(ATTEMPTS).bind(job.0).fetch_all(&self.pool).await.map_err(StoreError::db("reading a job's attempts"))?;
        rows.iter().map(|row| super::attempt_from_row(row, parse_timestamp(&column::<_, String>(row, "ended_at")?)?)).collect()
    }

    async fn release_worker(&self, worker: &str, run: Option<RunId>, now: DateTime<Utc>) -> Result<Vec<RunId>> {
        // One statement: atomic without a transaction of its own.
        let released: Vec<i64> = sqlx::query_scalar(
            "UPDATE run_workers SET failures = 0, errors = '[]', quarantined_at = NULL, updated_at = $3 \
             WHERE worker = $1 AND quarantined_at IS NOT NULL AND ($2 IS NULL OR run_id = $2) RETURNING run_id",
        )
        .bind(worker)
        .bind(run.map(|run| run.0))
        .bind(timestamp(now))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("releasing a quarantined worker"))?;
        let mut released: Vec<RunId> = released.into_iter().map(RunId).collect();
        released.sort();
        Ok(released)
    }
}

fn streak_from_row(row: &SqliteRow) -> Result<Streak> {
    let failures: i64 = column(row, "failures")?;
    Ok(Streak {
        failures: u32::try_from(failures).map_err(|_| StoreError::Corrupt { detail: format!("a worker has failures = {failures}") })?,
        errors: parse_errors(&column::<_, String>(row, "errors")?)?,
        quarantined_at: column::<_, Option<String>>(row, "quarantined_at")?.as_deref().map(parse_timestamp).transpose()?,
    })
}

fn quarantined_from_row(row: &SqliteRow) -> Result<Quarantined> {
    quarantined(RunId(column(row, "run_id")?), column(row, "worker")?, streak_from_row(row)?)
}

fn record_from_row(row: &SqliteRow) -> Result<JobRecord> {
    Ok(JobRecord {
        job: JobId(column(row, "id")?),
        run: RunId(column(row, "run_id")?),
        shard_key: column(row, "shard_key")?,
        sample_id: column(row, "sample_id")?,
        state: parse_job_state(&column::<_, String>(row, "state")?)?,
        attempt: Attempt(column(row, "attempt")?),
        leased_by: column(row, "leased_by")?,
        spec: column(row, "spec")?,
        failure_class: parse_failure_class(column(row, "failure_class")?)?,
        last_error: column(row, "last_error")?,
        worker: column(row, "worker")?,
        result: column(row, "result")?,
        updated_at: parse_timestamp(&column::<_, String>(row, "updated_at")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_are_fixed_width_so_text_order_is_time_order() {
        let early = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let late = early + chrono::Duration::microseconds(1_500_000);
        assert_eq!(timestamp(early), "2026-01-02T03:04:05.000000Z");
        assert_eq!(timestamp(late), "2026-01-02T03:04:06.500000Z");
        assert!(timestamp(early) < timestamp(late));
        assert_eq!(parse_timestamp(&timestamp(late)).unwrap(), late);
    }
}
