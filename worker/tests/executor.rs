//! The job executor on the tiny fc bundle: jobs resolved from the example spec over a small
//! AcuSim-layout dataset are fetched, rendered in one batch and staged; poison inputs fail
//! permanently with a message naming the file.

mod common;

use acufarm_core::{FailureClass, RunSpec, resolve};
use acufarm_storage::Storage;
use acufarm_worker::executor::{self, Roots, SceneCache};
use acufarm_worker::pipeline::engine::{Pipeline, PipelineOptions};
use bytes::Bytes;
use common::png;
use std::path::Path;

#[tokio::test]
async fn renders_stages_and_classifies_failures() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("file://{}", dir.path().join(name).display());
    let (input, output, scenes) = (Storage::open(&url("in")).unwrap(), Storage::open(&url("out")).unwrap(), Storage::open(&url("scenes")).unwrap());
    let label = Bytes::from_static(br#"{"label":[{"name":"GV20","coordinate":{"x":0.5,"y":0.1}}]}"#);
    for (i, model) in ["M_Asher_N_HD", "F_Grace_N_HA"].iter().enumerate() {
        input.put(&format!("train/image/img_512/{model}_0003.png"), Bytes::from(png(i as u8 * 30))).await.unwrap();
        input.put(&format!("train/label/label/{model}_0003.json"), label.clone()).await.unwrap();
    }
    input.put("train/image/img_512/M_Novak_S_HD_0004.png", Bytes::from_static(b"\x89PNG\r\n\x1a\nbroken")).await.unwrap();
    input.put("train/label/label/M_Novak_S_HD_0004.json", label.clone()).await.unwrap();
    input.put("train/image/img_512/F_Minami_F_HA_0005.png", Bytes::from(png(9))).await.unwrap();
    input.put("train/label/label/F_Minami_F_HA_0005.json", Bytes::from_static(b"{\"label\": [")).await.unwrap();
    scenes.put("scenes/warm_room.png", Bytes::from(png(50))).await.unwrap();

    let text = include_str!("../../examples/acusim.toml").replace("steps = 28", "steps = 4").replace("test/image/img_512", "train/image/img_512");
    let spec = RunSpec::parse(&text, Path::new("acusim.toml")).unwrap();
    let files = input.list("").await.unwrap();
    let jobs = resolve::resolve_run(&spec, &files).unwrap().jobs;
    assert_eq!(jobs.len(), 4);

    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/fc");
    let mut pipeline = Pipeline::load(&bundle, &PipelineOptions { max_batch: 4, ..PipelineOptions::default() }).unwrap();
    let roots = Roots { input: &input, output: &output, scenes: &scenes };
    let mut cache = SceneCache::default();
    let mut ready = Vec::new();
    let mut failures = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        match executor::fetch(&job, &roots, &mut cache).await {
            Ok(fetched) => ready.push((job, fetched, Storage::staging_key("run", i as i64, 1))),
            Err(e) => failures.push((job.source.clone(), e)),
        }
    }
    assert_eq!(failures.len(), 2, "{failures:?}");
    for (source, e) in &failures {
        assert_eq!(e.class, FailureClass::Permanent, "{source}: {e:?}");
    }
    assert!(failures.iter().any(|(s, e)| s.contains("M_Novak") && e.message.contains("cannot decode image train/image/img_512/M_Novak_S_HD_0004.png")));
    assert!(failures.iter().any(|(s, e)| s.contains("F_Minami") && e.message.contains("label train/label/label/F_Minami_F_HA_0005.json is not valid JSON")));

    // Jobs of one spec share sampler settings apart from drawn strengths, so they batch together.
    let params = executor::sampler_params(&ready[0].0);
    let staged = executor::render_and_stage(&mut pipeline, &params, &ready, &output).await;
    assert_eq!(staged.len(), 2);
    for (s, (_, _, key)) in staged.iter().zip(&ready) {
        let s = s.as_ref().unwrap();
        assert_eq!(&s.staging_key, key);
        assert_eq!(output.sha256(key).await.unwrap(), s.sha256);
        assert!(s.timings["render"] > 0.0 && s.timings.contains_key("upload"));
    }
    assert_eq!(output.staging_count().await.unwrap(), 2);
}
