//! The one conformance suite: every scenario is a generic `async fn(S: Store)`, and
//! `conformance!` runs each against Postgres and SQLite. Time is passed in; nothing sleeps.

mod support;

use acufarm_coordinator::state::{Completion, Expiry, Failure, ShardState, Stale, StateCounts};
use acufarm_coordinator::store::{
    AttemptOutcome, CompletionRequest, FailureRequest, JobAttempt, JobFilter, LeaseRequest, LeasedJob, ManifestClaim, ManifestCounts, NewJob, NewRun,
    Resubmission, Resubmitted, RunState, SucceededJob,
};
use acufarm_coordinator::{RetryPolicy, Store, StoreError};
use acufarm_core::{Attempt, FailureClass, JobId, JobState, RunId};
use chrono::{DateTime, TimeZone, Utc};
use futures_util::TryStreamExt;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    crate::support::with_postgres(super::$scenario).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    crate::support::with_sqlite(super::$scenario).await;
                }
            )*
        }
    };
}

conformance!(
    create_and_find_run,
    duplicate_run_name_is_refused_unless_forced,
    invalid_run_is_refused_whole,
    lease_takes_highest_priority_then_oldest_up_to_max_jobs,
    bundle_mismatch_gets_nothing,
    paused_runs_are_skipped_until_resumed,
    backoff_not_before_is_respected,
    concurrent_leases_hand_out_each_job_once,
    heartbeat_extends_only_leases_still_held,
    complete_reports_accepted_duplicate_and_stale,
    late_completion_from_an_expired_lease_is_rejected,
    retryable_failure_requeues_with_backoff_until_exhausted,
    permanent_and_qa_failures_fail_at_once,
    reaper_requeues_without_using_attempts_and_fails_past_lost_cap,
    status_derives_shard_states_from_jobs,
    resubmit_requeues_failed_jobs_with_a_fresh_budget,
    cancel_stops_unfinished_jobs_and_fences_their_holders,
    unknown_run_is_reported,
    job_records_and_filters_show_state_holder_and_failure,
    runs_are_listed_and_their_spec_replaced,
    succeeded_jobs_stream_in_output_path_order,
    reaper_applies_each_runs_own_lost_lease_cap,
    manifest_write_is_claimed_by_one_writer_per_set_of_counts,
    concurrent_manifest_claims_have_one_winner,
    a_retry_is_offered_to_other_workers_first,
    a_worker_failing_in_a_row_is_quarantined_on_that_run_until_released,
    job_listing_filters_by_worker_class_and_prefix_and_pages_by_id,
    failed_and_lost_attempts_are_kept_with_their_worker_and_detail,
    a_regeneration_queues_finished_jobs_again_and_makes_the_manifest_due,
);

const BUNDLE: &str = "bundle-a";
const LEASE: Duration = Duration::from_secs(60);

/// The scenarios' clock: `at(n)` is n seconds after a fixed start.
fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

fn policy() -> RetryPolicy {
    RetryPolicy::builder().max_attempts(3).backoff_base(Duration::from_secs(10)).backoff_max(Duration::from_secs(60)).max_lost(2).build()
}

/// A run with `jobs_per_shard` jobs in each named shard; job specs record where they came from.
fn new_run(name: &str, priority: i32, shards: &[&str], jobs_per_shard: usize) -> NewRun {
    let jobs = shards
        .iter()
        .flat_map(|shard| {
            (0..jobs_per_shard).map(move |index| NewJob {
                shard_key: shard.to_string(),
                sample_id: format!("{shard}_{index:03}"),
                spec: json!({ "run": name, "sample": format!("{shard}_{index:03}"), "seed": index }),
            })
        })
        .collect();
    NewRun {
        name: name.to_string(),
        spec: format!("[run]\nname = \"{name}\"\n"),
        priority,
        bundle_sha256: BUNDLE.to_string(),
        // The lost-lease cap of `policy()`, which the reaper takes from the run.
        max_lost: policy().max_lost,
        shards: shards.iter().map(|shard| shard.to_string()).collect(),
        jobs,
    }
}

fn lease_request(worker: &str, max_jobs: u32, now: DateTime<Utc>) -> LeaseRequest {
    LeaseRequest { worker_id: worker.to_string(), worker_name: worker.to_string(), bundle_sha256: BUNDLE.to_string(), max_jobs, lease_duration: LEASE, now }
}

async fn lease<S: Store>(store: &S, worker: &str, max_jobs: u32, now: DateTime<Utc>) -> Vec<LeasedJob> {
    store.lease(&lease_request(worker, max_jobs, now)).await.unwrap()
}

async fn complete_one<S: Store>(store: &S, job: JobId, attempt: i32, now: DateTime<Utc>) -> Completion {
    let request = CompletionRequest { job, attempt: Attempt(attempt), result: json!({ "attempt": attempt }).to_string() };
    store.complete(&[request], now).await.unwrap()[0].outcome
}

/// The succeeded jobs of a run, collected from the store's stream.
async fn succeeded<S: Store>(store: &S, run: RunId) -> Vec<SucceededJob> {
    store.succeeded_jobs(run).await.unwrap().try_collect().await.unwrap()
}

fn parsed(result: &str) -> serde_json::Value {
    serde_json::from_str(result).unwrap()
}

async fn fail_one<S: Store>(store: &S, job: JobId, attempt: i32, class: FailureClass, now: DateTime<Utc>) -> Failure {
    let request = FailureRequest { job, attempt: Attempt(attempt), class, message: format!("{} failure", class.as_str()), detail: None };
    store.fail(&[request], &policy(), now).await.unwrap()[0].outcome
}

/// The run's counts by state, as the state counters give them, after checking them (and every
/// shard's) against the jobs themselves: every scenario that looks at counts checks the counters.
async fn counts<S: Store>(store: &S, run: RunId) -> StateCounts {
    let status = store.run_status(run).await.unwrap();
    let jobs = store.run_jobs(run, &JobFilter::default()).await.unwrap();
    let mut total = StateCounts::default();
    for job in &jobs {
        total.add(job.state, 1);
    }
    assert_eq!(status.counts, total, "the state counters disagree with the jobs");
    for shard in &status.shards {
        let mut counted = StateCounts::default();
        for job in jobs.iter().filter(|job| job.shard_key == shard.key) {
            counted.add(job.state, 1);
        }
        assert_eq!(shard.counts, counted, "shard {}'s state counters disagree with its jobs", shard.key);
    }
    status.counts
}

