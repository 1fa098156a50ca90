//! `acufarm`: the one binary. `main` parses arguments, sets up logging and hands over to a command.

mod cmd;
mod embedded;
mod telemetry;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

// The coordinator allocates and frees per job (JSON, protobuf, SQL rows) on every thread; glibc's
// allocator spent ~12% of the dispatch benchmark's process CPU in malloc/free and consolidation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "acufarm",
    version,
    about = "Landmark-preserving diffusion augmentation on ONNX Runtime",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 verification found problems, 4 timed out waiting."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a whole run on this machine (SQLite + local workers), resumable.
    Run(embedded::Args),
    /// Re-render one image with the bundle's img2img pipeline.
    Augment(cmd::augment::Args),
    /// Print the sigmas and UNet timesteps a sampler would walk.
    Schedule(cmd::schedule::Args),
    /// Measure landmark drift between original and augmented images (DESIGN §8 report).
    Drift(cmd::drift::DriftArgs),
    /// Print the 8 drift points (or the whole Face Mesh) MediaPipe's models find on images.
    Landmarks(cmd::drift::LandmarksArgs),
    /// Re-hash a run's outputs against its manifest and report every difference.
    Verify(cmd::verify::Args),
    /// Train AcuSim's example network on original, augmented and both, and compare them on test models.
    Evaluate(cmd::evaluate::Args),
    /// Run a GPU worker that pulls jobs from one or more coordinators (or `worker release NAME`).
    Worker(cmd::worker::Command),
    /// Serve the farm: the gRPC service workers and operators talk to (PostgreSQL + Redis).
    Coordinator(cmd::coordinator::Args),
    /// Apply the database migrations and exit (the coordinator's initContainer).
    Migrate(cmd::migrate::Args),
    /// Make the farm's certificates, tokens and keys (`secrets init --dir DIR`), keeping what exists.
    Secrets(cmd::secrets::Command),
    /// Submit a run spec to a coordinator.
    Submit(cmd::admin::SubmitArgs),
    /// Show runs, their shards and failures, and the live workers.
    Status(cmd::admin::StatusArgs),
    /// Queue failed jobs again, re-resolved against the current files and spec.
    Resubmit(cmd::admin::ResubmitArgs),
    /// Render chosen finished jobs again with new seeds (their reseed counter goes up by one).
    Regenerate(cmd::admin::RegenerateArgs),
    /// Cancel a run: unfinished jobs stop, late reports are refused.
    Cancel(cmd::admin::RunArgs),
    /// Pause a run: queued jobs wait, leased ones finish.
    Pause(cmd::admin::RunArgs),
    /// Resume a paused run.
    Resume(cmd::admin::RunArgs),
    /// Print a shell completion script (e.g. `acufarm completions bash > /etc/bash_completion.d/acufarm`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Console logs (text, or one JSON object per line with `ACUFARM_LOG_FORMAT=json`) filtered by
/// `ACUFARM_LOG` (default `warn`), plus the per-job log tails a worker sends with its failures
/// and, when an OTLP endpoint is set, the trace export (both kept at `info` whatever the console
/// shows).
fn init_logging(otel: Option<telemetry::OtelLayer>) -> Result<(), String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ACUFARM_LOG").unwrap_or_else(|_| "warn".into());
    let console = match std::env::var("ACUFARM_LOG_FORMAT").as_deref() {
        Ok("json") => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
        // Colours only on a terminal: a log file gets plain text.
        Ok("text") | Ok("") | Err(_) => {
            tracing_subscriber::fmt::layer().with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_writer(std::io::stderr).boxed()
        }
        Ok(other) => return Err(format!("ACUFARM_LOG_FORMAT = `{other}` is not a log format; use text or json")),
    };
    tracing_subscriber::registry()
        .with(otel.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
        .with(console.with_filter(filter))
        .with(acufarm_worker::jobloop::logtail::layer().with_filter(tracing_subscriber::filter::LevelFilter::INFO))
        .init();
    Ok(())
}

fn main() -> ExitCode {
    // One process-wide TLS crypto provider, before anything opens a connection: rustls refuses
    // to choose when a build holds more than one, and every crate here is pointed at aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let (service, config) = match &cli.command {
        Command::Coordinator(args) => ("acufarm-coordinator", args.config_path()),
        Command::Worker(_) => ("acufarm-worker", None),
        Command::Run(_) => ("acufarm-run", None),
        _ => ("acufarm", None),
    };
    let otel = match telemetry::endpoint(config).map(|endpoint| telemetry::layer(&endpoint, service)).transpose() {
        Ok(layer) => layer,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    if let Err(message) = init_logging(otel) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run(args) => embedded::run(args),
        Command::Augment(args) => cmd::augment::run(args),
        Command::Schedule(args) => cmd::schedule::run(args),
        Command::Drift(args) => cmd::drift::drift(args),
        Command::Landmarks(args) => cmd::drift::landmarks(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Evaluate(args) => cmd::evaluate::run(args),
        Command::Worker(args) => cmd::worker::command(args),
        Command::Coordinator(args) => cmd::coordinator::run(args),
        Command::Migrate(args) => cmd::migrate::run(args),
        Command::Secrets(command) => cmd::secrets::command(command),
        Command::Submit(args) => cmd::admin::submit(args),
        Command::Status(args) => cmd::admin::status(args),
        Command::Resubmit(args) => cmd::admin::resubmit(args),
        Command::Regenerate(args) => cmd::admin::regenerate(args),
        Command::Cancel(args) => cmd::admin::change(args, "cancel"),
        Command::Pause(args) => cmd::admin::change(args, "pause"),
        Command::Resume(args) => cmd::admin::change(args, "resume"),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "acufarm", &mut std::io::stdout());
            Ok(())
        }
    };
    telemetry::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", cmd::exit::report(&err));
            ExitCode::from(cmd::exit::code(&err))
        }
    }
}
