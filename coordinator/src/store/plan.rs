//! The decisions every backend shares: given the locked rows' views and a batch of requests, what
//! each request answers and what is written back ([`crate::state`] decides each job). Both stores
//! call these between locking their rows and writing, so they cannot disagree.

use super::{
    CompletionReport, CompletionRequest, FailureReport, FailureRequest, JobWrite, NewRun, ReapedJob, Resubmission, ResubmitReport, Resubmitted, Result,
    RunState, ShardStatus, chrono_duration,
};
use crate::error::StoreError;
use crate::retry::RetryPolicy;
use crate::state::{self, Completion, Expiry, Failure, JobView, Stale, StateCounts};
use acufarm_core::{FailureClass, JobId, JobState, RunId, ShardId};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Decides a batch of completions. A job completed twice in one batch is accepted once and then
/// reported as a duplicate, as if the requests had come one by one.
pub(crate) fn plan_complete<'a>(views: &mut HashMap<JobId, JobView>, requests: &'a [CompletionRequest]) -> (Vec<CompletionReport>, Vec<JobWrite<'a>>) {
    let mut reports = Vec::with_capacity(requests.len());
    let mut writes = Vec::new();
    for request in requests {
        let outcome = match views.get_mut(&request.job) {
            None => Completion::Stale(Stale::UnknownJob),
            Some(view) => {
                let outcome = state::complete(view, request.attempt);
                if outcome == Completion::Accepted {
                    writes.push(JobWrite { result: Some(request.result.as_str()), ..JobWrite::new(request.job, JobState::Succeeded, view) });
                    view.state = JobState::Succeeded;
                    view.holder = None;
                }
                outcome
            }
        };
        reports.push(CompletionReport { job: request.job, attempt: request.attempt, outcome });
    }
    (reports, writes)
}

/// Decides a batch of failures under `policy`.
pub(crate) fn plan_fail(
    views: &mut HashMap<JobId, JobView>,
    requests: &[FailureRequest],
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> (Vec<FailureReport>, Vec<JobWrite<'static>>) {
    let mut reports = Vec::with_capacity(requests.len());
    let mut writes = Vec::new();
    for request in requests {
        let outcome = match views.get_mut(&request.job) {
            None => Failure::Stale(Stale::UnknownJob),
            Some(view) => {
                let outcome = state::fail(view, request.attempt, request.class, policy);
                let new_state = match outcome {
                    Failure::Retry { .. } => Some(JobState::Queued),
                    Failure::Failed { .. } => Some(JobState::Failed),
                    Failure::Stale(_) => None,
                };
                if let Some(new_state) = new_state {
                    // A retry is offered to other workers first, for one more backoff.
                    let (not_before, failed_by, others_until) = match outcome {
                        Failure::Retry { backoff } => {
                            let backoff = chrono_duration(backoff);
                            (Some(now + backoff), view.holder.clone(), Some(now + backoff + backoff))
                        }
                        _ => (None, None, None),
                    };
                    writes.push(JobWrite {
                        not_before,
                        failed_by,
                        others_until,
                        failure_class: Some(request.class),
                        last_error: Some(request.message.clone()),
                        ..JobWrite::new(request.job, new_state, view)
                    });
                    view.state = new_state;
                    view.holder = None;
                }
                outcome
            }
        };
        reports.push(FailureReport { job: request.job, attempt: request.attempt, outcome });
    }
    (reports, writes)
}

/// Decides what happens to jobs whose leases expired, each under its run's lost-lease cap.
pub(crate) fn plan_reap(expired: &[(JobId, JobView, u32)]) -> (Vec<ReapedJob>, Vec<JobWrite<'static>>) {
    let mut reaped = Vec::with_capacity(expired.len());
    let mut writes = Vec::with_capacity(expired.len());
    for (id, view, max_lost) in expired {
        let policy = RetryPolicy { max_lost: *max_lost, ..RetryPolicy::default() };
        let Some(outcome) = state::expire(view, &policy) else { continue };
        let write = match outcome {
            Expiry::Requeue { lost } => JobWrite { lost, ..JobWrite::new(*id, JobState::Queued, view) },
            Expiry::Fail { lost } => JobWrite {
                lost,
                failure_class: Some(FailureClass::Retryable),
                last_error: Some(format!("lost its lease {lost} times, more than the {} allowed; the job may be crashing its workers", policy.max_lost)),
                ..JobWrite::new(*id, JobState::Failed, view)
            },
        };
        writes.push(write);
        reaped.push(ReapedJob { job: *id, attempt: view.attempt, outcome });
    }
    (reaped, writes)
}

/// The succeeded jobs a batch regenerates: their outputs will be replaced, so their run's manifest
/// is due again.
pub(crate) fn regenerated_outputs(views: &HashMap<JobId, JobView>, requests: &[Resubmission]) -> Vec<i64> {
    requests.iter().filter(|r| r.regenerate && views.get(&r.job).is_some_and(|view| view.state == JobState::Succeeded)).map(|r| r.job.0).collect()
}

/// Decides a batch of resubmissions.
pub(crate) fn plan_resubmit(
    views: &mut HashMap<JobId, JobView>,
    requests: &[Resubmission],
    now: DateTime<Utc>,
) -> (Vec<ResubmitReport>, Vec<JobWrite<'static>>) {
    let mut reports = Vec::with_capacity(requests.len());
    let mut writes = Vec::new();
    for request in requests {
        let outcome = match views.get_mut(&request.job) {
            None => Resubmitted::UnknownJob,
            Some(view) => match if request.regenerate { state::regenerate(view) } else { state::resubmit(view) } {
                Err(state) => Resubmitted::NotFailed { state },
                Ok(attempt_base) => {
                    writes.push(JobWrite {
                        lost: 0,
                        not_before: Some(now),
                        attempt_base: Some(attempt_base),
                        spec: Some(request.spec.to_string()),
                        ..JobWrite::new(request.job, JobState::Queued, view)
                    });
                    view.state = JobState::Queued;
                    Resubmitted::Requeued
                }
            },
        };
        reports.push(ResubmitReport { job: request.job, outcome });
    }
    (reports, writes)
}

/// Shard statuses from per-(shard, state) counts, in shard id order.
pub(crate) fn shard_statuses(shards: Vec<(ShardId, String)>, counts: &[(ShardId, JobState, u64)]) -> Vec<ShardStatus> {
    let mut by_shard: HashMap<ShardId, StateCounts> = HashMap::new();
    for (shard, state, count) in counts {
        by_shard.entry(*shard).or_default().add(*state, *count);
    }
    let mut statuses: Vec<ShardStatus> = shards
        .into_iter()
        .map(|(shard, key)| {
            let counts = by_shard.get(&shard).copied().unwrap_or_default();
            ShardStatus { shard, key, state: state::shard_state(&counts), counts }
        })
        .collect();
    statuses.sort_by_key(|status| status.shard);
    statuses
}

/// What an operator does to a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunAction {
    Pause,
    Resume,
    Cancel,
}

