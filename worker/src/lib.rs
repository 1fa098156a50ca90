//! The worker: the diffusion pipeline on ONNX Runtime (`pipeline`), the job executor shared with
//! the embedded mode (`executor`), and the agent that pulls jobs from coordinators (`agent`).

pub mod agent;
pub mod drift;
pub mod executor;
pub mod pipeline;
