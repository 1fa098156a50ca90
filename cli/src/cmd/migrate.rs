//! `acufarm migrate [--config FILE]`: applies the database migrations and exits — the
//! initContainer of a coordinator Deployment, or a step before starting replicas by hand. It reads
//! the same configuration as `acufarm coordinator` (only the database settings matter).

use acufarm_coordinator::{Config, PgStore};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The coordinator's TOML configuration; ACUFARM_* variables override it
    /// (ACUFARM_DATABASE_URL_FILE is the one that matters here).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load_database(args.config.as_deref(), |name| std::env::var(name).ok())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = PgStore::connect(config.database_url.expose()).await?;
        let applied = store.migrate().await?;
        match (applied.first(), applied.last()) {
            (Some(first), Some(last)) => eprintln!("acufarm migrate: applied {} migration(s), {first} to {last}", applied.len()),
            _ => eprintln!("acufarm migrate: the schema is up to date"),
        }
        Ok(())
    })
}
