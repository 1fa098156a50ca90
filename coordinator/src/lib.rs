//! The coordinator: the job store and the rules it enforces (the job state machine in [`state`],
//! the retry policy in [`retry`], the [`store::Store`] trait with its PostgreSQL and SQLite
//! implementations), how a spec becomes jobs and a staged output a committed one ([`runs`]), the
//! manifest writer ([`manifest`]), Redis presence/events/counters ([`events`]), configuration
//! ([`config`]) and the gRPC service ([`service`]). Nothing changes a job's state except through
//! the store.

pub mod auth;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod quarantine;
pub mod retry;
pub mod runs;
pub mod service;
pub mod state;
pub mod store;
pub mod tls;

pub use config::Config;
pub use error::StoreError;
pub use retry::RetryPolicy;
pub use service::Coordinator;
pub use store::{PgStore, SqliteStore, Store};
