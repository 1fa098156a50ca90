//! The JSON API's actions (operator token or operator session): pause, resume and cancel a run;
//! resubmit failed jobs (all of a run, chosen shards, chosen jobs, or every failed job matching a
//! filter); release a quarantined worker. Each is the `Admin` call the CLI makes, so both give the
//! same answers and the same errors.

use super::api::JobQuery;
use super::session::Operator;
use super::{ApiError, Body};
use crate::service::Coordinator;
use crate::service::admin::AdminService;
use crate::store::Store;
use acufarm_core::JobState;
use acufarm_proto::admin_server::Admin;
use acufarm_proto::v1 as pb;
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most jobs one filtered resubmit takes.
const MAX_FILTERED: u32 = 100_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct RunState {
    /// The run's state after the action: `active`, `paused` or `cancelled`.
    pub state: String,
}

async fn change<S: Store>(coordinator: Coordinator<S>, name: &str, action: &str) -> Result<Json<RunState>, ApiError> {
    let answer = AdminService(coordinator).change(name, action).await?;
    Ok(Json(RunState { state: answer.into_inner().state }))
}

/// Stops leasing the run's queued jobs; leased ones finish.
#[utoipa::path(post, path = "/api/v1/runs/{run}/pause", tag = "actions", params(("run" = String, Path, description = "The run's name")),
    responses((status = 200, body = RunState), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn pause<S: Store>(State(coordinator): State<Coordinator<S>>, _: Operator, Path(name): Path<String>) -> Result<Json<RunState>, ApiError> {
    change(coordinator, &name, "pause").await
}

/// Leases the run's queued jobs again.
#[utoipa::path(post, path = "/api/v1/runs/{run}/resume", tag = "actions", params(("run" = String, Path, description = "The run's name")),
    responses((status = 200, body = RunState), (status = 404, body = super::ErrorBody), (status = 409, description = "The run is cancelled", body = super::ErrorBody)))]
pub async fn resume<S: Store>(State(coordinator): State<Coordinator<S>>, _: Operator, Path(name): Path<String>) -> Result<Json<RunState>, ApiError> {
    change(coordinator, &name, "resume").await
}

/// Cancels every unfinished job of the run (final).
#[utoipa::path(post, path = "/api/v1/runs/{run}/cancel", tag = "actions", params(("run" = String, Path, description = "The run's name")),
    responses((status = 200, body = RunState), (status = 404, body = super::ErrorBody)))]
pub async fn cancel<S: Store>(State(coordinator): State<Coordinator<S>>, _: Operator, Path(name): Path<String>) -> Result<Json<RunState>, ApiError> {
    change(coordinator, &name, "cancel").await
}

