//! The HTTP API's route table, through the coordinator's real router over a real (SQLite) store:
//! every route with no token, a wrong token, a token of the wrong role and the right one; unknown
//! runs and jobs; bad queries and bodies; sessions (cookie, expiry of the token behind it, Origin);
//! and the OpenAPI document against the router. Every answer must carry the CSP header, and every
//! error must be `{"error": {"code", "message"}}` — never a 500.

use acufarm_coordinator::http::{ApiDoc, router};
use acufarm_coordinator::store::{NewJob, NewRun};
use acufarm_coordinator::{Config, Coordinator, SqliteStore, Store};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;
use utoipa::OpenApi;

const WORKER: &str = "worker-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const READ: &str = "read-token-0123456789";
const HOST: &str = "127.0.0.1:7172";

struct Api {
    app: axum::Router,
    store: SqliteStore,
    _folder: tempfile::TempDir,
    job: i64,
}

async fn api() -> Api {
    let folder = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&folder.path().join("farm.db")).await.unwrap();
    store.migrate().await.unwrap();
    let run = NewRun {
        name: "r1".into(),
        spec: "[run]\nname = \"r1\"\n".into(),
        priority: 0,
        bundle_sha256: "b".repeat(64),
        max_lost: 5,
        shards: vec!["m1".into(), "m2".into()],
        jobs: (0..4).map(|i| NewJob { shard_key: if i < 2 { "m1" } else { "m2" }.into(), sample_id: format!("s{i}"), spec: json!({"i": i}) }).collect(),
    };
    let run_id = store.create_run(&run, false, chrono::Utc::now()).await.unwrap();
    let job = store.run_jobs(run_id, &Default::default()).await.unwrap()[0].job.0;
    let env = |name: &str| match name {
        "ACUFARM_DATABASE_URL" => Some("sqlite://unused".to_string()),
        "ACUFARM_WORKER_TOKEN" => Some(WORKER.to_string()),
        "ACUFARM_OPERATOR_TOKEN" => Some(OPERATOR.to_string()),
        "ACUFARM_READ_TOKEN" => Some(READ.to_string()),
        "ACUFARM_SESSION_KEY" => Some("k".repeat(40)),
        _ => None,
    };
    let config = Config::load(None, env).unwrap();
    Api { app: router(Coordinator::new(store.clone(), config).unwrap()), store, _folder: folder, job }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

#[derive(Default, Clone)]
struct Call<'a> {
    token: Option<&'a str>,
    cookie: Option<String>,
    origin: Option<&'a str>,
    body: Option<Value>,
}

impl Api {
    async fn call(&self, method: &str, path: &str, call: Call<'_>) -> Answer {
        let mut request = Request::builder().method(method).uri(path).header(header::HOST, HOST);
        if let Some(token) = call.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(cookie) = &call.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        if let Some(origin) = call.origin {
            request = request.header(header::ORIGIN, origin);
        }
        let body = match &call.body {
            Some(body) => Body::from(body.to_string()),
            None => Body::empty(),
        };
        let response = self.app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        if headers.get(header::CONTENT_TYPE).is_some_and(|kind| kind.as_bytes().starts_with(b"text/event-stream")) {
            // A live stream never ends; its own test reads it.
            assert!(headers.get(header::CONTENT_SECURITY_POLICY).is_some(), "{method} {path}: no CSP");
            return Answer { status, headers, body: Value::Null };
        }
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        assert!(headers.get(header::CONTENT_SECURITY_POLICY).is_some_and(|csp| csp.to_str().unwrap().contains("script-src 'self'")), "{method} {path}: no CSP");
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {path}: {body}");
        if !status.is_success() {
            let error = &body["error"];
            assert!(error["code"].is_string() && error["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: error body {body}");
        }
        Answer { status, headers, body }
    }

    async fn status(&self, method: &str, path: &str, call: Call<'_>) -> StatusCode {
        self.call(method, path, call).await.status
    }

    /// Signs in with `token` and returns the cookie to send back.
    async fn session(&self, token: &str) -> String {
        let answer = self.call("POST", "/api/v1/session", Call { body: Some(json!({ "token": token })), ..Call::default() }).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let set = answer.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_string();
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
            assert!(set.contains(attribute), "{set} lacks {attribute}");
        }
        assert!(!set.contains(token), "the token itself must not be in the cookie");
        set.split(';').next().unwrap().to_string()
    }
}

