//! The worker's connection to its coordinators: endpoint parsing, the token interceptor, connecting
//! and registering with backoff while rotating through the endpoints, and calls that are retried
//! through coordinator restarts and database outages.

use super::AgentError;
use super::credentials::{ClientTls, Token, tls_failure};
use crate::jobloop::plan::{Backoff, Pacer};
use acufarm_proto::worker_client::WorkerClient;
use acufarm_proto::{RegisterRequest, RegisterResponse};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// The gRPC client every call goes through.
pub type Client = WorkerClient<InterceptedService<Channel, Auth>>;

/// How often to repeat a warning about the same outage.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The heartbeat period used when the coordinator does not name one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Parses a comma-separated list of coordinator URLs (`http://host:port`, `https://host:port` for
/// TLS; a bare `host:port` gets `http://`). The order is the order they are tried in.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, AgentError> {
    let mut endpoints = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let url = if raw.contains("://") { raw.to_string() } else { format!("http://{raw}") };
        let url = url.trim_end_matches('/').to_string();
        let bad = |why: &str| AgentError::BadEndpoint { url: raw.to_string(), reason: why.to_string() };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("it has no scheme"))?;
        match scheme {
            "http" | "https" => {}
            other => return Err(bad(&format!("`{other}` is not a coordinator scheme; use https:// (or http:// on a private network)"))),
        }
        if rest.is_empty() || rest.starts_with(':') {
            return Err(bad("it names no host"));
        }
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| bad(&error_chain(&e)))?;
        if endpoint.uri().host().is_none() {
            return Err(bad("it names no host"));
        }
        if !endpoints.contains(&url) {
            endpoints.push(url);
        }
    }
    if endpoints.is_empty() {
        return Err(AgentError::NoEndpoint);
    }
    Ok(endpoints)
}

/// The endpoint list and the one in use; a failure moves on to the next.
#[derive(Debug, Clone)]
pub struct Endpoints {
    list: Vec<String>,
    current: usize,
}

impl Endpoints {
    pub fn new(list: Vec<String>) -> Self {
        Self { list, current: 0 }
    }

    pub fn current(&self) -> &str {
        &self.list[self.current]
    }

    /// Moves on to the next endpoint (the first after the last).
    pub fn rotate(&mut self) {
        self.current = (self.current + 1) % self.list.len().max(1);
    }
}

/// Adds `authorization: Bearer <token>` to every call (the token file's current token).
#[derive(Clone, Debug)]
pub struct Auth(pub Token);

impl Auth {
    pub fn new(token: Token) -> Self {
        Self(token)
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request.metadata_mut().insert(acufarm_proto::AUTHORIZATION, self.0.header());
        Ok(request)
    }
}

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// The token (or the connection: plaintext, no client certificate) was refused: stop the
    /// worker.
    Unauthenticated,
    /// The coordinator is gone or unreachable: connect again (next endpoint) after a backoff.
    Reconnect,
    /// The coordinator is up but could not answer now (e.g. its database is down): retry after a
    /// backoff on the same connection.
    Retry,
    /// The coordinator answered no; retrying the same request would get the same answer.
    Refused,
}

/// Decides how to react to a status code.
pub fn react(code: Code) -> Reaction {
    match code {
        Code::Unauthenticated | Code::PermissionDenied => Reaction::Unauthenticated,
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled => Reaction::Reconnect,
        Code::Internal | Code::ResourceExhausted | Code::Aborted => Reaction::Retry,
        _ => Reaction::Refused,
    }
}

/// Decides how to react to a failed call. UNAVAILABLE sent by a live coordinator (its database is
/// down) is retried on the same connection; UNAVAILABLE from the transport (no coordinator
/// there) connects again.
pub fn react_to(status: &Status) -> Reaction {
    let from_transport = std::error::Error::source(status).is_some();
    match react(status.code()) {
        Reaction::Reconnect if status.code() == Code::Unavailable && !from_transport => Reaction::Retry,
        reaction => reaction,
    }
}

