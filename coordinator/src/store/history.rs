//! The history of a job's attempts that did not succeed (`job_attempts`): which attempts a batch of
//! failures or a reap ended, decided from the state machine's answers, written by each backend in
//! the same transaction, and read back for the job page.

use super::{FailureReport, FailureRequest, ReapedJob};
use crate::state::{Expiry, Failure};
use acufarm_core::{Attempt, FailureClass, JobId};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// How an attempt ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// It failed retryably and the job was queued again.
    Retried,
    /// It failed and so did the job.
    Failed,
    /// Its lease expired (the worker stopped heartbeating).
    Lost,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retried => "retried",
            Self::Failed => "failed",
            Self::Lost => "lost",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [Self::Retried, Self::Failed, Self::Lost].into_iter().find(|outcome| outcome.as_str() == text)
    }
}

/// One ended attempt to record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttemptEnd<'a> {
    pub job: JobId,
    pub attempt: Attempt,
    pub outcome: AttemptOutcome,
    pub class: Option<FailureClass>,
    pub message: String,
    pub detail: Option<&'a str>,
}

/// One attempt of a job's history, as the job page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    pub attempt: Attempt,
    /// The name of the worker that held it.
    pub worker: Option<String>,
    pub ended_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub failure_class: Option<FailureClass>,
    pub message: String,
    /// JSON text: `{"qa": [...], "log": [...]}` as the worker sent it.
    pub detail: Option<String>,
}

/// The attempts a batch of failures ended (stale reports end none).
pub(crate) fn ended_by_failures<'a>(requests: &'a [FailureRequest], reports: &[FailureReport]) -> Vec<AttemptEnd<'a>> {
    requests
        .iter()
        .zip(reports)
        .filter_map(|(request, report)| {
            let outcome = match report.outcome {
                Failure::Retry { .. } => AttemptOutcome::Retried,
                Failure::Failed { .. } => AttemptOutcome::Failed,
                Failure::Stale(_) => return None,
            };
            Some(AttemptEnd {
                job: request.job,
                attempt: request.attempt,
                outcome,
                class: Some(request.class),
                message: request.message.clone(),
                detail: request.detail.as_deref(),
            })
        })
        .collect()
}

/// The attempts a reap ended.
pub(crate) fn ended_by_reap(reaped: &[ReapedJob]) -> Vec<AttemptEnd<'static>> {
    reaped
        .iter()
        .map(|job| {
            let (outcome, class, message) = match job.outcome {
                Expiry::Requeue { lost } => {
                    (AttemptOutcome::Lost, None, format!("the lease expired without a heartbeat (lost {lost} times so far); the job was queued again"))
                }
                Expiry::Fail { lost } => (
                    AttemptOutcome::Failed,
                    Some(FailureClass::Retryable),
                    format!("the lease expired without a heartbeat ({lost} lost leases, more than allowed); the job failed (it may be crashing its workers)"),
                ),
            };
            AttemptEnd { job: job.job, attempt: job.attempt, outcome, class, message, detail: None }
        })
        .collect()
}
