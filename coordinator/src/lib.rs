//! The coordinator's job store and the rules it enforces: the job state machine ([`state`]), the
//! retry policy ([`retry`]) and the [`store::Store`] trait with its Postgres and SQLite
//! implementations. Scheduling, gRPC and the HTTP API build on this crate; none of them changes a
//! job's state except through it.

pub mod error;
pub mod retry;
pub mod state;
pub mod store;

pub use error::StoreError;
pub use retry::RetryPolicy;
pub use store::{PgStore, SqliteStore, Store};
