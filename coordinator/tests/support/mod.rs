//! Runs one conformance scenario against a fresh store: a Postgres database of its own (created
//! and dropped around the scenario) or a SQLite file in a temporary folder.

use acufarm_coordinator::{PgStore, SqliteStore, Store};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The server the Postgres scenarios use; each creates its own database there.
pub fn admin_url() -> String {
    std::env::var("ACUFARM_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database name no other test (or test process) uses.
pub fn fresh_database_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.subsec_nanos()).unwrap_or(0);
    format!("acufarm_test_{}_{}_{}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Runs the scenario on a spawned task so that a failing assertion still lets us drop the
/// database before the panic is passed on.
async fn run_scenario<S: Store, Fut>(store: S, scenario: impl FnOnce(S) -> Fut) -> Result<(), tokio::task::JoinError>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(scenario(store)).await
}

pub async fn with_postgres<Fut>(scenario: impl FnOnce(PgStore) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin_url = admin_url();
    let admin = PgStore::connect(&admin_url).await.unwrap_or_else(|error| panic!("{error} (set ACUFARM_TEST_PG_URL to use another server)"));
    let name = fresh_database_name();
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(admin.pool()).await.expect("create test database");
    let options: PgConnectOptions = admin_url.parse().expect("ACUFARM_TEST_PG_URL is a postgres URL");
    let pool = PgPoolOptions::new().max_connections(8).connect_with(options.database(&name)).await.expect("connect to test database");
    let store = PgStore::from_pool(pool);
    store.migrate().await.expect("migrate test database");
    let outcome = run_scenario(store.clone(), scenario).await;
    store.pool().close().await;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(admin.pool()).await.expect("drop test database");
    admin.pool().close().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

pub async fn with_sqlite<Fut>(scenario: impl FnOnce(SqliteStore) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let folder = tempfile::tempdir().expect("temporary folder");
    let store = SqliteStore::open(&folder.path().join("farm.db")).await.expect("open sqlite store");
    store.migrate().await.expect("migrate sqlite store");
    let outcome = run_scenario(store.clone(), scenario).await;
    store.pool().close().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}
