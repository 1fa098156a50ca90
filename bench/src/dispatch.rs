//! Coordinator dispatch throughput: the real [`Coordinator`] over PostgreSQL, in this process,
//! driven over loopback gRPC by simulated workers (tasks of this process, one gRPC channel each).
//! No pipeline: a worker leases a batch, writes a few bytes at each job's staging key in the
//! run's output storage (as a real worker uploads its render), and completes the batch in one call
//! (the coordinator then moves every staged object to its final key and records the batch in one
//! transaction). Reports jobs/s and lease / complete latency per job count.
//!
//! Each size runs in a fresh database `acufarm_bench_<pid>` created on the server named by
//! `--database-url` and dropped afterwards. A benchmark harness only: nothing in a real run
//! reaches it. Driven by bench/dispatch.sh.

#[allow(dead_code)] // each benchmark uses a part of it
#[path = "http1.rs"]
mod http1;

use acufarm_coordinator::store::{NewJob, NewRun};
use acufarm_coordinator::{Config, Coordinator, PgStore, Store};
use acufarm_core::{JobParams, JobSpec, PromptCategory};
use acufarm_proto::v1 as pb;
use acufarm_proto::worker_client::WorkerClient;
use acufarm_storage::Storage;
use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use sqlx::Connection;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

// The same allocator as the `acufarm` binary, so the coordinator runs as it does in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "acufarm-bench-token";
const BUNDLE_SHA256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RUN_NAME: &str = "dispatch-bench";
/// What a simulated worker "renders": a few bytes, uploaded to the staging key.
const STAGED_BYTES: &[u8] = b"acufarm dispatch bench\n";
/// Staging uploads a simulated worker has in flight at once.
const STAGE_CONCURRENCY: usize = 8;

#[derive(Parser, Clone)]
#[command(about = "Coordinator dispatch throughput over loopback gRPC and PostgreSQL (benchmark harness)")]
struct Args {
    /// Job counts to run, each in a fresh database: repeat the flag or give a list (10000,100000).
    #[arg(long = "jobs", value_delimiter = ',', default_values_t = [10_000u64])]
    jobs: Vec<u64>,
    /// Simulated workers (tasks, one gRPC channel each).
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Jobs per Lease call (the coordinator caps it at 1024); each batch is one Complete call.
    #[arg(long, default_value_t = 256)]
    batch: u32,
    /// Server to create the scratch database on (trust auth or a password in the URL).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Redis for the coordinator's presence/events/counters; empty runs it without Redis.
    #[arg(long, default_value = "")]
    redis_url: String,
    /// Tokio worker threads of this process, which the coordinator and the simulated workers share
    /// (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where the run's input and output storage roots (file://) are created, in a fresh temporary
    /// folder (default: the system temp dir).
    #[arg(long)]
    storage_dir: Option<std::path::PathBuf>,
    /// Also wait for the reaper to write the finished run's manifest and report how long it took.
    #[arg(long)]
    manifest: bool,
    /// Print one JSON line per size after the table line.
    #[arg(long)]
    json: bool,
    /// Run `ANALYZE jobs` after the insert (timed apart), as autovacuum would do some time after a
    /// big insert; the coordinator itself never analyzes. Off by default.
    #[arg(long)]
    analyze: bool,
    /// The coordinator's reap_interval_seconds (its reaper also runs the finish check of touched
    /// runs); 5 is the production default.
    #[arg(long, default_value_t = Config::default().reap_interval_seconds)]
    reap_interval: u64,
    /// Print progress (jobs done, rate over the last interval) to stderr every this many seconds;
    /// 0: none.
    #[arg(long, default_value_t = 0)]
    progress: u64,
    /// Set from the server's postmaster.pid when it can be read (for the CPU split).
    #[arg(skip)]
    postmaster: Option<u32>,
    /// Keep the scratch database (for inspection) instead of dropping it.
    #[arg(long)]
    keep_db: bool,
    /// Drain this many jobs first, unreported, so the measured sizes run in a warm process (as a
    /// long-running coordinator is); 0: none.
    #[arg(long, default_value_t = 5_000)]
    warmup: u64,
    /// Serve TLS (a certificate made at start for 127.0.0.1) and have the workers connect over
    /// https://, to measure what TLS costs the dispatch path.
    #[arg(long)]
    tls: bool,
    /// Dashboard clients: this many server-sent-event streams (`/api/v1/events`) held open on the
    /// coordinator's HTTP port through each drain, reading every update (they share the cores).
    #[arg(long, default_value_t = 0)]
    sse_clients: usize,
}

