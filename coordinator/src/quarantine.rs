//! Bad-worker quarantine, as pure rules (the stores keep one [`Streak`] per run and worker name).
//!
//! A worker whose jobs of one run fail `quarantine_after` times in a row with retryable errors
//! (its uploads, downloads or renders keep breaking; bad inputs and QA refusals say nothing about
//! the worker and do not count) gets no more jobs of that run until an operator releases it, so a
//! broken GPU node or a node with a wrong storage endpoint cannot burn every job's attempts.
//! Modelled on Flamenco's per-job worker blocklist. Keyed by the worker's *name*, which survives
//! a restart of the worker process, so restarting a broken node does not lift it.

use crate::state::Failure;
use crate::store::{FailureReport, FailureRequest};
use acufarm_core::FailureClass;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// How many of a streak's error messages are kept to show why a worker was quarantined.
pub const ERRORS_KEPT: usize = 5;

/// One worker's record on one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Streak {
    /// Retryable failures since the worker's last success on the run.
    pub failures: u32,
    /// The newest of those failures' messages, oldest first (at most [`ERRORS_KEPT`]).
    pub errors: Vec<String>,
    /// When the worker was quarantined; `None` while it may lease the run's jobs.
    pub quarantined_at: Option<DateTime<Utc>>,
}

/// What one report of a worker says about it: jobs it completed, and the messages of the jobs it
/// failed with retryable errors. Reports are applied successes first (the agent sends a batch's
/// completions before its failures).
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcomes<'a> {
    pub succeeded: u32,
    pub retryable_failures: &'a [String],
}

/// The messages of the failures that count against the worker that reported them: retryable
/// ones the store accepted (bad inputs and QA refusals say nothing about the worker; a stale
/// report changed nothing). `reports` answer `requests` one by one.
pub fn counted_failures(requests: &[FailureRequest], reports: &[FailureReport]) -> Vec<String> {
    requests
        .iter()
        .zip(reports)
        .filter(|(request, report)| request.class == FailureClass::Retryable && !matches!(report.outcome, Failure::Stale(_)))
        .map(|(request, _)| request.message.clone())
        .collect()
}

/// Applies a report to a streak; `true` when this report put the worker in quarantine.
///
/// A success ends the streak (a quarantined worker stays quarantined: the jobs it completes were
/// leased before, and only an operator lifts it). Each retryable failure extends it; reaching
/// `quarantine_after` (0 = never) quarantines the worker at `now`.
pub fn record(streak: &mut Streak, outcomes: Outcomes<'_>, quarantine_after: u32, now: DateTime<Utc>) -> bool {
    if outcomes.succeeded > 0 && streak.quarantined_at.is_none() {
        streak.failures = 0;
        streak.errors.clear();
    }
    for message in outcomes.retryable_failures {
        streak.failures = streak.failures.saturating_add(1);
        streak.errors.push(message.clone());
    }
    let excess = streak.errors.len().saturating_sub(ERRORS_KEPT);
    streak.errors.drain(..excess);
    let quarantine = quarantine_after > 0 && streak.quarantined_at.is_none() && streak.failures >= quarantine_after;
    if quarantine {
        streak.quarantined_at = Some(now);
    }
    quarantine
}

/// A worker that may not lease a run's jobs, with the errors that put it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    pub run: acufarm_core::RunId,
    pub worker: String,
    pub since: DateTime<Utc>,
    /// Retryable failures in a row when it was last updated.
    pub failures: u32,
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn failures(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("upload {i} refused")).collect()
    }

    #[test]
    fn three_retryable_failures_in_a_row_quarantine_and_a_success_resets_the_count() {
        let mut streak = Streak::default();
        let two = failures(2);
        assert!(!record(&mut streak, Outcomes { succeeded: 0, retryable_failures: &two }, 3, at(1)));
        assert_eq!(streak.failures, 2);
        // A success between them: the streak starts again.
        assert!(!record(&mut streak, Outcomes { succeeded: 1, retryable_failures: &two[..1] }, 3, at(2)));
        assert_eq!((streak.failures, streak.errors.as_slice()), (1, &two[..1]));
        assert!(!record(&mut streak, Outcomes { succeeded: 0, retryable_failures: &two[..1] }, 3, at(3)));
        assert!(record(&mut streak, Outcomes { succeeded: 0, retryable_failures: &two[1..] }, 3, at(4)), "the third in a row quarantines");
        assert_eq!(streak.quarantined_at, Some(at(4)));
        // Further failures are counted but quarantine only once; late successes do not lift it.
        assert!(!record(&mut streak, Outcomes { succeeded: 2, retryable_failures: &two }, 3, at(5)));
        assert_eq!((streak.failures, streak.quarantined_at), (5, Some(at(4))));
    }

    #[test]
    fn one_batch_can_quarantine_and_only_the_newest_errors_are_kept() {
        let mut streak = Streak::default();
        let eight = failures(8);
        assert!(record(&mut streak, Outcomes { succeeded: 0, retryable_failures: &eight }, 3, at(1)));
        assert_eq!(streak.failures, 8);
        assert_eq!(streak.errors, eight[3..].to_vec());
    }

    #[test]
    fn zero_never_quarantines() {
        let mut streak = Streak::default();
        let many = failures(50);
        assert!(!record(&mut streak, Outcomes { succeeded: 0, retryable_failures: &many }, 0, at(1)));
        assert_eq!(streak.quarantined_at, None);
    }
}
