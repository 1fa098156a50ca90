//! OpenTelemetry traces through the real binary: a farm (coordinator and workers) exporting over
//! OTLP/gRPC to a receiver inside this test on a loopback port. One job's trace must hold spans of
//! both processes: the coordinator's lease, the worker's download, encode, sample, decode, upload
//! and complete, and the coordinator's commit, all under the one trace id.

#[allow(dead_code)] // each test binary uses a part of the shared harness
mod support;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::dataset::{Backend, Dataset};
use support::services::free_port;
use support::{FAST, Farm};

/// Every span received: (service name, trace id, span name).
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Vec<u8>, String)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(&self, request: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span.trace_id, span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Per trace id: the (service, span name) pairs seen.
    fn traces(&self) -> BTreeMap<Vec<u8>, BTreeSet<(String, String)>> {
        let mut traces: BTreeMap<Vec<u8>, BTreeSet<(String, String)>> = BTreeMap::new();
        for (service, trace, name) in self.0.lock().unwrap().iter() {
            traces.entry(trace.clone()).or_default().insert((service.clone(), name.clone()));
        }
        traces
    }
}

const WORKER_STAGES: [&str; 7] = ["download", "encode", "sample", "decode", "upload", "complete", "job"];
const COORDINATOR_SPANS: [&str; 2] = ["lease", "commit"];

fn whole(spans: &BTreeSet<(String, String)>) -> bool {
    WORKER_STAGES.iter().all(|name| spans.contains(&("acufarm-worker".to_string(), name.to_string())))
        && COORDINATOR_SPANS.iter().all(|name| spans.contains(&("acufarm-coordinator".to_string(), name.to_string())))
}

#[test]
fn one_jobs_trace_spans_the_coordinator_and_the_worker_with_every_stage() {
    let _serial = support::serial();
    let port = free_port();
    let collector = Collector::default();
    let serving = collector.clone();
    support::rt().spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(serving))
            .serve(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .expect("the OTLP receiver serves");
    });
    let dir = tempfile::Builder::new().prefix("acufarm-traces-").tempdir().unwrap();
    let data = Dataset::generate(&Backend::Fs, dir.path(), "traces", &["M_Asher_N_HD"], &[1, 2, 3]);
    let run = "traced";
    let spec = data.write_spec("spec.toml", run, |s| s);
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), format!("http://127.0.0.1:{port}")),
        // Export every 200 ms, so the test waits on the spans, not on the exporter's schedule.
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "200".to_string()),
    ];
    let mut farm = Farm::start(env, FAST);
    farm.start_workers(&["traced-worker"], 1);
    farm.submit(&spec);
    farm.wait_done(run, Duration::from_secs(180));
    // A worker flushes what it holds when it stops.
    farm.worker("traced-worker").signal("TERM");
    farm.worker("traced-worker").wait_exit(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    let traces = loop {
        let traces = collector.traces();
        if traces.values().any(whole) || Instant::now() > deadline {
            break traces;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let complete = traces.values().filter(|spans| whole(spans)).count();
    farm.log(&format!("{} traces received, {complete} with every stage of both processes", traces.len()));
    assert!(
        complete >= 1,
        "no trace holds the coordinator's {COORDINATOR_SPANS:?} and the worker's {WORKER_STAGES:?}; got: {:#?}",
        traces.values().take(5).collect::<Vec<_>>()
    );
}
