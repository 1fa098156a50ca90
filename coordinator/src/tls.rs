//! The coordinator's TLS listener (rustls): certificates read from PEM files and re-read when they
//! change, optional mutual TLS, and one accept loop that also takes plaintext connections — only
//! so a client that forgot `https://` hears one sentence saying so (the service interceptor
//! refuses every call that did not come over TLS) instead of a protocol error.
//!
//! Mutual TLS accepts a handshake without a client certificate for the same reason: the call is
//! then refused by the interceptor with a sentence naming `--client-cert`, before any service
//! code runs. A client certificate that is presented must chain to `tls_client_ca`, or the
//! handshake fails.

use crate::config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long a client may take to send its first byte and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The crypto provider: the process-wide one the binary installs, else aws-lc-rs (the only one
/// built in), so library users and tests need no set-up.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {what} {} ({e}); give a PEM file of certificates", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {} holds no PEM certificate; give the certificate (chain) in PEM", path.display()));
    }
    Ok(certs)
}

/// Builds the server configuration from the files as they are now.
fn build(files: &TlsFiles) -> Result<ServerConfig, String> {
    let provider = provider();
    let certs = read_certs(&files.cert, "tls_cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("cannot read the private key tls_key {} ({e}); give the key of tls_cert as a PEM file", files.key.display()))?;
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(|e| format!("cannot set up TLS ({e})"))?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "tls_client_ca")? {
                roots.add(cert).map_err(|e| {
                    format!("tls_client_ca {} holds a certificate that cannot be a CA ({e}); give the CA that signs client certificates", path.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("cannot use tls_client_ca {} ({e}); give the CA that signs client certificates", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_key {} does not fit tls_cert {} ({e}); give the certificate's own key", files.key.display(), files.cert.display()))?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The TLS settings in use, replaced whole when the files change.
pub struct ServerTls {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let config = build(&files)?;
        Ok(Self { files, config: RwLock::new(Arc::new(config)) })
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The certificate, key and client CA files, for the reload watch.
    pub fn files(&self) -> Vec<PathBuf> {
        [Some(&self.files.cert), Some(&self.files.key), self.files.client_ca.as_ref()].into_iter().flatten().cloned().collect()
    }

    /// Reads the files again; new connections use the result. On an error (say the key written
    /// before its certificate) the settings in use stay.
    pub fn reload(&self) -> Result<(), String> {
        let config = build(&self.files)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the service learns about a connection (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The connection is TLS.
    pub tls: bool,
    /// The client presented a certificate that chains to `tls_client_ca`.
    pub client_cert: bool,
}

/// An accepted connection: TLS, or plaintext only to be refused.
pub enum Conn {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, ConnInfo),
    Plain(TcpStream, ConnInfo),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Tls(_, info) | Conn::Plain(_, info) => *info,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            Conn::Plain(stream, _) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write(cx, buf),
            Conn::Plain(stream, _) => Pin::new(stream).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_flush(cx),
            Conn::Plain(stream, _) => Pin::new(stream).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            Conn::Plain(stream, _) => Pin::new(stream).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
            Conn::Plain(stream, _) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tls(stream, _) => stream.is_write_vectored(),
            Conn::Plain(stream, _) => stream.is_write_vectored(),
        }
    }
}

/// Tells TLS from plaintext by the first byte and does the handshake.
async fn accept_one(stream: TcpStream, remote: SocketAddr, tls: &ServerTls) -> Result<Conn, String> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await.map_err(|_| "sent nothing".to_string())?.map_err(|e| e.to_string())?;
    if peeked == 0 {
        return Err("closed the connection at once".into());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return Ok(Conn::Plain(stream, ConnInfo { remote: Some(remote), tls: false, client_cert: false }));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "did not finish the TLS handshake".to_string())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let client_cert = stream.get_ref().1.peer_certificates().is_some_and(|certs| !certs.is_empty());
    Ok(Conn::Tls(Box::new(stream), ConnInfo { remote: Some(remote), tls: true, client_cert }))
}

/// Accepts connections on `listener` for as long as the returned stream lives; handshakes run
/// in their own tasks, so a slow client never holds up the others.
pub fn incoming(listener: tokio::net::TcpListener, tls: Arc<ServerTls>) -> impl futures_util::Stream<Item = Result<Conn, std::io::Error>> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Conn>(64);
    let accept = tokio::spawn(async move {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accepting a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Small replies must not wait for delayed ACKs (see `serve`).
            let _ = stream.set_nodelay(true);
            let (tls, sender) = (tls.clone(), sender.clone());
            tokio::spawn(async move {
                match accept_one(stream, remote, &tls).await {
                    Ok(conn) => {
                        let _ = sender.send(conn).await;
                    }
                    Err(reason) => tracing::info!(%remote, "refused a connection: it {reason}"),
                }
            });
        }
    });
    // Stopping the server drops the stream, which stops the accept loop.
    let guard = AbortOnDrop(accept);
    futures_util::stream::unfold((receiver, guard), |(mut receiver, guard)| async move { receiver.recv().await.map(|conn| (Ok(conn), (receiver, guard))) })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Notices when files change (content, not just times: a Kubernetes Secret update swaps a
/// symlink, and editors may keep the modification time).
#[derive(Default)]
pub struct FileWatch {
    seen: std::collections::HashMap<PathBuf, Option<Vec<u8>>>,
}

impl FileWatch {
    pub fn new(files: &[PathBuf]) -> Self {
        Self { seen: files.iter().map(|path| (path.clone(), std::fs::read(path).ok())).collect() }
    }

    /// Whether any file differs from the last look.
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, seen) in &mut self.seen {
            let now = std::fs::read(path).ok();
            if now != *seen {
                *seen = now;
                changed = true;
            }
        }
        changed
    }
}
