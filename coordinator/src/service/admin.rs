//! The `Admin` gRPC calls the CLI makes: submit, status, resubmit, cancel, pause, resume and
//! write-manifest.

use super::finish::Written;
use super::{Coordinator, storage_status, store_status, unix_ms};
use crate::StoreError;
use crate::events::Event;
use crate::runs;
use crate::store::ManifestCounts;
use crate::store::{JobFilter, RunInfo, Store};
use acufarm_core::{FailureClass, JobId, JobState, RunSpec, resolve};
use acufarm_proto::admin_server::Admin;
use acufarm_proto::v1 as pb;
use acufarm_storage::{SHIPPED, STAGING, Storage};
use bytes::Bytes;
use chrono::Utc;
use std::collections::HashMap;
use std::path::Path;
use tonic::{Request, Response, Status};

pub(crate) struct AdminService<S>(pub Coordinator<S>);

/// Failed jobs listed per run when the request does not say.
const DEFAULT_FAILURES: u32 = 20;

fn parse_spec(text: &str, path: &str) -> Result<RunSpec, Status> {
    let shown = if path.is_empty() { "<submitted spec>" } else { path };
    let spec = RunSpec::parse(text, Path::new(shown)).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if spec.dataset.is_none() {
        return Err(Status::invalid_argument(format!("run spec {shown} has no [dataset] section; add input, output and images (see examples/acusim.toml)")));
    }
    Ok(spec)
}

/// Stores the files shipped with a spec under `_acufarm/<run>/` of the output root, after checking
/// that every file the spec names was sent.
async fn ship_files(spec: &RunSpec, files: &[pb::SpecFile], output: &Storage, spec_path: &str) -> Result<(), Status> {
    let sent: HashMap<&str, &pb::SpecFile> = files.iter().map(|file| (file.path.as_str(), file)).collect();
    // The spec's checks refused any name that is not a plain relative path.
    for name in spec.shipped_files() {
        let file = sent.get(name.as_str()).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{spec_path} names `{name}`, but it was not sent with the spec; put it beside the spec (paths are relative to it)"
            ))
        })?;
        let staging = format!("{STAGING}/{}/shipped", spec.run.name);
        output.put_staged(&format!("{SHIPPED}/{}/{name}", spec.run.name), Bytes::from(file.content.clone()), &staging).await.map_err(storage_status)?;
    }
    Ok(())
}

fn counts(counts: &crate::state::StateCounts) -> pb::Counts {
    pb::Counts { queued: counts.queued, leased: counts.leased, succeeded: counts.succeeded, failed: counts.failed, cancelled: counts.cancelled }
}

