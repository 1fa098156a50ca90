//! The engine through its library API on the committed tiny bundles: several images per UNet call
//! give the same results as one at a time, and a batch may mix per-image strengths.

use acufarm_worker::pipeline::conditioning::{self, Background, ForegroundMode};
use acufarm_worker::pipeline::engine::{Pipeline, PipelineOptions, RenderRequest, SamplerParams, Scene, Strengths};
use acufarm_worker::pipeline::image_io::SourceImage;
use acufarm_worker::pipeline::schedule::Partial;
use std::path::Path;
use std::sync::Arc;

fn request(seed: u64, cfg: f32, ipa_weight: f32, scene: &Scene) -> RenderRequest {
    let rgb = image::RgbImage::from_fn(64, 64, |x, y| {
        if (x as i32 - 30).pow(2) + (y as i32 - 34).pow(2) < 250 { image::Rgb([190, (100 + seed * 20) as u8, 110]) } else { image::Rgb([240, 240, 240]) }
    });
    let source = SourceImage { rgb, alpha: None, format: image::ImageFormat::Png, color: image::ColorType::Rgb8 };
    let mask = conditioning::foreground_mask(&source, ForegroundMode::ColorKey { tolerance: 12 }, None).unwrap();
    RenderRequest {
        source,
        mask,
        scene: Some(scene.clone()),
        background: Background::Scene,
        prompt: format!("a person, light {seed}"),
        negative: "blurry".into(),
        seed,
        noise: None,
        strengths: Strengths { cfg, ipa_weight, ic_multiplier: 0.3 },
    }
}

#[test]
fn batched_render_equals_one_at_a_time() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/fbc");
    let mut pipeline = Pipeline::load(&dir, &PipelineOptions { max_batch: 3, ..PipelineOptions::default() }).unwrap();
    let scene = Scene { key: "s".into(), image: Arc::new(image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([x as u8, y as u8, 77]))) };
    let params = SamplerParams { sampler: "dpmpp_2m".parse().unwrap(), scheduler: "sgm_uniform".parse().unwrap(), steps: 6, partial: Partial::StartAt(0.3) };
    let requests = vec![request(1, 2.0, 0.5, &scene), request(2, 1.0, 0.0, &scene), request(3, 4.0, 1.0, &scene)];
    let batched = pipeline.render(&params, &requests).unwrap();
    assert_eq!(batched.len(), 3);
    for (r, b) in requests.iter().zip(&batched) {
        let single = pipeline.render(&params, std::slice::from_ref(r)).unwrap().remove(0);
        let num: f64 = single.latents.iter().zip(&b.latents).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let den: f64 = single.latents.iter().map(|a| (*a as f64).powi(2)).sum();
        assert!((num / den).sqrt() < 1e-5, "seed {}: batched and single latents differ by {:e}", r.seed, (num / den).sqrt());
    }
    assert_ne!(batched[0].latents, batched[1].latents);
    // Prompts and the scene were encoded once and reused.
    assert_eq!(pipeline.timings.calls["image_encoder"], 1);
}

#[test]
fn batch_of_mixed_sizes_is_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/plain");
    let mut pipeline = Pipeline::load(&dir, &PipelineOptions::default()).unwrap();
    let scene = Scene { key: "s".into(), image: Arc::new(image::RgbImage::new(8, 8)) };
    let mut big = request(1, 1.0, 0.0, &scene);
    big.source.rgb = image::RgbImage::new(128, 128);
    big.mask = vec![true; 128 * 128];
    let params = SamplerParams { sampler: "euler".parse().unwrap(), scheduler: "normal".parse().unwrap(), steps: 2, partial: Partial::Full };
    let err = pipeline.render(&params, &[request(1, 1.0, 0.0, &scene), big]).unwrap_err().to_string();
    assert!(err.contains("must share a size"), "{err}");
}
