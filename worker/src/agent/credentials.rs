//! What a client (the worker, or the CLI's admin commands) proves itself with: the token, read
//! from a file and re-read when the file changes (so a rotated token reaches a running worker
//! without a restart), and the TLS settings an `https://` endpoint is reached with — the CA
//! that signed the coordinator's certificate (else the system's roots) and, for mutual TLS, a
//! client certificate and key, read again at every connection so rotated files are picked up.

use super::AgentError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How often a token file is looked at for a change, at most (on the next call after that).
const TOKEN_RECHECK: Duration = Duration::from_secs(1);

/// Where the token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file whose first token line is the token (`--token-file`, `ACUFARM_TOKEN_FILE`).
    File(PathBuf),
    /// The value itself (`ACUFARM_TOKEN`, or the deprecated `--token`).
    Value(String),
}

impl std::fmt::Debug for TokenSource {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::File(path) => write!(f, "File({})", path.display()),
            TokenSource::Value(_) => f.write_str("Value(***)"),
        }
    }
}

/// The token as a header value, from the text of a token setting: its first line that is not
/// blank or a `#` comment.
fn header(text: &str, from: &str) -> Result<MetadataValue<Ascii>, AgentError> {
    let token = text.lines().map(str::trim).find(|line| !line.is_empty() && !line.starts_with('#')).ok_or(AgentError::NoToken)?;
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AgentError::BadToken { from: from.to_string() });
    }
    format!("Bearer {token}").parse().map_err(|_| AgentError::BadToken { from: from.to_string() })
}

fn read_token_file(path: &Path) -> Result<String, AgentError> {
    std::fs::read_to_string(path).map_err(|e| AgentError::TokenFile { path: path.display().to_string(), reason: e.to_string() })
}

struct Current {
    header: MetadataValue<Ascii>,
    /// The file's content the header was read from.
    text: String,
    checked: Instant,
}

/// The token every call carries, kept up to date with its file.
#[derive(Clone)]
pub struct Token {
    source: TokenSource,
    current: Arc<Mutex<Current>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({:?})", self.source)
    }
}

impl Token {
    /// Reads the token once; an unreadable file or an unusable token is an error now, before any
    /// connection.
    pub fn load(source: TokenSource) -> Result<Self, AgentError> {
        let (text, from) = match &source {
            TokenSource::File(path) => (read_token_file(path)?, format!("token file {}", path.display())),
            TokenSource::Value(value) => (value.clone(), "ACUFARM_TOKEN".to_string()),
        };
        let header = header(&text, &from)?;
        Ok(Self { source, current: Arc::new(Mutex::new(Current { header, text, checked: Instant::now() })) })
    }

    /// The header to send: re-reads the token file when it was last read more than a second ago
    /// and uses its new token when it changed. A file that cannot be read or holds no usable
    /// token leaves the token in use (logged), so a rotation half done refuses nothing.
    pub fn header(&self) -> MetadataValue<Ascii> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let TokenSource::File(path) = &self.source
            && current.checked.elapsed() >= TOKEN_RECHECK
        {
            current.checked = Instant::now();
            self.refresh(&mut current, path);
        }
        current.header.clone()
    }

    /// Re-reads the token file now; returns whether the token changed. Called when the
    /// coordinator refuses the token, so a token rotated on both sides in quick succession is
    /// picked up before the refusal counts.
    pub fn reread(&self) -> bool {
        let TokenSource::File(path) = &self.source else { return false };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.checked = Instant::now();
        self.refresh(&mut current, path)
    }

    fn refresh(&self, current: &mut Current, path: &Path) -> bool {
        match read_token_file(path) {
            Ok(text) if text == current.text => false,
            Ok(text) => match header(&text, &format!("token file {}", path.display())) {
                Ok(header) => {
                    tracing::info!(file = %path.display(), "the token file changed; sending its new token");
                    current.header = header;
                    current.text = text;
                    true
                }
                Err(error) => {
                    tracing::warn!("kept the token in use: {error}");
                    current.text = text;
                    false
                }
            },
            Err(error) => {
                tracing::warn!("kept the token in use: {error}");
                false
            }
        }
    }
}

/// TLS settings for `https://` endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM CA certificate(s) the coordinator's certificate must chain to; the system's roots
    /// when not given.
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS, with `client_key`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn read_pem(path: &Path, flag: &'static str) -> Result<Vec<u8>, AgentError> {
    std::fs::read(path).map_err(|e| AgentError::TlsFile { flag, path: path.display().to_string(), reason: e.to_string() })
}

impl ClientTls {
    /// Checks the settings fit together and the files can be read, before any connection.
    pub fn check(&self) -> Result<(), AgentError> {
        self.config().map(|_| ())
    }