impl<S: Store> AdminService<S> {
    pub(crate) async fn find(&self, name: &str) -> Result<RunInfo, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("no run named; give the run name (see `acufarm status`)"));
        }
        self.0
            .inner
            .store
            .find_run(name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no run named `{name}`; list the runs with `acufarm status`")))
    }

    async fn resolve(&self, spec: &RunSpec) -> Result<(Storage, resolve::Resolution), Status> {
        let dataset = spec.dataset.as_ref().expect("checked by parse_spec");
        let input = Storage::open(&dataset.input).map_err(storage_status)?;
        let files = input.list("").await.map_err(storage_status)?;
        let resolution = resolve::resolve_run(spec, &files).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok((input, resolution))
    }

    pub(crate) async fn run_status(&self, info: &RunInfo, failures_limit: u32) -> Result<pb::RunStatus, Status> {
        let store = &self.0.inner.store;
        let status = store.run_status(info.id).await.map_err(store_status)?;
        let failed = store
            .run_jobs(info.id, &JobFilter { state: Some(JobState::Failed), limit: Some(failures_limit), ..JobFilter::default() })
            .await
            .map_err(store_status)?;
        let quarantined = store.quarantined_workers(Some(info.id)).await.map_err(store_status)?;
        let context = self.0.run_context(info.id).await.ok();
        let output_url = context.as_ref().map(|run| run.output_url.clone()).unwrap_or_default();
        // A finished run's QA summary, from the manifest summary the coordinator wrote.
        let c = &status.counts;
        let qa_json = match context.as_ref().filter(|_| c.queued == 0 && c.leased == 0) {
            Some(run) => self.0.qa_summary(info.id, (c.succeeded, c.failed), &run.output).await,
            None => String::new(),
        };
        Ok(pb::RunStatus {
            run_id: info.id.0,
            name: info.name.clone(),
            state: info.state.to_string(),
            priority: info.priority,
            bundle_sha256: info.bundle_sha256.clone(),
            created_unix_ms: unix_ms(info.created_at),
            counts: Some(counts(&status.counts)),
            shards: status
                .shards
                .iter()
                .map(|shard| pb::ShardStatus {
                    shard_id: shard.shard.0,
                    key: shard.key.clone(),
                    state: shard.state.to_string(),
                    counts: Some(counts(&shard.counts)),
                })
                .collect(),
            failures: failed
                .into_iter()
                .map(|job| pb::FailedJob {
                    job_id: job.job.0,
                    shard: job.shard_key,
                    sample_id: job.sample_id,
                    class: pb::FailureClass::from(job.failure_class.unwrap_or(FailureClass::Permanent)) as i32,
                    message: job.last_error.unwrap_or_default(),
                    attempt: job.attempt.0,
                })
                .collect(),
            output_url,
            rate_per_s: if self.0.has_redis() && self.0.inner.events.ok().await {
                self.0.inner.events.rate(info.id.0, Utc::now().timestamp()).await
            } else {
                self.0.metrics().run_rate(info.id)
            },
            qa_json,
            quarantined: quarantined
                .into_iter()
                .map(|q| pb::QuarantinedWorker { worker: q.worker, since_unix_ms: unix_ms(q.since), failures: q.failures, errors: q.errors })
                .collect(),
        })
    }

    pub(crate) async fn change(&self, name: &str, action: &str) -> Result<Response<pb::RunStateResponse>, Status> {
        let info = self.find(name).await?;
        let store = &self.0.inner.store;
        let now = Utc::now();
        match action {
            "cancel" => store.cancel_run(info.id, now).await,
            "pause" => store.pause_run(info.id, now).await,
            _ => store.resume_run(info.id, now).await,
        }
        .map_err(store_status)?;
        let state = store.run(info.id).await.map_err(store_status)?.state.to_string();
        self.0.touch(info.id);
        self.0.inner.events.publish(&Event::RunChanged { run_id: info.id.0, name: info.name.clone(), state: state.clone() }).await;
        tracing::info!(run = %info.name, %state, "run {action}");
        Ok(Response::new(pb::RunStateResponse { state }))
    }
}

