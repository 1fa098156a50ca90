//! HTTP API latency at scale: one run of N jobs (default 1,000,000) in a scratch PostgreSQL
//! database, moved into a realistic mix of states by SQL (so the state counters are kept by the
//! same triggers as in a real run), W registered workers (default 1,000) in Redis presence, and
//! the real coordinator's HTTP server on loopback. Each endpoint the dashboard polls is asked R
//! times over one keep-alive connection after a short warm-up; p50/p99/max are reported.

#[allow(dead_code)] // each benchmark uses a part of it
#[path = "http1.rs"]
mod http1;

use acufarm_coordinator::events::{Events, Presence};
use acufarm_coordinator::store::{NewJob, NewRun};
use acufarm_coordinator::{Config, Coordinator, PgStore, Store};
use anyhow::{Context, bail};
use clap::Parser;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "api-bench-token";
const RUN: &str = "api-bench";

#[derive(Parser)]
#[command(about = "HTTP API latency over a big run (benchmark harness)")]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    jobs: u64,
    /// Shards of the run (AcuSim has 225).
    #[arg(long, default_value_t = 225)]
    shards: u64,
    /// Registered workers (Redis presence keys).
    #[arg(long, default_value_t = 1_000)]
    workers: u64,
    /// Requests per endpoint (after 10 unreported).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Print one JSON line per endpoint.
    #[arg(long)]
    json: bool,
}

fn database_url(server: &str, name: &str) -> anyhow::Result<String> {
    let (base, _) = server.rsplit_once('/').context("a database URL ends with /database")?;
    Ok(format!("{base}/{name}"))
}

fn new_run(args: &Args) -> NewRun {
    let shards: Vec<String> = (0..args.shards).map(|s| format!("M_Model{s:03}_N_HD")).collect();
    let jobs = (0..args.jobs)
        .map(|i| {
            let shard = &shards[(i * args.shards / args.jobs) as usize];
            let sample = format!("{shard}_{i:07}");
            NewJob {
                shard_key: shard.clone(),
                spec: serde_json::json!({
                    "sample_id": sample, "shard": shard, "source": format!("train/image/img_512/{sample}.png"),
                    "output": format!("train/image/img_512/{sample}.png"), "variant": 0, "qa_try": 0,
                    "prompt": "photo of a man, head and shoulders, soft natural window light, warm indoor scene, realistic skin",
                    "negative": "lowres, blurry, deformed, extra limbs, text, watermark", "seed": i,
                }),
                sample_id: sample,
            }
        })
        .collect();
    NewRun { name: RUN.into(), spec: format!("[run]\nname = \"{RUN}\"\n"), priority: 0, bundle_sha256: "b".repeat(64), max_lost: 5, shards, jobs }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn main_async(args: Args) -> anyhow::Result<()> {
    let db = format!("acufarm_api_bench_{}", std::process::id());
    let admin = PgStore::connect(&args.database_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(admin.pool()).await?;
    let result = measure(&args, &db).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))).execute(admin.pool()).await?;
    result
}

