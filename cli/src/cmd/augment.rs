//! `acufarm augment`: one image in, one relit image out, through the bundle's full pipeline.
//! Values come from flags, then the run spec, then the defaults below.

use acufarm_core::{Foreground, RunSpec, resolve};
use acufarm_worker::pipeline::conditioning::{self, Background, ForegroundMode};
use acufarm_worker::pipeline::engine::{Pipeline, PipelineOptions, RenderRequest, SamplerParams, Scene, Strengths};
use acufarm_worker::pipeline::image_io;
use acufarm_worker::pipeline::npy;
use acufarm_worker::pipeline::runtime::{self, RuntimeOptions};
use acufarm_worker::pipeline::sampler::SamplerKind;
use acufarm_worker::pipeline::schedule::{Partial, SchedulerKind};
use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Bundle directory (holding bundle.toml), e.g. models/tiny/fc.
    #[arg(long)]
    bundle: PathBuf,
    /// Source image (PNG or JPEG).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the result; same format and size as the input.
    #[arg(long)]
    output: PathBuf,
    /// Depth map (brighter = nearer, black background) for `--foreground depth`.
    #[arg(long)]
    depth: Option<PathBuf>,
    /// Scene image: IP-Adapter reference and the fbc background [default: the job's scene from
    /// --spec]. Without any scene the IP-Adapter branch is off.
    #[arg(long)]
    scene: Option<PathBuf>,
    /// Run spec: prompts chosen from the input's sample id, and sampler/conditioning defaults.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Positive prompt (overrides the spec's prompt set).
    #[arg(long)]
    prompt: Option<String>,
    /// Negative prompt for the unconditional branch.
    #[arg(long)]
    negative: Option<String>,
    /// Noise seed [default: the job's seed from --spec, else 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Steps of the full schedule [default: 20].
    #[arg(long)]
    steps: Option<u32>,
    /// Start at step ⌊steps·t0⌋ of the schedule, in [0, 1) [default: 0.4].
    #[arg(long, conflicts_with = "denoise", allow_negative_numbers = true)]
    t0: Option<f64>,
    /// KSampler-style partial denoise in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    denoise: Option<f64>,
    /// Classifier-free guidance scale; 1 skips the unconditional branch [default: 2].
    #[arg(long, allow_negative_numbers = true)]
    cfg: Option<f32>,
    /// IP-Adapter weight [default: 0.6].
    #[arg(long, allow_negative_numbers = true)]
    ipa_weight: Option<f32>,
    /// IC-Light concat multiplier [default: 0.18215].
    #[arg(long, allow_negative_numbers = true)]
    ic_multiplier: Option<f32>,
    /// dpmpp_2m or euler [default: dpmpp_2m].
    #[arg(long, value_parser = super::choice::<SamplerKind>(SamplerKind::STRS))]
    sampler: Option<SamplerKind>,
    /// sgm_uniform, normal or karras [default: sgm_uniform].
    #[arg(long, value_parser = super::choice::<SchedulerKind>(SchedulerKind::STRS))]
    scheduler: Option<SchedulerKind>,
    /// Foreground mask: color_key, depth or none [default: depth with --depth, else color_key].
    #[arg(long, value_parser = super::choice::<Foreground>(Foreground::STRS))]
    foreground: Option<Foreground>,
    /// Background image for fbc bundles (default: the scene, or flat gray without one).
    #[arg(long)]
    background: Option<PathBuf>,
    /// Execution providers in priority order, e.g. tensorrt,cuda,cpu.
    #[arg(long, default_value = "cpu")]
    ep: String,
    /// Print what was written (path, steps, sampler, seed, seconds) as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Threads per operator (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Use this noise (NumPy .npy, float32, shape 1×4×h×w) instead of the seeded noise.
    #[arg(long)]
    noise_in: Option<PathBuf>,
    /// Write the final latents (NumPy .npy, float32, NCHW).
    #[arg(long)]
    latents_out: Option<PathBuf>,
    /// Skip re-hashing the bundle's files (they are still checked for presence and signatures).
    #[arg(long)]
    no_verify: bool,
}