fn state_counts(queued: u64, leased: u64, succeeded: u64, failed: u64, cancelled: u64) -> StateCounts {
    StateCounts { queued, leased, succeeded, failed, cancelled }
}

async fn create_and_find_run<S: Store>(store: S) {
    let run = store.create_run(&new_run("relight", 2, &["m01", "m02"], 3), false, at(0)).await.unwrap();
    let found = store.find_run("relight").await.unwrap().expect("the run is found by name");
    assert_eq!(found.id, run);
    assert_eq!((found.priority, found.state, found.created_at), (2, RunState::Active, at(0)));
    assert_eq!(found.bundle_sha256, BUNDLE);
    assert!(found.spec.contains("relight"));
    assert_eq!(store.find_run("other").await.unwrap(), None);

    let status = store.run_status(run).await.unwrap();
    assert_eq!(status.counts, state_counts(6, 0, 0, 0, 0));
    let shards: Vec<(&str, ShardState, u64)> = status.shards.iter().map(|shard| (shard.key.as_str(), shard.state, shard.counts.total())).collect();
    assert_eq!(shards, [("m01", ShardState::Queued, 3), ("m02", ShardState::Queued, 3)]);
}

async fn duplicate_run_name_is_refused_unless_forced<S: Store>(store: S) {
    let first = store.create_run(&new_run("relight", 0, &["m01"], 2), false, at(0)).await.unwrap();
    lease(&store, "w1", 1, at(1)).await;

    let error = store.create_run(&new_run("relight", 0, &["m01"], 5), false, at(2)).await.unwrap_err();
    assert!(matches!(error, StoreError::RunNameTaken { .. }), "{error:?}");
    assert_eq!(error.to_string(), "a run named `relight` already exists; pick another run.name or pass --force to replace it");
    assert_eq!(counts(&store, first).await, state_counts(1, 1, 0, 0, 0), "a refused submit changes nothing");

    let second = store.create_run(&new_run("relight", 0, &["m01"], 5), true, at(3)).await.unwrap();
    assert_ne!(first, second);
    assert!(matches!(store.run_status(first).await, Err(StoreError::RunNotFound { .. })));
    assert_eq!(counts(&store, second).await, state_counts(5, 0, 0, 0, 0));
    assert_eq!(store.find_run("relight").await.unwrap().unwrap().id, second);
}

async fn invalid_run_is_refused_whole<S: Store>(store: S) {
    let mut run = new_run("broken", 0, &["m01"], 2);
    run.jobs.push(NewJob { shard_key: "m09".into(), sample_id: "m09_000".into(), spec: json!({}) });
    let error = store.create_run(&run, false, at(0)).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidRun { .. }), "{error:?}");
    assert!(error.to_string().contains("job `m09_000` names shard `m09`"), "{error}");
    assert_eq!(store.find_run("broken").await.unwrap(), None);
}

async fn lease_takes_highest_priority_then_oldest_up_to_max_jobs<S: Store>(store: S) {
    let low = store.create_run(&new_run("low", 0, &["m01"], 3), false, at(0)).await.unwrap();
    let high = store.create_run(&new_run("high", 5, &["m01", "m02"], 2), false, at(1)).await.unwrap();

    let first = lease(&store, "w1", 3, at(10)).await;
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|job| job.run == high && job.attempt == Attempt(1)));
    assert!(first.iter().all(|job| job.lease_expires_at == at(70)));
    assert!(first.windows(2).all(|pair| pair[0].job < pair[1].job), "oldest job first");
    assert_eq!(first[0].sample_id, "m01_000");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&first[0].spec).unwrap(), json!({ "run": "high", "sample": "m01_000", "seed": 0 }));

    let second = lease(&store, "w2", 10, at(11)).await;
    let runs: Vec<RunId> = second.iter().map(|job| job.run).collect();
    assert_eq!(runs, [high, low, low, low], "the rest of the high run, then the low one");
    assert!(second[1..].windows(2).all(|pair| pair[0].job < pair[1].job));
    assert!(lease(&store, "w3", 10, at(12)).await.is_empty());
    assert!(lease(&store, "w3", 0, at(12)).await.is_empty());
    assert_eq!(counts(&store, high).await, state_counts(0, 4, 0, 0, 0));
}

async fn bundle_mismatch_gets_nothing<S: Store>(store: S) {
    let run = store.create_run(&new_run("relight", 0, &["m01"], 2), false, at(0)).await.unwrap();
    let request = LeaseRequest { bundle_sha256: "bundle-b".into(), ..lease_request("w1", 5, at(1)) };
    assert!(store.lease(&request).await.unwrap().is_empty());
    assert_eq!(counts(&store, run).await, state_counts(2, 0, 0, 0, 0));
}

async fn paused_runs_are_skipped_until_resumed<S: Store>(store: S) {
    let paused = store.create_run(&new_run("paused", 9, &["m01"], 2), false, at(0)).await.unwrap();
    let active = store.create_run(&new_run("active", 0, &["m01"], 1), false, at(0)).await.unwrap();
    store.pause_run(paused, at(1)).await.unwrap();
    store.pause_run(paused, at(1)).await.unwrap();
    assert_eq!(store.find_run("paused").await.unwrap().unwrap().state, RunState::Paused);

    let leased = lease(&store, "w1", 5, at(2)).await;
    assert_eq!(leased.iter().map(|job| job.run).collect::<Vec<_>>(), [active]);

    store.resume_run(paused, at(3)).await.unwrap();
    let leased = lease(&store, "w1", 5, at(4)).await;
    assert_eq!(leased.iter().map(|job| job.run).collect::<Vec<_>>(), [paused, paused]);
}

async fn backoff_not_before_is_respected<S: Store>(store: S) {
    store.create_run(&new_run("relight", 0, &["m01"], 1), false, at(0)).await.unwrap();
    let job = lease(&store, "w1", 1, at(0)).await[0].job;
    assert_eq!(fail_one(&store, job, 1, FailureClass::Retryable, at(5)).await, Failure::Retry { backoff: Duration::from_secs(10) });

    assert!(lease(&store, "w1", 1, at(14)).await.is_empty(), "still backing off");
    let again = lease(&store, "w2", 1, at(15)).await;
    assert_eq!((again[0].job, again[0].attempt), (job, Attempt(2)));
}