/// An error and its causes on one line, without tonic's bare "transport error" wrapper and without
/// repeating a cause its parent already quotes.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(e);
    while let Some(error) = next {
        let text = error.to_string();
        next = error.source();
        if next.is_some() && text == "transport error" {
            continue;
        }
        match parts.last_mut() {
            Some(last) if last.contains(&text) => {}
            Some(last) if text.contains(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
    }
    parts.join(": ")
}

/// A status in words: its message, with its transport cause when it has one.
pub fn describe(status: &Status) -> String {
    let message = status.message().trim();
    let cause = std::error::Error::source(status).map(error_chain);
    match cause {
        Some(cause) if message.is_empty() || cause.contains(message) => cause,
        Some(cause) if !message.contains(&cause) => format!("{message}: {cause}"),
        _ if message.is_empty() => format!("{:?}", status.code()),
        _ => message.to_string(),
    }
}

/// A failed call the caller has to decide about.
#[derive(Debug)]
pub enum CallError {
    /// The worker must stop (wrong token, refused registration).
    Fatal(AgentError),
    /// The coordinator refused this request.
    Refused { endpoint: String, status: Status },
}

/// A live, registered connection.
#[derive(Clone)]
pub struct Conn {
    pub client: Client,
    pub endpoint: String,
    pub worker_id: String,
    generation: u64,
}

struct State {
    endpoints: Endpoints,
    conn: Option<Conn>,
    generation: u64,
    /// The id from the first registration, sent with every later one and kept for the life of the
    /// process: leases belong to it, so a coordinator restart must not orphan the jobs in hand.
    worker_id: Option<String>,
    fatal: Option<AgentError>,
    pacer: Pacer,
}

/// The shared connection to the coordinators.
pub struct Link {
    auth: Auth,
    tls: ClientTls,
    register: RegisterRequest,
    heartbeat_ms: AtomicU64,
    state: tokio::sync::Mutex<State>,
}

enum ConnectError {
    Fatal(AgentError),
    Retry(String),
}

impl Link {
    pub fn new(endpoints: Vec<String>, auth: Auth, tls: ClientTls, register: RegisterRequest) -> Self {
        let state = State { endpoints: Endpoints::new(endpoints), conn: None, generation: 0, worker_id: None, fatal: None, pacer: Pacer::new(WARN_EVERY) };
        Self { auth, tls, register, heartbeat_ms: AtomicU64::new(DEFAULT_HEARTBEAT.as_millis() as u64), state: tokio::sync::Mutex::new(state) }
    }

    /// How often to heartbeat, as the coordinator asked at the last registration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed))
    }

    /// The registered connection, connecting and registering first (retrying with backoff through
    /// the endpoints until one answers) when there is none.
    pub async fn connection(&self) -> Result<Conn, AgentError> {
        let mut state = self.state.lock().await;
        if let Some(fatal) = &state.fatal {
            return Err(fatal.clone());
        }
        if let Some(conn) = &state.conn {
            return Ok(conn.clone());
        }
        let mut backoff = Backoff::reconnect();
        loop {
            let endpoint = state.endpoints.current().to_string();
            match self.connect(&endpoint, state.worker_id.as_deref()).await {
                Ok((client, response)) => {
                    state.pacer.reset();
                    state.generation += 1;
                    if response.heartbeat_seconds > 0 {
                        self.heartbeat_ms.store(u64::from(response.heartbeat_seconds) * 1000, Ordering::Relaxed);
                    } else if response.lease_seconds > 0 {
                        self.heartbeat_ms.store(u64::from(response.lease_seconds) * 1000 / 3, Ordering::Relaxed);
                    }
                    let worker_id = match &state.worker_id {
                        Some(first) => {
                            if *first != response.worker_id {
                                tracing::warn!(offered = %response.worker_id, kept = %first, "the coordinator offered a new worker id; keeping the first one, which holds the leases in hand");
                            }
                            first.clone()
                        }
                        None => {
                            state.worker_id = Some(response.worker_id.clone());
                            response.worker_id.clone()
                        }
                    };
                    eprintln!("acufarm worker: registered as {worker_id} with {endpoint}");
                    tracing::info!(%endpoint, lease_seconds = response.lease_seconds, heartbeat_seconds = response.heartbeat_seconds, bundle_has_work = response.bundle_has_work, "registered");
                    let conn = Conn { client, endpoint, worker_id, generation: state.generation };
                    state.conn = Some(conn.clone());
                    return Ok(conn);
                }
                Err(ConnectError::Fatal(e)) => {
                    state.fatal = Some(e.clone());
                    return Err(e);
                }
                Err(ConnectError::Retry(reason)) => {
                    if state.pacer.ready(Instant::now()) {
                        tracing::warn!("{reason}; retrying");
                    }
                    state.endpoints.rotate();
                    backoff.sleep().await;
                }
            }
        }
    }

    async fn connect(&self, endpoint: &str, worker_id: Option<&str>) -> Result<(Client, RegisterResponse), ConnectError> {
        let target = self
            .tls
            .endpoint(endpoint)
            .map_err(ConnectError::Fatal)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let channel = target.connect().await.map_err(|e| {
            let chain = error_chain(&e);
            // A TLS misconfiguration does not fix itself: stop with the sentence rather than retry.
            match tls_failure(endpoint, &chain) {
                Some(sentence) => ConnectError::Fatal(AgentError::Tls(sentence)),
                None => ConnectError::Retry(format!("cannot reach coordinator {endpoint} ({chain})")),
            }
        })?;
        let mut client = WorkerClient::with_interceptor(channel, self.auth.clone());
        // Registering again names the id from the first registration, so the leases stay ours.
        let request = RegisterRequest { worker_id: worker_id.unwrap_or_default().to_string(), ..self.register.clone() };
        match client.register(request).await {
            Ok(response) => Ok((client, response.into_inner())),
            Err(status) if react_to(&status) == Reaction::Unauthenticated && self.auth.0.reread() => Err(ConnectError::Retry(format!(
                "coordinator {endpoint} refused the token ({}); the token file changed, trying its new token",
                describe(&status)
            ))),
            Err(status) => Err(match react_to(&status) {
                Reaction::Unauthenticated => ConnectError::Fatal(AgentError::Unauthenticated { endpoint: endpoint.to_string(), reason: describe(&status) }),
                Reaction::Reconnect => ConnectError::Retry(format!("cannot reach coordinator {endpoint} ({})", describe(&status))),
                Reaction::Retry => ConnectError::Retry(format!("coordinator {endpoint} cannot register workers now ({})", describe(&status))),
                Reaction::Refused => ConnectError::Fatal(AgentError::RegisterRefused { endpoint: endpoint.to_string(), reason: describe(&status) }),
            }),
        }
    }

    /// Forgets the connection of `generation` (unless a newer one already replaced it) and moves
    /// on to the next endpoint.
    async fn drop_connection(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.conn.as_ref().is_some_and(|c| c.generation == generation) {
            state.conn = None;
            state.endpoints.rotate();
        }
    }

    /// Registers again on the next call (the coordinator lost this worker's presence record).
    pub async fn register_again(&self) {
        self.state.lock().await.conn = None;
    }

    async fn set_fatal(&self, error: AgentError) -> AgentError {
        let mut state = self.state.lock().await;
        state.conn = None;
        state.fatal.get_or_insert(error).clone()
    }

    /// Runs one call (`what` names it in warnings), retrying through reconnects and coordinator
    /// errors until it is answered. `call` builds the request afresh from the connection each time.
    pub async fn call<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, CallError>
    where
        F: FnMut(Client, String) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut backoff = Backoff::reconnect();
        let mut pacer = Pacer::new(WARN_EVERY);
        loop {
            let conn = self.connection().await.map_err(CallError::Fatal)?;
            let status = match call(conn.client.clone(), conn.worker_id.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => status,
            };
            match react_to(&status) {
                // A token rotated on both sides in quick succession: try the file's new token.
                Reaction::Unauthenticated if self.auth.0.reread() => {
                    tracing::warn!("coordinator {} refused the token ({}); the token file changed, trying its new token", conn.endpoint, describe(&status));
                }
                Reaction::Unauthenticated => {
                    let reason = describe(&status);
                    return Err(CallError::Fatal(self.set_fatal(AgentError::Unauthenticated { endpoint: conn.endpoint, reason }).await));
                }
                Reaction::Reconnect => {
                    if pacer.ready(Instant::now()) {
                        tracing::warn!("{what} to coordinator {} failed ({}); reconnecting", conn.endpoint, describe(&status));
                    }
                    self.drop_connection(conn.generation).await;
                    backoff.sleep().await;
                }
                Reaction::Retry => {
                    if pacer.ready(Instant::now()) {
                        tracing::warn!("coordinator {} could not answer {what} ({}); retrying", conn.endpoint, describe(&status));
                    }
                    backoff.sleep().await;
                }
                Reaction::Refused => return Err(CallError::Refused { endpoint: conn.endpoint, status }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_from_a_comma_list() {
        assert_eq!(parse_endpoints("http://127.0.0.1:7171").unwrap(), ["http://127.0.0.1:7171"]);
        assert_eq!(parse_endpoints(" http://a:1/ , b:2,,http://a:1").unwrap(), ["http://a:1", "http://b:2"]);
    }

    #[test]
    fn bad_endpoints_are_refused_with_the_reason() {
        let err = parse_endpoints("").unwrap_err().to_string();
        assert!(err.contains("--coordinator") && err.contains("ACUFARM_COORDINATOR"), "{err}");
        assert_eq!(parse_endpoints("https://farm:7171,http://b:1").unwrap(), ["https://farm:7171", "http://b:1"]);
        let err = parse_endpoints("ftp://farm").unwrap_err().to_string();
        assert!(err.contains("`ftp` is not a coordinator scheme"), "{err}");
        let err = parse_endpoints("http://:7171").unwrap_err().to_string();
        assert!(err.contains("names no host"), "{err}");
        let err = parse_endpoints("http://bad host:1").unwrap_err().to_string();
        assert!(err.starts_with("invalid coordinator URL `http://bad host:1`"), "{err}");
    }

    #[test]
    fn endpoints_rotate_round_robin() {
        let mut e = Endpoints::new(vec!["a".into(), "b".into(), "c".into()]);
        let mut seen = vec![e.current().to_string()];
        for _ in 0..4 {
            e.rotate();
            seen.push(e.current().to_string());
        }
        assert_eq!(seen, ["a", "b", "c", "a", "b"]);
        let mut one = Endpoints::new(vec!["a".into()]);
        one.rotate();
        assert_eq!(one.current(), "a");
    }

    #[test]
    fn status_codes_map_to_reactions() {
        assert_eq!(react(Code::Unauthenticated), Reaction::Unauthenticated);
        for code in [Code::Unavailable, Code::Unknown, Code::DeadlineExceeded, Code::Cancelled] {
            assert_eq!(react(code), Reaction::Reconnect, "{code:?}");
        }
        for code in [Code::Internal, Code::ResourceExhausted, Code::Aborted] {
            assert_eq!(react(code), Reaction::Retry, "{code:?}");
        }
        assert_eq!(react(Code::PermissionDenied), Reaction::Unauthenticated, "a token of the wrong role");
        for code in [Code::InvalidArgument, Code::FailedPrecondition, Code::NotFound, Code::Unimplemented] {
            assert_eq!(react(code), Reaction::Refused, "{code:?}");
        }
        // A database outage answered by a live coordinator is retried on the same connection;
        // a transport failure connects again.
        assert_eq!(react_to(&Status::unavailable("the database is unavailable")), Reaction::Retry);
        let mut transport = Status::unavailable("tcp connect error");
        transport.set_source(std::sync::Arc::new(Layer("Connection refused (os error 111)", None)));
        assert_eq!(react_to(&transport), Reaction::Reconnect);
        assert_eq!(react_to(&Status::unknown("h2 protocol error")), Reaction::Reconnect);
    }

    #[test]
    fn the_token_travels_as_a_bearer_header() {
        let mut auth = Auth::new(Token::load(super::super::TokenSource::Value(" s3cret ".into())).unwrap());
        let request = auth.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer s3cret");
        assert!(!format!("{auth:?}").contains("s3cret"), "the token must not be printed");
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn error_chains_drop_wrappers_and_repeats() {
        let e = Layer("transport error", Some(Box::new(Layer("tcp connect error", Some(Box::new(Layer("Connection refused (os error 111)", None)))))));
        assert_eq!(error_chain(&e), "tcp connect error: Connection refused (os error 111)");
        let e = Layer("cannot read: disk full", Some(Box::new(Layer("disk full", None))));
        assert_eq!(error_chain(&e), "cannot read: disk full");
        let status = Status::from_error(Box::new(e));
        assert_eq!(describe(&status), "cannot read: disk full");
    }

    #[test]
    fn status_descriptions_prefer_the_message() {
        assert_eq!(describe(&Status::internal("database is down")), "database is down");
        assert_eq!(describe(&Status::unavailable("")), "Unavailable");
    }
}
