//! The agent's [`JobSource`]: leases, heartbeats and reports over gRPC through the [`Link`], which
//! rides out coordinator restarts and database outages with backoff and retries every report
//! until it is answered. A refusal (a coordinator that cannot serve the call right now) is logged,
//! paced, and treated as "no jobs" or "not answered"; only what the worker cannot fix by waiting
//! ends it.

use super::AgentError;
use super::link::{CallError, Link, describe};
use crate::executor::{JobError, Staged};
use crate::jobloop::plan::Pacer;
use crate::jobloop::{Idle, Job, JobKey, JobSource, LeasedJob, RunRoots};
use acufarm_core::FailureClass;
use acufarm_proto::{CompleteRequest, Completion, FailRequest, HeartbeatRequest, JobAttempt, JobFailure, LeaseRequest, Outcome, ReportOutcome, RunContext};
use acufarm_storage::Storage;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) struct GrpcSource {
    pub link: Arc<Link>,
    /// The worker's name: the coordinator keeps failure streaks and quarantines under it.
    pub name: String,
    pub bundle_name: String,
    pub bundle_sha256: String,
    /// The execution providers, recorded with every completion.
    pub execution_provider: String,
    pub cache: Mutex<Cache>,
}

/// Run storage roots (opened once per URL) and the pacing of refusal warnings.
#[derive(Default)]
pub(super) struct Cache {
    runs: HashMap<i64, Arc<RunRoots>>,
    storages: HashMap<String, Storage>,
    refused: Option<Pacer>,
}

impl Cache {
    fn storage(&mut self, url: &str) -> Result<Storage, JobError> {
        if let Some(storage) = self.storages.get(url) {
            return Ok(storage.clone());
        }
        let storage = Storage::open(url)?;
        self.storages.insert(url.to_string(), storage.clone());
        Ok(storage)
    }

    fn roots(&mut self, run: &RunContext) -> Result<Arc<RunRoots>, JobError> {
        if let Some(roots) = self.runs.get(&run.run_id) {
            return Ok(roots.clone());
        }
        let roots = Arc::new(RunRoots {
            input: self.storage(&run.input_url)?,
            output: self.storage(&run.output_url)?,
            scenes: self.storage(&run.scenes_url)?,
            scenes_url: run.scenes_url.clone(),
        });
        self.runs.insert(run.run_id, roots.clone());
        Ok(roots)
    }

