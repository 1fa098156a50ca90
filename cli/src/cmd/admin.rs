//! Operator commands against a running coordinator: submit, status, resubmit, cancel, pause,
//! resume, worker release. Each prints one line a person can read (or JSON with `status --json`) and turns a
//! refusal into the coordinator's sentence.

use acufarm_proto::admin_client::AdminClient;
use acufarm_proto::v1 as pb;
use acufarm_worker::agent::{Auth, Token, error_chain, parse_endpoints, tls_failure};
use acufarm_worker::pipeline::bundle::Bundle;
use anyhow::{Context, anyhow, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Where the coordinator is and how to prove who we are.
#[derive(clap::Args, Clone)]
pub struct Connection {
    /// Coordinator URL(s), comma-separated (the first that answers is used), e.g.
    /// https://coord:7171; or ACUFARM_COORDINATOR.
    #[arg(long, env = "ACUFARM_COORDINATOR")]
    coordinator: String,
    /// The operator token and TLS settings.
    #[command(flatten)]
    client: super::client::ClientArgs,
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// Run spec (see examples/acusim.toml); scene images it names are sent along.
    spec: PathBuf,
    /// The model bundle the workers hold: jobs go only to workers with this bundle.
    #[arg(long)]
    bundle: PathBuf,
    /// Replace an existing run of the same name.
    #[arg(long)]
    force: bool,
    /// Resolve the spec on the coordinator and print the plan (jobs, shards, prompt sets,
    /// parameter ranges, the first jobs); nothing is written or queued.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// A run name; all runs when left out.
    run: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Wait until the run has no queued or leased jobs, then have the manifest written.
    #[arg(long, requires = "run")]
    wait: bool,
    /// Give up waiting after this many seconds (exit 4).
    #[arg(long, default_value_t = 3600)]
    wait_timeout: u64,
    /// Failed jobs listed per run.
    #[arg(long, default_value_t = 20)]
    failures: u32,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
pub struct ResubmitArgs {
    run: String,
    /// Resubmit every failed job of the run.
    #[arg(long, conflicts_with_all = ["shard", "job"], required_unless_present_any = ["shard", "job"])]
    failed: bool,
    /// Resubmit the failed jobs of these shards (repeatable).
    #[arg(long, conflicts_with = "job")]
    shard: Vec<String>,
    /// Resubmit these jobs, by id (repeatable; only failed ones are queued again).
    #[arg(long)]
    job: Vec<i64>,
    /// A corrected spec (e.g. a fixed sample-id grammar) to re-resolve against; the run keeps it.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
pub struct RunArgs {
    run: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

type Client = AdminClient<InterceptedService<Channel, Auth>>;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn connect(connection: &Connection) -> anyhow::Result<Client> {
    let auth = Auth::new(Token::load(connection.client.token())?);
    let tls = connection.client.tls();
    tls.check()?;
    let mut last_error = None;
    for url in parse_endpoints(&connection.coordinator)? {
        let endpoint = tls.endpoint(&url)?.connect_timeout(Duration::from_secs(5));
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(AdminClient::with_interceptor(channel, auth).max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20));
            }
            Err(error) => {
                let chain = error_chain(&error);
                // A TLS misconfiguration is the answer; another URL would not change it.
                if let Some(sentence) = tls_failure(&url, &chain) {
                    bail!("{sentence}");
                }
                last_error = Some(format!("{url}: {chain}"));
            }
        }
    }
    match last_error {
        Some(error) => bail!("cannot reach the coordinator ({error}); check --coordinator / ACUFARM_COORDINATOR and that `acufarm coordinator` is running"),
        None => bail!("no coordinator URL given; pass --coordinator https://host:port or set ACUFARM_COORDINATOR"),
    }
}

/// The coordinator's refusal as one sentence.
fn refused(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable if status.message().starts_with("error trying to connect") || status.message().is_empty() => {
            anyhow!("the coordinator is unreachable ({}); check that it is running", status.message())
        }
        _ => anyhow!("{}", status.message()),
    }
}

