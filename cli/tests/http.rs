//! The coordinator's HTTP server through the real binary: `/healthz`, `/readyz` and `/metrics`
//! (Prometheus) scraped before, during (paused, so the numbers hold still) and after a run, and
//! checked against the run's real numbers from `acufarm status`; JSON errors; the metrics token.

#[allow(dead_code)] // each test binary uses a part of the shared harness
mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::dataset::{Backend, Dataset};
use support::services::{Postgres, Redis};
use support::{FAST, Farm, count};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// A GET with curl: (HTTP status, body).
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "--max-time", "30"]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of one series in a scrape (`name{labels} value`), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn jobs(text: &str, run: &str, state: &str) -> Option<f64> {
    sample(text, &format!("acufarm_jobs{{run=\"{run}\",state=\"{state}\"}}"))
}

/// Every state's gauge equals the status's count.
fn assert_matches_status(text: &str, run: &str, status: &Value) {
    for state in ["queued", "leased", "succeeded", "failed", "cancelled"] {
        assert_eq!(jobs(text, run, state), Some(count(status, state) as f64), "acufarm_jobs state {state} against status {}\n{text}", status["counts"]);
    }
}

#[test]
fn health_readiness_and_metrics_follow_a_run() {
    let _serial = support::serial();
    let dir = tempfile::Builder::new().prefix("acufarm-http-").tempdir().unwrap();
    let data = Dataset::generate(&Backend::Fs, dir.path(), "http", &["M_Asher_N_HD", "F_Grace_N_HA"], &support::dataset::kept_frames()[..20]);
    let n = data.expected.len() as f64;
    let run = "http-run";
    let spec = data.write_spec("spec.toml", run, |s| s);
    let mut farm = Farm::start(Vec::new(), FAST);
    let base = farm.http_url();

    let (code, body) = get(&format!("{base}/healthz"), None);
    assert_eq!((code, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (code, body) = get(&format!("{base}/readyz"), None);
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, &ready["database"], &ready["redis"]), (200, &Value::from("ok"), &Value::from("ok")), "{body}");
    let (code, body) = get(&format!("{base}/nope"), None);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, &error["error"]["code"]), (404, &Value::from("not_found")), "{body}");

    // Queued, no worker yet: every job waits, all of it queue depth for the spec's bundle.
    farm.submit(&spec);
    let (code, text) = get(&format!("{base}/metrics"), None);
    assert_eq!(code, 200, "{text}");
    assert_matches_status(&text, run, &farm.status(run));
    assert_eq!(jobs(&text, run, "queued"), Some(n));
    assert_eq!(sample(&text, "acufarm_queue_depth{bundle=\"tiny-fc\"}"), Some(n), "{text}");

    // Mid-run, paused until nothing is leased, the numbers hold still to compare.
    farm.start_worker("w1", 2);
    farm.wait_until(run, "10 jobs succeeded", RUN_TIMEOUT, |s| count(s, "succeeded") >= 10);
    farm.admin_ok(&["pause", run]);
    let paused = farm.wait_until(run, "nothing leased", RUN_TIMEOUT, |s| count(s, "leased") == 0);
    let text = get(&format!("{base}/metrics"), None).1;
    assert_matches_status(&text, run, &paused);
    assert!(count(&paused, "queued") > 0, "the run finished before it could be paused: {}", paused["counts"]);
    assert_eq!(sample(&text, "acufarm_queue_depth{bundle=\"tiny-fc\"}"), None, "a paused run is no queue depth:\n{text}");
    assert!(sample(&text, "acufarm_lease_seconds_count").is_some_and(|leases| leases >= 1.0), "{text}");
    let live = sample(&text, "acufarm_workers{state=\"busy\"}").unwrap_or(0.0) + sample(&text, "acufarm_workers{state=\"idle\"}").unwrap_or(0.0);
    assert_eq!(live, 1.0, "one live worker, busy or idle:\n{text}");

    // Finished: all succeeded, no queue depth, one accepted completion per job.
    farm.admin_ok(&["resume", run]);
    let done = farm.wait_done(run, RUN_TIMEOUT);
    let text = get(&format!("{base}/metrics"), None).1;
    assert_matches_status(&text, run, &done);
    assert_eq!(jobs(&text, run, "succeeded"), Some(n));
    assert_eq!(sample(&text, "acufarm_queue_depth{bundle=\"tiny-fc\"}"), None, "{text}");
    assert_eq!(sample(&text, "acufarm_jobs_completed_total"), Some(n), "{text}");
    assert!(sample(&text, "acufarm_worker_images_per_second{worker=\"w1\"}").is_some_and(|rate| rate > 0.0), "{text}");
    for stage in ["download", "encode", "sample", "decode", "upload", "commit"] {
        let series = format!("acufarm_stage_seconds_count{{stage=\"{stage}\",bundle=\"tiny-fc\"}}");
        assert_eq!(sample(&text, &series), Some(n), "one {stage} time per job:\n{text}");
    }
}

