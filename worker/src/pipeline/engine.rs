//! The img2img engine: one bundle's ONNX sessions and the loop that turns source images into
//! relit images (DESIGN §4). Several images share every UNet call; cond and uncond rows of CFG
//! ride in the same batch. Embeddings that repeat (prompts, scenes) are computed once.

use crate::pipeline::bundle::{self, Bundle, BundleError, Graph, IcLight};
use crate::pipeline::conditioning::{self, Background};
use crate::pipeline::image_io::{self, SourceImage};
use crate::pipeline::noise;
use crate::pipeline::runtime::{self, Runtime, RuntimeError, RuntimeOptions, TrtProfile};
use crate::pipeline::sampler::{self, SamplerKind};
use crate::pipeline::schedule::{self, Partial, ScheduleError, SchedulerKind, SigmaTable};
use crate::pipeline::tokenizer::{ClipTokenizer, TokenizerError};
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("out of GPU memory in {graph}: {reason}; use a smaller batch or image size")]
    OutOfMemory { graph: &'static str, reason: String },
    #[error("{graph} failed in ONNX Runtime: {reason}")]
    Inference { graph: &'static str, reason: String },
    #[error("{0}")]
    Input(String),
}

impl PipelineError {
    /// Whether the same job may succeed on a retry (or with a smaller batch); bad inputs never do.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::OutOfMemory { .. } | Self::Inference { .. })
    }
}

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub runtime: RuntimeOptions,
    /// Re-hash every bundle file at load (seconds for a full-size bundle; on by default).
    pub verify_hashes: bool,
    /// Images per UNet call the sessions are prepared for (TensorRT profiles).
    pub max_batch: usize,
    /// Pixel size the TensorRT profiles are built for.
    pub resolution: (u32, u32),
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self { runtime: RuntimeOptions::default(), verify_hashes: true, max_batch: 1, resolution: (512, 512) }
    }
}

/// Sampler settings; all images of one `render` call share them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    pub sampler: SamplerKind,
    pub scheduler: SchedulerKind,
    pub steps: u32,
    pub partial: Partial,
}

/// Per-image conditioning strengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Strengths {
    pub cfg: f32,
    pub ipa_weight: f32,
    pub ic_multiplier: f32,
}

/// A scene image with the key its IP-Adapter tokens are cached under.
#[derive(Debug, Clone)]
pub struct Scene {
    pub key: String,
    pub image: Arc<RgbImage>,
}

/// One image to render.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    pub source: SourceImage,
    /// Foreground mask at the source size (IC-Light bundles).
    pub mask: Vec<bool>,
    /// Scene for IP-Adapter and the `fbc` background; `None` switches the IP-Adapter branch off.
    pub scene: Option<Scene>,
    pub background: Background,
    pub prompt: String,
    pub negative: String,
    pub seed: u64,
    /// Replaces the seeded noise (NCHW, one image).
    pub noise: Option<Vec<f32>>,
    pub strengths: Strengths,
}

#[derive(Debug, Clone)]
pub struct Rendered {
    /// The output at the source image's size.
    pub image: RgbImage,
    /// Final latents (before the VAE decoder), shape `latent_shape`.
    pub latents: Vec<f32>,
    pub latent_shape: [usize; 4],
}

/// Latent geometry of one image at the model size.
struct LatentShape {
    channels: usize,
    height: usize,
    width: usize,
    pixel_width: u32,
    pixel_height: u32,
}

impl LatentShape {
    fn new(m: &bundle::Manifest, pixel_width: u32, pixel_height: u32) -> Self {
        let f = m.vae_scale_factor as u32;
        Self { channels: m.latent_channels, height: (pixel_height / f) as usize, width: (pixel_width / f) as usize, pixel_width, pixel_height }
    }
    fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// See `Pipeline::condition`.
struct BatchConditioning {
    latent_ref: Vec<f32>,
    concat: Vec<f32>,
    hidden: Vec<f32>,
    ip_tokens: Vec<f32>,
    ip_scale: Vec<f32>,
}

/// Time spent inside ONNX Runtime, per graph.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    pub seconds_in_ort: BTreeMap<&'static str, f64>,
    pub calls: BTreeMap<&'static str, u64>,
}