fn bearer(token: &str) -> Call<'_> {
    Call { token: Some(token), ..Call::default() }
}

#[tokio::test]
async fn every_route_refuses_missing_wrong_and_other_role_tokens_and_answers_the_right_one() {
    let api = api().await;
    let job = format!("/api/v1/jobs/{}", api.job);
    let reads = ["/api/v1/runs", "/api/v1/runs/r1", "/api/v1/runs/r1/shards", "/api/v1/runs/r1/jobs", job.as_str(), "/api/v1/workers", "/api/v1/events"];
    for path in reads {
        assert_eq!(api.status("GET", path, Call::default()).await, StatusCode::UNAUTHORIZED, "GET {path} without a token");
        assert_eq!(api.status("GET", path, bearer("not-a-token")).await, StatusCode::UNAUTHORIZED, "GET {path} with a wrong token");
        assert_eq!(api.status("GET", path, bearer(WORKER)).await, StatusCode::FORBIDDEN, "GET {path} with a worker token");
        assert_eq!(api.status("GET", path, bearer(READ)).await, StatusCode::OK, "GET {path} with a read token");
        assert_eq!(api.status("GET", path, bearer(OPERATOR)).await, StatusCode::OK, "GET {path} with an operator token");
    }
    let actions = ["/api/v1/runs/r1/pause", "/api/v1/runs/r1/resume", "/api/v1/runs/r1/resubmit", "/api/v1/runs/r1/regenerate", "/api/v1/workers/w1/release"];
    for path in actions {
        assert_eq!(api.status("POST", path, Call::default()).await, StatusCode::UNAUTHORIZED, "POST {path} without a token");
        assert_eq!(api.status("POST", path, bearer("not-a-token")).await, StatusCode::UNAUTHORIZED, "POST {path} with a wrong token");
        assert_eq!(api.status("POST", path, bearer(WORKER)).await, StatusCode::FORBIDDEN, "POST {path} with a worker token");
        assert_eq!(api.status("POST", path, bearer(READ)).await, StatusCode::FORBIDDEN, "POST {path} with a read token");
    }
    let paused = api.call("POST", "/api/v1/runs/r1/pause", bearer(OPERATOR)).await;
    assert_eq!((paused.status, paused.body["state"].as_str()), (StatusCode::OK, Some("paused")));
    let resumed = api.call("POST", "/api/v1/runs/r1/resume", bearer(OPERATOR)).await;
    assert_eq!(resumed.body["state"], "active");
    // Open routes.
    for path in ["/healthz", "/readyz", "/metrics", "/api/openapi.json", "/", "/assets/app.js", "/assets/style.css", "/assets/icon.svg"] {
        assert_eq!(api.status("GET", path, Call::default()).await, StatusCode::OK, "GET {path}");
    }
    let page = api.call("GET", "/", Call::default()).await;
    assert!(page.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let html = page.body.as_str().unwrap();
    assert!(html.contains(r#"<script src="/assets/app.js" defer></script>"#) && !html.contains("<script>"), "no inline script");
    assert_eq!(api.status("GET", "/assets/nope.js", Call::default()).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_things_are_404_and_bad_requests_400_with_a_sentence() {
    let api = api().await;
    let table: &[(&str, &str, Option<Value>, StatusCode, &str)] = &[
        ("GET", "/api/v1/runs/nope", None, StatusCode::NOT_FOUND, "no run named `nope`"),
        ("GET", "/api/v1/runs/nope/shards", None, StatusCode::NOT_FOUND, "no run named"),
        ("GET", "/api/v1/runs/nope/jobs", None, StatusCode::NOT_FOUND, "no run named"),
        ("GET", "/api/v1/jobs/999999", None, StatusCode::NOT_FOUND, "there is no job 999999"),
        ("GET", "/api/v1/jobs/abc", None, StatusCode::BAD_REQUEST, "`abc` is not a job id"),
        ("GET", "/api/v1/runs/r1/jobs?state=bogus", None, StatusCode::BAD_REQUEST, "`state=bogus` is not a job state"),
        ("GET", "/api/v1/runs/r1/jobs?class=bogus", None, StatusCode::BAD_REQUEST, "`class=bogus` is not a failure class"),
        ("GET", "/api/v1/runs/r1/jobs?limit=0", None, StatusCode::BAD_REQUEST, "out of range"),
        ("GET", "/api/v1/runs/r1/jobs?after=x", None, StatusCode::BAD_REQUEST, "the query is not valid"),
        ("POST", "/api/v1/runs/nope/pause", None, StatusCode::NOT_FOUND, "no run named"),
        ("POST", "/api/v1/runs/r1/resubmit", None, StatusCode::BAD_REQUEST, "exactly one of"),
        ("POST", "/api/v1/runs/r1/resubmit", Some(json!({"all": true, "jobs": [1]})), StatusCode::BAD_REQUEST, "exactly one of"),
        ("POST", "/api/v1/runs/r1/resubmit", Some(json!({"everything": true})), StatusCode::BAD_REQUEST, "unknown field"),
        ("POST", "/api/v1/runs/nope/resubmit", Some(json!({"all": true})), StatusCode::NOT_FOUND, "no run named"),
        ("POST", "/api/v1/runs/r1/resubmit", Some(json!({"jobs": [999999]})), StatusCode::NOT_FOUND, "has no job 999999"),
        ("POST", "/api/v1/workers/w1/release", None, StatusCode::NOT_FOUND, "is not quarantined"),
        ("POST", "/api/v1/runs/r1/regenerate", None, StatusCode::BAD_REQUEST, "say which jobs to regenerate"),
        ("POST", "/api/v1/runs/r1/regenerate", Some(json!({"jobs": [999999]})), StatusCode::NOT_FOUND, "has no job 999999"),
        ("GET", "/api/v1/runs/r1/jobs?order=sideways", None, StatusCode::BAD_REQUEST, "`order=sideways` is not an order"),
        ("GET", "/api/v1/jobs/1/image?which=thumb", None, StatusCode::BAD_REQUEST, "`which=thumb` is not an image"),
        ("GET", "/api/v1/jobs/1/image?which=source&size=300", None, StatusCode::BAD_REQUEST, "`size=300` is not a thumbnail size"),
        ("GET", "/api/v1/jobs/999999/image?which=source", None, StatusCode::NOT_FOUND, "there is no job 999999"),
        ("GET", "/api/v1/nothing", None, StatusCode::NOT_FOUND, "no such page"),
        ("PUT", "/api/v1/runs", None, StatusCode::METHOD_NOT_ALLOWED, "is not a method"),
    ];
    for (method, path, body, expected, sentence) in table {
        let answer = api.call(method, path, Call { token: Some(OPERATOR), body: body.clone(), ..Call::default() }).await;
        assert_eq!(answer.status, *expected, "{method} {path}: {}", answer.body);
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(sentence), "{method} {path}: `{message}` should say `{sentence}`");
    }
    // Filters and pages work on the real store.
    let page = api.call("GET", "/api/v1/runs/r1/jobs?shard=m2&limit=1", bearer(READ)).await.body;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["jobs"][0]["sample_id"], "s2");
    let next = page["next_after"].as_i64().unwrap();
    let rest = api.call("GET", &format!("/api/v1/runs/r1/jobs?shard=m2&limit=1&after={next}"), bearer(READ)).await.body;
    assert_eq!(rest["jobs"][0]["sample_id"], "s3");
    let newest = api.call("GET", "/api/v1/runs/r1/jobs?order=newest&limit=3", bearer(READ)).await.body;
    let samples: Vec<&str> = newest["jobs"].as_array().unwrap().iter().map(|j| j["sample_id"].as_str().unwrap()).collect();
    assert_eq!(samples, ["s3", "s2", "s1"]);
    let before = newest["next_after"].as_i64().unwrap();
    let last = api.call("GET", &format!("/api/v1/runs/r1/jobs?order=newest&after={before}"), bearer(READ)).await.body;
    assert_eq!(last["jobs"][0]["sample_id"], "s0");
    let run = api.call("GET", "/api/v1/runs/r1", bearer(READ)).await.body;
    assert_eq!((run["counts"]["queued"].as_u64(), run["total"].as_u64(), run["parameters"]["run"]["name"].as_str()), (Some(4), Some(4), Some("r1")));
    let shards = api.call("GET", "/api/v1/runs/r1/shards", bearer(READ)).await.body;
    assert_eq!(shards["shards"].as_array().unwrap().iter().map(|s| s["counts"]["queued"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 2]);
}

#[tokio::test]
async fn a_session_cookie_stands_for_its_token_and_changes_need_this_sites_origin() {
    let api = api().await;
    let origin = format!("http://{HOST}");
    let read = api.session(READ).await;
    let operator = api.session(OPERATOR).await;
    let with = |cookie: &String, origin: Option<&'static str>| Call { cookie: Some(cookie.clone()), origin, ..Call::default() };
    let origin: &'static str = Box::leak(origin.into_boxed_str());

    assert_eq!(api.status("GET", "/api/v1/runs", with(&read, None)).await, StatusCode::OK);
    let session = api.call("GET", "/api/v1/session", with(&operator, None)).await;
    assert_eq!((session.body["signed_in"].as_bool(), session.body["role"].as_str()), (Some(true), Some("operator")));
    let anonymous = api.call("GET", "/api/v1/session", Call::default()).await;
    assert_eq!((anonymous.status, anonymous.body["signed_in"].as_bool()), (StatusCode::OK, Some(false)), "not signed in is no error");
    // Read sessions cannot act; operator sessions can, from this site's pages only.
    assert_eq!(api.status("POST", "/api/v1/runs/r1/pause", with(&read, Some(origin))).await, StatusCode::FORBIDDEN);
    assert_eq!(api.status("POST", "/api/v1/runs/r1/pause", with(&operator, None)).await, StatusCode::FORBIDDEN, "no Origin");
    assert_eq!(api.status("POST", "/api/v1/runs/r1/pause", with(&operator, Some("http://evil.example"))).await, StatusCode::FORBIDDEN);
    assert_eq!(
        api.status("GET", "/api/v1/runs", with(&operator, Some("http://evil.example"))).await,
        StatusCode::FORBIDDEN,
        "a foreign page may not read either"
    );
    assert_eq!(api.status("POST", "/api/v1/runs/r1/pause", with(&operator, Some(origin))).await, StatusCode::OK);

    // Sign-in refusals, and a tampered cookie.
    let refused = |token: &'static str| Call { body: Some(json!({ "token": token })), ..Call::default() };
    assert_eq!(api.status("POST", "/api/v1/session", refused(WORKER)).await, StatusCode::FORBIDDEN);
    assert_eq!(api.status("POST", "/api/v1/session", refused("nope")).await, StatusCode::UNAUTHORIZED);
    let forged = operator.replacen("operator", "read", 1);
    assert_eq!(api.status("GET", "/api/v1/runs", with(&forged, None)).await, StatusCode::UNAUTHORIZED);
    let signed_out = api.call("DELETE", "/api/v1/session", Call::default()).await;
    assert_eq!(signed_out.status, StatusCode::NO_CONTENT);
    assert!(signed_out.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().contains("Max-Age=0"));
}

/// Every route of the OpenAPI document is served (none falls through to "no such page" or "not a
/// method"), with absolute paths.
#[tokio::test]
async fn the_openapi_document_lists_routes_the_router_serves() {
    let api = api().await;
    let document = api.call("GET", "/api/openapi.json", Call::default()).await.body;
    let paths = document["paths"].as_object().unwrap();
    assert_eq!(paths.len(), ApiDoc::openapi().paths.paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path} is not absolute");
        let concrete = path.replace("{run}", "r1").replace("{id}", &api.job.to_string()).replace("{name}", "w1");
        for method in ["get", "post", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let answer = api.call(&method.to_uppercase(), &concrete, bearer(OPERATOR)).await;
            let message = answer.body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.contains("no such page") && answer.status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not served: {message}"
            );
        }
    }
    assert!(operations >= 21, "{operations} operations documented");
}

/// One server-sent event.
#[derive(Debug)]
struct Sse {
    event: String,
    id: u64,
    data: Value,
}

/// Reads events off a live response body.
struct SseReader {
    body: futures_util::stream::BoxStream<'static, Result<axum::body::Bytes, axum::Error>>,
    buffer: String,
}

impl SseReader {
    async fn open(api: &Api, path: &str, last_event_id: Option<u64>) -> Self {
        let mut request = Request::get(path).header(header::HOST, HOST).header(header::AUTHORIZATION, format!("Bearer {READ}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = api.app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/event-stream"));
        Self { body: Box::pin(response.into_body().into_data_stream()), buffer: String::new() }
    }

    /// The next event (keep-alive comments skipped), within 20 s.
    async fn next(&mut self) -> Sse {
        use futures_util::StreamExt;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| block.lines().find_map(|line| line.strip_prefix(name)).map(str::trim).map(str::to_string);
                let Some(event) = field("event:") else { continue };
                return Sse {
                    event,
                    id: field("id:").and_then(|id| id.parse().ok()).unwrap_or(0),
                    data: serde_json::from_str(&field("data:").unwrap_or_default()).unwrap(),
                };
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), self.body.next()).await.expect("an event within 20 s");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open").unwrap()));
        }
    }

    /// The next event of this kind.
    async fn next_of(&mut self, event: &str) -> Sse {
        loop {
            let next = self.next().await;
            if next.event == event {
                return next;
            }
        }
    }
}

