//! Embedded mode (`acufarm run SPEC`): coordinator and workers in one process, on SQLite and the
//! spec's storage roots, with no other service. The same store, executor and manifest code as the
//! distributed farm. Resumable: the run's state lives in `<state-dir>/<run>.sqlite`, so running the
//! same command again after Ctrl-C or a crash finishes only what is left.

mod progress;

use acufarm_coordinator::runs::{self, Producer, StagedOutput};
use acufarm_coordinator::service::retry_policy;
use acufarm_coordinator::store::{CompletionRequest, FailureRequest, LeaseRequest};
use acufarm_coordinator::{RetryPolicy, SqliteStore, Store, manifest};
use acufarm_core::manifest::{BundleRef, ManifestRow};
use acufarm_core::{FailureClass, JobSpec, RunSpec, resolve};
use acufarm_storage::Storage;
use acufarm_worker::executor::{self, Roots, SceneCache};
use acufarm_worker::pipeline::engine::{Pipeline, PipelineOptions};
use acufarm_worker::pipeline::runtime::{self, RuntimeOptions};
use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long an embedded worker holds a job before the lease counts as lost.
const LEASE: Duration = Duration::from_secs(600);

#[derive(clap::Args)]
pub struct Args {
    /// Run spec (see examples/acusim.toml).
    spec: PathBuf,
    /// Model bundle directory; its `name` must match the spec's `run.bundle` when that is set.
    #[arg(long)]
    bundle: PathBuf,
    /// In-process workers, each with its own ONNX Runtime sessions.
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
    let shared = Shared {
        store: store.clone(),
        input,
        output: output.clone(),
        scenes,
        run_name: spec.run.name.clone(),
        run_id,
        bundle: bundle_ref,
        execution_provider: args.ep.clone(),
        policy: retry_policy(&spec),
        progress: progress.clone(),
    };
    let ticker = progress.clone().start();
    let mut threads = Vec::new();
    for (i, pipeline) in pipelines.into_iter().enumerate() {
        let shared = shared.clone();
        let batch = args.batch.max(1);
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(worker_loop(shared, pipeline, format!("embedded-{i}"), batch))
        }));
    }
    let mut first_error = None;
    for t in threads {
        if let Err(e) = t.join().map_err(|_| anyhow!("a worker thread panicked"))? {
            first_error.get_or_insert(e);
        }
    }
    progress.finish();
    drop(ticker);
    if let Some(e) = first_error {
        return Err(e);
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

/// One in-process worker: lease a batch, fetch, render, stage, commit, report; until no job is left.
async fn worker_loop(shared: Shared, mut pipeline: Pipeline, worker: String, batch: u32) -> anyhow::Result<()> {
    let roots = Roots { input: &shared.input, output: &shared.output, scenes: &shared.scenes };
    let mut scenes = SceneCache::default();
    loop {
        let leased = shared
            .store
            .lease(&LeaseRequest {
                worker_id: worker.clone(),
                bundle_sha256: shared.bundle.sha256.clone(),
                max_jobs: batch,
                lease_duration: LEASE,
                now: Utc::now(),
            })
            .await?;
        if leased.is_empty() {
            let status = shared.store.run_status(shared.run_id).await?;
            if status.counts.queued == 0 && status.counts.leased == 0 {
                return Ok(());
            }
            // Jobs wait out a retry backoff, or another worker holds them.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let mut failures = Vec::new();
        let mut ready = Vec::new();
        for lease in &leased {
            let fail = |class: FailureClass, message: String| FailureRequest { job: lease.job, attempt: lease.attempt, class, message };
            let spec: serde_json::Value = match serde_json::from_str(&lease.spec) {
                Ok(spec) => spec,
                Err(e) => {
                    failures.push(fail(FailureClass::Permanent, format!("job spec of {} is not JSON ({e}); resubmit the run", lease.sample_id)));
                    continue;
                }
            };
            if let Some(error) = spec.get("error").and_then(|e| e.as_str()) {
                failures.push(fail(FailureClass::Permanent, error.to_string()));
                continue;
            }
            let job: JobSpec = match serde_json::from_value(spec) {
                Ok(job) => job,
                Err(e) => {
                    failures.push(fail(FailureClass::Permanent, format!("job spec of {} cannot be read ({e}); resubmit the run", lease.sample_id)));
                    continue;
                }
            };
            let params = executor::sampler_params(&job);
            match executor::fetch(&job, &roots, &mut scenes).await {
                Ok(fetched) => ready.push((lease.clone(), job, fetched, params)),
                Err(e) => failures.push(fail(e.class, e.message)),
            }
        }
        // Jobs that share sampler settings and image size render together.
        let mut completions = Vec::new();
        while !ready.is_empty() {
            let (lease, job, fetched, params) = ready.remove(0);
            let size = fetched.source.rgb.dimensions();
            let staging = |l: &acufarm_coordinator::store::LeasedJob| Storage::staging_key(&shared.run_name, l.job.0, l.attempt.0);
            let mut leases = vec![lease.clone()];
            let mut group = vec![(job, fetched, staging(&lease))];
            let mut rest = Vec::new();
            for (l, j, f, p) in ready {
                if p == params && f.source.rgb.dimensions() == size {
                    group.push((j, f, staging(&l)));
                    leases.push(l);
                } else {
                    rest.push((l, j, f, p));
                }
            }
            ready = rest;
            let results = executor::render_and_stage(&mut pipeline, &params, &group, &shared.output).await;
            for ((lease, (job, _, _)), result) in leases.iter().zip(&group).zip(results) {
                let outcome = match result {
                    Ok(staged) => commit(&shared, lease, job, staged, &worker).await,
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(row) => completions.push(CompletionRequest { job: lease.job, attempt: lease.attempt, result: serde_json::to_string(&row)? }),
                    Err(e) => failures.push(FailureRequest { job: lease.job, attempt: lease.attempt, class: e.class, message: e.message }),
                }
            }
        }
        let done = completions.len() as u64 + failures.len() as u64;
        if !completions.is_empty() {
            shared.store.complete(&completions, Utc::now()).await?;
        }
        if !failures.is_empty() {
            for f in &failures {
                tracing::warn!(job = %f.job, class = f.class.as_str(), "{}", f.message);
            }
            shared.store.fail(&failures, &shared.policy, Utc::now()).await?;
        }
        shared.progress.add(done, failures.len() as u64);
    }
}

/// Coordinator side of a completion: the same commit the farm's coordinator does.
async fn commit(
    shared: &Shared,
    lease: &acufarm_coordinator::store::LeasedJob,
    job: &JobSpec,
    staged: executor::Staged,
    worker: &str,
) -> Result<ManifestRow, executor::JobError> {
    let staged =
        StagedOutput { staging_key: staged.staging_key, sha256: staged.sha256, source_sha256: staged.source_sha256, timings: staged.timings, qa: staged.qa };
    let producer =
        Producer { run: &shared.run_name, bundle: shared.bundle.clone(), worker, execution_provider: &shared.execution_provider, attempt: lease.attempt.0 };
    Ok(runs::commit_output(&shared.input, &shared.output, job, &staged, producer).await?)
}
