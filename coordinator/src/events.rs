//! Redis: worker presence (TTL keys), live events (pub/sub, so every coordinator replica and
//! dashboard sees all of them) and throughput counters. Nothing here is job state: every call is
//! best effort with a short timeout, a failure is logged (at most every few seconds) and
//! forgotten, and losing or flushing Redis loses no work — presence comes back with the next
//! heartbeat, counters restart.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one Redis call may take before it is abandoned.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long to wait after a failed connect before trying again.
const RECONNECT_AFTER: Duration = Duration::from_secs(2);
/// Per-second counters kept this long (the rate is computed over the last minute).
const COUNTER_TTL_S: i64 = 120;

/// What a worker told the coordinator about itself, kept under a TTL key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Presence {
    pub worker_id: String,
    pub name: String,
    pub hostname: String,
    pub bundle_name: String,
    pub bundle_sha256: String,
    pub execution_providers: Vec<String>,
    pub gpu: String,
    /// The accelerator's memory (0 on CPU nodes, and for presence written before it was kept).
    #[serde(default)]
    pub gpu_memory_bytes: u64,
    pub last_seen_unix_ms: i64,
    pub jobs_held: u32,
}

/// One live event, published as JSON on `<prefix>:events`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    WorkerRegistered { worker_id: String, name: String },
    JobsLeased { run_id: i64, worker_id: String, jobs: usize },
    JobsSucceeded { run_id: i64, worker_id: String, jobs: usize },
    JobsFailed { run_id: i64, worker_id: String, jobs: usize },
    LeasesExpired { jobs: usize },
    RunSubmitted { run_id: i64, name: String, jobs: usize },
    RunChanged { run_id: i64, name: String, state: String },
    RunFinished { run_id: i64, name: String, succeeded: u64, failed: u64 },
    WorkerQuarantined { run_id: i64, worker: String, failures: u32 },
}

struct Connection {
    conn: Option<redis::aio::MultiplexedConnection>,
    last_attempt: Option<Instant>,
    last_warning: Option<Instant>,
}

/// Handle to Redis, or to nothing when no Redis is configured.
pub struct Events {
    client: Option<redis::Client>,
    prefix: String,
    presence_ttl: Duration,
    state: tokio::sync::Mutex<Connection>,
    warned: Mutex<Option<Instant>>,
}

impl Events {
    /// `url` empty means no Redis: every call is a no-op and status says Redis is unavailable.
    pub fn new(url: &str, prefix: &str, presence_ttl: Duration) -> Result<Self, String> {
        Self::with_ca(url, prefix, presence_ttl, None)
    }