    fn lock(cache: &Mutex<Self>) -> std::sync::MutexGuard<'_, Self> {
        cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl JobSource for GrpcSource {
    type Error = AgentError;

    async fn lease(&self, max: usize) -> Result<Vec<LeasedJob>, AgentError> {
        let max_jobs = u32::try_from(max).unwrap_or(u32::MAX);
        let (sha, name) = (self.bundle_sha256.clone(), self.name.clone());
        let result = self
            .link
            .call("lease", |mut client, worker_id| {
                let request = LeaseRequest { worker_id, bundle_sha256: sha.clone(), max_jobs, worker_name: name.clone() };
                async move { client.lease(request).await }
            })
            .await;
        let response = match result {
            Ok(response) => response,
            Err(CallError::Fatal(e)) => return Err(e),
            Err(CallError::Refused { endpoint, status }) => {
                if Cache::lock(&self.cache).refused.get_or_insert_with(|| Pacer::new(Duration::from_secs(10))).ready(Instant::now()) {
                    tracing::warn!("coordinator {endpoint} refused to lease jobs ({}); asking again", describe(&status));
                }
                return Ok(Vec::new());
            }
        };
        let mut cache = Cache::lock(&self.cache);
        for run in &response.runs {
            // A run's context is sent with every lease that names it; the newest wins.
            cache.runs.remove(&run.run_id);
        }
        let contexts: HashMap<i64, &RunContext> = response.runs.iter().map(|run| (run.run_id, run)).collect();
        Ok(response
            .jobs
            .into_iter()
            .map(|leased| {
                let roots = match contexts.get(&leased.run_id) {
                    Some(run) => cache.roots(run),
                    None => cache.runs.get(&leased.run_id).cloned().ok_or_else(|| {
                        JobError::new(
                            FailureClass::Retryable,
                            format!("the coordinator leased job {} of run {} without that run's storage locations", leased.sample_id, leased.run_id),
                        )
                    }),
                };
                LeasedJob {
                    job: Job::new(leased.run_id, (leased.job_id, leased.attempt), leased.sample_id, leased.staging_key, &self.name, &leased.traceparent),
                    spec_json: leased.spec_json,
                    roots,
                }
            })
            .collect())
    }

    async fn idle(&self) -> Result<Idle, AgentError> {
        Ok(Idle::Wait)
    }

    async fn heartbeat_interval(&self) -> Result<Duration, AgentError> {
        // The period is the coordinator's: known once registered.
        self.link.connection().await?;
        Ok(self.link.heartbeat_interval())
    }

    async fn heartbeat(&self, held: &[JobKey]) -> Result<Option<Vec<JobKey>>, AgentError> {
        let result = self
            .link
            .call("heartbeat", |mut client, worker_id| {
                let request = HeartbeatRequest { worker_id, held: held.iter().map(|&(job_id, attempt)| JobAttempt { job_id, attempt }).collect() };
                async move { client.heartbeat(request).await }
            })
            .await;
        match result {
            Ok(response) => {
                if response.register_again {
                    tracing::info!("the coordinator lost this worker's presence record; registering again");
                    self.link.register_again().await;
                    self.link.connection().await?;
                }
                Ok(Some(response.kept.iter().map(|k| (k.job_id, k.attempt)).collect()))
            }
            Err(CallError::Fatal(e)) => Err(e),
            Err(CallError::Refused { endpoint, status }) => {
                tracing::warn!("coordinator {endpoint} refused a heartbeat ({})", describe(&status));
                Ok(None)
            }
        }
    }

    async fn complete(&self, jobs: Vec<(Job, Staged)>) -> Result<(), AgentError> {
        // One span per job for the report, in the job's trace; the coordinator's commit joins it.
        let spans: Vec<tracing::Span> = jobs.iter().map(|(job, _)| job.span("complete")).collect();
        let request = CompleteRequest {
            worker_id: String::new(),
            bundle_name: self.bundle_name.clone(),
            worker_name: self.name.clone(),
            completions: jobs
                .iter()
                .zip(&spans)
                .map(|((job, staged), span)| Completion {
                    traceparent: acufarm_proto::trace::traceparent(span),
                    job_id: job.key.0,
                    attempt: job.key.1,
                    staging_key: staged.staging_key.clone(),
                    sha256: staged.sha256.clone(),
                    source_sha256: staged.source_sha256.clone(),
                    timings: staged.timings.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    execution_provider: self.execution_provider.clone(),
                    qa_json: if staged.qa.is_empty() { String::new() } else { serde_json::to_string(&staged.qa).unwrap_or_default() },
                })
                .collect(),
        };
        let result = self
            .link
            .call("complete", |mut client, worker_id| {
                let request = CompleteRequest { worker_id, ..request.clone() };
                async move { client.complete(request).await }
            })
            .await;
        settle("completion", jobs.len(), result.map(|response| response.outcomes))
    }

    async fn fail(&self, jobs: Vec<(Job, JobError)>) -> Result<(), AgentError> {
        let spans: Vec<tracing::Span> = jobs.iter().map(|(job, _)| job.span("report_failure")).collect();
        let request = FailRequest {
            worker_id: String::new(),
            worker_name: self.name.clone(),
            failures: jobs
                .iter()
                .zip(&spans)
                .map(|((job, e), span)| JobFailure {
                    traceparent: acufarm_proto::trace::traceparent(span),
                    job_id: job.key.0,
                    attempt: job.key.1,
                    class: acufarm_proto::FailureClass::from(e.class) as i32,
                    message: e.message.clone(),
                    detail_json: e.detail_json(),
                })
                .collect(),
        };
        let result = self
            .link
            .call("fail", |mut client, worker_id| {
                let request = FailRequest { worker_id, ..request.clone() };
                async move { client.fail(request).await }
            })
            .await;
        settle("failure", jobs.len(), result.map(|response| response.outcomes))
    }
}

/// The end of a report of `jobs` jobs (`what`: completion or failure): stale answers and a refusal
/// are logged (the jobs go back to the queue when their leases expire); only a fatal error ends
/// the worker.
fn settle(what: &str, jobs: usize, result: Result<Vec<ReportOutcome>, CallError>) -> Result<(), AgentError> {
    match result {
        Ok(outcomes) => {
            for o in outcomes.iter().filter(|o| o.outcome == Outcome::Stale as i32) {
                tracing::warn!(job = o.job_id, attempt = o.attempt, "the coordinator ignored a stale {what} report: {}", o.detail);
            }
            Ok(())
        }
        Err(CallError::Fatal(e)) => Err(e),
        Err(CallError::Refused { endpoint, status }) => {
            tracing::warn!(
                "coordinator {endpoint} refused the {what} report of {jobs} jobs ({}); they are queued again when their leases expire",
                describe(&status)
            );
            Ok(())
        }
    }
}
