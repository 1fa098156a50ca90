//! Embedded mode's [`JobSource`]: the one job loop ([`acufarm_worker::jobloop`]) leasing straight
//! from the run's SQLite store. A completion is committed in storage (staging → final key, label
//! copied) and recorded in one transaction per batch, exactly as the farm's coordinator does it;
//! failures go through the run's retry policy; both feed the worker's failure streak, so a
//! worker that keeps failing is quarantined here too.

use super::Shared;
use acufarm_coordinator::Store;
use acufarm_coordinator::quarantine::{self, Outcomes};
use acufarm_coordinator::runs::{self, Commit, Producer, StagedOutput};
use acufarm_coordinator::state::Failure;
use acufarm_coordinator::store::{CompletionRequest, FailureRequest, JobAttempt, LeaseRequest};
use acufarm_core::{Attempt, FailureClass, JobId, JobSpec};
use acufarm_storage::Storage;
use acufarm_worker::executor::{JobError, Staged};
use acufarm_worker::jobloop::{Idle, Job, JobKey, JobSource, LeasedJob, RunRoots};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long an embedded worker holds a job without a heartbeat before the lease counts as lost.
pub const LEASE: Duration = Duration::from_secs(120);
const HEARTBEAT: Duration = Duration::from_secs(30);

pub struct StoreSource {
    shared: Shared,
    /// This worker's name (`embedded-<i>`): its leases, streak and quarantine go by it.
    worker: String,
    roots: Arc<RunRoots>,
}

impl StoreSource {
    pub fn new(shared: Shared, worker: String) -> Self {
        let roots = Arc::new(RunRoots {
            input: shared.input.clone(),
            output: shared.output.clone(),
            scenes: shared.scenes.clone(),
            scenes_url: String::from("spec-dir"),
        });
        Self { shared, worker, roots }
    }

