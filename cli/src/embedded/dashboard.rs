//! `acufarm run SPEC --dashboard [ADDR]`: the coordinator's HTTP server (the same dashboard, API
//! and metrics) over the embedded run's SQLite store. Sign-in uses a token made for this process
//! and written, readable by its owner only, to `<state-dir>/dashboard.token`.

use acufarm_coordinator::{Config, Coordinator, SqliteStore};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The running dashboard: its address, token file, and the coordinator the job loops tell about
/// their progress.
pub struct Dashboard {
    pub coordinator: Coordinator<SqliteStore>,
    pub url: String,
    pub token_file: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A fresh random token (64 hex digits).
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("the operating system's random source failed ({e})"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write the dashboard token to {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

impl Dashboard {
    /// Serves the dashboard on `address` over `store`.
    pub async fn start(store: SqliteStore, address: &str, state_dir: &Path) -> anyhow::Result<Self> {
        let token = new_token()?;
        let token_file = state_dir.join("dashboard.token");
        write_private(&token_file, &format!("{token}\n"))?;
        let env = |name: &str| match name {
            "ACUFARM_DATABASE_URL" => Some("sqlite://embedded".to_string()),
            "ACUFARM_TOKEN_FILE" => Some(token_file.display().to_string()),
            "ACUFARM_HTTP_LISTEN" => Some(address.to_string()),
            _ => None,
        };
        let config = Config::load(None, env)?;
        let coordinator = Coordinator::new(store, config).map_err(|e| anyhow::anyhow!(e))?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot serve the dashboard on {address}; pass --dashboard another address (e.g. 127.0.0.1:7180)"))?;
        let local = listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let server = tokio::spawn(acufarm_coordinator::http::serve(coordinator.clone(), listener, shutdown));
        Ok(Self { coordinator, url: format!("http://{local}/"), token_file, stop, server })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
    }
}
