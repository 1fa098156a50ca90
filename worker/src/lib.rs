//! The worker: the diffusion pipeline on ONNX Runtime (`pipeline`), the job executor
//! (`executor`), the one job loop (`jobloop`) with its job source over gRPC (`agent`; embedded
//! mode's source over the store lives in the CLI), the landmark-drift QA (`drift`) and the
//! training-based evaluation's driver (`evaluate`).

pub mod agent;
pub mod drift;
pub mod evaluate;
pub mod executor;
pub mod jobloop;
pub mod pipeline;
