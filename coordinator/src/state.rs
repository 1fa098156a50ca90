//! The job state machine as pure functions (DESIGN §3). Both stores load the rows a request
//! touches, ask these functions what to do, and write the answer back, so the fencing and retry
//! rules exist once and are tested here without a database. The one exception is the claim, which
//! Postgres does in a single statement for speed; its SQL mirrors [`claim`].
//!
//! `queued → leased → succeeded | failed | cancelled`, `leased → queued` on a lost lease or a
//! retryable failure, `failed → queued` on resubmit.

use crate::retry::RetryPolicy;
use acufarm_core::{Attempt, FailureClass, JobState};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// What the transitions need to know about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    pub state: JobState,
    /// Claims so far; the fencing token of the current (or last) holder.
    pub attempt: Attempt,
    /// `attempt` when the current retry budget began (0, or the attempt at the last resubmit).
    /// The attempt counter itself never goes back, or a holder of an old lease could be taken
    /// for the current one.
    pub attempt_base: Attempt,
    /// Leases lost (expired) in the current budget; they do not use up attempts.
    pub lost: u32,
    /// Worker holding the lease, while leased.
    pub holder: Option<String>,
}

impl JobView {
    /// Attempts used within the current budget: claims since the budget began, less the ones
    /// that ended in a lost lease (those are counted by `lost` and do not use up attempts).
    pub fn attempts_used(&self) -> u32 {
        let claims = i64::from(self.attempt.0) - i64::from(self.attempt_base.0);
        u32::try_from(claims - i64::from(self.lost)).unwrap_or(0)
    }
}

/// Why a report (completion, failure, heartbeat) from a worker is not accepted. The worker drops
/// the job: someone else owns it now, or nobody should.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Stale {
    /// A later claim took the job: the reporter's lease expired and the job was leased again.
    Superseded { current: Attempt },
    /// The attempt is current but the job is no longer leased (lease reaped, run cancelled, ...).
    NotLeased { state: JobState },
    /// The reporter names an attempt that was never handed out.
    UnknownAttempt { current: Attempt },
    /// The attempt is current but another worker holds the lease.
    NotHolder,
    /// The job does not exist (wrong id, or the run was replaced with --force).
    UnknownJob,
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Superseded { current } => {
                write!(f, "the lease was lost and the job was leased again as attempt {current}")
            }
            Self::NotLeased { state } => write!(f, "the job is {state}, not leased"),
            Self::UnknownAttempt { current } => {
                write!(f, "that attempt was never handed out; the current attempt is {current}")
            }
            Self::NotHolder => f.write_str("another worker holds the lease"),
            Self::UnknownJob => f.write_str("no such job"),
        }
    }
}

/// `queued → leased`: the claim. Returns the new attempt (the fencing token handed to the worker).
/// Eligibility beyond the state (run active, bundle matches, `not_before` passed) is filtered by
/// the claim query itself.
pub fn claim(job: &JobView) -> Result<Attempt, JobState> {
    match job.state {
        JobState::Queued => Ok(Attempt(job.attempt.0 + 1)),
        other => Err(other),
    }
}

/// Checks that `attempt` is the current, leased attempt: the fencing rule shared by every report.
fn fence(job: &JobView, attempt: Attempt) -> Result<(), Stale> {
    if attempt.0 > job.attempt.0 {
        return Err(Stale::UnknownAttempt { current: job.attempt });
    }
    if attempt.0 < job.attempt.0 {
        return Err(Stale::Superseded { current: job.attempt });
    }
    if job.state != JobState::Leased {
        return Err(Stale::NotLeased { state: job.state });
    }
    Ok(())
}

/// `leased → leased` with a later expiry: a heartbeat. Only the holder of the current attempt may
/// extend; a lease that has expired but not yet been reaped is still extended, since nobody else
/// can hold it until the reaper puts it back.
pub fn extend(job: &JobView, worker: &str, attempt: Attempt) -> Result<(), Stale> {
    fence(job, attempt)?;
    if job.holder.as_deref() != Some(worker) {
        return Err(Stale::NotHolder);
    }
    Ok(())
}

/// What becomes of a completion report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Completion {
    /// `leased → succeeded`: the result is recorded.
    Accepted,
    /// The same attempt already completed (a retried request): nothing changes, the worker may
    /// treat it as success.
    Duplicate,
    /// Rejected; the result is discarded.
    Stale(Stale),
}

