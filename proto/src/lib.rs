//! The gRPC protocol of the farm (`acufarm.proto`): the `Worker` service GPU workers call and the
//! `Admin` service the CLI calls, plus conversions to the domain enums of `acufarm-core`, which
//! stay the one definition of a job's states.

pub mod v1 {
    tonic::include_proto!("acufarm.v1");
}

pub use v1::*;

pub mod trace;

use acufarm_core::job as core;

/// Metadata key every call carries the farm token in, as `Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

impl From<core::JobState> for JobState {
    fn from(state: core::JobState) -> Self {
        match state {
            core::JobState::Queued => Self::Queued,
            core::JobState::Leased => Self::Leased,
            core::JobState::Succeeded => Self::Succeeded,
            core::JobState::Failed => Self::Failed,
            core::JobState::Cancelled => Self::Cancelled,
        }
    }
}

impl TryFrom<JobState> for core::JobState {
    type Error = String;
    fn try_from(state: JobState) -> Result<Self, String> {
        Ok(match state {
            JobState::Queued => Self::Queued,
            JobState::Leased => Self::Leased,
            JobState::Succeeded => Self::Succeeded,
            JobState::Failed => Self::Failed,
            JobState::Cancelled => Self::Cancelled,
            JobState::Unspecified => return Err("job state is unspecified".into()),
        })
    }
}

impl From<core::FailureClass> for FailureClass {
    fn from(class: core::FailureClass) -> Self {
        match class {
            core::FailureClass::Retryable => Self::Retryable,
            core::FailureClass::Permanent => Self::Permanent,
            core::FailureClass::Qa => Self::Qa,
        }
    }
}

impl TryFrom<FailureClass> for core::FailureClass {
    type Error = String;
    fn try_from(class: FailureClass) -> Result<Self, String> {
        Ok(match class {
            FailureClass::Retryable => Self::Retryable,
            FailureClass::Permanent => Self::Permanent,
            FailureClass::Qa => Self::Qa,
            FailureClass::Unspecified => return Err("failure class is unspecified; send retryable, permanent or qa".into()),
        })
    }
}

/// Reads a failure class sent as its wire number; unknown numbers are refused.
pub fn failure_class(value: i32) -> Result<core::FailureClass, String> {
    FailureClass::try_from(value).map_err(|_| format!("unknown failure class {value}")).and_then(core::FailureClass::try_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_job_state_round_trips_with_the_same_name() {
        for state in core::JobState::ALL {
            let wire = JobState::from(state);
            assert_eq!(core::JobState::try_from(wire).unwrap(), state);
            // JOB_STATE_QUEUED ↔ "queued": the proto enum names the same states as core and SQL.
            assert_eq!(wire.as_str_name(), format!("JOB_STATE_{}", state.as_str().to_uppercase()));
        }
        assert_eq!(JobState::Unspecified as i32, 0);
        assert!(core::JobState::try_from(JobState::Unspecified).is_err());
    }

    #[test]
    fn failure_classes_round_trip_and_unknown_numbers_are_refused() {
        for class in [core::FailureClass::Retryable, core::FailureClass::Permanent, core::FailureClass::Qa] {
            assert_eq!(failure_class(FailureClass::from(class) as i32).unwrap(), class);
        }
        assert!(failure_class(0).unwrap_err().contains("unspecified"));
        assert!(failure_class(42).unwrap_err().contains("unknown failure class 42"));
    }
}
