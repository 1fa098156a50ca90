//! Runs resolved jobs: fetches a job's inputs from storage, renders a batch through the pipeline,
//! stages each output and reports what happened. Shared by the embedded runner and the worker agent.
//!
//! Every error is classified where it is born: bad inputs (missing or corrupt image, broken label,
//! unusable parameters) are permanent; storage hiccups, ONNX Runtime failures and out-of-memory
//! are retryable. With `[qa]` in the spec every output passes the landmark-drift gate or is
//! rendered again with its next `qa_try`; one that fails every try is a `qa` failure.

use crate::drift::{self, FaceError, gate::SourceFace};
use crate::pipeline::conditioning::{self, Background};
use crate::pipeline::engine::{Pipeline, PipelineError, RenderRequest, SamplerParams, Scene, Strengths};
use crate::pipeline::image_io::{self, SourceImage};
use crate::pipeline::schedule::Partial;
use acufarm_core::manifest::{self, sha256_bytes};
use acufarm_core::qa::{QaPlan, QaRecord};
use acufarm_core::{FailureClass, JobSpec};
use acufarm_storage::{Storage, StorageError};
use bytes::Bytes;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// A job failure with its class and one sentence for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    pub class: FailureClass,
    pub message: String,
    /// The QA gate's checks of every try, for a `qa` failure (the job page draws them).
    pub qa: Vec<QaRecord>,
    /// The last lines the worker logged for this job ([`crate::jobloop::logtail`]), filled when
    /// the failure is reported.
    pub log: Vec<String>,
}

impl JobError {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into(), qa: Vec::new(), log: Vec::new() }
    }

    /// What the coordinator keeps with the failed attempt besides the message: the QA checks
    /// and the log lines, as JSON (empty when there are neither).
    pub fn detail_json(&self) -> String {
        if self.qa.is_empty() && self.log.is_empty() {
            return String::new();
        }
        serde_json::json!({ "qa": self.qa, "log": self.log }).to_string()
    }

    fn permanent(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Permanent, message)
    }
}

impl From<StorageError> for JobError {
    fn from(e: StorageError) -> Self {
        let class = if e.is_retryable() { FailureClass::Retryable } else { FailureClass::Permanent };
        Self::new(class, e.to_string())
    }
}

impl From<PipelineError> for JobError {
    fn from(e: PipelineError) -> Self {
        let class = if e.is_retryable() { FailureClass::Retryable } else { FailureClass::Permanent };
        Self::new(class, e.to_string())
    }
}

/// Where a job's files live.
pub struct Roots<'a> {
    pub input: &'a Storage,
    pub output: &'a Storage,
    /// Root that `JobSpec::scene` and a background path are relative to.
    pub scenes: &'a Storage,
}

/// A job's decoded inputs.
pub struct Fetched {
    pub source: SourceImage,
    pub source_sha256: String,
    pub mask: Vec<bool>,
    pub scene: Option<Scene>,
    pub background: Background,
    pub seconds: f64,
}

/// A staged output, ready for the coordinator to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    pub staging_key: String,
    pub sha256: String,
    pub source_sha256: String,
    pub timings: BTreeMap<String, f64>,
    /// The QA gate's checks, one per rendered qa_try (empty without `[qa]`).
    pub qa: Vec<acufarm_core::qa::QaRecord>,
}

/// Scene images decoded once per worker.
#[derive(Default)]
pub struct SceneCache {
    images: HashMap<String, Arc<image::RgbImage>>,
}

impl SceneCache {
    async fn get(&mut self, root: &Storage, path: &str) -> Result<Arc<image::RgbImage>, JobError> {
        if let Some(img) = self.images.get(path) {
            return Ok(img.clone());
        }
        let bytes = root.get(path).await?;
        let img = Arc::new(image_io::decode(&bytes, path).map_err(|e| JobError::permanent(format!("scene: {e}")))?.rgb);
        self.images.insert(path.to_string(), img.clone());
        Ok(img)
    }
}

/// The sampler settings of a job (jobs with equal settings and size can share UNet calls).
pub fn sampler_params(job: &JobSpec) -> SamplerParams {
    let p = &job.params;
    SamplerParams { sampler: p.sampler, scheduler: p.scheduler, steps: p.steps, partial: Partial::from_options(p.t0, p.denoise) }
}

