//! W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>) across the farm: the
//! coordinator puts each leased job's context in the lease answer, the worker puts each job's in
//! its completion or failure, and gRPC calls carry the caller's in their metadata, so one job's
//! trace runs from the lease through the worker's stages to the commit. Without trace export
//! every span's context is empty and nothing is sent.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The metadata key (and message field) the context travels under.
pub const TRACEPARENT: &str = "traceparent";

/// `span`'s context as a `traceparent` value; empty when the span is not exported.
pub fn traceparent(span: &tracing::Span) -> String {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    format_traceparent(&span_context)
}

fn format_traceparent(context: &SpanContext) -> String {
    if !context.is_valid() {
        return String::new();
    }
    format!("00-{}-{}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8())
}

/// Reads a `traceparent` value (version 00); `None` for an empty or malformed one, which is then
/// ignored (a peer's bad header must never fail a call).
pub fn parse(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if version != "00" || parts.next().is_some() || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// Makes `span` a child of the remote span `traceparent` names; does nothing for an empty or
/// malformed value.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if let Some(remote) = parse(traceparent) {
        // Only fails when the span was already started elsewhere; the span then keeps its parent.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// Records a finished child span of `parent` named `name` over `[start, end]`: a stage measured
/// inside a batched call (encode, sample, decode of one image of a batch), where no span of the
/// job's own could be open. Nothing when `parent` is not exported.
pub fn record_child(parent: &tracing::Span, name: &'static str, start: std::time::SystemTime, end: std::time::SystemTime) {
    use opentelemetry::trace::{Span as _, Tracer as _};
    let context = parent.context();
    if !context.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer("acufarm");
    let mut span = tracer.span_builder(name).with_start_time(start).start_with_context(&tracer, &context);
    span.end_with_timestamp(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_w3c_example_round_trips_and_bad_values_are_ignored() {
        // The example of the W3C recommendation.
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse(text).unwrap();
        assert_eq!(format!("{}", context.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(context.is_sampled() && context.is_remote());
        assert_eq!(format_traceparent(&context), text);
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} must be ignored");
        }
        // A span of a process that exports nothing has no context to send.
        assert_eq!(traceparent(&tracing::info_span!("job")), "");
    }

    proptest::proptest! {
        /// Whatever a peer sends as its trace context, reading it never panics, and what is read
        /// is written back the same.
        #[test]
        fn any_text_is_read_or_ignored(text in "\\PC{0,80}") {
            if let Some(context) = parse(&text) {
                proptest::prop_assert_eq!(format_traceparent(&context), text.trim());
            }
        }

        #[test]
        fn valid_contexts_round_trip(trace in 1u128.., span in 1u64.., flags in proptest::num::u8::ANY) {
            let context = SpanContext::new(TraceId::from(trace), SpanId::from(span), TraceFlags::new(flags), true, TraceState::default());
            proptest::prop_assert_eq!(parse(&format_traceparent(&context)), Some(context));
        }
    }
}