/// The coordinator's certificate and key (PEM) when it serves TLS (`--tls`): made once, so the
/// simulated workers of every size trust the same one.
static TLS_CERT: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// A self-signed certificate for 127.0.0.1, written as PEM into `dir`: (cert, key).
fn make_certificate(dir: &Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert_pem, key_pem) = match TLS_CERT.get() {
        Some(made) => made.clone(),
        None => {
            let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
            TLS_CERT.get_or_init(|| (certified.cert.pem(), certified.signing_key.serialize_pem())).clone()
        }
    };
    let (cert, key) = (dir.join("coordinator.pem"), dir.join("coordinator-key.pem"));
    std::fs::write(&cert, cert_pem)?;
    std::fs::write(&key, key_pem)?;
    Ok((cert, key))
}

/// Latency samples in microseconds (lease: only calls that returned jobs; empty ones are counted).
#[derive(Default)]
struct Samples(Vec<u64>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros() as u64);
    }
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let index = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[index] as f64 / 1000.0
    }
    fn mean_ms(&self) -> f64 {
        self.0.iter().sum::<u64>() as f64 / self.0.len().max(1) as f64 / 1000.0
    }
}

#[derive(Default)]
struct WorkerStats {
    lease: Samples,
    empty_leases: u64,
    complete: Samples,
    storage: Samples,
    jobs: u64,
}

struct Outcome {
    jobs: u64,
    insert_s: f64,
    analyze_s: Option<f64>,
    drain_s: f64,
    lease: Samples,
    complete: Samples,
    storage: Samples,
    lease_calls: usize,
    empty_leases: u64,
    manifest_s: Option<f64>,
    process_cpu_s: f64,
    postgres_cpu_s: f64,
    machine_cpu_s: f64,
    db_size: String,
    /// Events the SSE clients received during the drain (all clients together).
    sse_events: u64,
}

/// A job spec as `acufarm_core::resolve` writes them, with realistic prompt lengths.
fn job_spec(i: u64) -> JobSpec {
    let model = format!("M_Bench{}_N_HD", i / 144);
    let source = format!("train/image/img_512/{model}_{:04}.png", i % 144);
    JobSpec {
        sample_id: format!("{model}_{:04}", i % 144),
        shard: model,
        output: format!("bench/{:04}/{i:07}.png", i / 1000),
        source,
        label: None,
        depth: None,
        output_label: None,
        variant: 0,
        qa_try: 0,
        reseed: 0,
        prompt_set: PromptCategory::Male,
        prompt: "photo of a man, head and shoulders, soft natural window light, warm indoor scene, realistic skin".into(),
        negative: "lowres, blurry, deformed, extra limbs, text, watermark".into(),
        seed: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        scene: None,
        params: JobParams::default(),
        qa: None,
    }
}

