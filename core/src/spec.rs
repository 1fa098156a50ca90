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
    #[serde(default)]
    pub sample_id: SampleIdSection,
    pub prompts: PromptSets,
    #[serde(default)]
    pub sampler: SamplerSection,
    #[serde(default)]
    pub conditioning: ConditioningSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Human name of the run; unique per coordinator.
    pub name: String,
    /// Root of every job seed (DESIGN §4 "Seeds").
    #[serde(default)]
    pub seed: u64,
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

/// Sampler defaults; command-line flags override them.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SamplerSection {
    pub sampler: Option<String>,
    pub scheduler: Option<String>,
    pub steps: Option<u32>,
    /// Start the schedule at step ⌊steps·t0⌋ (KSamplerAdvanced); exclusive with `denoise`.
    pub t0: Option<f64>,
    /// KSampler-style partial denoise in (0, 1]; exclusive with `t0`.
    pub denoise: Option<f64>,
    pub cfg: Option<f32>,
}

/// Conditioning defaults; command-line flags override them.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConditioningSection {
    /// IP-Adapter weight (the `ip_scale` graph input).
    pub ipa_weight: Option<f32>,
    /// IC-Light concat multiplier (0.18215 = training scale; the seed paper used 0.3).
    pub ic_multiplier: Option<f32>,
    /// Foreground mask source: `color_key`, `depth` or `none`.
    pub foreground: Option<String>,
    /// Largest per-channel difference (0–255) from the key colour still counted as background.
    pub color_key_tolerance: Option<u8>,
    /// `fbc` background latent: `scene`, `gray` or a file path.
    pub background: Option<String>,
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
            (base.replace("steps = 28", "steps = \"many\""), "invalid type"),
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
