//! Harness for the distributed end-to-end tests: private PostgreSQL and Redis, the real
//! `acufarm coordinator` and `acufarm worker` processes, admin commands, and the checks every
//! finished run must pass on either storage backend.

pub mod dataset;
pub mod netns;
pub mod pki;
pub mod proc;
pub mod services;

use dataset::Dataset;
use proc::Proc;
use serde_json::Value;
use services::{Postgres, Redis};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_acufarm");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn acufarm_home() -> String {
    std::env::var("ACUFARM_HOME").unwrap_or_else(|_| format!("{}/.cache/acufarm", std::env::var("HOME").unwrap_or_else(|_| "/root".into())))
}

pub fn bundle(name: &str) -> PathBuf {
    repo().join("models/tiny").join(name)
}

/// One runtime for the test's own async work (storage, gRPC).
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    rt().block_on(f)
}

/// Holds an exclusive lock on a file in the target directory: the farm tests each start a whole
/// farm on a small machine, so they run one at a time even when nextest runs them in parallel
/// processes.
pub struct Serial(#[allow(dead_code)] File);

pub fn serial() -> Serial {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("acufarm-farm-tests.lock");
    let file = File::options().create(true).truncate(false).write(true).open(&path).unwrap();
    file.lock().unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    Serial(file)
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Lease settings short enough that a lost worker's jobs come back within seconds.
#[derive(Clone, Copy)]
pub struct Timing {
    pub lease_s: u32,
    pub heartbeat_s: u32,
    pub reap_s: u32,
}

pub const FAST: Timing = Timing { lease_s: 3, heartbeat_s: 1, reap_s: 1 };

/// PostgreSQL, Redis and a coordinator, plus the workers a scenario starts. Everything is stopped
/// when dropped; while a test fails the tails of every log are printed and the log folder is kept.
pub struct Farm {
    pub workers: Vec<Proc>,
    /// Every coordinator process started; the last one is the current one.
    pub coordinators: Vec<Proc>,
    pub redis: Redis,
    pub pg: Postgres,
    pub port: u16,
    /// The first coordinator's HTTP port (health, readiness, metrics).
    pub http_port: u16,
    /// The HTTP port of the coordinator started last (a replica's own).
    pub last_http_port: u16,
    pub token: String,
    pub env: Vec<(String, String)>,
    pub timing: Timing,
    pub started: Instant,
    /// Settings only the coordinator gets (TLS files, token files), after the usual ones.
    pub coordinator_env: Vec<(String, String)>,
    /// Workers and the CLI reach the coordinator over `https://`.
    pub https: bool,
    logs: Option<tempfile::TempDir>,
}

impl Farm {
    /// Starts PostgreSQL, Redis and a coordinator; `env` is added to every farm process
    /// (the `AWS_*` settings on S3).
    pub fn start(env: Vec<(String, String)>, timing: Timing) -> Farm {
        let logs = tempfile::Builder::new().prefix("acufarm-farm-logs-").tempdir().unwrap();
        let redis = Redis::start(logs.path());
        Self::start_on(env, timing, Some(logs), redis, Postgres::start(), Vec::new(), false)
    }

    /// A farm on services the test started (over TLS, say), with settings for the coordinator
    /// alone; `https` when clients must reach it over `https://`.
    #[allow(dead_code)] // used by the TLS tests only
    pub fn start_with(env: Vec<(String, String)>, timing: Timing, redis: Redis, pg: Postgres, coordinator_env: Vec<(String, String)>, https: bool) -> Farm {
        Self::start_on(env, timing, None, redis, pg, coordinator_env, https)
    }

    fn start_on(
        env: Vec<(String, String)>,
        timing: Timing,
        logs: Option<tempfile::TempDir>,
        redis: Redis,
        pg: Postgres,
        coordinator_env: Vec<(String, String)>,
        https: bool,
    ) -> Farm {
        let started = Instant::now();
        let logs = logs.unwrap_or_else(|| tempfile::Builder::new().prefix("acufarm-farm-logs-").tempdir().unwrap());
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let mut farm = Farm {
            workers: Vec::new(),
            coordinators: Vec::new(),
            redis,
            pg,
            port: services::free_port(),
            http_port: services::free_port(),
            last_http_port: 0,
            token: format!("farm-token-{nanos:x}"),
            env,
            timing,
            started,
            coordinator_env,
            https,
            logs: Some(logs),
        };
        farm.start_coordinator();
        eprintln!("[{:>6.1}s] farm up: coordinator {}, {}, {}", farm.secs(), farm.url(), farm.pg.url(), farm.redis.url());
        farm
    }

    pub fn secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn log(&self, msg: &str) {
        eprintln!("[{:>6.1}s] {msg}", self.secs());
    }

    pub fn log_dir(&self) -> &Path {
        self.logs.as_ref().unwrap().path()
    }

    /// The first coordinator's HTTP base URL.
    pub fn http_url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.https { "https" } else { "http" }, self.http_port)
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.https { "https" } else { "http" }, self.port)
    }

    /// `acufarm ARGS` with the farm's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        cmd.env("ACUFARM_HOME", acufarm_home());
        if std::env::var_os("ACUFARM_LOG").is_none() {
            cmd.env("ACUFARM_LOG", "info");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts a coordinator on the farm's port (again, after a kill) and waits until it listens.
    pub fn start_coordinator(&mut self) {
        let port = self.port;
        self.start_coordinator_on("coordinator", port);
    }

    /// Starts a second coordinator (a replica on the same PostgreSQL and Redis) on a port of its
    /// own; returns its URL. It is kept in `coordinators` after the first.
    pub fn start_replica(&mut self) -> String {
        let port = services::free_port();
        self.start_coordinator_on("replica", port);
        format!("{}://127.0.0.1:{port}", if self.https { "https" } else { "http" })
    }

    fn start_coordinator_on(&mut self, name: &str, port: u16) {
        let mut cmd = self.command(&["coordinator"]);
        let t = self.timing;
        let http_port = if port == self.port { self.http_port } else { services::free_port() };
        self.last_http_port = http_port;
        cmd.env("ACUFARM_LISTEN", format!("127.0.0.1:{port}"))
            .env("ACUFARM_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
            .env("ACUFARM_DATABASE_URL", self.pg.url())
            .env("ACUFARM_REDIS_URL", self.redis.url())
            .env("ACUFARM_REDIS_PREFIX", "e2e")
            .env("ACUFARM_TOKEN", &self.token)
            .env("ACUFARM_LEASE_SECONDS", t.lease_s.to_string())
            .env("ACUFARM_HEARTBEAT_SECONDS", t.heartbeat_s.to_string())
            .env("ACUFARM_REAP_INTERVAL_SECONDS", t.reap_s.to_string());
        cmd.envs(self.coordinator_env.iter().map(|(k, v)| (k, v)));
        let mut proc = Proc::spawn(name, cmd, self.log_dir());
        let ready = proc.wait_for_line("acufarm coordinator: listening on", Duration::from_secs(60));
        self.coordinators.push(proc);
        match ready {
            Ok(line) => assert!(line.contains(&format!("127.0.0.1:{port}")), "coordinator listens elsewhere: {line}"),
            Err(e) => self.fail(&format!("the coordinator did not come up: {e}")),
        }
    }

    /// kill -9 of the current coordinator.
    pub fn kill_coordinator(&mut self) {
        self.coordinators.last_mut().expect("a coordinator").kill9();
    }

    /// Starts `acufarm worker` without waiting for it; the caller owns the process.
    pub fn spawn_worker(&self, name: &str, bundle_name: &str, batch: u32, token: &str) -> Proc {
        self.spawn_worker_env(name, bundle_name, batch, token, &[])
    }

    /// Like `spawn_worker`, with environment variables of its own on top of the farm's.
    pub fn spawn_worker_env(&self, name: &str, bundle_name: &str, batch: u32, token: &str, env: &[(&str, String)]) -> Proc {
        self.spawn_worker_to(&self.url(), name, bundle_name, batch, token, env)
    }

    /// Like `spawn_worker_env`, pointed at the coordinator URL(s) `url`.
    pub fn spawn_worker_to(&self, url: &str, name: &str, bundle_name: &str, batch: u32, token: &str, env: &[(&str, String)]) -> Proc {
        let mut cmd = self.command(&["worker", "--coordinator", url, "--bundle"]);
        cmd.arg(bundle(bundle_name)).args(["--batch", &batch.to_string(), "--name", name, "--threads", "1"]).env("ACUFARM_TOKEN", token);
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Proc::spawn(name, cmd, self.log_dir())
    }

    /// Starts an fc worker with the farm's token, waits for it to register, keeps it in
    /// `workers`; returns its index there.
    pub fn start_worker(&mut self, name: &str, batch: u32) -> usize {
        self.add_worker(name, "fc", batch)
    }

    pub fn add_worker(&mut self, name: &str, bundle_name: &str, batch: u32) -> usize {
        self.add_workers(&[name], bundle_name, batch);
        self.workers.len() - 1
    }

    /// Starts several workers at once (loading a bundle takes seconds) and waits until each
    /// has registered.
    pub fn start_workers(&mut self, names: &[&str], batch: u32) {
        self.add_workers(names, "fc", batch);
    }

    pub fn add_workers(&mut self, names: &[&str], bundle_name: &str, batch: u32) {
        let token = self.token.clone();
        let first = self.workers.len();
        for name in names {
            let proc = self.spawn_worker(name, bundle_name, batch, &token);
            self.workers.push(proc);
        }
        for i in first..self.workers.len() {
            if let Err(e) = self.workers[i].wait_for_line("acufarm worker: registered as", Duration::from_secs(90)) {
                self.fail(&format!("worker {} did not register: {e}", self.workers[i].name));
            }
        }
        self.log(&format!("workers {names:?} registered"));
    }

    pub fn worker(&mut self, name: &str) -> &mut Proc {
        self.workers.iter_mut().rev().find(|w| w.name == name).unwrap_or_else(|| panic!("no worker {name}"))
    }

    /// An admin command with the farm's token (`ACUFARM_COORDINATOR` names the coordinator).
    pub fn admin(&self, args: &[&str]) -> Output {
        self.admin_with_token(args, &self.token)
    }

    pub fn admin_with_token(&self, args: &[&str], token: &str) -> Output {
        let mut cmd = self.command(args);
        cmd.env("ACUFARM_COORDINATOR", self.url()).env("ACUFARM_TOKEN", token).env("ACUFARM_LOG", "warn");
        cmd.output().unwrap()
    }

    /// An admin command that must succeed; returns its stdout.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        if !out.status.success() {
            self.fail(&format!("`acufarm {}` failed ({}):\n{}", args.join(" "), out.status, text(&out)));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `acufarm submit SPEC --bundle models/tiny/fc` (with `--coordinator` given as a flag).
    pub fn submit(&self, spec: &Path) -> String {
        let url = self.url();
        let spec = spec.display().to_string();
        let bundle = bundle("fc").display().to_string();
        let out = self.admin_ok(&["submit", &spec, "--bundle", &bundle, "--coordinator", &url]);
        self.log(&format!("submit: {}", out.trim()));
        out
    }

    /// `status --json` of every run, parsed.
    pub fn status_all(&self) -> Result<Value, String> {
        let out = self.admin(&["status", "--json"]);
        if !out.status.success() {
            return Err(format!("`acufarm status --json` failed ({}): {}", out.status, text(&out)));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("`acufarm status --json` printed no JSON ({e}): {}", text(&out)))
    }

    /// `status RUN --json`: the run's entry and the whole answer (workers, redis_ok).
    pub fn try_status_all(&self, run: &str) -> Result<(Value, Value), String> {
        let out = self.admin(&["status", run, "--json"]);
        if !out.status.success() {
            return Err(format!("`acufarm status {run} --json` failed ({}): {}", out.status, text(&out)));
        }
        let all: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("`acufarm status {run} --json` printed no JSON ({e}): {}", text(&out)))?;
        Ok((run_entry(&all, run)?, all))
    }

    /// `status RUN --json`: the run's entry.
    pub fn try_status(&self, run: &str) -> Result<Value, String> {
        self.try_status_all(run).map(|(r, _)| r)
    }

    pub fn status(&self, run: &str) -> Value {
        self.try_status(run).unwrap_or_else(|e| self.fail(&e))
    }

    /// Polls `status RUN --json` (every 100 ms) until `pred` holds; admin failures (e.g. while the
    /// coordinator is down) are retried until the deadline.
    pub fn wait_until(&self, run: &str, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_until_all(run, what, timeout, |run, _| pred(run)).0
    }

    /// Like `wait_until`, with the whole status answer (workers, redis_ok) given to `pred` too.
    /// Fails at once when the run has no queued or leased job left (it is a mid-run condition).
    pub fn wait_until_all(&self, run: &str, what: &str, timeout: Duration, pred: impl Fn(&Value, &Value) -> bool) -> (Value, Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.try_status_all(run);
            if let (Ok((status, all)), Some(_)) = (&answer, std::env::var_os("ACUFARM_TEST_TRACE")) {
                self.log(&format!("{run}: {} workers {}", counts_line(status), all["workers"]));
            }
            let last = match answer {
                Ok((status, all)) if pred(&status, &all) => return (status, all),
                Ok((status, all)) if count(&status, "queued") == 0 && count(&status, "leased") == 0 => {
                    self.fail(&format!("run {run} finished before {what}: {}; workers {}", counts_line(&status), all["workers"]))
                }
                Ok((status, all)) => format!("last status: {}; workers {}", counts_line(&status), all["workers"]),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                self.fail(&format!("run {run}: {what} did not happen within {timeout:?}; {last}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `status RUN --json --wait`: returns once the run has no queued or leased jobs and the
    /// manifest is written. Retried while the coordinator cannot be reached.
    pub fn wait_done(&self, run: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1).to_string();
            let out = self.admin(&["status", run, "--json", "--wait", "--wait-timeout", &left]);
            if out.status.success() {
                // The waited status is printed as JSON; ask again if it is not.
                let status = serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| run_entry(&v, run).ok()).unwrap_or_else(|| self.status(run));
                let c = |k| count(&status, k);
                if c("queued") == 0 && c("leased") == 0 {
                    self.log(&format!("run {run} done: {}", counts_line(&status)));
                    return status;
                }
                self.fail(&format!("`status {run} --wait` returned with work left: {}", counts_line(&status)));
            }
            if Instant::now() > deadline {
                self.fail(&format!("`acufarm status {run} --wait` did not finish within {timeout:?}: {}", text(&out)));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The tails of every process's log and of PostgreSQL's.
    pub fn diag(&self) -> String {
        let mut out = String::new();
        for p in self.coordinators.iter().chain(&self.workers) {
            out.push_str(&p.tail(30));
        }
        out.push_str(&self.redis.proc.tail(5));
        out.push_str(&self.pg.log_tail(15));
        out
    }

    /// Panics with `msg` and the tails of every log.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n==================== farm logs ====================\n{}", self.diag())
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.kill9();
        }
        for c in &mut self.coordinators {
            c.kill9();
        }
        if std::thread::panicking() {
            let logs = self.logs.take().unwrap().keep();
            eprintln!("farm logs kept in {}", logs.display());
        }
    }
}

/// The entry for `run` in a `status --json` answer.
pub fn run_entry(all: &Value, run: &str) -> Result<Value, String> {
    all["runs"].as_array().and_then(|runs| runs.iter().find(|r| r["name"] == run)).cloned().ok_or_else(|| format!("status has no run {run}: {all}"))
}

pub fn count(status: &Value, key: &str) -> u64 {
    status["counts"][key].as_u64().unwrap_or_else(|| panic!("status counts lack `{key}`: {status}"))
}

pub fn counts_line(status: &Value) -> String {
    status["counts"].to_string()
}

/// The rows of `manifest.jsonl` in a local output folder.
pub fn manifest_rows(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap_or_else(|e| panic!("{}/manifest.jsonl: {e}", out.display()));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("manifest row {l}: {e}"))).collect()
}

