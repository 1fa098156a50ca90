//! The `[evaluate]` section: settings of the training-based evaluation (`acufarm evaluate`,
//! evaluate/README.md). Defaults are the seed's (AcuSim's example network: densenet201, AdamW
//! 5e-5 / 1e-5, 200 epochs, 512² inputs, batches of 36). Defined once here: the CLI's flags, a
//! `--config` file and (for the farm) a run spec all read this type, and it alone writes the
//! settings the Python trainer receives.

use crate::choice::UnknownChoice;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

crate::choice::named_choice!(
    /// What an arm trains on (its test images are always originals of the test models).
    Arm, "training arm", {
        /// Original images of the training models.
        Original => "original",
        /// Augmented copies of the training models' images only.
        Augmented => "augmented",
        /// Both, so twice the images per epoch.
        Both => "both",
    }
);

crate::choice::named_choice!(
    /// The image backbone under the three heads.
    Backbone, "backbone", {
        /// The seed's backbone (torchvision densenet201).
        Densenet201 => "densenet201",
        /// A quick check (torchvision resnet18).
        Resnet18 => "resnet18",
    }
);

crate::choice::named_choice!(
    /// Where PyTorch trains.
    Device, "device", {
        /// A CUDA GPU when PyTorch sees one, else the CPU.
        Auto => "auto",
        Cpu => "cpu",
        Cuda => "cuda",
    }
);

crate::choice::named_choice!(
    /// What the split keeps together.
    GroupBy, "split grouping", {
        /// The person (gender and name): every size, hairstyle and eye state of one model together.
        Name => "name",
        /// The model folder (gender, name, size, hairstyle).
        Model => "model",
    }
);

/// Weights of the three losses in the training objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct LossWeights {
    pub visibility: f64,
    pub classification: f64,
    pub coordinates: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self { visibility: 1.0, classification: 1.0, coordinates: 1.0 }
    }
}

/// The soft-wing coordinate loss: omega·ln(1 + |d|/epsilon) below theta (AcuSim's example).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct SoftWing {
    pub omega: f64,
    pub epsilon: f64,
    pub theta: f64,
}

