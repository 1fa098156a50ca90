//! Live updates for the dashboard: `GET /api/v1/events` (server-sent events).
//!
//! One hub per coordinator does the work once for every client: woken by this coordinator's own
//! state changes and by every replica's events on Redis pub/sub (or, without Redis, once a
//! second), it waits out a 250 ms window so a burst of reports becomes one update, reads the runs
//! from the state counters, and broadcasts only what changed:
//!
//! - `runs`: the runs whose counts, state or rate changed (the `Run` objects of `/api/v1/runs`);
//! - `shards`: for one run, the shards whose counts changed (sent to clients watching that run,
//!   `?run=NAME`);
//! - `workers`: the worker list, when a worker came, went or changed state.
//!
//! A client first gets a `snapshot` (every run, and the shards of its run), then the deltas. Each
//! client reads from a bounded buffer: one that falls behind gets a fresh snapshot instead of the
//! backlog. Event ids increase; a client reconnecting with `Last-Event-ID` gets the deltas it
//! missed when they are still held, else a snapshot. Comments keep idle connections open.

use super::ApiError;
use super::api::{self, Run, Shard, WorkerList};
use super::session::Reader;
use crate::service::Coordinator;
use crate::store::Store;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};

/// Changes within this window are sent as one update.
pub const COALESCE: Duration = Duration::from_millis(250);
/// Without a wake-up, look at the database this often (other replicas' changes without Redis).
const POLL: Duration = Duration::from_secs(1);
/// Updates one client may fall behind before it gets a snapshot instead.
const CLIENT_BUFFER: usize = 32;
/// Updates held for clients that reconnect with `Last-Event-ID`.
const RECENT: usize = 256;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One update as sent.
#[derive(Debug)]
struct Frame {
    id: u64,
    event: &'static str,
    /// The run a `shards` update is about (clients watching another run skip it).
    run: Option<String>,
    data: String,
}

#[derive(Debug, Default)]
struct Latest {
    /// The id of the newest update these views include.
    id: u64,
    runs: Vec<Run>,
    shards: HashMap<String, Vec<Shard>>,
    workers: Option<WorkerList>,
    /// What each run, shard and the worker list looked like when last sent.
    run_keys: HashMap<String, String>,
    shard_keys: HashMap<(String, String), String>,
    workers_key: String,
    recent: VecDeque<Arc<Frame>>,
}

/// The coordinator's event hub (started with the first client).
pub struct Hub {
    tx: broadcast::Sender<Arc<Frame>>,
    latest: tokio::sync::Mutex<Latest>,
    wake: Notify,
    started: Mutex<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Self { tx: broadcast::channel(CLIENT_BUFFER).0, latest: tokio::sync::Mutex::new(Latest::default()), wake: Notify::new(), started: Mutex::new(false) }
    }
}

#[derive(Serialize)]
struct Snapshot<'a> {
    runs: &'a [Run],
    /// The shards of the run the client watches (`?run=`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    shards: Option<&'a Vec<Shard>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<&'a WorkerList>,
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl Hub {
    /// Something changed here: update the clients soon.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Starts the hub's loop and its Redis subscription, once.
    fn start<S: Store>(&self, coordinator: &Coordinator<S>) {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if *started {
            return;
        }
        *started = true;
        let looping = coordinator.clone();
        tokio::spawn(async move {
            loop {
                let hub = looping.hub();
                let _ = tokio::time::timeout(POLL, hub.wake.notified()).await;
                tokio::time::sleep(COALESCE).await;
                if hub.tx.receiver_count() > 0
                    && let Err(error) = hub.refresh(&looping).await
                {
                    tracing::debug!("live update skipped: {}", error.message);
                }
            }
        });
        if coordinator.has_redis() {
            let listening = coordinator.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(mut messages) = listening.events().subscribe().await {
                        use futures_util::StreamExt;
                        while messages.next().await.is_some() {
                            listening.hub().poke();
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            });
        }
    }

    /// Reads the farm, sends what changed, and keeps the new views as the snapshot.
    async fn refresh<S: Store>(&self, coordinator: &Coordinator<S>) -> Result<(), ApiError> {
        let (runs, shards): (Vec<Run>, HashMap<String, Vec<Shard>>) = api::runs_with_shards(coordinator)
            .await?
            .into_iter()
            .map(|(run, shards)| {
                let name = run.name.clone();
                (run, (name, shards))
            })
            .unzip();
        let workers = api::worker_list(coordinator).await?;
        let mut latest = self.latest.lock().await;
        let mut frames = Vec::new();
        let changed: Vec<&Run> = runs.iter().filter(|run| latest.run_keys.get(&run.name) != Some(&run_key(run))).collect();
        if !changed.is_empty() {
            frames.push(("runs", None, json(&serde_json::json!({ "runs": changed }))));
        }
        for (name, list) in &shards {
            let moved: Vec<&Shard> =
                list.iter().filter(|shard| latest.shard_keys.get(&(name.clone(), shard.key.clone())) != Some(&json(&shard.counts))).collect();
            if !moved.is_empty() {
                frames.push(("shards", Some(name.clone()), json(&serde_json::json!({ "run": name, "shards": moved }))));
            }
        }
        let workers_key = workers_key(&workers);
        if workers_key != latest.workers_key {
            frames.push(("workers", None, json(&workers)));
        }
        latest.run_keys = runs.iter().map(|run| (run.name.clone(), run_key(run))).collect();
        latest.shard_keys = shards.iter().flat_map(|(name, list)| list.iter().map(move |s| ((name.clone(), s.key.clone()), json(&s.counts)))).collect();
        latest.workers_key = workers_key;
        latest.runs = runs;
        latest.shards = shards;
        latest.workers = Some(workers);
        for (event, run, data) in frames {
            latest.id += 1;
            let frame = Arc::new(Frame { id: latest.id, event, run, data });
            latest.recent.push_back(frame.clone());
            if latest.recent.len() > RECENT {
                latest.recent.pop_front();
            }
            // No receivers is fine: nobody is watching.
            let _ = self.tx.send(frame);
        }
        Ok(())
    }

    /// The snapshot event for a client watching `run`.
    fn snapshot(latest: &Latest, run: Option<&str>) -> Event {
        let data = json(&Snapshot { runs: &latest.runs, shards: run.and_then(|run| latest.shards.get(run)), workers: latest.workers.as_ref() });
        Event::default().event("snapshot").id(latest.id.to_string()).data(data)
    }
}

