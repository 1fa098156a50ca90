//! `acufarm run` (embedded mode) end to end through the real binary, SQLite and the tiny fc
//! bundle: a generated AcuSim-layout dataset of 3 models × 144 views, of which the example spec's
//! view filter keeps 44 per model.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MODELS: [&str; 3] = ["M_Asher_N_HD", "F_Grace_N_HA", "M_Novak_S_BD"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn png(frame: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        let d = (x as i32 - 32).pow(2) + (y as i32 - 28 - (frame % 5) as i32).pow(2);
        if d < 260 { image::Rgb([200, 150, 120]) } else { image::Rgb([236, 236, 236]) }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

struct Dataset {
    dir: tempfile::TempDir,
}

impl Dataset {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("train/image/img_512")).unwrap();
        std::fs::create_dir_all(root.join("train/label/label")).unwrap();
        for model in MODELS {
            for frame in 0..144 {
                std::fs::write(root.join(format!("train/image/img_512/{model}_{frame:04}.png")), png(frame)).unwrap();
                let label = format!(r#"{{"label":[{{"name":"GV20_百会","coordinate":{{"x":0.5,"y":{},"n":-0.9,"h":0.8}}}}]}}"#, 0.1 + frame as f64 / 1000.0);
                std::fs::write(root.join(format!("train/label/label/{model}_{frame:04}.json")), label).unwrap();
            }
        }
        std::fs::write(root.join("map.txt"), "GV20_百会\n").unwrap();
        std::fs::create_dir_all(dir.path().join("scenes")).unwrap();
        std::fs::copy(repo().join("examples/scenes/warm_room.png"), dir.path().join("scenes/warm_room.png")).unwrap();
        let spec = std::fs::read_to_string(repo().join("examples/acusim.toml"))
            .unwrap()
            .replace("file://examples/acusim-mini", &format!("file://{}", root.display()))
            .replace("file://out/acusim-mini-relit", &format!("file://{}", dir.path().join("out").display()))
            .replace("steps = 28", "steps = 3");
        std::fs::write(dir.path().join("spec.toml"), spec).unwrap();
        Self { dir }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn run_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_acufarm"));
        cmd.arg("run").arg(self.path("spec.toml")).arg("--bundle").arg(repo().join("models/tiny/fc")).arg("--state-dir").arg(self.path("state")).arg("--quiet");
        cmd
    }
    fn outputs(&self) -> Vec<PathBuf> {
        let dir = self.path("out/train/image/img_512");
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
        v.sort();
        v
    }
}

fn verify(root: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_acufarm")).arg("verify").arg(root).output().unwrap()
}