/// Reads the files a spec names relative to itself, to ship them with it.
fn spec_files(spec_path: &Path, spec: &acufarm_core::RunSpec) -> anyhow::Result<Vec<pb::SpecFile>> {
    let dir = spec_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    spec.shipped_files()
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let content = std::fs::read(&path)
                .with_context(|| format!("cannot read {} named in {}; put it beside the spec or fix the path", path.display(), spec_path.display()))?;
            Ok(pb::SpecFile { path: name, content })
        })
        .collect()
}

fn read_spec(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read run spec {}; check the path", path.display()))
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let text = read_spec(&args.spec)?;
    let spec = acufarm_core::RunSpec::parse(&text, &args.spec)?;
    let files = spec_files(&args.spec, &spec)?;
    let bundle = Bundle::load(&args.bundle, false)?;
    if let Some(want) = spec.run.bundle
        && want != bundle.manifest.name
    {
        bail!(
            "run spec wants bundle `{want}` but {} holds `{}`; pass --bundle the matching directory or change `run.bundle`",
            args.bundle.display(),
            bundle.manifest.name
        );
    }
    runtime()?.block_on(async {
        let mut client = connect(&args.connection).await?;
        let request = pb::SubmitRequest {
            spec_toml: text,
            spec_path: args.spec.display().to_string(),
            files,
            force: args.force,
            bundle_sha256: bundle.sha256.clone(),
            dry_run: args.dry_run,
        };
        let answer = client.submit(request).await.map_err(refused)?.into_inner();
        if args.dry_run {
            let plan: acufarm_core::plan::Plan = serde_json::from_str(&answer.plan_json).context("the coordinator sent a plan this CLI cannot read; use the same acufarm version on both")?;
            match args.json {
                true => println!("{}", serde_json::to_string_pretty(&plan)?),
                false => print!("{}", plan.describe()),
            }
            return Ok(());
        }
        if args.json {
            let answer = json!({"run_id": answer.run_id, "name": answer.name, "jobs": answer.jobs, "shards": answer.shards, "unresolved": answer.unresolved, "filtered_out": answer.filtered_out});
            println!("{answer}");
        } else {
            println!(
                "submitted run {} (id {}): {} jobs in {} shards ({} images with unparseable ids, {} left out by filters)",
                answer.name, answer.run_id, answer.jobs, answer.shards, answer.unresolved, answer.filtered_out
            );
        }
        Ok(())
    })
}

fn counts_json(counts: &Option<pb::Counts>) -> serde_json::Value {
    let c = (*counts).unwrap_or_default();
    json!({"queued": c.queued, "leased": c.leased, "succeeded": c.succeeded, "failed": c.failed, "cancelled": c.cancelled})
}