    fn config(&self) -> Result<ClientTlsConfig, AgentError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_cert {
            Some(path) => config.ca_certificate(Certificate::from_pem(read_pem(path, "--ca-cert")?)),
            None => config.with_native_roots(),
        };
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Ok(config.identity(Identity::from_pem(read_pem(cert, "--client-cert")?, read_pem(key, "--client-key")?))),
            (None, None) => Ok(config),
            _ => Err(AgentError::ClientCertPair),
        }
    }

    /// The endpoint for `url`, with TLS when it is `https://` (files read now, so rotated
    /// certificates are used from the next connection on).
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, AgentError> {
        let bad = |reason: String| AgentError::BadEndpoint { url: url.to_string(), reason };
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| bad(super::link::error_chain(&e)))?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        endpoint.tls_config(self.config()?).map_err(|e| bad(super::link::error_chain(&e)))
    }
}

/// A TLS failure while connecting, as the sentence a person can act on; `None` when the error is
/// not about TLS (a coordinator that is down is retried, not reported this way).
pub fn tls_failure(endpoint: &str, chain: &str) -> Option<String> {
    let lower = chain.to_ascii_lowercase();
    if lower.contains("invalid peer certificate") || lower.contains("unknownissuer") || lower.contains("certificate verify failed") {
        return Some(format!(
            "cannot trust the TLS certificate of coordinator {endpoint} ({chain}); pass --ca-cert (or ACUFARM_CA_CERT) with the CA that signed it, and check the URL's host name is in the certificate"
        ));
    }
    if lower.contains("certificate required")
        || lower.contains("certificaterequired")
        || lower.contains("unknownca")
        || lower.contains("bad certificate")
        || lower.contains("badcertificate")
    {
        return Some(format!(
            "coordinator {endpoint} refused this client's certificate ({chain}); pass --client-cert and --client-key (or ACUFARM_CLIENT_CERT and ACUFARM_CLIENT_KEY) with a certificate signed by the coordinator's tls_client_ca"
        ));
    }
    if lower.contains("corrupt message")
        || lower.contains("invalidcontenttype")
        || lower.contains("wrong version number")
        || lower.contains("received corrupt message")
    {
        return Some(format!("coordinator {endpoint} does not speak TLS ({chain}); use an http:// URL for it, or turn TLS on there (tls_cert, tls_key)"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_the_first_token_line_and_follows_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "# farm token\n  old-token \n").unwrap();
        let token = Token::load(TokenSource::File(path.clone())).unwrap();
        assert_eq!(token.header(), "Bearer old-token");
        std::fs::write(&path, "new-token\n").unwrap();
        assert!(token.reread(), "a changed file is noticed");
        assert_eq!(token.header(), "Bearer new-token");
        assert!(!token.reread(), "an unchanged file is not a change");
        // A file emptied mid-rotation keeps the token in use.
        std::fs::write(&path, "").unwrap();
        assert!(!token.reread());
        assert_eq!(token.header(), "Bearer new-token");
        assert!(!format!("{token:?}").contains("new-token"));
    }

    #[test]
    fn unusable_tokens_and_tls_settings_are_refused_with_the_fix() {
        let missing = Token::load(TokenSource::File("/nonexistent/token".into())).unwrap_err().to_string();
        assert!(missing.starts_with("cannot read the token file /nonexistent/token"), "{missing}");
        assert!(matches!(Token::load(TokenSource::Value("  \n".into())), Err(AgentError::NoToken)));
        let bad = Token::load(TokenSource::Value("s3cr et".into())).unwrap_err().to_string();
        assert!(bad.contains("ACUFARM_TOKEN") && !bad.contains("s3cr"), "{bad}");
        assert!(!format!("{:?}", TokenSource::Value("s3cret".into())).contains("s3cret"));

        let half = ClientTls { client_cert: Some("/c.pem".into()), ..ClientTls::default() };
        assert!(half.check().unwrap_err().to_string().contains("--client-cert and --client-key go together"));
        let missing = ClientTls { ca_cert: Some("/nonexistent/ca.pem".into()), ..ClientTls::default() };
        assert!(missing.check().unwrap_err().to_string().starts_with("cannot read --ca-cert /nonexistent/ca.pem"));
        // Plain http:// needs no TLS files at all.
        assert!(missing.endpoint("http://127.0.0.1:7171").is_ok());
    }

    #[test]
    fn tls_failures_become_sentences() {
        let untrusted = tls_failure("https://c:1", "invalid peer certificate: UnknownIssuer").unwrap();
        assert!(untrusted.contains("--ca-cert"), "{untrusted}");
        let refused = tls_failure("https://c:1", "received fatal alert: CertificateRequired").unwrap();
        assert!(refused.contains("--client-cert"), "{refused}");
        let plain = tls_failure("https://c:1", "received corrupt message of type InvalidContentType").unwrap();
        assert!(plain.contains("does not speak TLS"), "{plain}");
        assert_eq!(tls_failure("http://c:1", "tcp connect error: Connection refused (os error 111)"), None);
    }
}