async fn concurrent_leases_hand_out_each_job_once<S: Store>(store: S) {
    let shards: Vec<String> = (0..10).map(|index| format!("m{index:02}")).collect();
    let shard_refs: Vec<&str> = shards.iter().map(String::as_str).collect();
    let run = store.create_run(&new_run("crowd", 0, &shard_refs, 20), false, at(0)).await.unwrap();

    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = lease(&store, &format!("w{worker}"), 7, at(1)).await;
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|job| job.job));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let unique: HashSet<JobId> = all.iter().copied().collect();
    assert_eq!(all.len(), 200, "every job leased");
    assert_eq!(unique.len(), 200, "no job leased twice");
    assert_eq!(counts(&store, run).await, state_counts(0, 200, 0, 0, 0));
}

async fn heartbeat_extends_only_leases_still_held<S: Store>(store: S) {
    store.create_run(&new_run("relight", 0, &["m01"], 2), false, at(0)).await.unwrap();
    let leased = lease(&store, "w1", 2, at(0)).await;
    let (kept, dropped) = (JobAttempt { job: leased[0].job, attempt: Attempt(1) }, JobAttempt { job: leased[1].job, attempt: Attempt(1) });

    let bogus = JobAttempt { job: kept.job, attempt: Attempt(2) };
    let held = store.heartbeat("w1", &[kept, bogus, JobAttempt { job: JobId(999_999), attempt: Attempt(1) }], LEASE, at(30)).await.unwrap();
    assert_eq!(held, [kept], "only the current attempt of a job the worker holds");
    assert!(store.heartbeat("w2", &[kept], LEASE, at(30)).await.unwrap().is_empty(), "another worker cannot extend it");
    assert!(store.heartbeat("w1", &[], LEASE, at(30)).await.unwrap().is_empty());

    // Leased at 0 for 60 s; `kept` was extended at 30 to 90.
    let reaped = store.reap_expired(at(70)).await.unwrap();
    assert_eq!(reaped.iter().map(|job| job.job).collect::<Vec<_>>(), [dropped.job]);
    assert_eq!(store.heartbeat("w1", &[kept, dropped], LEASE, at(71)).await.unwrap(), [kept]);
}

async fn complete_reports_accepted_duplicate_and_stale<S: Store>(store: S) {
    let run = store.create_run(&new_run("relight", 0, &["m01"], 3), false, at(0)).await.unwrap();
    let leased = lease(&store, "w1", 2, at(0)).await;
    let (a, b) = (leased[0].job, leased[1].job);
    let request = |job, attempt, tag: &str| CompletionRequest { job, attempt: Attempt(attempt), result: json!({ "key": tag }).to_string() };

    let reports = store
        .complete(&[request(a, 1, "a"), request(b, 1, "b"), request(a, 1, "a-again"), request(b, 2, "b-future"), request(JobId(999_999), 1, "nobody")], at(5))
        .await
        .unwrap();
    let outcomes: Vec<Completion> = reports.iter().map(|report| report.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Completion::Accepted,
            Completion::Accepted,
            Completion::Duplicate,
            Completion::Stale(Stale::UnknownAttempt { current: Attempt(1) }),
            Completion::Stale(Stale::UnknownJob),
        ]
    );
    assert_eq!(complete_one(&store, a, 1, at(6)).await, Completion::Duplicate, "a retried request is a duplicate");
    assert_eq!(counts(&store, run).await, state_counts(1, 0, 2, 0, 0));

    let done = succeeded(&store, run).await;
    let rows: Vec<(JobId, &str, &str, Attempt, serde_json::Value)> =
        done.iter().map(|job| (job.job, job.shard_key.as_str(), job.sample_id.as_str(), job.attempt, parsed(&job.result))).collect();
    assert_eq!(rows, [(a, "m01", "m01_000", Attempt(1), json!({ "key": "a" })), (b, "m01", "m01_001", Attempt(1), json!({ "key": "b" }))]);
}

async fn late_completion_from_an_expired_lease_is_rejected<S: Store>(store: S) {
    let run = store.create_run(&new_run("relight", 0, &["m01"], 1), false, at(0)).await.unwrap();
    let job = lease(&store, "slow", 1, at(0)).await[0].job;
    assert_eq!(store.reap_expired(at(61)).await.unwrap()[0].outcome, Expiry::Requeue { lost: 1 });

    assert_eq!(complete_one(&store, job, 1, at(62)).await, Completion::Stale(Stale::NotLeased { state: JobState::Queued }));
    let again = lease(&store, "fast", 1, at(63)).await;
    assert_eq!(again[0].attempt, Attempt(2));
    assert_eq!(complete_one(&store, job, 1, at(64)).await, Completion::Stale(Stale::Superseded { current: Attempt(2) }));
    assert_eq!(fail_one(&store, job, 1, FailureClass::Permanent, at(64)).await, Failure::Stale(Stale::Superseded { current: Attempt(2) }));
    assert_eq!(complete_one(&store, job, 2, at(65)).await, Completion::Accepted);
    assert_eq!(complete_one(&store, job, 1, at(66)).await, Completion::Stale(Stale::Superseded { current: Attempt(2) }));
    assert_eq!(parsed(&succeeded(&store, run).await[0].result), json!({ "attempt": 2 }));
}

async fn retryable_failure_requeues_with_backoff_until_exhausted<S: Store>(store: S) {
    let run = store.create_run(&new_run("relight", 0, &["m01"], 1), false, at(0)).await.unwrap();
    let job = lease(&store, "w1", 1, at(0)).await[0].job;
    assert_eq!(fail_one(&store, job, 1, FailureClass::Retryable, at(1)).await, Failure::Retry { backoff: Duration::from_secs(10) });
    assert_eq!(counts(&store, run).await, state_counts(1, 0, 0, 0, 0));

    // The retry goes to another worker (the one that failed it waits one more backoff).
    assert_eq!(lease(&store, "w2", 1, at(11)).await[0].attempt, Attempt(2));
    assert_eq!(fail_one(&store, job, 2, FailureClass::Retryable, at(12)).await, Failure::Retry { backoff: Duration::from_secs(20) });
    assert!(lease(&store, "w1", 1, at(31)).await.is_empty());

    assert_eq!(lease(&store, "w1", 1, at(32)).await[0].attempt, Attempt(3));
    assert_eq!(fail_one(&store, job, 3, FailureClass::Retryable, at(33)).await, Failure::Failed { exhausted: true });
    assert_eq!(counts(&store, run).await, state_counts(0, 0, 0, 1, 0));
    assert!(lease(&store, "w1", 1, at(1000)).await.is_empty());
    assert_eq!(fail_one(&store, job, 3, FailureClass::Retryable, at(34)).await, Failure::Stale(Stale::NotLeased { state: JobState::Failed }));
}

