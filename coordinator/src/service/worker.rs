//! The `Worker` gRPC calls: register, lease, heartbeat, complete, fail. Each batch call is one
//! store transaction; completions are committed in storage (staging → final key, label copied)
//! before the transaction that records them, and only for attempts that still hold their lease.

use super::{Coordinator, MAX_LEASE, RunContext, store_status, unix_ms};
use crate::events::{Event, Presence};
use crate::quarantine::{self, Outcomes};
use crate::runs::{self, Producer, StagedOutput};
use crate::state::{Completion, Failure};
use crate::store::{CompletionRequest, FailureRequest, JobAttempt, JobRecord, LeaseRequest, Store};
use acufarm_core::manifest::BundleRef;
use acufarm_core::{Attempt, FailureClass, JobId, JobSpec, JobState, RunId};
use acufarm_proto::v1 as pb;
use acufarm_proto::worker_server::Worker;
use acufarm_storage::Storage;
use chrono::Utc;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::{Request, Response, Status};

pub(crate) struct WorkerService<S>(pub Coordinator<S>);

/// Largest failure detail (QA checks and log lines) kept with an attempt; a larger one is dropped.
const MAX_DETAIL: usize = 256 << 10;

/// A short id unique to one registration: the worker's name, then 8 hex digits.
fn new_worker_id(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!("{name}/{}/{}/{:?}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), std::time::SystemTime::now());
    let digest = acufarm_core::manifest::sha256_bytes(seed.as_bytes());
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).take(48).collect();
    format!("{clean}-{}", &digest[..8])
}

fn outcome(outcome: pb::Outcome, job: JobId, attempt: Attempt, detail: impl Into<String>) -> pb::ReportOutcome {
    pb::ReportOutcome { job_id: job.0, attempt: attempt.0, outcome: outcome as i32, detail: detail.into() }
}

fn stale_detail(record: Option<&JobRecord>, attempt: Attempt, worker: &str) -> String {
    match record {
        None => "the job does not exist (its run was replaced or deleted)".into(),
        Some(record) if record.attempt != attempt => {
            format!("attempt {} is no longer current (the job is at attempt {}): its lease was lost", attempt.0, record.attempt.0)
        }
        Some(record) if record.state == JobState::Cancelled => "the job was cancelled".into(),
        Some(record) if record.state != JobState::Leased => format!("the job is {}, not leased", record.state),
        Some(record) => format!("the job is leased by {}, not {worker}", record.leased_by.as_deref().unwrap_or("nobody")),
    }
}

/// The name a worker's failure streak and quarantine are kept under: the name it registered
/// with, or its id when an older worker sends none.
fn streak_name<'a>(name: &'a str, worker_id: &'a str) -> &'a str {
    if name.is_empty() { worker_id } else { name }
}

impl<S: Store> WorkerService<S> {
    fn lease_duration(&self) -> std::time::Duration {
        self.0.inner.config.lease()
    }

