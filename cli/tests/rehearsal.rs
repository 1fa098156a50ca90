//! The multi-node rehearsal: a farm of separate machines on one machine. PostgreSQL + Redis, the
//! S3 store (moto), each of two coordinator replicas and each of three workers run in a network
//! namespace of their own, joined only by veth links to a bridge (`support::netns`), TLS on
//! between workers, operators and coordinators. During one run:
//!
//! 1. one worker's link (storage included) is cut for longer than the lease while it holds jobs:
//!    its jobs are leased to others and finish; when the link returns, its late reports are
//!    refused as stale and what it staged is cleaned up;
//! 2. each coordinator replica is stopped with SIGTERM and started again in turn (a rolling
//!    upgrade), while the workers go on through the other one;
//! 3. a worker gets SIGTERM: it finishes what it holds within its grace period, leases nothing
//!    more, and exits.
//!
//! The run must end with every input rendered exactly once, `acufarm verify` clean and no
//! debris, and every namespace and link the test made gone. Needs root (CI runs as root).

#[allow(dead_code)] // each test binary uses a part of the shared harness
mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::dataset::{Backend, Dataset, kept_frames};
use support::netns::{self, Net};
use support::pki::Pki;
use support::proc::Proc;
use support::services::{Moto, Place, Postgres, Redis};
use support::{BIN, acufarm_home, bundle, check_finished, count, counts_line, run_entry};

const LEASE_S: u64 = 3;
const RUN: &str = "rehearsal";
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
/// How long a drained worker may take (its grace period).
const GRACE: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(300);
/// What a worker prints when a late report of its is refused as stale, when its heartbeat learns
/// that the coordinator took a lease back, and when it leaves such finished jobs unreported.
const LATE: [&str; 3] = ["ignored a stale", "no longer held by this worker", "whose lease was lost"];

/// The farm's processes in their namespaces, and what the operator (the test) needs to reach it.
/// Fields drop in order: the processes, then PostgreSQL, then the network they ran in.
struct Rehearsal {
    procs: Vec<Proc>,
    pg: Postgres,
    pki: Pki,
    aws: Vec<(String, String)>,
    worker_token: String,
    operator_token: String,
    logs: PathBuf,
    started: Instant,
    /// The test's folder (dataset, certificates, logs), kept when the test fails.
    dir: Option<tempfile::TempDir>,
    net: Net,
}

impl Drop for Rehearsal {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("rehearsal logs kept in {}", dir.keep().join("logs").display());
        }
    }
}

impl Rehearsal {
    fn log(&self, msg: &str) {
        eprintln!("[{:>6.1}s] {msg}", self.started.elapsed().as_secs_f64());
    }

    fn proc(&mut self, name: &str) -> &mut Proc {
        // The newest process of that name (a restarted coordinator is pushed again).
        let name = name.to_string();
        self.procs.iter_mut().rev().find(|p| p.name == name).unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Everything the newest process of that name printed.
    fn output_of(&self, name: &str) -> String {
        self.procs.iter().rev().find(|p| p.name == name).map(Proc::output).unwrap_or_default()
    }

    fn diag(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            out.push_str(&p.tail(25));
        }
        out.push_str(&self.pg.log_tail(15));
        out
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n==================== rehearsal logs ====================\n{}", self.diag())
    }

    fn url(&self, node: &str) -> String {
        format!("https://{}:7171", self.net.ip(node))
    }