async fn permanent_and_qa_failures_fail_at_once<S: Store>(store: S) {
    let run = store.create_run(&new_run("relight", 0, &["m01"], 2), false, at(0)).await.unwrap();
    let leased = lease(&store, "w1", 2, at(0)).await;
    let requests = [
        FailureRequest { job: leased[0].job, attempt: Attempt(1), class: FailureClass::Permanent, message: "bad label JSON".into(), detail: None },
        FailureRequest { job: leased[1].job, attempt: Attempt(1), class: FailureClass::Qa, message: "drift above gate".into(), detail: None },
        FailureRequest { job: leased[1].job, attempt: Attempt(1), class: FailureClass::Retryable, message: "late".into(), detail: None },
    ];
    let outcomes: Vec<Failure> = store.fail(&requests, &policy(), at(1)).await.unwrap().iter().map(|report| report.outcome).collect();
    assert_eq!(
        outcomes,
        [Failure::Failed { exhausted: false }, Failure::Failed { exhausted: false }, Failure::Stale(Stale::NotLeased { state: JobState::Failed }),]
    );
    assert_eq!(counts(&store, run).await, state_counts(0, 0, 0, 2, 0));
}

async fn reaper_requeues_without_using_attempts_and_fails_past_lost_cap<S: Store>(store: S) {
    let run = store.create_run(&new_run("relight", 0, &["m01"], 2), false, at(0)).await.unwrap();
    // Job A is lost twice (the cap), then fails retryably: it still has its whole budget.
    let mut clock = 0;
    for expected_lost in 1..=2 {
        let leased = lease(&store, "crashy", 1, at(clock)).await;
        assert_eq!(leased[0].attempt, Attempt(expected_lost));
        assert!(store.reap_expired(at(clock + 59)).await.unwrap().is_empty(), "not expired yet");
        let reaped = store.reap_expired(at(clock + 60)).await.unwrap();
        assert_eq!(reaped.len(), 1);
        assert_eq!((reaped[0].attempt, reaped[0].outcome), (Attempt(expected_lost), Expiry::Requeue { lost: expected_lost as u32 }));
        clock += 100;
    }
    let leased = lease(&store, "w1", 1, at(clock)).await;
    assert_eq!(leased[0].attempt, Attempt(3));
    let job_a = leased[0].job;
    assert_eq!(
        fail_one(&store, job_a, 3, FailureClass::Retryable, at(clock + 1)).await,
        Failure::Retry { backoff: Duration::from_secs(10) },
        "lost leases did not use up attempts"
    );

    // A third loss is past max_lost = 2: the job fails.
    clock += 100;
    let leased = lease(&store, "crashy", 1, at(clock)).await;
    assert_eq!((leased[0].job, leased[0].attempt), (job_a, Attempt(4)));
    let reaped = store.reap_expired(at(clock + 60)).await.unwrap();
    assert_eq!(reaped[0].outcome, Expiry::Fail { lost: 3 });
    assert_eq!(counts(&store, run).await, state_counts(1, 0, 0, 1, 0));
    assert_eq!(complete_one(&store, job_a, 4, at(clock + 61)).await, Completion::Stale(Stale::NotLeased { state: JobState::Failed }));
}

async fn status_derives_shard_states_from_jobs<S: Store>(store: S) {
    let run = store.create_run(&new_run("relight", 0, &["done", "broken", "busy", "idle"], 2), false, at(0)).await.unwrap();
    let leased = lease(&store, "w1", 5, at(0)).await;
    // Ids follow shard order: done 0-1, broken 2-3, busy 4 leased (5 still queued).
    for job in &leased[0..2] {
        assert_eq!(complete_one(&store, job.job, 1, at(1)).await, Completion::Accepted);
    }
    assert_eq!(complete_one(&store, leased[2].job, 1, at(1)).await, Completion::Accepted);
    assert_eq!(fail_one(&store, leased[3].job, 1, FailureClass::Permanent, at(1)).await, Failure::Failed { exhausted: false });

    let status = store.run_status(run).await.unwrap();
    assert_eq!(status.counts, state_counts(3, 1, 3, 1, 0));
    let shards: Vec<(&str, ShardState, StateCounts)> = status.shards.iter().map(|shard| (shard.key.as_str(), shard.state, shard.counts)).collect();
    assert_eq!(
        shards,
        [
            ("done", ShardState::Succeeded, state_counts(0, 0, 2, 0, 0)),
            ("broken", ShardState::Failed, state_counts(0, 0, 1, 1, 0)),
            ("busy", ShardState::Running, state_counts(1, 1, 0, 0, 0)),
            ("idle", ShardState::Queued, state_counts(2, 0, 0, 0, 0)),
        ]
    );
}

async fn resubmit_requeues_failed_jobs_with_a_fresh_budget<S: Store>(store: S) {
    let run = store.create_run(&new_run("relight", 0, &["m01"], 2), false, at(0)).await.unwrap();
    let leased = lease(&store, "w1", 2, at(0)).await;
    let (failed, done) = (leased[0].job, leased[1].job);
    let strict = RetryPolicy::builder().max_attempts(1).build();
    let exhaust = FailureRequest { job: failed, attempt: Attempt(1), class: FailureClass::Retryable, message: "oom".into(), detail: None };
    assert_eq!(store.fail(&[exhaust], &strict, at(1)).await.unwrap()[0].outcome, Failure::Failed { exhausted: true });
    assert_eq!(complete_one(&store, done, 1, at(1)).await, Completion::Accepted);

    let fixed_spec = json!({ "sample": "m01_000", "fixed": true });
    let requests = [
        Resubmission { job: failed, spec: fixed_spec.clone(), regenerate: false },
        Resubmission { job: done, spec: json!({}), regenerate: false },
        Resubmission { job: JobId(999_999), spec: json!({}), regenerate: false },
    ];
    let outcomes: Vec<Resubmitted> = store.resubmit(&requests, at(2)).await.unwrap().iter().map(|report| report.outcome).collect();
    assert_eq!(outcomes, [Resubmitted::Requeued, Resubmitted::NotFailed { state: JobState::Succeeded }, Resubmitted::UnknownJob]);
    assert_eq!(counts(&store, run).await, state_counts(1, 0, 1, 0, 0));

    let again = lease(&store, "w2", 1, at(3)).await;
    assert_eq!((again[0].job, again[0].attempt), (failed, Attempt(2)), "the fencing token keeps growing");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&again[0].spec).unwrap(), fixed_spec);
    assert_eq!(complete_one(&store, failed, 1, at(4)).await, Completion::Stale(Stale::Superseded { current: Attempt(2) }));
    let retry = FailureRequest { job: failed, attempt: Attempt(2), class: FailureClass::Retryable, message: "oom".into(), detail: None };
    let two_tries = RetryPolicy::builder().max_attempts(2).backoff_base(Duration::from_secs(10)).build();
    assert_eq!(
        store.fail(&[retry], &two_tries, at(5)).await.unwrap()[0].outcome,
        Failure::Retry { backoff: Duration::from_secs(10) },
        "the new budget starts from its first attempt"
    );
}