    /// Applies a worker's report on a run to its failure streak; logs and announces a quarantine
    /// it starts. A streak the database cannot record is logged, never fails the report.
    async fn record_outcomes(&self, run: &RunContext, worker: &str, outcomes: Outcomes<'_>) {
        let store = &self.0.inner.store;
        match store.record_worker_outcomes(run.id, worker, outcomes, run.policy.quarantine_after, Utc::now()).await {
            Ok(Some(q)) => {
                tracing::warn!(
                    run = %run.name,
                    worker = %q.worker,
                    failures = q.failures,
                    last_error = q.errors.last().map(String::as_str).unwrap_or_default(),
                    "worker quarantined on this run after {} retryable failures in a row; it gets no more of its jobs until `acufarm worker release {} --run {}`",
                    q.failures,
                    q.worker,
                    run.name
                );
                self.0.inner.events.publish(&Event::WorkerQuarantined { run_id: run.id.0, worker: q.worker, failures: q.failures }).await;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(run = %run.name, worker, "cannot record the worker's failure streak: {error}"),
        }
    }

    /// Records the failure of jobs whose staged output could not be committed, under each run's
    /// policy (retryable: a storage hiccup, or the staged object went missing).
    async fn fail_commits(&self, failures: Vec<(Arc<RunContext>, FailureRequest)>) -> Result<HashMap<JobId, Failure>, Status> {
        let mut by_run: HashMap<RunId, (Arc<RunContext>, Vec<FailureRequest>)> = HashMap::new();
        for (run, failure) in failures {
            by_run.entry(run.id).or_insert_with(|| (run.clone(), Vec::new())).1.push(failure);
        }
        let mut outcomes = HashMap::new();
        for (_, (run, failures)) in by_run {
            let reports = self.0.inner.store.fail(&failures, &run.policy, Utc::now()).await.map_err(store_status)?;
            outcomes.extend(reports.into_iter().map(|report| (report.job, report.outcome)));
        }
        Ok(outcomes)
    }
}

#[tonic::async_trait]
impl<S: Store> Worker for WorkerService<S> {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        if request.bundle_sha256.len() != 64 {
            return Err(Status::invalid_argument("the worker sent no bundle sha256; upgrade the worker to this coordinator's version"));
        }
        let worker_id = if request.worker_id.is_empty() {
            new_worker_id(if request.name.is_empty() { "worker" } else { &request.name })
        } else {
            request.worker_id.clone()
        };
        let presence = Presence {
            worker_id: worker_id.clone(),
            name: request.name.clone(),
            hostname: request.hostname.clone(),
            bundle_name: request.bundle_name.clone(),
            bundle_sha256: request.bundle_sha256.clone(),
            execution_providers: request.execution_providers.clone(),
            gpu: request.gpu.clone(),
            gpu_memory_bytes: request.gpu_memory_bytes,
            last_seen_unix_ms: unix_ms(Utc::now()),
            jobs_held: 0,
        };
        let events = &self.0.inner.events;
        events.presence(&presence).await;
        events.publish(&Event::WorkerRegistered { worker_id: worker_id.clone(), name: request.name.clone() }).await;
        let runs = self.0.inner.store.list_runs().await.map_err(store_status)?;
        let bundle_has_work = runs.iter().any(|run| run.bundle_sha256 == request.bundle_sha256 && run.state == crate::store::RunState::Active);
        tracing::info!(worker = %worker_id, bundle = %request.bundle_name, eps = ?request.execution_providers, "worker registered");
        let config = &self.0.inner.config;
        Ok(Response::new(pb::RegisterResponse {
            worker_id,
            lease_seconds: config.lease_seconds as u32,
            heartbeat_seconds: config.heartbeat_seconds as u32,
            bundle_has_work,
        }))
    }

    #[tracing::instrument(name = "lease", skip_all, fields(worker = %request.get_ref().worker_id, max_jobs = request.get_ref().max_jobs))]
    async fn lease(&self, request: Request<pb::LeaseRequest>) -> Result<Response<pb::LeaseResponse>, Status> {
        let request = request.into_inner();
        if request.worker_id.is_empty() {
            return Err(Status::invalid_argument("lease without a worker id; call Register first"));
        }
        let started = std::time::Instant::now();
        let leased = self
            .0
            .inner
            .store
            .lease(&LeaseRequest {
                worker_id: request.worker_id.clone(),
                worker_name: streak_name(&request.worker_name, &request.worker_id).to_string(),
                bundle_sha256: request.bundle_sha256.clone(),
                max_jobs: request.max_jobs.min(MAX_LEASE),
                lease_duration: self.lease_duration(),
                now: Utc::now(),
            })
            .await
            .map_err(store_status)?;
        let mut runs: BTreeMap<RunId, (Arc<RunContext>, usize)> = BTreeMap::new();
        let mut jobs = Vec::with_capacity(leased.len());
        for job in leased {
            let run = match runs.get_mut(&job.run) {
                Some((run, count)) => {
                    *count += 1;
                    run.clone()
                }
                None => {
                    let run = self.0.run_context(job.run).await?;
                    runs.insert(job.run, (run.clone(), 1));
                    run
                }
            };
            // Each job's trace starts here (linked to this lease call), so it runs on through the
            // worker's stages and back to the commit.
            let trace = tracing::info_span!(parent: None, "lease", run = job.run.0, job = job.job.0, attempt = job.attempt.0, worker = %request.worker_id);
            trace.follows_from(tracing::Span::current());
            jobs.push(pb::LeasedJob {
                job_id: job.job.0,
                run_id: job.run.0,
                attempt: job.attempt.0,
                staging_key: Storage::staging_key(&run.name, job.job.0, job.attempt.0),
                lease_expires_unix_ms: unix_ms(job.lease_expires_at),
                sample_id: job.sample_id,
                spec_json: job.spec,
                traceparent: acufarm_proto::trace::traceparent(&trace),
            });
        }
        for (run, count) in runs.values() {
            self.0.inner.events.publish(&Event::JobsLeased { run_id: run.id.0, worker_id: request.worker_id.clone(), jobs: *count }).await;
        }
        let runs = runs
            .values()
            .map(|(run, _)| pb::RunContext {
                run_id: run.id.0,
                name: run.name.clone(),
                input_url: run.input_url.clone(),
                output_url: run.output_url.clone(),
                scenes_url: run.scenes_url.clone(),
            })
            .collect();
        self.0.metrics().lease_took(started.elapsed().as_secs_f64());
        Ok(Response::new(pb::LeaseResponse { jobs, runs }))
    }

