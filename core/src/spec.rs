//! The run spec (TOML). This part covers what one render needs: the id grammar, the prompt sets,
//! sampler and conditioning defaults. Unknown keys are refused so a typo never silently falls back
//! to a default. `examples/acusim.toml` documents every field.

use crate::prompt::{PromptCategory, PromptPair};
use crate::sample_id::{IdGrammar, IdGrammarError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read run spec {path}: {source}; check the path")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("run spec {path} is not valid: {message}; fix that line of the spec (see examples/acusim.toml)")]
    Parse { path: PathBuf, message: String },
    #[error("run spec {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Grammar(#[from] IdGrammarError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub run: RunSection,
    /// Where the dataset is and where outputs go; needed to submit a run, not to augment one image.
    pub dataset: Option<DatasetSection>,
    #[serde(default)]
    pub sample_id: SampleIdSection,
    #[serde(default)]
    pub filters: FiltersSection,
    #[serde(default)]
    pub scenes: ScenesSection,
    pub prompts: PromptSets,
    #[serde(default)]
    pub sampler: SamplerSection,
    #[serde(default)]
    pub conditioning: ConditioningSection,
    #[serde(default)]
    pub shards: ShardsSection,
    #[serde(default)]
    pub retry: RetrySection,
    /// The landmark-drift QA gate; absent = outputs are not measured.
    pub qa: Option<crate::qa::QaSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Human name of the run; unique per coordinator.
    pub name: String,
    /// Root of every job seed (DESIGN §4 "Seeds").
    #[serde(default)]
    pub seed: u64,
    /// Name of the model bundle (bundle.toml `name`) the run needs; workers holding another get no jobs.
    pub bundle: Option<String>,
    /// Higher runs are leased first.
    #[serde(default)]
    pub priority: i32,
    /// Outputs per input image (variant 0 mirrors the input path, variant n ≥ 1 lives under `v{n}/`).
    #[serde(default = "one")]
    pub variants: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSection {
    /// Dataset root: `file:///abs/path`, `file://relative/path` or `s3://bucket/prefix`.
    pub input: String,
    /// Output root, same forms.
    pub output: String,
    /// Folders (relative to the input root) whose images are rendered.
    pub images: Vec<String>,
    /// Where an image's label lives: `{dir}` is the image's folder, `{split}` its first path
    /// component, `{stem}` its file name without extension.
    pub label_template: Option<String>,
    /// Files copied byte-for-byte to the output (e.g. `map.txt`).
    #[serde(default)]
    pub copy: Vec<String>,
    /// Where an image's depth map lives (same placeholders plus `{gender}`, `{size}`, `{model}`).
    pub depth_template: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleIdSection {
    /// Regexes with named groups, tried in order; empty means the two AcuSim spellings.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Hair codes that mark a bald model (selects the bald prompt sets).
    #[serde(default)]
    pub bald_hair: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersSection {
    /// Model keys (`M_Asher_N_HD`) to render; empty means all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Views (frame numbers) to render, e.g. "1-11,30-45"; empty means all.
    #[serde(default)]
    pub views: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenesSection {
    /// Scene images (IP-Adapter reference, fbc background); each job picks one from its scene stream.
    #[serde(default)]
    pub images: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSets {
    pub female: PromptPair,
    pub male: PromptPair,
    pub bald_female: PromptPair,
    pub bald_male: PromptPair,
}

impl PromptSets {
    pub fn get(&self, category: PromptCategory) -> &PromptPair {
        match category {
            PromptCategory::Female => &self.female,
            PromptCategory::Male => &self.male,
            PromptCategory::BaldFemale => &self.bald_female,
            PromptCategory::BaldMale => &self.bald_male,
        }
    }
}

/// A parameter given as one value or as a `[lo, hi]` range drawn per job from its own seed stream.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Param<T> {
    Value(T),
    Range([T; 2]),
}

impl<T: Copy + PartialOrd + std::fmt::Display> Param<T> {
    fn check(&self, name: &str) -> Result<(), String> {
        match self {
            Self::Range([lo, hi]) if lo > hi => Err(format!("`{name}` range [{lo}, {hi}] runs backwards; write [low, high]")),
            _ => Ok(()),
        }
    }
}

/// Sampler settings; command-line flags override them.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SamplerSection {
    pub sampler: Option<String>,
    pub scheduler: Option<String>,
    pub steps: Option<Param<u32>>,
    /// Start the schedule at step ⌊steps·t0⌋ (KSamplerAdvanced); exclusive with `denoise`.
    pub t0: Option<Param<f64>>,
    /// KSampler-style partial denoise in (0, 1]; exclusive with `t0`.
    pub denoise: Option<Param<f64>>,
    pub cfg: Option<Param<f32>>,
}

/// Conditioning settings; command-line flags override them.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConditioningSection {
    /// IP-Adapter weight (the `ip_scale` graph input).
    pub ipa_weight: Option<Param<f32>>,
    /// IC-Light concat multiplier (0.18215 = training scale; the seed paper used 0.3).
    pub ic_multiplier: Option<Param<f32>>,
    /// Foreground mask source: `color_key`, `depth` or `none`.
    pub foreground: Option<String>,
    /// Largest per-channel difference (0–255) from the key colour still counted as background.
    pub color_key_tolerance: Option<u8>,
    /// `fbc` background latent: `scene`, `gray` or a file path.
    pub background: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShardGrouping {
    /// One shard per anatomical model (the default).
    #[default]
    Model,
    /// One shard for the whole run.
    Run,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardsSection {
    #[serde(default)]
    pub group_by: ShardGrouping,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Claims a job may use before a retryable failure becomes final.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `backoff_max_s`.
    #[serde(default = "default_backoff_base")]
    pub backoff_base_s: f64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_s: f64,
    /// Expired leases (worker lost) a job may suffer before it fails; they do not use attempts.
    #[serde(default = "default_max_lost")]
    pub max_lost: u32,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_backoff_base() -> f64 {
    10.0
}
fn default_backoff_max() -> f64 {
    600.0
}
fn default_max_lost() -> u32 {
    5
}

impl Default for RetrySection {
    fn default() -> Self {
        Self { max_attempts: default_max_attempts(), backoff_base_s: default_backoff_base(), backoff_max_s: default_backoff_max(), max_lost: default_max_lost() }
    }
}

impl RunSpec {
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, SpecError> {
        let spec: RunSpec = toml::from_str(text).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().replace('\n', " ").split_whitespace().collect::<Vec<_>>().join(" "),
        })?;
        let invalid = |message: String| SpecError::Invalid { path: path.to_path_buf(), message };
        if spec.sampler.t0.is_some() && spec.sampler.denoise.is_some() {
            return Err(invalid("set either `sampler.t0` or `sampler.denoise`, not both".into()));
        }
        let s = &spec.sampler;
        let c = &spec.conditioning;
        let checks = [
            s.steps.map(|p| p.check("sampler.steps")),
            s.t0.map(|p| p.check("sampler.t0")),
            s.denoise.map(|p| p.check("sampler.denoise")),
            s.cfg.map(|p| p.check("sampler.cfg")),
            c.ipa_weight.map(|p| p.check("conditioning.ipa_weight")),
            c.ic_multiplier.map(|p| p.check("conditioning.ic_multiplier")),
        ];
        for check in checks.into_iter().flatten() {
            check.map_err(invalid)?;
        }
        if spec.run.variants == 0 {
            return Err(invalid("`run.variants` must be at least 1".into()));
        }
        if spec.retry.max_attempts == 0 {
            return Err(invalid("`retry.max_attempts` must be at least 1".into()));
        }
        if let Some(qa) = &spec.qa {
            qa.validate().map_err(invalid)?;
        }
        crate::views::ViewFilter::parse(&spec.filters.views).map_err(|e| invalid(e.to_string()))?;
        spec.grammar()?;
        Ok(spec)
    }

    pub fn grammar(&self) -> Result<IdGrammar, IdGrammarError> {
        if self.sample_id.patterns.is_empty() {
            Ok(IdGrammar::default())
        } else {
            IdGrammar::new(&self.sample_id.patterns)
        }
    }

    /// The prompt pair for a file, from its parsed id.
    pub fn prompts_for(&self, file_name: &str) -> Result<(PromptCategory, &PromptPair), IdGrammarError> {
        let id = self.grammar()?.parse(file_name)?;
        let category = PromptCategory::for_sample(&id, &self.sample_id.bald_hair);
        Ok((category, self.prompts.get(category)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/acusim.toml");

    #[test]
    fn the_example_qa_section_parses_and_bad_limits_are_refused() {
        let uncommented = EXAMPLE.replace("# [qa]", "[qa]").replace("# max_drift_px", "max_drift_px").replace("# max_point_drift_px", "max_point_drift_px").replace("# min_change", "min_change").replace("# max_retries", "max_retries");
        let spec = RunSpec::parse(&uncommented, Path::new("x.toml")).unwrap();
        let qa = spec.qa.unwrap();
        assert_eq!((qa.max_drift_px, qa.max_retries), (Some(12.0), 2));
        let bad = uncommented.replace("Philtrum = 15.0", "Nose = 15.0");
        let err = RunSpec::parse(&bad, Path::new("x.toml")).unwrap_err().to_string();
        assert!(err.contains("unknown point `Nose`"), "{err}");
        assert!(RunSpec::parse(EXAMPLE, Path::new("x.toml")).unwrap().qa.is_none());
    }

    #[test]
    fn example_spec_parses_and_picks_prompts() {
        let spec = RunSpec::parse(EXAMPLE, Path::new("examples/acusim.toml")).unwrap();
        let (cat, pair) = spec.prompts_for("M_Asher_N_HD_0017.png").unwrap();
        assert_eq!(cat, PromptCategory::Male);
        assert_eq!(pair, &spec.prompts.male);
        let (cat, _) = spec.prompts_for("F.Brisen.F.HA.C.0141.jpg").unwrap();
        assert_eq!(cat, PromptCategory::Female);
    }

    #[test]
    fn table_of_bad_specs() {
        let base = EXAMPLE.to_string();
        let cases: Vec<(String, &str)> = vec![
            (base.replace("[run]", "[runn]"), "unknown field"),
            (base.replace("steps = 28", "steps = \"many\""), "did not match any variant"),
            (base.replace("steps = 28", "steps = [30, 20]"), "runs backwards"),
            (base.replace("views = \"1-11,30-45,108-118,138-143\"", "views = \"1-x\""), "view filter"),
            (base.replace("variants = 1", "variants = 0"), "at least 1"),
            (base.replace("steps = 28", "steps = 28\ndenoise = 0.5"), "either `sampler.t0` or `sampler.denoise`"),
            (format!("{base}\n[sample_id]\npatterns = [\"(\"]\n"), "duplicate key"),
            (base.replace("[prompts.bald_male]", "[prompts.bald_mal]"), "unknown field"),
            ("not toml at all = = =".to_string(), "not valid"),
        ];
        for (text, want) in cases {
            let err = RunSpec::parse(&text, Path::new("spec.toml")).unwrap_err().to_string();
            assert!(err.contains(want), "wanted `{want}` in: {err}");
            assert!(err.contains("spec.toml") || err.contains("pattern"), "{err}");
        }
    }

    #[test]
    fn bad_id_pattern_is_reported() {
        let text = EXAMPLE.replace("patterns = []", "patterns = [\"(?P<gender>\"]");
        let err = RunSpec::parse(&text, Path::new("spec.toml")).unwrap_err().to_string();
        assert!(err.contains("not a valid regex"), "{err}");
    }
}
