//! The worker: the diffusion pipeline on ONNX Runtime (`pipeline`). The agent loop that pulls jobs
//! from a coordinator arrives with the farm.

pub mod executor;
pub mod pipeline;
