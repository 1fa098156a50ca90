//! Coordinator configuration: a TOML file (optional) with `ACUFARM_…` environment variables on
//! top. Secrets (the token, a database or Redis password) are held in [`Secret`], whose `Debug`
//! and `Display` never show the value, so printing the configuration is always safe.

use crate::error::redact_url;
use serde::Deserialize;
use std::fmt;
use std::path::Path;
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
    #[error("no database is configured; set database_url in the config file or ACUFARM_DATABASE_URL (postgres://user@host:port/db)")]
    NoDatabase,
    #[error("no token is configured; set token in the config file or ACUFARM_TOKEN, and give workers the same one")]
    NoToken,
    #[error("{what} must be at least {min} seconds, not {value}; raise it in the config or its ACUFARM_ variable")]
    TooShort { what: &'static str, min: u64, value: u64 },
}

/// Everything `acufarm coordinator` needs.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC address to listen on.
    pub listen: String,
    /// PostgreSQL URL (the farm's truth).
    pub database_url: Secret,
    /// Redis URL for presence, live events and counters; empty runs without Redis.
    pub redis_url: Secret,
    /// Prefix of every Redis key and channel, so several farms can share one Redis.
    pub redis_prefix: String,
    /// Shared secret every worker and admin call must present.
    pub token: Secret,
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
            database_url: Secret::default(),
            redis_url: Secret::default(),
            redis_prefix: "acufarm".into(),
            token: Secret::default(),
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
            .field("redis_url", &redact_url(self.redis_url.expose()))
            .field("redis_prefix", &self.redis_prefix)
            .field("token", &self.token)
            .field("lease_seconds", &self.lease_seconds)
            .field("heartbeat_seconds", &self.heartbeat_seconds)
            .field("reap_interval_seconds", &self.reap_interval_seconds)
            .field("presence_ttl_seconds", &self.presence_ttl_seconds)
            .finish()
    }
}

impl Config {
    /// Reads `file` (when given), then applies `ACUFARM_*` overrides from `env`, then checks.
    pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: shown.clone(), reason: e.to_string() })?;
                Self::parse(&text, &shown)?
            }
            None => Self::default(),
        };
        config.apply_env(env)?;
        config.check()?;
        Ok(config)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_string(), reason: e.message().to_string() })
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("ACUFARM_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = env("ACUFARM_DATABASE_URL") {
            self.database_url = Secret::new(v);
        }
        if let Some(v) = env("ACUFARM_REDIS_URL") {
            self.redis_url = Secret::new(v);
        }
        if let Some(v) = env("ACUFARM_REDIS_PREFIX") {
            self.redis_prefix = v;
        }
        if let Some(v) = env("ACUFARM_TOKEN") {
            self.token = Secret::new(v);
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
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.database_url.expose().is_empty() {
            return Err(ConfigError::NoDatabase);
        }
        if self.token.expose().is_empty() {
            return Err(ConfigError::NoToken);
        }
        for (what, value) in [
            ("lease_seconds", self.lease_seconds),
            ("heartbeat_seconds", self.heartbeat_seconds),
            ("reap_interval_seconds", self.reap_interval_seconds),
            ("presence_ttl_seconds", self.presence_ttl_seconds),
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
        std::fs::write(&path, "listen = \"0.0.0.0:9000\"\ndatabase_url = \"postgres://farm:hunter2@db/farm\"\ntoken = \"file-token\"\nlease_seconds = 30\n").unwrap();
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
        assert_eq!((config.lease_seconds, config.heartbeat_seconds, config.reap_interval_seconds), (defaults.lease_seconds, defaults.heartbeat_seconds, defaults.reap_interval_seconds));
        assert_eq!(config.listen, defaults.listen);
        assert!(config.token.expose().is_empty(), "the example keeps its secret out of the file");
    }

    #[test]
    fn bad_values_get_one_sentence_each() {
        let table: [(&str, &[(&str, &str)], &str); 5] = [
            ("", &[("ACUFARM_TOKEN", "t")], "no database is configured"),
            ("", &[("ACUFARM_DATABASE_URL", "postgres://x")], "no token is configured"),
            ("", &[("ACUFARM_DATABASE_URL", "postgres://x"), ("ACUFARM_TOKEN", "t"), ("ACUFARM_LEASE_SECONDS", "soon")], "ACUFARM_LEASE_SECONDS = `soon` is not a whole number"),
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
}
