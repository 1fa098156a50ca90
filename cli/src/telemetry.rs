//! OpenTelemetry trace export over OTLP/gRPC, off unless an endpoint is given: the coordinator's
//! `otlp_endpoint`, or `OTEL_EXPORTER_OTLP_ENDPOINT` (`ACUFARM_OTLP_ENDPOINT` for this binary
//! alone) for every command. Spans (at `info` and above, whatever the console shows) go through a
//! batch exporter; a collector that is down costs nothing but the dropped spans, and nothing is
//! printed about it. The exporter has a one-thread Tokio runtime of its own, so it works the same
//! under every command's runtime, and it is flushed when the process ends ([`flush`]).
//!
//! The layer is built before logging starts (tracing-opentelemetry must sit directly in the
//! subscriber, not behind a reloadable slot), so the coordinator's config file is looked at
//! here for `otlp_endpoint` before it is loaded in full.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::path::Path;
use std::sync::OnceLock;
use tracing_subscriber::registry::Registry;

pub type OtelLayer = tracing_opentelemetry::OpenTelemetryLayer<Registry, SdkTracer>;

static EXPORT: OnceLock<(SdkTracerProvider, tokio::runtime::Runtime)> = OnceLock::new();

/// The endpoint to export to: `ACUFARM_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`, or the
/// `otlp_endpoint` of the coordinator config file `config` (when it can be read; a broken file is
/// reported when the coordinator loads it).
pub fn endpoint(config: Option<&Path>) -> Option<String> {
    let from_env = ["ACUFARM_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"].iter().find_map(|name| std::env::var(name).ok());
    let from_file = || {
        let table: toml::Table = std::fs::read_to_string(config?).ok()?.parse().ok()?;
        table.get("otlp_endpoint")?.as_str().map(str::to_string)
    };
    from_env.or_else(from_file).map(|endpoint| endpoint.trim().to_string()).filter(|endpoint| !endpoint.is_empty())
}

/// The trace layer exporting this process's spans as `service` to `endpoint`
/// (`http://host:4317`); `OTEL_SERVICE_NAME` overrides the name. A bad endpoint is one sentence.
pub fn layer(endpoint: &str, service: &str) -> Result<OtelLayer, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the trace exporter ({e})"))?;
    // The exporter's gRPC channel lives on this runtime; the batch processor's thread sends on it.
    let entered = runtime.enter();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot export traces to {endpoint} ({e}); give the collector's OTLP/gRPC address, e.g. http://127.0.0.1:4317"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").ok().filter(|name| !name.is_empty()).unwrap_or_else(|| service.to_string());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
        .build();
    drop(entered);
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("acufarm");
    let _ = EXPORT.set((provider, runtime));
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Sends the spans still buffered (at exit), waiting at most a few seconds: a collector that is
/// down costs the spans, never a slow stop (a drained worker inside its grace period).
pub fn flush() {
    if let Some((provider, _)) = EXPORT.get() {
        let _ = provider.shutdown_with_timeout(std::time::Duration::from_secs(3));
    }
}
