//! The Postgres store: the farm's truth. The claim is one `FOR UPDATE SKIP LOCKED` statement so
//! any number of coordinator replicas can hand out work without handing a job out twice; batch
//! operations lock their rows in id order, decide with [`crate::state`] and write back with one
//! `unnest` update.

use super::history::{self, AttemptRecord};
use super::{CompletionReport, CompletionRequest, FailureReport, FailureRequest, ReapedJob, Resubmission, ResubmitReport};
use super::{
    JobAttempt, JobFilter, JobRecord, JobWrite, LeaseRequest, LeasedJob, NewRun, Result, RunAction, RunInfo, RunState, RunStatus, Store, SucceededStream,
    chrono_duration, column, parse_failure_class, parse_job_state, plan_complete, plan_fail, plan_reap, plan_resubmit, run_transition, shard_statuses,
    succeeded_from_row, validate_new_run,
};
use super::{ManifestClaim, ManifestCounts, RESET_STREAK, manifest_claim_from, parse_errors, quarantined};
use crate::error::{StoreError, redact_url};
use crate::quarantine::{self, Outcomes, Quarantined, Streak};
use crate::retry::RetryPolicy;
use crate::state::{JobView, StateCounts};
use acufarm_core::{Attempt, JobId, RunId, ShardId};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};
use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::Duration;

const LEASE: &str = include_str!("sql/postgres/lease.sql");
const HEARTBEAT: &str = include_str!("sql/postgres/heartbeat.sql");
const LOCK_JOBS: &str = include_str!("sql/postgres/lock_jobs.sql");
const LOCK_EXPIRED: &str = include_str!("sql/postgres/lock_expired.sql");
const WRITE_JOBS: &str = include_str!("sql/postgres/write_jobs.sql");
const WRITE_SPECS: &str = include_str!("sql/postgres/write_specs.sql");
const INSERT_SHARDS: &str = include_str!("sql/postgres/insert_shards.sql");
const INSERT_JOBS: &str = include_str!("sql/postgres/insert_jobs.sql");
const CANCEL_JOBS: &str = include_str!("sql/postgres/cancel_jobs.sql");
const SHARD_COUNTS: &str = include_str!("sql/postgres/shard_counts.sql");
const SUCCEEDED_JOBS: &str = include_str!("sql/postgres/succeeded_jobs.sql");
const JOB_RECORDS: &str = include_str!("sql/postgres/job_records.sql");
const HAS_UNFINISHED: &str = include_str!("sql/postgres/has_unfinished.sql");
static RUN_JOBS_NEWEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| super::newest_first(RUN_JOBS));
const RUN_JOBS: &str = include_str!("sql/postgres/run_jobs.sql");
const CLAIM_MANIFEST: &str = include_str!("sql/postgres/claim_manifest.sql");
const RECORD_ATTEMPTS: &str = include_str!("sql/postgres/record_attempts.sql");
const ATTEMPTS: &str =
    "SELECT attempt, worker, ended_at, outcome, failure_class, message, detail::text AS detail FROM job_attempts WHERE job_id = $1 ORDER BY attempt";