#[test]
fn metrics_can_require_the_read_token_while_health_stays_open() {
    let _serial = support::serial();
    let logs = tempfile::Builder::new().prefix("acufarm-http-logs-").tempdir().unwrap();
    let coordinator = vec![("ACUFARM_METRICS_REQUIRE_TOKEN".to_string(), "true".to_string())];
    let farm = Farm::start_with(Vec::new(), FAST, Redis::start(logs.path()), Postgres::start(), coordinator, false);
    let base = farm.http_url();
    let (code, body) = get(&format!("{base}/metrics"), None);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, &error["error"]["code"]), (401, &Value::from("unauthenticated")), "{body}");
    assert!(error["error"]["message"].as_str().unwrap().contains("carried no token"), "{body}");
    let (code, _) = get(&format!("{base}/metrics"), Some("not-the-token"));
    assert_eq!(code, 401);
    let (code, text) = get(&format!("{base}/metrics"), Some(&farm.token));
    assert_eq!(code, 200, "{text}");
    assert_eq!(sample(&text, "acufarm_jobs_completed_total"), Some(0.0), "{text}");
    assert_eq!(get(&format!("{base}/healthz"), None).0, 200);
    assert_eq!(get(&format!("{base}/readyz"), None).0, 200);
}

/// `/readyz` follows the database: unready (503, saying so) while PostgreSQL is down and ready
/// again once it is back; Redis going away is reported as `degraded` while the coordinator stays
/// ready (Redis is disposable). Real services, stopped and started under the running coordinator.
#[test]
fn readiness_follows_postgres_and_only_notes_redis() {
    let _serial = support::serial();
    let mut farm = Farm::start(Vec::new(), FAST);
    let url = format!("{}/readyz", farm.http_url());
    let ready = || {
        let (code, body) = get(&url, None);
        (code, serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)))
    };
    // Polls until `want` holds (each poll is one request the coordinator answers).
    let wait = |what: &str, want: &dyn Fn(u16, &Value) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let (code, body) = ready();
            if want(code, &body) {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "/readyz never showed {what}; last answer {code} {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("ready with everything ok", &|code, body| code == 200 && body["database"] == "ok" && body["redis"] == "ok");

    farm.redis.proc.kill9();
    let body = wait("Redis degraded", &|code, body| code == 200 && body["redis"] == "degraded");
    assert_eq!((&body["status"], &body["database"]), (&Value::from("ready"), &Value::from("ok")), "{body}");

    farm.pg.stop();
    let body = wait("unready without PostgreSQL", &|code, _| code == 503);
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("database")), "the answer names the database: {body}");
    // Unready is not dead: liveness stays up, so an orchestrator waits instead of restarting it.
    assert_eq!(get(&format!("{}/healthz", farm.http_url()), None).0, 200);

    farm.pg.start_again();
    let body = wait("ready again with PostgreSQL back", &|code, body| code == 200 && body["database"] == "ok");
    assert_eq!(body["redis"], "degraded", "{body}");
}