impl Default for SoftWing {
    fn default() -> Self {
        Self { omega: 1.0, epsilon: 0.01, theta: 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct EvaluateSection {
    /// Arms trained side by side.
    pub train: Vec<Arm>,
    pub backbone: Backbone,
    /// A torchvision state dict of the backbone (pretrained weights); none = random init.
    pub weights: Option<String>,
    pub epochs: u32,
    /// Images are resized to this square.
    pub image_size: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Trainings per arm and fold, each from other initial weights and batch order.
    pub seeds: u32,
    /// 1: one split (test_fraction of the models); k ≥ 2: grouped k-fold, every model tested once.
    pub folds: u32,
    /// Fixes the split (the same for every arm).
    pub split_seed: u64,
    pub test_fraction: f64,
    /// Share of the non-test models held out for choosing the best epoch.
    pub val_fraction: f64,
    pub group_by: GroupBy,
    pub device: Device,
    /// PyTorch's CPU threads (0: one per core).
    pub threads: u32,
    /// Processes that decode and resize images into the cache (0: one per core).
    pub loader_workers: u32,
    /// Bootstrap resamples behind every interval.
    pub bootstrap: u32,
    /// The radius of the "within" share, in millimetres (AcuSim's 5 mm).
    pub radius_mm: f64,
    /// Where an image's label lives (`{split}` = first path component, `{stem}`, `{dir}`).
    pub label_template: String,
    pub loss_weights: LossWeights,
    pub soft_wing: SoftWing,
}

impl Default for EvaluateSection {
    fn default() -> Self {
        Self {
            train: vec![Arm::Original, Arm::Augmented, Arm::Both],
            backbone: Backbone::Densenet201,
            weights: None,
            epochs: 200,
            image_size: 512,
            batch_size: 36,
            learning_rate: 5e-5,
            weight_decay: 1e-5,
            seeds: 3,
            folds: 1,
            split_seed: 0,
            test_fraction: 0.2,
            val_fraction: 0.2,
            group_by: GroupBy::Name,
            device: Device::Auto,
            threads: 0,
            loader_workers: 0,
            bootstrap: 2000,
            radius_mm: 5.0,
            label_template: "{split}/label/label/{stem}.json".into(),
            loss_weights: LossWeights::default(),
            soft_wing: SoftWing::default(),
        }
    }
}

impl EvaluateSection {
    /// Every problem with the settings, each a sentence naming the key and the fix.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut need = |ok: bool, text: &str| {
            if !ok {
                out.push(text.to_string());
            }
        };
        need(!self.train.is_empty(), "`evaluate.train` is empty; name original, augmented and/or both");
        let mut seen = self.train.clone();
        seen.sort_by_key(|a| a.as_str());
        seen.dedup();
        need(seen.len() == self.train.len(), "`evaluate.train` names an arm twice; list each once");
        need(self.epochs >= 1, "`evaluate.epochs` must be at least 1");
        need((16..=2048).contains(&self.image_size), "`evaluate.image_size` must be 16..2048 pixels");
        need(self.batch_size >= 1, "`evaluate.batch_size` must be at least 1");
        need(self.learning_rate.is_finite() && self.learning_rate > 0.0, "`evaluate.learning_rate` must be a positive number");
        need(self.weight_decay.is_finite() && self.weight_decay >= 0.0, "`evaluate.weight_decay` must be 0 or more");
        need((1..=100).contains(&self.seeds), "`evaluate.seeds` must be 1..100");
        need((1..=50).contains(&self.folds), "`evaluate.folds` must be 1..50");
        need(self.test_fraction > 0.0 && self.test_fraction < 1.0, "`evaluate.test_fraction` must be between 0 and 1");
        need(self.val_fraction > 0.0 && self.val_fraction < 1.0, "`evaluate.val_fraction` must be between 0 and 1");
        need(self.bootstrap >= 100, "`evaluate.bootstrap` must be at least 100 resamples");
        need(self.radius_mm.is_finite() && self.radius_mm > 0.0, "`evaluate.radius_mm` must be a positive number");
        need(self.label_template.contains("{stem}"), "`evaluate.label_template` must contain {stem}");
        let w = &self.loss_weights;
        need([w.visibility, w.classification, w.coordinates].iter().all(|v| v.is_finite() && *v >= 0.0), "`evaluate.loss_weights` must be 0 or more");
        let s = &self.soft_wing;
        need(s.omega > 0.0 && s.epsilon > 0.0 && s.theta > 0.0, "`evaluate.soft_wing` omega, epsilon and theta must be positive");
        out
    }

    /// Whether an arm needs augmented images.
    pub fn needs_augmented(&self) -> bool {
        self.train.iter().any(|a| *a != Arm::Original)
    }

    /// The settings as the Python trainer reads them (evaluate/acufarm_eval/run.py `KEYS`).
    pub fn trainer_config(&self) -> serde_json::Value {
        serde_json::json!({
            "arms": self.train.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            "backbone": self.backbone.as_str(),
            "weights": self.weights,
            "epochs": self.epochs,
            "image_size": self.image_size,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "seeds": self.seeds,
            "folds": self.folds,
            "split_seed": self.split_seed,
            "test_fraction": self.test_fraction,
            "val_fraction": self.val_fraction,
            "device": self.device.as_str(),
            "threads": self.threads,
            "loader_workers": self.loader_workers,
            "bootstrap": self.bootstrap,
            "radius_mm": self.radius_mm,
            "loss_weights": self.loss_weights,
            "soft_wing": self.soft_wing,
        })
    }
}

/// A problem reading an `[evaluate]` section from TOML.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateConfigError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The `[evaluate]` section (defaults where absent) and `[sample_id].patterns` of a TOML file: an
/// evaluation config or a run spec.
pub fn from_toml(text: &str, path: &str) -> Result<(EvaluateSection, Vec<String>), EvaluateConfigError> {
    let invalid = |message: String| EvaluateConfigError::Invalid { path: path.to_string(), message };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| invalid(e.message().to_string()))?;
    let section = match table.get("evaluate") {
        None => EvaluateSection::default(),
        Some(value) => {
            let mut unknown = Vec::new();
            let typed = serde_ignored::deserialize(value.clone(), |key| unknown.push(key.to_string()));
            if let Some(key) = unknown.first() {
                return Err(invalid(format!("unknown key `evaluate.{key}`; see the keys in evaluate/README.md")));
            }
            typed.map_err(|e: toml::de::Error| invalid(format!("[evaluate]: {}", e.message())))?
        }
    };
    let patterns = table
        .get("sample_id")
        .and_then(|s| s.get("patterns"))
        .map(|p| p.clone().try_into::<Vec<String>>().map_err(|e| invalid(format!("`sample_id.patterns`: {}", e.message()))))
        .transpose()?
        .unwrap_or_default();
    let problems = section.problems();
    if !problems.is_empty() {
        return Err(invalid(problems.join("; ")));
    }
    Ok((section, patterns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed_and_every_key_reaches_the_trainer() {
        let s = EvaluateSection::default();
        assert!(s.problems().is_empty());
        assert_eq!((s.epochs, s.image_size, s.batch_size), (200, 512, 36));
        assert_eq!((s.learning_rate, s.weight_decay), (5e-5, 1e-5));
        assert_eq!(s.backbone, Backbone::Densenet201);
        let cfg = s.trainer_config();
        assert_eq!(cfg["arms"], serde_json::json!(["original", "augmented", "both"]));
        assert_eq!(cfg["soft_wing"]["epsilon"], serde_json::json!(0.01));
        assert_eq!(cfg.as_object().unwrap().len(), 20);
    }

    #[test]
    fn a_section_overrides_defaults_and_refuses_unknown_keys() {
        let (s, patterns) =
            from_toml("[evaluate]\nbackbone = \"resnet18\"\nepochs = 3\ntrain = [\"original\"]\n[sample_id]\npatterns = [\"x\"]\n", "c.toml").unwrap();
        assert_eq!((s.backbone, s.epochs, s.train.clone()), (Backbone::Resnet18, 3, vec![Arm::Original]));
        assert_eq!(patterns, vec!["x".to_string()]);
        let err = from_toml("[evaluate]\nepoch = 3\n", "c.toml").unwrap_err().to_string();
        assert!(err.contains("unknown key `evaluate.epoch`"), "{err}");
        let err = from_toml("[evaluate]\nbackbone = \"vgg\"\n", "c.toml").unwrap_err().to_string();
        assert!(err.contains("densenet201"), "{err}");
        let err = from_toml("[evaluate]\nepochs = 0\ntest_fraction = 1.5\n", "c.toml").unwrap_err().to_string();
        assert!(err.contains("evaluate.epochs") && err.contains("evaluate.test_fraction"), "{err}");
        // a run spec without the section gives the defaults
        assert_eq!(from_toml("[run]\nname = \"x\"\n", "spec.toml").unwrap().0, EvaluateSection::default());
    }
}
