//! The run spec (TOML). This part covers what one render needs: the id grammar, the prompt sets,
//! sampler and conditioning defaults. `examples/acusim.toml` documents every field.
//!
//! A spec is checked once, here, before anything touches storage, and every problem is reported
//! together (serde stops at the first): the text is read into a TOML table, named choices are
//! checked on the table, the typed structs are filled while unknown keys are collected, and then
//! values are checked against their ranges (`check.rs`). Unknown keys are refused so a typo never
//! silently falls back to a default.

mod check;

use crate::choice::{Background, Foreground, Sampler, Scheduler};
use crate::prompt::{PromptCategory, PromptPair};
use crate::sample_id::{IdGrammar, IdGrammarError};
pub use check::{RUN_NAME_RULE, check_run_name};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read run spec {path}: {source}; check the path")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("run spec {path} is not valid TOML: {message}; fix that line of the spec (see examples/acusim.toml)")]
    Parse { path: PathBuf, message: String },
    #[error("{}", invalid_message(path, problems))]
    Invalid { path: PathBuf, problems: Vec<String> },
    #[error(transparent)]
    Grammar(#[from] IdGrammarError),
}

fn invalid_message(path: &Path, problems: &[String]) -> String {
    match problems {
        [one] => format!("run spec {}: {one}", path.display()),
        many => {
            let list: Vec<String> = many.iter().map(|p| format!("  - {p}")).collect();
            format!("run spec {} has {} problems; fix them all (see examples/acusim.toml):\n{}", path.display(), many.len(), list.join("\n"))
        }
    }
}

