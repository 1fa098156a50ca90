//! `acufarm coordinator [--config FILE]`: the farm's gRPC service on PostgreSQL (+ Redis).

use acufarm_coordinator::{Config, Coordinator, PgStore};
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// TOML configuration (see examples/coordinator.toml); ACUFARM_* environment variables
    /// override its keys (ACUFARM_LISTEN, ACUFARM_DATABASE_URL_FILE, ACUFARM_TOKEN_FILE,
    /// ACUFARM_TLS_CERT, …). SIGHUP re-reads the token and certificate files.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Args {
    /// The config file, for the settings read before it is loaded in full (trace export).
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), |name| std::env::var(name).ok())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(?config, "starting coordinator");
    let store = PgStore::connect(config.database_url.expose()).await?;
    store.migrate().await?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick a free address with ACUFARM_LISTEN or `listen` in the config", config.listen))?;
    let address = listener.local_addr()?;
    let http = match config.http_listen.trim() {
        "" => None,
        at => Some(tokio::net::TcpListener::bind(at).await.with_context(|| {
            format!("cannot listen for HTTP on {at}; pick a free address with ACUFARM_HTTP_LISTEN or `http_listen` in the config (or `off` for no HTTP)")
        })?),
    };
    let tls = config.tls().is_some();
    let coordinator = Coordinator::new(store, config).map_err(anyhow::Error::msg)?;
    let reloader = coordinator.clone();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reloader.reload_secrets();
        }
    });
    // One signal stops both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.send_replace(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    if let Some(http) = http {
        let http_address = http.local_addr()?;
        eprintln!("acufarm coordinator: HTTP on {}://{http_address} (/healthz, /readyz, /metrics)", if tls { "https" } else { "http" });
        let server = acufarm_coordinator::http::serve(coordinator.clone(), http, until_stopped(stopped.clone()));
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!("the HTTP server stopped: {error}");
            }
        });
    }
    eprintln!("acufarm coordinator: listening on {address}{}", if tls { " (TLS)" } else { "" });
    coordinator.serve(listener, until_stopped(stopped)).await.context("the gRPC server stopped")?;
    eprintln!("acufarm coordinator: stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
