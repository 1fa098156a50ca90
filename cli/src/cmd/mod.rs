pub mod admin;
pub mod augment;
pub mod client;
pub mod coordinator;
pub mod drift;
mod drift_plot;
pub mod schedule;
pub mod verify;
pub mod worker;
