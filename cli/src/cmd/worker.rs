//! `acufarm worker`: a GPU worker that pulls jobs from one or more coordinators until SIGTERM.
//! The bundle is loaded before any connection, so a bad bundle fails at once with its reason.

use acufarm_worker::agent::{self, AgentOptions};
use acufarm_worker::pipeline::engine::{Pipeline, PipelineOptions};
use acufarm_worker::pipeline::runtime::{self, RuntimeOptions};
use anyhow::bail;
use std::path::PathBuf;

/// `acufarm worker …`: run a worker, or (`worker release`) lift a worker's quarantine.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Command {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    args: Args,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Lift a worker's quarantine (after `[retry] quarantine_after` failures in a row) so it gets the run's jobs again.
    Release(super::admin::ReleaseArgs),
}

#[derive(clap::Args)]
pub struct Args {
    /// Coordinator URLs, comma-separated, tried in order, e.g. https://10.0.0.5:7171 (default: $ACUFARM_COORDINATOR).
    #[arg(long, value_name = "URL[,URL…]")]
    coordinator: Option<String>,
    /// Model bundle directory; the worker gets the jobs of runs submitted for this bundle.
    #[arg(long, required = true)]
    bundle: Option<PathBuf>,
    /// Execution providers in priority order, e.g. tensorrt,cuda,cpu.
    #[arg(long, default_value = "cpu")]
    ep: String,
    /// Images per render call and jobs per lease (halved automatically when the GPU runs out of memory).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Name shown to operators (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Threads per operator (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    client: super::client::ClientArgs,
}

/// A value from the command line, else from the environment; empty counts as missing.
fn arg_or_env(arg: Option<String>, var: &str) -> Option<String> {
    arg.or_else(|| std::env::var(var).ok()).filter(|v| !v.trim().is_empty())
}

pub fn command(command: Command) -> anyhow::Result<()> {
    match command.action {
        Some(Action::Release(args)) => super::admin::release(args),
        None => run(command.args),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let Some(bundle) = args.bundle else { bail!("no model bundle given; pass --bundle DIR") };
    // Cheap checks first, then the bundle, then the network.
    let coordinators = agent::parse_endpoints(&arg_or_env(args.coordinator, "ACUFARM_COORDINATOR").unwrap_or_default())?;
    let (token, tls) = (args.client.token(), args.client.tls());
    agent::check_credentials(&token, &tls)?;
    if args.batch == 0 {
        bail!("--batch 0 renders nothing; pass --batch 1 or more");
    }
    let eps = runtime::parse_ep_list(&args.ep)?;
    let options = PipelineOptions {
        runtime: RuntimeOptions { eps: eps.clone(), intra_threads: args.threads, ..RuntimeOptions::default() },
        max_batch: args.batch as usize,
        ..PipelineOptions::default()
    };
    let hostname = agent::hostname();
    let name = args.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| hostname.clone());
    let agent_options = AgentOptions { coordinators, token, tls, name, hostname, execution_providers: eps, batch: args.batch as usize };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(async {
        // Signals first: a SIGTERM while the bundle loads is a clean stop, not a kill.
        let shutdown = agent::Shutdown::install("acufarm worker").map_err(|e| agent::AgentError::Signals(e.to_string()))?;
        // Loading blocks this thread, which is not one of the runtime's workers.
        let pipeline = Pipeline::load(&bundle, &options)?;
        agent::run(pipeline, agent_options, shutdown).await.map_err(anyhow::Error::from)
    });
    // A render still running on its thread after a fatal error is not waited for.
    runtime.shutdown_background();
    result
}
