//! The distributed farm end to end through the real binary: `acufarm coordinator` on a private
//! PostgreSQL cluster and a private Redis, `acufarm worker` processes rendering generated
//! AcuSim-layout datasets (64×64 PNGs) with the tiny fc bundle at `steps = 3`, and the admin
//! commands (`submit`, `status`, `resubmit`, …). Each scenario is a function of the storage
//! backend, so the filesystem and S3 (a loopback `moto_server`) get the same assertions.
//!
//! Each test starts a whole farm, so the tests take a file lock and run one at a time even when
//! nextest runs them in parallel processes. A failing test prints the tail of every process's
//! log and keeps the log folder.

#[allow(dead_code)] // each test binary uses a part of the shared harness
mod support;

use acufarm_proto::v1 as pb;
use acufarm_proto::worker_client::WorkerClient;
use acufarm_storage::Storage;
use bytes::Bytes;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::dataset::{self, Backend, Dataset, IMAGES, LABELS, kept_frames, png};
use support::services::{Moto, Postgres, Redis};
use support::{FAST, Farm, check_finished_run, count, counts_line};

const MODELS: [&str; 5] = ["M_Asher_N_HD", "F_Grace_N_HA", "M_Novak_S_BD", "F_Iris_F_HD", "M_Oskar_N_HA"];

/// How long a whole run may take before the test gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn temp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

// -------------------------------------------------------------------------------------------
// The harness itself, without a coordinator.

#[test]
fn harness_private_services_start_restart_flush_and_stop() {
    let _serial = support::serial();
    let logs = temp("acufarm-harness-");

    let pg = Postgres::start();
    assert_eq!(pg.psql("SELECT 1"), "1");
    pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (7)");
    let before = pg.pid().expect("postmaster.pid");
    pg.restart();
    let after = pg.pid().expect("postmaster.pid after restart");
    assert_ne!(before, after, "pg_ctl restart started a new postmaster");
    assert_eq!(pg.psql("SELECT x FROM t"), "7", "data survives a fast restart");
    assert!(pg.psql("SHOW fsync") == "on");
    assert_ne!(pg.port, 5432, "never the system cluster");

    let redis = Redis::start(logs.path());
    redis.cli(&["SET", "k", "v"]);
    assert_eq!(redis.cli(&["GET", "k"]), "v");
    redis.flushall();
    assert_eq!(redis.cli(&["DBSIZE"]), "0");
    assert_ne!(redis.port, 6379, "never the system Redis");

    // The dataset generator on both backends: same expected inputs, same bytes.
    let moto = Moto::start(logs.path());
    let s3 = Backend::S3(moto);
    for backend in [&Backend::Fs, &s3] {
        let dir = temp("acufarm-harness-data-");
        let d = Dataset::generate(backend, dir.path(), "harness", &MODELS[..2], &[1, 2, 30]);
        assert_eq!(d.expected.len(), 6);
        let listed = support::block_on({
            let input = d.input.clone();
            async move { input.list(IMAGES).await.unwrap() }
        });
        assert_eq!(listed.len(), 10, "kept frames plus frames 0 and 12 per model: {listed:?}");
        let rel = format!("{LABELS}/M_Asher_N_HD_0030.json");
        let got = support::block_on({
            let (input, rel) = (d.input.clone(), rel.clone());
            async move { input.get(&rel).await.unwrap() }
        });
        assert_eq!(got.as_ref(), d.input_bytes(&rel).as_slice());
        let spec = std::fs::read_to_string(d.write_spec("spec.toml", "harness-run", |s| s)).unwrap();
        assert!(spec.contains(&d.input_url) && spec.contains(&d.output_url) && spec.contains("steps = 3"), "{spec}");
        assert_eq!(d.staging_objects(), 0);
    }

    // Dropping stops the cluster and the children.
    let pid = pg.pid().unwrap();
    drop(pg);
    assert!(gone(pid), "postmaster {pid} still runs after drop");
    let redis_pid = redis.proc.pid();
    drop(redis);
    assert!(gone(redis_pid), "redis-server {redis_pid} still runs after drop");
}

/// Whether a process has ended (or is a zombie) within 10 s.
fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        if stat.is_empty() || stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with(['Z', 'X'])) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// -------------------------------------------------------------------------------------------
// Scenarios, each a function of the storage backend.

