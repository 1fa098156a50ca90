//! Coordinator configuration: a TOML file (optional) with `ACUFARM_…` environment variables on
//! top. Secrets (tokens, a database or Redis password) are held in [`Secret`], whose `Debug`
//! and `Display` never show the value, so printing the configuration is always safe; each secret
//! `x` can also come from a file (`x_file`, `ACUFARM_X_FILE`).

use crate::auth::{TokenSource, Tokens, read_secret_file};
use crate::error::redact_url;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A value that must never be printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read coordinator config {path} ({reason}); check the path given to --config")]
    Read { path: String, reason: String },
    #[error("coordinator config {path} is not valid ({reason}); fix that key (see examples/coordinator.toml)")]
    Parse { path: String, reason: String },
    #[error("environment variable {name} = `{value}` is not {expected}; fix or unset it")]
    Env { name: &'static str, value: String, expected: &'static str },
    #[error("both {first} and {second} are set; keep one of them (the *_file form keeps the secret out of the config and the environment)")]
    Both { first: String, second: String },
    #[error("{0}")]
    Secret(String),
    #[error("no database is configured; set database_url_file (or database_url) in the config, or ACUFARM_DATABASE_URL_FILE (postgres://user@host:port/db)")]
    NoDatabase,
    #[error(
        "no {role} token is configured; set token_file (or {role}_token_file) in the config, or ACUFARM_TOKEN_FILE, and give the same token to the {users}"
    )]
    NoToken { role: &'static str, users: &'static str },
    #[error("tls_cert is set without tls_key (or the other way round); set both, the certificate chain and its private key as PEM files")]
    TlsPair,
    #[error("tls_client_ca (mutual TLS) needs TLS itself; set tls_cert and tls_key too")]
    ClientCaWithoutTls,
    #[error("the session key is {length} characters long; give at least 32 (e.g. the output of `openssl rand -hex 32`) in session_key_file")]
    ShortSessionKey { length: usize },
    #[error("{what} must be at least {min} seconds, not {value}; raise it in the config or its ACUFARM_ variable")]
    TooShort { what: &'static str, min: u64, value: u64 },
}

