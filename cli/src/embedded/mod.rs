//! Embedded mode (`acufarm run SPEC`): coordinator and workers in one process, on SQLite and the
//! spec's storage roots, with no other service. The same store, executor and manifest code as the
//! distributed farm. Resumable: the run's state lives in `<state-dir>/<run>.sqlite`, so running the
//! same command again after Ctrl-C or a crash finishes only what is left.

mod dashboard;
mod progress;
mod source;
#[cfg(test)]
mod tests;

use acufarm_coordinator::runs;
use acufarm_coordinator::service::retry_policy;
use acufarm_coordinator::{RetryPolicy, SqliteStore, Store, manifest};
use acufarm_core::manifest::BundleRef;
use acufarm_core::{RunSpec, resolve};
use acufarm_storage::Storage;
use acufarm_worker::jobloop::{self, LoopOptions, Shutdown};
use acufarm_worker::pipeline::engine::{Pipeline, PipelineOptions};
use acufarm_worker::pipeline::runtime::{self, RuntimeOptions};
use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use source::{LEASE, StoreSource};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Run spec (see examples/acusim.toml).
    spec: PathBuf,
    /// Model bundle directory; its `name` must match the spec's `run.bundle` when that is set.
    #[arg(long)]
    bundle: PathBuf,
    /// In-process workers, each with its own ONNX Runtime sessions (one ONNX Runtime environment
    /// for the process).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Images per UNet call.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Execution providers in priority order, e.g. cuda,cpu.
    #[arg(long, default_value = "cpu")]
    ep: String,
    /// Threads per operator for each worker (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where the run's state database lives.
    #[arg(long, default_value = ".acufarm")]
    state_dir: PathBuf,
    /// Start the run over even if a run of this name exists in the state directory.
    #[arg(long)]
    force: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// Resolve the spec and print the plan (jobs, shards, prompt sets, parameter ranges, the
    /// first jobs); nothing is written and the bundle is not loaded.
    #[arg(long)]
    dry_run: bool,
    /// Print the plan (with --dry-run) or the run's result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Serve the dashboard, API and metrics on this address (default 127.0.0.1:7172) while the
    /// run goes, and on a terminal after it ends until Ctrl-C; sign in with the token in
    /// `<state-dir>/dashboard.token`.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:7172", value_name = "ADDR")]
    dashboard: Option<String>,
    /// Keep serving the dashboard after the run until Ctrl-C even when not on a terminal.
    #[arg(long, requires = "dashboard")]
    keep_dashboard: bool,
}

