//! Two coordinator replicas on one PostgreSQL serve one run (88 jobs, enough for both workers to
//! take part), each to its own worker: the run
//! completes with nothing lost, and its manifest is written exactly once although both reapers
//! and `status --wait` all try to write it (the write is claimed in the database).

#[allow(dead_code)] // each test binary uses a part of the shared harness
mod support;

use std::time::{Duration, Instant};
use support::dataset::{Backend, Dataset, kept_frames};
use support::{FAST, Farm, check_finished_run};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// How many times the coordinators' logs say they wrote the manifest, and how many decided it
/// was already current.
fn manifest_lines(farm: &Farm) -> (usize, usize) {
    let logs: Vec<String> = farm.coordinators.iter().map(|c| c.output()).collect();
    let count = |needle: &str| logs.iter().map(|log| log.matches(needle).count()).sum();
    (count("manifest written"), count("not rewritten"))
}

#[test]
fn two_coordinator_replicas_serve_one_run_and_write_its_manifest_once() {
    let _serial = support::serial();
    let dir = tempfile::Builder::new().prefix("acufarm-replicas-").tempdir().unwrap();
    let data = Dataset::generate(&Backend::Fs, dir.path(), "replicas", &["M_Asher_N_HD", "F_Grace_N_HA"], &kept_frames());
    let run = "replicas";
    let spec = data.write_spec("spec.toml", run, |s| s);
    let mut farm = Farm::start(Vec::new(), FAST);
    let replica = farm.start_replica();
    let token = farm.token.clone();
    let primary = farm.url();
    for (name, url) in [("w-primary", primary.as_str()), ("w-replica", replica.as_str())] {
        let worker = farm.spawn_worker_to(url, name, "fc", 1, &token, &[]);
        farm.workers.push(worker);
        if let Err(e) = farm.worker(name).wait_for_line("acufarm worker: registered as", Duration::from_secs(90)) {
            farm.fail(&format!("{name} did not register: {e}"));
        }
    }
    farm.submit(&spec);
    let status = farm.wait_done(run, RUN_TIMEOUT);
    let rows = check_finished_run(&farm, &data, run, &status);
    for name in ["w-primary", "w-replica"] {
        assert!(rows.iter().any(|r| r["worker"].as_str().is_some_and(|w| w.starts_with(name))), "{name} rendered nothing: both replicas must serve the run");
    }

    // Both replicas touched the run (their workers completed jobs), so each reaper decides once:
    // write it, or find it current. Wait for both decisions, then count the writes.
    let manifest = data.output_local().join("manifest.jsonl");
    let written_at = std::fs::metadata(&manifest).unwrap().modified().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while manifest_lines(&farm).0 + manifest_lines(&farm).1 < 2 {
        if Instant::now() > deadline {
            farm.fail(&format!("the replicas did not both decide about the manifest within 60 s: {:?}", manifest_lines(&farm)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (written, current) = manifest_lines(&farm);
    assert_eq!(written, 1, "the manifest was written {written} times ({current} times found current)");
    assert_eq!(std::fs::metadata(&manifest).unwrap().modified().unwrap(), written_at, "manifest.jsonl was written again after `status --wait`");
}