impl SpecError {
    /// Each problem on its own, for callers that list them (`--json`).
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Invalid { problems, .. } => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(
    deny_unknown_fields,
    title = "acufarm run spec",
    description = "A run of acufarm: which images, how to render them, where the outputs go. See examples/acusim.toml."
)]
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

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunSection {
    /// Name of the run, unique per coordinator: a lower-case letter or digit, then up to 62 of
    /// `a-z 0-9 . _ -` (no `/`, no `..`); it names the run's staging and state files.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$"))]
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
    #[schemars(range(min = 1, max = 1000))]
    pub variants: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
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

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SampleIdSection {
    /// Regexes with named groups, tried in order; empty means the two AcuSim spellings.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Hair codes that mark a bald model (selects the bald prompt sets).
    #[serde(default)]
    pub bald_hair: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FiltersSection {
    /// Model keys (`M_Asher_N_HD`) to render; empty means all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Views (frame numbers) to render, e.g. "1-11,30-45"; empty means all.
    #[serde(default)]
    pub views: String,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ScenesSection {
    /// Scene images (IP-Adapter reference, fbc background), paths relative to the spec; each job
    /// picks one from its scene stream.
    #[serde(default)]
    pub images: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
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
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Param_of_{T}")]
pub enum Param<T> {
    Value(T),
    Range([T; 2]),
}

impl<T: Copy> Param<T> {
    /// The value, or both ends of the range.
    pub fn ends(&self) -> Vec<T> {
        match *self {
            Self::Value(v) => vec![v],
            Self::Range([lo, hi]) => vec![lo, hi],
        }
    }
}

/// Sampler settings; command-line flags override them.
#[derive(Debug, Clone, Deserialize, Default, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SamplerSection {
    /// `dpmpp_2m` (default) or `euler`.
    pub sampler: Option<Sampler>,
    /// `sgm_uniform` (default), `normal` or `karras`.
    pub scheduler: Option<Scheduler>,
    /// Sampling steps of the full schedule, 1–10000.
    pub steps: Option<Param<u32>>,
    /// Start the schedule at step ⌊steps·t0⌋ (KSamplerAdvanced), in [0, 1); exclusive with `denoise`.
    pub t0: Option<Param<f64>>,
    /// KSampler-style partial denoise in (0, 1]; exclusive with `t0`.
    pub denoise: Option<Param<f64>>,
    /// Classifier-free guidance scale, > 0 (1 turns the unconditional branch off).
    pub cfg: Option<Param<f32>>,
}

/// Conditioning settings; command-line flags override them.
#[derive(Debug, Clone, Deserialize, Default, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ConditioningSection {
    /// IP-Adapter weight (the `ip_scale` graph input), a finite number ≥ 0.
    pub ipa_weight: Option<Param<f32>>,
    /// IC-Light concat multiplier, a finite number ≥ 0 (0.18215 = training scale; the seed paper used 0.3).
    pub ic_multiplier: Option<Param<f32>>,
    /// Foreground mask source: `color_key`, `depth` or `none`.
    pub foreground: Option<Foreground>,
    /// Largest per-channel difference (0–255) from the key colour still counted as background.
    pub color_key_tolerance: Option<u8>,
    /// `fbc` background latent: `scene`, `gray` or an image path relative to the spec.
    pub background: Option<Background>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShardGrouping {
    /// One shard per anatomical model (the default).
    #[default]
    Model,
    /// One shard for the whole run.
    Run,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ShardsSection {
    #[serde(default)]
    pub group_by: ShardGrouping,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RetrySection {
    /// Claims a job may use before a retryable failure becomes final.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    /// First retry delay in seconds; doubles per attempt up to `backoff_max_s`.
    #[serde(default = "default_backoff_base")]
    #[schemars(range(min = 0.0))]
    pub backoff_base_s: f64,
    #[serde(default = "default_backoff_max")]
    #[schemars(range(min = 0.0))]
    pub backoff_max_s: f64,
    /// Expired leases (worker lost) a job may suffer before it fails; they do not use attempts.
    #[serde(default = "default_max_lost")]
    pub max_lost: u32,
    /// Retryable failures in a row (worker or storage errors, not bad inputs or QA) after which a
    /// worker gets no more jobs of this run until an operator releases it; 0 never quarantines.
    #[serde(default = "default_quarantine_after")]
    pub quarantine_after: u32,
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
fn default_quarantine_after() -> u32 {
    3
}

impl Default for RetrySection {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff_base_s: default_backoff_base(),
            backoff_max_s: default_backoff_max(),
            max_lost: default_max_lost(),
            quarantine_after: default_quarantine_after(),
        }
    }
}

/// The named choices, by section and key, checked on the table before the typed pass so that a
/// typo among them is reported together with everything else.
type ChoiceCheck = fn(&str) -> Result<(), String>;
const CHOICES: &[(&str, &str, ChoiceCheck)] = &[
    ("sampler", "sampler", |s| s.parse::<Sampler>().map(drop).map_err(|e| e.to_string())),
    ("sampler", "scheduler", |s| s.parse::<Scheduler>().map(drop).map_err(|e| e.to_string())),
    ("conditioning", "foreground", |s| s.parse::<Foreground>().map(drop).map_err(|e| e.to_string())),
];

/// One line, whatever the deserializer printed.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl RunSpec {
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Reads and checks a spec; every problem found is in the error.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SpecError> {
        let mut table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| SpecError::Parse { path: path.to_path_buf(), message: one_line(&e.to_string()) })?;
        let mut problems = Vec::new();
        for (section, key, check) in CHOICES {
            let Some(toml::Value::Table(t)) = table.get_mut(*section) else { continue };
            if let Some(toml::Value::String(given)) = t.get(*key)
                && let Err(message) = check(given)
            {
                problems.push(format!("`{section}.{key}`: {message}"));
                t.remove(*key);
            }
        }
        let mut unknown = Vec::new();
        let typed =
            serde_path_to_error::deserialize::<_, RunSpec>(serde_ignored::Deserializer::new(toml::Value::Table(table), &mut |key: serde_ignored::Path| {
                unknown.push(key.to_string())
            }));
        problems.extend(unknown.iter().map(|key| format!("unknown key `{key}`; check its spelling and section against examples/acusim.toml")));
        let spec = match typed {
            Ok(spec) => spec,
            Err(e) => {
                let key = e.path().to_string();
                let message = one_line(&e.into_inner().to_string());
                problems.push(if key == "." { message } else { format!("`{key}`: {message}") });
                return Err(SpecError::Invalid { path: path.to_path_buf(), problems });
            }
        };
        check::check(&spec, &mut problems);
        if problems.is_empty() { Ok(spec) } else { Err(SpecError::Invalid { path: path.to_path_buf(), problems }) }
    }

    pub fn grammar(&self) -> Result<IdGrammar, IdGrammarError> {
        if self.sample_id.patterns.is_empty() { Ok(IdGrammar::default()) } else { IdGrammar::new(&self.sample_id.patterns) }
    }

    /// The prompt pair for a file, from its parsed id.
    pub fn prompts_for(&self, file_name: &str) -> Result<(PromptCategory, &PromptPair), IdGrammarError> {
        let id = self.grammar()?.parse(file_name)?;
        let category = PromptCategory::for_sample(&id, &self.sample_id.bald_hair);
        Ok((category, self.prompts.get(category)))
    }

    /// Files the spec names relative to itself: its scene images and a background image.
    pub fn shipped_files(&self) -> std::collections::BTreeSet<String> {
        let mut files: std::collections::BTreeSet<String> = self.scenes.images.iter().cloned().collect();
        if let Some(file) = self.conditioning.background.as_ref().and_then(Background::file) {
            files.insert(file.to_string());
        }
        files
    }

    /// The JSON Schema of a run spec (`docs/run-spec.schema.json`).
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(RunSpec)).expect("a schema is JSON")
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/acusim.toml");

    #[test]
    fn the_example_qa_section_parses_and_bad_limits_are_refused() {
        let uncommented = EXAMPLE
            .replace("# [qa]", "[qa]")
            .replace("# max_drift_px", "max_drift_px")
            .replace("# max_point_drift_px", "max_point_drift_px")
            .replace("# min_change", "min_change")
            .replace("# max_retries", "max_retries");
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
            (base.replace("[run]", "[runn]"), "unknown key `runn`"),
            (base.replace("steps = 28", "steps = \"many\""), "did not match any variant"),
            (base.replace("steps = 28", "steps = [30, 20]"), "runs backwards"),
            (base.replace("views = \"1-11,30-45,108-118,138-143\"", "views = \"1-x\""), "view filter"),
            (base.replace("variants = 1", "variants = 0"), "from 1 to 1000"),
            (base.replace("steps = 28", "steps = 28\ndenoise = 0.5"), "either `sampler.t0` or `sampler.denoise`"),
            (format!("{base}\n[sample_id]\npatterns = [\"(\"]\n"), "duplicate key"),
            (base.replace("[prompts.bald_male]", "[prompts.bald_mal]"), "unknown key `prompts.bald_mal`"),
            (base.replace("sampler = \"dpmpp_2m\"", "sampler = \"dpmpp2m\""), "`sampler.sampler`: unknown sampler `dpmpp2m`; choose one of dpmpp_2m, euler"),
            (base.replace("name = \"acusim-relight\"", "name = \"\""), "`run.name` \"\" is not a valid run name"),
            (base.replace("t0 = 0.4", "t0 = 1.0"), "`sampler.t0` is 1, but it must be in [0, 1)"),
            ("not toml at all = = =".to_string(), "not valid"),
        ];
        for (text, want) in cases {
            let err = RunSpec::parse(&text, Path::new("spec.toml")).unwrap_err().to_string();
            assert!(err.contains(want), "wanted `{want}` in: {err}");
            assert!(err.contains("spec.toml") || err.contains("pattern"), "{err}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_and_nothing_else_stops_it() {
        let text = EXAMPLE
            .replace("sampler = \"dpmpp_2m\"", "sampler = \"dpmpp2m\"")
            .replace("cfg = [1.8, 2.4]", "cfg = [2.4, 1.8]")
            .replace("t0 = 0.4", "t0 = 1.0")
            .replace("[shards]", "[shards]\ngroup = \"model\"");
        let err = RunSpec::parse(&text, Path::new("spec.toml")).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        for needle in ["unknown sampler `dpmpp2m`", "`sampler.cfg` range [2.4, 1.8] runs backwards", "`sampler.t0` is 1", "unknown key `shards.group`"] {
            assert!(problems.iter().any(|p| p.contains(needle)), "{needle} missing from {problems:#?}");
        }
        let shown = err.to_string();
        assert!(shown.starts_with("run spec spec.toml has 4 problems; fix them all"), "{shown}");
        assert_eq!(shown.lines().count(), 5, "one line per problem: {shown}");
    }

    #[test]
    fn run_names_that_would_escape_are_refused() {
        for name in ["", "a/b", "..", "x y", "../../etc", "Big"] {
            let text = EXAMPLE.replace("name = \"acusim-relight\"", &format!("name = {name:?}"));
            let err = RunSpec::parse(&text, Path::new("spec.toml")).unwrap_err().to_string();
            assert!(err.contains("is not a valid run name"), "{name}: {err}");
        }
    }

    #[test]
    fn the_committed_json_schema_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/run-spec.schema.json");
        let fresh = serde_json::to_string_pretty(&RunSpec::json_schema()).unwrap() + "\n";
        if std::env::var_os("ACUFARM_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "docs/run-spec.schema.json is out of date with the RunSpec types; regenerate it with `ACUFARM_WRITE_SCHEMA=1 cargo test -p acufarm-core the_committed_json_schema_is_current`"
        );
        let schema: serde_json::Value = serde_json::from_str(&committed).unwrap();
        assert_eq!(schema["$defs"]["SamplerSection"]["properties"]["sampler"]["anyOf"][0]["$ref"], "#/$defs/Sampler", "{}", schema["$defs"]["SamplerSection"]);
        let sampler = schema["$defs"]["Sampler"].to_string();
        assert!(sampler.contains("\"dpmpp_2m\"") && sampler.contains("\"euler\""), "{sampler}");
        assert_eq!(schema["$defs"]["SamplerSection"]["properties"]["steps"]["anyOf"][0]["$ref"], "#/$defs/Param_of_uint32");
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn bad_id_pattern_is_reported() {
        let text = EXAMPLE.replace("patterns = []", "patterns = [\"(?P<gender>\"]");
        let err = RunSpec::parse(&text, Path::new("spec.toml")).unwrap_err().to_string();
        assert!(err.contains("not a valid regex"), "{err}");
    }
}