fn new_run(jobs: u64, input: &Path, output: &Path) -> anyhow::Result<NewRun> {
    let spec = format!(
        r#"[run]
name = "{RUN_NAME}"
bundle = "bench"

[dataset]
input = "file://{}"
output = "file://{}"
images = ["train/image/img_512"]

[retry]
max_attempts = 3

[prompts.female]
positive = "photo of a woman"
negative = "lowres"
[prompts.male]
positive = "photo of a man"
negative = "lowres"
[prompts.bald_female]
positive = "photo of a bald woman"
negative = "lowres"
[prompts.bald_male]
positive = "photo of a bald man"
negative = "lowres"
"#,
        input.display(),
        output.display()
    );
    acufarm_core::RunSpec::parse(&spec, Path::new("<dispatch bench spec>"))?;
    let mut shards = Vec::new();
    let mut new_jobs = Vec::with_capacity(jobs as usize);
    for i in 0..jobs {
        let job = job_spec(i);
        if shards.last() != Some(&job.shard) {
            shards.push(job.shard.clone());
        }
        new_jobs.push(NewJob { shard_key: job.shard.clone(), sample_id: job.sample_id.clone(), spec: serde_json::to_value(&job)? });
    }
    Ok(NewRun { name: RUN_NAME.into(), spec, priority: 0, bundle_sha256: BUNDLE_SHA256.into(), max_lost: 5, shards, jobs: new_jobs })
}

/// The URL of database `name` on the server of `server_url`.
fn database_url(server_url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = server_url.split_once('?').map_or((server_url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").context("the database URL has no scheme")? + 3;
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// utime + stime of `/proc/<pid>/stat`, in seconds; with `children`, plus the CPU of its exited
/// children (cutime + cstime).
fn cpu_seconds(stat: &str, children: bool) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is field 3 of the full line, utime 14, stime 15, cutime 16,
    // cstime 17.
    let last = if children { 14 } else { 12 };
    let mut ticks = 0.0;
    for field in fields.get(11..=last)? {
        ticks += field.parse::<f64>().ok()?;
    }
    Some(ticks / 100.0)
}

fn process_cpu() -> f64 {
    std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| cpu_seconds(&s, false)).unwrap_or(f64::NAN)
}

/// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
fn machine_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return f64::NAN };
    let Some(line) = stat.lines().next() else { return f64::NAN };
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...; guest time is already in user.
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

/// CPU seconds of the server: the postmaster `postmaster`, its live children (backends, WAL
/// writer, checkpointer, autovacuum) and its exited ones (e.g. parallel query workers). Without
/// its pid, every live process named `postgres` on the machine.
fn postgres_cpu(postmaster: Option<u32>) -> f64 {
    let mut total = 0.0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return f64::NAN };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rfind(')').and_then(|i| stat[i + 2..].split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        let ours = match postmaster {
            Some(postmaster) => pid == postmaster || ppid == Some(postmaster),
            None => stat.contains("(postgres)"),
        };
        if ours && let Some(s) = cpu_seconds(&stat, Some(pid) == postmaster) {
            total += s;
        }
    }
    total
}

type Client = WorkerClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