async fn cancel_stops_unfinished_jobs_and_fences_their_holders<S: Store>(store: S) {
    let run = store.create_run(&new_run("relight", 0, &["m01"], 3), false, at(0)).await.unwrap();
    let leased = lease(&store, "w1", 2, at(0)).await;
    assert_eq!(complete_one(&store, leased[0].job, 1, at(1)).await, Completion::Accepted);

    store.cancel_run(run, at(2)).await.unwrap();
    store.cancel_run(run, at(3)).await.unwrap();
    let status = store.run_status(run).await.unwrap();
    assert_eq!(status.run.state, RunState::Cancelled);
    assert_eq!(status.counts, state_counts(0, 0, 1, 0, 2));
    assert_eq!(status.shards[0].state, ShardState::Cancelled);

    assert!(lease(&store, "w1", 5, at(4)).await.is_empty());
    assert_eq!(complete_one(&store, leased[1].job, 1, at(4)).await, Completion::Stale(Stale::NotLeased { state: JobState::Cancelled }));
    assert!(store.heartbeat("w1", &[JobAttempt { job: leased[1].job, attempt: Attempt(1) }], LEASE, at(4)).await.unwrap().is_empty());
    assert!(store.reap_expired(at(1000)).await.unwrap().is_empty());
    let error = store.resume_run(run, at(5)).await.unwrap_err();
    assert!(matches!(error, StoreError::RunCancelled { .. }), "{error:?}");
    assert_eq!(succeeded(&store, run).await.len(), 1, "finished work survives a cancel");
}

async fn unknown_run_is_reported<S: Store>(store: S) {
    let missing = RunId(424_242);
    assert!(matches!(store.run_status(missing).await, Err(StoreError::RunNotFound { .. })));
    assert!(matches!(store.pause_run(missing, at(0)).await, Err(StoreError::RunNotFound { .. })));
    assert!(matches!(store.cancel_run(missing, at(0)).await, Err(StoreError::RunNotFound { .. })));
    assert!(matches!(store.succeeded_jobs(missing).await, Err(StoreError::RunNotFound { .. })));
}

async fn job_records_and_filters_show_state_holder_and_failure<S: Store>(store: S) {
    let run = store.create_run(&new_run("records", 0, &["m1", "m2"], 2), false, at(0)).await.unwrap();
    let leased = lease(&store, "w1", 3, at(1)).await;
    assert_eq!(leased.len(), 3);
    assert_eq!(fail_one(&store, leased[1].job, 1, FailureClass::Permanent, at(2)).await, Failure::Failed { exhausted: false });

    let records = store.job_records(&[leased[2].job, leased[0].job, JobId(999_999)]).await.unwrap();
    assert_eq!(records.len(), 2, "unknown ids are left out");
    assert_eq!(records[0].job, leased[0].job, "id order");
    assert_eq!((records[0].state, records[0].attempt, records[0].leased_by.as_deref()), (JobState::Leased, Attempt(1), Some("w1")));
    assert_eq!(records[0].spec, leased[0].spec);
    assert_eq!(records[0].run, run);
    assert!(store.job_records(&[]).await.unwrap().is_empty());

    let failed = store.run_jobs(run, &JobFilter { state: Some(JobState::Failed), ..JobFilter::default() }).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].failure_class, Some(FailureClass::Permanent));
    assert_eq!(failed[0].last_error.as_deref(), Some("permanent failure"));
    assert_eq!(failed[0].leased_by, None);

    let m2 = store.run_jobs(run, &JobFilter { shard_keys: Some(vec!["m2".into()]), ..JobFilter::default() }).await.unwrap();
    assert_eq!(m2.iter().map(|job| job.sample_id.as_str()).collect::<Vec<_>>(), ["m2_000", "m2_001"]);
    let first = store.run_jobs(run, &JobFilter { limit: Some(1), ..JobFilter::default() }).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(store.run_jobs(run, &JobFilter::default()).await.unwrap().len(), 4);

    // Leased jobs and the queued one keep the run unfinished until every job has ended.
    assert!(store.has_unfinished(run).await.unwrap());
    for job in [leased[0].job, leased[2].job] {
        assert_eq!(complete_one(&store, job, 1, at(3)).await, Completion::Accepted);
    }
    assert!(store.has_unfinished(run).await.unwrap(), "one job is still queued");
    let last = lease(&store, "w1", 1, at(4)).await;
    assert!(store.has_unfinished(run).await.unwrap(), "one job is leased");
    assert_eq!(complete_one(&store, last[0].job, 1, at(5)).await, Completion::Accepted);
    assert!(!store.has_unfinished(run).await.unwrap(), "succeeded and failed jobs are finished");
}

async fn runs_are_listed_and_their_spec_replaced<S: Store>(store: S) {
    let a = store.create_run(&new_run("a", 0, &["m1"], 1), false, at(0)).await.unwrap();
    let b = store.create_run(&new_run("b", 5, &["m1"], 1), false, at(1)).await.unwrap();
    let runs = store.list_runs().await.unwrap();
    assert_eq!(runs.iter().map(|run| run.id).collect::<Vec<_>>(), [a, b]);
    store.set_run_spec(b, "[run]\nname = \"b\"\n# fixed\n", 7, at(2)).await.unwrap();
    let fixed = store.run(b).await.unwrap();
    assert!(fixed.spec.ends_with("# fixed\n"));
    assert_eq!((fixed.max_lost, store.run(a).await.unwrap().max_lost), (7, policy().max_lost), "the corrected spec's lost-lease cap");
    assert!(matches!(store.set_run_spec(RunId(424_242), "", 1, at(3)).await, Err(StoreError::RunNotFound { .. })));
    assert!(matches!(store.run(RunId(424_242)).await, Err(StoreError::RunNotFound { .. })));
}