    /// `acufarm ARGS` in `place` with the farm's storage settings.
    fn command(&self, place: &Place, args: &[&str]) -> Command {
        let mut cmd = place.command(BIN);
        cmd.args(args).env("ACUFARM_HOME", acufarm_home()).env("ACUFARM_LOG", "info").envs(self.aws.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn start_coordinator(&mut self, node: &str) {
        let place = self.net.place(node);
        let mut cmd = self.command(&place, &["coordinator"]);
        let (db, ip) = (self.net.ip("db"), place.host.clone());
        cmd.env("ACUFARM_LISTEN", format!("{ip}:7171"))
            .env("ACUFARM_HTTP_LISTEN", format!("{ip}:7172"))
            .env("ACUFARM_DATABASE_URL", format!("postgres://postgres@{db}:5432/postgres"))
            .env("ACUFARM_REDIS_URL", format!("redis://{db}:6379"))
            .env("ACUFARM_REDIS_PREFIX", "rehearsal")
            .env("ACUFARM_WORKER_TOKEN", &self.worker_token)
            .env("ACUFARM_OPERATOR_TOKEN", &self.operator_token)
            .env("ACUFARM_TLS_CERT", &self.pki.server_cert)
            .env("ACUFARM_TLS_KEY", &self.pki.server_key)
            .env("ACUFARM_LEASE_SECONDS", LEASE_S.to_string())
            .env("ACUFARM_HEARTBEAT_SECONDS", "1")
            .env("ACUFARM_REAP_INTERVAL_SECONDS", "1");
        let mut proc = Proc::spawn(node, cmd, &self.logs);
        let up = proc.wait_for_line("acufarm coordinator: listening on", Duration::from_secs(60));
        self.procs.push(proc);
        if let Err(e) = up {
            self.fail(&format!("coordinator {node} did not come up: {e}"));
        }
    }

    fn start_worker(&mut self, node: &str) {
        let place = self.net.place(node);
        let coordinators = format!("{},{}", self.url("c1"), self.url("c2"));
        let mut cmd = self.command(&place, &["worker", "--coordinator", &coordinators, "--batch", "2", "--name", node, "--threads", "1", "--bundle"]);
        cmd.arg(bundle("fc")).arg("--ca-cert").arg(&self.pki.ca).env("ACUFARM_TOKEN", &self.worker_token);
        self.procs.push(Proc::spawn(node, cmd, &self.logs));
    }

    /// An operator command from the test's seat, to coordinator `node`.
    fn admin(&self, node: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(&Place::loopback(), args);
        cmd.args(["--coordinator", &self.url(node)]).arg("--ca-cert").arg(&self.pki.ca).env("ACUFARM_TOKEN", &self.operator_token);
        cmd.output().unwrap()
    }

    fn status(&self, node: &str) -> Result<Value, String> {
        let out = self.admin(node, &["status", RUN, "--json"]);
        if !out.status.success() {
            return Err(format!("status via {node}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let all: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("status via {node} printed no JSON: {e}"))?;
        run_entry(&all, RUN)
    }

    /// Asks `check` every `every` until it gives a value; its `Err` is the last observation,
    /// shown when `what` has not happened within TIMEOUT.
    fn poll<T>(&self, what: &str, every: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let last = match check() {
                Ok(value) => return value,
                Err(last) => last,
            };
            if Instant::now() > deadline {
                self.fail(&format!("{what} did not happen within {TIMEOUT:?}; last: {last}"));
            }
            std::thread::sleep(every);
        }
    }

    /// Polls the run's status through `node` until `pred` holds; fails if the run ends first.
    fn wait_status(&self, node: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.poll(what, Duration::from_millis(100), || match self.status(node) {
            Ok(status) if pred(&status) => Ok(status),
            Ok(status) if count(&status, "queued") + count(&status, "leased") == 0 => {
                self.fail(&format!("the run ended before {what} ({}); give it more jobs", counts_line(&status)))
            }
            Ok(status) => Err(counts_line(&status)),
            Err(e) => Err(e),
        })
    }

    /// One number from PostgreSQL (the operator reads the truth directly).
    fn sql(&self, query: &str) -> u64 {
        self.pg.psql(query).parse().unwrap_or_else(|e| panic!("`{query}` gave no number: {e}"))
    }

    fn wait_sql(&self, what: &str, query: &str, pred: impl Fn(u64) -> bool) -> u64 {
        self.poll(what, Duration::from_millis(50), || match self.sql(query) {
            value if pred(value) => Ok(value),
            value => Err(format!("`{query}` = {value}")),
        })
    }

    fn leased_by(&self, worker: &str) -> String {
        format!("SELECT count(*) FROM jobs WHERE state = 'leased' AND worker = '{worker}'")
    }

    fn readyz(&self, node: &str) -> u16 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--cacert"])
            .arg(&self.pki.ca)
            .arg(format!("https://{}:7172/readyz", self.net.ip(node)))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }
}

#[test]
fn a_farm_of_separate_machines_survives_a_partition_a_rolling_restart_and_a_drain() {
    if let Err(why) = netns::can_make_namespaces() {
        panic!("the multi-node rehearsal cannot run here: {why}");
    }
    let _serial = support::serial();
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("acufarm-rehearsal-").tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let net = Net::new(&["db", "s3", "c1", "c2", "w1", "w2", "w3"]);
    let (id, leg) = (net.id(), net.host_leg());
    eprintln!("rehearsal: network {} (namespaces afr{id}-*), the test's leg {leg}", net.subnet());
    let pg = Postgres::start_in(&net.place("db"));
    let redis = Redis::start_in(&logs, &net.place("db"));
    let moto = Moto::start_in(&logs, &net.place("s3"));
    let aws = moto.env();
    let pki = Pki::for_servers(dir.path(), &[&net.ip("c1"), &net.ip("c2")]);
    let backend = Backend::S3(moto);
    let models = [
        "M_Asher_N_HD",
        "F_Grace_N_HA",
        "M_Bruno_N_HA",
        "F_Dana_N_HD",
        "M_Emil_N_HA",
        "F_Fern_N_HD",
        "M_Gus_N_HD",
        "F_Hana_N_HA",
        "M_Ivo_N_HA",
        "F_Jade_N_HD",
        "M_Kai_N_HA",
        "F_Lena_N_HD",
    ];
    let data = Dataset::generate(&backend, &dir.path().join("data"), "rehearsal", &models, &kept_frames());
    let jobs = data.expected.len();
    // More steps than other tests: the run must last through every event below.
    let spec = data.write_spec("spec.toml", RUN, |s| s.replace("steps = 3", "steps = 40"));
    let nanos = started.elapsed().subsec_nanos() ^ std::process::id();
    let mut farm = Rehearsal {
        pg,
        procs: vec![redis.proc],
        pki,
        aws,
        worker_token: format!("worker-{nanos:x}"),
        operator_token: format!("operator-{nanos:x}"),
        logs,
        started,
        dir: Some(dir),
        net,
    };
    farm.start_coordinator("c1");
    farm.start_coordinator("c2");
    for w in WORKERS {
        farm.start_worker(w);
    }
    for w in WORKERS {
        if let Err(e) = farm.proc(w).wait_for_line("acufarm worker: registered as", Duration::from_secs(90)) {
            farm.fail(&format!("{w} did not register: {e}"));
        }
    }
    let submit = farm.admin("c1", &["submit", spec.to_str().unwrap(), "--bundle", bundle("fc").to_str().unwrap()]);
    assert!(submit.status.success(), "submit: {}", String::from_utf8_lossy(&submit.stderr));
    farm.log(&format!("submitted {jobs} jobs over TLS from the test's seat"));
    farm.wait_status("c1", "the first renders", |s| count(s, "succeeded") >= 5);

    // 1. A partition longer than the lease, while w3 holds jobs.
    farm.wait_sql("w3 holding jobs", &farm.leased_by("w3"), |n| n > 0);
    farm.net.cut("w3");
    let cut = Instant::now();
    farm.log("cut w3's link");
    let lost = "SELECT count(*) FROM job_attempts WHERE worker = 'w3' AND outcome = 'lost'";
    let released = farm.wait_sql("w3's leases expiring", lost, |n| n > 0);
    farm.wait_sql(
        "w3's lost jobs finishing on other workers",
        "SELECT count(*) FROM jobs j JOIN job_attempts a ON a.job_id = j.id WHERE a.worker = 'w3' AND a.outcome = 'lost' AND NOT (j.state = 'succeeded' AND j.worker <> 'w3')",
        |n| n == 0,
    );
    let hold = Duration::from_secs(3 * LEASE_S);
    if cut.elapsed() < hold {
        std::thread::sleep(hold - cut.elapsed());
    }
    let partition = cut.elapsed();
    farm.net.restore("w3");
    farm.log(&format!("restored w3's link after {:.1} s; {released} of its jobs went to other workers", partition.as_secs_f64()));
    // Back on the network, w3 learns that its leases are gone: the coordinator refuses its late
    // completion as stale, or its next heartbeat says the leases are no longer held and it drops
    // the jobs without reporting them.
    let late = |log: &str| LATE.map(|needle| log.matches(needle).count());
    farm.poll("w3 learning that its leases were gone", Duration::from_millis(100), || match late(&farm.output_of("w3")) {
        counts if counts.iter().sum::<usize>() > 0 => Ok(()),
        _ => Err("none of its log lines says so".to_string()),
    });

    // 2. A rolling restart: each replica stops on SIGTERM and comes back while the other serves.
    for (node, other) in [("c1", "c2"), ("c2", "c1")] {
        let before = count(&farm.wait_status(other, "a status", |_| true), "succeeded");
        farm.proc(node).signal("TERM");
        match farm.proc(node).wait_exit(Duration::from_secs(60)) {
            Some(status) if status.success() => {}
            other => farm.fail(&format!("coordinator {node} did not stop cleanly on SIGTERM: {other:?}")),
        }
        farm.wait_status(other, &format!("renders through {other} while {node} is down"), |s| count(s, "succeeded") >= before + 4);
        farm.start_coordinator(node);
        assert_eq!(farm.readyz(node), 200, "{node} is ready after its restart");
        farm.log(&format!("restarted {node}; the workers went on through {other}"));
    }

    // 3. A drain: w2 finishes what it holds and leases nothing more.
    farm.wait_sql("w2 holding jobs", &farm.leased_by("w2"), |n| n > 0);
    farm.proc("w2").signal("TERM");
    let drain = Instant::now();
    match farm.proc("w2").wait_exit(GRACE) {
        Some(status) if status.success() => {}
        other => farm.fail(&format!("w2 did not drain within {GRACE:?}: {other:?}")),
    }
    let drained = drain.elapsed();
    assert!(farm.proc("w2").output().contains("drained, exiting"), "w2 did not say it drained");
    assert_eq!(farm.sql(&farm.leased_by("w2")), 0, "w2 left jobs leased");
    assert_eq!(farm.sql("SELECT count(*) FROM job_attempts WHERE worker = 'w2' AND outcome = 'lost'"), 0, "w2 abandoned jobs instead of finishing them");
    farm.log(&format!("w2 drained in {:.1} s", drained.as_secs_f64()));

    // The run completes: every input once, verified, no staging debris.
    let out = farm.admin("c1", &["status", RUN, "--json", "--wait", "--wait-timeout", "300"]);
    assert!(out.status.success(), "status --wait: {}", String::from_utf8_lossy(&out.stderr));
    let status = farm.status("c1").unwrap_or_else(|e| farm.fail(&e));
    let rows = check_finished(&data, RUN, &status, &|| farm.diag());
    let verify = farm.command(&Place::loopback(), &["verify", &data.output_url]).output().unwrap();
    assert!(verify.status.success(), "acufarm verify {}: {}", data.output_url, String::from_utf8_lossy(&verify.stderr));
    // The same check on the bucket sees a lost object.
    let gone = data.expected.iter().next().unwrap().clone();
    let output = data.output.clone();
    let removed = gone.clone();
    support::block_on(async move { output.delete(&removed).await }).unwrap();
    let verify = farm.command(&Place::loopback(), &["verify", &data.output_url]).output().unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(3), "verify after deleting {gone}: {report}");
    assert!(report.contains(&format!("missing   {gone}")), "{report}");
    let [stale, dropped, unreported] = late(&farm.output_of("w3"));
    let by_w3 = rows.iter().filter(|r| r["worker"].as_str().is_some_and(|w| w.starts_with("w3"))).count();
    eprintln!(
        "rehearsal figures: {jobs} jobs; partition {:.1} s (lease {LEASE_S} s); {released} jobs re-leased from the cut worker; \
         late reports of the cut worker: {stale} refused as stale by the coordinator, {dropped} leases it learned were taken back, {unreported} finished jobs it left unreported; coordinator restarts 2 (rolling), worker drains 1 ({:.1} s); \
         w3 rendered {by_w3} accepted outputs; {:.0} s in all",
        partition.as_secs_f64(),
        drained.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // Everything the test made goes: processes, then the namespaces and links.
    drop(backend);
    drop(farm);
    assert_eq!(Net::namespaces_of(&id), Vec::<String>::new(), "namespaces left behind");
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&leg), "the test's leg {leg} was left behind");
}