#[tokio::test]
async fn live_events_send_a_snapshot_then_what_changed_and_resume_after_the_last_event_id() {
    let api = api().await;
    let mut live = SseReader::open(&api, "/api/v1/events?run=r1", None).await;
    let snapshot = live.next().await;
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["runs"][0]["counts"]["queued"], 4);
    assert_eq!(snapshot.data["shards"].as_array().unwrap().len(), 2, "the watched run's shards come with the snapshot");

    // A change through the API reaches the stream as a delta of that run only.
    assert_eq!(api.status("POST", "/api/v1/runs/r1/pause", bearer(OPERATOR)).await, StatusCode::OK);
    let paused = live.next_of("runs").await;
    assert_eq!(paused.data["runs"].as_array().unwrap().len(), 1);
    assert_eq!(paused.data["runs"][0]["state"], "paused");
    assert!(paused.id > snapshot.id);

    // A change made behind the coordinator's back (straight in the store, as another replica
    // would) is found by the hub's poll; the watched run's shard moves.
    assert_eq!(api.status("POST", "/api/v1/runs/r1/resume", bearer(OPERATOR)).await, StatusCode::OK);
    let request = acufarm_coordinator::store::LeaseRequest {
        worker_id: "w1".into(),
        worker_name: "w1".into(),
        bundle_sha256: "b".repeat(64),
        max_jobs: 1,
        lease_duration: std::time::Duration::from_secs(60),
        now: chrono::Utc::now(),
    };
    assert_eq!(api.store.lease(&request).await.unwrap().len(), 1);
    let shards = loop {
        let next = live.next_of("shards").await;
        if next.data["shards"][0]["counts"]["leased"] == 1 {
            break next;
        }
    };
    assert_eq!((shards.data["run"].as_str(), shards.data["shards"][0]["key"].as_str()), (Some("r1"), Some("m1")));

    // Reconnecting after the snapshot replays what was missed, without a new snapshot.
    let mut resumed = SseReader::open(&api, "/api/v1/events?run=r1", Some(snapshot.id)).await;
    let replayed = resumed.next().await;
    assert_eq!((replayed.event.as_str(), replayed.id), ("runs", paused.id), "{replayed:?}");
    // An id the hub does not hold (from another process's numbering) gets a snapshot.
    let mut fresh = SseReader::open(&api, "/api/v1/events", Some(1_000_000)).await;
    let first = fresh.next().await;
    assert_eq!(first.event, "snapshot");
    assert!(first.data.get("shards").is_none(), "no run watched, no shards");
}
