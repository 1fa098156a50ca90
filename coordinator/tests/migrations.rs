//! Upgrading a database that already holds runs: the migrations up to the state counters are
//! applied first (from a folder holding only them), jobs in every state are written the way the
//! older code wrote them, then the rest is applied, and the run's counts — now read from the
//! counters the migration backfilled — must equal the jobs. On both backends. On PostgreSQL, a
//! database a newer release migrated further still opens (rolling upgrades and rollbacks).

#[allow(dead_code)] // the conformance helpers are not all used here
mod support;

use acufarm_coordinator::state::StateCounts;
use acufarm_coordinator::{PgStore, SqliteStore, Store};
use acufarm_core::RunId;
use sqlx::AssertSqlSafe;
use sqlx::migrate::Migrator;
use std::path::Path;

/// The first migration that needs the backfill: everything before it is "the older schema".
const COUNTERS: &str = "20261201130000";

/// A folder holding the backend's migrations older than the counters.
fn older_migrations(backend: &str) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations").join(backend);
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < COUNTERS {
            std::fs::copy(&path, folder.path().join(&name)).unwrap();
        }
    }
    folder
}

/// Jobs of run 1 as the older code left them: shard m1 with 3 queued, 1 leased and 2 succeeded,
/// shard m2 with 1 failed and 1 cancelled (timestamps as each backend stores them).
fn older_rows(now: &str) -> Vec<String> {
    let mut statements = vec![
        format!("INSERT INTO runs (name, spec, priority, bundle_sha256, created_at, updated_at) VALUES ('old', '', 0, 'b', {now}, {now})"),
        "INSERT INTO shards (run_id, key) VALUES (1, 'm1'), (1, 'm2')".to_string(),
    ];
    let jobs = [(1, "queued"), (1, "queued"), (1, "queued"), (1, "leased"), (1, "succeeded"), (1, "succeeded"), (2, "failed"), (2, "cancelled")];
    for (i, (shard, state)) in jobs.iter().enumerate() {
        let lease = if *state == "leased" { format!("'w1', {now}") } else { "NULL, NULL".to_string() };
        statements.push(format!(
            "INSERT INTO jobs (run_id, shard_id, sample_id, spec, state, attempt, not_before, leased_by, lease_expires_at, updated_at) \
             VALUES (1, {shard}, 's{i}', '{{}}', '{state}', 1, {now}, {lease}, {now})"
        ));
    }
    statements
}

fn expected() -> StateCounts {
    StateCounts { queued: 3, leased: 1, succeeded: 2, failed: 1, cancelled: 1 }
}

async fn check<S: Store>(store: &S) {
    let status = store.run_status(RunId(1)).await.unwrap();
    assert_eq!(status.counts, expected(), "the backfilled counters count the jobs that were there");
    let m1 = status.shards.iter().find(|s| s.key == "m1").unwrap();
    assert_eq!((m1.counts.queued, m1.counts.leased, m1.counts.succeeded), (3, 1, 2));
    assert!(status.last_change.is_some());
    assert!(store.has_unfinished(RunId(1)).await.unwrap());
}

#[tokio::test]
async fn postgres_upgrade_backfills_the_state_counters() {
    let admin = PgStore::connect(&support::admin_url()).await.unwrap();
    let name = support::fresh_database_name();
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(admin.pool()).await.unwrap();
    let url = format!("{}/{name}", support::admin_url().rsplit_once('/').unwrap().0);
    let store = PgStore::connect(&url).await.unwrap();
    let older = older_migrations("postgres");
    Migrator::new(older.path()).await.unwrap().run(store.pool()).await.unwrap();
    // The jobs table of that schema kept specs in job_specs.
    for statement in older_rows("now()") {
        let statement = statement.replace(", spec, state", ", state").replace(", '{}', '", ", '");
        sqlx::query(AssertSqlSafe(statement)).execute(store.pool()).await.unwrap();
    }
    let applied = store.migrate().await.unwrap();
    assert_eq!(applied.first().map(|v| v.to_string()), Some(COUNTERS.to_string()), "the migrations from the counters on are the ones applied: {applied:?}");
    check(&store).await;
    // A newer release migrated the database (a rolling upgrade, then a rollback or an older
    // replica restarting): this binary starts on it and has nothing to apply.
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (29991231000000, 'from a newer release', true, '\\x00', 0)")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
    store.pool().close().await;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(admin.pool()).await.unwrap();
}

#[tokio::test]
async fn sqlite_upgrade_backfills_the_state_counters() {
    let folder = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&folder.path().join("farm.db")).await.unwrap();
    let older = older_migrations("sqlite");
    Migrator::new(older.path()).await.unwrap().run(store.pool()).await.unwrap();
    for statement in older_rows("'2026-01-01T00:00:00.000000Z'") {
        sqlx::query(AssertSqlSafe(statement)).execute(store.pool()).await.unwrap();
    }
    store.migrate().await.unwrap();
    check(&store).await;
}
