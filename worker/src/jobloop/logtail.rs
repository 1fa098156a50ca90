//! The last log lines of each job, so a failed attempt can send them with its report and the
//! dashboard's job page can show what the worker saw. A tracing [`Layer`] (installed by the
//! binary next to its console output, with its own level so the console's filter does not hide
//! them) keeps, per job id, the last [`LINES`] events logged inside that job's `job` spans.
//! [`take`] hands them over when the job fails; [`forget`] drops them when it succeeds.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Lines kept per job.
pub const LINES: usize = 40;
/// Longest line kept (longer ones are cut).
const LINE_CHARS: usize = 500;
/// Jobs tracked at once; beyond this the oldest entries go (a job that never reported).
const JOBS: usize = 4096;

#[derive(Default)]
struct Tails {
    lines: HashMap<i64, VecDeque<String>>,
    order: VecDeque<i64>,
}

fn tails() -> &'static Mutex<Tails> {
    static TAILS: OnceLock<Mutex<Tails>> = OnceLock::new();
    TAILS.get_or_init(Default::default)
}

/// The job a `job` span is about.
struct JobOf(i64);

/// Collects the job id of `job` spans.
#[derive(Default)]
struct JobField(Option<i64>);

impl Visit for JobField {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "job" {
            self.0 = Some(value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "job" {
            self.0 = i64::try_from(value).ok();
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// Formats an event as `LEVEL message key=value …`.
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// The layer that fills the per-job tails.
pub struct JobLogLayer;

pub fn layer() -> JobLogLayer {
    JobLogLayer
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for JobLogLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "job" {
            return;
        }
        let mut field = JobField::default();
        attrs.record(&mut field);
        if let (Some(job), Some(span)) = (field.0, ctx.span(id)) {
            span.extensions_mut().insert(JobOf(job));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        let Some(job) = scope.from_root().find_map(|span| span.extensions().get::<JobOf>().map(|job| job.0)) else { return };
        let mut line = Line(format!("{} {}", chrono::Utc::now().format("%H:%M:%S%.3f"), event.metadata().level()));
        event.record(&mut line);
        let mut text = line.0;
        if text.len() > LINE_CHARS {
            let cut = (0..=LINE_CHARS).rev().find(|at| text.is_char_boundary(*at)).unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        let mut tails = tails().lock().unwrap_or_else(|p| p.into_inner());
        if !tails.lines.contains_key(&job) {
            tails.order.push_back(job);
            while tails.order.len() > JOBS {
                if let Some(oldest) = tails.order.pop_front() {
                    tails.lines.remove(&oldest);
                }
            }
        }
        let lines = tails.lines.entry(job).or_default();
        lines.push_back(text);
        if lines.len() > LINES {
            lines.pop_front();
        }
    }
}

/// The last lines job `job` logged (oldest first), forgetting them.
pub fn take(job: i64) -> Vec<String> {
    let mut tails = tails().lock().unwrap_or_else(|p| p.into_inner());
    tails.order.retain(|held| *held != job);
    tails.lines.remove(&job).map(Vec::from).unwrap_or_default()
}

/// Drops what job `job` logged (it succeeded).
pub fn forget(job: i64) {
    let mut tails = tails().lock().unwrap_or_else(|p| p.into_inner());
    if tails.lines.remove(&job).is_some() {
        tails.order.retain(|held| *held != job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_inside_a_job_span_are_kept_per_job_and_bounded() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("job", step = "fetch", run = 1, job = 900_001_i64, attempt = 1);
            span.in_scope(|| {
                tracing::info!(bytes = 12, "fetched");
                let inner = tracing::info_span!("render");
                inner.in_scope(|| tracing::warn!("out of GPU memory; retrying with 2 images"));
            });
            for i in 0..LINES + 5 {
                tracing::info_span!("job", job = 900_002_i64).in_scope(|| tracing::info!(i, "step"));
            }
            tracing::info!("outside any job");
        });
        let lines = take(900_001);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with("INFO fetched bytes=12"), "{}", lines[0]);
        assert!(lines[1].ends_with("WARN out of GPU memory; retrying with 2 images"), "{}", lines[1]);
        assert!(take(900_001).is_empty(), "taken once");
        let bounded = take(900_002);
        assert_eq!(bounded.len(), LINES);
        assert!(bounded[0].ends_with("step i=5"), "the oldest lines went: {}", bounded[0]);
    }
}
