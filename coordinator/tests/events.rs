//! Redis presence, events and rates against the real Redis the test command starts
//! (127.0.0.1:6379, or ACUFARM_TEST_REDIS_URL), each test under its own key prefix.

use acufarm_coordinator::events::{Event, Events, Presence};
use std::time::Duration;

fn redis_url() -> String {
    std::env::var("ACUFARM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix(test: &str) -> String {
    format!("acufarm-test-{test}-{}", std::process::id())
}

fn presence(id: &str) -> Presence {
    Presence {
        worker_id: id.into(),
        name: "gpu-node".into(),
        hostname: "host-a".into(),
        bundle_name: "tiny-fc".into(),
        bundle_sha256: "ab".repeat(32),
        execution_providers: vec!["cuda".into(), "cpu".into()],
        gpu: "NVIDIA H100".into(),
        gpu_memory_bytes: 80 << 30,
        last_seen_unix_ms: 1,
        jobs_held: 0,
    }
}

#[tokio::test]
async fn presence_expires_and_a_flush_asks_workers_to_register_again() {
    let events = Events::new(&redis_url(), &prefix("presence"), Duration::from_secs(1)).unwrap();
    assert!(events.ok().await, "Redis must be running at {} (scripts/setup.sh dev starts it)", redis_url());
    events.presence(&presence("w-1")).await;
    events.presence(&presence("w-2")).await;
    assert!(events.touch("w-1", 3, 42).await, "a known worker is refreshed");
    let workers = events.workers().await;
    assert_eq!(workers.iter().map(|w| w.worker_id.as_str()).collect::<Vec<_>>(), ["w-1", "w-2"]);
    assert_eq!((workers[0].jobs_held, workers[0].last_seen_unix_ms), (3, 42));
    assert!(!events.touch("w-unknown", 0, 0).await, "an unknown worker must register again");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(events.workers().await.is_empty(), "presence keys expire with their TTL");
}

#[tokio::test]
async fn rates_count_finished_jobs_over_the_last_minute_and_events_reach_subscribers() {
    let prefix = prefix("rates");
    let events = Events::new(&redis_url(), &prefix, Duration::from_secs(5)).unwrap();
    events.count_done(7, 30, 1_000).await;
    events.count_done(7, 30, 1_030).await;
    events.count_done(7, 600, 900).await; // older than a minute before 1_040
    assert_eq!(events.rate(7, 1_040).await, 1.0);
    assert_eq!(events.rate(8, 1_040).await, 0.0);

    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(events.channel()).await.unwrap();
    events.publish(&Event::RunFinished { run_id: 7, name: "r".into(), succeeded: 60, failed: 0 }).await;
    let message = tokio::time::timeout(Duration::from_secs(5), futures_next(&mut pubsub)).await.expect("event within 5 s");
    assert_eq!(message, r#"{"event":"run_finished","run_id":7,"name":"r","succeeded":60,"failed":0}"#);
}

async fn futures_next(pubsub: &mut redis::aio::PubSub) -> String {
    use futures_util::StreamExt;
    let message = pubsub.on_message().next().await.expect("the subscription stays open");
    message.get_payload().unwrap()
}
