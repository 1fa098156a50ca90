//! Embedded mode's job source under the one job loop, on a real SQLite store and the tiny fc
//! bundle: a render call that runs out of memory halves the batch exactly as it does for the
//! gRPC agent (the same `jobloop::run`), and every job is committed and recorded once.

use super::source::StoreSource;
use super::{Shared, progress};
use acufarm_coordinator::service::retry_policy;
use acufarm_coordinator::store::JobFilter;
use acufarm_coordinator::{SqliteStore, Store, runs};
use acufarm_core::manifest::BundleRef;
use acufarm_core::{JobSpec, RunSpec, resolve};
use acufarm_storage::Storage;
use acufarm_worker::executor::{Fetched, RenderedBatch};
use acufarm_worker::jobloop::{self, LoopOptions, Render, Shutdown};
use acufarm_worker::pipeline::engine::{Pipeline, PipelineError, PipelineOptions, SamplerParams};
use bytes::Bytes;
use chrono::Utc;
use std::path::Path;
use std::sync::{Arc, Mutex};

fn png(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        if (x as i32 - 32).pow(2) + (y as i32 - 30).pow(2) < 300 { image::Rgb([200, 150 + seed, 120]) } else { image::Rgb([236, 236, 236]) }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The real pipeline on a device with room for one image per call: a larger call fails the way
/// ONNX Runtime reports an exhausted GPU, before anything runs.
struct OneImageGpu {
    pipeline: Pipeline,
    calls: Arc<Mutex<Vec<usize>>>,
}

impl Render for OneImageGpu {
    fn render(&mut self, params: &SamplerParams, jobs: &[(&JobSpec, &Fetched)]) -> Result<RenderedBatch, PipelineError> {
        self.calls.lock().unwrap().push(jobs.len());
        if jobs.len() > 1 {
            return Err(PipelineError::OutOfMemory { graph: "unet", reason: format!("Failed to allocate memory for {} images", jobs.len()) });
        }
        Render::render(&mut self.pipeline, params, jobs)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_halves_the_batch_of_an_embedded_worker_as_it_does_the_agents() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("file://{}", dir.path().join(name).display());
    let (input, output, scenes) = (Storage::open(&url("in")).unwrap(), Storage::open(&url("out")).unwrap(), Storage::open(&url("spec")).unwrap());
    let label = Bytes::from_static(br#"{"label":[{"name":"GV20","coordinate":{"x":0.5,"y":0.1}}]}"#);
    for (i, model) in ["M_Asher_N_HD", "F_Grace_N_HA", "M_Novak_S_HD", "F_Iris_F_HD"].iter().enumerate() {
        input.put(&format!("train/image/img_512/{model}_0003.png"), Bytes::from(png(i as u8 * 20))).await.unwrap();
        input.put(&format!("train/label/label/{model}_0003.json"), label.clone()).await.unwrap();
    }
    scenes.put("scenes/warm_room.png", Bytes::from(png(50))).await.unwrap();
    let text = include_str!("../../../examples/acusim.toml")
        .replace("steps = 28", "steps = 2")
        .replace("test/image/img_512", "train/image/img_512")
        .replace("name = \"acusim-relight\"", "name = \"oom\"");
    let spec = RunSpec::parse(&text, Path::new("acusim.toml")).unwrap();
    let resolution = resolve::resolve_run(&spec, &input.list("").await.unwrap()).unwrap();
    assert_eq!(resolution.jobs.len(), 4);

    let bundle_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/fc");
    let pipeline = Pipeline::load(&bundle_dir, &PipelineOptions { max_batch: 4, ..PipelineOptions::default() }).unwrap();
    let bundle = BundleRef { name: pipeline.bundle().manifest.name.clone(), sha256: pipeline.bundle().sha256.clone() };
    let store = SqliteStore::open(&dir.path().join("oom.sqlite")).await.unwrap();
    store.migrate().await.unwrap();
    let run_id = store.create_run(&runs::plan_run(&spec, &text, &resolution, &bundle.sha256).unwrap(), false, Utc::now()).await.unwrap();
    let shared = Shared {
        dashboard: None,
        store: store.clone(),
        input,
        output: output.clone(),
        scenes,
        run_name: "oom".into(),
        run_id,
        bundle,
        execution_provider: "cpu".into(),
        policy: retry_policy(&spec),
        progress: Arc::new(progress::Progress::new(4, 0, true)),
    };
    let source = Arc::new(StoreSource::new(shared, "embedded-0".into()));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let gpu = OneImageGpu { pipeline, calls: calls.clone() };
    let shutdown = Shutdown::install("embedded test").unwrap();
    let batch = jobloop::run(source, gpu, LoopOptions { worker: "embedded-0".into(), batch: 4 }, shutdown).await.unwrap();

    assert_eq!(batch, 1, "4 → 2 → 1 images per call, and it stays there");
    assert_eq!(*calls.lock().unwrap(), [4, 2, 1, 1, 1, 1], "one call of 4, one of 2, then the same 4 jobs one by one");
    let status = store.run_status(run_id).await.unwrap();
    assert_eq!((status.counts.succeeded, status.counts.failed, status.counts.queued, status.counts.leased), (4, 0, 0, 0));
    let done = store.run_jobs(run_id, &JobFilter::default()).await.unwrap();
    assert!(done.iter().all(|job| job.attempt.0 == 1), "nothing was retried: the loop re-rendered in smaller calls");
    for job in &resolution.jobs {
        assert!(output.sha256(&job.output).await.is_ok(), "{} was not committed", job.output);
    }
    assert_eq!(output.staging_count().await.unwrap(), 0);
}