async fn succeeded_jobs_stream_in_output_path_order<S: Store>(store: S) {
    let run = store.create_run(&new_run("ordered", 0, &["m01"], 5), false, at(0)).await.unwrap();
    let leased = lease(&store, "w1", 5, at(1)).await;
    // Output paths in the reverse of job order, bytewise ("Z" < "a"), and one result with none.
    let paths = [Some("train/b.png"), Some("train/a.png"), None, Some("test/Z.png"), Some("test/a.png")];
    let requests: Vec<CompletionRequest> = leased
        .iter()
        .zip(paths)
        .map(|(job, path)| CompletionRequest {
            job: job.job,
            attempt: job.attempt,
            result: match path {
                Some(path) => json!({ "output": { "path": path } }).to_string(),
                None => json!({ "no": "path" }).to_string(),
            },
        })
        .collect();
    store.complete(&requests, at(2)).await.unwrap();
    let order: Vec<Option<String>> =
        succeeded(&store, run).await.iter().map(|job| parsed(&job.result)["output"]["path"].as_str().map(str::to_string)).collect();
    let expected = [Some("test/Z.png"), Some("test/a.png"), Some("train/a.png"), Some("train/b.png"), None];
    assert_eq!(order, expected.map(|path| path.map(str::to_string)));
}

async fn reaper_applies_each_runs_own_lost_lease_cap<S: Store>(store: S) {
    // One run allows a single lost lease ([retry] max_lost = 1), the other the default five; one
    // reaper pass serves both.
    let strict = store.create_run(&NewRun { max_lost: 1, ..new_run("strict", 1, &["m01"], 1) }, false, at(0)).await.unwrap();
    let lenient = store.create_run(&NewRun { max_lost: 5, ..new_run("lenient", 0, &["m01"], 1) }, false, at(0)).await.unwrap();
    assert_eq!((store.run(strict).await.unwrap().max_lost, store.run(lenient).await.unwrap().max_lost), (1, 5));
    let mut clock = 0;
    for lost in 1..=2u32 {
        let leased = lease(&store, "crashy", 2, at(clock)).await;
        assert_eq!(leased.iter().map(|job| job.run).collect::<Vec<_>>(), [strict, lenient]);
        let reaped = store.reap_expired(at(clock + 60)).await.unwrap();
        let outcomes: Vec<Expiry> = reaped.iter().map(|job| job.outcome).collect();
        let strict_outcome = if lost == 1 { Expiry::Requeue { lost } } else { Expiry::Fail { lost } };
        assert_eq!(outcomes, [strict_outcome, Expiry::Requeue { lost }], "loss {lost}");
        clock += 100;
    }
    assert_eq!(counts(&store, strict).await, state_counts(0, 0, 0, 1, 0));
    assert_eq!(counts(&store, lenient).await, state_counts(1, 0, 0, 0, 0));
    let failed = store.run_jobs(strict, &JobFilter::default()).await.unwrap();
    assert_eq!(failed[0].failure_class, Some(FailureClass::Retryable));
    assert!(failed[0].last_error.as_deref().is_some_and(|e| e.contains("lost its lease 2 times, more than the 1 allowed")), "{failed:?}");
}

async fn manifest_write_is_claimed_by_one_writer_per_set_of_counts<S: Store>(store: S) {
    let run = store.create_run(&new_run("manifest", 0, &["m01"], 2), false, at(0)).await.unwrap();
    let first = ManifestCounts { succeeded: 2, failed: 0 };
    assert_eq!(store.claim_manifest(run, first, "a", at(60), at(0)).await.unwrap(), ManifestClaim::Claimed);
    // While a's claim is valid nobody else writes, not even for other counts.
    assert_eq!(store.claim_manifest(run, first, "b", at(60), at(1)).await.unwrap(), ManifestClaim::Busy { writer: "a".into(), until: at(60) });
    assert_eq!(
        store.claim_manifest(run, ManifestCounts { succeeded: 1, failed: 1 }, "b", at(61), at(1)).await.unwrap(),
        ManifestClaim::Busy { writer: "a".into(), until: at(60) }
    );
    assert!(store.renew_manifest_claim(run, "a", at(90)).await.unwrap());
    assert!(!store.renew_manifest_claim(run, "b", at(90)).await.unwrap(), "b holds no claim");
    assert!(!store.end_manifest_claim(run, "b", Some(first)).await.unwrap());
    assert!(store.end_manifest_claim(run, "a", Some(first)).await.unwrap());
    // Written for these counts: a restart (or a replica) finds it current and writes nothing.
    assert_eq!(store.claim_manifest(run, first, "c", at(120), at(2)).await.unwrap(), ManifestClaim::Current);

    // New counts (a resubmitted job finished): one more write. Its writer dies; once the claim
    // lapses another takes over, and the dead writer's renewal is refused.
    let second = ManifestCounts { succeeded: 1, failed: 1 };
    assert_eq!(store.claim_manifest(run, second, "d", at(60), at(3)).await.unwrap(), ManifestClaim::Claimed);
    assert!(matches!(store.claim_manifest(run, second, "e", at(100), at(59)).await.unwrap(), ManifestClaim::Busy { .. }));
    assert_eq!(store.claim_manifest(run, second, "e", at(120), at(60)).await.unwrap(), ManifestClaim::Claimed);
    assert!(!store.renew_manifest_claim(run, "d", at(130)).await.unwrap(), "a lapsed claim that was taken over cannot be renewed");
    // A failed write releases the claim without recording: the counts are still to be written.
    assert!(store.end_manifest_claim(run, "e", None).await.unwrap());
    assert_eq!(store.claim_manifest(run, first, "f", at(200), at(61)).await.unwrap(), ManifestClaim::Current, "the files still match the first counts");
    assert_eq!(store.claim_manifest(run, second, "f", at(200), at(61)).await.unwrap(), ManifestClaim::Claimed);
    assert!(store.end_manifest_claim(run, "f", Some(second)).await.unwrap());
    assert_eq!(store.claim_manifest(run, second, "g", at(300), at(62)).await.unwrap(), ManifestClaim::Current);
    assert!(matches!(store.claim_manifest(RunId(424_242), first, "g", at(300), at(62)).await, Err(StoreError::RunNotFound { .. })));
    // --force replaces the run: the new one has no manifest yet.
    let again = store.create_run(&new_run("manifest", 0, &["m01"], 2), true, at(63)).await.unwrap();
    assert_eq!(store.claim_manifest(again, second, "h", at(300), at(63)).await.unwrap(), ManifestClaim::Claimed);
}

