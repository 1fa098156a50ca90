//! A minimal HTTP/1.1 client for the benchmarks: keep-alive GETs with a bearer token (bodies
//! with a Content-Length, as the API sends them) and a server-sent-events reader that counts
//! events. Only what the benchmarks need; the tests use curl and a real browser.

use anyhow::{Context, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

impl Connection {
    pub async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.context("connecting to the coordinator's HTTP port")?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buffer: Vec::new() })
    }

    /// GET `path`; returns the status and the body.
    pub async fn get(&mut self, path: &str, token: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nConnection: keep-alive\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await?;
        let head_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_string();
        let status: u16 = head.split(' ').nth(1).and_then(|code| code.parse().ok()).context("a status line")?;
        let length: usize = head
            .lines()
            .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
            .context("a Content-Length")?
            .parse()?;
        let total = head_end + 4 + length;
        while self.buffer.len() < total {
            self.fill().await?;
        }
        let body = self.buffer[head_end + 4..total].to_vec();
        self.buffer.drain(..total);
        Ok((status, body))
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 64 << 10];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the coordinator closed the connection");
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Reads `path` as an event stream until cancelled, adding each event received to `events`.
pub async fn follow_events(addr: std::net::SocketAddr, path: String, token: String, events: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut chunk = vec![0u8; 64 << 10];
    let mut carry = Vec::new();
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        carry.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(at) = find(&carry[start..], b"\nevent:") {
            events.fetch_add(1, Ordering::Relaxed);
            start += at + 7;
        }
        carry.drain(..start);
        // Keep only a tail long enough to hold a split marker.
        if carry.len() > 16 {
            carry.drain(..carry.len() - 16);
        }
    }
}
