//! A farm safe to put on a network, end to end through the real binary: the coordinator serving
//! TLS (mutual TLS on) to workers and the CLI with certificates made here by rcgen, PostgreSQL and
//! Redis reached over TLS only, and scoped tokens read from files and rotated mid-run. Every
//! refusal a user can cause is checked to be the one sentence naming the fix, and no log may
//! show a token.

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use support::dataset::{Backend, Dataset};
use support::pki::Pki;
use support::proc::Proc;
use support::services::{Postgres, Redis, TlsFiles};
use support::{FAST, Farm, bundle, check_finished_run, count};

const MODELS: [&str; 3] = ["M_Asher_N_HD", "F_Grace_N_HA", "M_Novak_S_BD"];
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn temp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

fn pair(k: &str, v: impl AsRef<Path>) -> (String, String) {
    (k.to_string(), v.as_ref().display().to_string())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A command that must fail with exactly one line on stderr, `error: <sentence>`, that contains
/// `expected`.
fn refused_with(out: Output, expected: &str) -> String {
    let err = stderr(&out);
    assert!(!out.status.success(), "expected a refusal containing `{expected}`, got success:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one sentence expected, got:\n{err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(expected), "expected `{expected}` in:\n{err}");
    eprintln!("refused as expected: {}", lines[0]);
    lines[0].to_string()
}

/// A worker that must stop at once with `expected` in its output (after loading its bundle).
fn worker_refused(farm: &Farm, name: &str, configure: impl FnOnce(&mut std::process::Command), expected: &str) {
    let mut cmd = farm.command(&["worker", "--coordinator", &farm.url(), "--bundle"]);
    cmd.arg(bundle("fc")).args(["--batch", "1", "--name", name, "--threads", "1"]);
    configure(&mut cmd);
    let mut proc = Proc::spawn(name, cmd, farm.log_dir());
    let status = proc.wait_exit(Duration::from_secs(90)).unwrap_or_else(|| farm.fail(&format!("worker {name} was not refused: still running")));
    assert!(!status.success(), "worker {name} exited 0");
    let output = proc.output();
    let line = output.lines().find(|l| l.starts_with("error: ") && l.contains(expected));
    let line = line.unwrap_or_else(|| panic!("worker {name}: expected `{expected}` in\n{output}"));
    eprintln!("worker {name} refused as expected: {line}");
}

/// Waits until `proc` has printed `needle` at least `times` times.
fn wait_for_count(farm: &Farm, proc: &mut Proc, needle: &str, times: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while proc.output().matches(needle).count() < times {
        if !proc.running() || Instant::now() > deadline {
            farm.fail(&format!("{} did not print `{needle}` {times} times\n{}", proc.name, proc.tail(30)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No file under `dir` (the farm's logs) holds any of `secrets`.
fn assert_no_secret_in_logs(dir: &Path, secrets: &[&str]) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let text = String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap_or_default()).into_owned();
        for secret in secrets {
            assert!(!text.contains(secret), "{} shows a token", entry.path().display());
        }
    }
}

#[test]
fn a_tls_farm_serves_workers_and_the_cli_over_https_with_postgres_and_redis_over_tls() {
    let _serial = support::serial();
    let dir = temp("acufarm-tls-");
    let pki = Pki::new(dir.path());
    let server = || TlsFiles { cert: &pki.server_cert, key: &pki.server_key, ca: &pki.ca };
    // Both services refuse plaintext outright, so the run below can only have gone over TLS.
    let pg = Postgres::start_tls(server());
    let redis = Redis::start_tls(dir.path(), server());
    assert!(redis.url().starts_with("rediss://") && pg.url().contains("sslmode=verify-full"));

    let clients = vec![pair("ACUFARM_CA_CERT", &pki.ca), pair("ACUFARM_CLIENT_CERT", &pki.client_cert), pair("ACUFARM_CLIENT_KEY", &pki.client_key)];
    // The coordinator trusts the test CA for Redis through redis_ca_cert.
    let coordinator = vec![
        pair("ACUFARM_TLS_CERT", &pki.server_cert),
        pair("ACUFARM_TLS_KEY", &pki.server_key),
        pair("ACUFARM_TLS_CLIENT_CA", &pki.ca),
        pair("ACUFARM_REDIS_CA_CERT", &pki.ca),
    ];
    let mut farm = Farm::start_with(clients, FAST, redis, pg, coordinator, true);
    let line = farm.coordinators[0].wait_for_line("acufarm coordinator: listening on", Duration::from_secs(1)).unwrap();
    assert!(line.ends_with("(TLS)"), "{line}");

    let data = Dataset::generate(&Backend::Fs, dir.path(), "tls", &MODELS[..2], &[1, 2, 3]);
    let spec = data.write_spec("spec.toml", "tls-run", |s| s);
    farm.start_workers(&["tls-w1", "tls-w2"], 2);
    farm.submit(&spec);
    let status = farm.wait_done("tls-run", RUN_TIMEOUT);
    check_finished_run(&farm, &data, "tls-run", &status);
    assert_eq!(count(&status, "succeeded"), 6);
    let all = farm.status_all().unwrap();
    assert_eq!(all["redis_ok"], true, "Redis over TLS answered: {all}");
    assert_eq!(all["workers"].as_array().map(Vec::len), Some(2), "both workers are live in Redis: {all}");
    let over_tls = farm.pg.psql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()");
    assert!(over_tls.parse::<u32>().unwrap() >= 1, "the coordinator's connections are TLS: {over_tls}");

    // The HTTP side serves the same TLS: with the CA and a client certificate it answers; without
    // the certificate, or in plaintext, it says what to fix.
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl").args(["-s", "--max-time", "30", "-w", "\n%{http_code}"]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let healthz = format!("{}/healthz", farm.http_url());
    let (ca, cert, key) = (pki.ca.to_str().unwrap(), pki.client_cert.to_str().unwrap(), pki.client_key.to_str().unwrap());
    assert_eq!(curl(&["--cacert", ca, "--cert", cert, "--key", key, &healthz]), "{\"status\":\"ok\"}\n200");
    let anonymous = curl(&["--cacert", ca, &healthz]);
    assert!(anonymous.ends_with("401") && anonymous.contains("requires a client certificate"), "{anonymous}");
    let plaintext = curl(&[&healthz.replace("https://", "http://")]);
    assert!(plaintext.ends_with("400") && plaintext.contains("serves HTTPS only"), "{plaintext}");

    // A client that forgot https://.
    let plain = farm.url().replace("https://", "http://");
    refused_with(farm.admin(&["status", "--coordinator", &plain]), "this coordinator serves TLS only; use an https:// coordinator URL");
    // A client that does not trust the coordinator's certificate: another CA, or the system roots.
    let mut untrusted = farm.command(&["status", "--coordinator", &farm.url()]);
    untrusted.env("ACUFARM_TOKEN", &farm.token).env("ACUFARM_CA_CERT", &pki.other_ca).env("ACUFARM_LOG", "warn");
    refused_with(untrusted.output().unwrap(), "cannot trust the TLS certificate of coordinator");
    let mut system_roots = farm.command(&["status", "--coordinator", &farm.url()]);
    system_roots.env("ACUFARM_TOKEN", &farm.token).env_remove("ACUFARM_CA_CERT").env("ACUFARM_LOG", "warn");
    refused_with(system_roots.output().unwrap(), "cannot trust the TLS certificate of coordinator");
    // Mutual TLS: a client without a certificate.
    let mut anonymous = farm.command(&["status", "--coordinator", &farm.url()]);
    anonymous.env("ACUFARM_TOKEN", &farm.token).env_remove("ACUFARM_CLIENT_CERT").env_remove("ACUFARM_CLIENT_KEY").env("ACUFARM_LOG", "warn");
    refused_with(anonymous.output().unwrap(), "this coordinator requires a client certificate (mutual TLS); pass --client-cert");
    // The same refusals reach a worker, which stops with the sentence instead of retrying.
    let token = farm.token.clone();
    worker_refused(
        &farm,
        "no-client-cert",
        |cmd| {
            cmd.env("ACUFARM_TOKEN", &token).env_remove("ACUFARM_CLIENT_CERT").env_remove("ACUFARM_CLIENT_KEY");
        },
        "requires a client certificate",
    );
    worker_refused(
        &farm,
        "untrusting",
        |cmd| {
            cmd.env("ACUFARM_TOKEN", &token).env("ACUFARM_CA_CERT", &pki.other_ca);
        },
        "cannot trust the TLS certificate",
    );
    assert_no_secret_in_logs(farm.log_dir(), &[&farm.token]);
}

#[test]
fn scoped_token_files_refuse_the_wrong_role_and_rotate_without_losing_a_job() {
    let _serial = support::serial();
    let dir = temp("acufarm-tokens-");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let (worker_old, worker_new, operator) = (format!("w-old-{nanos:x}"), format!("w-new-{nanos:x}"), format!("op-{nanos:x}"));
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // The coordinator holds the old and the next worker token; the worker starts on the old one.
    let coordinator_workers = file("coordinator-worker-tokens", &format!("{worker_old}\n{worker_new}\n"));
    let coordinator_operators = file("coordinator-operator-tokens", &format!("{operator}\n"));
    let worker_token = file("worker-token", &format!("{worker_old}\n"));
    let operator_token = file("operator-token", &format!("{operator}\n"));

    let logs = temp("acufarm-tokens-redis-");
    let redis = Redis::start(logs.path());
    let coordinator = vec![
        // The harness's shared token is not used: every role has its own file.
        ("ACUFARM_TOKEN".to_string(), String::new()),
        ("ACUFARM_TOKEN_FILE".to_string(), String::new()),
        pair("ACUFARM_WORKER_TOKEN_FILE", &coordinator_workers),
        pair("ACUFARM_OPERATOR_TOKEN_FILE", &coordinator_operators),
    ];
    // Every admin command of the harness reads the operator token from its file.
    let mut farm = Farm::start_with(vec![pair("ACUFARM_TOKEN_FILE", &operator_token)], FAST, redis, Postgres::start(), coordinator, false);

    // A worker token cannot call the Admin service; an operator token cannot lease jobs.
    let mut as_worker = farm.command(&["status", "--coordinator", &farm.url()]);
    as_worker.env("ACUFARM_TOKEN_FILE", &worker_token).env("ACUFARM_LOG", "warn");
    refused_with(as_worker.output().unwrap(), "the coordinator refused a worker token for the Admin service, which needs an operator token");
    worker_refused(
        &farm,
        "operator-as-worker",
        |cmd| {
            cmd.env("ACUFARM_TOKEN_FILE", &operator_token);
        },
        "refused an operator token for the Worker service, which needs a worker token",
    );

    let mut cmd = farm.command(&["worker", "--coordinator", &farm.url(), "--bundle"]);
    cmd.arg(bundle("fc")).args(["--batch", "1", "--name", "rotating", "--threads", "1"]).env("ACUFARM_TOKEN_FILE", &worker_token);
    farm.workers.push(Proc::spawn("rotating", cmd, farm.log_dir()));
    if let Err(e) = farm.workers[0].wait_for_line("acufarm worker: registered as", Duration::from_secs(90)) {
        farm.fail(&format!("the worker did not register: {e}"));
    }

    let data = Dataset::generate(&Backend::Fs, dir.path(), "tokens", &MODELS, &[1, 2, 3, 4]);
    let spec = data.write_spec("spec.toml", "rotation", |s| s);
    farm.submit(&spec);
    farm.wait_until("rotation", "a first job done", RUN_TIMEOUT, |s| count(s, "succeeded") >= 1);
    // Hold the rest of the run while the tokens change, so the rotation happens mid-run.
    farm.admin_ok(&["pause", "rotation"]);

    // 1. The worker moves to the next token: it notices its file changed on its own.
    std::fs::write(&worker_token, format!("{worker_new}\n")).unwrap();
    if let Err(e) = farm.workers[0].wait_for_line("the token file changed; sending its new token", Duration::from_secs(30)) {
        farm.fail(&e);
    }
    // 2. The old token is removed from the coordinator: the watch sees the file change.
    std::fs::write(&coordinator_workers, format!("{worker_new}\n")).unwrap();
    let mut current = farm.coordinators.pop().unwrap();
    wait_for_count(&farm, &mut current, "reloaded the tokens", 1, Duration::from_secs(30));
    // 3. A new operator token beside the old one, picked up at once on SIGHUP.
    let operator_next = format!("op-next-{nanos:x}");
    std::fs::write(&coordinator_operators, format!("{operator}\n{operator_next}\n")).unwrap();
    current.signal("HUP");
    wait_for_count(&farm, &mut current, "reloaded the tokens", 2, Duration::from_secs(30));
    farm.coordinators.push(current);
    std::fs::write(&operator_token, format!("{operator_next}\n")).unwrap();

    farm.admin_ok(&["resume", "rotation"]);
    let status = farm.wait_done("rotation", RUN_TIMEOUT);
    check_finished_run(&farm, &data, "rotation", &status);
    assert_eq!(count(&status, "succeeded"), 12);
    let worker_log = farm.workers[0].output();
    assert!(farm.workers[0].running(), "the rotating worker kept running:\n{worker_log}");
    assert_eq!(worker_log.matches("acufarm worker: registered as").count(), 1, "the worker never had to register again:\n{worker_log}");

    // The removed token is refused now.
    let mut old = farm.command(&["worker", "--coordinator", &farm.url(), "--bundle"]);
    let stale = file("stale-token", &format!("{worker_old}\n"));
    old.arg(bundle("fc")).args(["--batch", "1", "--name", "stale", "--threads", "1"]).env("ACUFARM_TOKEN_FILE", &stale);
    let mut proc = Proc::spawn("stale", old, farm.log_dir());
    assert!(proc.wait_exit(Duration::from_secs(90)).is_some_and(|s| !s.success()), "a removed token must stop the worker");
    assert!(proc.output().contains("refused this worker: the coordinator refused the token;"), "{}", proc.output());

    assert_no_secret_in_logs(farm.log_dir(), &[&worker_old, &worker_new, &operator, &operator_next]);
}