async fn concurrent_manifest_claims_have_one_winner<S: Store>(store: S) {
    let run = store.create_run(&new_run("race", 0, &["m01"], 1), false, at(0)).await.unwrap();
    let counts = ManifestCounts { succeeded: 1, failed: 0 };
    let claims = (0..8).map(|n| {
        let store = store.clone();
        tokio::spawn(async move { store.claim_manifest(run, counts, &format!("writer-{n}"), at(60), at(0)).await.unwrap() })
    });
    let claims: Vec<ManifestClaim> = futures_util::future::join_all(claims).await.into_iter().map(|claim| claim.unwrap()).collect();
    assert_eq!(claims.iter().filter(|claim| **claim == ManifestClaim::Claimed).count(), 1, "{claims:?}");
    assert!(claims.iter().all(|claim| matches!(claim, ManifestClaim::Claimed | ManifestClaim::Busy { .. })), "{claims:?}");
}

async fn a_retry_is_offered_to_other_workers_first<S: Store>(store: S) {
    store.create_run(&new_run("relight", 0, &["m01"], 1), false, at(0)).await.unwrap();
    let job = lease(&store, "w1", 1, at(0)).await[0].job;
    // Backoff 10 s: queued again at 11, for other workers only until 21.
    assert_eq!(fail_one(&store, job, 1, FailureClass::Retryable, at(1)).await, Failure::Retry { backoff: Duration::from_secs(10) });
    assert!(lease(&store, "w1", 1, at(11)).await.is_empty(), "the worker that failed it waits while others may take it");
    assert!(lease(&store, "w1", 1, at(20)).await.is_empty());
    // With no other worker taking it, the same worker retries it after one more backoff.
    assert_eq!(lease(&store, "w1", 1, at(21)).await[0].attempt, Attempt(2));
    // Another worker gets it as soon as its backoff passes.
    assert_eq!(fail_one(&store, job, 2, FailureClass::Retryable, at(22)).await, Failure::Retry { backoff: Duration::from_secs(20) });
    assert!(lease(&store, "w1", 1, at(42)).await.is_empty());
    assert_eq!(lease(&store, "w2", 1, at(42)).await[0].attempt, Attempt(3));
}

async fn a_worker_failing_in_a_row_is_quarantined_on_that_run_until_released<S: Store>(store: S) {
    use acufarm_coordinator::quarantine::Outcomes;
    let first = store.create_run(&new_run("first", 5, &["m01"], 4), false, at(0)).await.unwrap();
    let second = store.create_run(&new_run("second", 0, &["m01"], 2), false, at(0)).await.unwrap();
    let errors: Vec<String> = (1..=3).map(|i| format!("cannot upload output {i}: connection refused")).collect();
    let record = |succeeded: u32, failures: &[String]| {
        let (store, failures) = (store.clone(), failures.to_vec());
        async move { store.record_worker_outcomes(first, "gpu-7", Outcomes { succeeded, retryable_failures: &failures }, 3, at(5)).await.unwrap() }
    };
    // Two failures, a success, two failures: never three in a row.
    assert_eq!(record(0, &errors[..2]).await, None);
    assert_eq!(record(1, &[]).await, None);
    assert_eq!(record(0, &errors[..2]).await, None);
    assert!(store.quarantined_workers(None).await.unwrap().is_empty());
    // The third in a row quarantines, on this run only.
    let quarantined = record(0, &errors[2..]).await.expect("the third failure in a row quarantines");
    assert_eq!((quarantined.run, quarantined.worker.as_str(), quarantined.failures, quarantined.since), (first, "gpu-7", 3, at(5)));
    assert_eq!(quarantined.errors, errors);
    assert_eq!(store.quarantined_workers(Some(first)).await.unwrap(), std::slice::from_ref(&quarantined));
    assert!(store.quarantined_workers(Some(second)).await.unwrap().is_empty());
    assert_eq!(record(0, &errors[..1]).await, None, "a quarantine starts once");

    // It gets only the other run's jobs, even though the first run has the higher priority;
    // another worker still gets the first run's.
    let leased = lease(&store, "gpu-7", 10, at(6)).await;
    assert_eq!((leased.len(), leased.iter().all(|job| job.run == second)), (2, true), "{leased:?}");
    assert_eq!(lease(&store, "gpu-2", 1, at(6)).await[0].run, first);

    // Released (by name, on that run), it leases the first run's jobs again with a fresh streak.
    assert!(store.release_worker("gpu-7", Some(second), at(7)).await.unwrap().is_empty(), "not quarantined there");
    assert_eq!(store.release_worker("gpu-7", None, at(7)).await.unwrap(), [first]);
    assert!(store.quarantined_workers(None).await.unwrap().is_empty());
    assert_eq!(lease(&store, "gpu-7", 10, at(8)).await.len(), 3);
    assert_eq!(record(0, &errors[..2]).await, None, "the streak starts again from zero");
}