    /// Like `new`; `ca_cert` (PEM) is the CA a `rediss://` server's certificate must chain to,
    /// instead of the system's roots.
    pub fn with_ca(url: &str, prefix: &str, presence_ttl: Duration, ca_cert: Option<Vec<u8>>) -> Result<Self, String> {
        let invalid = |e: redis::RedisError| format!("the Redis URL is not valid ({e}); use redis://host:port, or rediss://host:port for TLS");
        let client = match (url.is_empty(), ca_cert) {
            (true, _) => None,
            (false, None) => Some(redis::Client::open(url).map_err(invalid)?),
            (false, Some(_)) if !url.starts_with("rediss://") => {
                return Err("redis_ca_cert is set but the Redis URL is not rediss://; use rediss://host:port or drop redis_ca_cert".into());
            }
            (false, Some(ca)) => Some(redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls: None, root_cert: Some(ca) }).map_err(invalid)?),
        };
        Ok(Self {
            client,
            prefix: prefix.to_string(),
            presence_ttl,
            state: tokio::sync::Mutex::new(Connection { conn: None, last_attempt: None, last_warning: None }),
            warned: Mutex::new(None),
        })
    }

    pub fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    fn worker_key(&self, worker_id: &str) -> String {
        format!("{}:worker:{worker_id}", self.prefix)
    }

    fn counter_key(&self, run_id: i64, second: i64) -> String {
        format!("{}:run:{run_id}:done:{second}", self.prefix)
    }

    fn warn(&self, what: &str, error: &dyn std::fmt::Display) {
        let mut warned = self.warned.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            *warned = Some(Instant::now());
            tracing::warn!("Redis unavailable while {what} ({error}); presence, live events and rates pause, job state is unaffected");
        }
    }

    async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = self.client.as_ref()?;
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            return Some(conn.clone());
        }
        if state.last_attempt.is_some_and(|at| at.elapsed() < RECONNECT_AFTER) {
            return None;
        }
        state.last_attempt = Some(Instant::now());
        match tokio::time::timeout(CALL_TIMEOUT * 2, client.get_multiplexed_async_connection()).await {
            Ok(Ok(conn)) => {
                state.conn = Some(conn.clone());
                Some(conn)
            }
            Ok(Err(e)) => {
                drop(state);
                self.warn("connecting", &e);
                None
            }
            Err(_) => {
                state.last_warning = Some(Instant::now());
                drop(state);
                self.warn("connecting", &"timed out");
                None
            }
        }
    }

    /// Runs one Redis call under the timeout; on failure drops the connection so the next call
    /// reconnects.
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Option<T>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, f(conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.state.lock().await.conn = None;
                self.warn(what, &e);
                None
            }
            Err(_) => {
                self.state.lock().await.conn = None;
                self.warn(what, &"timed out");
                None
            }
        }
    }

    /// Whether Redis answers a PING now.
    pub async fn ok(&self) -> bool {
        self.call("pinging", |mut conn| async move { redis::cmd("PING").query_async::<String>(&mut conn).await }).await.is_some()
    }

    /// Records (or refreshes) a worker's presence for the presence TTL.
    pub async fn presence(&self, presence: &Presence) {
        let Ok(value) = serde_json::to_string(presence) else { return };
        let key = self.worker_key(&presence.worker_id);
        let ttl = self.presence_ttl.as_secs().max(1);
        self.call("recording worker presence", |mut conn| async move { conn.set_ex::<_, _, ()>(key, value, ttl).await }).await;
    }

    /// Refreshes the TTL and the held count of a known worker; false when Redis does not know it
    /// (flushed, expired), so the caller can record it again in full.
    pub async fn touch(&self, worker_id: &str, jobs_held: u32, now_unix_ms: i64) -> bool {
        let key = self.worker_key(worker_id);
        let ttl = self.presence_ttl.as_secs().max(1);
        let stored: Option<Option<String>> = self.call("reading worker presence", |mut conn| async move { conn.get(key).await }).await;
        let Some(Some(text)) = stored else { return stored.is_none() };
        let Ok(mut presence) = serde_json::from_str::<Presence>(&text) else { return false };
        presence.jobs_held = jobs_held;
        presence.last_seen_unix_ms = now_unix_ms;
        let Ok(value) = serde_json::to_string(&presence) else { return true };
        let key = self.worker_key(worker_id);
        self.call("refreshing worker presence", |mut conn| async move { conn.set_ex::<_, _, ()>(key, value, ttl).await }).await;
        true
    }

    /// Live workers (presence keys not yet expired), by worker id.
    pub async fn workers(&self) -> Vec<Presence> {
        let pattern = format!("{}:worker:*", self.prefix);
        let keys: Vec<String> = self
            .call("listing workers", |mut conn| async move {
                let mut keys = Vec::new();
                let mut iter: redis::AsyncIter<String> = conn.scan_match(pattern).await?;
                while let Some(key) = iter.next_item().await {
                    keys.push(key?);
                }
                Ok(keys)
            })
            .await
            .unwrap_or_default();
        if keys.is_empty() {
            return Vec::new();
        }
        let values: Vec<Option<String>> = self.call("reading workers", |mut conn| async move { conn.mget(keys).await }).await.unwrap_or_default();
        let mut workers: Vec<Presence> = values.into_iter().flatten().filter_map(|text| serde_json::from_str(&text).ok()).collect();
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        workers
    }

    /// Publishes an event to every subscriber (dashboards, other replicas).
    pub async fn publish(&self, event: &Event) {
        let Ok(text) = serde_json::to_string(event) else { return };
        let channel = self.channel();
        self.call("publishing an event", |mut conn| async move { conn.publish::<_, _, ()>(channel, text).await }).await;
    }

    /// A subscription to the event channel (every replica's events), or `None` without Redis or
    /// while it is down. The stream ends when the connection drops; subscribe again then.
    pub async fn subscribe(&self) -> Option<futures_util::stream::BoxStream<'static, String>> {
        use futures_util::StreamExt;
        let client = self.client.as_ref()?;
        let mut pubsub = match tokio::time::timeout(CALL_TIMEOUT * 2, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                self.warn("subscribing to events", &e);
                return None;
            }
            Err(_) => {
                self.warn("subscribing to events", &"timed out");
                return None;
            }
        };
        if let Err(e) = pubsub.subscribe(self.channel()).await {
            self.warn("subscribing to events", &e);
            return None;
        }
        Some(pubsub.into_on_message().filter_map(|message| async move { message.get_payload::<String>().ok() }).boxed())
    }

    /// Adds finished jobs to the run's per-second counter.
    pub async fn count_done(&self, run_id: i64, jobs: usize, now_unix_s: i64) {
        let key = self.counter_key(run_id, now_unix_s);
        self.call("counting jobs", |mut conn| async move {
            redis::pipe().incr(&key, jobs as i64).ignore().expire(&key, COUNTER_TTL_S).ignore().query_async::<()>(&mut conn).await
        })
        .await;
    }

    /// Finished jobs per second over the last minute; 0 without Redis.
    pub async fn rate(&self, run_id: i64, now_unix_s: i64) -> f64 {
        let keys: Vec<String> = (now_unix_s - 60..now_unix_s).map(|second| self.counter_key(run_id, second)).collect();
        let values: Vec<Option<i64>> = self.call("reading rates", |mut conn| async move { conn.mget(keys).await }).await.unwrap_or_default();
        values.into_iter().flatten().sum::<i64>() as f64 / 60.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_their_kind() {
        let text = serde_json::to_string(&Event::JobsSucceeded { run_id: 3, worker_id: "w".into(), jobs: 4 }).unwrap();
        assert_eq!(text, r#"{"event":"jobs_succeeded","run_id":3,"worker_id":"w","jobs":4}"#);
    }

    #[tokio::test]
    async fn without_redis_every_call_is_a_harmless_no_op() {
        let events = Events::new("", "t", Duration::from_secs(5)).unwrap();
        assert!(!events.ok().await);
        events.publish(&Event::LeasesExpired { jobs: 1 }).await;
        assert!(events.workers().await.is_empty());
        assert_eq!(events.rate(1, 100).await, 0.0);
        assert!(Events::new("http://nope", "t", Duration::from_secs(5)).is_err());
        let plain = Events::with_ca("redis://127.0.0.1:6379", "t", Duration::from_secs(5), Some(b"pem".to_vec())).err().unwrap();
        assert!(plain.contains("not rediss://"), "{plain}");
    }

    #[tokio::test]
    async fn an_unreachable_redis_costs_a_bounded_wait_and_loses_nothing() {
        // Port 1 on loopback refuses connections at once.
        let events = Events::new("redis://127.0.0.1:1", "t", Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        assert!(!events.ok().await);
        events.count_done(1, 3, 100).await;
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
