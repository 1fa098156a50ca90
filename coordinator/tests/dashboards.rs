//! The Grafana dashboard in `deploy/grafana/` asks only for series the coordinator exports: every
//! `acufarm_*` name in its queries appears in a scrape of a coordinator's metrics (over a SQLite
//! store with one run, after one of each report).

use acufarm_coordinator::metrics::Metrics;
use acufarm_coordinator::store::{NewJob, NewRun};
use acufarm_coordinator::{SqliteStore, Store};
use acufarm_core::FailureClass;
use std::collections::BTreeSet;

/// The metric names in a scrape, with the histogram and counter suffixes the text format adds.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines().filter(|line| !line.starts_with('#') && !line.is_empty()).map(|line| line.split(['{', ' ']).next().unwrap().to_string()).collect()
}

/// Every `acufarm_…` word in the dashboard's queries.
fn asked_for(dashboard: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = dashboard;
    while let Some(at) = rest.find("acufarm_") {
        let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_exported_series() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("m.sqlite")).await.unwrap();
    store.migrate().await.unwrap();
    let jobs = (0..2).map(|i| NewJob { shard_key: "m01".into(), sample_id: format!("s{i}"), spec: serde_json::json!({}) }).collect();
    let run = NewRun {
        name: "r".into(),
        spec: "[run]\nname = \"r\"\nbundle = \"tiny-fc\"\n".into(),
        priority: 0,
        bundle_sha256: "b".repeat(64),
        max_lost: 5,
        shards: vec!["m01".into()],
        jobs,
    };
    store.create_run(&run, false, chrono::Utc::now()).await.unwrap();

    let metrics = Metrics::default();
    metrics.completed("gpu-1", 1);
    metrics.failed(FailureClass::Retryable);
    metrics.lease_took(0.01);
    metrics.stage("sample", "tiny-fc", 1.5);
    let live = vec![acufarm_coordinator::events::Presence {
        worker_id: "gpu-1-00000000".into(),
        name: "gpu-1".into(),
        hostname: "h".into(),
        bundle_name: "tiny-fc".into(),
        bundle_sha256: "b".repeat(64),
        execution_providers: vec!["cpu".into()],
        gpu: String::new(),
        gpu_memory_bytes: 80 << 30,
        last_seen_unix_ms: 0,
        jobs_held: 1,
    }];
    let text = metrics.scrape(&store, chrono::Duration::hours(1), Some(live)).await.unwrap();
    let exported = exported(&text);

    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/acufarm.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let asked = asked_for(&dashboard);
    assert!(asked.len() >= 8, "{asked:?}");
    let missing: Vec<&String> = asked.iter().filter(|name| !exported.contains(*name)).collect();
    assert!(missing.is_empty(), "the dashboard asks for series no coordinator exports: {missing:?}\nexported: {exported:?}");
    // The documented names are there.
    for name in ["acufarm_jobs", "acufarm_queue_depth", "acufarm_jobs_completed_total", "acufarm_job_failures_total", "acufarm_lease_seconds_bucket"] {
        assert!(exported.contains(name), "{name} missing from\n{text}");
    }
}