/// Downloads and decodes what one job needs; a broken label fails the job here, before rendering.
pub async fn fetch(job: &JobSpec, roots: &Roots<'_>, scenes: &mut SceneCache) -> Result<Fetched, JobError> {
    let started = Instant::now();
    let bytes = roots.input.get(&job.source).await?;
    let source = image_io::decode(&bytes, &job.source).map_err(|e| JobError::permanent(e.to_string()))?;
    if let Some(label) = &job.label {
        let label_bytes = roots.input.get(label).await?;
        manifest::parse_label(&label_bytes, label).map_err(|e| JobError::permanent(e.to_string()))?;
    }
    let depth = match &job.depth {
        Some(path) => Some(image_io::decode(&roots.input.get(path).await?, path).map_err(|e| JobError::permanent(format!("depth map: {e}")))?),
        None => None,
    };
    let depth_gray = depth.map(|d| image::DynamicImage::ImageRgb8(d.rgb).to_luma8());
    let mode = conditioning::ForegroundMode::new(job.params.foreground, job.params.color_key_tolerance);
    let mask = conditioning::foreground_mask(&source, mode, depth_gray.as_ref()).map_err(|e| JobError::permanent(format!("{}: {e}", job.source)))?;
    let scene = match &job.scene {
        Some(choice) => Some(Scene { key: choice.path.clone(), image: scenes.get(roots.scenes, &choice.path).await? }),
        None => None,
    };
    let background = match &job.params.background {
        acufarm_core::Background::Scene => Background::Scene,
        acufarm_core::Background::Gray => Background::Gray,
        acufarm_core::Background::Image(path) => Background::Image(scenes.get(roots.scenes, path).await?.as_ref().clone()),
    };
    Ok(Fetched { source_sha256: sha256_bytes(&bytes), source, mask, scene, background, seconds: started.elapsed().as_secs_f64() })
}

fn request(job: &JobSpec, fetched: &Fetched) -> RenderRequest {
    RenderRequest {
        source: fetched.source.clone(),
        mask: fetched.mask.clone(),
        scene: fetched.scene.clone(),
        background: fetched.background.clone(),
        prompt: job.prompt.clone(),
        negative: job.negative.clone(),
        seed: job.seed,
        noise: None,
        strengths: Strengths { cfg: job.params.cfg, ipa_weight: job.params.ipa_weight, ic_multiplier: job.params.ic_multiplier },
    }
}

/// How long a rendered batch took, per image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderTiming {
    /// Wall-clock seconds of the whole render, divided by the batch size.
    pub render_seconds: f64,
    /// Seconds spent inside ONNX Runtime, divided by the batch size.
    pub ort_seconds: f64,
    /// Of those, the VAE encoder's, the UNet's (every sampler step) and the VAE decoder's.
    pub encode_seconds: f64,
    pub sample_seconds: f64,
    pub decode_seconds: f64,
}

/// The images of one render call, in job order, not yet staged.
pub struct RenderedBatch {
    pub images: Vec<image::RgbImage>,
    pub timing: RenderTiming,
    /// Per job: the QA gate's checks (empty without `[qa]`), or the `qa` failure after every try.
    pub qa: Vec<Result<Checked, JobError>>,
}

/// The QA gate's checks of one output (one per rendered try) and the seconds the gate took,
/// re-renders included.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub records: Vec<QaRecord>,
    pub seconds: f64,
}

/// Renders jobs that share sampler settings and image size in one pipeline call. This is the
/// blocking, GPU-bound part of a job; the error is the pipeline's own, so a caller can tell out of
/// memory (retry with a smaller batch) from other failures.
pub fn render(pipeline: &mut Pipeline, params: &SamplerParams, jobs: &[(&JobSpec, &Fetched)]) -> Result<RenderedBatch, PipelineError> {
    let ort_before = pipeline.timings.total_ort();
    let graphs_before = pipeline.timings.seconds_in_ort.clone();
    let started = Instant::now();
    let images = render_plain(pipeline, params, jobs)?;
    let n = jobs.len().max(1) as f64;
    let graph = |name: &str| (pipeline.timings.seconds_in_ort.get(name).copied().unwrap_or(0.0) - graphs_before.get(name).copied().unwrap_or(0.0)) / n;
    let timing = RenderTiming {
        render_seconds: started.elapsed().as_secs_f64() / n,
        ort_seconds: (pipeline.timings.total_ort() - ort_before) / n,
        encode_seconds: graph("vae_encoder"),
        sample_seconds: graph("unet"),
        decode_seconds: graph("vae_decoder"),
    };
    let mut batch = RenderedBatch { images, timing, qa: Vec::new() };
    for (i, (job, fetched)) in jobs.iter().enumerate() {
        let started = Instant::now();
        let outcome = match (&job.qa, batch.images.get_mut(i)) {
            (Some(plan), Some(image)) => gate(pipeline, job, fetched, plan, image)?,
            _ => Ok(Vec::new()),
        };
        batch.qa.push(outcome.map(|records| Checked { seconds: if records.is_empty() { 0.0 } else { started.elapsed().as_secs_f64() }, records }));
    }
    Ok(batch)
}

fn face_error(e: FaceError) -> PipelineError {
    PipelineError::Inference { graph: "face mesh (QA gate)", reason: e.to_string() }
}