/// Everything `acufarm coordinator` needs. Every secret can come from a file (`*_file`), so a
/// Kubernetes Secret mounted as a file works and nothing secret is in argv or the environment.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC address to listen on.
    pub listen: String,
    /// HTTP address (health, readiness, metrics; TLS like the gRPC side); empty serves no HTTP.
    pub http_listen: String,
    /// Put `/metrics` behind the read token (it is open by default, like most exporters).
    pub metrics_require_token: bool,
    /// How long a finished run's `acufarm_jobs` series stay after its last change.
    pub metrics_keep_finished_seconds: u64,
    /// PostgreSQL URL (the farm's truth); `sslmode=require|verify-full` for TLS.
    pub database_url: Secret,
    /// A file holding the PostgreSQL URL (read once at start), instead of `database_url`.
    pub database_url_file: Option<PathBuf>,
    /// Redis URL for presence, live events and counters (`rediss://` for TLS); empty runs
    /// without Redis.
    pub redis_url: Secret,
    /// A file holding the Redis URL (read once at start), instead of `redis_url`.
    pub redis_url_file: Option<PathBuf>,
    /// Prefix of every Redis key and channel, so several farms can share one Redis.
    pub redis_prefix: String,
    /// PEM CA certificate a `rediss://` server's certificate is signed by (default: the system's
    /// roots).
    pub redis_ca_cert: Option<PathBuf>,
    /// Token(s) for every role not set separately (one per line or comma-separated).
    pub token: Secret,
    /// A file of tokens (one per line: current and next) for every role not set separately.
    pub token_file: Option<PathBuf>,
    /// Tokens that open the Worker service only.
    pub worker_token: Secret,
    pub worker_token_file: Option<PathBuf>,
    /// Tokens that open the Admin service (and later the HTTP API's actions).
    pub operator_token: Secret,
    pub operator_token_file: Option<PathBuf>,
    /// Tokens for the HTTP API's reads (still to come); held and checked now, so configs carry
    /// them ahead of it.
    pub read_token: Secret,
    pub read_token_file: Option<PathBuf>,
    /// The key the dashboard's session cookies are signed with (at least 32 bytes of text, e.g.
    /// `openssl rand -hex 32`). Give every replica the same key so a cookie from one works on
    /// all; without one each process makes its own and its cookies die with it.
    pub session_key: Secret,
    pub session_key_file: Option<PathBuf>,
    /// How long a dashboard session lasts before the token must be given again.
    pub session_seconds: u64,
    /// OTLP/gRPC endpoint to export traces to (`http://collector:4317`); empty: none, unless
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub otlp_endpoint: String,
    /// PEM certificate chain the coordinator serves TLS with (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) client certificates must chain to: mutual TLS when set.
    pub tls_client_ca: Option<PathBuf>,
    /// How long a worker holds a job without a heartbeat.
    pub lease_seconds: u64,
    /// How often workers are asked to heartbeat (should be well under lease_seconds).
    pub heartbeat_seconds: u64,
    /// How often expired leases are taken back.
    pub reap_interval_seconds: u64,
    /// How long a Redis presence key lives without a refresh.
    pub presence_ttl_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7171".into(),
            http_listen: "127.0.0.1:7172".into(),
            metrics_require_token: false,
            metrics_keep_finished_seconds: 3600,
            database_url: Secret::default(),
            database_url_file: None,
            redis_url: Secret::default(),
            redis_url_file: None,
            redis_prefix: "acufarm".into(),
            redis_ca_cert: None,
            token: Secret::default(),
            token_file: None,
            worker_token: Secret::default(),
            worker_token_file: None,
            operator_token: Secret::default(),
            operator_token_file: None,
            read_token: Secret::default(),
            read_token_file: None,
            session_key: Secret::default(),
            session_key_file: None,
            session_seconds: 12 * 3600,
            otlp_endpoint: String::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            lease_seconds: 120,
            heartbeat_seconds: 15,
            reap_interval_seconds: 5,
            presence_ttl_seconds: 45,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(self.database_url.expose()))
            .field("database_url_file", &self.database_url_file)
            .field("redis_url", &redact_url(self.redis_url.expose()))
            .field("redis_url_file", &self.redis_url_file)
            .field("http_listen", &self.http_listen)
            .field("metrics_require_token", &self.metrics_require_token)
            .field("metrics_keep_finished_seconds", &self.metrics_keep_finished_seconds)
            .field("redis_prefix", &self.redis_prefix)
            .field("redis_ca_cert", &self.redis_ca_cert)
            .field("token", &self.token)
            .field("token_file", &self.token_file)
            .field("worker_token", &self.worker_token)
            .field("worker_token_file", &self.worker_token_file)
            .field("operator_token", &self.operator_token)
            .field("operator_token_file", &self.operator_token_file)
            .field("read_token", &self.read_token)
            .field("read_token_file", &self.read_token_file)
            .field("session_key", &self.session_key)
            .field("session_key_file", &self.session_key_file)
            .field("session_seconds", &self.session_seconds)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("lease_seconds", &self.lease_seconds)
            .field("heartbeat_seconds", &self.heartbeat_seconds)
            .field("reap_interval_seconds", &self.reap_interval_seconds)
            .field("presence_ttl_seconds", &self.presence_ttl_seconds)
            .finish()
    }
}

/// The certificate files of the coordinator's TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to these CAs (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// One secret setting: its inline value and its file form, under their names.
struct SecretSlot<'a> {
    key: &'static str,
    value: &'a mut Secret,
    file: &'a mut Option<PathBuf>,
}

