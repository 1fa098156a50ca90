//! Worker pipeline throughput: renders N synthetic AcuSim-like images with one loaded bundle and
//! reports images/s and the share of wall time spent inside ONNX Runtime, as one JSON line.
//! Driven by bench/pipeline.sh, which runs diffusers' ONNX img2img pipeline beside it.

use acufarm_worker::pipeline::conditioning::{self, Background, ForegroundMode};
use acufarm_worker::pipeline::engine::{Pipeline, PipelineOptions, RenderRequest, SamplerParams, Scene, Strengths};
use acufarm_worker::pipeline::image_io::SourceImage;
use acufarm_worker::pipeline::runtime::{RuntimeOptions, parse_ep_list};
use acufarm_worker::pipeline::schedule::Partial;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long, default_value_t = 4)]
    images: usize,
    /// Images per UNet call.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 512)]
    size: u32,
    #[arg(long, default_value_t = 20)]
    steps: u32,
    #[arg(long, default_value_t = 0.4)]
    t0: f64,
    #[arg(long, default_value_t = 2.0)]
    cfg: f32,
    #[arg(long, default_value = "cpu")]
    ep: String,
    /// Threads per operator (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn subject(size: u32, i: usize) -> SourceImage {
    let c = size as f32 / 2.0;
    let rgb = image::RgbImage::from_fn(size, size, |x, y| {
        let d = ((x as f32 - c).powi(2) + (y as f32 - c * 0.8).powi(2)).sqrt();
        if d < size as f32 * 0.3 { image::Rgb([200, (140 + i % 40) as u8, 120]) } else { image::Rgb([236, 236, 236]) }
    });
    SourceImage { rgb, alpha: None, format: image::ImageFormat::Png, color: image::ColorType::Rgb8 }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = PipelineOptions {
        runtime: RuntimeOptions { eps: parse_ep_list(&args.ep)?, intra_threads: args.threads, ..RuntimeOptions::default() },
        verify_hashes: false,
        max_batch: args.batch,
        resolution: (args.size, args.size),
    };
    let load_started = Instant::now();
    let mut pipeline = Pipeline::load(&args.bundle, &options)?;
    let load_seconds = load_started.elapsed().as_secs_f64();
    let params = SamplerParams { sampler: "dpmpp_2m".parse()?, scheduler: "sgm_uniform".parse()?, steps: args.steps, partial: Partial::StartAt(args.t0) };
    let scene = Scene {
        key: "bench".into(),
        image: Arc::new(image::RgbImage::from_fn(args.size, args.size, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]))),
    };
    let requests: Vec<RenderRequest> = (0..args.images)
        .map(|i| {
            let source = subject(args.size, i);
            let mask = conditioning::foreground_mask(&source, ForegroundMode::ColorKey { tolerance: 12 }, None).expect("no depth needed");
            RenderRequest {
                source,
                mask,
                scene: Some(scene.clone()),
                background: Background::Scene,
                prompt: "photo of a man, warm window light".into(),
                negative: "blurry".into(),
                seed: i as u64,
                noise: None,
                strengths: Strengths { cfg: args.cfg, ipa_weight: 0.6, ic_multiplier: 0.3 },
            }
        })
        .collect();

    // Warm-up: first calls allocate arenas and fill the embedding caches.
    pipeline.render(&params, &requests[..1])?;
    pipeline.timings = Default::default();
    let started = Instant::now();
    for chunk in requests.chunks(args.batch.max(1)) {
        pipeline.render(&params, chunk)?;
    }
    let wall = started.elapsed().as_secs_f64();
    let ort = pipeline.timings.total_ort();
    let unet_calls = pipeline.timings.calls.get("unet").copied().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "impl": "acufarm",
            "bundle": pipeline.bundle().manifest.name,
            "images": args.images,
            "batch": args.batch,
            "size": args.size,
            "unet_calls_per_image": unet_calls as f64 * args.batch.max(1) as f64 / args.images as f64,
            "load_seconds": load_seconds,
            "wall_seconds": wall,
            "images_per_second": args.images as f64 / wall,
            "ort_share": ort / wall,
            "outside_ort_share": 1.0 - ort / wall,
            "seconds_in_ort": pipeline.timings.seconds_in_ort,
        })
    );
    Ok(())
}