/// The worker's id from its "registered as <id> with <url>" line.
fn worker_id(farm: &mut Farm, name: &str) -> String {
    let line = farm.worker(name).wait_for_line("acufarm worker: registered as", Duration::from_secs(1)).unwrap();
    line.split("registered as ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or_default().to_string()
}

/// What the status answer says `name` holds (its presence record's `jobs_held`, refreshed by
/// heartbeats), for the log.
fn jobs_held(all: &Value, name: &str) -> Value {
    all["workers"].as_array().and_then(|ws| ws.iter().find(|w| w["name"] == name)).map(|w| w["jobs_held"].clone()).unwrap_or(Value::Null)
}

/// Sends SIGTERM to every live worker and checks each finishes its batch and exits 0.
fn stop_workers_gracefully(farm: &mut Farm) {
    let mut live = Vec::new();
    for (i, w) in farm.workers.iter_mut().enumerate() {
        if w.running() {
            w.signal("TERM");
            live.push(i);
        }
    }
    let mut bad = Vec::new();
    for i in live {
        let w = &mut farm.workers[i];
        match w.wait_exit(Duration::from_secs(60)) {
            Some(status) if status.success() => {}
            Some(status) => bad.push(format!("{} exited with {status} after SIGTERM", w.name)),
            None => bad.push(format!("{} still runs 60 s after SIGTERM", w.name)),
        }
    }
    if !bad.is_empty() {
        farm.fail(&bad.join("; "));
    }
}

/// Scenario 1: a coordinator and three workers (`--batch 4`) render a whole run; one worker is
/// killed with SIGKILL while it holds leases once at least 20 jobs succeeded. Its jobs are leased
/// again (attempt > 1) and completed by the others; nothing is lost or duplicated.
fn distributed_run_survives_a_killed_worker(backend: Backend, models: &[&str], frames: &[u32]) {
    let t0 = Instant::now();
    let dir = temp("acufarm-dist-");
    let data = Dataset::generate(&backend, dir.path(), "dist", models, frames);
    let n = data.expected.len();
    let run = format!("dist-{}", backend.name());
    let spec = data.write_spec("spec.toml", &run, |s| s);
    let mut farm = Farm::start(backend.env(), FAST);
    // Workers first (a bundle loads in seconds, a batch renders in a fraction of one), so all
    // three take part from the first job.
    farm.start_workers(&["w1", "w2", "w3"], 4);
    let submitted = farm.submit(&spec);
    assert!(submitted.contains(&format!("submitted run {run}")), "{submitted}");
    let victim = "w2";
    let victim_id = worker_id(&mut farm, victim);
    // Every worker leases its next batch while it renders one, so with jobs queued and a dozen
    // leased each worker holds leases; the attempts in the manifest prove it afterwards.
    let (at_kill, all) = farm.wait_until_all(&run, "20 jobs succeeded with 8 or more leased", RUN_TIMEOUT, |s, _| {
        count(s, "succeeded") >= 20 && count(s, "leased") >= 8 && count(s, "queued") > 0
    });
    farm.worker(victim).kill9();
    farm.log(&format!("killed {victim} ({victim_id}, jobs_held {}) with SIGKILL at {}", jobs_held(&all, victim), counts_line(&at_kill)));
    assert!(count(&at_kill, "succeeded") < n as u64, "the run finished before a worker could be killed");

    let status = farm.wait_done(&run, RUN_TIMEOUT);
    let rows = check_finished_run(&farm, &data, &run, &status);
    let shards = status["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), models.len(), "one shard per model: {status}");
    assert!(shards.iter().all(|s| s["state"] == "succeeded"), "every shard succeeded: {status}");
    let again: Vec<&Value> = rows.iter().filter(|r| r["attempt"].as_i64() > Some(1)).collect();
    assert!(!again.is_empty(), "no job was leased again after {victim} was killed holding leases");
    for row in &again {
        let by = row["worker"].as_str().unwrap_or_default();
        assert!(by != victim && (victim_id.is_empty() || by != victim_id), "a re-leased job was completed by the killed worker: {row}");
    }
    let by_victim = rows.iter().filter(|r| r["worker"] == victim || r["worker"] == victim_id.as_str()).count();
    farm.log(&format!("{n} jobs done; {} re-leased after the kill; {by_victim} completed by {victim} before it died", again.len()));
    stop_workers_gracefully(&mut farm);
    eprintln!("distributed run on {} ({n} jobs): {:.1} s", backend.name(), t0.elapsed().as_secs_f64());
}

/// Scenario 4: poison inputs fail permanently after one attempt with a message naming the file;
/// everything else succeeds; after fixing the files and the id grammar, `resubmit --failed
/// --spec FIXED` completes them.
fn poison_inputs_fail_permanently_until_fixed(backend: Backend) {
    let t0 = Instant::now();
    let dir = temp("acufarm-poison-");
    let frames: Vec<u32> = (1..=11).collect();
    let mut data = Dataset::generate(&backend, dir.path(), "poison", &MODELS[..2], &frames);
    let corrupt = format!("{IMAGES}/M_Asher_N_HD_0001.png");
    let broken = format!("{LABELS}/F_Grace_N_HA_0002.json");
    let odd_stem = "scan-M-Kato-N-HD-0003";
    let odd = format!("{IMAGES}/{odd_stem}.png");
    data.write_inputs(vec![
        (corrupt.clone(), b"\x89PNG\r\n\x1a\nnot an image".to_vec()),
        (broken.clone(), b"{\"label\": [".to_vec()),
        (odd.clone(), png(3)),
        (format!("{LABELS}/{odd_stem}.json"), dataset::label(3).into_bytes()),
    ]);
    data.expected.insert(odd.clone());
    let n = data.expected.len() as u64;
    let run = format!("poison-{}", backend.name());
    // With the QA gate on: the generated inputs hold no face, so every output passes unmeasured and
    // its check travels worker → coordinator → manifest row.
    let qa = "\n[qa]\nmax_drift_px = 12.0\nmin_change = 1.0\n";
    let spec = data.write_spec("spec.toml", &run, |s| format!("{s}{qa}"));

    let mut farm = Farm::start(backend.env(), FAST);
    farm.start_workers(&["w1", "w2"], 4);
    farm.submit(&spec);
    let status = farm.wait_done(&run, RUN_TIMEOUT);
    assert_eq!((count(&status, "succeeded"), count(&status, "failed")), (n - 3, 3), "{status}");
    assert_eq!((status["qa"]["checked"].as_u64(), status["qa"]["failed"].as_u64()), (Some(n - 3), Some(0)), "status shows the QA summary: {status}");
    let failures = status["failures"].as_array().cloned().unwrap_or_default();
    let mut poisoned_shards = BTreeSet::new();
    for (what, needle) in [("corrupt PNG", corrupt.as_str()), ("broken label", broken.as_str()), ("unparseable id", odd_stem)] {
        let failure = failures
            .iter()
            .find(|f| f["message"].as_str().is_some_and(|m| m.contains(needle)))
            .unwrap_or_else(|| farm.fail(&format!("no failure names the {what} {needle}: {}", status["failures"])));
        assert_eq!(failure["class"], "permanent", "{what}: {failure}");
        assert_eq!(failure["attempt"], 1, "{what} failed after one attempt: {failure}");
        poisoned_shards.insert(failure["shard"].as_str().expect("failure shard").to_string());
    }
    assert!(poisoned_shards.contains("M_Asher_N_HD") && poisoned_shards.contains("F_Grace_N_HA"), "{poisoned_shards:?}");
    for shard in status["shards"].as_array().expect("shards") {
        let key = shard["key"].as_str().unwrap();
        let want = if poisoned_shards.contains(key) { "failed" } else { "succeeded" };
        assert_eq!(shard["state"], want, "shard {key}: {status}");
    }
    let partial = support::manifest_rows(&data.output_local());
    assert_eq!(partial.len() as u64, n - 3, "the manifest lists the succeeded jobs only");
    for row in &partial {
        // The generated blobs hold no face (or one the landmark model rejects).
        let check = &row["qa"][0];
        assert_eq!(check["verdict"], "unmeasured", "{row}");
        assert!(check["reason"].as_str().is_some_and(|r| r.starts_with("source: ")), "{row}");
        assert!(row["timings"]["qa"].as_f64().is_some(), "{row}");
    }
    farm.log(&format!("3 poison inputs failed permanently: {}", serde_json::to_string(&failures).unwrap()));

    // Fix the files and the id grammar, then resubmit the failed jobs with the fixed spec.
    data.write_inputs(vec![(corrupt.clone(), png(1)), (broken.clone(), dataset::label(2).into_bytes())]);
    let scan = r"^scan-(?P<gender>[MF])-(?P<name>[A-Za-z]+)-(?P<size>[FNS])-(?P<hair>[A-Za-z0-9]+)-(?P<frame>\d+)$";
    let patterns =
        format!("patterns = [\n  '{}',\n  '{}',\n  '{scan}',\n]", acufarm_core::sample_id::UNDERSCORE_PATTERN, acufarm_core::sample_id::DOTTED_PATTERN);
    let fixed = data.write_spec("fixed.toml", &run, |s| {
        assert!(s.contains("patterns = []"));
        format!("{}{qa}", s.replace("patterns = []", &patterns))
    });
    let fixed = fixed.display().to_string();
    let requeued = farm.admin_ok(&["resubmit", &run, "--failed", "--spec", &fixed]);
    farm.log(&format!("resubmit: {}", requeued.trim()));
    assert!(requeued.contains("requeued 3"), "{requeued}");
    let status = farm.wait_done(&run, RUN_TIMEOUT);
    let rows = check_finished_run(&farm, &data, &run, &status);
    assert!(status["shards"].as_array().unwrap().iter().all(|s| s["state"] == "succeeded"), "{status}");
    let row = rows.iter().find(|r| r["output"]["path"] == odd.as_str()).unwrap();
    farm.log(&format!("the odd name rendered as sample {}", row["sample_id"]));
    stop_workers_gracefully(&mut farm);
    eprintln!("poison scenario on {} ({n} jobs): {:.1} s", backend.name(), t0.elapsed().as_secs_f64());
}

#[test]
fn fs_distributed_run_of_220_jobs_survives_a_killed_worker() {
    let _serial = support::serial();
    distributed_run_survives_a_killed_worker(Backend::Fs, &MODELS, &kept_frames());
}

#[test]
fn s3_distributed_run_survives_a_killed_worker() {
    let _serial = support::serial();
    let logs = temp("acufarm-moto-");
    let backend = Backend::S3(Moto::start(logs.path()));
    distributed_run_survives_a_killed_worker(backend, &MODELS[..3], &kept_frames()[..30]);
}

#[test]
fn fs_poison_inputs_fail_permanently_until_fixed_and_resubmitted() {
    let _serial = support::serial();
    poison_inputs_fail_permanently_until_fixed(Backend::Fs);
}

#[test]
fn s3_poison_inputs_fail_permanently_until_fixed_and_resubmitted() {
    let _serial = support::serial();
    let logs = temp("acufarm-moto-");
    let backend = Backend::S3(Moto::start(logs.path()));
    poison_inputs_fail_permanently_until_fixed(backend);
}

#[derive(Debug, Clone, Copy)]
enum Disruption {
    /// kill -9 of the coordinator, then a new one on the same port.
    CoordinatorKilled,
    /// `redis-cli FLUSHALL`: presence, rate counters and any queue hints are gone.
    RedisFlushed,
    /// `pg_ctl restart -m fast`: every database connection is cut.
    PostgresRestarted,
}

/// Scenario 2: one farm serves three small runs; each suffers one disruption mid-run and still
/// completes with nothing lost or duplicated.
fn runs_survive_disruptions(backend: Backend) {
    let t0 = Instant::now();
    let mut farm = Farm::start(backend.env(), FAST);
    farm.start_workers(&["w1", "w2"], 4);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| temp("acufarm-disrupt-")).collect();
    let mut problems = Vec::new();
    for (i, disruption) in [Disruption::CoordinatorKilled, Disruption::RedisFlushed, Disruption::PostgresRestarted].into_iter().enumerate() {
        let t = Instant::now();
        // 2 models × 33 views = 66 jobs: a few seconds of work for two workers.
        let data = Dataset::generate(&backend, dirs[i].path(), &format!("disrupt{i}"), &MODELS[i..i + 2], &kept_frames()[..33]);
        let n = data.expected.len() as u64;
        let run = format!("disrupt-{}-{i}", backend.name());
        let spec = data.write_spec("spec.toml", &run, |s| s);
        farm.submit(&spec);
        let before = farm.wait_until(&run, "8 jobs succeeded", RUN_TIMEOUT, |s| count(s, "succeeded") >= 8);
        assert!(count(&before, "succeeded") < n, "run {run} finished before it could be disrupted");
        farm.log(&format!("{disruption:?} at {}", counts_line(&before)));
        match disruption {
            Disruption::CoordinatorKilled => {
                farm.kill_coordinator();
                std::thread::sleep(Duration::from_secs(1));
                farm.start_coordinator();
            }
            Disruption::RedisFlushed => farm.redis.flushall(),
            Disruption::PostgresRestarted => farm.pg.restart(),
        }
        let status = farm.wait_done(&run, RUN_TIMEOUT);
        check_finished_run(&farm, &data, &run, &status);
        for w in farm.workers.iter_mut() {
            assert!(w.running(), "worker {} died after {disruption:?}:\n{}", w.name, w.tail(40));
        }
        farm.log(&format!("run {run} ({n} jobs) survived {disruption:?} in {:.1} s", t.elapsed().as_secs_f64()));
        if let Disruption::RedisFlushed = disruption {
            // The workers' presence records went with the flush; heartbeats are answered
            // `register_again` and the workers register anew, so status lists them again.
            let deadline = Instant::now() + Duration::from_secs(3 * FAST.heartbeat_s as u64 + 5);
            let listed = loop {
                let all = farm.status_all().unwrap_or_else(|e| farm.fail(&e));
                let names: BTreeSet<String> = all["workers"].as_array().into_iter().flatten().filter_map(|w| w["name"].as_str().map(String::from)).collect();
                if (names.contains("w1") && names.contains("w2") && all["redis_ok"] == true) || Instant::now() > deadline {
                    break (names, all["redis_ok"].clone());
                }
                std::thread::sleep(Duration::from_millis(250));
            };
            if !(listed.0.contains("w1") && listed.0.contains("w2")) {
                problems.push(format!("after FLUSHALL the live workers were never listed again (status lists {:?}, redis_ok {})", listed.0, listed.1));
            }
        }
    }
    // The farm still knows every run after all of it.
    let all = farm.status_all().unwrap_or_else(|e| farm.fail(&e));
    assert_eq!(all["runs"].as_array().map(|r| r.len()), Some(3), "{all}");
    stop_workers_gracefully(&mut farm);
    if !problems.is_empty() {
        farm.fail(&problems.join("\n"));
    }
    eprintln!("disruptions on {}: {:.1} s", backend.name(), t0.elapsed().as_secs_f64());
}

#[test]
fn fs_runs_survive_coordinator_kill_redis_flush_and_postgres_restart() {
    let _serial = support::serial();
    runs_survive_disruptions(Backend::Fs);
}

// -------------------------------------------------------------------------------------------
// The protocol driven directly: a late completion from an expired lease is fenced off.

fn req<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    request.metadata_mut().insert(acufarm_proto::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    request
}

#[test]
fn late_completion_from_an_expired_lease_is_rejected() {
    let _serial = support::serial();
    let t0 = Instant::now();
    let dir = temp("acufarm-stale-");
    let data = Dataset::generate(&Backend::Fs, dir.path(), "stale", &MODELS[..1], &[1, 2, 3, 4, 5, 6]);
    let n = data.expected.len() as u64;
    let run = "stale-lease";
    let spec = data.write_spec("spec.toml", run, |s| s);
    let mut farm = Farm::start(Vec::new(), FAST);
    farm.submit(&spec);
    let token = farm.token.clone();
    let url = farm.url();
    let bundle_sha = acufarm_core::manifest::sha256_file(&support::bundle("fc").join("bundle.toml")).unwrap();

    let (job, a_attempt, b_attempt, stale_detail) = support::block_on(async {
        let mut client = WorkerClient::connect(url.clone()).await.expect("connect to the coordinator");
        let register = |name: &str| pb::RegisterRequest {
            name: name.to_string(),
            hostname: "test".into(),
            execution_providers: vec!["cpu".into()],
            bundle_name: "tiny-fc".into(),
            bundle_sha256: bundle_sha.clone(),
            max_batch: 1,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        let a = client.register(req(&token, register("proto-a"))).await.expect("register A").into_inner();
        let b = client.register(req(&token, register("proto-b"))).await.expect("register B").into_inner();
        assert_ne!(a.worker_id, b.worker_id);
        assert_eq!(a.lease_seconds, FAST.lease_s, "{a:?}");

        // A leases one job and goes silent (no heartbeat).
        let lease = client
            .lease(req(&token, pb::LeaseRequest { worker_id: a.worker_id.clone(), bundle_sha256: bundle_sha.clone(), max_jobs: 1, ..Default::default() }))
            .await
            .expect("lease as A")
            .into_inner();
        assert_eq!(lease.jobs.len(), 1, "{lease:?}");
        let job = lease.jobs[0].clone();
        let ctx = lease.runs.iter().find(|r| r.run_id == job.run_id).expect("the lease names the job's run").clone();
        assert_eq!(ctx.name, run);
        // A renders "something" and stages it where the lease says.
        let output = Storage::open(&ctx.output_url).unwrap();
        let staged = Bytes::from_static(b"late output of an expired lease");
        output.put(&job.staging_key, staged.clone()).await.unwrap();
        let sha = acufarm_core::manifest::sha256_bytes(&staged);

        // Past the lease: the reaper requeues the job; B gets it with the next attempt.
        let deadline = Instant::now() + Duration::from_secs(30);
        let b_job = loop {
            let leased = client
                .lease(req(&token, pb::LeaseRequest { worker_id: b.worker_id.clone(), bundle_sha256: bundle_sha.clone(), max_jobs: 100, ..Default::default() }))
                .await
                .expect("lease as B")
                .into_inner();
            if let Some(j) = leased.jobs.iter().find(|j| j.job_id == job.job_id) {
                break j.clone();
            }
            assert!(Instant::now() < deadline, "job {} was not requeued after A's lease expired", job.job_id);
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(b_job.attempt, job.attempt + 1, "a re-leased job carries the next attempt");

        // A's heartbeat and completion with its old attempt change nothing.
        let hb = client
            .heartbeat(req(
                &token,
                pb::HeartbeatRequest { worker_id: a.worker_id.clone(), held: vec![pb::JobAttempt { job_id: job.job_id, attempt: job.attempt }] },
            ))
            .await
            .expect("heartbeat as A")
            .into_inner();
        assert!(hb.kept.is_empty(), "an expired lease was extended: {hb:?}");
        let done = client
            .complete(req(
                &token,
                pb::CompleteRequest {
                    worker_id: a.worker_id.clone(),
                    worker_name: String::new(),
                    bundle_name: "tiny-fc".into(),
                    completions: vec![pb::Completion {
                        job_id: job.job_id,
                        attempt: job.attempt,
                        staging_key: job.staging_key.clone(),
                        sha256: sha,
                        execution_provider: "cpu".into(),
                        ..Default::default()
                    }],
                },
            ))
            .await
            .expect("complete as A")
            .into_inner();
        assert_eq!(done.outcomes.len(), 1, "{done:?}");
        let outcome = &done.outcomes[0];
        assert_eq!((outcome.job_id, outcome.outcome()), (job.job_id, pb::Outcome::Stale), "{done:?}");
        (job.clone(), job.attempt, b_job.attempt, outcome.detail.clone())
    });
    let sample = job.sample_id.clone();
    let job = job.job_id;
    farm.log(&format!("job {job} ({sample}): A's late completion of attempt {a_attempt} was STALE ({stale_detail}); B holds attempt {b_attempt}"));
    let status = farm.status(run);
    assert_eq!(count(&status, "succeeded"), 0, "the stale completion succeeded a job: {status}");

    // B goes silent too; a real worker finishes the run once B's leases expire.
    farm.start_worker("w1", 4);
    let status = farm.wait_done(run, RUN_TIMEOUT);
    let rows = check_finished_run(&farm, &data, run, &status);
    let job_rows: Vec<&Value> = rows.iter().filter(|r| r["sample_id"] == sample.as_str()).collect();
    assert_eq!(job_rows.len(), 1, "job {job} ({sample}) needs exactly one manifest row: {job_rows:?}");
    let attempt = job_rows[0]["attempt"].as_i64().unwrap();
    assert!(attempt >= b_attempt as i64, "job {job} was recorded with attempt {attempt}, before B's attempt {b_attempt}");
    farm.log(&format!("job {job} recorded once, with attempt {attempt} by {}", job_rows[0]["worker"]));
    stop_workers_gracefully(&mut farm);
    eprintln!("stale completion: {n} jobs, {:.1} s", t0.elapsed().as_secs_f64());
}

// -------------------------------------------------------------------------------------------
// Who may work: the token and the bundle.

#[test]
fn wrong_token_is_refused_and_another_bundle_gets_no_jobs() {
    let _serial = support::serial();
    let t0 = Instant::now();
    let dir = temp("acufarm-auth-");
    let data = Dataset::generate(&Backend::Fs, dir.path(), "auth", &MODELS[..1], &[1, 2, 3, 4, 5, 6]);
    let run = "auth";
    let spec = data.write_spec("spec.toml", run, |s| s);
    let mut farm = Farm::start(Vec::new(), FAST);
    farm.submit(&spec);

    let mut intruder = farm.spawn_worker("intruder", "fc", 4, "not-the-token");
    let exit = intruder.wait_exit(Duration::from_secs(30));
    let said = intruder.output();
    assert!(exit.is_some_and(|s| !s.success()), "a worker with a wrong token kept running or exited 0 ({exit:?}):\n{said}");
    assert!(said.to_lowercase().contains("token"), "the refusal does not name the token:\n{said}");
    farm.log(&format!("wrong-token worker: {exit:?}: {}", said.lines().filter(|l| l.to_lowercase().contains("token")).collect::<Vec<_>>().join(" | ")));
    let out = farm.admin_with_token(&["status", "--json"], "not-the-token");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "status with a wrong token succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.to_lowercase().contains("token"), "status with a wrong token does not say so: {stderr}");

    // A worker holding another bundle gets no jobs of this run.
    farm.add_worker("plain", "plain", 4);
    let presence = |all: &Value| all["workers"].as_array().and_then(|ws| ws.iter().find(|w| w["name"] == "plain")).cloned();
    std::thread::sleep(Duration::from_secs(4));
    let (status, all) = farm.try_status_all(run).unwrap_or_else(|e| farm.fail(&e));
    assert_eq!((count(&status, "leased"), count(&status, "succeeded")), (0, 0), "the plain worker got jobs: {status}");
    assert!(farm.worker("plain").running(), "the plain worker exited:\n{}", farm.worker("plain").tail(20));
    let plain = presence(&all).unwrap_or_else(|| farm.fail(&format!("status lists no worker `plain`: {all}")));
    assert_ne!(plain["bundle_sha256"], status["bundle_sha256"], "the plain worker holds the run's bundle? {plain} {status}");
    farm.worker("plain").signal("TERM");
    let plain_exit = farm.worker("plain").wait_exit(Duration::from_secs(30));
    assert!(plain_exit.is_some_and(|s| s.success()), "the plain worker did not exit 0 on SIGTERM: {plain_exit:?}");

    farm.start_worker("fc", 4);
    let status = farm.wait_done(run, RUN_TIMEOUT);
    check_finished_run(&farm, &data, run, &status);
    stop_workers_gracefully(&mut farm);
    eprintln!("token and bundle: {:.1} s", t0.elapsed().as_secs_f64());
}

// -------------------------------------------------------------------------------------------
// Heartbeats keep a worker's leases (and its presence) alive from its first second.

/// A worker heartbeats every `heartbeat_seconds` the coordinator named at registration, from
/// the start: with `ACUFARM_LEASE_SECONDS=3` a first heartbeat only after the worker's built-in
/// default interval would let every lease held longer than 3 s expire in the meantime. Seen
/// through the presence record, which each heartbeat refreshes (`last_seen_unix_ms`).
#[test]
fn worker_heartbeats_at_the_coordinators_pace_from_the_start() {
    let _serial = support::serial();
    let mut farm = Farm::start(Vec::new(), FAST);
    farm.start_worker("w1", 4);
    let last_seen = |farm: &Farm| {
        let all = farm.status_all().unwrap_or_else(|e| farm.fail(&e));
        all["workers"].as_array().and_then(|ws| ws.iter().find(|w| w["name"] == "w1")).and_then(|w| w["last_seen_unix_ms"].as_i64())
    };
    let registered = last_seen(&farm).unwrap_or_else(|| farm.fail("status lists no worker w1"));
    let wait = Duration::from_secs(3 * FAST.heartbeat_s as u64 + 1);
    std::thread::sleep(wait);
    let later = last_seen(&farm).unwrap_or_else(|| farm.fail("status lost worker w1"));
    if later - registered < 1000 {
        farm.fail(&format!(
            "worker w1 sent no heartbeat in the {wait:?} after registering although the coordinator asked for one every {} s \
             (lease {} s): its presence still says last_seen_unix_ms {later} (at registration {registered})",
            FAST.heartbeat_s, FAST.lease_s
        ));
    }
    stop_workers_gracefully(&mut farm);
}

// -------------------------------------------------------------------------------------------
// Faults leave no debris, and a finished manifest is written once.

/// Whether `path` names one of object_store's temporary upload files (`key#N`).
fn temporary(path: &std::path::Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(acufarm_storage::is_temporary)
}

/// `(inode, modification time)` of a file: a rewrite replaces the file, so both change.
fn stamp(path: &std::path::Path) -> (u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

/// Workers killed in the middle of an upload, and the coordinator killed in the middle of a batch
/// commit, leave files behind: object_store's temporary `key#N` (which its listings hide) in
/// staging, the coordinator's label copy in progress. Each kill is timed to land mid-write (the
/// process is frozen and killed while such a file is open). Once the run is finished nothing is
/// left under the output root that the manifest does not list, and `acufarm verify` passes. A
/// coordinator restarted afterwards leaves the finished manifest as it was.
#[test]
fn fs_faults_leave_no_debris_and_a_restart_does_not_rewrite_the_manifest() {
    let _serial = support::serial();
    let t0 = Instant::now();
    let dir = temp("acufarm-debris-");
    let data = Dataset::generate(&Backend::Fs, dir.path(), "debris", &MODELS, &kept_frames());
    let n = data.expected.len() as u64;
    let run = "debris-fs";
    let spec = data.write_spec("spec.toml", run, |s| s);
    let out = data.output_local();
    let staging = out.join("_staging");
    let mut farm = Farm::start(Vec::new(), FAST);
    farm.start_workers(&["w1", "w2"], 4);
    farm.submit(&spec);
    farm.wait_until(run, "4 jobs succeeded", RUN_TIMEOUT, |s| count(s, "succeeded") >= 4);

    // The coordinator copies each committed output's label; kill it while a copy is open.
    // (It writes nothing else under staging; the folders it fsyncs are not files.)
    let mut left = Vec::new();
    let labels = out.join(LABELS);
    let coordinator = farm.coordinators.last_mut().expect("a coordinator");
    let hit = coordinator
        .kill9_while_open(|path| (path.starts_with(&labels) && temporary(path)) || (path.starts_with(&staging) && path.is_file()), Duration::from_secs(30));
    let hit = hit.unwrap_or_else(|| farm.fail("the coordinator had no label copy open within 30 s"));
    assert!(hit.starts_with(&staging), "the label copy in progress lay outside staging: {}", hit.display());
    assert!(hit.exists(), "the coordinator's kill left no {}", hit.display());
    farm.log(&format!("killed the coordinator mid-commit; it left {}", hit.display()));
    left.push(hit);
    farm.start_coordinator();

    // Both workers, each in the middle of an upload; their replacements load while the other works.
    for name in ["w1", "w2"] {
        let hit = farm.worker(name).kill9_while_open(|path| path.starts_with(&staging) && temporary(path), Duration::from_secs(30));
        let hit = hit.unwrap_or_else(|| farm.fail(&format!("{name} had no staging upload open within 30 s")));
        assert!(hit.exists(), "the kill of {name} left no {}", hit.display());
        farm.log(&format!("killed {name} mid-upload; it left {}", hit.display()));
        left.push(hit);
        let again = farm.spawn_worker(&format!("{name}-again"), "fc", 4, &farm.token);
        farm.workers.push(again);
    }
    assert!(count(&farm.status(run), "queued") > 0, "the run finished before the faults were done; give it more jobs");

    let status = farm.wait_done(run, RUN_TIMEOUT);
    // One row per input, byte-identical labels, no file the manifest does not list (temporary
    // files included), no staging object, verify passes.
    check_finished_run(&farm, &data, run, &status);
    for path in &left {
        assert!(!path.exists(), "{} survived the run's staging cleanup", path.display());
    }
    farm.log(&format!("{n} jobs done; the {} files the kills left are gone", left.len()));

    // A restarted coordinator finds the manifest written for the run's final counts and leaves it.
    let files = ["manifest.jsonl", "manifest.summary.json", "train/metadata.jsonl"].map(|rel| out.join(rel));
    let before = files.each_ref().map(|f| stamp(f));
    farm.kill_coordinator();
    farm.start_coordinator();
    let line = farm.coordinators.last_mut().unwrap().wait_for_line("not rewritten", RUN_TIMEOUT).unwrap_or_else(|e| farm.fail(&e));
    assert!(line.contains(run), "{line}");
    // `status --wait` asks for the manifest too: it is current, so nothing is written.
    let status = farm.wait_done(run, RUN_TIMEOUT);
    assert_eq!(count(&status, "succeeded"), n);
    assert_eq!(files.each_ref().map(|f| stamp(f)), before, "the unchanged manifest was written again");
    let said = farm.coordinators.last().unwrap().output();
    assert!(!said.contains("run finished; manifest written"), "the restarted coordinator wrote the manifest:\n{said}");
    stop_workers_gracefully(&mut farm);
    eprintln!("debris scenario ({n} jobs): {:.1} s", t0.elapsed().as_secs_f64());
}

/// Registers a worker over the protocol that leases up to `max_jobs` jobs and then goes silent
/// (no heartbeat, no report), as a worker does that dies right after its lease call; returns the
/// (job id, attempt) pairs it was given.
fn lease_and_go_silent(farm: &Farm, name: &str, max_jobs: u32) -> Vec<(i64, i32)> {
    let token = farm.token.clone();
    let url = farm.url();
    let bundle_sha = acufarm_core::manifest::sha256_file(&support::bundle("fc").join("bundle.toml")).unwrap();
    support::block_on(async move {
        let mut client = WorkerClient::connect(url).await.expect("connect to the coordinator");
        let register = pb::RegisterRequest {
            name: name.to_string(),
            hostname: "test".into(),
            execution_providers: vec!["cpu".into()],
            bundle_name: "tiny-fc".into(),
            bundle_sha256: bundle_sha.clone(),
            max_batch: max_jobs,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        let worker = client.register(req(&token, register)).await.expect("register").into_inner();
        let lease = client
            .lease(req(&token, pb::LeaseRequest { worker_id: worker.worker_id, bundle_sha256: bundle_sha, max_jobs, ..Default::default() }))
            .await
            .expect("lease")
            .into_inner();
        lease.jobs.iter().map(|job| (job.job_id, job.attempt)).collect()
    })
}

/// `[retry] max_lost = 1` in a run spec is the reaper's cap for that run: a job whose lease is
/// lost once (its worker killed with SIGKILL while holding it) is queued again; lost a second
/// time (the next worker to lease it dies too) it fails, naming the cap. The other jobs finish.
#[test]
fn per_run_max_lost_is_honoured_by_the_farms_reaper() {
    let _serial = support::serial();
    let dir = temp("acufarm-maxlost-");
    let data = Dataset::generate(&Backend::Fs, dir.path(), "maxlost", &MODELS[..1], &kept_frames());
    let n = data.expected.len() as u64;
    let run = "max-lost-one";
    let spec = data.write_spec("spec.toml", run, |s| {
        assert!(s.contains("max_lost = 5"), "examples/acusim.toml changed shape");
        s.replace("max_lost = 5", "max_lost = 1")
    });
    let mut farm = Farm::start(Vec::new(), FAST);
    farm.start_worker("doomed", 4);
    farm.submit(&spec);
    // The worker holds the batch it renders and the next one it fetched.
    let at_kill = farm.wait_until(run, "5 jobs leased", RUN_TIMEOUT, |s| count(s, "leased") >= 5);
    farm.worker("doomed").kill9();
    farm.log(&format!("killed the worker holding leases at {}", counts_line(&at_kill)));
    // Its leases expire and the reaper queues those jobs again (first loss: within the cap).
    let requeued = farm.wait_until(run, "the killed worker's leases taken back", RUN_TIMEOUT, |s| count(s, "leased") == 0);
    assert_eq!(count(&requeued, "failed"), 0, "one lost lease is within max_lost = 1: {requeued}");

    // The next worker leases everything queued and dies as well.
    let leased = lease_and_go_silent(&farm, "silent", 1000);
    let lost_twice: BTreeSet<i64> = leased.iter().filter(|(_, attempt)| *attempt == 2).map(|(job, _)| *job).collect();
    assert!(!lost_twice.is_empty(), "none of the jobs the killed worker held was leased again: {leased:?}");
    let after = farm.wait_until(run, "the silent worker's leases taken back", RUN_TIMEOUT, |s| count(s, "leased") == 0);
    farm.log(&format!("{} jobs lost their lease twice: {}", lost_twice.len(), counts_line(&after)));

    farm.start_worker("healthy", 4);
    let status = farm.wait_done(run, RUN_TIMEOUT);
    let k = lost_twice.len() as u64;
    assert_eq!((count(&status, "succeeded"), count(&status, "failed")), (n - k, k), "{status}");
    let failures = status["failures"].as_array().cloned().unwrap_or_default();
    let failed: BTreeSet<i64> = failures.iter().filter_map(|f| f["job_id"].as_i64()).collect();
    assert_eq!(failed, lost_twice, "exactly the jobs lost twice failed: {failures:?}");
    for failure in &failures {
        assert_eq!(failure["class"], "retryable", "{failure}");
        assert!(failure["message"].as_str().is_some_and(|m| m.contains("lost its lease 2 times, more than the 1 allowed")), "{failure}");
    }
    let rows = support::manifest_rows(&data.output_local());
    assert_eq!(rows.len() as u64, n - k, "the manifest lists the succeeded jobs");
    stop_workers_gracefully(&mut farm);
}
