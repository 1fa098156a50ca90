//! `acufarm evaluate` through the real binary and the project's Python environment: the three arms
//! on the output of a real (embedded, tiny-bundle) run, an S3 dataset, a killed evaluation that
//! resumes to the same numbers, and the errors a user can cause.

#[allow(dead_code)] // each test binary uses a part of the shared harness
mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::services::Moto;

fn python() -> String {
    format!("{}/py/bin/python", support::acufarm_home())
}

fn temp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// A small AcuSim-layout set drawn from the real labels (evaluate/acufarm_eval/synth.py).
fn synth(dir: &Path, models: u32, views: u32) -> PathBuf {
    let out = dir.join("original");
    let status = Command::new(python())
        .args(["-m", "acufarm_eval", "synth", "--models", &models.to_string(), "--views", &views.to_string(), "--size", "48", "--out"])
        .arg(&out)
        .env("PYTHONPATH", support::repo().join("evaluate"))
        .status()
        .expect("the project's Python environment (scripts/setup.sh dev)");
    assert!(status.success());
    out
}

fn evaluate(args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(support::BIN);
    cmd.arg("evaluate").args(args).env("ACUFARM_HOME", support::acufarm_home()).envs(extra.iter().copied());
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "acufarm evaluate failed:\n{stderr}");
    stderr
}

/// A quick resnet18 evaluation of `train` into `out`: 32² inputs, one seed.
fn quick(original: &str, train: &str, out: &Path, epochs: u32, cfg: &Path) -> Vec<String> {
    let out = out.to_str().unwrap();
    let epochs = epochs.to_string();
    let cfg = cfg.to_str().unwrap();
    [
        "--original",
        original,
        "--train",
        train,
        "--out",
        out,
        "--backbone",
        "resnet18",
        "--epochs",
        &epochs,
        "--image-size",
        "32",
        "--seeds",
        "1",
        "--config",
        cfg,
    ]
    .map(String::from)
    .to_vec()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("evaluate.toml");
    std::fs::write(&path, "[evaluate]\nbatch_size = 8\nlearning_rate = 1e-3\nbootstrap = 200\nthreads = 2\nloader_workers = 2\n").unwrap();
    path
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The arms' numbers without wall-clock measurements.
fn numbers(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "samples_per_s" | "train_seconds" | "seconds" | "images_per_s"))
                .map(|(k, v)| (k.clone(), numbers(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(numbers).collect()),
        other => other.clone(),
    }
}

