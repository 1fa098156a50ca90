//! `acufarm`: the one binary. `main` parses arguments, sets up logging and hands over to a command.

mod cmd;
mod embedded;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "acufarm", version, about = "Landmark-preserving diffusion augmentation on ONNX Runtime")]
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
    /// Re-hash a run's outputs against its manifest and report every difference.
    Verify(cmd::verify::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ACUFARM_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let result = match cli.command {
        Command::Run(args) => embedded::run(args),
        Command::Augment(args) => cmd::augment::run(args),
        Command::Schedule(args) => cmd::schedule::run(args),
        Command::Verify(args) => cmd::verify::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
