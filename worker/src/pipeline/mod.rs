pub mod bundle;
pub mod noise;
pub mod npy;
pub mod runtime;
pub mod sampler;
pub mod schedule;
pub mod tokenizer;