fn load_image(path: &Path, what: &str) -> anyhow::Result<image::RgbImage> {
    Ok(image_io::load(path).map_err(|e| anyhow!("{what}: {e}"))?.rgb)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    // With a spec, start from exactly the job the farm would run for this file (variant 0):
    // its prompt set, drawn parameters, seed and scene. Flags override any of them.
    let spec = args.spec.as_deref().map(RunSpec::load).transpose()?;
    let job = match &spec {
        Some(spec) => {
            let name = args.input.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let job = resolve::resolve_job(spec, &spec.grammar()?, name, 0, 0)?;
            tracing::info!(prompt_set = job.prompt_set.as_str(), seed = job.seed, "job resolved from the run spec");
            Some(job)
        }
        None => None,
    };
    let defaults = job.as_ref().map(|j| j.params.clone()).unwrap_or_default();

    // Settings first, so a typo fails before any heavy work.
    let sampler: SamplerKind = args.sampler.unwrap_or(defaults.sampler);
    let scheduler: SchedulerKind = args.scheduler.unwrap_or(defaults.scheduler);
    let steps = args.steps.unwrap_or(defaults.steps);
    let partial = match (args.t0, args.denoise) {
        (None, None) => Partial::from_options(defaults.t0, defaults.denoise),
        (t0, denoise) => Partial::from_options(t0, denoise),
    };
    let params = SamplerParams { sampler, scheduler, steps, partial };
    let strengths = Strengths {
        cfg: args.cfg.unwrap_or(defaults.cfg),
        ipa_weight: args.ipa_weight.unwrap_or(defaults.ipa_weight),
        ic_multiplier: args.ic_multiplier.unwrap_or(defaults.ic_multiplier),
    };
    let default_mode = if args.depth.is_some() && job.is_none() { Foreground::Depth } else { defaults.foreground };
    let mode = ForegroundMode::new(args.foreground.unwrap_or(default_mode), defaults.color_key_tolerance);
    let eps = runtime::parse_ep_list(&args.ep)?;

    let (prompt, negative) = match (&args.prompt, &job) {
        (Some(p), _) => (p.clone(), args.negative.clone().unwrap_or_default()),
        (None, Some(job)) => (job.prompt.clone(), args.negative.clone().unwrap_or_else(|| job.negative.clone())),
        (None, None) => bail!("no prompt: pass --prompt TEXT, or --spec run.toml to choose one from the input's sample id"),
    };
    let seed = args.seed.or(job.as_ref().map(|j| j.seed)).unwrap_or(0);
    let spec_dir = args.spec.as_deref().and_then(Path::parent).unwrap_or(Path::new("")).to_path_buf();
    let scene_path = args.scene.clone().or_else(|| job.as_ref().and_then(|j| j.scene.as_ref()).map(|s| spec_dir.join(&s.path)));

    let source = image_io::load(&args.input)?;
    image_io::check_output_format(&args.output, source.format)?;
    let depth = match &args.depth {
        Some(path) => Some(image::open(path).map_err(|e| anyhow!("cannot read depth map {}: {e}; pass an 8-bit grey PNG", path.display()))?.to_luma8()),
        None => None,
    };
    let mask = conditioning::foreground_mask(&source, mode, depth.as_ref())?;
    let scene = match &scene_path {
        Some(path) => Some(Scene { key: path.display().to_string(), image: Arc::new(load_image(path, "scene")?) }),
        None => None,
    };
    let background = match (&args.background, &defaults.background) {
        (Some(path), _) => Background::Image(load_image(path, "background")?),
        (None, acufarm_core::Background::Scene) => Background::Scene,
        (None, acufarm_core::Background::Gray) => Background::Gray,
        (None, acufarm_core::Background::Image(path)) => Background::Image(load_image(&spec_dir.join(path), "background")?),
    };
    let noise = match &args.noise_in {
        Some(path) => Some(npy::read(path).map_err(|e| anyhow!("{e}"))?.data),
        None => None,
    };
    if matches!(mode, ForegroundMode::Depth) && depth.is_none() {
        bail!("--foreground depth needs --depth IMG");
    }

    let options = PipelineOptions {
        runtime: RuntimeOptions { eps, intra_threads: args.threads, ..RuntimeOptions::default() },
        verify_hashes: !args.no_verify,
        max_batch: 1,
        resolution: image_io::model_size(source.rgb.width(), source.rgb.height()),
    };
    let mut pipeline = Pipeline::load(&args.bundle, &options)?;
    let request = RenderRequest { source: source.clone(), mask, scene, background, prompt, negative, seed, noise, strengths };
    let rendered = pipeline.render(&params, std::slice::from_ref(&request))?.remove(0);

    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create output directory {}", parent.display()))?;
    }
    image_io::save_like(&args.output, &rendered.image, &source)?;
    if let Some(path) = &args.latents_out {
        npy::write(path, &rendered.latent_shape, &rendered.latents).with_context(|| format!("cannot write latents to {}", path.display()))?;
    }
    let wall = started.elapsed().as_secs_f64();
    tracing::info!(timings = %serde_json::to_string(&pipeline.timings).unwrap_or_default(), "seconds inside ONNX Runtime per graph");
    let ort = pipeline.timings.total_ort();
    if args.json {
        let answer = serde_json::json!({
            "output": args.output,
            "steps": pipeline.sigmas(&params)?.len() - 1,
            "sampler": sampler.as_str(),
            "scheduler": scheduler.as_str(),
            "seed": seed,
            "bundle": pipeline.bundle().manifest.name,
            "seconds": wall,
            "seconds_in_onnx_runtime": ort,
        });
        println!("{answer}");
    }
    eprintln!(
        "wrote {} ({} steps of {sampler}/{scheduler}, bundle {}, {} s, {:.0}% inside ONNX Runtime)",
        args.output.display(),
        pipeline.sigmas(&params)?.len() - 1,
        pipeline.bundle().manifest.name,
        format_args!("{wall:.2}"),
        100.0 * ort / wall
    );
    Ok(())
}