/// Every check a finished run must pass: its status says all `expected` inputs succeeded, the
/// manifest has exactly one row per input, there is exactly one output per input (mirroring the
/// input path, rendered, not copied), labels and map.txt are byte-identical copies, per-split
/// metadata lists every output, no staging object is left, and `acufarm verify` passes. Returns the
/// manifest rows.
pub fn check_finished_run(farm: &Farm, data: &Dataset, run: &str, status: &Value) -> Vec<Value> {
    check_finished(data, run, status, &|| farm.diag())
}

/// [`check_finished_run`] for a farm the harness did not start; `diag` gives the logs to show
/// when the counts are off.
pub fn check_finished(data: &Dataset, run: &str, status: &Value, diag: &dyn Fn() -> String) -> Vec<Value> {
    let n = data.expected.len() as u64;
    let counts = status["counts"].clone();
    for (key, want) in [("succeeded", n), ("queued", 0), ("leased", 0), ("failed", 0), ("cancelled", 0)] {
        if count(status, key) != want {
            panic!("run {run}: {key} = {}, want {want}; counts {counts}; failures {}\n{}", count(status, key), status["failures"], diag());
        }
    }
    let out = data.output_local();
    let rows = manifest_rows(&out);
    assert_eq!(rows.len() as u64, n, "run {run}: manifest.jsonl has {} rows for {n} inputs", rows.len());
    let ids: BTreeSet<&str> = rows.iter().map(|r| r["sample_id"].as_str().expect("sample_id")).collect();
    assert_eq!(ids.len(), rows.len(), "run {run}: a sample id is listed twice in the manifest");
    let paths: BTreeSet<String> = rows.iter().map(|r| r["output"]["path"].as_str().expect("output.path").to_string()).collect();
    assert_eq!(paths, data.expected, "run {run}: the manifest's outputs are not exactly one per input");
    for row in &rows {
        assert_eq!(row["run"], run, "{row}");
        assert!(row["attempt"].as_i64().is_some_and(|a| a >= 1), "attempt: {row}");
    }

    // One output per input, nothing else under the image folder.
    let mut on_disk = BTreeSet::new();
    collect_files(&out.join(dataset::IMAGES), &out, &mut on_disk);
    assert_eq!(on_disk, data.expected, "run {run}: the output images are not exactly one per input");
    for rel in &data.expected {
        let rendered = std::fs::read(out.join(rel)).unwrap();
        assert_ne!(rendered, data.input_bytes(rel), "{rel} was copied, not rendered");
        let stem = Path::new(rel).file_stem().unwrap().to_str().unwrap();
        let label = format!("{}/{stem}.json", dataset::LABELS);
        let copied = std::fs::read(out.join(&label)).unwrap_or_else(|e| panic!("run {run}: label {label} missing in the output ({e})"));
        assert_eq!(copied, data.input_bytes(&label), "run {run}: {label} is not a byte-identical copy");
    }
    assert_eq!(std::fs::read(out.join("map.txt")).ok(), Some(data.input_bytes("map.txt")), "run {run}: map.txt is not a byte-identical copy");
    let metadata = std::fs::read_to_string(out.join("train/metadata.jsonl")).unwrap_or_else(|e| panic!("run {run}: train/metadata.jsonl ({e})"));
    assert_eq!(metadata.lines().filter(|l| !l.trim().is_empty()).count() as u64, n, "run {run}: train/metadata.jsonl rows");
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("manifest.summary.json")).expect("manifest.summary.json")).expect("summary JSON");
    assert_eq!(summary["outputs"].as_u64(), Some(n), "run {run}: summary {summary}");
    assert_eq!(data.staging_objects(), 0, "run {run}: staging objects left under {}/_staging", data.output_url);
    let debris = unlisted_files(&out, &rows);
    assert!(debris.is_empty(), "run {run}: files under {} that the manifest does not list: {debris:?}", out.display());

    let verify = Command::new(BIN).arg("verify").arg(&out).output().unwrap();
    assert!(verify.status.success(), "run {run}: acufarm verify {} failed:\n{}", out.display(), text(&verify));
    rows
}

/// Every file under a finished run's output root that is neither listed in its manifest (output
/// or label copy) nor acufarm's own (the manifest files, `map.txt`, files shipped under
/// `_acufarm/`): debris of a fault, object_store's temporary `key#N` files included (they are
/// plain files on disk, though its listings hide them).
pub fn unlisted_files(out: &Path, rows: &[Value]) -> Vec<String> {
    let mut listed: BTreeSet<String> =
        ["manifest.jsonl", "manifest.summary.json", "map.txt", "train/metadata.jsonl", "test/metadata.jsonl"].map(String::from).into();
    for row in rows {
        for file in [&row["output"], &row["annotation"]] {
            if let Some(path) = file["path"].as_str() {
                listed.insert(path.to_string());
            }
        }
    }
    let mut present = BTreeSet::new();
    collect_files(out, out, &mut present);
    present.into_iter().filter(|path| !listed.contains(path) && !path.starts_with("_acufarm/")).collect()
}

pub fn collect_files(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, root, out);
        } else {
            out.insert(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}
