//! The flags every client of the coordinator shares (`acufarm worker` and the admin commands):
//! where the token comes from and the TLS settings for `https://` coordinators.

use acufarm_worker::agent::{ClientTls, TokenSource};
use std::path::PathBuf;

#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// File holding the coordinator's token (its first line), re-read when it changes; or
    /// ACUFARM_TOKEN_FILE (ACUFARM_TOKEN may hold the token itself).
    #[arg(long, env = "ACUFARM_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Deprecated: a token on the command line shows in the process list; use --token-file.
    #[arg(long, hide = true)]
    token: Option<String>,
    /// PEM CA certificate the coordinator's TLS certificate is signed by (default: the system's
    /// roots); or ACUFARM_CA_CERT.
    #[arg(long, env = "ACUFARM_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate for a coordinator with mutual TLS (with --client-key); or
    /// ACUFARM_CLIENT_CERT.
    #[arg(long, env = "ACUFARM_CLIENT_CERT", value_name = "PEM")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert; or ACUFARM_CLIENT_KEY.
    #[arg(long, env = "ACUFARM_CLIENT_KEY", value_name = "PEM")]
    client_key: Option<PathBuf>,
}

/// An empty setting (`ACUFARM_CA_CERT=`) counts as unset.
fn set(path: &Option<PathBuf>) -> Option<PathBuf> {
    path.clone().filter(|p| !p.as_os_str().is_empty())
}

impl ClientArgs {
    /// Where the token comes from: --token-file / ACUFARM_TOKEN_FILE, else the deprecated
    /// --token, else ACUFARM_TOKEN.
    pub fn token(&self) -> TokenSource {
        if let Some(path) = set(&self.token_file) {
            return TokenSource::File(path);
        }
        if let Some(token) = &self.token {
            eprintln!("acufarm: warning: --token is deprecated (the token shows in the process list); use --token-file FILE or ACUFARM_TOKEN_FILE");
            return TokenSource::Value(token.clone());
        }
        TokenSource::Value(std::env::var("ACUFARM_TOKEN").unwrap_or_default())
    }

    pub fn tls(&self) -> ClientTls {
        ClientTls { ca_cert: set(&self.ca_cert), client_cert: set(&self.client_cert), client_key: set(&self.client_key) }
    }
}