fn status_json(status: &pb::StatusResponse) -> serde_json::Value {
    let runs: Vec<_> = status
        .runs
        .iter()
        .map(|run| {
            json!({
                "run_id": run.run_id,
                "name": run.name,
                "state": run.state,
                "priority": run.priority,
                "bundle_sha256": run.bundle_sha256,
                "created_unix_ms": run.created_unix_ms,
                "output_url": run.output_url,
                "rate_per_s": run.rate_per_s,
                "qa": serde_json::from_str::<serde_json::Value>(&run.qa_json).unwrap_or(serde_json::Value::Null),
                "counts": counts_json(&run.counts),
                "shards": run.shards.iter().map(|shard| json!({"shard_id": shard.shard_id, "key": shard.key, "state": shard.state, "counts": counts_json(&shard.counts)})).collect::<Vec<_>>(),
                "failures": run.failures.iter().map(|job| json!({
                    "job_id": job.job_id,
                    "shard": job.shard,
                    "sample_id": job.sample_id,
                    "class": pb::FailureClass::try_from(job.class).map(|c| c.as_str_name().trim_start_matches("FAILURE_CLASS_").to_lowercase()).unwrap_or_default(),
                    "message": job.message,
                    "attempt": job.attempt,
                })).collect::<Vec<_>>(),
                "quarantined": run.quarantined.iter().map(|q| json!({
                    "worker": q.worker,
                    "since_unix_ms": q.since_unix_ms,
                    "failures": q.failures,
                    "errors": q.errors,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let workers: Vec<_> = status
        .workers
        .iter()
        .map(|w| json!({"worker_id": w.worker_id, "name": w.name, "hostname": w.hostname, "bundle_name": w.bundle_name, "bundle_sha256": w.bundle_sha256, "execution_providers": w.execution_providers, "gpu": w.gpu, "last_seen_unix_ms": w.last_seen_unix_ms, "jobs_held": w.jobs_held}))
        .collect();
    json!({"runs": runs, "workers": workers, "redis_ok": status.redis_ok})
}

fn print_status(status: &pb::StatusResponse) {
    if status.runs.is_empty() {
        println!("no runs");
    }
    for run in &status.runs {
        let c = run.counts.unwrap_or_default();
        let total = c.queued + c.leased + c.succeeded + c.failed + c.cancelled;
        println!(
            "run {} (id {}, {}): {}/{} succeeded, {} failed, {} leased, {} queued, {} cancelled; {:.2} jobs/s; output {}",
            run.name, run.run_id, run.state, c.succeeded, total, c.failed, c.leased, c.queued, c.cancelled, run.rate_per_s, run.output_url
        );
        for shard in run.shards.iter().filter(|shard| shard.state != "succeeded") {
            let s = shard.counts.unwrap_or_default();
            println!("  shard {} {}: {} succeeded, {} failed, {} leased, {} queued", shard.key, shard.state, s.succeeded, s.failed, s.leased, s.queued);
        }
        for job in &run.failures {
            println!("  failed {} (shard {}, attempt {}): {}", job.sample_id, job.shard, job.attempt, job.message);
        }
        for q in &run.quarantined {
            println!(
                "  quarantined worker {} after {} retryable failures in a row (lift: acufarm worker release {} --run {}):",
                q.worker, q.failures, q.worker, run.name
            );
            for error in &q.errors {
                println!("    {error}");
            }
        }
        if let Ok(qa) = serde_json::from_str::<acufarm_core::qa::QaSummary>(&run.qa_json) {
            for line in acufarm_core::qa::describe(&qa).lines() {
                println!("  {line}");
            }
        }
    }
    if status.redis_ok {
        println!("{} live workers", status.workers.len());
        for w in &status.workers {
            println!("  {} on {} ({}, {}): {} jobs held", w.worker_id, w.hostname, w.bundle_name, w.execution_providers.join(","), w.jobs_held);
        }
    } else {
        println!("Redis unavailable: live workers unknown (job state is unaffected)");
    }
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.connection).await?;
        let request = pb::StatusRequest { run: args.run.clone().unwrap_or_default(), failures_limit: args.failures };
        let started = Instant::now();
        let status = loop {
            let status = match client.status(request.clone()).await {
                Ok(answer) => answer.into_inner(),
                // While waiting, ride out a coordinator or database restart.
                Err(status) if args.wait && matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown) => {
                    if started.elapsed() > Duration::from_secs(args.wait_timeout) {
                        return Err(refused(status));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(status) => return Err(refused(status)),
            };
            if !args.wait {
                break status;
            }
            let done = status.runs.first().and_then(|run| run.counts).is_some_and(|c| c.queued == 0 && c.leased == 0);
            if done {
                let mut attempts = 0;
                loop {
                    match client.write_manifest(pb::RunRequest { run: request.run.clone() }).await {
                        Ok(_) => break,
                        Err(status) if attempts < 20 && matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown) => {
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(status) => return Err(refused(status)),
                    }
                }
                // Once more, so the answer carries what the manifest summary says (QA statistics).
                break client.status(request.clone()).await.map(|answer| answer.into_inner()).unwrap_or(status);
            }
            if started.elapsed() > Duration::from_secs(args.wait_timeout) {
                return Err(super::exit::TimedOut(format!(
                    "run {} still has queued or leased jobs after {} s; nothing is lost, check the workers (`acufarm status`) and wait again",
                    args.run.as_deref().unwrap_or_default(),
                    args.wait_timeout
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
        } else {
            print_status(&status);
        }
        Ok(())
    })
}

pub fn resubmit(args: ResubmitArgs) -> anyhow::Result<()> {
    let (spec_toml, spec_path, files) = match &args.spec {
        Some(path) => {
            let text = read_spec(path)?;
            let files = spec_files(path, &acufarm_core::RunSpec::parse(&text, path)?)?;
            (text, path.display().to_string(), files)
        }
        None => (String::new(), String::new(), Vec::new()),
    };
    runtime()?.block_on(async {
        let mut client = connect(&args.connection).await?;
        let request = pb::ResubmitRequest {
            run: args.run.clone(),
            failed: args.failed,
            shards: args.shard.clone(),
            spec_toml,
            spec_path,
            files,
            job_ids: args.job.clone(),
        };
        let answer = client.resubmit(request).await.map_err(refused)?.into_inner();
        if args.json {
            println!("{}", json!({"run": args.run, "requeued": answer.requeued, "unresolved": answer.unresolved}));
        } else {
            println!(
                "requeued {} failed jobs of run {} ({} still do not resolve and will fail again with the reason)",
                answer.requeued, args.run, answer.unresolved
            );
        }
        Ok(())
    })
}

/// `cancel`, `pause` or `resume`.
pub fn change(args: RunArgs, action: &str) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.connection).await?;
        let request = pb::RunRequest { run: args.run.clone() };
        let answer = match action {
            "cancel" => client.cancel(request).await,
            "pause" => client.pause(request).await,
            _ => client.resume(request).await,
        }
        .map_err(refused)?
        .into_inner();
        if args.json {
            println!("{}", json!({"run": args.run, "state": answer.state}));
        } else {
            println!("run {} is now {}", args.run, answer.state);
        }
        Ok(())
    })
}

#[derive(clap::Args)]
pub struct ReleaseArgs {
    /// The quarantined worker's name, as `acufarm status` lists it.
    worker: String,
    /// Only on this run (default: every run that quarantined it).
    #[arg(long)]
    run: Option<String>,
    /// Print the runs it was released on as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `worker release`: lifts a worker's quarantine so it gets the run's jobs again.
pub fn release(args: ReleaseArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.connection).await?;
        let request = pb::ReleaseWorkerRequest { worker: args.worker.clone(), run: args.run.clone().unwrap_or_default() };
        let answer = client.release_worker(request).await.map_err(refused)?.into_inner();
        if args.json {
            println!("{}", json!({"worker": args.worker, "released_on": answer.runs}));
        } else {
            println!("worker {} released on {}: it gets their jobs again", args.worker, answer.runs.join(", "));
        }
        Ok(())
    })
}

#[derive(clap::Args)]
pub struct RegenerateArgs {
    run: String,
    /// A job to render again with new seeds (repeatable): a QA failure, or an output you reject.
    #[arg(long, required = true)]
    job: Vec<i64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `regenerate`: queues chosen finished jobs again with their reseed counter one higher.
pub fn regenerate(args: RegenerateArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.connection).await?;
        let request = pb::RegenerateRequest { run: args.run.clone(), job_ids: args.job.clone() };
        let answer = client.regenerate(request).await.map_err(refused)?.into_inner();
        if args.json {
            println!("{}", json!({"run": args.run, "requeued": answer.requeued, "skipped": answer.skipped}));
        } else {
            println!(
                "queued {} jobs of run {} again with new seeds ({} left alone: still running, cancelled, or without a resolvable input)",
                answer.requeued, args.run, answer.skipped
            );
        }
        Ok(())
    })
}
