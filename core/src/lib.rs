//! Domain types shared by the coordinator and the worker: sample ids, the run spec and the prompt
//! choice that follows from a parsed id. Pure logic, no I/O beyond reading a spec file.

pub mod prompt;
pub mod sample_id;
pub mod spec;

pub use prompt::{PromptCategory, PromptPair};
pub use sample_id::{Gender, IdGrammar, IdGrammarError, SampleId};
pub use spec::{RunSpec, SpecError};
