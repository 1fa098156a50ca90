//! The training-based evaluation's driver: settings and datasets in, the PyTorch trainer
//! (evaluate/acufarm_eval, compiled into the binary and unpacked under `$ACUFARM_HOME/evaluate/`)
//! run in the project's Python environment, evaluation.json / evaluation.md / plots / checkpoints
//! out. `acufarm evaluate` calls it; so does a worker that leases an evaluation job.

pub mod index;

use acufarm_core::IdGrammar;
use acufarm_core::evaluate::EvaluateSection;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub use index::IndexError;

/// The trainer's Python files, as compiled in: what `python -m acufarm_eval run` imports. The
/// `synth` and `bench` subcommands (test data and benchmarks drawn from `labels/`) run from the
/// repository's `evaluate/` folder and stay out.
const PACKAGE: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../../../evaluate/acufarm_eval/__init__.py")),
    ("__main__.py", include_str!("../../../evaluate/acufarm_eval/__main__.py")),
    ("data.py", include_str!("../../../evaluate/acufarm_eval/data.py")),
    ("losses.py", include_str!("../../../evaluate/acufarm_eval/losses.py")),
    ("metrics.py", include_str!("../../../evaluate/acufarm_eval/metrics.py")),
    ("model.py", include_str!("../../../evaluate/acufarm_eval/model.py")),
    ("plots.py", include_str!("../../../evaluate/acufarm_eval/plots.py")),
    ("points.py", include_str!("../../../evaluate/acufarm_eval/points.py")),
    ("report.py", include_str!("../../../evaluate/acufarm_eval/report.py")),
    ("run.py", include_str!("../../../evaluate/acufarm_eval/run.py")),
    ("split.py", include_str!("../../../evaluate/acufarm_eval/split.py")),
    ("train.py", include_str!("../../../evaluate/acufarm_eval/train.py")),
];

/// The Python modules the trainer imports, checked before anything is listed or copied.
const MODULES: &str = "torch, torchvision, matplotlib, PIL, numpy";

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("{0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Setup(String),
    #[error("the evaluation stopped with exit status {0} (its message is above); fix what it names and run the same command again: finished epochs are kept")]
    Failed(i32),
    #[error("the evaluation was interrupted; run the same command again to resume from the last finished epoch")]
    Interrupted,
}

/// One evaluation: where the data is, where the results go, and how to train.
pub struct Plan {
    pub original: String,
    pub augmented: Option<String>,
    pub out: PathBuf,
    pub settings: EvaluateSection,
    /// `[sample_id].patterns`; empty = the two AcuSim spellings.
    pub patterns: Vec<String>,
}

