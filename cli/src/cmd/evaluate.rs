//! `acufarm evaluate --original ROOT --augmented ROOT --out DIR`: trains AcuSim's example network
//! on the original images, on the augmented copies and on both, and compares them on original test
//! models (evaluate/README.md). Settings: the seed's defaults, then `[evaluate]` of `--config`,
//! then these flags.

use acufarm_core::evaluate::{self, Arm, Backbone, Device, EvaluateSection};
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The original dataset in AcuSim's layout (map.txt, train/image/img_*/, train/label/label/):
    /// a folder, file:///… or s3://bucket/prefix.
    #[arg(long)]
    original: String,
    /// A run's output root (the augmented copies, `v{n}/` variants included), same forms.
    #[arg(long)]
    augmented: Option<String>,
    /// Where evaluation.json, evaluation.md, the plots and the checkpoints go; the same folder again
    /// resumes an interrupted evaluation.
    #[arg(long)]
    out: PathBuf,
    /// Arms, comma-separated [default: original,augmented,both].
    #[arg(long, value_delimiter = ',', value_parser = super::choice::<Arm>(Arm::STRS))]
    train: Option<Vec<Arm>>,
    /// Image backbone [default: densenet201].
    #[arg(long, value_parser = super::choice::<Backbone>(Backbone::STRS))]
    backbone: Option<Backbone>,
    /// Pretrained backbone weights (a torchvision state dict); nothing is downloaded [default: random init].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Training epochs per arm [default: 200].
    #[arg(long)]
    epochs: Option<u32>,
    /// Images are resized to this square [default: 512].
    #[arg(long)]
    image_size: Option<u32>,
    /// Images per optimizer step [default: 36].
    #[arg(long)]
    batch_size: Option<u32>,
    /// Where PyTorch trains [default: auto, a CUDA GPU when there is one].
    #[arg(long, value_parser = super::choice::<Device>(Device::STRS))]
    device: Option<Device>,
    /// Trainings per arm, each from other initial weights and batch order [default: 3].
    #[arg(long)]
    seeds: Option<u32>,
    /// Grouped k-fold by model (every model tested once) instead of one split [default: 1].
    #[arg(long)]
    folds: Option<u32>,
    /// A TOML file whose `[evaluate]` section (and `[sample_id]` patterns) sets the rest.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Defaults, then the file, then the flags; every problem in one error.
pub fn settings(args: &Args) -> anyhow::Result<(EvaluateSection, Vec<String>)> {
    let (mut s, patterns) = match &args.config {
        None => (EvaluateSection::default(), Vec::new()),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --config {}; check the path", path.display()))?;
            evaluate::from_toml(&text, &path.display().to_string())?
        }
    };
    if let Some(v) = &args.train {
        s.train = v.clone();
    }
    if let Some(v) = args.backbone {
        s.backbone = v;
    }
    if let Some(v) = &args.weights {
        s.weights = Some(v.display().to_string());
    }
    if let Some(v) = args.epochs {
        s.epochs = v;
    }
    if let Some(v) = args.image_size {
        s.image_size = v;
    }
    if let Some(v) = args.batch_size {
        s.batch_size = v;
    }
    if let Some(v) = args.device {
        s.device = v;
    }
    if let Some(v) = args.seeds {
        s.seeds = v;
    }
    if let Some(v) = args.folds {
        s.folds = v;
    }
    let problems = s.problems();
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("; "));
    }
    Ok((s, patterns))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (settings, patterns) = settings(&args)?;
    let plan = acufarm_worker::evaluate::Plan { original: args.original, augmented: args.augmented, out: args.out, settings, patterns };
    acufarm_worker::evaluate::run(&plan)?;
    Ok(())
}