/// What every worker thread shares.
#[derive(Clone)]
struct Shared {
    store: SqliteStore,
    input: Storage,
    output: Storage,
    scenes: Storage,
    run_name: String,
    run_id: acufarm_core::RunId,
    bundle: BundleRef,
    /// The providers the sessions were opened with, recorded per output.
    execution_provider: String,
    policy: RetryPolicy,
    progress: Arc<progress::Progress>,
    /// The dashboard's coordinator, told about progress (rates, live updates), when serving one.
    dashboard: Option<acufarm_coordinator::Coordinator<SqliteStore>>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<()> {
    let spec_text = std::fs::read_to_string(&args.spec).with_context(|| format!("cannot read run spec {}; check the path", args.spec.display()))?;
    let spec = RunSpec::parse(&spec_text, &args.spec)?;
    let dataset = spec
        .dataset
        .clone()
        .ok_or_else(|| anyhow!("run spec {} has no [dataset] section; add input, output and images (see examples/acusim.toml)", args.spec.display()))?;
    let spec_dir = args.spec.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let input = Storage::open(&dataset.input)?;
    if args.dry_run {
        let resolution = resolve_files(&spec, &input).await?;
        let plan = acufarm_core::plan::Plan::new(&spec, &resolution);
        match args.json {
            true => println!("{}", serde_json::to_string_pretty(&plan)?),
            false => print!("{}", plan.describe()),
        }
        return Ok(());
    }
    let output = Storage::open(&dataset.output)?;
    let scenes = Storage::open(&format!("file://{}", spec_dir.canonicalize().unwrap_or(spec_dir.clone()).display()))?;

    // One pipeline per worker, loaded before anything is written so a bad bundle costs nothing.
    let eps = runtime::parse_ep_list(&args.ep)?;
    let options = PipelineOptions {
        runtime: RuntimeOptions { eps, intra_threads: args.threads, ..RuntimeOptions::default() },
        max_batch: args.batch as usize,
        ..PipelineOptions::default()
    };
    let mut pipelines = Vec::new();
    for _ in 0..args.workers.max(1) {
        pipelines.push(Pipeline::load(&args.bundle, &options)?);
    }
    let bundle = pipelines[0].bundle();
    if let Some(want) = &spec.run.bundle
        && want != &bundle.manifest.name
    {
        bail!(
            "run spec wants bundle `{want}` but {} holds `{}`; pass --bundle the matching directory or change `run.bundle`",
            args.bundle.display(),
            bundle.manifest.name
        );
    }
    let bundle_ref = BundleRef { name: bundle.manifest.name.clone(), sha256: bundle.sha256.clone() };

    std::fs::create_dir_all(&args.state_dir).with_context(|| format!("cannot create state directory {}", args.state_dir.display()))?;
    let store = SqliteStore::open(&args.state_dir.join(format!("{}.sqlite", spec.run.name))).await?;
    store.migrate().await?;
    let now = Utc::now();
    let run_id = match store.find_run(&spec.run.name).await? {
        Some(run) if !args.force => {
            if run.spec != spec_text {
                tracing::warn!(run = %spec.run.name, "the spec changed since this run was submitted; finishing the recorded jobs (use resubmit or --force to apply changes)");
            }
            // This process is the only worker of an embedded run: whatever is still leased was
            // held by a process that died, so take every lease back now.
            store.reap_expired(now + LEASE + Duration::from_secs(1)).await?;
            // A new process is a new chance for every worker the last one quarantined.
            for q in store.quarantined_workers(Some(run.id)).await? {
                store.release_worker(&q.worker, Some(run.id), now).await?;
            }
            output.clean_staging(Some(&spec.run.name)).await?;
            run.id
        }
        _ => {
            let resolution = resolve_files(&spec, &input).await?;
            let run = runs::plan_run(&spec, &spec_text, &resolution, &bundle_ref.sha256)?;
            output.clean_staging(Some(&spec.run.name)).await?;
            store.create_run(&run, args.force, now).await?
        }
    };
    for file in &dataset.copy {
        output.copy_from_staged(&input, file, file, &format!("{}/{}/copy", acufarm_storage::STAGING, spec.run.name)).await?;
    }

    let status = store.run_status(run_id).await?;
    let progress = Arc::new(progress::Progress::new(status.counts.total(), status.counts.succeeded + status.counts.failed, args.quiet));
    if status.counts.succeeded > 0 {
        progress.note(&format!("resuming {}: {} of {} jobs already done", spec.run.name, status.counts.succeeded, status.counts.total()));
    }
    // Ctrl-C (or SIGTERM) drains: the jobs in hand finish, nothing more is leased, and running the
    // same command again finishes the rest.
    let shutdown = Shutdown::install("acufarm run").context("cannot listen for SIGTERM and SIGINT")?;
    let dashboard = match &args.dashboard {
        Some(address) => {
            let dashboard = dashboard::Dashboard::start(store.clone(), address, &args.state_dir).await?;
            eprintln!("dashboard: {} (sign in with the token in {})", dashboard.url, dashboard.token_file.display());
            Some(dashboard)
        }
        None => None,
    };
    let result = drive(&args, &spec, &dataset, store, run_id, input, output, scenes, pipelines, bundle_ref, progress, &shutdown, dashboard.as_ref()).await;
    if let Some(dashboard) = dashboard {
        let linger = args.keep_dashboard || std::io::IsTerminal::is_terminal(&std::io::stdin());
        if linger && !shutdown.is_draining() {
            match &result {
                Ok(()) => eprintln!("run {} finished; the dashboard stays up at {} until Ctrl-C", spec.run.name, dashboard.url),
                Err(e) => eprintln!("error: {e:#}\nthe dashboard stays up at {} until Ctrl-C", dashboard.url),
            }
            shutdown.draining().await;
        }
        dashboard.stop().await;
    }
    result
}

/// Runs the job loops to the end, writes the manifest and reports.
#[allow(clippy::too_many_arguments)]
async fn drive(
    args: &Args,
    spec: &RunSpec,
    dataset: &acufarm_core::spec::DatasetSection,
    store: SqliteStore,
    run_id: acufarm_core::RunId,
    input: Storage,
    output: Storage,
    scenes: Storage,
    pipelines: Vec<Pipeline>,
    bundle_ref: BundleRef,
    progress: Arc<progress::Progress>,
    shutdown: &Shutdown,
    dashboard: Option<&dashboard::Dashboard>,
) -> anyhow::Result<()> {
    let shared = Shared {
        dashboard: dashboard.map(|d| d.coordinator.clone()),
        store: store.clone(),
        input,
        output: output.clone(),
        scenes,
        run_name: spec.run.name.clone(),
        run_id,
        bundle: bundle_ref,
        execution_provider: args.ep.clone(),
        policy: retry_policy(spec),
        progress: progress.clone(),
    };
    let ticker = progress.clone().start();
    let mut loops = Vec::new();
    for (i, pipeline) in pipelines.into_iter().enumerate() {
        let worker = format!("embedded-{i}");
        let source = Arc::new(StoreSource::new(shared.clone(), worker.clone()));
        let options = LoopOptions { worker, batch: args.batch.max(1) as usize };
        loops.push(tokio::spawn(jobloop::run(source, pipeline, options, shutdown.clone())));
    }
    let mut first_error = None;
    for handle in loops {
        match handle.await {
            Ok(Ok(_batch)) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow!("a worker task stopped unexpectedly ({e})"));
            }
        }
    }
    progress.finish();
    drop(ticker);
    if let Some(e) = first_error {
        return Err(e);
    }
    let status = store.run_status(run_id).await?;
    let left = status.counts.queued + status.counts.leased;
    if left > 0 && shutdown.is_draining() {
        bail!(
            "interrupted with {left} of {} jobs of run {} left; run the same command again to finish them (done jobs are kept)",
            status.counts.total(),
            spec.run.name
        );
    }
    if left > 0 {
        let quarantined = store.quarantined_workers(Some(run_id)).await?;
        let reasons: Vec<String> =
            quarantined.iter().map(|q| format!("{}: {}", q.worker, q.errors.last().map(String::as_str).unwrap_or("no message"))).collect();
        bail!(
            "every worker stopped after {} retryable failures in a row, with {left} jobs of run {} left ({}); fix the cause and run the same command again to finish them",
            shared.policy.quarantine_after,
            spec.run.name,
            reasons.join("; ")
        );
    }

    let status = store.run_status(run_id).await?;
    let summary = manifest::write(&store, run_id, &spec.run.name, &output).await?;
    eprintln!(
        "run {}: {} succeeded, {} failed; wrote {} manifest rows to {}",
        spec.run.name, status.counts.succeeded, status.counts.failed, summary.outputs, dataset.output
    );
    if let Some(qa) = &summary.qa {
        eprintln!("{}", acufarm_core::qa::describe(qa));
    }
    if args.json {
        let c = &status.counts;
        let qa = summary.qa.as_ref().map(serde_json::to_value).transpose()?;
        println!(
            "{}",
            serde_json::json!({"run": spec.run.name, "succeeded": c.succeeded, "failed": c.failed, "manifest_rows": summary.outputs, "output": dataset.output, "qa": qa})
        );
    }
    if status.counts.failed > 0 {
        bail!(
            "{} jobs of run {} failed, each with its reason in a warning above; fix those inputs and run the same command again with --force",
            status.counts.failed,
            spec.run.name
        );
    }
    Ok(())
}

/// Lists the input and resolves the spec against it; an empty result is an error.
async fn resolve_files(spec: &RunSpec, input: &Storage) -> anyhow::Result<resolve::Resolution> {
    let dataset = spec.dataset.as_ref().expect("checked by the caller");
    let files = input.list("").await?;
    let resolution = resolve::resolve_run(spec, &files)?;
    if resolution.jobs.is_empty() && resolution.rejected.is_empty() {
        bail!(
            "no images found under {} in {} (after filters: {} left out); check `dataset.images` and `[filters]`",
            dataset.images.join(", "),
            dataset.input,
            resolution.filtered_out
        );
    }
    Ok(resolution)
}
