//! The one job loop (`jobloop::run`, which both the gRPC agent and embedded mode run) on the tiny
//! fc bundle, fed by an in-memory job source: a render call that runs out of memory halves the
//! batch size and renders the same jobs again in smaller calls, until they fit; unreadable specs
//! and inputs fail with their class; every job is reported exactly once.

mod common;

use acufarm_core::{FailureClass, JobSpec, RunSpec, resolve};
use acufarm_storage::Storage;
use acufarm_worker::executor::{Fetched, JobError, RenderedBatch, Staged};
use acufarm_worker::jobloop::{self, Idle, Job, JobKey, JobSource, LeasedJob, LoopOptions, Render, RunRoots, Shutdown, Stopped};
use acufarm_worker::pipeline::engine::{Pipeline, PipelineError, PipelineOptions, SamplerParams};
use bytes::Bytes;
use common::png;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Hands out its jobs `max` at a time and records what comes back.
#[derive(Default)]
struct Queue {
    jobs: Mutex<Vec<LeasedJob>>,
    completed: Mutex<Vec<(Job, Staged)>>,
    failed: Mutex<Vec<(Job, JobError)>>,
}

impl JobSource for Queue {
    type Error = Stopped;

    async fn lease(&self, max: usize) -> Result<Vec<LeasedJob>, Stopped> {
        let mut jobs = self.jobs.lock().unwrap();
        let n = max.min(jobs.len());
        Ok(jobs.drain(..n).collect())
    }

    async fn idle(&self) -> Result<Idle, Stopped> {
        Ok(Idle::Stop)
    }

    async fn heartbeat_interval(&self) -> Result<Duration, Stopped> {
        Ok(Duration::from_secs(3600))
    }

    async fn heartbeat(&self, held: &[JobKey]) -> Result<Option<Vec<JobKey>>, Stopped> {
        Ok(Some(held.to_vec()))
    }

    async fn complete(&self, jobs: Vec<(Job, Staged)>) -> Result<(), Stopped> {
        self.completed.lock().unwrap().extend(jobs);
        Ok(())
    }

    async fn fail(&self, jobs: Vec<(Job, JobError)>) -> Result<(), Stopped> {
        self.failed.lock().unwrap().extend(jobs);
        Ok(())
    }
}

/// The real pipeline on a device with room for `room` images per call: a larger call fails the
/// way ONNX Runtime reports an exhausted GPU, before anything runs.
struct SmallGpu {
    pipeline: Pipeline,
    room: usize,
    calls: Arc<Mutex<Vec<usize>>>,
}

impl Render for SmallGpu {
    fn render(&mut self, params: &SamplerParams, jobs: &[(&JobSpec, &Fetched)]) -> Result<RenderedBatch, PipelineError> {
        self.calls.lock().unwrap().push(jobs.len());
        if jobs.len() > self.room {
            return Err(PipelineError::OutOfMemory { graph: "unet", reason: format!("Failed to allocate memory for {} images", jobs.len()) });
        }
        Render::render(&mut self.pipeline, params, jobs)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_halves_the_batch_and_renders_the_same_jobs_again_until_they_fit() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("file://{}", dir.path().join(name).display());
    let (input, output, scenes) = (Storage::open(&url("in")).unwrap(), Storage::open(&url("out")).unwrap(), Storage::open(&url("scenes")).unwrap());
    let label = Bytes::from_static(br#"{"label":[{"name":"GV20","coordinate":{"x":0.5,"y":0.1}}]}"#);
    for (i, model) in ["M_Asher_N_HD", "F_Grace_N_HA", "M_Novak_S_HD", "F_Iris_F_HD"].iter().enumerate() {
        input.put(&format!("train/image/img_512/{model}_0003.png"), Bytes::from(png(i as u8 * 20))).await.unwrap();
        input.put(&format!("train/label/label/{model}_0003.json"), label.clone()).await.unwrap();
    }
    input.put("train/image/img_512/F_Minami_F_HA_0005.png", Bytes::from_static(b"\x89PNG\r\n\x1a\nbroken")).await.unwrap();
    input.put("train/label/label/F_Minami_F_HA_0005.json", label.clone()).await.unwrap();
    scenes.put("scenes/warm_room.png", Bytes::from(png(50))).await.unwrap();
    let text = include_str!("../../examples/acusim.toml").replace("steps = 28", "steps = 2").replace("test/image/img_512", "train/image/img_512");
    let spec = RunSpec::parse(&text, Path::new("acusim.toml")).unwrap();
    let mut jobs = resolve::resolve_run(&spec, &input.list("").await.unwrap()).unwrap().jobs;
    assert_eq!(jobs.len(), 5);
    // The four good jobs lease first, together; the corrupt image comes with the second lease.
    jobs.sort_by_key(|job| job.source.contains("F_Minami"));

    let roots = Arc::new(RunRoots { input, output: output.clone(), scenes, scenes_url: url("scenes") });
    let mut leased: Vec<LeasedJob> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| LeasedJob {
            job: Job::new(1, (i as i64 + 1, 1), job.sample_id.clone(), Storage::staging_key("oom", i as i64 + 1, 1), "w", ""),
            spec_json: serde_json::to_string(job).unwrap(),
            roots: Ok(roots.clone()),
        })
        .collect();
    leased.push(LeasedJob {
        job: Job::new(1, (99, 1), "odd".into(), Storage::staging_key("oom", 99, 1), "w", ""),
        spec_json: "{not json".into(),
        roots: Ok(roots.clone()),
    });
    let source = Arc::new(Queue { jobs: Mutex::new(leased), ..Queue::default() });

    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/fc");
    let pipeline = Pipeline::load(&bundle, &PipelineOptions { max_batch: 4, ..PipelineOptions::default() }).unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let gpu = SmallGpu { pipeline, room: 1, calls: calls.clone() };
    let shutdown = Shutdown::install("jobloop test").unwrap();
    let batch = jobloop::run(source.clone(), gpu, LoopOptions { worker: "test".into(), batch: 4 }, shutdown).await.unwrap();

    assert_eq!(batch, 1, "4 → 2 → 1 images per call, and it stays there");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(&calls[..3], [4, 2, 1], "the first lease's 4 good jobs: one call of 4, then of 2, then single calls: {calls:?}");
    assert!(calls[3..].iter().all(|&n| n == 1), "{calls:?}");
    let completed = std::mem::take(&mut *source.completed.lock().unwrap());
    let mut done: Vec<i64> = completed.iter().map(|(job, _)| job.key.0).collect();
    done.sort();
    assert_eq!(done, [1, 2, 3, 4], "every rendered job is reported once");
    for (job, staged) in &completed {
        assert_eq!(staged.staging_key, job.staging_key);
        assert_eq!(output.sha256(&staged.staging_key).await.unwrap(), staged.sha256);
    }
    let failed = std::mem::take(&mut *source.failed.lock().unwrap());
    let mut classes: Vec<(i64, FailureClass)> = failed.iter().map(|(job, e)| (job.key.0, e.class)).collect();
    classes.sort_by_key(|(key, _)| *key);
    assert_eq!(classes, [(5, FailureClass::Permanent), (99, FailureClass::Permanent)], "{failed:?}");
}
