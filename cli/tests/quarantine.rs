//! Bad-worker quarantine end to end: a worker whose object-store endpoint points at a closed port
//! fails every job it takes, is quarantined on the run after `[retry] quarantine_after` failures
//! in a row, the run completes on the healthy workers with nothing lost, `status` shows the
//! quarantine with its errors, and `acufarm worker release` lifts it.

#[allow(dead_code)] // each test binary uses a part of the shared harness
mod support;

use serde_json::Value;
use std::time::Duration;
use support::dataset::{Backend, Dataset};
use support::services::Moto;
use support::{FAST, Farm, check_finished_run};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

fn quarantined(status: &Value) -> Vec<Value> {
    status["quarantined"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_worker_that_cannot_reach_s3_is_quarantined_and_the_run_completes_on_the_others() {
    let _serial = support::serial();
    let logs = tempfile::Builder::new().prefix("acufarm-moto-").tempdir().unwrap();
    let backend = Backend::S3(Moto::start(logs.path()));
    let dir = tempfile::Builder::new().prefix("acufarm-quarantine-").tempdir().unwrap();
    let data = Dataset::generate(&backend, dir.path(), "quarantine", &["M_Asher_N_HD", "F_Grace_N_HA"], &(1..=8).collect::<Vec<_>>());
    let run = "quarantine-s3";
    let spec = data.write_spec("spec.toml", run, |s| s.replace("backoff_base_s = 10", "backoff_base_s = 1"));
    assert!(std::fs::read_to_string(&spec).unwrap().contains("quarantine_after = 3"), "the example spec names the default");
    let mut farm = Farm::start(backend.env(), FAST);

    // The broken node: every S3 request goes to a port nothing listens on, and fails after one
    // retry. It starts first, so it takes the first jobs.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let env = [("AWS_ENDPOINT", endpoint.clone()), ("AWS_ENDPOINT_URL", endpoint), ("ACUFARM_S3_MAX_RETRIES", "1".to_string())];
    let token = farm.token.clone();
    let broken = farm.spawn_worker_env("broken", "fc", 2, &token, &env);
    farm.workers.push(broken);
    if let Err(e) = farm.worker("broken").wait_for_line("acufarm worker: registered as", Duration::from_secs(90)) {
        farm.fail(&format!("the broken worker did not register: {e}"));
    }
    farm.submit(&spec);
    let status = farm.wait_until(run, "the broken worker is quarantined", RUN_TIMEOUT, |s| quarantined(s).iter().any(|q| q["worker"] == "broken"));
    let entry = quarantined(&status).into_iter().find(|q| q["worker"] == "broken").unwrap();
    assert!(entry["failures"].as_u64().is_some_and(|n| n >= 3), "{entry}");
    let errors: Vec<&str> = entry["errors"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(!errors.is_empty() && errors.iter().all(|e| e.contains(&format!("127.0.0.1:{closed}")) || e.contains("onnect")), "{errors:?}");
    let plain = String::from_utf8(farm.admin(&["status", run]).stdout).unwrap();
    assert!(plain.contains("quarantined worker broken after") && plain.contains("acufarm worker release broken --run quarantine-s3"), "{plain}");

    // Healthy workers finish the run, the broken worker's failed jobs included, and the broken
    // worker (still running) gets nothing more.
    farm.start_workers(&["h1", "h2"], 2);
    let status = farm.wait_done(run, RUN_TIMEOUT);
    let rows = check_finished_run(&farm, &data, run, &status);
    assert!(rows.iter().all(|r| r["worker"] != "broken"), "the broken worker completed a job");
    let retried = rows.iter().filter(|r| r["attempt"].as_i64() > Some(1)).count();
    assert!(retried >= 3, "the jobs the broken worker failed were rendered again elsewhere: {retried} retried");
    assert!(farm.worker("broken").running(), "a quarantined worker keeps running (other runs may need it)");

    // Released, it is no longer listed; releasing it again is refused with a sentence.
    let released = farm.admin_ok(&["worker", "release", "broken", "--run", run]);
    assert!(released.contains("worker broken released on quarantine-s3"), "{released}");
    assert!(quarantined(&farm.status(run)).is_empty());
    let again = farm.admin(&["worker", "release", "broken"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && stderr.contains("worker `broken` is not quarantined on any run"), "{stderr}");
}
