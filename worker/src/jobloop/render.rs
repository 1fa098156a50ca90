//! The render side of the loop: jobs with equal sampler settings and image size share calls of
//! the current batch size; a call that runs out of memory halves the batch size and its jobs are
//! rendered again in smaller calls (a single job that does not fit fails retryably, so a bigger
//! GPU may take it). Calls run on a blocking thread so heartbeats keep flowing.

use super::{Batch, Ctx, Job, JobSource, Ready, Stopped, plan, report};
use crate::executor::{self, Fetched, JobError, RenderedBatch, Staged};
use crate::pipeline::engine::{Pipeline, PipelineError, SamplerParams};
use acufarm_core::{FailureClass, JobSpec};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Renders one call's jobs (all with the same settings and size). [`Pipeline`] is the one real
/// implementation; the trait lets the loop's batching be tested with a renderer that runs out of
/// memory on demand.
pub trait Render: Send + 'static {
    fn render(&mut self, params: &SamplerParams, jobs: &[(&JobSpec, &Fetched)]) -> Result<RenderedBatch, PipelineError>;
}

impl Render for Pipeline {
    fn render(&mut self, params: &SamplerParams, jobs: &[(&JobSpec, &Fetched)]) -> Result<RenderedBatch, PipelineError> {
        executor::render(self, params, jobs)
    }
}

/// Records each job's render stages in its trace: the call's encode, sample and decode (the graph
/// seconds of the whole call, laid one after another from its start, since the images of a batch
/// go through each graph together) and the job's own QA check after them.
fn record_stages(call: &[Ready], rendered: &RenderedBatch, started_at: std::time::SystemTime) {
    let n = call.len().max(1) as f64;
    let t = rendered.timing;
    let at = |seconds: f64| started_at + std::time::Duration::from_secs_f64(seconds.max(0.0));
    let stages = [("encode", t.encode_seconds * n), ("sample", t.sample_seconds * n), ("decode", t.decode_seconds * n)];
    for (i, ready) in call.iter().enumerate() {
        let mut from = 0.0;
        for (name, seconds) in stages {
            acufarm_proto::trace::record_child(&ready.job.trace, name, at(from), at(from + seconds));
            from += seconds;
        }
        if let Some(Ok(checked)) = rendered.qa.get(i)
            && checked.seconds > 0.0
        {
            acufarm_proto::trace::record_child(&ready.job.trace, "qa", at(from), at(from + checked.seconds));
        }
    }
}

/// Owns the renderer between calls.
pub(super) struct Renderer<R> {
    /// `None` only while a call runs on the blocking thread.
    inner: Option<R>,
}

impl<R: Render> Renderer<R> {
    pub(super) fn new(inner: R) -> Self {
        Self { inner: Some(inner) }
    }

    /// Renders a batch, stages the outputs and reports the batch.
    pub(super) async fn process<S: JobSource>(&mut self, ctx: &Ctx<S>, batch: Batch) -> Result<(), S::Error> {
        let started = Instant::now();
        let Batch { ready, mut failures } = batch;
        let mut completions = Vec::new();
        let keys: Vec<(SamplerParams, (u32, u32))> = ready.iter().map(|r| (r.params, r.fetched.source.rgb.dimensions())).collect();
        let mut slots: Vec<Option<Ready>> = ready.into_iter().map(Some).collect();
        for group in plan::group_by(&keys) {
            let jobs: Vec<Ready> = group.iter().filter_map(|&i| slots[i].take()).collect();
            if let Some(params) = jobs.first().map(|r| r.params) {
                self.render_group(ctx, params, jobs, &mut completions, &mut failures).await?;
            }
        }
        let (rendered, unusable) = (completions.len(), failures.len());
        let (succeeded, failed) = report(ctx, completions, failures).await?;
        let lost = rendered + unusable - succeeded - failed;
        tracing::info!(succeeded, failed, lost, seconds = started.elapsed().as_secs_f64(), batch_size = ctx.batch(), "finished a batch");
        Ok(())
    }

    async fn render_group<S: JobSource>(
        &mut self,
        ctx: &Ctx<S>,
        params: SamplerParams,
        jobs: Vec<Ready>,
        completions: &mut Vec<(Job, Staged)>,
        failures: &mut Vec<(Job, JobError)>,
    ) -> Result<(), S::Error> {
        let mut calls = plan::Calls::new(jobs, ctx.batch());
        while let Some(call) = calls.next_call(ctx.batch()) {
            // A job whose lease was lost meanwhile is not worth rendering.
            let call: Vec<Ready> = call.into_iter().filter(|r| !ctx.held.is_lost(r.job.key)).collect();
            if call.is_empty() {
                continue;
            }
            let size = call.len();
            let jobs: Vec<i64> = call.iter().map(|r| r.job.key.0).collect();
            let span = tracing::info_span!("render", images = size, jobs = ?jobs);
            let started_at = std::time::SystemTime::now();
            let (call, result) = tracing::Instrument::instrument(self.render(params, call), span).await.map_err(S::Error::from)?;
            let error = match result {
                Ok(rendered) => {
                    record_stages(&call, &rendered, started_at);
                    let mut images = rendered.images.iter().zip(rendered.qa);
                    for ready in call {
                        let outcome = match images.next() {
                            Some((image, Ok(qa))) => {
                                let stage = executor::stage(&ready.spec, &ready.fetched, image, rendered.timing, qa, &ready.job.staging_key, &ready.output);
                                tracing::Instrument::instrument(stage, ready.job.span("upload")).await
                            }
                            Some((_, Err(qa_failure))) => Err(qa_failure),
                            None => Err(JobError::new(FailureClass::Retryable, format!("the pipeline returned no image for {}", ready.job.sample_id))),
                        };
                        match outcome {
                            Ok(staged) => completions.push((ready.job, staged)),
                            Err(e) => failures.push((ready.job, e)),
                        }
                    }
                    continue;
                }
                Err(e) => e,
            };
            let call = if matches!(error, PipelineError::OutOfMemory { .. }) {
                let was = ctx.batch();
                match calls.out_of_memory(call, was) {
                    Ok(now) => {
                        ctx.batch.store(now, Ordering::Relaxed);
                        tracing::warn!("{error}; batch size {was} → {now}, rendering these {size} jobs again in smaller calls");
                        continue;
                    }
                    // A single job that does not fit fails retryably (maybe a bigger GPU takes it).
                    Err(call) => call,
                }
            } else {
                call
            };
            let error = JobError::from(error);
            failures.extend(call.into_iter().map(|r| (r.job, error.clone())));
        }
        Ok(())
    }

    /// One call on a blocking thread; the jobs travel there and back with the renderer.
    async fn render(&mut self, params: SamplerParams, chunk: Vec<Ready>) -> Result<(Vec<Ready>, Result<RenderedBatch, PipelineError>), Stopped> {
        let mut inner = self.inner.take().ok_or_else(|| Stopped::Crashed { what: "render thread", reason: "an earlier render lost the pipeline".into() })?;
        let handle = tokio::task::spawn_blocking(move || {
            let result = {
                let jobs: Vec<(&JobSpec, &Fetched)> = chunk.iter().map(|r| (&r.spec, &r.fetched)).collect();
                inner.render(&params, &jobs)
            };
            (inner, chunk, result)
        });
        let (inner, chunk, result) = handle.await.map_err(|e| Stopped::Crashed { what: "render thread", reason: e.to_string() })?;
        self.inner = Some(inner);
        Ok((chunk, result))
    }
}