async fn job_listing_filters_by_worker_class_and_prefix_and_pages_by_id<S: Store>(store: S) {
    let run = store.create_run(&new_run("listing", 0, &["m1", "m2"], 3), false, at(0)).await.unwrap();
    let by_w1 = lease(&store, "w1", 2, at(1)).await;
    let by_w2 = lease(&store, "w2", 2, at(1)).await;
    assert_eq!(complete_one(&store, by_w1[0].job, 1, at(2)).await, Completion::Accepted);
    assert_eq!(fail_one(&store, by_w1[1].job, 1, FailureClass::Qa, at(2)).await, Failure::Failed { exhausted: false });
    assert_eq!(fail_one(&store, by_w2[0].job, 1, FailureClass::Permanent, at(2)).await, Failure::Failed { exhausted: false });
    let list = |filter: JobFilter| {
        let store = store.clone();
        async move { store.run_jobs(run, &filter).await.unwrap().into_iter().map(|job| job.job).collect::<Vec<_>>() }
    };

    // The worker of the latest attempt stays on the job after the attempt ended.
    assert_eq!(list(JobFilter { worker: Some("w1".into()), ..JobFilter::default() }).await, [by_w1[0].job, by_w1[1].job]);
    let records = store.job_records(&[by_w1[0].job]).await.unwrap();
    assert_eq!((records[0].worker.as_deref(), records[0].leased_by.as_deref()), (Some("w1"), None));
    assert_eq!(parsed(records[0].result.as_deref().unwrap()), json!({ "attempt": 1 }));
    assert_eq!(records[0].updated_at, at(2));
    assert_eq!(list(JobFilter { failure_class: Some(FailureClass::Qa), ..JobFilter::default() }).await, [by_w1[1].job]);
    assert_eq!(list(JobFilter { state: Some(JobState::Failed), worker: Some("w2".into()), ..JobFilter::default() }).await, [by_w2[0].job], "filters combine");
    let m2: Vec<JobId> =
        store.run_jobs(run, &JobFilter { shard_keys: Some(vec!["m2".into()]), ..JobFilter::default() }).await.unwrap().iter().map(|j| j.job).collect();
    assert_eq!(list(JobFilter { sample_prefix: Some("m2_".into()), ..JobFilter::default() }).await, m2);
    assert_eq!(list(JobFilter { sample_prefix: Some("m2_00".into()), ..JobFilter::default() }).await.len(), 3);
    assert!(list(JobFilter { sample_prefix: Some("m3".into()), ..JobFilter::default() }).await.is_empty());
    // A prefix is text, not a pattern.
    assert!(list(JobFilter { sample_prefix: Some("m_".into()), ..JobFilter::default() }).await.is_empty());

    // Pages of two, each after the last id of the one before, cover every job once.
    let all = list(JobFilter::default()).await;
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = list(JobFilter { after, limit: Some(2), ..JobFilter::default() }).await;
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(all.len(), 6);

    // Newest first, each page before the last id of the one before: the same jobs reversed.
    let mut reversed = Vec::new();
    let mut before = None;
    loop {
        let page = list(JobFilter { after: before, limit: Some(4), newest_first: true, ..JobFilter::default() }).await;
        if page.is_empty() {
            break;
        }
        before = page.last().copied();
        reversed.extend(page);
    }
    assert_eq!(reversed, all.iter().rev().copied().collect::<Vec<_>>());
    let failed_newest = list(JobFilter { state: Some(JobState::Failed), newest_first: true, ..JobFilter::default() }).await;
    assert_eq!(failed_newest, [by_w2[0].job, by_w1[1].job], "filters apply newest first too");
}

async fn failed_and_lost_attempts_are_kept_with_their_worker_and_detail<S: Store>(store: S) {
    let run = store.create_run(&new_run("history", 0, &["m1"], 1), false, at(0)).await.unwrap();
    let job = lease(&store, "w1", 1, at(1)).await[0].job;
    let detail = json!({ "qa": [], "log": ["12:00:00 WARN out of GPU memory"] }).to_string();
    let retry = FailureRequest { job, attempt: Attempt(1), class: FailureClass::Retryable, message: "oom".into(), detail: Some(detail.clone()) };
    assert!(matches!(store.fail(std::slice::from_ref(&retry), &policy(), at(2)).await.unwrap()[0].outcome, Failure::Retry { .. }));
    // A stale repeat of the same report adds nothing.
    assert!(matches!(store.fail(&[retry], &policy(), at(2)).await.unwrap()[0].outcome, Failure::Stale(_)));
    // The second attempt's lease is lost; the third succeeds.
    assert_eq!(lease(&store, "w2", 1, at(100)).await[0].attempt, Attempt(2));
    assert_eq!(store.reap_expired(at(100) + chrono::Duration::from_std(LEASE).unwrap()).await.unwrap().len(), 1);
    assert_eq!(lease(&store, "w1", 1, at(300)).await[0].attempt, Attempt(3));
    assert_eq!(complete_one(&store, job, 3, at(301)).await, Completion::Accepted);

    let attempts = store.attempts(job).await.unwrap();
    assert_eq!(attempts.len(), 2, "the succeeded attempt is the job's result, not history: {attempts:?}");
    assert_eq!((attempts[0].attempt, attempts[0].worker.as_deref(), attempts[0].outcome), (Attempt(1), Some("w1"), AttemptOutcome::Retried));
    assert_eq!((attempts[0].failure_class, attempts[0].message.as_str(), attempts[0].ended_at), (Some(FailureClass::Retryable), "oom", at(2)));
    assert_eq!(parsed(attempts[0].detail.as_deref().unwrap()), parsed(&detail));
    assert_eq!((attempts[1].attempt, attempts[1].worker.as_deref(), attempts[1].outcome), (Attempt(2), Some("w2"), AttemptOutcome::Lost));
    assert!(attempts[1].message.contains("lease expired"), "{}", attempts[1].message);
    assert_eq!(attempts[1].detail, None);
    assert!(store.attempts(JobId(999_999)).await.unwrap().is_empty());
    let _ = run;
}

async fn a_regeneration_queues_finished_jobs_again_and_makes_the_manifest_due<S: Store>(store: S) {
    let run = store.create_run(&new_run("regen", 0, &["m1"], 3), false, at(0)).await.unwrap();
    let leased = lease(&store, "w1", 3, at(1)).await;
    assert_eq!(complete_one(&store, leased[0].job, 1, at(2)).await, Completion::Accepted);
    assert_eq!(fail_one(&store, leased[1].job, 1, FailureClass::Qa, at(2)).await, Failure::Failed { exhausted: false });
    let counts_then = ManifestCounts::of(&counts(&store, run).await);
    assert_eq!(store.claim_manifest(run, counts_then, "writer", at(10), at(3)).await.unwrap(), ManifestClaim::Claimed);
    assert!(store.end_manifest_claim(run, "writer", Some(counts_then)).await.unwrap());

    let again = |job| Resubmission { job, spec: json!({ "reseed": 1 }), regenerate: true };
    let reports = store.resubmit(&[again(leased[0].job), again(leased[1].job), again(leased[2].job)], at(4)).await.unwrap();
    let outcomes: Vec<_> = reports.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Resubmitted::Requeued, Resubmitted::Requeued, Resubmitted::NotFailed { state: JobState::Leased }], "a leased job is left alone");
    assert_eq!(counts(&store, run).await, state_counts(2, 1, 0, 0, 0));
    let records = store.job_records(&[leased[0].job]).await.unwrap();
    assert_eq!(parsed(&records[0].spec), json!({ "reseed": 1 }));
    // Same counts as the files were written for once the jobs finish again, but the outputs
    // changed: the manifest must be written again, not skipped as current.
    assert_ne!(store.claim_manifest(run, counts_then, "writer-2", at(10), at(5)).await.unwrap(), ManifestClaim::Current);
}