#[test]
fn three_arms_on_the_output_of_a_run_side_by_side() {
    let dir = temp("acufarm-eval-run-");
    let original = synth(dir.path(), 5, 6);
    let output = dir.path().join("relit");
    // An embedded run of the example spec over it, two variants per image, with the tiny bundle.
    let spec = std::fs::read_to_string(support::repo().join("examples/acusim.toml"))
        .unwrap()
        .replace("file://examples/acusim-mini", &format!("file://{}", original.display()))
        .replace("file://out/acusim-mini-relit", &format!("file://{}", output.display()))
        .replace("images = [\"train/image/img_512\", \"test/image/img_512\"]", "images = [\"train/image/img_48\"]")
        .replace("views = \"1-11,30-45,108-118,138-143\"", "views = \"0-5\"")
        .replace("images = [\"scenes/warm_room.png\"]", "images = []")
        .replace("background = \"scene\"", "background = \"gray\"")
        .replace("variants = 1", "variants = 2")
        .replace("steps = 28", "steps = 2");
    let spec_path = dir.path().join("spec.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let run = Command::new(support::BIN)
        .args(["run"])
        .arg(&spec_path)
        .arg("--bundle")
        .arg(support::bundle("fc"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("ACUFARM_HOME", support::acufarm_home())
        .output()
        .unwrap();
    assert!(run.status.success(), "acufarm run: {}", String::from_utf8_lossy(&run.stderr));
    assert!(output.join("v1/train/image/img_48/M_Asher_N_HD_0000.png").is_file());

    let out = dir.path().join("eval");
    let cfg = config(dir.path());
    let aug = format!("file://{}", output.display());
    let args = ["--original", original.to_str().unwrap(), "--augmented", &aug, "--out", out.to_str().unwrap(), "--backbone", "resnet18"];
    let stderr = ok(&evaluate(&[&args[..], &["--epochs", "2", "--image-size", "32", "--seeds", "2", "--config", cfg.to_str().unwrap()]].concat(), &[]));
    assert!(stderr.contains("6 trainings (1 fold(s) × 2 seed(s) × 3 arm(s)) of resnet18 (random init)"), "{stderr}");
    assert!(stderr.contains("ETA"), "progress lines carry an ETA:\n{stderr}");

    let index = json(&out.join("index.json"));
    let originals = index["datasets"]["original"]["samples"].as_array().unwrap();
    let copies = index["datasets"]["augmented"]["samples"].as_array().unwrap();
    assert_eq!(originals.len(), 30);
    assert_eq!(copies.len(), 60, "both variants of every image are augmented copies");
    let ids: std::collections::BTreeSet<&str> = originals.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(copies.iter().all(|c| ids.contains(c["source"].as_str().unwrap())));
    assert!(copies.iter().any(|c| c["image"].as_str().unwrap().contains("/v1/")));

    let doc = json(&out.join("evaluation.json"));
    let split = &doc["splits"][0];
    let set = |k: &str| split[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<std::collections::BTreeSet<_>>();
    let (test, val, train) = (set("test"), set("val"), set("train"));
    assert!(!test.is_empty() && !val.is_empty() && !train.is_empty());
    assert!(test.is_disjoint(&val) && test.is_disjoint(&train) && val.is_disjoint(&train));
    for arm in ["original", "augmented", "both"] {
        let e = &doc["arms"][arm];
        assert_eq!(e["units"].as_array().unwrap().len(), 2, "{arm}: two seeds");
        for m in ["coord_error_mean_px", "coord_within_radius", "vis_accuracy", "vis_rmse", "cls_accuracy"] {
            assert!(e["equal_epochs"][m].is_number() && e["equal_epochs"]["ci95"][m].as_array().unwrap().len() == 2, "{arm} {m}");
            assert!(e["equal_steps"][m].is_number(), "{arm} {m}");
        }
        assert!(out.join(format!("best-{arm}.pt")).is_file());
    }
    let md = std::fs::read_to_string(out.join("evaluation.md")).unwrap();
    for row in ["| original |", "| augmented |", "| both |", "| mean position |"] {
        assert!(md.contains(row), "{row} in evaluation.md");
    }
    for plot in ["loss_curves.png", "loss_curves_steps.png", "per_point_error.png"] {
        assert!(std::fs::metadata(out.join(plot)).unwrap().len() > 1000, "{plot}");
    }
}

#[test]
fn an_s3_dataset_is_read_like_a_folder() {
    let dir = temp("acufarm-eval-s3-");
    let original = synth(dir.path(), 4, 3);
    let moto = Moto::start(dir.path());
    moto.create_bucket("acusim");
    let storage = acufarm_storage::Storage::open_with("s3://acusim/set", moto.storage_options()).unwrap();
    let mut files = std::collections::BTreeSet::new();
    fn walk(d: &Path, root: &Path, out: &mut std::collections::BTreeSet<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out)
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    walk(&original, &original, &mut files);
    support::block_on(async {
        for rel in &files {
            storage.put(rel, std::fs::read(original.join(rel)).unwrap().into()).await.unwrap();
        }
    });
    let out = dir.path().join("eval");
    let cfg = config(dir.path());
    let env: Vec<(String, String)> = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = quick("s3://acusim/set", "original", &out, 1, &cfg);
    let stderr = ok(&evaluate(&strs(&args), &env));
    assert!(stderr.contains("copying 25 files of s3://acusim/set"), "{stderr}");
    let doc = json(&out.join("evaluation.json"));
    assert_eq!(doc["datasets"]["original"]["root"], "s3://acusim/set");
    assert_eq!(doc["datasets"]["original"]["images"], 12);
    // A second evaluation reads the mirror instead of copying again.
    let again = ok(&evaluate(&strs(&args), &env));
    assert!(!again.contains("copying"), "{again}");
}

#[test]
fn a_killed_evaluation_resumes_to_the_same_numbers() {
    let dir = temp("acufarm-eval-kill-");
    let original = synth(dir.path(), 5, 4);
    let cfg = config(dir.path());
    let common = |out: &Path| quick(original.to_str().unwrap(), "original", out, 4, &cfg);
    let killed = dir.path().join("killed");
    let mut cmd = Command::new(support::BIN);
    cmd.arg("evaluate").args(common(&killed)).env("ACUFARM_HOME", support::acufarm_home()).stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    // Killed (the binary and its trainer, SIGKILL: no chance to clean up) once an epoch is checkpointed.
    let progress = killed.join("progress.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !progress.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the evaluation ended before its first checkpoint");
        assert!(Instant::now() < deadline, "no checkpoint within 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    let done = json(&progress)["epoch"].as_u64().unwrap();
    assert!(done < 4, "killed mid-training");
    assert!(!killed.join("evaluation.json").exists());

    let stderr = ok(&evaluate(&strs(&common(&killed)), &[]));
    assert!(stderr.contains(&format!("f0-s0-original resumes after epoch {done} of 4")), "{stderr}");
    let straight = dir.path().join("straight");
    ok(&evaluate(&strs(&common(&straight)), &[]));
    let (a, b) = (json(&killed.join("evaluation.json")), json(&straight.join("evaluation.json")));
    assert_eq!(numbers(&a["arms"]), numbers(&b["arms"]), "a resumed evaluation gives the uninterrupted one's numbers, bit for bit");
}

#[test]
fn user_errors_name_the_fix() {
    let dir = temp("acufarm-eval-errors-");
    let original = synth(dir.path(), 3, 1);
    let o = original.to_str().unwrap();
    let out = dir.path().join("eval");
    let out_s = out.to_str().unwrap();
    let fails = |args: &[&str], env: &[(&str, &str)], needle: &str| {
        let r = evaluate(args, env);
        let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
        assert!(!r.status.success() && stderr.contains(needle), "expected `{needle}` in:\n{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one sentence:\n{stderr}");
    };
    fails(&["--original", o, "--train", "original", "--out", out_s], &[("ACUFARM_PYTHON", "/nonexistent/python")], "install it with `scripts/setup.sh dev`");
    fails(&["--original", o, "--train", "original", "--out", out_s, "--epochs", "0"], &[], "`evaluate.epochs` must be at least 1");
    fails(&["--original", o, "--train", "original,augmented", "--out", out_s], &[], "need --augmented ROOT");
    fails(&["--original", "/nonexistent/set", "--train", "original", "--out", out_s], &[], "is not a folder");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[evaluate]\nepoch = 3\n").unwrap();
    fails(&["--original", o, "--train", "original", "--out", out_s, "--config", bad.to_str().unwrap()], &[], "unknown key `evaluate.epoch`");
    std::fs::remove_file(original.join("map.txt")).unwrap();
    fails(&["--original", o, "--train", "original", "--out", out_s], &[], "has no map.txt");
}
