//! Domain types shared by the coordinator and the worker: sample ids, the run spec and the prompt
//! choice that follows from a parsed id. Pure logic, no I/O beyond reading a spec file.

pub mod choice;
pub mod evaluate;
pub mod job;
pub mod manifest;
pub mod plan;
pub mod prompt;
pub mod qa;
pub mod resolve;
pub mod sample_id;
pub mod seeds;
pub mod spec;
pub mod views;

pub use choice::{Background, Foreground, Sampler, Scheduler, UnknownChoice};
pub use job::{Attempt, FailureClass, JobId, JobState, RunId, ShardId};
pub use prompt::{PromptCategory, PromptPair};
pub use resolve::{JobParams, JobSpec, Resolution, ResolveError, SceneChoice};
pub use sample_id::{Gender, IdGrammar, IdGrammarError, SampleId};
pub use spec::{RunSpec, SpecError};