/// Which failed jobs to queue again: exactly one of the fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resubmit {
    /// Every failed job of the run.
    #[serde(default)]
    pub all: bool,
    /// The failed jobs of these shards.
    #[serde(default)]
    pub shards: Vec<String>,
    /// These jobs (only the failed ones are queued again).
    #[serde(default)]
    pub jobs: Vec<i64>,
    /// Every failed job matching these filters of the jobs listing (`state` is `failed`).
    #[serde(default)]
    pub filter: Option<ResubmitFilter>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResubmitFilter {
    pub shard: Option<String>,
    pub worker: Option<String>,
    /// `retryable`, `permanent` or `qa`.
    pub class: Option<String>,
    /// Sample-id prefix.
    pub sample: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Resubmitted {
    /// Failed jobs queued again.
    pub requeued: u64,
    /// Of those, jobs whose input still does not resolve (they fail again with the reason).
    pub unresolved: u64,
}

/// Queues failed jobs again with a fresh attempt budget, re-resolved against the run's spec.
#[utoipa::path(post, path = "/api/v1/runs/{run}/resubmit", tag = "actions", params(("run" = String, Path, description = "The run's name")), request_body = Resubmit,
    responses((status = 200, body = Resubmitted), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn resubmit<S: Store>(
    State(coordinator): State<Coordinator<S>>,
    _: Operator,
    Path(name): Path<String>,
    Body(body): Body<Resubmit>,
) -> Result<Json<Resubmitted>, ApiError> {
    let chosen = [body.all, !body.shards.is_empty(), !body.jobs.is_empty(), body.filter.is_some()].iter().filter(|given| **given).count();
    if chosen != 1 {
        return Err(ApiError::bad_request(
            "say which failed jobs to resubmit with exactly one of `all: true`, `shards: [...]`, `jobs: [...]` or `filter: {...}`",
        ));
    }
    let admin = AdminService(coordinator.clone());
    let mut job_ids = body.jobs;
    if let Some(filter) = body.filter {
        let query = JobQuery {
            state: Some(JobState::Failed.as_str().to_string()),
            shard: filter.shard,
            worker: filter.worker,
            class: filter.class,
            sample: filter.sample,
            ..JobQuery::default()
        };
        let filter = crate::store::JobFilter { limit: Some(MAX_FILTERED), ..query.filter_unlimited()? };
        let info = admin.find(&name).await?;
        job_ids = coordinator.store().run_jobs(info.id, &filter).await.map_err(ApiError::from_store)?.iter().map(|job| job.job.0).collect();
        if job_ids.is_empty() {
            return Ok(Json(Resubmitted { requeued: 0, unresolved: 0 }));
        }
    }
    let request = pb::ResubmitRequest { run: name, failed: body.all, shards: body.shards, job_ids, ..pb::ResubmitRequest::default() };
    let answer = admin.resubmit(tonic::Request::new(request)).await?.into_inner();
    Ok(Json(Resubmitted { requeued: answer.requeued, unresolved: answer.unresolved }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Regenerate {
    /// The jobs to render again with new seeds (failed or succeeded ones).
    #[serde(default)]
    pub jobs: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Regenerated {
    /// Jobs queued again, each with its reseed counter one higher.
    pub requeued: u64,
    /// Chosen jobs left alone (still queued or leased, cancelled, or without a resolvable input).
    pub skipped: u64,
}

/// Renders chosen jobs again with new seeds (QA failures, or outputs a person rejects): each job's
/// reseed counter goes up by one and enters every seed, so the result stays reproducible.
#[utoipa::path(post, path = "/api/v1/runs/{run}/regenerate", tag = "actions", params(("run" = String, Path, description = "The run's name")), request_body = Regenerate,
    responses((status = 200, body = Regenerated), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn regenerate<S: Store>(
    State(coordinator): State<Coordinator<S>>,
    _: Operator,
    Path(name): Path<String>,
    Body(body): Body<Regenerate>,
) -> Result<Json<Regenerated>, ApiError> {
    let request = pb::RegenerateRequest { run: name, job_ids: body.jobs };
    let answer = AdminService(coordinator).regenerate(tonic::Request::new(request)).await?.into_inner();
    Ok(Json(Regenerated { requeued: answer.requeued, skipped: answer.skipped }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Only on this run (every run that quarantined the worker when absent).
    pub run: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Released {
    /// The runs the quarantine was lifted on.
    pub runs: Vec<String>,
}

/// Lifts a worker's quarantine, so it may lease those runs' jobs again.
#[utoipa::path(post, path = "/api/v1/workers/{name}/release", tag = "actions", params(("name" = String, Path, description = "The worker's name")), request_body = Release,
    responses((status = 200, body = Released), (status = 404, description = "Not quarantined", body = super::ErrorBody)))]
pub async fn release<S: Store>(
    State(coordinator): State<Coordinator<S>>,
    _: Operator,
    Path(name): Path<String>,
    Body(body): Body<Release>,
) -> Result<Json<Released>, ApiError> {
    let request = pb::ReleaseWorkerRequest { worker: name, run: body.run.unwrap_or_default() };
    let answer = AdminService(coordinator).release_worker(tonic::Request::new(request)).await?.into_inner();
    Ok(Json(Released { runs: answer.runs }))
}