#[tonic::async_trait]
impl<S: Store> Admin for AdminService<S> {
    async fn submit(&self, request: Request<pb::SubmitRequest>) -> Result<Response<pb::SubmitResponse>, Status> {
        let request = request.into_inner();
        let spec = parse_spec(&request.spec_toml, &request.spec_path)?;
        if request.bundle_sha256.len() != 64 || !request.bundle_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument("the submit carried no valid bundle sha256; pass --bundle DIR of the bundle the workers hold"));
        }
        let store = &self.0.inner.store;
        if !request.force && store.find_run(&spec.run.name).await.map_err(store_status)?.is_some() {
            return Err(store_status(StoreError::RunNameTaken { name: spec.run.name.clone() }));
        }
        let dataset = spec.dataset.clone().expect("checked by parse_spec");
        let output = Storage::open(&dataset.output).map_err(storage_status)?;
        let (input, resolution) = self.resolve(&spec).await?;
        if resolution.jobs.is_empty() && resolution.rejected.is_empty() {
            return Err(Status::invalid_argument(format!(
                "no images found under {} in {} (after filters: {} left out); check `dataset.images` and `[filters]`",
                dataset.images.join(", "),
                dataset.input,
                resolution.filtered_out
            )));
        }
        let new_run = runs::plan_run(&spec, &request.spec_toml, &resolution, &request.bundle_sha256).map_err(|e| Status::internal(e.to_string()))?;
        if request.dry_run {
            let plan = acufarm_core::plan::Plan::new(&spec, &resolution);
            return Ok(Response::new(pb::SubmitResponse {
                run_id: 0,
                name: spec.run.name.clone(),
                jobs: new_run.jobs.len() as u64,
                shards: new_run.shards.len() as u64,
                unresolved: resolution.rejected.len() as u64,
                filtered_out: resolution.filtered_out as u64,
                plan_json: serde_json::to_string(&plan).map_err(|e| Status::internal(e.to_string()))?,
            }));
        }
        // Storage is touched only now, after every check: the spec's (run name included), the
        // bundle, the name, the listing and the plan.
        ship_files(&spec, &request.files, &output, &request.spec_path).await?;
        output.clean_staging(Some(&spec.run.name)).await.map_err(storage_status)?;
        let run_id = store.create_run(&new_run, request.force, Utc::now()).await.map_err(store_status)?;
        for file in &dataset.copy {
            output.copy_from_staged(&input, file, file, &format!("{STAGING}/{}/copy", spec.run.name)).await.map_err(storage_status)?;
        }
        self.0.forget_run(run_id).await;
        self.0.touch(run_id);
        self.0.inner.events.publish(&Event::RunSubmitted { run_id: run_id.0, name: spec.run.name.clone(), jobs: new_run.jobs.len() }).await;
        Ok(Response::new(pb::SubmitResponse {
            run_id: run_id.0,
            name: spec.run.name.clone(),
            jobs: new_run.jobs.len() as u64,
            shards: new_run.shards.len() as u64,
            unresolved: resolution.rejected.len() as u64,
            filtered_out: resolution.filtered_out as u64,
            plan_json: String::new(),
        }))
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let request = request.into_inner();
        let infos = if request.run.is_empty() { self.0.inner.store.list_runs().await.map_err(store_status)? } else { vec![self.find(&request.run).await?] };
        let limit = if request.failures_limit == 0 { DEFAULT_FAILURES } else { request.failures_limit };
        let mut runs = Vec::with_capacity(infos.len());
        for info in &infos {
            runs.push(self.run_status(info, limit).await?);
        }
        let events = &self.0.inner.events;
        let workers = events
            .workers()
            .await
            .into_iter()
            .map(|worker| pb::WorkerPresence {
                worker_id: worker.worker_id,
                name: worker.name,
                hostname: worker.hostname,
                bundle_name: worker.bundle_name,
                bundle_sha256: worker.bundle_sha256,
                execution_providers: worker.execution_providers,
                gpu: worker.gpu,
                last_seen_unix_ms: worker.last_seen_unix_ms,
                jobs_held: worker.jobs_held,
            })
            .collect();
        Ok(Response::new(pb::StatusResponse { runs, workers, redis_ok: events.ok().await }))
    }

    async fn resubmit(&self, request: Request<pb::ResubmitRequest>) -> Result<Response<pb::ResubmitResponse>, Status> {
        let request = request.into_inner();
        if !request.failed && request.shards.is_empty() && request.job_ids.is_empty() {
            return Err(Status::invalid_argument(
                "say which jobs to resubmit: --failed for every failed job, --shard KEY for the failed jobs of chosen shards, or --job ID for chosen jobs",
            ));
        }
        let info = self.find(&request.run).await?;
        let store = &self.0.inner.store;
        if !request.shards.is_empty() {
            let status = store.run_status(info.id).await.map_err(store_status)?;
            for key in &request.shards {
                if !status.shards.iter().any(|shard| &shard.key == key) {
                    return Err(Status::not_found(format!("run `{}` has no shard `{key}`; see the shard keys with `acufarm status {}`", info.name, info.name)));
                }
            }
        }
        let failed = if request.job_ids.is_empty() {
            let filter =
                JobFilter { state: Some(JobState::Failed), shard_keys: (!request.shards.is_empty()).then(|| request.shards.clone()), ..JobFilter::default() };
            store.run_jobs(info.id, &filter).await.map_err(store_status)?
        } else {
            let ids: Vec<JobId> = request.job_ids.iter().map(|id| JobId(*id)).collect();
            let found = store.job_records(&ids).await.map_err(store_status)?;
            if let Some(missing) = ids.iter().find(|id| !found.iter().any(|job| job.job == **id && job.run == info.id)) {
                return Err(Status::not_found(format!(
                    "run `{}` has no job {missing}; list its jobs with the API's /api/v1/runs/{}/jobs",
                    info.name, info.name
                )));
            }
            // Only failed jobs are queued again; the others are left as they are.
            found.into_iter().filter(|job| job.state == JobState::Failed).collect()
        };
        let (spec_text, spec_path) = if request.spec_toml.is_empty() {
            (info.spec.clone(), format!("<stored spec of run {}>", info.name))
        } else {
            (request.spec_toml.clone(), request.spec_path.clone())
        };
        let spec = parse_spec(&spec_text, &spec_path)?;
        if spec.run.name != info.name {
            return Err(Status::invalid_argument(format!(
                "the corrected spec names run `{}`, not `{}`; keep run.name unchanged when resubmitting",
                spec.run.name, info.name
            )));
        }
        if !request.spec_toml.is_empty() {
            let output = Storage::open(&spec.dataset.as_ref().expect("checked").output).map_err(storage_status)?;
            ship_files(&spec, &request.files, &output, &spec_path).await?;
        }
        let (_, resolution) = self.resolve(&spec).await?;
        let (resubmissions, unresolved) = runs::re_resolve(&failed, &resolution).map_err(|e| Status::internal(e.to_string()))?;
        if !request.spec_toml.is_empty() {
            store.set_run_spec(info.id, &spec_text, spec.retry.max_lost, Utc::now()).await.map_err(store_status)?;
            self.0.forget_run(info.id).await;
        }
        let reports = store.resubmit(&resubmissions, Utc::now()).await.map_err(store_status)?;
        let requeued = reports.iter().filter(|report| report.outcome == crate::store::Resubmitted::Requeued).count();
        self.0.forget_run(info.id).await;
        self.0.touch(info.id);
        tracing::info!(run = %info.name, requeued, unresolved, "resubmitted failed jobs");
        Ok(Response::new(pb::ResubmitResponse { requeued: requeued as u64, unresolved: unresolved as u64 }))
    }

    async fn cancel(&self, request: Request<pb::RunRequest>) -> Result<Response<pb::RunStateResponse>, Status> {
        self.change(&request.into_inner().run, "cancel").await
    }

    async fn pause(&self, request: Request<pb::RunRequest>) -> Result<Response<pb::RunStateResponse>, Status> {
        self.change(&request.into_inner().run, "pause").await
    }

    async fn resume(&self, request: Request<pb::RunRequest>) -> Result<Response<pb::RunStateResponse>, Status> {
        self.change(&request.into_inner().run, "resume").await
    }

    async fn write_manifest(&self, request: Request<pb::RunRequest>) -> Result<Response<pb::WriteManifestResponse>, Status> {
        let info = self.find(&request.into_inner().run).await?;
        let run = self.0.run_context(info.id).await?;
        // One writer per set of counts: when the reaper (of this or another replica) is writing
        // the same manifest, wait for it instead of writing the files a second time.
        let deadline = std::time::Instant::now() + 2 * super::finish::MANIFEST_CLAIM;
        loop {
            let status = self.0.inner.store.run_status(info.id).await.map_err(store_status)?;
            let finished = status.counts.queued == 0 && status.counts.leased == 0;
            let counts = ManifestCounts::of(&status.counts);
            let written = self
                .0
                .write_manifest_once(info.id, &run, counts, finished)
                .await
                .map_err(|e| if e.is_retryable() { Status::unavailable(e.to_string()) } else { Status::failed_precondition(e.to_string()) })?;
            let rows = match written {
                Written::Now(summary) => {
                    tracing::info!(run = %info.name, rows = summary.outputs, "manifest written on request");
                    summary.outputs as u64
                }
                Written::Current => counts.succeeded,
                Written::Busy if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
                Written::Busy => {
                    return Err(Status::unavailable(format!(
                        "another coordinator kept writing the manifest of run {} for {} s; ask again later",
                        info.name,
                        2 * super::finish::MANIFEST_CLAIM.as_secs()
                    )));
                }
            };
            return Ok(Response::new(pb::WriteManifestResponse { rows, output_url: run.output_url.clone() }));
        }
    }

    async fn regenerate(&self, request: Request<pb::RegenerateRequest>) -> Result<Response<pb::RegenerateResponse>, Status> {
        let request = request.into_inner();
        if request.job_ids.is_empty() {
            return Err(Status::invalid_argument("say which jobs to regenerate: give their ids (--job ID, or `jobs` in the API)"));
        }
        let info = self.find(&request.run).await?;
        let store = &self.0.inner.store;
        let ids: Vec<JobId> = request.job_ids.iter().map(|id| JobId(*id)).collect();
        let records = store.job_records(&ids).await.map_err(store_status)?;
        if let Some(missing) = ids.iter().find(|id| !records.iter().any(|job| job.job == **id && job.run == info.id)) {
            return Err(Status::not_found(format!("run `{}` has no job {missing}; list its jobs with the API's /api/v1/runs/{}/jobs", info.name, info.name)));
        }
        let spec = parse_spec(&info.spec, &format!("<stored spec of run {}>", info.name))?;
        let grammar =
            spec.grammar().map_err(|e| Status::failed_precondition(format!("the stored spec of run {} has a bad sample-id grammar ({e})", info.name)))?;
        let mut regenerations = Vec::new();
        for record in &records {
            if !matches!(record.state, JobState::Failed | JobState::Succeeded) {
                continue;
            }
            // A job whose input never resolved has nothing to regenerate (resubmit it instead).
            let Ok(job) = serde_json::from_str::<acufarm_core::JobSpec>(&record.spec) else { continue };
            let Ok(again) = resolve::resolve_job_reseeded(&spec, &grammar, &job.source, job.variant, 0, job.reseed + 1) else { continue };
            let spec = serde_json::to_value(&again).map_err(|e| Status::internal(e.to_string()))?;
            regenerations.push(crate::store::Resubmission { job: record.job, spec, regenerate: true });
        }
        let reports = store.resubmit(&regenerations, Utc::now()).await.map_err(store_status)?;
        let requeued = reports.iter().filter(|report| report.outcome == crate::store::Resubmitted::Requeued).count() as u64;
        self.0.forget_run(info.id).await;
        self.0.touch(info.id);
        tracing::info!(run = %info.name, requeued, "regenerated jobs with new seeds");
        Ok(Response::new(pb::RegenerateResponse { requeued, skipped: ids.len() as u64 - requeued }))
    }

    async fn release_worker(&self, request: Request<pb::ReleaseWorkerRequest>) -> Result<Response<pb::ReleaseWorkerResponse>, Status> {
        let request = request.into_inner();
        if request.worker.trim().is_empty() {
            return Err(Status::invalid_argument("no worker named; give the quarantined worker's name as `acufarm status` lists it"));
        }
        let store = &self.0.inner.store;
        let run = if request.run.is_empty() { None } else { Some(self.find(&request.run).await?) };
        let released = store.release_worker(&request.worker, run.as_ref().map(|run| run.id), Utc::now()).await.map_err(store_status)?;
        if released.is_empty() {
            let scope = run.as_ref().map_or_else(|| "any run".to_string(), |run| format!("run {}", run.name));
            return Err(Status::not_found(format!(
                "worker `{}` is not quarantined on {scope}; `acufarm status` lists the quarantined workers of each run",
                request.worker
            )));
        }
        let mut runs = Vec::with_capacity(released.len());
        for id in released {
            let name = store.run(id).await.map_err(store_status)?.name;
            tracing::info!(worker = %request.worker, run = %name, "quarantine lifted by an operator");
            runs.push(name);
        }
        Ok(Response::new(pb::ReleaseWorkerResponse { runs }))
    }
}