async fn measure(args: &Args, db: &str) -> anyhow::Result<()> {
    let url = database_url(&args.database_url, db)?;
    let store = PgStore::connect(&url).await?;
    store.migrate().await?;
    let started = Instant::now();
    let run = store.create_run(&new_run(args), false, chrono::Utc::now()).await?;
    eprintln!("inserted {} jobs in {} shards in {:.1} s", args.jobs, args.shards, started.elapsed().as_secs_f64());
    // A run part way: 60% succeeded (by 1,000 workers), 0.1% failed, 0.3% leased, the rest queued.
    let started = Instant::now();
    for statement in [
        "UPDATE jobs SET state = 'succeeded', attempt = 1, worker = 'w' || (id % 1000), result = '{\"output\": {\"path\": \"x.png\"}}' WHERE run_id = $1 AND id % 10 < 6",
        "UPDATE jobs SET state = 'failed', attempt = 1, worker = 'w' || (id % 1000), failure_class = 'permanent', last_error = 'images/x.png: not a PNG' WHERE run_id = $1 AND id % 1000 = 999",
        "UPDATE jobs SET state = 'leased', attempt = 1, worker = 'w' || (id % 1000), leased_by = 'w' || (id % 1000), lease_expires_at = now() + interval '1 hour' WHERE run_id = $1 AND id % 1000 IN (996, 997, 998)",
        "VACUUM ANALYZE jobs",
    ] {
        let query = sqlx::query(statement);
        let query = if statement.contains("$1") { query.bind(run.0) } else { query };
        query.execute(store.pool()).await.with_context(|| statement.to_string())?;
    }
    eprintln!("moved the jobs into their states in {:.1} s", started.elapsed().as_secs_f64());
    let status = store.run_status(run).await?;
    eprintln!("counts: {:?}", status.counts);

    let prefix = format!("acufarm-api-bench-{}", std::process::id());
    let events = Events::new(&args.redis_url, &prefix, Duration::from_secs(3600)).map_err(anyhow::Error::msg)?;
    if !events.ok().await {
        bail!("Redis does not answer at {}; start it (scripts/setup.sh dev) or pass --redis-url", args.redis_url);
    }
    for w in 0..args.workers {
        let presence = Presence {
            worker_id: format!("w{w}-{:08x}", w * 2_654_435_761 % (1 << 32)),
            name: format!("w{w}"),
            hostname: format!("gpu-node-{}", w / 8),
            bundle_name: "sd15-iclight".into(),
            bundle_sha256: "b".repeat(64),
            execution_providers: vec!["tensorrt".into(), "cuda".into(), "cpu".into()],
            gpu: "NVIDIA H100 80GB HBM3".into(),
            gpu_memory_bytes: 80 << 30,
            last_seen_unix_ms: chrono::Utc::now().timestamp_millis(),
            jobs_held: (w % 3) as u32,
        };
        events.presence(&presence).await;
    }
    let config = Config {
        database_url: acufarm_coordinator::config::Secret::new(url),
        redis_url: acufarm_coordinator::config::Secret::new(args.redis_url.clone()),
        redis_prefix: prefix.clone(),
        token: acufarm_coordinator::config::Secret::new(TOKEN),
        ..Config::default()
    };
    let coordinator = Coordinator::new(store.clone(), config).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(acufarm_coordinator::http::serve(coordinator, listener, async {
        let _ = stopped.await;
    }));
    let middle: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE run_id = $1 ORDER BY id OFFSET $2 LIMIT 1")
        .bind(run.0)
        .bind((args.jobs / 2) as i64)
        .fetch_one(store.pool())
        .await?;
    let endpoints = [
        ("run snapshot", format!("/api/v1/runs/{RUN}")),
        ("runs list", "/api/v1/runs".to_string()),
        ("shard grid", format!("/api/v1/runs/{RUN}/shards")),
        ("jobs page (first)", format!("/api/v1/runs/{RUN}/jobs?limit=50")),
        ("jobs page (middle, keyset)", format!("/api/v1/runs/{RUN}/jobs?limit=50&after={middle}")),
        ("jobs page (newest first)", format!("/api/v1/runs/{RUN}/jobs?limit=50&order=newest")),
        ("failed jobs page", format!("/api/v1/runs/{RUN}/jobs?state=failed&limit=50")),
        // w5 took every 1,000th job of the first 60% (ids ending in 5).
        ("jobs of one worker", format!("/api/v1/runs/{RUN}/jobs?worker=w5&limit=50")),
        ("workers list", "/api/v1/workers".to_string()),
    ];
    println!("{:<28} {:>9} {:>9} {:>9} {:>10}", "endpoint", "p50 ms", "p99 ms", "max ms", "bytes");
    let mut connection = http1::Connection::open(addr).await?;
    for (name, path) in &endpoints {
        let mut samples = Vec::with_capacity(args.requests);
        let mut bytes = 0;
        for i in 0..args.requests + 10 {
            let started = Instant::now();
            let (status, body) = connection.get(path, TOKEN).await?;
            let took = started.elapsed().as_secs_f64() * 1e3;
            if status != 200 {
                bail!("{path} answered {status}: {}", String::from_utf8_lossy(&body));
            }
            bytes = body.len();
            if i >= 10 {
                samples.push(took);
            }
        }
        samples.sort_by(f64::total_cmp);
        let (p50, p99, max) = (quantile(&samples, 0.5), quantile(&samples, 0.99), quantile(&samples, 1.0));
        println!("{name:<28} {p50:>9.2} {p99:>9.2} {max:>9.2} {bytes:>10}");
        if args.json {
            println!(
                "{}",
                serde_json::json!({"endpoint": name, "path": path, "p50_ms": p50, "p99_ms": p99, "max_ms": max, "bytes": bytes, "jobs": args.jobs, "workers": args.workers})
            );
        }
    }
    let _ = stop.send(());
    server.await??;
    // Leave Redis as it was.
    let client = redis::Client::open(args.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await?;
    }
    store.pool().close().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,sqlx::query=error".into()))
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(main_async(args))
}