const RUN_COLUMNS: &str = "id, name, spec, priority, bundle_sha256, max_lost, state, created_at";

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user[:password]@host:port/database`); fails at once, with
    /// the URL (password masked) in the message, when the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|source| StoreError::Unreachable { url: redact_url(url), source })?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations in `migrations/postgres` the database lacks and returns their
    /// versions; safe to run from several replicas at once (sqlx serializes them with an advisory
    /// lock). Migrations a newer release applied are kept, not refused: they are written
    /// expand-then-contract, so this binary still works on them, and during a rolling upgrade (or
    /// a rollback) an older replica can restart on the newer schema.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let mut migrator = sqlx::migrate!("../migrations/postgres");
        migrator.set_ignore_missing(true);
        // None yet on a fresh database (the table does not exist until the first run).
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(&self.pool).await.unwrap_or_default();
        migrator.run(&self.pool).await.map_err(|source| StoreError::Migrate { source })?;
        Ok(migrator.iter().map(|m| m.version).filter(|v| !applied.contains(v)).collect())
    }

    async fn begin(&self, operation: &'static str) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(StoreError::db(operation))
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
        let mut tx = self.begin(OPERATION).await?;
        let current: Option<String> = sqlx::query_scalar("SELECT state FROM runs WHERE id = $1 FOR UPDATE")
            .bind(run.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        let current: RunState = current.ok_or(StoreError::RunNotFound { run })?.parse()?;
        let Some(next) = run_transition(run, current, action)? else { return Ok(()) };
        sqlx::query("UPDATE runs SET state = $2, updated_at = $3 WHERE id = $1")
            .bind(run.0)
            .bind(next.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        if next == RunState::Cancelled {
            sqlx::query(CANCEL_JOBS).bind(run.0).bind(now).execute(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
        }
        tx.commit().await.map_err(StoreError::db(OPERATION))
    }
}

fn run_from_row(row: &PgRow) -> Result<RunInfo> {
    Ok(RunInfo {
        id: RunId(column(row, "id")?),
        name: column(row, "name")?,
        spec: column(row, "spec")?,
        priority: column(row, "priority")?,
        bundle_sha256: column(row, "bundle_sha256")?,
        max_lost: cap(column(row, "max_lost")?)?,
        state: column::<_, String>(row, "state")?.parse()?,
        created_at: column(row, "created_at")?,
    })
}

/// A lost-lease cap as stored (a non-negative INTEGER).
fn cap(max_lost: i32) -> Result<u32> {
    u32::try_from(max_lost).map_err(|_| StoreError::Corrupt { detail: format!("a run has max_lost = {max_lost}") })
}

/// A stored cap: the schema's INTEGER, so a cap beyond it is clamped (it means "never fail").
fn stored_cap(max_lost: u32) -> i32 {
    i32::try_from(max_lost).unwrap_or(i32::MAX)
}

fn record_from_row(row: &PgRow) -> Result<JobRecord> {
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
        updated_at: column(row, "updated_at")?,
    })
}

fn view_from_row(row: &PgRow) -> Result<(JobId, JobView)> {
    let id = JobId(column(row, "id")?);
    let lost: i32 = column(row, "lost")?;
    let view = JobView {
        state: parse_job_state(&column::<_, String>(row, "state")?)?,
        attempt: Attempt(column(row, "attempt")?),
        attempt_base: Attempt(column(row, "attempt_base")?),
        lost: u32::try_from(lost).map_err(|_| StoreError::Corrupt { detail: format!("job {id} has lost = {lost}") })?,
        holder: column(row, "leased_by")?,
    };
    Ok((id, view))
}

/// Locks the named jobs and returns what the state machine needs to know about them.
async fn lock_jobs(tx: &mut Transaction<'_, Postgres>, ids: Vec<i64>, operation: &'static str) -> Result<HashMap<JobId, JobView>> {
    let rows = sqlx::query(LOCK_JOBS).bind(ids).fetch_all(&mut **tx).await.map_err(StoreError::db(operation))?;
    rows.iter().map(view_from_row).collect()
}

/// Records ended attempts in one statement (the worker is the name on the job's latest attempt).
async fn record_attempts(tx: &mut Transaction<'_, Postgres>, ends: &[history::AttemptEnd<'_>], now: DateTime<Utc>, operation: &'static str) -> Result<()> {
    if ends.is_empty() {
        return Ok(());
    }
    sqlx::query(RECORD_ATTEMPTS)
        .bind(ends.iter().map(|end| end.job.0).collect::<Vec<_>>())
        .bind(now)
        .bind(ends.iter().map(|end| end.attempt.0).collect::<Vec<_>>())
        .bind(ends.iter().map(|end| end.outcome.as_str()).collect::<Vec<_>>())
        .bind(ends.iter().map(|end| end.class.map(|class| class.as_str())).collect::<Vec<_>>())
        .bind(ends.iter().map(|end| end.message.as_str()).collect::<Vec<_>>())
        .bind(ends.iter().map(|end| end.detail).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(StoreError::db(operation))?;
    Ok(())
}

/// Writes a batch of decisions in one statement.
async fn write_jobs(tx: &mut Transaction<'_, Postgres>, writes: &[JobWrite<'_>], now: DateTime<Utc>, operation: &'static str) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    sqlx::query(WRITE_JOBS)
        .bind(writes.iter().map(|write| write.id.0).collect::<Vec<_>>())
        .bind(writes.iter().map(|write| write.state.as_str()).collect::<Vec<_>>())
        .bind(writes.iter().map(|write| write.lost as i32).collect::<Vec<_>>())
        .bind(writes.iter().map(|write| write.not_before).collect::<Vec<_>>())
        .bind(writes.iter().map(|write| write.result).collect::<Vec<_>>())
        .bind(writes.iter().map(|write| write.failure_class.map(|class| class.as_str())).collect::<Vec<_>>())
        .bind(writes.iter().map(|write| write.last_error.clone()).collect::<Vec<_>>())
        .bind(writes.iter().map(|write| write.attempt_base.map(|attempt| attempt.0)).collect::<Vec<_>>())
        .bind(now)
        .bind(writes.iter().map(|write| write.failed_by.as_deref()).collect::<Vec<_>>())
        .bind(writes.iter().map(|write| write.others_until).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(StoreError::db(operation))?;
    let specs: Vec<(i64, &str)> = writes.iter().filter_map(|write| Some((write.id.0, write.spec.as_deref()?))).collect();
    if !specs.is_empty() {
        sqlx::query(WRITE_SPECS)
            .bind(specs.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(specs.iter().map(|(_, spec)| *spec).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(operation))?;
    }
    Ok(())
}

impl Store for PgStore {
    async fn create_run(&self, run: &NewRun, force: bool, now: DateTime<Utc>) -> Result<RunId> {
        const OPERATION: &str = "creating a run";
        validate_new_run(run)?;
        let mut tx = self.begin(OPERATION).await?;
        let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE name = $1 FOR UPDATE")
            .bind(&run.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        if let Some(existing) = existing {
            if !force {
                return Err(StoreError::RunNameTaken { name: run.name.clone() });
            }
            tracing::info!(run_id = existing, name = %run.name, "replacing run (--force)");
            sqlx::query("DELETE FROM runs WHERE id = $1").bind(existing).execute(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
        }
        let inserted = sqlx::query_scalar(
            "INSERT INTO runs (name, spec, priority, bundle_sha256, max_lost, created_at, updated_at) VALUES ($1, $2, $3, $4, $6, $5, $5) RETURNING id",
        )
        .bind(&run.name)
        .bind(&run.spec)
        .bind(run.priority)
        .bind(&run.bundle_sha256)
        .bind(now)
        .bind(stored_cap(run.max_lost))
        .fetch_one(&mut *tx)
        .await;
        let run_id: i64 = match inserted {
            Ok(id) => id,
            // Another submit of the same name committed between our check and our insert.
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                return Err(StoreError::RunNameTaken { name: run.name.clone() });
            }
            Err(error) => return Err(StoreError::db(OPERATION)(error)),
        };
        let shard_rows = sqlx::query(INSERT_SHARDS).bind(run_id).bind(&run.shards).fetch_all(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
        let mut shard_ids = HashMap::with_capacity(shard_rows.len());
        for row in &shard_rows {
            shard_ids.insert(column::<_, String>(row, "key")?, column::<_, i64>(row, "id")?);
        }
        // validate_new_run checked that every job's shard exists.
        let job_shards: Vec<i64> = run.jobs.iter().map(|job| shard_ids[&job.shard_key]).collect();
        let samples: Vec<&str> = run.jobs.iter().map(|job| job.sample_id.as_str()).collect();
        let specs: Vec<String> = run.jobs.iter().map(|job| job.spec.to_string()).collect();
        sqlx::query(INSERT_JOBS)
            .bind(run_id)
            .bind(job_shards)
            .bind(samples)
            .bind(specs)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        // Fresh statistics for the claim and the status queries: a big insert changes the jobs
        // table's shape at once, and autovacuum may be off or minutes away.
        if let Err(error) = sqlx::query("ANALYZE jobs").execute(&self.pool).await {
            tracing::warn!("cannot analyze the jobs table after creating run {run_id}: {error}");
        }
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
        let rows = sqlx::query(LEASE)
            .bind(&request.worker_id)
            .bind(&request.bundle_sha256)
            .bind(i64::from(request.max_jobs))
            .bind(request.now)
            .bind(expires)
            .bind(&request.worker_name)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db(OPERATION))?;
        let read = |row: &PgRow| -> Result<(i32, LeasedJob)> {
            Ok((
                column(row, "priority")?,
                LeasedJob {
                    job: JobId(column(row, "id")?),
                    run: RunId(column(row, "run_id")?),
                    shard: ShardId(column(row, "shard_id")?),
                    attempt: Attempt(column(row, "attempt")?),
                    sample_id: column(row, "sample_id")?,
                    spec: column(row, "spec")?,
                    lease_expires_at: expires,
                },
            ))
        };
        let mut leased = rows.iter().map(read).collect::<Result<Vec<_>>>()?;
        // RETURNING has no order; hand jobs out in the order they were chosen.
        leased.sort_by_key(|(priority, job)| (Reverse(*priority), job.job));
        Ok(leased.into_iter().map(|(_, job)| job).collect())
    }

    async fn heartbeat(&self, worker: &str, held: &[JobAttempt], lease_duration: Duration, now: DateTime<Utc>) -> Result<Vec<JobAttempt>> {
        const OPERATION: &str = "extending leases";
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(HEARTBEAT)
            .bind(held.iter().map(|held| held.job.0).collect::<Vec<_>>())
            .bind(held.iter().map(|held| held.attempt.0).collect::<Vec<_>>())
            .bind(worker)
            .bind(now + chrono_duration(lease_duration))
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db(OPERATION))?;
        let mut extended = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            extended.insert(JobAttempt { job: JobId(column(row, "id")?), attempt: Attempt(column(row, "attempt")?) });
        }
        Ok(held.iter().copied().filter(|held| extended.contains(held)).collect())
    }

    async fn complete(&self, completions: &[CompletionRequest], now: DateTime<Utc>) -> Result<Vec<CompletionReport>> {
        const OPERATION: &str = "completing jobs";
        let mut tx = self.begin(OPERATION).await?;
        let mut views = lock_jobs(&mut tx, completions.iter().map(|request| request.job.0).collect(), OPERATION).await?;
        let (reports, writes) = plan_complete(&mut views, completions);
        write_jobs(&mut tx, &writes, now, OPERATION).await?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        Ok(reports)
    }

    async fn fail(&self, failures: &[FailureRequest], policy: &RetryPolicy, now: DateTime<Utc>) -> Result<Vec<FailureReport>> {
        const OPERATION: &str = "recording job failures";
        let mut tx = self.begin(OPERATION).await?;
        let mut views = lock_jobs(&mut tx, failures.iter().map(|request| request.job.0).collect(), OPERATION).await?;
        let (reports, writes) = plan_fail(&mut views, failures, policy, now);
        record_attempts(&mut tx, &history::ended_by_failures(failures, &reports), now, OPERATION).await?;
        write_jobs(&mut tx, &writes, now, OPERATION).await?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        Ok(reports)
    }

    async fn reap_expired(&self, now: DateTime<Utc>) -> Result<Vec<ReapedJob>> {
        const OPERATION: &str = "reaping expired leases";
        let mut tx = self.begin(OPERATION).await?;
        let rows = sqlx::query(LOCK_EXPIRED).bind(now).fetch_all(&mut *tx).await.map_err(StoreError::db(OPERATION))?;
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
        // One snapshot, so the shard list and the counts agree.
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(StoreError::db(OPERATION))?;
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
            last_change = last_change.max(column::<_, Option<DateTime<Utc>>>(row, "last_change")?);
        }
        Ok(RunStatus { run: info, counts: total, last_change, shards: shard_statuses(shards, &counts) })
    }

    async fn resubmit(&self, jobs: &[Resubmission], now: DateTime<Utc>) -> Result<Vec<ResubmitReport>> {
        const OPERATION: &str = "resubmitting jobs";
        let mut tx = self.begin(OPERATION).await?;
        let mut views = lock_jobs(&mut tx, jobs.iter().map(|request| request.job.0).collect(), OPERATION).await?;
        let outputs_replaced = super::regenerated_outputs(&views, jobs);
        let (reports, writes) = plan_resubmit(&mut views, jobs, now);
        write_jobs(&mut tx, &writes, now, OPERATION).await?;
        if !outputs_replaced.is_empty() {
            sqlx::query("UPDATE runs SET manifest_succeeded = NULL, manifest_failed = NULL WHERE id IN (SELECT run_id FROM jobs WHERE id = ANY($1))")
                .bind(outputs_replaced)
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
            .bind(now)
            .bind(stored_cap(max_lost))
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
        let rows = sqlx::query(JOB_RECORDS)
            .bind(jobs.iter().map(|job| job.0).collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("reading jobs"))?;
        rows.iter().map(record_from_row).collect()
    }

    async fn has_unfinished(&self, run: RunId) -> Result<bool> {
        sqlx::query_scalar(HAS_UNFINISHED).bind(run.0).fetch_one(&self.pool).await.map_err(StoreError::db("checking whether a run is finished"))
    }

    async fn run_jobs(&self, run: RunId, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(if filter.newest_first { RUN_JOBS_NEWEST.as_str() } else { RUN_JOBS })
            .bind(run.0)
            .bind(filter.state.map(|state| state.as_str()))
            .bind(filter.shard_keys.clone())
            .bind(filter.limit.map(i64::from))
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
        let claimed = sqlx::query(CLAIM_MANIFEST)
            .bind(run.0)
            .bind(writer)
            .bind(until)
            .bind(now)
            .bind(counts.succeeded as i64)
            .bind(counts.failed as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db(OPERATION))?;
        if claimed.is_some() {
            return Ok(ManifestClaim::Claimed);
        }
        let row = sqlx::query("SELECT manifest_succeeded, manifest_failed, manifest_writer, manifest_claimed_until FROM runs WHERE id = $1")
            .bind(run.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db(OPERATION))?
            .ok_or(StoreError::RunNotFound { run })?;
        let written = match (column::<_, Option<i64>>(&row, "manifest_succeeded")?, column::<_, Option<i64>>(&row, "manifest_failed")?) {
            (Some(succeeded), Some(failed)) => Some(ManifestCounts { succeeded: succeeded as u64, failed: failed as u64 }),
            _ => None,
        };
        Ok(manifest_claim_from(counts, written, column(&row, "manifest_writer")?, column(&row, "manifest_claimed_until")?, now))
    }

    async fn renew_manifest_claim(&self, run: RunId, writer: &str, until: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(super::RENEW_MANIFEST_CLAIM)
            .bind(run.0)
            .bind(writer)
            .bind(until)
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
                sqlx::query(RESET_STREAK).bind(run.0).bind(worker).bind(now).execute(&self.pool).await.map_err(StoreError::db(OPERATION))?;
            }
            return Ok(None);
        }
        let mut tx = self.begin(OPERATION).await?;
        sqlx::query("INSERT INTO run_workers (run_id, worker, updated_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(run.0)
            .bind(worker)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        let row = sqlx::query("SELECT failures, errors::text AS errors, quarantined_at FROM run_workers WHERE run_id = $1 AND worker = $2 FOR UPDATE")
            .bind(run.0)
            .bind(worker)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        let mut streak = streak_from_row(&row)?;
        let started = quarantine::record(&mut streak, outcomes, quarantine_after, now);
        sqlx::query("UPDATE run_workers SET failures = $3, errors = $4::json, quarantined_at = $5, updated_at = $6 WHERE run_id = $1 AND worker = $2")
            .bind(run.0)
            .bind(worker)
            .bind(i32::try_from(streak.failures).unwrap_or(i32::MAX))
            .bind(serde_json::Value::from(streak.errors.clone()).to_string())
            .bind(streak.quarantined_at)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(OPERATION))?;
        tx.commit().await.map_err(StoreError::db(OPERATION))?;
        Ok(started.then(|| Quarantined { run, worker: worker.to_string(), since: now, failures: streak.failures, errors: streak.errors }))
    }

    async fn quarantined_workers(&self, run: Option<RunId>) -> Result<Vec<Quarantined>> {
        let rows = sqlx::query(
            "SELECT run_id, worker, failures, errors::text AS errors, quarantined_at FROM run_workers \
             WHERE quarantined_at IS NOT NULL AND ($1::bigint IS NULL OR run_id = $1) ORDER BY run_id, worker",
        )
        .bind(run.map(|run| run.0))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("listing quarantined workers"))?;
        rows.iter().map(quarantined_from_row).collect()
    }

    async fn attempts(&self, job: JobId) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(ATTEMPTS).bind(job.0).fetch_all(&self.pool).await.map_err(StoreError::db("reading a job's attempts"))?;
        rows.iter().map(|row| super::attempt_from_row(row, column(row, "ended_at")?)).collect()
    }

    async fn release_worker(&self, worker: &str, run: Option<RunId>, now: DateTime<Utc>) -> Result<Vec<RunId>> {
        let mut released: Vec<RunId> = sqlx::query_scalar::<_, i64>(
            "UPDATE run_workers SET failures = 0, errors = '[]', quarantined_at = NULL, updated_at = $3 \
             WHERE worker = $1 AND quarantined_at IS NOT NULL AND ($2::bigint IS NULL OR run_id = $2) RETURNING run_id",
        )
        .bind(worker)
        .bind(run.map(|run| run.0))
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("releasing a quarantined worker"))?
        .into_iter()
        .map(RunId)
        .collect();
        released.sort();
        Ok(released)
    }
}

fn streak_from_row(row: &PgRow) -> Result<Streak> {
    let failures: i32 = column(row, "failures")?;
    Ok(Streak {
        failures: u32::try_from(failures).map_err(|_| StoreError::Corrupt { detail: format!("a worker has failures = {failures}") })?,
        errors: parse_errors(&column::<_, String>(row, "errors")?)?,
        quarantined_at: column(row, "quarantined_at")?,
    })
}

fn quarantined_from_row(row: &PgRow) -> Result<Quarantined> {
    quarantined(RunId(column(row, "run_id")?), column(row, "worker")?, streak_from_row(row)?)
}
