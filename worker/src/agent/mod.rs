//! The remote worker agent (`acufarm worker`): registers with one or more coordinators and runs
//! the one job loop ([`crate::jobloop`]) over gRPC.
//!
//! `link` holds the connection (registration, reconnects rotating through the endpoints, retries
//! of every report until it is answered), `credentials` the token and TLS settings, and `source`
//! the loop's job source over them. SIGTERM or SIGINT stops leasing, finishes what is in hand and
//! exits; a second signal quits at once.

mod credentials;
mod link;
mod source;

pub use credentials::{ClientTls, Token, TokenSource, tls_failure};
pub use link::{Auth, error_chain, parse_endpoints};

use crate::jobloop::{self, LoopOptions, Stopped};
use crate::pipeline::engine::Pipeline;
use crate::pipeline::runtime::Ep;
use acufarm_proto::RegisterRequest;
pub use jobloop::Shutdown;
use link::Link;
use source::{Cache, GrpcSource};
use std::sync::{Arc, Mutex};

/// Why the agent stopped; each message names the problem and the fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    #[error("no coordinator given; pass --coordinator http://host:7171 (several separated by commas) or set ACUFARM_COORDINATOR")]
    NoEndpoint,
    #[error("invalid coordinator URL `{url}`: {reason}; pass one like http://127.0.0.1:7171")]
    BadEndpoint { url: String, reason: String },
    #[error("no token given; pass --token-file FILE (or set ACUFARM_TOKEN_FILE) holding the coordinator's token")]
    NoToken,
    #[error("the token in {from} contains characters a request header cannot carry; put the coordinator's token there (printable ASCII, no spaces)")]
    BadToken { from: String },
    #[error("cannot read the token file {path} ({reason}); check --token-file / ACUFARM_TOKEN_FILE")]
    TokenFile { path: String, reason: String },
    #[error("cannot read {flag} {path} ({reason}); check the path")]
    TlsFile { flag: &'static str, path: String, reason: String },
    #[error("--client-cert and --client-key go together (ACUFARM_CLIENT_CERT and ACUFARM_CLIENT_KEY); give both or neither")]
    ClientCertPair,
    #[error("coordinator {endpoint} refused this worker: {reason}")]
    Unauthenticated { endpoint: String, reason: String },
    #[error("{0}")]
    Tls(String),
    #[error("coordinator {endpoint} refused to register this worker ({reason}); fix what it names and start the worker again")]
    RegisterRefused { endpoint: String, reason: String },
    #[error(transparent)]
    Stopped(#[from] Stopped),
    #[error("cannot listen for SIGTERM and SIGINT ({0}); the worker needs them to stop cleanly")]
    Signals(String),
}

/// What the agent needs besides the loaded pipeline.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Coordinator URLs as returned by [`parse_endpoints`], tried in this order.
    pub coordinators: Vec<String>,
    /// Where the token comes from; it is sent as `authorization: Bearer <token>`.
    pub token: TokenSource,
    /// TLS settings for `https://` coordinators.
    pub tls: ClientTls,
    /// Worker name shown to operators (e.g. the host name).
    pub name: String,
    /// The machine's host name.
    pub hostname: String,
    /// Execution providers the sessions were opened with, in priority order.
    pub execution_providers: Vec<Ep>,
    /// Images per render call and jobs per lease (halved on out-of-memory, never below one).
    pub batch: usize,
}

/// Checks the token and TLS settings can be used, without connecting (so a bad one fails before
/// the bundle loads).
pub fn check_credentials(token: &TokenSource, tls: &ClientTls) -> Result<(), AgentError> {
    Token::load(token.clone())?;
    tls.check()
}

/// The machine's host name (`localhost` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The first GPU's name and memory from `nvidia-smi`, or nothing when it cannot tell.
fn detect_gpu() -> (String, u64) {
    let output = std::process::Command::new("nvidia-smi").args(["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]).output();
    let Some(output) = output.ok().filter(|o| o.status.success()) else {
        return (String::new(), 0);
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or_default();
    match line.rsplit_once(',') {
        Some((name, mib)) => (name.trim().to_string(), mib.trim().parse::<u64>().unwrap_or(0) * 1024 * 1024),
        None => (line.trim().to_string(), 0),
    }
}

/// Runs the agent until a signal drains it (`Ok`) or the worker must stop (`Err`). Install the
/// signal handlers with [`Shutdown::install`] before loading the pipeline, so a signal during the
/// load is a clean stop too.
///
/// Prints `acufarm worker: registered as <id> with <endpoint>` on stderr at each registration and
/// `acufarm worker: drained, exiting` when it stops after a signal.
pub async fn run(pipeline: Pipeline, options: AgentOptions, shutdown: Shutdown) -> Result<(), AgentError> {
    let auth = Auth::new(Token::load(options.token.clone())?);
    options.tls.check()?;
    // SIGHUP re-reads the token file at once (as the coordinator does its files) rather than
    // ending the worker, which is what it would do unhandled.
    if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let token = auth.0.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                if !token.reread() {
                    tracing::info!("SIGHUP: the token in use stays (its file is unchanged or unusable)");
                }
            }
        });
    }
    if options.coordinators.is_empty() {
        return Err(AgentError::NoEndpoint);
    }
    let bundle = pipeline.bundle();
    let (bundle_name, bundle_sha256) = (bundle.manifest.name.clone(), bundle.sha256.clone());
    let eps: Vec<String> = options.execution_providers.iter().map(ToString::to_string).collect();
    let (gpu, gpu_memory_bytes) = if options.execution_providers.iter().any(|ep| *ep != Ep::Cpu) { detect_gpu() } else { (String::new(), 0) };
    let batch = options.batch.max(1);
    let register = RegisterRequest {
        name: options.name.clone(),
        hostname: options.hostname.clone(),
        execution_providers: eps.clone(),
        gpu,
        gpu_memory_bytes,
        bundle_name: bundle_name.clone(),
        bundle_sha256: bundle_sha256.clone(),
        max_batch: u32::try_from(batch).unwrap_or(u32::MAX),
        version: env!("CARGO_PKG_VERSION").to_string(),
        worker_id: String::new(),
    };
    let link = Arc::new(Link::new(options.coordinators.clone(), auth, options.tls.clone(), register));
    let source = Arc::new(GrpcSource {
        link,
        name: options.name.clone(),
        bundle_name,
        bundle_sha256,
        execution_provider: eps.join(","),
        cache: Mutex::new(Cache::default()),
    });
    jobloop::run(source, pipeline, LoopOptions { worker: options.name.clone(), batch }, shutdown).await?;
    eprintln!("acufarm worker: drained, exiting");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_a_user_causes_name_the_fix() {
        let e =
            AgentError::Unauthenticated { endpoint: "http://127.0.0.1:7171".into(), reason: "the coordinator refused the token; pass …".into() }.to_string();
        assert_eq!(e, "coordinator http://127.0.0.1:7171 refused this worker: the coordinator refused the token; pass …");
        let none = check_credentials(&TokenSource::Value(String::new()), &ClientTls::default()).unwrap_err().to_string();
        assert!(none.contains("--token-file") && none.contains("ACUFARM_TOKEN_FILE"), "{none}");
        assert!(check_credentials(&TokenSource::Value("t".into()), &ClientTls::default()).is_ok());
    }

    #[test]
    fn the_host_name_is_never_empty() {
        assert!(!hostname().is_empty());
    }
}