/// `leased → succeeded`, accepted only from the current attempt while the job is leased.
pub fn complete(job: &JobView, attempt: Attempt) -> Completion {
    if job.state == JobState::Succeeded && attempt == job.attempt {
        return Completion::Duplicate;
    }
    match fence(job, attempt) {
        Ok(()) => Completion::Accepted,
        Err(stale) => Completion::Stale(stale),
    }
}

/// What becomes of a failure report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Failure {
    /// `leased → queued`, not claimable before the backoff has passed.
    Retry { backoff: Duration },
    /// `leased → failed`. `exhausted` tells a retryable failure that ran out of attempts from a
    /// permanent one.
    Failed { exhausted: bool },
    /// Rejected; nothing changes.
    Stale(Stale),
}

/// `leased → queued` (retryable, attempts remain) or `leased → failed` (permanent, QA, or the
/// budget is used up). Fenced like [`complete`].
pub fn fail(job: &JobView, attempt: Attempt, class: FailureClass, policy: &RetryPolicy) -> Failure {
    if let Err(stale) = fence(job, attempt) {
        return Failure::Stale(stale);
    }
    match class {
        FailureClass::Retryable if policy.attempts_remain(job.attempts_used()) => Failure::Retry { backoff: policy.backoff(job.attempts_used()) },
        FailureClass::Retryable => Failure::Failed { exhausted: true },
        FailureClass::Permanent | FailureClass::Qa => Failure::Failed { exhausted: false },
    }
}

/// What the reaper does with an expired lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Expiry {
    /// `leased → queued` with `lost` now this many; `attempt` is untouched, the next claim
    /// increments it and so fences out the old holder.
    Requeue { lost: u32 },
    /// `leased → failed`: the job lost more leases than the policy allows.
    Fail { lost: u32 },
}

/// The lease of a leased job expired. Lost leases are counted apart from attempts: a worker that
/// died says nothing about the job, unless it keeps happening.
pub fn expire(job: &JobView, policy: &RetryPolicy) -> Option<Expiry> {
    if job.state != JobState::Leased {
        return None;
    }
    let lost = job.lost + 1;
    Some(if policy.lost_cap_exceeded(lost) { Expiry::Fail { lost } } else { Expiry::Requeue { lost } })
}

/// `queued | leased → cancelled`. Terminal jobs keep their state (a finished image stays
/// finished); `None` means nothing changes.
pub fn cancel(job: &JobView) -> Option<JobState> {
    match job.state {
        JobState::Queued | JobState::Leased => Some(JobState::Cancelled),
        JobState::Succeeded | JobState::Failed | JobState::Cancelled => None,
    }
}

/// `failed → queued` with a fresh budget: returns the new `attempt_base` (the current attempt,
/// so attempts used restart at 0 while the fencing token keeps growing). Other states refuse.
pub fn resubmit(job: &JobView) -> Result<Attempt, JobState> {
    match job.state {
        JobState::Failed => Ok(job.attempt),
        other => Err(other),
    }
}

/// `failed | succeeded → queued` with a fresh budget, for a regeneration with new seeds (an output
/// a person rejected, or a QA failure); queued, leased and cancelled jobs refuse.
pub fn regenerate(job: &JobView) -> Result<Attempt, JobState> {
    match job.state {
        JobState::Failed | JobState::Succeeded => Ok(job.attempt),
        other => Err(other),
    }
}

/// Jobs of a run or shard per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub queued: u64,
    pub leased: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl StateCounts {
    pub fn add(&mut self, state: JobState, count: u64) {
        match state {
            JobState::Queued => self.queued += count,
            JobState::Leased => self.leased += count,
            JobState::Succeeded => self.succeeded += count,
            JobState::Failed => self.failed += count,
            JobState::Cancelled => self.cancelled += count,
        }
    }

    pub fn total(&self) -> u64 {
        self.queued + self.leased + self.succeeded + self.failed + self.cancelled
    }
}

/// A shard's state, derived from its jobs; never stored, so it cannot disagree with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    /// No job has been claimed yet.
    Queued,
    /// Some jobs are leased or done, others remain.
    Running,
    /// Every job succeeded (or the shard has none).
    Succeeded,
    /// At least one job failed: the shard needs a resubmit.
    Failed,
    /// Every job ended, some cancelled, none failed.
    Cancelled,
}