/// The run's next state, `None` when the action changes nothing (pausing a paused run), or an
/// error when it cannot apply (a cancelled run is final).
pub(crate) fn run_transition(run: RunId, current: RunState, action: RunAction) -> Result<Option<RunState>> {
    match (current, action) {
        (RunState::Cancelled, RunAction::Cancel) => Ok(None),
        (_, RunAction::Cancel) => Ok(Some(RunState::Cancelled)),
        (RunState::Cancelled, RunAction::Pause) => Err(StoreError::RunCancelled { run, action: "paused" }),
        (RunState::Cancelled, RunAction::Resume) => Err(StoreError::RunCancelled { run, action: "resumed" }),
        (RunState::Active, RunAction::Pause) => Ok(Some(RunState::Paused)),
        (RunState::Paused, RunAction::Resume) => Ok(Some(RunState::Active)),
        (RunState::Paused, RunAction::Pause) | (RunState::Active, RunAction::Resume) => Ok(None),
    }
}

/// Checks a run before any write: shard keys unique, every job in a known shard, sample ids
/// unique. Doing it here turns a constraint violation deep in a bulk insert into a sentence.
pub(crate) fn validate_new_run(run: &NewRun) -> Result<()> {
    let invalid = |reason: String| StoreError::InvalidRun { name: run.name.clone(), reason };
    if run.name.trim().is_empty() {
        return Err(invalid("the run name is empty".into()));
    }
    let mut shard_keys = std::collections::HashSet::new();
    for key in &run.shards {
        if !shard_keys.insert(key.as_str()) {
            return Err(invalid(format!("shard `{key}` is listed twice")));
        }
    }
    let mut samples = std::collections::HashSet::new();
    for job in &run.jobs {
        if !shard_keys.contains(job.shard_key.as_str()) {
            return Err(invalid(format!("job `{}` names shard `{}`, which the run does not have", job.sample_id, job.shard_key)));
        }
        if !samples.insert(job.sample_id.as_str()) {
            return Err(invalid(format!("sample `{}` appears in two jobs", job.sample_id)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewJob;
    use acufarm_core::Attempt;

    const PG_SCHEMA: &str = include_str!("../../../migrations/postgres/20261125000000_jobs.sql");
    const SQLITE_SCHEMA: &str = include_str!("../../../migrations/sqlite/20261125000000_jobs.sql");

    #[test]
    fn both_schemas_allow_exactly_the_job_states_of_core() {
        let listed = JobState::ALL.map(|state| format!("'{state}'")).join(", ");
        for schema in [PG_SCHEMA, SQLITE_SCHEMA] {
            assert!(schema.contains(&format!("state IN ({listed})")), "schema's job state CHECK must list {listed}");
        }
    }

    fn new_run(shards: &[&str], jobs: &[(&str, &str)]) -> NewRun {
        NewRun {
            name: "r".into(),
            spec: String::new(),
            priority: 0,
            bundle_sha256: "b".into(),
            max_lost: 5,
            shards: shards.iter().map(|key| key.to_string()).collect(),
            jobs: jobs
                .iter()
                .map(|(shard, sample)| NewJob { shard_key: shard.to_string(), sample_id: sample.to_string(), spec: serde_json::json!({}) })
                .collect(),
        }
    }

    #[test]
    fn validation_names_the_unknown_shard_and_duplicate_sample() {
        assert!(validate_new_run(&new_run(&["m1"], &[("m1", "a"), ("m1", "b")])).is_ok());
        let unknown = validate_new_run(&new_run(&["m1"], &[("m2", "a")])).unwrap_err().to_string();
        assert!(unknown.contains("job `a` names shard `m2`"), "{unknown}");
        let twice = validate_new_run(&new_run(&["m1"], &[("m1", "a"), ("m1", "a")])).unwrap_err().to_string();
        assert!(twice.contains("sample `a` appears in two jobs"), "{twice}");
    }

    #[test]
    fn run_transitions_pause_resume_and_cancel() {
        let run = RunId(1);
        assert_eq!(run_transition(run, RunState::Active, RunAction::Pause).unwrap(), Some(RunState::Paused));
        assert_eq!(run_transition(run, RunState::Paused, RunAction::Pause).unwrap(), None);
        assert_eq!(run_transition(run, RunState::Paused, RunAction::Resume).unwrap(), Some(RunState::Active));
        assert_eq!(run_transition(run, RunState::Active, RunAction::Resume).unwrap(), None);
        assert_eq!(run_transition(run, RunState::Paused, RunAction::Cancel).unwrap(), Some(RunState::Cancelled));
        assert_eq!(run_transition(run, RunState::Cancelled, RunAction::Cancel).unwrap(), None);
        let error = run_transition(run, RunState::Cancelled, RunAction::Resume).unwrap_err().to_string();
        assert_eq!(error, "run 1 is cancelled, so it cannot be resumed; submit it again with --force instead");
    }

    #[test]
    fn the_reaper_applies_each_runs_own_lost_lease_cap() {
        let leased = |lost| JobView { state: JobState::Leased, attempt: Attempt(2), attempt_base: Attempt(0), lost, holder: Some("w".into()) };
        // Both jobs lose their second lease; the first run allows one loss, the second five.
        let (reaped, writes) = plan_reap(&[(JobId(1), leased(1), 1), (JobId(2), leased(1), 5)]);
        assert_eq!(reaped.iter().map(|r| r.outcome).collect::<Vec<_>>(), [Expiry::Fail { lost: 2 }, Expiry::Requeue { lost: 2 }]);
        assert_eq!(writes[0].state, JobState::Failed);
        assert_eq!(writes[0].last_error.as_deref(), Some("lost its lease 2 times, more than the 1 allowed; the job may be crashing its workers"));
        assert_eq!((writes[1].state, writes[1].lost), (JobState::Queued, 2));
    }

    #[test]
    fn a_job_completed_twice_in_one_batch_is_accepted_then_duplicate() {
        let view = JobView { state: JobState::Leased, attempt: Attempt(1), attempt_base: Attempt(0), lost: 0, holder: Some("w".into()) };
        let mut views = HashMap::from([(JobId(7), view)]);
        let request = CompletionRequest { job: JobId(7), attempt: Attempt(1), result: r#"{"k":1}"#.to_string() };
        let requests = [request.clone(), request];
        let (reports, writes) = plan_complete(&mut views, &requests);
        let outcomes: Vec<_> = reports.iter().map(|report| report.outcome).collect();
        assert_eq!(outcomes, [Completion::Accepted, Completion::Duplicate]);
        assert_eq!(writes.len(), 1);
    }
}