impl Timings {
    pub fn total_ort(&self) -> f64 {
        self.seconds_in_ort.values().sum()
    }
    fn record(&mut self, graph: &'static str, elapsed: Duration) {
        *self.seconds_in_ort.entry(graph).or_default() += elapsed.as_secs_f64();
        *self.calls.entry(graph).or_default() += 1;
    }
}

struct Sessions {
    text_encoder: Session,
    vae_encoder: Session,
    vae_decoder: Session,
    unet: Session,
    image_encoder: Option<Session>,
    image_proj: Option<Session>,
}

pub struct Pipeline {
    bundle: Bundle,
    runtime: Runtime,
    sessions: Sessions,
    tokenizer: ClipTokenizer,
    table: SigmaTable,
    text_cache: HashMap<String, Arc<Vec<f32>>>,
    scene_cache: HashMap<String, Arc<Vec<f32>>>,
    uncond_tokens: Option<Arc<Vec<f32>>>,
    pub timings: Timings,
    /// The QA gate's face models, opened on first use with this pipeline's execution providers.
    face_mesh: Option<crate::drift::FaceMesh>,
}

/// Borrowed tensor data (shape, values) for one ONNX Runtime input.
enum Input<'a> {
    F32(Vec<usize>, &'a [f32]),
    I32(Vec<usize>, &'a [i32]),
}

fn run(
    session: &mut Session,
    graph: &'static str,
    inputs: Vec<(&'static str, Input<'_>)>,
    output: &str,
    timings: &mut Timings,
) -> Result<Vec<f32>, PipelineError> {
    let fail = |e: ort::Error| {
        let reason = e.to_string();
        let lower = reason.to_lowercase();
        if lower.contains("out of memory") || lower.contains("failed to allocate") || lower.contains("cudaerrormemoryallocation") {
            PipelineError::OutOfMemory { graph, reason }
        } else {
            PipelineError::Inference { graph, reason }
        }
    };
    let mut values: Vec<(Cow<'static, str>, ort::session::SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
    for (name, input) in &inputs {
        let value = match input {
            Input::F32(shape, data) => TensorRef::from_array_view((shape.clone(), *data)).map_err(fail)?.into(),
            Input::I32(shape, data) => TensorRef::from_array_view((shape.clone(), *data)).map_err(fail)?.into(),
        };
        values.push((Cow::Borrowed(*name), value));
    }
    let started = Instant::now();
    let outputs = session.run(values).map_err(fail)?;
    let (_, data) = outputs[output].try_extract_tensor::<f32>().map_err(fail)?;
    let data = data.to_vec();
    timings.record(graph, started.elapsed());
    Ok(data)
}

impl Pipeline {
    /// Loads and validates a bundle, opens its sessions and checks every graph's signature.
    pub fn load(dir: &Path, options: &PipelineOptions) -> Result<Self, PipelineError> {
        let bundle = Bundle::load(dir, options.verify_hashes)?;
        let tokenizer = ClipTokenizer::from_file(&bundle.path(&bundle.manifest.tokenizer.file))?;
        let runtime = Runtime::new(options.runtime.clone())?;
        let m = &bundle.manifest;
        let open = |graph: Graph| -> Result<Option<Session>, PipelineError> {
            if !graph.needed(m.ip_adapter) {
                return Ok(None);
            }
            let entry = bundle.graph(graph).expect("Bundle::load checked the graph set");
            let profile = trt_profile(graph, entry, options);
            let session = runtime.session(&bundle.path(&entry.file), Some(&profile))?;
            let (inputs, outputs) = graph.io_names(m.ip_adapter);
            bundle::check_signature(&entry.inputs, &runtime::describe(session.inputs()), inputs, "input")
                .and_then(|_| bundle::check_signature(&entry.outputs, &runtime::describe(session.outputs()), outputs, "output"))
                .map_err(|reason| bundle.signature_error(graph, reason))?;
            Ok(Some(session))
        };
        let sessions = Sessions {
            text_encoder: open(Graph::TextEncoder)?.expect("always needed"),
            vae_encoder: open(Graph::VaeEncoder)?.expect("always needed"),
            vae_decoder: open(Graph::VaeDecoder)?.expect("always needed"),
            unet: open(Graph::Unet)?.expect("always needed"),
            image_encoder: open(Graph::ImageEncoder)?,
            image_proj: open(Graph::ImageProj)?,
        };
        Ok(Self {
            bundle,
            runtime,
            sessions,
            tokenizer,
            table: SigmaTable::sd15(),
            text_cache: HashMap::new(),
            scene_cache: HashMap::new(),
            uncond_tokens: None,
            timings: Timings::default(),
            face_mesh: None,
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The face models of the landmark-drift gate, opened on the first call.
    pub fn face_mesh(&mut self) -> Result<&mut crate::drift::FaceMesh, crate::drift::FaceError> {
        if self.face_mesh.is_none() {
            self.face_mesh = Some(crate::drift::FaceMesh::new(&self.runtime)?);
        }
        Ok(self.face_mesh.as_mut().expect("opened above"))
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The sigmas a render with these settings walks.
    pub fn sigmas(&self, params: &SamplerParams) -> Result<Vec<f32>, ScheduleError> {
        schedule::schedule(&self.table, params.scheduler, params.steps, params.partial)
    }

    /// Text-encoder output for each prompt, from the cache where possible (one batched call for
    /// the rest).
    fn text_embeddings(&mut self, prompts: &[&str]) -> Result<Vec<Arc<Vec<f32>>>, PipelineError> {
        let length = self.bundle.manifest.text_max_length;
        let mut missing: Vec<&str> = prompts.iter().copied().filter(|p| !self.text_cache.contains_key(*p)).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let mut ids = Vec::with_capacity(missing.len() * length);
            for prompt in &missing {
                let encoded = self.tokenizer.encode(prompt, length);
                if encoded.truncated {
                    tracing::warn!(prompt, "prompt is longer than {} tokens; the rest is ignored", length - 2);
                }
                ids.extend(encoded.ids);
            }
            let out = run(
                &mut self.sessions.text_encoder,
                "text_encoder",
                vec![("input_ids", Input::I32(vec![missing.len(), length], &ids))],
                "last_hidden_state",
                &mut self.timings,
            )?;
            let each = out.len() / missing.len();
            for (i, prompt) in missing.iter().enumerate() {
                self.text_cache.insert(prompt.to_string(), Arc::new(out[i * each..(i + 1) * each].to_vec()));
            }
        }
        Ok(prompts.iter().map(|p| self.text_cache[*p].clone()).collect())
    }

    fn project(&mut self, embeds: &[f32], rows: usize) -> Result<Vec<f32>, PipelineError> {
        let width = embeds.len() / rows;
        let proj = self.sessions.image_proj.as_mut().expect("IP-Adapter bundle");
        run(proj, "image_proj", vec![("image_embeds", Input::F32(vec![rows, width], embeds))], "ip_tokens", &mut self.timings)
    }

    /// IP-Adapter tokens of the unconditional branch: `proj(zeros)`.
    fn uncond_ip_tokens(&mut self) -> Result<Arc<Vec<f32>>, PipelineError> {
        if let Some(tokens) = &self.uncond_tokens {
            return Ok(tokens.clone());
        }
        let width = self.image_embed_width()?;
        let tokens = Arc::new(self.project(&vec![0.0; width], 1)?);
        self.uncond_tokens = Some(tokens.clone());
        Ok(tokens)
    }

    fn image_embed_width(&self) -> Result<usize, PipelineError> {
        let entry = self.bundle.graph(Graph::ImageProj).expect("IP-Adapter bundle");
        match entry.inputs.first().and_then(|t| t.shape.get(1)) {
            Some(bundle::Dim::Fixed(n)) if *n > 0 => Ok(*n as usize),
            _ => Err(self.bundle.signature_error(Graph::ImageProj, "input `image_embeds` needs a fixed width on axis 1".into()).into()),
        }
    }

    fn scene_tokens(&mut self, scene: &Scene) -> Result<Arc<Vec<f32>>, PipelineError> {
        if let Some(tokens) = self.scene_cache.get(&scene.key) {
            return Ok(tokens.clone());
        }
        let size = self.bundle.manifest.image_encoder_size as u32;
        let mut pixels = Vec::new();
        conditioning::clip_pixels(&scene.image, size, &mut pixels);
        let encoder = self.sessions.image_encoder.as_mut().expect("IP-Adapter bundle");
        let s = size as usize;
        let embeds = run(encoder, "image_encoder", vec![("pixel_values", Input::F32(vec![1, 3, s, s], &pixels))], "image_embeds", &mut self.timings)?;
        let tokens = Arc::new(self.project(&embeds, 1)?);
        self.scene_cache.insert(scene.key.clone(), tokens.clone());
        Ok(tokens)
    }

    /// Everything the UNet is conditioned on, for a batch: `latent_ref` per image, the IC-Light
    /// concat per image, and text embeddings / IP tokens / IP scales for `[cond…, uncond…]` rows.
    fn condition(&mut self, requests: &[RenderRequest], shape: &LatentShape) -> Result<BatchConditioning, PipelineError> {
        let m = self.bundle.manifest.clone();
        let n = requests.len();
        let (mw, mh) = (shape.pixel_width, shape.pixel_height);
        let per_latent = shape.len();

        // VAE encode every picture the batch needs in one call: sources, then IC-Light foregrounds, then fbc backgrounds.
        let mut pixels = Vec::new();
        for r in requests {
            image_io::to_vae_input(&image_io::resize(&r.source.rgb, mw, mh), &mut pixels);
        }
        if m.iclight != IcLight::None {
            for r in requests {
                let fg = conditioning::foreground_on_gray(&r.source.rgb, &r.mask);
                image_io::to_vae_input(&image_io::resize(&fg, mw, mh), &mut pixels);
            }
        }
        if m.iclight == IcLight::Fbc {
            for r in requests {
                let scene = r.scene.as_ref().map(|s| s.image.as_ref());
                image_io::to_vae_input(&conditioning::background_for(&r.background, mw, mh, scene), &mut pixels);
            }
        }
        let encoded_count = pixels.len() / (3 * (mw * mh) as usize);
        let means = run(
            &mut self.sessions.vae_encoder,
            "vae_encoder",
            vec![("sample", Input::F32(vec![encoded_count, 3, mh as usize, mw as usize], &pixels))],
            "latent_mean",
            &mut self.timings,
        )?;
        let latent_ref = means[..n * per_latent].iter().map(|v| v * m.latent_scale).collect();

        // IC-Light concat: multiplier · [fg | bg] raw means, the same for cond and uncond.
        let per_concat = (m.unet_in_channels - m.latent_channels) * shape.height * shape.width;
        let mut concat = vec![0.0f32; n * per_concat];
        for (i, r) in requests.iter().enumerate() {
            let k = r.strengths.ic_multiplier;
            let row = &mut concat[i * per_concat..(i + 1) * per_concat];
            for (part, chunk) in row.chunks_mut(per_latent).enumerate() {
                let mean = &means[(n * (part + 1) + i) * per_latent..][..per_latent];
                chunk.iter_mut().zip(mean).for_each(|(o, v)| *o = k * v);
            }
        }

        let prompts: Vec<&str> = requests.iter().map(|r| r.prompt.as_str()).chain(requests.iter().map(|r| r.negative.as_str())).collect();
        let hidden = self.text_embeddings(&prompts)?.iter().flat_map(|t| t.iter().copied()).collect();

        // IP-Adapter: scene tokens for cond rows, proj(zeros) for uncond rows; no scene → scale 0.
        let (mut ip_tokens, mut ip_scale) = (Vec::new(), Vec::new());
        if m.ip_adapter {
            let uncond = self.uncond_ip_tokens()?;
            let mut cond_rows = Vec::with_capacity(n);
            for r in requests {
                match &r.scene {
                    Some(scene) => {
                        cond_rows.push(self.scene_tokens(scene)?);
                        ip_scale.push(r.strengths.ipa_weight);
                    }
                    None => {
                        cond_rows.push(uncond.clone());
                        ip_scale.push(0.0);
                    }
                }
            }
            ip_tokens = cond_rows.iter().flat_map(|t| t.iter().copied()).chain((0..n).flat_map(|_| uncond.iter().copied())).collect();
            ip_scale.extend_from_within(..);
        }
        Ok(BatchConditioning { latent_ref, concat, hidden, ip_tokens, ip_scale })
    }

    /// `x = latent_ref + σ₀·ε`, or `latent_ref + √(1+σ₀²)·ε` when σ₀ is σ_max (ComfyUI's
    /// max-denoise rule); ε from the image's seed or its injected noise.
    fn initial_latents(&self, requests: &[RenderRequest], sigmas: &[f32], latent_ref: &[f32], shape: &LatentShape) -> Result<Vec<f32>, PipelineError> {
        let per_latent = shape.len();
        let sigma0 = sigmas[0] as f64;
        let sigma_max = self.table.sigma_max() as f64;
        let noise_scale =
            if (sigma0 - sigma_max).abs() <= 1e-5 * sigma_max.max(sigma0) || sigma0 > sigma_max { (1.0 + sigma0 * sigma0).sqrt() } else { sigma0 } as f32;
        let mut x = Vec::with_capacity(latent_ref.len());
        for (i, r) in requests.iter().enumerate() {
            let eps = match &r.noise {
                Some(noise) if noise.len() == per_latent => noise.clone(),
                Some(noise) => {
                    return Err(PipelineError::Input(format!(
                        "injected noise has {} values but this image needs 1×{}×{}×{} = {per_latent}; write it with that NCHW shape",
                        noise.len(),
                        shape.channels,
                        shape.height,
                        shape.width
                    )));
                }
                None => noise::gaussian(r.seed, per_latent),
            };
            x.extend(latent_ref[i * per_latent..(i + 1) * per_latent].iter().zip(&eps).map(|(v, e)| v + noise_scale * e));
        }
        Ok(x)
    }

    /// Renders a batch of images that share sampler settings and model size.
    pub fn render(&mut self, params: &SamplerParams, requests: &[RenderRequest]) -> Result<Vec<Rendered>, PipelineError> {
        let Some(first) = requests.first() else { return Ok(Vec::new()) };
        let (mw, mh) = image_io::model_size(first.source.rgb.width(), first.source.rgb.height());
        if let Some(other) = requests.iter().find(|r| image_io::model_size(r.source.rgb.width(), r.source.rgb.height()) != (mw, mh)) {
            let (w, h) = other.source.rgb.dimensions();
            return Err(PipelineError::Input(format!(
                "images of one batch must share a size: {w}×{h} differs from the batch's {mw}×{mh}; batch images by size"
            )));
        }
        if let Some(bad) = requests.iter().find(|r| r.mask.len() != (r.source.rgb.width() * r.source.rgb.height()) as usize) {
            return Err(PipelineError::Input(format!(
                "foreground mask has {} entries but the image has {} pixels; build it with conditioning::foreground_mask",
                bad.mask.len(),
                bad.source.rgb.width() * bad.source.rgb.height()
            )));
        }
        let m = self.bundle.manifest.clone();
        let n = requests.len();
        let shape = LatentShape::new(&m, mw, mh);
        let per_latent = shape.len();
        let (lat_c, lh, lw) = (shape.channels, shape.height, shape.width);
        let sigmas = self.sigmas(params)?;
        let cond = self.condition(requests, &shape)?;
        let x = self.initial_latents(requests, &sigmas, &cond.latent_ref, &shape)?;
        let (concat, per_concat) = (&cond.concat, cond.concat.len() / n);
        let (ip_tokens, ip_scale) = (&cond.ip_tokens, &cond.ip_scale);
        let text = &cond.hidden;

        let cfg: Vec<f32> = requests.iter().map(|r| r.strengths.cfg).collect();
        let with_uncond = cfg.iter().any(|&c| c != 1.0);
        let rows = if with_uncond { 2 * n } else { n };
        let emb_len = text.len() / (2 * n);
        let hidden = &text[..rows * emb_len];
        let tokens_len = if m.ip_adapter { ip_tokens.len() / (2 * n) } else { 0 };
        let ip_tokens = &ip_tokens[..rows * tokens_len];
        let ip_scale = &ip_scale[..if m.ip_adapter { rows } else { 0 }];
        let c_in = m.unet_in_channels;
        let table = &self.table;
        let unet = &mut self.sessions.unet;
        let timings = &mut self.timings;
        let mut sample_in = vec![0.0f32; rows * c_in * lh * lw];

        let latents = sampler::sample(params.sampler, x, &sigmas, |x, sigma, _step| {
            let s = sigma as f64;
            let scale_in = (1.0 / (s * s + 1.0).sqrt()) as f32;
            for row in 0..rows {
                let i = row % n;
                let dst = &mut sample_in[row * c_in * lh * lw..(row + 1) * c_in * lh * lw];
                let (noisy, extra) = dst.split_at_mut(per_latent);
                noisy.iter_mut().zip(&x[i * per_latent..(i + 1) * per_latent]).for_each(|(o, v)| *o = v * scale_in);
                extra.copy_from_slice(&concat[i * per_concat..(i + 1) * per_concat]);
            }
            let timestep = [table.timestep(s) as f32];
            let mut inputs = vec![
                ("sample", Input::F32(vec![rows, c_in, lh, lw], &sample_in)),
                ("timestep", Input::F32(vec![1], &timestep)),
                ("encoder_hidden_states", Input::F32(vec![rows, emb_len / m.cross_attention_dim, m.cross_attention_dim], hidden)),
            ];
            if m.ip_adapter {
                inputs.push(("ip_tokens", Input::F32(vec![rows, m.ip_tokens, tokens_len / m.ip_tokens], ip_tokens)));
                inputs.push(("ip_scale", Input::F32(vec![rows], ip_scale)));
            }
            let eps = run(unet, "unet", inputs, "out_sample", timings)?;
            // denoised = x − σ·ε̂, then CFG on the denoised predictions: u + cfg·(c − u).
            let mut out = Vec::with_capacity(n * per_latent);
            for i in 0..n {
                let xs = &x[i * per_latent..(i + 1) * per_latent];
                let cond = &eps[i * per_latent..(i + 1) * per_latent];
                if with_uncond {
                    let uncond = &eps[(n + i) * per_latent..(n + i + 1) * per_latent];
                    let g = cfg[i];
                    out.extend(xs.iter().zip(cond.iter().zip(uncond)).map(|(x, (c, u))| {
                        let (dc, du) = (x - sigma * c, x - sigma * u);
                        du + g * (dc - du)
                    }));
                } else {
                    out.extend(xs.iter().zip(cond).map(|(x, c)| x - sigma * c));
                }
            }
            Ok::<_, PipelineError>(out)
        })?;

        // Decode: latents / scale → VAE decoder → pixels, back at each source's size.
        let scaled: Vec<f32> = latents.iter().map(|v| v / m.latent_scale).collect();
        let decoded = run(
            &mut self.sessions.vae_decoder,
            "vae_decoder",
            vec![("latent_sample", Input::F32(vec![n, lat_c, lh, lw], &scaled))],
            "sample",
            &mut self.timings,
        )?;
        let per_image = 3 * (mw * mh) as usize;
        Ok(requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let img = image_io::from_vae_output(&decoded[i * per_image..(i + 1) * per_image], mw, mh);
                let (w, h) = r.source.rgb.dimensions();
                Rendered {
                    image: image_io::resize(&img, w, h),
                    latents: latents[i * per_latent..(i + 1) * per_latent].to_vec(),
                    latent_shape: [1, lat_c, lh, lw],
                }
            })
            .collect())
    }
}

/// TensorRT shape profile for a graph: batch axes from 1 to the largest batch the pipeline sends,
/// spatial axes at the configured resolution.
fn trt_profile(graph: Graph, entry: &bundle::GraphEntry, options: &PipelineOptions) -> TrtProfile {
    let b = options.max_batch.max(1) as i64;
    let max_rows = match graph {
        Graph::Unet | Graph::TextEncoder => 2 * b,
        Graph::VaeEncoder => 3 * b,
        _ => b,
    };
    let (w, h) = (options.resolution.0 as i64, options.resolution.1 as i64);
    // Only the VAE encoder takes pixels; the other spatial inputs are latents.
    let (sh, sw) = if graph == Graph::VaeEncoder { (h, w) } else { (h / 8, w / 8) };
    let mut profile = TrtProfile::default();
    let mut parts = [Vec::new(), Vec::new(), Vec::new()];
    for input in &entry.inputs {
        let mut dims = [Vec::new(), Vec::new(), Vec::new()];
        for (axis, dim) in input.shape.iter().enumerate() {
            let (lo, opt, hi) = match dim {
                bundle::Dim::Fixed(n) => (*n, *n, *n),
                bundle::Dim::Symbolic(_) if axis == 0 => (1, max_rows, max_rows),
                bundle::Dim::Symbolic(_) => {
                    let v = if axis == 2 { sh } else { sw };
                    (v, v, v)
                }
            };
            dims[0].push(lo.to_string());
            dims[1].push(opt.to_string());
            dims[2].push(hi.to_string());
        }
        for k in 0..3 {
            parts[k].push(format!("{}:{}", input.name, dims[k].join("x")));
        }
    }
    profile.min = parts[0].join(",");
    profile.opt = parts[1].join(",");
    profile.max = parts[2].join(",");
    profile
}