impl Config {
    /// Reads `file` (when given), then applies `ACUFARM_*` overrides from `env`, reads the secrets
    /// named by `*_file` settings, then checks.
    pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::sources(file, env)?;
        config.read_secret_files()?;
        config.check()?;
        Ok(config)
    }

    /// What `acufarm migrate` needs: the same sources as [`Config::load`], but only the database
    /// setting is read and checked (a migration needs no tokens or certificates).
    pub fn load_database(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::sources(file, env)?;
        if let Some(path) = &config.database_url_file {
            config.database_url = Secret::new(read_secret_file(path, "database_url_file").map_err(ConfigError::Secret)?.trim());
        }
        if config.database_url.expose().is_empty() {
            return Err(ConfigError::NoDatabase);
        }
        Ok(config)
    }

    /// The file (when given) with the environment's overrides applied; no secret file read yet.
    fn sources(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: shown.clone(), reason: e.to_string() })?;
                Self::parse(&text, &shown)?
            }
            None => Self::default(),
        };
        for slot in config.secret_slots() {
            if !slot.value.expose().is_empty() && slot.file.is_some() {
                return Err(ConfigError::Both { first: slot.key.to_string(), second: format!("{}_file", slot.key) });
            }
        }
        // An empty variable counts as unset, so `ACUFARM_TOKEN=` cannot silently mean "no token".
        let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        config.apply_env(&env)?;
        Ok(config)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_string(), reason: e.message().to_string() })
    }

    fn secret_slots(&mut self) -> [SecretSlot<'_>; 7] {
        [
            SecretSlot { key: "database_url", value: &mut self.database_url, file: &mut self.database_url_file },
            SecretSlot { key: "redis_url", value: &mut self.redis_url, file: &mut self.redis_url_file },
            SecretSlot { key: "token", value: &mut self.token, file: &mut self.token_file },
            SecretSlot { key: "worker_token", value: &mut self.worker_token, file: &mut self.worker_token_file },
            SecretSlot { key: "operator_token", value: &mut self.operator_token, file: &mut self.operator_token_file },
            SecretSlot { key: "read_token", value: &mut self.read_token, file: &mut self.read_token_file },
            SecretSlot { key: "session_key", value: &mut self.session_key, file: &mut self.session_key_file },
        ]
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("ACUFARM_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = env("ACUFARM_OTLP_ENDPOINT") {
            self.otlp_endpoint = v;
        }
        if let Some(v) = env("ACUFARM_REDIS_PREFIX") {
            self.redis_prefix = v;
        }
        if let Some(v) = env("ACUFARM_HTTP_LISTEN") {
            // `off` (or `none`) turns HTTP off from the environment, where an empty value means unset.
            self.http_listen = if matches!(v.trim(), "off" | "none") { String::new() } else { v };
        }
        if let Some(value) = env("ACUFARM_METRICS_REQUIRE_TOKEN") {
            self.metrics_require_token = match value.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(ConfigError::Env { name: "ACUFARM_METRICS_REQUIRE_TOKEN", value, expected: "true or false" }),
            };
        }
        // ACUFARM_X or ACUFARM_X_FILE replaces both forms of X from the config file.
        for slot in self.secret_slots() {
            let name = format!("ACUFARM_{}", slot.key.to_uppercase());
            let file_name = format!("{name}_FILE");
            match (env(&name), env(&file_name)) {
                (Some(_), Some(_)) => return Err(ConfigError::Both { first: name, second: file_name }),
                (Some(value), None) => {
                    *slot.value = Secret::new(value);
                    *slot.file = None;
                }
                (None, Some(path)) => {
                    *slot.value = Secret::default();
                    *slot.file = Some(PathBuf::from(path));
                }
                (None, None) => {}
            }
        }
        for (name, slot) in [
            ("ACUFARM_TLS_CERT", &mut self.tls_cert),
            ("ACUFARM_TLS_KEY", &mut self.tls_key),
            ("ACUFARM_TLS_CLIENT_CA", &mut self.tls_client_ca),
            ("ACUFARM_REDIS_CA_CERT", &mut self.redis_ca_cert),
        ] {
            if let Some(path) = env(name) {
                *slot = Some(PathBuf::from(path));
            }
        }
        let seconds = |name: &'static str, slot: &mut u64| -> Result<(), ConfigError> {
            if let Some(value) = env(name) {
                *slot = value.trim().parse().map_err(|_| ConfigError::Env { name, value, expected: "a whole number of seconds" })?;
            }
            Ok(())
        };
        seconds("ACUFARM_LEASE_SECONDS", &mut self.lease_seconds)?;
        seconds("ACUFARM_HEARTBEAT_SECONDS", &mut self.heartbeat_seconds)?;
        seconds("ACUFARM_REAP_INTERVAL_SECONDS", &mut self.reap_interval_seconds)?;
        seconds("ACUFARM_PRESENCE_TTL_SECONDS", &mut self.presence_ttl_seconds)?;
        seconds("ACUFARM_METRICS_KEEP_FINISHED_SECONDS", &mut self.metrics_keep_finished_seconds)?;
        seconds("ACUFARM_SESSION_SECONDS", &mut self.session_seconds)?;
        Ok(())
    }

    /// The database and Redis URLs named by files are read once, here; token files stay files
    /// (they are re-read when they change, see [`Tokens`]).
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        for (key, value, file) in [
            ("database_url_file", &mut self.database_url, &self.database_url_file),
            ("redis_url_file", &mut self.redis_url, &self.redis_url_file),
            ("session_key_file", &mut self.session_key, &self.session_key_file),
        ] {
            if let Some(path) = file {
                *value = Secret::new(read_secret_file(path, key).map_err(ConfigError::Secret)?.trim());
            }
        }
        Ok(())
    }

    /// Where one role's tokens come from: its own setting, else `token`/`token_file`.
    fn token_source(&self, role: &'static str, own: (&Secret, &Option<PathBuf>), users: &'static str) -> Result<TokenSource, ConfigError> {
        let source = |setting: &str, value: &Secret, file: &Option<PathBuf>| match file {
            Some(path) => Some(TokenSource::File { setting: format!("{setting}_file"), path: path.clone() }),
            None if !value.expose().is_empty() => Some(TokenSource::Inline { setting: setting.to_string(), tokens: vec![value.expose().to_string()] }),
            None => None,
        };
        source(&format!("{role}_token"), own.0, own.1).or_else(|| source("token", &self.token, &self.token_file)).ok_or(ConfigError::NoToken { role, users })
    }

    /// The tokens of every role, read from their files.
    pub fn tokens(&self) -> Result<Tokens, ConfigError> {
        let worker = self.token_source("worker", (&self.worker_token, &self.worker_token_file), "workers")?;
        let operator = self.token_source("operator", (&self.operator_token, &self.operator_token_file), "operators' CLI")?;
        // Without tokens of its own the read-only role takes the operators' (who may read anyway).
        let read = self.token_source("read", (&self.read_token, &self.read_token_file), "readers").unwrap_or_else(|_| operator.clone());
        Tokens::load(worker, operator, read).map_err(ConfigError::Secret)
    }

    /// The TLS listener's files, when TLS is on.
    pub fn tls(&self) -> Option<TlsFiles> {
        Some(TlsFiles { cert: self.tls_cert.clone()?, key: self.tls_key.clone()?, client_ca: self.tls_client_ca.clone() })
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.database_url.expose().is_empty() {
            return Err(ConfigError::NoDatabase);
        }
        self.tokens()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsPair);
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(ConfigError::ClientCaWithoutTls);
        }
        let key = self.session_key.expose().trim().len();
        if key > 0 && key < 32 {
            return Err(ConfigError::ShortSessionKey { length: key });
        }
        for (what, value) in [
            ("lease_seconds", self.lease_seconds),
            ("heartbeat_seconds", self.heartbeat_seconds),
            ("reap_interval_seconds", self.reap_interval_seconds),
            ("presence_ttl_seconds", self.presence_ttl_seconds),
            ("session_seconds", self.session_seconds),
        ] {
            if value < 1 {
                return Err(ConfigError::TooShort { what, min: 1, value });
            }
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn environment_overrides_the_file_and_secrets_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9000\"\ndatabase_url = \"postgres://farm:hunter2@db/farm\"\ntoken = \"file-token\"\nlease_seconds = 30\n")
            .unwrap();
        let config = Config::load(Some(&path), env(&[("ACUFARM_TOKEN", "env-token"), ("ACUFARM_LEASE_SECONDS", "9")])).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.token.expose(), "env-token");
        assert_eq!(config.lease_seconds, 9);
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("env-token"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn the_documented_example_parses_to_the_defaults_it_states() {
        let text = include_str!("../../examples/coordinator.toml");
        let config = Config::parse(text, "examples/coordinator.toml").unwrap();
        let defaults = Config::default();
        assert_eq!(
            (config.lease_seconds, config.heartbeat_seconds, config.reap_interval_seconds),
            (defaults.lease_seconds, defaults.heartbeat_seconds, defaults.reap_interval_seconds)
        );
        assert_eq!(config.listen, defaults.listen);
        assert!(config.token.expose().is_empty(), "the example keeps its secret out of the file");
    }

    #[test]
    fn bad_values_get_one_sentence_each() {
        let table: [(&str, &[(&str, &str)], &str); 5] = [
            ("", &[("ACUFARM_TOKEN", "t")], "no database is configured"),
            ("", &[("ACUFARM_DATABASE_URL", "postgres://x")], "no worker token is configured"),
            (
                "",
                &[("ACUFARM_DATABASE_URL", "postgres://x"), ("ACUFARM_TOKEN", "t"), ("ACUFARM_LEASE_SECONDS", "soon")],
                "ACUFARM_LEASE_SECONDS = `soon` is not a whole number",
            ),
            ("lease_secs = 3\n", &[], "unknown field `lease_secs`"),
            ("heartbeat_seconds = 0\ndatabase_url = \"p\"\ntoken = \"t\"\n", &[], "heartbeat_seconds must be at least 1"),
        ];
        for (file, vars, expected) in table {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.toml");
            std::fs::write(&path, file).unwrap();
            let error = Config::load(Some(&path), env(vars)).unwrap_err().to_string();
            assert!(error.contains(expected), "{file:?} {vars:?}: {error}");
        }
        let missing = Config::load(Some(Path::new("/nonexistent/c.toml")), env(&[])).unwrap_err().to_string();
        assert!(missing.contains("cannot read coordinator config /nonexistent/c.toml"), "{missing}");
    }

    #[test]
    fn every_secret_can_come_from_a_file_and_each_role_from_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let db = file("db", "postgres://farm:hunter2@db/farm?sslmode=verify-full\n");
        let redis = file("redis", "rediss://:pw@redis:6380\n");
        let workers = file("workers", "w-current\nw-next\n");
        let operators = file("operators", "op-1\n");
        let shared = file("shared", "shared-1\n");
        let config_path = file(
            "c.toml",
            &format!("database_url_file = \"{db}\"\nredis_url_file = \"{redis}\"\ntoken_file = \"{shared}\"\nworker_token_file = \"{workers}\"\n"),
        );
        let config = Config::load(Some(Path::new(&config_path)), env(&[("ACUFARM_OPERATOR_TOKEN_FILE", &operators), ("ACUFARM_TOKEN", "")])).unwrap();
        assert_eq!(config.database_url.expose(), "postgres://farm:hunter2@db/farm?sslmode=verify-full");
        assert_eq!(config.redis_url.expose(), "rediss://:pw@redis:6380");
        let tokens = config.tokens().unwrap();
        let ok = |token: &str, role| tokens.check(Some(format!("Bearer {token}").as_bytes()), role).is_ok();
        use crate::auth::Role;
        assert!(ok("w-current", Role::Worker) && ok("w-next", Role::Worker) && !ok("shared-1", Role::Worker));
        assert!(ok("op-1", Role::Operator) && !ok("w-next", Role::Operator) && !ok("shared-1", Role::Operator));
        assert!(ok("shared-1", Role::Read), "the read role falls back to token_file");
        let shown = format!("{config:?} {tokens:?}");
        for secret in ["hunter2", "pw@", "w-current", "op-1", "shared-1"] {
            assert!(!shown.contains(secret), "{secret} printed: {shown}");
        }
        assert!(shown.contains(&workers), "the token file's path is shown: {shown}");
    }

    #[test]
    fn secret_settings_given_twice_or_tls_half_set_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let db = [("ACUFARM_DATABASE_URL", "postgres://x")];
        let table: [(&str, &[(&str, &str)], &str); 7] = [
            ("token = \"a\"\ntoken_file = \"/t\"\n", &db, "both token and token_file are set"),
            (
                "",
                &[("ACUFARM_DATABASE_URL", "postgres://x"), ("ACUFARM_TOKEN", "a"), ("ACUFARM_TOKEN_FILE", "/t")],
                "both ACUFARM_TOKEN and ACUFARM_TOKEN_FILE are set",
            ),
            ("worker_token = \"w\"\n", &db, "no operator token is configured"),
            ("token_file = \"/nonexistent/t\"\n", &db, "cannot read /nonexistent/t named by token_file"),
            ("", &[("ACUFARM_DATABASE_URL_FILE", "/nonexistent/db"), ("ACUFARM_TOKEN", "t")], "cannot read /nonexistent/db named by database_url_file"),
            ("token = \"t\"\ntls_cert = \"/c.pem\"\n", &db, "tls_cert is set without tls_key"),
            ("token = \"t\"\ntls_client_ca = \"/ca.pem\"\n", &db, "tls_client_ca (mutual TLS) needs TLS itself"),
        ];
        for (file, vars, expected) in table {
            std::fs::write(&path, file).unwrap();
            let error = Config::load(Some(&path), env(vars)).unwrap_err().to_string();
            assert!(error.contains(expected), "{file:?} {vars:?}: {error}");
        }
        std::fs::write(&path, "token = \"t\"\n").unwrap();
        let config =
            Config::load(Some(&path), env(&[("ACUFARM_DATABASE_URL", "postgres://x"), ("ACUFARM_TLS_CERT", "/c.pem"), ("ACUFARM_TLS_KEY", "/k.pem")])).unwrap();
        assert_eq!(config.tls(), Some(TlsFiles { cert: "/c.pem".into(), key: "/k.pem".into(), client_ca: None }));
    }
}