#[derive(Clone)]
struct Auth(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(acufarm_proto::AUTHORIZATION, self.0.clone());
        Ok(request)
    }
}

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Client> {
    let endpoint = match TLS_CERT.get().map(|(cert, _)| cert) {
        Some(ca) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    let channel = endpoint.tcp_nodelay(true).connect().await?;
    let auth = Auth(format!("Bearer {TOKEN}").parse()?);
    Ok(WorkerClient::with_interceptor(channel, auth).max_decoding_message_size(64 << 20))
}

/// One simulated worker: lease → stage each output → complete the batch, until every job is done.
/// Connects a simulated worker and registers it (before the clock starts: a farm's workers are
/// connected long before a run arrives).
async fn register(index: usize, addr: std::net::SocketAddr, batch: u32) -> anyhow::Result<(Client, String)> {
    let mut client = connect(addr).await?;
    let registered = client
        .register(pb::RegisterRequest {
            name: format!("bench-{index}"),
            hostname: "localhost".into(),
            execution_providers: vec!["none".into()],
            bundle_name: "bench".into(),
            bundle_sha256: BUNDLE_SHA256.into(),
            max_batch: batch,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((client, registered.worker_id))
}

async fn simulated_worker(
    (mut client, worker_id): (Client, String),
    output: Storage,
    batch: u32,
    total: u64,
    done: Arc<AtomicU64>,
) -> anyhow::Result<WorkerStats> {
    let payload = Bytes::from_static(STAGED_BYTES);
    let mut stats = WorkerStats::default();
    loop {
        let started = Instant::now();
        let leased = client
            .lease(pb::LeaseRequest { worker_id: worker_id.clone(), bundle_sha256: BUNDLE_SHA256.into(), max_jobs: batch, worker_name: worker_id.clone() })
            .await
            .context("Lease")?
            .into_inner();
        let lease_time = started.elapsed();
        if leased.jobs.is_empty() {
            stats.empty_leases += 1;
            if done.load(Ordering::Acquire) >= total {
                return Ok(stats);
            }
            // Other workers hold the last jobs; ask again shortly (a real worker backs off longer).
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        stats.lease.push(lease_time);
        let staging_started = Instant::now();
        let mut completions = Vec::with_capacity(leased.jobs.len());
        // Uploads run a few at a time, as a worker with a batch of renders would.
        for chunk in leased.jobs.chunks(STAGE_CONCURRENCY) {
            let puts: Vec<_> = chunk.iter().map(|job| output.put(&job.staging_key, payload.clone())).collect();
            for (job, put) in chunk.iter().zip(futures_util::future::join_all(puts).await) {
                put.with_context(|| format!("staging {}", job.staging_key))?;
            }
        }
        for job in &leased.jobs {
            completions.push(pb::Completion {
                job_id: job.job_id,
                attempt: job.attempt,
                staging_key: job.staging_key.clone(),
                sha256: "0".repeat(64),
                source_sha256: "1".repeat(64),
                timings: [("upload".to_string(), 0.0)].into_iter().collect(),
                execution_provider: "none".into(),
                qa_json: String::new(),
                traceparent: String::new(),
            });
        }
        stats.storage.push(staging_started.elapsed());
        let started = Instant::now();
        let answer = client
            .complete(pb::CompleteRequest { worker_id: worker_id.clone(), bundle_name: "bench".into(), completions, worker_name: worker_id.clone() })
            .await
            .context("Complete")?
            .into_inner();
        stats.complete.push(started.elapsed());
        let accepted = answer.outcomes.iter().filter(|o| o.outcome == pb::Outcome::Accepted as i32).count();
        if accepted != leased.jobs.len() {
            let bad = answer.outcomes.iter().find(|o| o.outcome != pb::Outcome::Accepted as i32);
            bail!("worker {worker_id}: {} of {} completions accepted; first other outcome: {bad:?}", accepted, leased.jobs.len());
        }
        stats.jobs += accepted as u64;
        done.fetch_add(accepted as u64, Ordering::AcqRel);
    }
}

async fn show(conn: &mut sqlx::PgConnection, setting: &str) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("SHOW {setting}"))).fetch_one(conn).await?)
}