/// The interpreter: `ACUFARM_PYTHON`, else the project's environment `$ACUFARM_HOME/py`.
pub fn python() -> Result<PathBuf, EvaluateError> {
    let path = std::env::var_os("ACUFARM_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::pipeline::runtime::acufarm_home().join("py/bin/python"));
    if !path.is_file() {
        return Err(EvaluateError::Setup(format!(
            "the training environment is missing ({} does not exist); install it with `scripts/setup.sh dev`, or point ACUFARM_PYTHON at a Python with {MODULES}",
            path.display()
        )));
    }
    let probe = Command::new(&path)
        .args(["-c", &format!("import {MODULES}")])
        .output()
        .map_err(|e| EvaluateError::Setup(format!("cannot start {} ({e}); reinstall it with `scripts/setup.sh dev`", path.display())))?;
    if !probe.status.success() {
        let why = String::from_utf8_lossy(&probe.stderr).lines().last().unwrap_or("").trim().to_string();
        return Err(EvaluateError::Setup(format!("{} cannot import {MODULES} ({why}); install them with `scripts/setup.sh dev`", path.display())));
    }
    Ok(path)
}

/// Unpacks the trainer (once per version) and returns the folder to put on PYTHONPATH.
pub fn package() -> Result<PathBuf, EvaluateError> {
    let mut hash = Sha256::new();
    for (name, text) in PACKAGE {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
    }
    let digest: String = hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let base = crate::pipeline::runtime::acufarm_home().join("evaluate");
    let dir = base.join(&digest);
    if dir.join("acufarm_eval/__main__.py").is_file() {
        return Ok(dir);
    }
    let io = |e: std::io::Error| EvaluateError::Setup(format!("cannot unpack the trainer into {} ({e}); make ACUFARM_HOME writable", base.display()));
    let tmp = base.join(format!("{digest}.{}.tmp", std::process::id()));
    std::fs::create_dir_all(tmp.join("acufarm_eval")).map_err(io)?;
    for (name, text) in PACKAGE {
        std::fs::write(tmp.join("acufarm_eval").join(name), text).map_err(io)?;
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process unpacked the same version first.
        Err(_) if dir.join("acufarm_eval/__main__.py").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(io(e)),
    }
}

/// Lists and matches the datasets and writes `out/index.json`; returns its path.
pub fn prepare(plan: &Plan) -> Result<PathBuf, EvaluateError> {
    let setup = |what: &str, e: std::io::Error| EvaluateError::Setup(format!("cannot write {what} ({e}); check that --out is writable"));
    std::fs::create_dir_all(&plan.out).map_err(|e| setup(&plan.out.display().to_string(), e))?;
    let grammar =
        if plan.patterns.is_empty() { IdGrammar::default() } else { IdGrammar::new(&plan.patterns).map_err(|e| EvaluateError::Setup(e.to_string()))? };
    let cfg = &plan.settings;
    let original = index::open(&plan.original, &plan.out.join("cache/data/original"))?;
    let originals = index::originals(&original, &grammar, cfg)?;
    let mut datasets = serde_json::Map::new();
    let samples: Vec<&index::Sample> = originals.values().collect();
    datasets.insert("original".into(), serde_json::json!({"root": original.shown, "samples": samples}));
    if cfg.needs_augmented() {
        let Some(aug) = &plan.augmented else {
            return Err(EvaluateError::Setup(format!(
                "the {} arm(s) need --augmented ROOT (the output root of a run over --original); or train only `--train original`",
                cfg.train.iter().filter(|a| **a != acufarm_core::evaluate::Arm::Original).map(|a| a.as_str()).collect::<Vec<_>>().join(" and ")
            )));
        };
        let root = index::open(aug, &plan.out.join("cache/data/augmented"))?;
        let copies = index::augmented(&root, &originals, &grammar, cfg)?;
        datasets.insert("augmented".into(), serde_json::json!({"root": root.shown, "samples": copies}));
    }
    let mut trainer = cfg.trainer_config();
    if let Some(weights) = &cfg.weights {
        let path = Path::new(weights);
        if !path.is_file() {
            return Err(EvaluateError::Setup(format!(
                "--weights {weights} is not a file; pass torchvision's {} state dict (.pth), or leave it out for random init",
                cfg.backbone
            )));
        }
        trainer["weights"] = std::fs::canonicalize(path).map_err(|e| setup(weights, e))?.display().to_string().into();
    }
    let index = serde_json::json!({
        "format": 1,
        "map": original.dir.join("map.txt").display().to_string(),
        "datasets": datasets,
        "config": trainer,
    });
    let path = plan.out.join("index.json");
    let tmp = plan.out.join("index.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&index).expect("json")).map_err(|e| setup("index.json", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| setup("index.json", e))?;
    Ok(path)
}

/// Starts the trainer on a prepared index (stdout and stderr inherited).
pub fn spawn(python: &Path, package: &Path, index: &Path, out: &Path) -> Result<Child, EvaluateError> {
    Command::new(python)
        .args(["-m", "acufarm_eval", "run", "--index"])
        .arg(index)
        .arg("--out")
        .arg(out)
        .env("PYTHONPATH", package)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .spawn()
        .map_err(|e| EvaluateError::Setup(format!("cannot start {} ({e}); reinstall it with `scripts/setup.sh dev`", python.display())))
}

/// What the trainer's exit status means.
pub fn outcome(status: std::process::ExitStatus) -> Result<(), EvaluateError> {
    use std::os::unix::process::ExitStatusExt;
    match status.code() {
        Some(0) => Ok(()),
        Some(130) => Err(EvaluateError::Interrupted),
        Some(code) => Err(EvaluateError::Failed(code)),
        None if status.signal() == Some(2) || status.signal() == Some(15) => Err(EvaluateError::Interrupted),
        None => Err(EvaluateError::Failed(128 + status.signal().unwrap_or(0))),
    }
}

/// The whole evaluation in this process (the CLI's `acufarm evaluate`).
pub fn run(plan: &Plan) -> Result<(), EvaluateError> {
    let python = python()?;
    let index = prepare(plan)?;
    let package = package()?;
    let mut child = spawn(&python, &package, &index, &plan.out)?;
    let status = child.wait().map_err(|e| EvaluateError::Setup(format!("lost the trainer process ({e})")))?;
    outcome(status)
}