    /// Applies a report to this worker's failure streak; says so when it starts a quarantine.
    async fn record(&self, outcomes: Outcomes<'_>) -> anyhow::Result<()> {
        let shared = &self.shared;
        let started = shared.store.record_worker_outcomes(shared.run_id, &self.worker, outcomes, shared.policy.quarantine_after, Utc::now()).await?;
        if let Some(q) = started {
            shared.progress.note(&format!(
                "{} stops: {} retryable failures in a row (last: {})",
                q.worker,
                q.failures,
                q.errors.last().map(String::as_str).unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// Records failures under the run's policy; returns how many became final.
    async fn record_failures(&self, failures: &[FailureRequest], count_against_worker: bool) -> anyhow::Result<u64> {
        if failures.is_empty() {
            return Ok(0);
        }
        let shared = &self.shared;
        let reports = shared.store.fail(failures, &shared.policy, Utc::now()).await?;
        let final_ = reports.iter().filter(|r| matches!(r.outcome, Failure::Failed { .. })).count() as u64;
        if count_against_worker {
            let retryable = quarantine::counted_failures(failures, &reports);
            self.record(Outcomes { succeeded: 0, retryable_failures: &retryable }).await?;
        }
        Ok(final_)
    }
}

impl JobSource for StoreSource {
    type Error = anyhow::Error;

    async fn lease(&self, max: usize) -> anyhow::Result<Vec<LeasedJob>> {
        let shared = &self.shared;
        let request = LeaseRequest {
            worker_id: self.worker.clone(),
            worker_name: self.worker.clone(),
            bundle_sha256: shared.bundle.sha256.clone(),
            max_jobs: u32::try_from(max).unwrap_or(u32::MAX),
            lease_duration: LEASE,
            now: Utc::now(),
        };
        let leased = shared.store.lease(&request).await?;
        Ok(leased
            .into_iter()
            .map(|lease| LeasedJob {
                job: Job::new(
                    lease.run.0,
                    (lease.job.0, lease.attempt.0),
                    lease.sample_id,
                    Storage::staging_key(&shared.run_name, lease.job.0, lease.attempt.0),
                    &self.worker,
                    "",
                ),
                spec_json: lease.spec,
                roots: Ok(self.roots.clone()),
            })
            .collect())
    }

    async fn idle(&self) -> anyhow::Result<Idle> {
        let shared = &self.shared;
        if !shared.store.has_unfinished(shared.run_id).await? {
            return Ok(Idle::Stop);
        }
        // Quarantined: the run's jobs are not for this worker any more.
        let quarantined = shared.store.quarantined_workers(Some(shared.run_id)).await?;
        Ok(if quarantined.iter().any(|q| q.worker == self.worker) { Idle::Stop } else { Idle::Wait })
    }

    async fn heartbeat_interval(&self) -> anyhow::Result<Duration> {
        Ok(HEARTBEAT)
    }

    async fn heartbeat(&self, held: &[JobKey]) -> anyhow::Result<Option<Vec<JobKey>>> {
        let held: Vec<JobAttempt> = held.iter().map(|&(job, attempt)| JobAttempt { job: JobId(job), attempt: Attempt(attempt) }).collect();
        let kept = self.shared.store.heartbeat(&self.worker, &held, LEASE, Utc::now()).await?;
        Ok(Some(kept.iter().map(|k| (k.job.0, k.attempt.0)).collect()))
    }

    async fn complete(&self, jobs: Vec<(Job, Staged)>) -> anyhow::Result<()> {
        let shared = &self.shared;
        let ids: Vec<JobId> = jobs.iter().map(|(job, _)| JobId(job.key.0)).collect();
        let records: HashMap<JobId, _> = shared.store.job_records(&ids).await?.into_iter().map(|r| (r.job, r)).collect();
        // Only attempts that still hold their lease are committed, as the coordinator does.
        let mut specs = Vec::with_capacity(jobs.len());
        let mut refused = Vec::new();
        for (job, staged) in jobs {
            let record = records.get(&JobId(job.key.0));
            if !record.is_some_and(|r| r.held_by(Attempt(job.key.1), &self.worker)) {
                if let Err(error) = shared.output.delete(&staged.staging_key).await {
                    tracing::warn!("cannot delete stale staged output {}: {error}", staged.staging_key);
                }
                continue;
            }
            match record.map(|r| serde_json::from_str::<JobSpec>(&r.spec)) {
                Some(Ok(spec)) => specs.push((job, staged, spec)),
                _ => refused.push(FailureRequest {
                    job: JobId(job.key.0),
                    attempt: Attempt(job.key.1),
                    class: FailureClass::Permanent,
                    message: "the job spec cannot be read; run again with --force".into(),
                    detail: None,
                }),
            }
        }
        let commits = specs
            .iter()
            .map(|(job, staged, spec)| Commit {
                job: spec,
                staged: StagedOutput {
                    staging_key: staged.staging_key.clone(),
                    sha256: staged.sha256.clone(),
                    source_sha256: staged.source_sha256.clone(),
                    timings: staged.timings.clone(),
                    qa: staged.qa.clone(),
                },
                producer: Producer {
                    run: &shared.run_name,
                    bundle: shared.bundle.clone(),
                    worker: &self.worker,
                    execution_provider: &shared.execution_provider,
                    attempt: job.key.1,
                },
            })
            .collect();
        let committed = runs::commit_outputs(&shared.input, &shared.output, commits).await;
        let mut completions = Vec::with_capacity(specs.len());
        let mut commit_failures = Vec::new();
        for ((job, _, _), row) in specs.iter().zip(committed) {
            let (id, attempt) = (JobId(job.key.0), Attempt(job.key.1));
            match row {
                Ok(row) => completions.push(CompletionRequest { job: id, attempt, result: serde_json::to_string(&row)? }),
                Err(error) => {
                    let message = format!("committing the output failed: {error}");
                    tracing::warn!(job = id.0, "{message}");
                    commit_failures.push(FailureRequest { job: id, attempt, class: FailureClass::Retryable, message, detail: None });
                }
            }
        }
        let accepted = if completions.is_empty() {
            0
        } else {
            let reports = shared.store.complete(&completions, Utc::now()).await?;
            reports.iter().filter(|r| r.outcome == acufarm_coordinator::state::Completion::Accepted).count() as u64
        };
        self.record(Outcomes { succeeded: u32::try_from(accepted).unwrap_or(u32::MAX), retryable_failures: &[] }).await?;
        let failed = self.record_failures(&refused, false).await? + self.record_failures(&commit_failures, false).await?;
        shared.progress.add(accepted + failed, failed);
        if let Some(coordinator) = &shared.dashboard {
            coordinator.record_progress(shared.run_id, &self.worker, accepted);
        }
        Ok(())
    }

    async fn fail(&self, jobs: Vec<(Job, JobError)>) -> anyhow::Result<()> {
        let failures: Vec<FailureRequest> = jobs
            .into_iter()
            .map(|(job, e)| {
                let detail = Some(e.detail_json()).filter(|detail| !detail.is_empty());
                FailureRequest { job: JobId(job.key.0), attempt: Attempt(job.key.1), class: e.class, message: e.message, detail }
            })
            .collect();
        let failed = self.record_failures(&failures, true).await?;
        self.shared.progress.add(failed, failed);
        if let Some(coordinator) = &self.shared.dashboard {
            coordinator.record_progress(self.shared.run_id, &self.worker, 0);
        }
        Ok(())
    }
}