async fn run_size(args: &Args, jobs: u64, db_name: &str) -> anyhow::Result<Outcome> {
    let bench_url = database_url(&args.database_url, db_name)?;
    let store = PgStore::connect(&bench_url).await?;
    store.migrate().await?;

    let dir = match &args.storage_dir {
        Some(parent) => tempfile::Builder::new().prefix("acufarm-dispatch-").tempdir_in(parent)?,
        None => tempfile::Builder::new().prefix("acufarm-dispatch-").tempdir()?,
    };
    let (input, output) = (dir.path().join("input"), dir.path().join("output"));
    std::fs::create_dir_all(&input)?;
    let run = new_run(jobs, &input, &output)?;

    let insert_started = Instant::now();
    let run_id = store.create_run(&run, false, chrono::Utc::now()).await.context("inserting the run in one create_run call")?;
    let insert_s = insert_started.elapsed().as_secs_f64();
    drop(run);
    let analyze_s = if args.analyze {
        let started = Instant::now();
        sqlx::query("ANALYZE jobs").execute(store.pool()).await?;
        Some(started.elapsed().as_secs_f64())
    } else {
        None
    };

    let (tls_cert, tls_key) = if args.tls { make_certificate(dir.path()).map(|(c, k)| (Some(c), Some(k)))? } else { (None, None) };
    let config = Config {
        tls_cert,
        tls_key,
        database_url: acufarm_coordinator::config::Secret::new(bench_url.clone()),
        redis_url: acufarm_coordinator::config::Secret::new(args.redis_url.clone()),
        redis_prefix: format!("acufarm-bench-{}", std::process::id()),
        token: acufarm_coordinator::config::Secret::new(TOKEN),
        reap_interval_seconds: args.reap_interval,
        ..Config::default()
    };
    let coordinator = Coordinator::new(store.clone(), config).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator.clone().serve(listener, async {
        let _ = stopped.await;
    }));

    let output_storage = Storage::open(&format!("file://{}", output.display()))?;
    let done = Arc::new(AtomicU64::new(0));
    // A running coordinator has its database connections open and its workers registered; do
    // both before the clock starts so a short run measures dispatch, not start-up.
    let warm: Vec<_> = (0..args.workers.min(8)).map(|_| store.pool().acquire()).collect();
    drop(futures_util::future::try_join_all(warm).await?);
    let registrations: Vec<_> = (0..args.workers).map(|index| register(index, addr, args.batch)).collect();
    let workers = futures_util::future::try_join_all(registrations).await?;
    // Dashboard clients, connected (and past their first snapshot) before the clock starts.
    let sse_events = Arc::new(AtomicU64::new(0));
    let mut sse = Vec::new();
    let mut http_stop = None;
    if args.sse_clients > 0 {
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_addr = http_listener.local_addr()?;
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        http_stop = Some((
            stop_http,
            tokio::spawn(acufarm_coordinator::http::serve(coordinator.clone(), http_listener, async {
                let _ = http_stopped.await;
            })),
        ));
        for _ in 0..args.sse_clients {
            sse.push(tokio::spawn(http1::follow_events(http_addr, format!("/api/v1/events?run={RUN_NAME}"), TOKEN.into(), sse_events.clone())));
        }
        while sse_events.load(Ordering::Relaxed) < args.sse_clients as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let sse_before = sse_events.load(Ordering::Relaxed);
    let (cpu0, pg0, all0) = (process_cpu(), postgres_cpu(args.postmaster), machine_cpu());
    let drain_started = Instant::now();
    let mut tasks = Vec::new();
    for worker in workers {
        tasks.push(tokio::spawn(simulated_worker(worker, output_storage.clone(), args.batch, jobs, done.clone())));
    }
    let progress = (args.progress > 0).then(|| {
        let (done, every) = (done.clone(), Duration::from_secs(args.progress));
        tokio::spawn(async move {
            let (mut last, mut last_at) = (0, Instant::now());
            loop {
                tokio::time::sleep(every).await;
                let (now, at) = (done.load(Ordering::Relaxed), Instant::now());
                eprintln!(
                    "  {:>7.1} s: {now:>8} / {jobs} jobs done, {:>6.0} jobs/s over the last {:.0} s",
                    drain_started.elapsed().as_secs_f64(),
                    (now - last) as f64 / (at - last_at).as_secs_f64(),
                    (at - last_at).as_secs_f64()
                );
                (last, last_at) = (now, at);
            }
        })
    });
    let mut lease = Samples::default();
    let mut complete = Samples::default();
    let mut storage = Samples::default();
    let mut empty_leases = 0;
    let mut drained = 0;
    for task in tasks {
        let stats = task.await??;
        lease.0.extend(stats.lease.0);
        complete.0.extend(stats.complete.0);
        storage.0.extend(stats.storage.0);
        empty_leases += stats.empty_leases;
        drained += stats.jobs;
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    let sse_events = sse_events.load(Ordering::Relaxed) - sse_before;
    for client in sse {
        client.abort();
    }
    if let Some((stop_http, server)) = http_stop {
        let _ = stop_http.send(());
        server.abort();
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    eprintln!("  {jobs} jobs drained in {drain_s:.2} s ({:.0} jobs/s)", jobs as f64 / drain_s);
    let (cpu1, pg1, all1) = (process_cpu(), postgres_cpu(args.postmaster), machine_cpu());
    if drained != jobs {
        bail!("the workers completed {drained} jobs, not {jobs}");
    }

    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE run_id = $1 AND state = 'succeeded'").bind(run_id.0).fetch_one(store.pool()).await?;
    if succeeded as u64 != jobs {
        bail!("the database holds {succeeded} succeeded jobs, not {jobs}");
    }
    for i in [0, jobs / 2, jobs - 1] {
        let key = job_spec(i).output;
        if !output_storage.exists(&key).await? {
            bail!("job {i}'s output {key} was not committed");
        }
    }

    let manifest_s = if args.manifest {
        let started = Instant::now();
        loop {
            if output_storage.exists(acufarm_core::manifest::SUMMARY).await? {
                break Some(started.elapsed().as_secs_f64());
            }
            if started.elapsed() > Duration::from_secs(900) {
                eprintln!("the manifest was not written within 900 s");
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        None
    };
    let db_size: String = sqlx::query_scalar("SELECT pg_size_pretty(pg_database_size(current_database()))").fetch_one(store.pool()).await?;

    let _ = stop.send(());
    server.await??;
    store.pool().close().await;
    Ok(Outcome {
        jobs,
        insert_s,
        analyze_s,
        drain_s,
        lease_calls: lease.0.len(),
        lease,
        complete,
        storage,
        empty_leases,
        manifest_s,
        process_cpu_s: cpu1 - cpu0,
        postgres_cpu_s: pg1 - pg0,
        machine_cpu_s: all1 - all0,
        db_size,
        sse_events,
    })
}

async fn main_async(mut args: Args) -> anyhow::Result<()> {
    let db_name = format!("acufarm_bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&args.database_url).await.with_context(|| "connecting to --database-url")?;
    let version = show(&mut admin, "server_version").await?;
    let synchronous_commit = show(&mut admin, "synchronous_commit").await?;
    let fsync = show(&mut admin, "fsync").await?;
    let wal_sync_method = show(&mut admin, "wal_sync_method").await?;
    let shared_buffers = show(&mut admin, "shared_buffers").await?;
    let autovacuum = show(&mut admin, "autovacuum").await?;
    args.postmaster = match show(&mut admin, "data_directory").await {
        Ok(dir) => std::fs::read_to_string(Path::new(&dir).join("postmaster.pid")).ok().and_then(|t| t.lines().next()?.trim().parse().ok()),
        Err(_) => None,
    };
    if args.postmaster.is_none() {
        eprintln!("note: cannot read the server's postmaster.pid; cpu_pg counts every process named postgres");
    }
    println!(
        "# PostgreSQL {version}: synchronous_commit = {synchronous_commit}, fsync = {fsync}, wal_sync_method = {wal_sync_method}, shared_buffers = {shared_buffers}, autovacuum = {autovacuum}"
    );
    if synchronous_commit != "on" || fsync != "on" {
        eprintln!("warning: commits are not durable on this server (synchronous_commit = {synchronous_commit}, fsync = {fsync})");
    }
    println!(
        "# workers = {}, batch = {}, coordinator threads = {}, redis = {}, cores = {}, storage under {}, analyze after insert = {}, reap interval = {} s",
        args.workers,
        args.batch,
        if args.threads == 0 { "all".to_string() } else { args.threads.to_string() },
        if args.redis_url.is_empty() { "none" } else { &args.redis_url },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.storage_dir.clone().unwrap_or_else(std::env::temp_dir).display(),
        args.analyze,
        args.reap_interval
    );
    println!(
        "{:>9} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}",
        "jobs", "insert_s", "drain_s", "jobs/s", "lease50", "lease99", "compl50", "compl99", "stage99", "manifest", "cpu_proc", "cpu_pg", "cpu_other"
    );
    if args.warmup > 0 {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))).execute(&mut admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}"))).execute(&mut admin).await?;
        let warm = run_size(&Args { manifest: false, progress: 0, keep_db: false, ..args.clone() }, args.warmup, &db_name).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))).execute(&mut admin).await?;
        let warm = warm.context("the warm-up run")?;
        println!("# warm-up (not reported below): {} jobs drained at {:.0} jobs/s", warm.jobs, warm.jobs as f64 / warm.drain_s);
    }
    let mut failure = None;
    for &jobs in &args.jobs {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))).execute(&mut admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}"))).execute(&mut admin).await?;
        let result = run_size(&args, jobs, &db_name).await;
        if !args.keep_db {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))).execute(&mut admin).await?;
        }
        let o = match result {
            Ok(o) => o,
            Err(error) => {
                eprintln!("{jobs} jobs: {error:#}");
                failure = Some(error);
                continue;
            }
        };
        let rate = o.jobs as f64 / o.drain_s;
        println!(
            "{:>9} {:>9.2} {:>8.2} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>8.1} {:>8.1} {:>9.1}",
            o.jobs,
            o.insert_s,
            o.drain_s,
            rate,
            o.lease.quantile_ms(0.5),
            o.lease.quantile_ms(0.99),
            o.complete.quantile_ms(0.5),
            o.complete.quantile_ms(0.99),
            o.storage.quantile_ms(0.99),
            o.manifest_s.map_or("-".to_string(), |s| format!("{s:.2}")),
            o.process_cpu_s,
            o.postgres_cpu_s,
            o.machine_cpu_s - o.process_cpu_s - o.postgres_cpu_s,
        );
        if args.json {
            let line = serde_json::json!({
                "jobs": o.jobs,
                "workers": args.workers,
                "batch": args.batch,
                "insert_s": o.insert_s,
                "analyze_s": o.analyze_s,
                "drain_s": o.drain_s,
                "jobs_per_s": rate,
                "lease_calls": o.lease_calls,
                "empty_lease_calls": o.empty_leases,
                "lease_ms": {"p50": o.lease.quantile_ms(0.5), "p99": o.lease.quantile_ms(0.99), "max": o.lease.quantile_ms(1.0), "mean": o.lease.mean_ms()},
                "complete_ms": {"p50": o.complete.quantile_ms(0.5), "p99": o.complete.quantile_ms(0.99), "max": o.complete.quantile_ms(1.0), "mean": o.complete.mean_ms()},
                "stage_batch_ms": {"p50": o.storage.quantile_ms(0.5), "p99": o.storage.quantile_ms(0.99)},
                "manifest_s": o.manifest_s,
                "process_cpu_s": o.process_cpu_s,
                "postgres_cpu_s": o.postgres_cpu_s,
                "other_cpu_s": o.machine_cpu_s - o.process_cpu_s - o.postgres_cpu_s,
                "db_size": o.db_size,
                "sse_clients": args.sse_clients,
                "sse_events": o.sse_events,
                "server_version": version,
                "synchronous_commit": synchronous_commit,
                "fsync": fsync,
                "autovacuum": autovacuum,
            });
            println!("{line}");
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn main() -> anyhow::Result<()> {
    // The one crypto provider of the build, process-wide, as the `acufarm` binary does.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,sqlx::query=error".into()))
        .with_writer(std::io::stderr)
        .init();
    if args.batch == 0 || args.workers == 0 || args.jobs.contains(&0) {
        bail!("--jobs, --workers and --batch must be at least 1");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if args.threads > 0 {
        runtime.worker_threads(args.threads);
    }
    runtime.build()?.block_on(main_async(args))
}