/// What makes a run worth sending again (its counts, state and rate, not the clock).
fn run_key(run: &Run) -> String {
    format!("{}|{}|{:.2}|{}", run.state, json(&run.counts), run.rate_per_s, run.finished)
}

fn workers_key(list: &WorkerList) -> String {
    list.workers.iter().map(|w| format!("{}:{}:{}:{}:{:.1};", w.name, w.worker_id, w.state, w.jobs_held, w.images_per_second)).collect()
}

fn frame_event(frame: &Frame) -> Event {
    Event::default().event(frame.event).id(frame.id.to_string()).data(frame.data.clone())
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// A run name: also send that run's shard updates.
    pub run: Option<String>,
}

/// Server-sent events: a `snapshot`, then `runs`, `shards` (of `?run=`) and `workers` updates.
#[utoipa::path(get, path = "/api/v1/events", tag = "runs", params(EventQuery),
    responses((status = 200, description = "text/event-stream"), (status = 401, body = super::ErrorBody)))]
pub async fn events<S: Store>(
    State(coordinator): State<Coordinator<S>>,
    _: Reader,
    headers: HeaderMap,
    super::Params(query): super::Params<EventQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let hub = coordinator.hub();
    hub.start(&coordinator);
    // Subscribe first, then take the snapshot: nothing falls between them.
    let mut rx = hub.tx.subscribe();
    hub.refresh(&coordinator).await?;
    let resume: Option<u64> = headers.get("last-event-id").and_then(|value| value.to_str().ok()?.trim().parse().ok());
    let run = query.run.filter(|run| !run.is_empty());
    let (first, mut sent) = {
        let latest = hub.latest.lock().await;
        let missed: Option<Vec<Event>> = resume.and_then(|after| {
            let oldest = latest.recent.front().map_or(latest.id + 1, |frame| frame.id);
            (after + 1 >= oldest && after <= latest.id)
                .then(|| latest.recent.iter().filter(|frame| frame.id > after && wanted(frame, run.as_deref())).map(|frame| frame_event(frame)).collect())
        });
        (missed.unwrap_or_else(|| vec![Hub::snapshot(&latest, run.as_deref())]), latest.id)
    };
    let hub_for_stream = coordinator.clone();
    let stream = async_stream(first, move |yielder| async move {
        loop {
            let received = tokio::select! {
                received = rx.recv() => received,
                () = yielder.0.closed() => return,
            };
            match received {
                Ok(frame) if frame.id > sent => {
                    sent = frame.id;
                    if wanted(&frame, run.as_deref()) && !yielder.send(frame_event(&frame)).await {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the backlog: start over from the current state.
                    let latest = hub_for_stream.hub().latest.lock().await;
                    sent = latest.id;
                    let snapshot = Hub::snapshot(&latest, run.as_deref());
                    drop(latest);
                    if !yielder.send(snapshot).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

fn wanted(frame: &Frame, run: Option<&str>) -> bool {
    frame.run.is_none() || frame.run.as_deref() == run
}

/// A stream that yields `first`, then whatever `produce` sends, ending when `produce` returns or
/// the client goes away. (A bounded channel of one: the producer waits for a slow client, whose
/// backlog piles up in the hub's bounded buffer instead, where lagging turns into a snapshot.)
fn async_stream<F, Fut>(first: Vec<Event>, produce: F) -> impl Stream<Item = Result<Event, std::convert::Infallible>>
where
    F: FnOnce(Yielder) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(1);
    tokio::spawn(produce(Yielder(tx)));
    let first = futures_util::stream::iter(first.into_iter().map(Ok));
    let rest = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|event| (Ok(event), rx)) });
    futures_util::StreamExt::chain(first, rest)
}

struct Yielder(tokio::sync::mpsc::Sender<Event>);

impl Yielder {
    /// False once the client is gone.
    async fn send(&self, event: Event) -> bool {
        self.0.send(event).await.is_ok()
    }
}