    #[tracing::instrument(name = "heartbeat", skip_all, fields(worker = %request.get_ref().worker_id, held = request.get_ref().held.len()))]
    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let held: Vec<JobAttempt> = request.held.iter().map(|held| JobAttempt { job: JobId(held.job_id), attempt: Attempt(held.attempt) }).collect();
        let now = Utc::now();
        let kept = self.0.inner.store.heartbeat(&request.worker_id, &held, self.lease_duration(), now).await.map_err(store_status)?;
        let known = self.0.inner.events.touch(&request.worker_id, kept.len() as u32, unix_ms(now)).await;
        Ok(Response::new(pb::HeartbeatResponse {
            kept: kept.iter().map(|held| pb::JobAttempt { job_id: held.job.0, attempt: held.attempt.0 }).collect(),
            register_again: !known,
        }))
    }

    #[tracing::instrument(name = "complete", skip_all, fields(worker = %request.get_ref().worker_id, jobs = request.get_ref().completions.len()))]
    async fn complete(&self, request: Request<pb::CompleteRequest>) -> Result<Response<pb::CompleteResponse>, Status> {
        let request = request.into_inner();
        let worker = request.worker_id.as_str();
        let ids: Vec<JobId> = request.completions.iter().map(|c| JobId(c.job_id)).collect();
        let records: HashMap<JobId, JobRecord> = self.0.inner.store.job_records(&ids).await.map_err(store_status)?.into_iter().map(|r| (r.job, r)).collect();

        let mut answers: Vec<Option<pb::ReportOutcome>> = vec![None; request.completions.len()];
        // Completions that hold their lease, grouped by run for one storage batch each.
        let mut to_commit: BTreeMap<RunId, (Arc<RunContext>, Vec<(usize, JobSpec)>)> = BTreeMap::new();
        let mut commit_failures = Vec::new();
        let mut commit_failed_at = Vec::new();
        for (index, completion) in request.completions.iter().enumerate() {
            let (job, attempt) = (JobId(completion.job_id), Attempt(completion.attempt));
            let record = records.get(&job);
            let current = record.filter(|record| record.held_by(attempt, worker));
            let Some(record) = current else {
                // Not this attempt's to commit. Its staged object is garbage unless this very
                // attempt already succeeded (a repeated report).
                let duplicate = record.is_some_and(|r| r.state == JobState::Succeeded && r.attempt == attempt);
                if !duplicate
                    && let Some(record) = record
                    && let Ok(run) = self.0.run_context(record.run).await
                    && completion.staging_key == Storage::staging_key(&run.name, job.0, attempt.0)
                    && let Err(error) = run.output.delete(&completion.staging_key).await
                {
                    tracing::warn!("cannot delete stale staged output {}: {error}", completion.staging_key);
                }
                let (kind, detail) = if duplicate {
                    (pb::Outcome::Duplicate, "already completed".to_string())
                } else {
                    (pb::Outcome::Stale, stale_detail(record, attempt, worker))
                };
                answers[index] = Some(outcome(kind, job, attempt, detail));
                continue;
            };
            let run = self.0.run_context(record.run).await?;
            let expected_key = Storage::staging_key(&run.name, job.0, attempt.0);
            let refused = match serde_json::from_str::<JobSpec>(&record.spec) {
                Err(error) => (FailureClass::Permanent, format!("the job spec cannot be read ({error}); resubmit the run")),
                Ok(_) if completion.staging_key != expected_key => {
                    (FailureClass::Retryable, format!("the worker staged the output at {} instead of {expected_key}", completion.staging_key))
                }
                Ok(spec) => {
                    to_commit.entry(run.id).or_insert_with(|| (run.clone(), Vec::new())).1.push((index, spec));
                    continue;
                }
            };
            commit_failed_at.push(index);
            commit_failures.push((run, FailureRequest { job, attempt, class: refused.0, message: refused.1, detail: None }));
        }

        // Each job's commit joins the job's trace (its context came with the completion); the
        // spans stay open until the completions are recorded.
        let commit_spans: Vec<tracing::Span> = to_commit
            .values()
            .flat_map(|(_, jobs)| jobs.iter())
            .map(|(index, _)| {
                let completion = &request.completions[*index];
                let span = tracing::info_span!(parent: None, "commit", job = completion.job_id, attempt = completion.attempt, worker = %worker);
                acufarm_proto::trace::set_parent(&span, &completion.traceparent);
                span
            })
            .collect();
        // Move every staged object of a run in one storage batch, then record the accepted ones.
        let mut requests = Vec::new();
        let mut accepted_at = Vec::new();
        for (run, jobs) in to_commit.values() {
            let bundle = BundleRef { name: request.bundle_name.clone(), sha256: run.bundle_sha256.clone() };
            let commits = jobs
                .iter()
                .map(|(index, spec)| {
                    let completion = &request.completions[*index];
                    runs::Commit {
                        job: spec,
                        staged: StagedOutput {
                            staging_key: completion.staging_key.clone(),
                            sha256: completion.sha256.clone(),
                            source_sha256: completion.source_sha256.clone(),
                            timings: completion.timings.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                            // A malformed report loses only the QA detail, never the output.
                            qa: if completion.qa_json.is_empty() { Vec::new() } else { serde_json::from_str(&completion.qa_json).unwrap_or_default() },
                        },
                        producer: Producer {
                            run: &run.name,
                            bundle: bundle.clone(),
                            worker,
                            execution_provider: &completion.execution_provider,
                            attempt: completion.attempt,
                        },
                    }
                })
                .collect();
            let commit_started = std::time::Instant::now();
            let committed = runs::commit_outputs(&run.input, &run.output, commits).await;
            let commit_seconds = commit_started.elapsed().as_secs_f64() / jobs.len().max(1) as f64;
            for ((index, _), committed) in jobs.iter().zip(committed) {
                let completion = &request.completions[*index];
                let (job, attempt) = (JobId(completion.job_id), Attempt(completion.attempt));
                match committed {
                    Ok(row) => {
                        self.0.metrics().stages(&request.bundle_name, &completion.timings);
                        self.0.metrics().stage("commit", &request.bundle_name, commit_seconds);
                        let result = serde_json::to_string(&row).map_err(|e| Status::internal(e.to_string()))?;
                        accepted_at.push((*index, run.id));
                        requests.push(CompletionRequest { job, attempt, result });
                    }
                    Err(error) => {
                        commit_failed_at.push(*index);
                        let message = format!("committing the output failed: {error}");
                        commit_failures.push((run.clone(), FailureRequest { job, attempt, class: FailureClass::Retryable, message, detail: None }));
                    }
                }
            }
        }

        let reports = if requests.is_empty() { Vec::new() } else { self.0.inner.store.complete(&requests, Utc::now()).await.map_err(store_status)? };
        drop(commit_spans);
        let mut succeeded: HashMap<RunId, usize> = HashMap::new();
        for ((index, run), report) in accepted_at.iter().zip(reports) {
            let (kind, detail) = match report.outcome {
                Completion::Accepted => {
                    *succeeded.entry(*run).or_default() += 1;
                    (pb::Outcome::Accepted, String::new())
                }
                Completion::Duplicate => (pb::Outcome::Duplicate, "already completed".into()),
                Completion::Stale(stale) => (pb::Outcome::Stale, format!("{stale:?}")),
            };
            answers[*index] = Some(outcome(kind, report.job, report.attempt, detail));
        }
        let messages: HashMap<JobId, String> = commit_failures.iter().map(|(_, f)| (f.job, f.message.clone())).collect();
        let failed = self.fail_commits(commit_failures).await?;
        for index in commit_failed_at {
            let completion = &request.completions[index];
            let job = JobId(completion.job_id);
            let what = match failed.get(&job) {
                Some(Failure::Retry { backoff }) => format!("queued again in {:.1} s", backoff.as_secs_f64()),
                Some(Failure::Failed { .. }) => "failed".into(),
                _ => "ignored".into(),
            };
            let detail = format!("{}; {what}", messages.get(&job).cloned().unwrap_or_default());
            tracing::warn!(job = job.0, "{detail}");
            answers[index] = Some(outcome(pb::Outcome::Stale, job, Attempt(completion.attempt), detail));
        }
        let now_s = Utc::now().timestamp();
        let name = streak_name(&request.worker_name, worker);
        self.0.metrics().completed(name, succeeded.values().sum::<usize>() as u64);
        for (run, count) in succeeded {
            self.0.metrics().run_completed(run, count as u64);
            if let Ok(context) = self.0.run_context(run).await {
                self.record_outcomes(&context, name, Outcomes { succeeded: u32::try_from(count).unwrap_or(u32::MAX), retryable_failures: &[] }).await;
            }
            self.0.touch(run);
            self.0.inner.events.count_done(run.0, count, now_s).await;
            self.0.inner.events.publish(&Event::JobsSucceeded { run_id: run.0, worker_id: worker.to_string(), jobs: count }).await;
        }
        Ok(Response::new(pb::CompleteResponse { outcomes: answers.into_iter().flatten().collect() }))
    }

    #[tracing::instrument(name = "fail", skip_all, fields(worker = %request.get_ref().worker_id, jobs = request.get_ref().failures.len()))]
    async fn fail(&self, request: Request<pb::FailRequest>) -> Result<Response<pb::FailResponse>, Status> {
        let request = request.into_inner();
        let worker = request.worker_id.as_str();
        let ids: Vec<JobId> = request.failures.iter().map(|f| JobId(f.job_id)).collect();
        let records: HashMap<JobId, JobRecord> = self.0.inner.store.job_records(&ids).await.map_err(store_status)?.into_iter().map(|r| (r.job, r)).collect();
        let mut answers: Vec<Option<pb::ReportOutcome>> = vec![None; request.failures.len()];
        let mut by_run: HashMap<RunId, Vec<(usize, FailureRequest)>> = HashMap::new();
        // Each failure is recorded in its job's trace.
        let _recorded: Vec<tracing::Span> = request
            .failures
            .iter()
            .map(|failure| {
                let span = tracing::info_span!(parent: None, "record_failure", job = failure.job_id, attempt = failure.attempt, worker = %worker);
                acufarm_proto::trace::set_parent(&span, &failure.traceparent);
                span
            })
            .collect();
        for (index, failure) in request.failures.iter().enumerate() {
            let (job, attempt) = (JobId(failure.job_id), Attempt(failure.attempt));
            let class = acufarm_proto::failure_class(failure.class).map_err(|e| Status::invalid_argument(format!("{e}; send retryable, permanent or qa")))?;
            match records.get(&job) {
                Some(record) if record.held_by(attempt, worker) => {
                    by_run.entry(record.run).or_default().push((
                        index,
                        FailureRequest {
                            job,
                            attempt,
                            class,
                            message: failure.message.clone(),
                            detail: Some(failure.detail_json.clone()).filter(|detail| !detail.is_empty() && detail.len() <= MAX_DETAIL),
                        },
                    ));
                }
                record => answers[index] = Some(outcome(pb::Outcome::Stale, job, attempt, stale_detail(record, attempt, worker))),
            }
        }
        let now_s = Utc::now().timestamp();
        for (run_id, failures) in by_run {
            let run = self.0.run_context(run_id).await?;
            let requests: Vec<FailureRequest> = failures.iter().map(|(_, f)| f.clone()).collect();
            let reports = self.0.inner.store.fail(&requests, &run.policy, Utc::now()).await.map_err(store_status)?;
            let retryable = quarantine::counted_failures(&requests, &reports);
            self.record_outcomes(&run, streak_name(&request.worker_name, worker), Outcomes { succeeded: 0, retryable_failures: &retryable }).await;
            let mut finished = 0;
            for ((index, request), report) in failures.iter().zip(reports) {
                if !matches!(report.outcome, Failure::Stale(_)) {
                    self.0.metrics().failed(request.class);
                }
                let (kind, detail) = match report.outcome {
                    Failure::Retry { backoff } => (pb::Outcome::Accepted, format!("queued again in {:.1} s", backoff.as_secs_f64())),
                    Failure::Failed { exhausted } => {
                        finished += 1;
                        tracing::warn!(run = %run.name, job = request.job.0, attempt = request.attempt.0, class = request.class.as_str(), "job failed: {}", request.message);
                        (pb::Outcome::Accepted, if exhausted { "failed: no attempts left".into() } else { "failed".into() })
                    }
                    Failure::Stale(stale) => (pb::Outcome::Stale, format!("{stale:?}")),
                };
                answers[*index] = Some(outcome(kind, request.job, request.attempt, detail));
            }
            self.0.touch(run_id);
            if finished > 0 {
                self.0.inner.events.count_done(run_id.0, finished, now_s).await;
            }
            self.0.inner.events.publish(&Event::JobsFailed { run_id: run_id.0, worker_id: worker.to_string(), jobs: failures.len() }).await;
        }
        Ok(Response::new(pb::FailResponse { outcomes: answers.into_iter().flatten().collect() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_keep_a_clean_name_and_differ_per_registration() {
        let a = new_worker_id("gpu node/1");
        let b = new_worker_id("gpu node/1");
        assert!(a.starts_with("gpu-node-1-") && a.len() == "gpu-node-1-".len() + 8, "{a}");
        assert_ne!(a, b);
    }
}