/// The QA gate of one job (DESIGN §8): measures `image` against the source; while it fails and
/// re-generations remain, renders the job again with the next `qa_try` seed and draws, replacing
/// `image`. Returns every check, or the `qa` failure naming each try's reason.
fn gate(
    pipeline: &mut Pipeline,
    job: &JobSpec,
    fetched: &Fetched,
    plan: &QaPlan,
    image: &mut image::RgbImage,
) -> Result<Result<Vec<QaRecord>, JobError>, PipelineError> {
    let source = &fetched.source.rgb;
    let mesh = pipeline.face_mesh().map_err(face_error)?;
    let face = SourceFace::new(&mesh.run(source).map_err(face_error)?, source.width(), source.height());
    let mut records: Vec<QaRecord> = Vec::new();
    for k in 0..=plan.retries.len() {
        let current = if k == 0 { Cow::Borrowed(job) } else { Cow::Owned(job.with_qa_retry(k).expect("k within the plan's retries")) };
        if k > 0 {
            let params = sampler_params(&current);
            let mut again = render_plain(pipeline, &params, &[(&*current, fetched)])?;
            *image = again.pop().expect("one image per job");
        }
        let mesh = pipeline.face_mesh().map_err(face_error)?;
        let points = mesh.points(image).map_err(face_error)?;
        let change = drift::gate::change_outside_face(source, image, face.roi.as_ref());
        let mut record = drift::gate::judge(&plan.limits, &face, &points, change, current.qa_try, current.seed);
        record.source_size = Some([source.width(), source.height()]);
        record.output_size = Some([image.width(), image.height()]);
        let passed = record.passed();
        if !passed {
            tracing::info!(sample = %job.sample_id, qa_try = current.qa_try, reason = record.reason.as_deref().unwrap_or(""), "output failed the QA gate");
        }
        records.push(record);
        if passed {
            return Ok(Ok(records));
        }
    }
    let tries: Vec<String> = records.iter().map(|r| format!("try {} (seed {}): {}", r.qa_try, r.seed, r.reason.as_deref().unwrap_or("failed"))).collect();
    let message = format!(
        "{} failed the landmark-drift QA gate on all {} tries: {}; loosen the [qa] limits or raise max_retries and resubmit with the new spec, or regenerate it with new seeds",
        job.output,
        records.len(),
        tries.join("; ")
    );
    Ok(Err(JobError { qa: records, ..JobError::new(FailureClass::Qa, message) }))
}

/// One pipeline call without the gate.
fn render_plain(pipeline: &mut Pipeline, params: &SamplerParams, jobs: &[(&JobSpec, &Fetched)]) -> Result<Vec<image::RgbImage>, PipelineError> {
    let requests: Vec<RenderRequest> = jobs.iter().map(|(job, fetched)| request(job, fetched)).collect();
    Ok(pipeline.render(params, &requests)?.into_iter().map(|r| r.image).collect())
}

/// Encodes one rendered image like its source and uploads it to `staging_key` in `output`.
pub async fn stage(
    job: &JobSpec,
    fetched: &Fetched,
    image: &image::RgbImage,
    timing: RenderTiming,
    qa: Checked,
    staging_key: &str,
    output: &Storage,
) -> Result<Staged, JobError> {
    let upload_started = Instant::now();
    let bytes =
        image_io::encode_like(image, &fetched.source).map_err(|e| JobError::new(FailureClass::Retryable, format!("cannot encode {}: {e}", job.output)))?;
    let sha256 = sha256_bytes(&bytes);
    output.put(staging_key, Bytes::from(bytes)).await?;
    let mut timings = BTreeMap::from([
        ("fetch".to_string(), fetched.seconds),
        ("render".to_string(), timing.render_seconds),
        ("onnxruntime".to_string(), timing.ort_seconds),
        // Nested in `render` (core::manifest::is_nested_stage), so not counted twice.
        ("render/encode".to_string(), timing.encode_seconds),
        ("render/sample".to_string(), timing.sample_seconds),
        ("render/decode".to_string(), timing.decode_seconds),
        ("upload".to_string(), upload_started.elapsed().as_secs_f64()),
    ]);
    if !qa.records.is_empty() {
        timings.insert("qa".to_string(), qa.seconds);
    }
    Ok(Staged { staging_key: staging_key.to_string(), sha256, source_sha256: fetched.source_sha256.clone(), timings, qa: qa.records })
}

/// Renders jobs that share sampler settings and image size in one batch, stages each output at
/// its staging key, and returns one outcome per job in order. A failure of the batch as a whole
/// (e.g. out of memory) is reported for every job.
pub async fn render_and_stage(
    pipeline: &mut Pipeline,
    params: &SamplerParams,
    jobs: &[(JobSpec, Fetched, String)],
    output: &Storage,
) -> Vec<Result<Staged, JobError>> {
    let refs: Vec<(&JobSpec, &Fetched)> = jobs.iter().map(|(job, fetched, _)| (job, fetched)).collect();
    let batch = match render(pipeline, params, &refs) {
        Ok(batch) => batch,
        Err(e) => {
            let err = JobError::from(e);
            return jobs.iter().map(|_| Err(err.clone())).collect();
        }
    };
    let mut out = Vec::with_capacity(jobs.len());
    for (((job, fetched, staging_key), image), qa) in jobs.iter().zip(&batch.images).zip(batch.qa) {
        out.push(match qa {
            Ok(records) => stage(job, fetched, image, batch.timing, records, staging_key, output).await,
            Err(e) => Err(e),
        });
    }
    out
}