#[test]
fn embedded_run_mirrors_the_dataset_and_verifies() {
    let d = Dataset::new();
    let out = d.run_command().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let outputs = d.outputs();
    assert_eq!(outputs.len(), 132, "one output per kept input");
    for path in &outputs {
        let name = path.file_name().unwrap().to_str().unwrap();
        let frame: u32 = name[name.len() - 8..name.len() - 4].parse().unwrap();
        assert!(matches!(frame, 1..=11 | 30..=45 | 108..=118 | 138..=143), "{name}");
        let label = format!("train/label/label/{}.json", &name[..name.len() - 4]);
        assert_eq!(std::fs::read(d.path(&format!("out/{label}"))).unwrap(), std::fs::read(d.path(&format!("data/{label}"))).unwrap());
        assert_ne!(std::fs::read(path).unwrap(), std::fs::read(d.path(&format!("data/train/image/img_512/{name}"))).unwrap());
    }
    assert_eq!(std::fs::read(d.path("out/map.txt")).unwrap(), std::fs::read(d.path("data/map.txt")).unwrap());
    let manifest = std::fs::read_to_string(d.path("out/manifest.jsonl")).unwrap();
    assert_eq!(manifest.lines().count(), 132);
    let metadata = std::fs::read_to_string(d.path("out/train/metadata.jsonl")).unwrap();
    assert_eq!(metadata.lines().count(), 132);
    assert!(metadata.lines().next().unwrap().contains("\"keypoints\":[{\"name\":\"GV20_百会\""));
    let v = verify(&d.path("out"));
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    // Tampering with one output and deleting another is reported precisely.
    std::fs::write(&outputs[0], b"tampered").unwrap();
    std::fs::remove_file(&outputs[1]).unwrap();
    let v = verify(&d.path("out"));
    let report = String::from_utf8_lossy(&v.stdout);
    assert!(!v.status.success());
    let rel = |p: &Path| p.strip_prefix(d.path("out")).unwrap().display().to_string();
    assert!(report.contains(&format!("changed   {}", rel(&outputs[0]))), "{report}");
    assert!(report.contains(&format!("missing   {}", rel(&outputs[1]))), "{report}");

    // The metadata loads with Hugging Face datasets' imagefolder, keypoints included.
    let python = format!("{}/py/bin/python", std::env::var("ACUFARM_HOME").unwrap_or_else(|_| format!("{}/.cache/acufarm", std::env::var("HOME").unwrap())));
    std::fs::write(&outputs[0], png(0)).unwrap();
    std::fs::write(&outputs[1], png(0)).unwrap();
    let check = Command::new(python)
        .args(["-c", "import sys, datasets; ds = datasets.load_dataset('imagefolder', data_dir=sys.argv[1], split='train'); assert len(ds) == 132, len(ds); assert ds[0]['keypoints'][0]['name'] == 'GV20_百会', ds[0]; print('ok')"])
        .arg(d.path("out"))
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", d.path("hf"))
        .output()
        .unwrap();
    assert!(check.status.success(), "datasets imagefolder: {}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn killed_run_resumes_without_redoing_finished_images() {
    let d = Dataset::new();
    let mut child = d.run_command().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while d.outputs().len() < 20 {
        assert!(Instant::now() < deadline, "the run produced no outputs in time");
        assert!(child.try_wait().unwrap().is_none(), "the run finished before it could be killed");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let before: Vec<(PathBuf, std::time::SystemTime)> =
        d.outputs().into_iter().map(|p| (p.clone(), std::fs::metadata(&p).unwrap().modified().unwrap())).collect();
    assert!(before.len() < 132, "killed mid-run");

    let out = d.run_command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming acusim-relight"), "{stderr}");
    assert_eq!(d.outputs().len(), 132);
    // The second run rendered exactly the jobs that were not recorded as done before the kill
    // (an output moved into place but not yet recorded is rendered again, which is correct).
    let done_before: usize = stderr
        .split("resuming acusim-relight: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the resume line says how many jobs were done");
    let rendered_again = d
        .outputs()
        .iter()
        .filter(|p| before.iter().find(|(b, _)| b == *p).is_none_or(|(_, mtime)| std::fs::metadata(p).unwrap().modified().unwrap() != *mtime))
        .count();
    assert_eq!(rendered_again, 132 - done_before, "finished images were rendered again");
    let manifest = std::fs::read_to_string(d.path("out/manifest.jsonl")).unwrap();
    assert_eq!(manifest.lines().count(), 132, "exactly one row per input");
    assert!(verify(&d.path("out")).status.success());
    assert_eq!(files_under(&d.path("out/_staging")), 0, "no staging objects left");
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|entries| entries.filter_map(|e| e.ok()).map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()).unwrap_or(0)
}

#[test]
fn poison_inputs_fail_permanently_and_the_rest_succeed() {
    let d = Dataset::new();
    let images = d.path("data/train/image/img_512");
    std::fs::write(images.join("M_Asher_N_HD_0001.png"), b"\x89PNG\r\n\x1a\nnot an image").unwrap();
    std::fs::write(d.path("data/train/label/label/F_Grace_N_HA_0002.json"), b"{\"label\": [").unwrap();
    std::fs::write(images.join("holiday_snap.png"), png(0)).unwrap();
    let out = d.run_command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot decode image train/image/img_512/M_Asher_N_HD_0001.png"), "{stderr}");
    assert!(stderr.contains("label train/label/label/F_Grace_N_HA_0002.json is not valid JSON"), "{stderr}");
    assert!(stderr.contains("sample id `holiday_snap` matches none of the id patterns"), "{stderr}");
    assert!(stderr.contains("error: 3 jobs of run acusim-relight failed"), "{stderr}");
    assert!(stderr.contains("130 succeeded, 3 failed"), "{stderr}");
    assert_eq!(std::fs::read_to_string(d.path("out/manifest.jsonl")).unwrap().lines().count(), 130);
    assert!(verify(&d.path("out")).status.success(), "the succeeded outputs verify");
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let d = Dataset::new();
    let out = d.run_command().args(["--dry-run", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["jobs"], 132);
    assert_eq!(plan["shards"], serde_json::json!({"F_Grace_N_HA": 44, "M_Asher_N_HD": 44, "M_Novak_S_BD": 44}));
    for (set, id) in [("male", "M_Asher_N_HD"), ("bald_male", "M_Novak_S_BD"), ("female", "F_Grace_N_HA")] {
        assert_eq!(plan["prompt_sets"][set]["jobs"], 44, "{set}");
        assert!(plan["prompt_sets"][set]["example_ids"][0].as_str().unwrap().starts_with(id), "{set}: {}", plan["prompt_sets"][set]);
    }
    assert_eq!(plan["filtered_out"], 300);
    let cfg = plan["params"]["cfg"].as_array().unwrap();
    assert!(cfg[0].as_f64().unwrap() >= 1.8 && cfg[1].as_f64().unwrap() <= 2.4 && cfg[0] != cfg[1], "cfg is drawn per job from [1.8, 2.4]: {cfg:?}");
    assert_eq!(plan["first_jobs"].as_array().unwrap().len(), 5);
    let text = d.run_command().arg("--dry-run").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with("dry run of `acusim-relight`: would queue 132 jobs in 3 shards (300 left out by filters, 0 unresolved); nothing was written"),
        "{text}"
    );
    assert!(text.contains("first jobs:\n  train/image/img_512/"), "{text}");
    assert!(!d.path("state").exists() && !d.path("out").exists(), "a dry run wrote files");
}

#[test]
fn a_spec_with_several_problems_reports_them_all_and_writes_nothing() {
    let d = Dataset::new();
    let spec = std::fs::read_to_string(d.path("spec.toml")).unwrap();
    let bad = spec
        .replace("sampler = \"dpmpp_2m\"", "sampler = \"dpmpp2m\"")
        .replace("cfg = [1.8, 2.4]", "cfg = [2.4, 1.8]")
        .replace("t0 = 0.4", "t0 = 1.0")
        .replace("[retry]", "[retry]\nmax_tries = 3");
    std::fs::write(d.path("spec.toml"), bad).unwrap();
    let out = d.run_command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has 4 problems"), "{stderr}");
    for needle in [
        "unknown sampler `dpmpp2m`; choose one of dpmpp_2m, euler",
        "`sampler.cfg` range [2.4, 1.8] runs backwards",
        "`sampler.t0` is 1, but it must be in [0, 1)",
        "unknown key `retry.max_tries`",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(!d.path("state").exists() && !d.path("out").exists(), "a refused spec wrote files");
}

/// sha256 of every output by path, from a run's manifest.
fn output_hashes(manifest: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(manifest)
        .unwrap()
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            (row["output"]["path"].as_str().unwrap().to_string(), row["output"]["sha256"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn one_two_and_four_workers_render_the_same_bytes() {
    let d = Dataset::new();
    let spec = std::fs::read_to_string(d.path("spec.toml")).unwrap();
    let library = std::fs::read_dir(format!(
        "{}/onnxruntime",
        std::env::var("ACUFARM_HOME").unwrap_or_else(|_| format!("{}/.cache/acufarm", std::env::var("HOME").unwrap()))
    ))
    .unwrap()
    .filter_map(|e| e.ok().map(|e| e.path()))
    .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("libonnxruntime.so"))
    .expect("scripts/setup.sh installed ONNX Runtime");
    let mut runs = Vec::new();
    // Without ORT_DYLIB_PATH, with it naming the library, and with it set but empty (= unset).
    for (workers, ort) in [(1, None), (2, Some(library.display().to_string())), (4, Some(String::new()))] {
        let out_dir = d.path(&format!("out-{workers}"));
        let file = d.path(&format!("spec-{workers}.toml"));
        std::fs::write(&file, spec.replace(&format!("file://{}", d.path("out").display()), &format!("file://{}", out_dir.display()))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_acufarm"));
        cmd.arg("run")
            .arg(&file)
            .arg("--bundle")
            .arg(repo().join("models/tiny/fc"))
            .arg("--state-dir")
            .arg(d.path(&format!("state-{workers}")))
            .arg("--quiet")
            .arg("--workers")
            .arg(workers.to_string());
        cmd.env_remove("ORT_DYLIB_PATH");
        if let Some(value) = &ort {
            cmd.env("ORT_DYLIB_PATH", value);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "--workers {workers} (ORT_DYLIB_PATH {ort:?}): {}", String::from_utf8_lossy(&out.stderr));
        let hashes = output_hashes(&out_dir.join("manifest.jsonl"));
        assert_eq!(hashes.len(), 132, "--workers {workers}");
        runs.push((workers, hashes));
    }
    for (workers, hashes) in &runs[1..] {
        assert!(hashes == &runs[0].1, "--workers {workers} rendered other bytes than --workers 1");
    }
}
