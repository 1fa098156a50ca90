//! Private services for one test: a PostgreSQL cluster of its own (initdb in a temporary folder,
//! run as the `postgres` OS user), a `redis-server` child and a `moto_server` (S3) child, each on
//! a free loopback port — or, for the multi-node rehearsal, on an address of a network namespace
//! (a [`Place`]). The system's PostgreSQL and Redis are never touched. Everything is stopped when
//! dropped, also while a failing test unwinds.

use super::proc::Proc;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A port nothing listens on right now (bind port 0, read it, let go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where a service runs: inside a network namespace (its commands start with `ip netns exec NS`)
/// or on the host, and the address it listens on and is reached at.
#[derive(Clone, Debug)]
pub struct Place {
    pub netns: Option<String>,
    pub host: String,
}

impl Place {
    pub fn loopback() -> Place {
        Place { netns: None, host: "127.0.0.1".into() }
    }

    /// `program` run in this place.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// A port to listen on: any free one on the host; in a namespace of its own, `fixed`.
    fn port(&self, fixed: u16) -> u16 {
        if self.netns.is_some() { fixed } else { free_port() }
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The newest PostgreSQL server binaries installed (`/usr/lib/postgresql/<version>/bin`).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/setup.sh dev installs them)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no /usr/lib/postgresql/*/bin/initdb").1
}

/// A private PostgreSQL cluster listening on 127.0.0.1:`port`, data and socket in a temporary
/// folder owned by `postgres`.
pub struct Postgres {
    pub port: u16,
    place: Place,
    /// The server options it was started with (`pg_ctl -o`), to start it again.
    opts: String,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The CA of the server certificate when the cluster accepts TLS connections only.
    tls_ca: Option<PathBuf>,
}

/// The server certificate, its key and CA of a service that speaks TLS (PEM files).
#[allow(dead_code)] // used by the TLS tests only
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: &'a Path,
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(None, Place::loopback())
    }

    /// A cluster in `place` (a network namespace's address), reachable from its subnet.
    #[allow(dead_code)] // used by the rehearsal only
    pub fn start_in(place: &Place) -> Postgres {
        Self::start_with(None, place.clone())
    }

    /// A cluster with `ssl = on` that refuses every TCP connection without TLS (`hostssl` only).
    #[allow(dead_code)] // used by the TLS tests only
    pub fn start_tls(tls: TlsFiles<'_>) -> Postgres {
        Self::start_with(Some(tls), Place::loopback())
    }

    fn start_with(tls: Option<TlsFiles<'_>>, place: Place) -> Postgres {
        let bin = pg_bin();
        let dir = tempfile::Builder::new().prefix("acufarm-pg-").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sock")).unwrap();
        if let Some(tls) = &tls {
            // PostgreSQL wants its key owned by itself and private.
            std::fs::copy(tls.cert, dir.path().join("server.crt")).unwrap();
            std::fs::copy(tls.key, dir.path().join("server.key")).unwrap();
            std::fs::set_permissions(dir.path().join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        }
        let chown = Command::new("chown").arg("-R").arg("postgres:postgres").arg(dir.path()).output().unwrap();
        assert!(chown.status.success(), "chown postgres {}: {}", dir.path().display(), text(&chown));
        let mut pg = Postgres { port: place.port(5432), place, opts: String::new(), bin, dir, tls_ca: tls.as_ref().map(|tls| tls.ca.to_path_buf()) };
        let init = pg.as_postgres(
            &pg.bin.join("initdb"),
            &["-D", &pg.data().display().to_string(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"],
        );
        assert!(init.status.success(), "initdb failed: {}", text(&init));
        let mut opts = format!("-p {} -k {} -c listen_addresses={} -c fsync=on", pg.port, pg.dir.path().join("sock").display(), pg.place.host);
        if pg.place.netns.is_some() {
            // Clients come from the namespace's subnet (the rehearsal's other nodes).
            let hba = pg.data().join("pg_hba.conf");
            std::fs::write(&hba, "local all all trust\nhost all all samenet trust\n").unwrap();
        }
        if tls.is_some() {
            let hba = pg.data().join("pg_hba.conf");
            std::fs::write(&hba, "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n").unwrap();
            let chown = Command::new("chown").arg("postgres:postgres").arg(&hba).output().unwrap();
            assert!(chown.status.success(), "chown {}: {}", hba.display(), text(&chown));
            let (cert, key) = (pg.dir.path().join("server.crt"), pg.dir.path().join("server.key"));
            opts.push_str(&format!(" -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", cert.display(), key.display()));
        }
        pg.opts = opts.clone();
        let log = pg.log_path().display().to_string();
        let start = pg.pg_ctl(&["-o", &opts, "-l", &log, "-w", "-t", "60", "start"]);
        assert!(start.status.success(), "pg_ctl start failed: {}\n{}", text(&start), pg.log_tail(30));
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Runs a program as the `postgres` OS user (the tests run as root, which PostgreSQL refuses).
    fn as_postgres(&self, program: &Path, args: &[&str]) -> Output {
        self.place.command("runuser").arg("-u").arg("postgres").arg("--").arg(program).args(args).current_dir(self.dir.path()).output().unwrap()
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.as_postgres(&self.bin.join("pg_ctl"), &all)
    }

    pub fn url(&self) -> String {
        match &self.tls_ca {
            Some(ca) => format!("postgres://postgres@{}:{}/postgres?sslmode=verify-full&sslrootcert={}", self.place.host, self.port, ca.display()),
            None => format!("postgres://postgres@{}:{}/postgres", self.place.host, self.port),
        }
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server comes back on the same port.
    pub fn restart(&self) {
        // -l again: without it the new postmaster would write to (and hold open) our pipe.
        let log = self.log_path().display().to_string();
        let out = self.pg_ctl(&["-m", "fast", "-l", &log, "-w", "-t", "60", "restart"]);
        assert!(out.status.success(), "pg_ctl restart failed: {}\n{}", text(&out), self.log_tail(30));
    }

    /// Runs SQL with psql over TCP; returns the unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", &self.place.host, "-U", "postgres", "-d", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap();
        assert!(out.status.success(), "psql `{sql}` failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `pg_ctl stop -m fast`: the server goes away until [`Postgres::start_again`].
    #[allow(dead_code)] // used by the readiness test only
    pub fn stop(&self) {
        let out = self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
        assert!(out.status.success(), "pg_ctl stop failed: {}\n{}", text(&out), self.log_tail(30));
    }

    /// Starts a stopped cluster again with the settings it first had.
    #[allow(dead_code)] // used by the readiness test only
    pub fn start_again(&self) {
        let log = self.log_path().display().to_string();
        let out = self.pg_ctl(&["-o", &self.opts, "-l", &log, "-w", "-t", "60", "start"]);
        assert!(out.status.success(), "pg_ctl start failed: {}\n{}", text(&out), self.log_tail(30));
    }

    /// The postmaster's pid while the cluster runs.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!("----- postgres ({}) -----\n{}\n", self.log_path().display(), all[all.len().saturating_sub(lines)..].join("\n"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let out = self.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]);
        if !out.status.success() && self.pid().is_some() {
            eprintln!("pg_ctl stop failed: {}", text(&out));
        }
    }
}

/// A private `redis-server` child without persistence.
pub struct Redis {
    pub port: u16,
    pub proc: Proc,
    host: String,
    /// The CA of the server certificate when Redis speaks TLS only (no plaintext port).
    tls_ca: Option<PathBuf>,
}

impl Redis {
    pub fn start(log_dir: &Path) -> Redis {
        Self::start_with(log_dir, None, &Place::loopback())
    }

    /// A Redis in `place` (a network namespace's address).
    #[allow(dead_code)] // used by the rehearsal only
    pub fn start_in(log_dir: &Path, place: &Place) -> Redis {
        Self::start_with(log_dir, None, place)
    }

    /// A Redis that listens with TLS only (`--port 0 --tls-port P`); clients need no certificate.
    #[allow(dead_code)] // used by the TLS tests only
    pub fn start_tls(log_dir: &Path, tls: TlsFiles<'_>) -> Redis {
        Self::start_with(log_dir, Some(tls), &Place::loopback())
    }

    fn start_with(log_dir: &Path, tls: Option<TlsFiles<'_>>, place: &Place) -> Redis {
        let port = place.port(6379);
        let host = place.host.clone();
        let mut cmd = place.command("redis-server");
        cmd.args(["--bind", &host, "--save", "", "--appendonly", "no", "--daemonize", "no"]);
        if place.netns.is_some() {
            // Reached from the namespace's subnet without a password: the subnet is the test's own.
            cmd.args(["--protected-mode", "no"]);
        }
        match &tls {
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "no"]);
                cmd.arg("--tls-cert-file").arg(tls.cert).arg("--tls-key-file").arg(tls.key).arg("--tls-ca-cert-file").arg(tls.ca);
            }
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
        }
        let mut proc = Proc::spawn("redis", cmd, log_dir);
        let redis = |proc| Redis { port, proc, host: host.clone(), tls_ca: tls.as_ref().map(|tls| tls.ca.to_path_buf()) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pong = redis_cli(&host, port, tls.as_ref().map(|tls| tls.ca)).arg("PING").output().unwrap();
            if String::from_utf8_lossy(&pong.stdout).trim() == "PONG" {
                return redis(proc);
            }
            assert!(proc.running() && Instant::now() < deadline, "redis-server did not answer PING\n{}", proc.tail(20));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = redis_cli(&self.host, self.port, self.tls_ca.as_deref()).args(args).output().unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn flushall(&self) {
        assert_eq!(self.cli(&["FLUSHALL"]), "OK");
    }
}

/// `redis-cli` for a private Redis (over TLS, trusting `ca`, when given).
fn redis_cli(host: &str, port: u16, ca: Option<&Path>) -> Command {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-h").arg(host).arg("-p").arg(port.to_string());
    if let Some(ca) = ca {
        cmd.arg("--tls").arg("--cacert").arg(ca);
    }
    cmd
}

/// A `moto_server` (S3 on loopback) from the project's Python environment; stopped when dropped.
pub struct Moto {
    pub port: u16,
    host: String,
    _proc: Proc,
}

impl Moto {
    pub fn start(log_dir: &Path) -> Moto {
        Self::start_in(log_dir, &Place::loopback())
    }

    /// A moto_server in `place` (a network namespace's address).
    pub fn start_in(log_dir: &Path, place: &Place) -> Moto {
        let home = super::acufarm_home();
        let bin = std::env::var("ACUFARM_MOTO_SERVER").ok().unwrap_or_else(|| {
            let venv = format!("{home}/py/bin/moto_server");
            if Path::new(&venv).exists() { venv } else { "moto_server".to_string() }
        });
        let port = place.port(5000);
        let host = place.host.clone();
        let mut cmd = place.command(&bin);
        cmd.args(["-H", &host, "-p", &port.to_string()]);
        let mut proc = Proc::spawn("moto_server", cmd, log_dir);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect((host.as_str(), port)).is_err() {
            assert!(
                proc.running() && Instant::now() < deadline,
                "moto_server ({bin}) did not open port {port}; scripts/setup.sh dev installs moto[server]\n{}",
                proc.tail(20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { port, host, _proc: proc }
    }

    /// Creates a bucket with a plain HTTP request (moto accepts unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        let mut s = TcpStream::connect((self.host.as_str(), self.port)).unwrap();
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.host, self.port).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "bucket creation failed: {reply}");
    }

    /// The `AWS_*` environment the coordinator, workers and admin commands get.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", format!("http://{}:{}", self.host, self.port)),
            ("AWS_ENDPOINT_URL", format!("http://{}:{}", self.host, self.port)),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    }

    /// The same settings as `Storage::open_with` options, for the test's own reads and writes.
    pub fn storage_options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", format!("http://{}:{}", self.host, self.port)),
            ("aws_allow_http", "true".to_string()),
            ("aws_access_key_id", "test".to_string()),
            ("aws_secret_access_key", "test".to_string()),
            ("aws_region", "us-east-1".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    }
}