impl ShardState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for ShardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Any failed job fails the shard; all succeeded is success; otherwise still in flight.
pub fn shard_state(counts: &StateCounts) -> ShardState {
    if counts.failed > 0 {
        ShardState::Failed
    } else if counts.succeeded == counts.total() {
        ShardState::Succeeded
    } else if counts.queued + counts.leased == 0 {
        ShardState::Cancelled
    } else if counts.queued == counts.total() {
        ShardState::Queued
    } else {
        ShardState::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState, attempt: i32) -> JobView {
        JobView { state, attempt: Attempt(attempt), attempt_base: Attempt(0), lost: 0, holder: (state == JobState::Leased).then(|| "w1".to_string()) }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::builder().max_attempts(3).backoff_base(Duration::from_secs(10)).backoff_max(Duration::from_secs(60)).max_lost(2).build()
    }

    #[test]
    fn claim_of_a_queued_job_increments_the_attempt() {
        assert_eq!(claim(&job(JobState::Queued, 0)), Ok(Attempt(1)));
        assert_eq!(claim(&job(JobState::Queued, 4)), Ok(Attempt(5)));
    }

    #[test]
    fn claim_refuses_every_other_state() {
        for state in [JobState::Leased, JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
            assert_eq!(claim(&job(state, 1)), Err(state));
        }
    }

    #[test]
    fn heartbeat_extends_only_the_holders_current_attempt() {
        let leased = job(JobState::Leased, 2);
        assert_eq!(extend(&leased, "w1", Attempt(2)), Ok(()));
        assert_eq!(extend(&leased, "w2", Attempt(2)), Err(Stale::NotHolder));
        assert_eq!(extend(&leased, "w1", Attempt(1)), Err(Stale::Superseded { current: Attempt(2) }));
        assert_eq!(extend(&job(JobState::Queued, 2), "w1", Attempt(2)), Err(Stale::NotLeased { state: JobState::Queued }));
    }

    #[test]
    fn complete_of_the_current_leased_attempt_is_accepted() {
        assert_eq!(complete(&job(JobState::Leased, 1), Attempt(1)), Completion::Accepted);
    }

    #[test]
    fn complete_twice_of_the_same_attempt_is_a_duplicate() {
        assert_eq!(complete(&job(JobState::Succeeded, 1), Attempt(1)), Completion::Duplicate);
    }

    #[test]
    fn complete_from_a_superseded_attempt_is_stale() {
        // The lease of attempt 1 expired, the job was claimed again as attempt 2.
        assert_eq!(complete(&job(JobState::Leased, 2), Attempt(1)), Completion::Stale(Stale::Superseded { current: Attempt(2) }));
        // Attempt 2 succeeded; attempt 1 reporting late must not overwrite or duplicate it.
        assert_eq!(complete(&job(JobState::Succeeded, 2), Attempt(1)), Completion::Stale(Stale::Superseded { current: Attempt(2) }));
    }

    #[test]
    fn complete_of_a_job_not_leased_is_stale() {
        for state in [JobState::Queued, JobState::Failed, JobState::Cancelled] {
            assert_eq!(complete(&job(state, 1), Attempt(1)), Completion::Stale(Stale::NotLeased { state }));
        }
        assert_eq!(complete(&job(JobState::Leased, 1), Attempt(7)), Completion::Stale(Stale::UnknownAttempt { current: Attempt(1) }));
    }

    #[test]
    fn fail_retryable_with_attempts_left_requeues_after_backoff() {
        assert_eq!(fail(&job(JobState::Leased, 1), Attempt(1), FailureClass::Retryable, &policy()), Failure::Retry { backoff: Duration::from_secs(10) });
        assert_eq!(fail(&job(JobState::Leased, 2), Attempt(2), FailureClass::Retryable, &policy()), Failure::Retry { backoff: Duration::from_secs(20) });
    }

    #[test]
    fn fail_retryable_with_the_budget_used_fails_exhausted() {
        assert_eq!(fail(&job(JobState::Leased, 3), Attempt(3), FailureClass::Retryable, &policy()), Failure::Failed { exhausted: true });
    }

    #[test]
    fn fail_permanent_or_qa_fails_at_once() {
        for class in [FailureClass::Permanent, FailureClass::Qa] {
            assert_eq!(fail(&job(JobState::Leased, 1), Attempt(1), class, &policy()), Failure::Failed { exhausted: false });
        }
    }

    #[test]
    fn fail_is_fenced_like_complete() {
        assert_eq!(fail(&job(JobState::Leased, 2), Attempt(1), FailureClass::Permanent, &policy()), Failure::Stale(Stale::Superseded { current: Attempt(2) }));
        assert_eq!(
            fail(&job(JobState::Succeeded, 1), Attempt(1), FailureClass::Retryable, &policy()),
            Failure::Stale(Stale::NotLeased { state: JobState::Succeeded })
        );
    }

    #[test]
    fn fail_counts_attempts_from_the_budget_base() {
        let resubmitted = JobView { attempt_base: Attempt(3), ..job(JobState::Leased, 4) };
        assert_eq!(fail(&resubmitted, Attempt(4), FailureClass::Retryable, &policy()), Failure::Retry { backoff: Duration::from_secs(10) });
    }

    #[test]
    fn lost_leases_do_not_use_up_attempts() {
        // Attempts 1 and 2 were lost; attempt 3 is the first to fail, so it is retried as a first.
        let leased = JobView { lost: 2, ..job(JobState::Leased, 3) };
        assert_eq!(leased.attempts_used(), 1);
        assert_eq!(fail(&leased, Attempt(3), FailureClass::Retryable, &policy()), Failure::Retry { backoff: Duration::from_secs(10) });
    }

    #[test]
    fn expiry_requeues_and_counts_lost_without_using_attempts() {
        let leased = JobView { lost: 1, ..job(JobState::Leased, 3) };
        assert_eq!(expire(&leased, &policy()), Some(Expiry::Requeue { lost: 2 }));
    }

    #[test]
    fn expiry_past_the_lost_cap_fails() {
        let leased = JobView { lost: 2, ..job(JobState::Leased, 3) };
        assert_eq!(expire(&leased, &policy()), Some(Expiry::Fail { lost: 3 }));
    }

    #[test]
    fn expiry_ignores_jobs_not_leased() {
        assert_eq!(expire(&job(JobState::Succeeded, 1), &policy()), None);
    }

    #[test]
    fn cancel_stops_queued_and_leased_jobs_and_keeps_finished_ones() {
        assert_eq!(cancel(&job(JobState::Queued, 0)), Some(JobState::Cancelled));
        assert_eq!(cancel(&job(JobState::Leased, 1)), Some(JobState::Cancelled));
        for state in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
            assert_eq!(cancel(&job(state, 1)), None);
        }
    }

    #[test]
    fn resubmit_of_a_failed_job_starts_a_fresh_budget_at_the_current_attempt() {
        assert_eq!(resubmit(&job(JobState::Failed, 3)), Ok(Attempt(3)));
        for state in [JobState::Queued, JobState::Leased, JobState::Succeeded, JobState::Cancelled] {
            assert_eq!(resubmit(&job(state, 3)), Err(state));
        }
    }

    #[test]
    fn shard_state_is_derived_from_job_counts() {
        let counts = |queued, leased, succeeded, failed, cancelled| StateCounts { queued, leased, succeeded, failed, cancelled };
        assert_eq!(shard_state(&counts(3, 0, 0, 0, 0)), ShardState::Queued);
        assert_eq!(shard_state(&counts(2, 1, 0, 0, 0)), ShardState::Running);
        assert_eq!(shard_state(&counts(2, 0, 1, 0, 0)), ShardState::Running);
        assert_eq!(shard_state(&counts(0, 0, 3, 0, 0)), ShardState::Succeeded);
        assert_eq!(shard_state(&counts(1, 1, 1, 1, 0)), ShardState::Failed);
        assert_eq!(shard_state(&counts(0, 0, 2, 0, 1)), ShardState::Cancelled);
        assert_eq!(shard_state(&counts(0, 0, 0, 0, 0)), ShardState::Succeeded);
    }

    #[test]
    fn stale_reasons_read_as_sentences() {
        assert_eq!(Stale::Superseded { current: Attempt(3) }.to_string(), "the lease was lost and the job was leased again as attempt 3");
        assert_eq!(Stale::NotLeased { state: JobState::Cancelled }.to_string(), "the job is cancelled, not leased");
    }
}
