//! Resolution: a run spec plus a dataset listing become fully specified, reproducible jobs
//! (DESIGN §3 step 1). Pure: the caller lists files; nothing here touches storage.

use crate::choice::{Background, Foreground, Sampler, Scheduler};
use crate::prompt::PromptCategory;
use crate::qa::{QaAlternate, QaPlan};
use crate::sample_id::{Gender, IdGrammar, IdGrammarError, SampleId};
use crate::seeds::SeedKey;
use crate::spec::{Param, RunSpec, ShardGrouping};
use crate::views::ViewFilter;
use serde::{Deserialize, Serialize};

pub const DEFAULT_SAMPLER: Sampler = Sampler::DpmPp2m;
pub const DEFAULT_SCHEDULER: Scheduler = Scheduler::SgmUniform;
pub const DEFAULT_STEPS: u32 = 20;
pub const DEFAULT_T0: f64 = 0.4;
pub const DEFAULT_CFG: f32 = 2.0;
pub const DEFAULT_IPA_WEIGHT: f32 = 0.6;
pub const DEFAULT_IC_MULTIPLIER: f32 = 0.18215;
pub const DEFAULT_COLOR_KEY_TOLERANCE: u8 = 12;

/// Every sampler and conditioning value of one job, ranges already drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    pub sampler: Sampler,
    pub scheduler: Scheduler,
    pub steps: u32,
    pub t0: Option<f64>,
    pub denoise: Option<f64>,
    pub cfg: f32,
    pub ipa_weight: f32,
    pub ic_multiplier: f32,
    pub foreground: Foreground,
    pub color_key_tolerance: u8,
    /// `scene`, `gray` or an image path relative to the spec.
    pub background: Background,
}

impl Default for JobParams {
    fn default() -> Self {
        Self {
            sampler: DEFAULT_SAMPLER,
            scheduler: DEFAULT_SCHEDULER,
            steps: DEFAULT_STEPS,
            t0: Some(DEFAULT_T0),
            denoise: None,
            cfg: DEFAULT_CFG,
            ipa_weight: DEFAULT_IPA_WEIGHT,
            ic_multiplier: DEFAULT_IC_MULTIPLIER,
            foreground: Foreground::ColorKey,
            color_key_tolerance: DEFAULT_COLOR_KEY_TOLERANCE,
            background: Background::Scene,
        }
    }
}

/// The scene a job uses: its index in `[scenes] images` and its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneChoice {
    pub index: usize,
    pub path: String,
}

/// One output image, fully specified: the same JobSpec gives the same bytes on the same
/// execution provider, GPU model and ONNX Runtime version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub sample_id: String,
    /// Shard key (the model key with the default grouping).
    pub shard: String,
    /// Paths relative to the input root (source, label, depth) and the output root (output, output_label).
    pub source: String,
    pub label: Option<String>,
    pub depth: Option<String>,
    pub output: String,
    pub output_label: Option<String>,
    pub variant: u32,
    pub qa_try: u32,
    /// How many times the job was regenerated with new seeds (it enters every seed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reseed: u32,
    pub prompt_set: PromptCategory,
    pub prompt: String,
    pub negative: String,
    pub seed: u64,
    pub scene: Option<SceneChoice>,
    pub params: JobParams,
    /// The QA gate this job runs (`[qa]` in the spec), with its re-generations resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<QaPlan>,
}

impl JobSpec {
    /// This job as rendered with retry `k` (1-based) of its QA plan.
    pub fn with_qa_retry(&self, k: usize) -> Option<JobSpec> {
        let alt = self.qa.as_ref()?.retries.get(k.checked_sub(1)?)?;
        let mut job = self.clone();
        job.qa_try = alt.qa_try;
        job.seed = alt.seed;
        job.scene = alt.scene.clone();
        job.params = alt.params.clone();
        Some(job)
    }
}

/// Shard of the jobs whose sample id could not be parsed.
pub const UNRESOLVED_SHARD: &str = "unresolved";

/// Why one file yields no job; each becomes a permanent, clearly worded failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    #[error("{path}: {source}")]
    SampleId { path: String, source: IdGrammarError },
}

/// What a dataset listing resolves to.
#[derive(Debug, Default)]
pub struct Resolution {
    pub jobs: Vec<JobSpec>,
    /// Images whose id cannot be parsed: they are not silently skipped.
    pub rejected: Vec<ResolveError>,
    /// Images left out by the model or view filters.
    pub filtered_out: usize,
}

fn draw_f64(p: Option<Param<f64>>, key: &SeedKey, name: &str) -> Option<f64> {
    p.map(|p| match p {
        Param::Value(v) => v,
        Param::Range([lo, hi]) => key.uniform(name, lo, hi),
    })
}

fn draw_f32(p: Option<Param<f32>>, key: &SeedKey, name: &str, default: f32) -> f32 {
    match p {
        None => default,
        Some(Param::Value(v)) => v,
        Some(Param::Range([lo, hi])) => key.uniform(name, lo as f64, hi as f64) as f32,
    }
}

/// Parameters of one job: spec values, ranges drawn from the job's seed streams, defaults elsewhere.
pub fn job_params(spec: &RunSpec, key: &SeedKey) -> JobParams {
    let s = &spec.sampler;
    let c = &spec.conditioning;
    let d = JobParams::default();
    let steps = match s.steps {
        None => d.steps,
        Some(Param::Value(v)) => v,
        Some(Param::Range([lo, hi])) => key.integer("steps", lo, hi),
    };
    let denoise = draw_f64(s.denoise, key, "denoise");
    let t0 = draw_f64(s.t0, key, "t0").or(if denoise.is_none() { d.t0 } else { None });
    JobParams {
        sampler: s.sampler.unwrap_or(d.sampler),
        scheduler: s.scheduler.unwrap_or(d.scheduler),
        steps,
        t0,
        denoise,
        cfg: draw_f32(s.cfg, key, "cfg", d.cfg),
        ipa_weight: draw_f32(c.ipa_weight, key, "ipa_weight", d.ipa_weight),
        ic_multiplier: draw_f32(c.ic_multiplier, key, "ic_multiplier", d.ic_multiplier),
        foreground: c.foreground.unwrap_or(d.foreground),
        color_key_tolerance: c.color_key_tolerance.unwrap_or(d.color_key_tolerance),
        background: c.background.clone().unwrap_or(d.background),
    }
}

/// Fills a path template's placeholders for one image.
/// Fills a path template (`{dir}`, `{split}`, `{stem}`, `{model}`, `{gender}`, `{size}`) for one image.
pub fn fill_template(template: &str, rel_path: &str, id: &SampleId) -> String {
    let (dir, file) = rel_path.rsplit_once('/').unwrap_or(("", rel_path));
    let stem = file.rsplit_once('.').map(|(s, _)| s).unwrap_or(file);
    let split = rel_path.split('/').next().unwrap_or("");
    let gender = match id.gender {
        Gender::Female => "F",
        Gender::Male => "M",
    };
    template
        .replace("{dir}", dir)
        .replace("{split}", split)
        .replace("{stem}", stem)
        .replace("{model}", &id.model_key())
        .replace("{gender}", gender)
        .replace("{size}", &id.size.to_string())
}

fn variant_path(path: &str, variant: u32) -> String {
    if variant == 0 { path.to_string() } else { format!("v{variant}/{path}") }
}

/// Resolves one image (path relative to the input root) into the job for `variant` / `qa_try`.
pub fn resolve_job(spec: &RunSpec, grammar: &IdGrammar, rel_path: &str, variant: u32, qa_try: u32) -> Result<JobSpec, ResolveError> {
    resolve_job_reseeded(spec, grammar, rel_path, variant, qa_try, 0)
}

/// [`resolve_job`] for the `reseed`-th regeneration of the job (new seeds and draws for every
/// stream; 0 is the job as first resolved).
pub fn resolve_job_reseeded(spec: &RunSpec, grammar: &IdGrammar, rel_path: &str, variant: u32, qa_try: u32, reseed: u32) -> Result<JobSpec, ResolveError> {
    let id = grammar.parse(rel_path).map_err(|source| ResolveError::SampleId { path: rel_path.to_string(), source })?;
    let sample_id = id.to_string();
    let key = SeedKey { run_seed: spec.run.seed, sample_id: &sample_id, variant, qa_try, reseed };
    let prompt_set = PromptCategory::for_sample(&id, &spec.sample_id.bald_hair);
    let prompts = spec.prompts.get(prompt_set);
    let scene = scene_for(spec, &key);
    let dataset = spec.dataset.as_ref();
    let label = dataset.and_then(|d| d.label_template.as_deref()).map(|t| fill_template(t, rel_path, &id));
    let depth = dataset.and_then(|d| d.depth_template.as_deref()).map(|t| fill_template(t, rel_path, &id));
    let shard = match spec.shards.group_by {
        ShardGrouping::Model => id.model_key(),
        ShardGrouping::Run => spec.run.name.clone(),
    };
    Ok(JobSpec {
        shard,
        source: rel_path.to_string(),
        output: variant_path(rel_path, variant),
        output_label: label.as_deref().map(|l| variant_path(l, variant)),
        label,
        depth,
        variant,
        qa_try,
        reseed,
        prompt_set,
        prompt: prompts.positive.clone(),
        negative: prompts.negative.clone(),
        seed: key.noise(),
        scene,
        params: job_params(spec, &key),
        qa: spec.qa.as_ref().map(|qa| QaPlan {
            limits: qa.limits(),
            retries: (1..=qa.max_retries)
                .map(|k| {
                    let key = SeedKey { qa_try: qa_try + k, ..key };
                    QaAlternate { qa_try: key.qa_try, seed: key.noise(), scene: scene_for(spec, &key), params: job_params(spec, &key) }
                })
                .collect(),
        }),
        sample_id,
    })
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn scene_for(spec: &RunSpec, key: &SeedKey) -> Option<SceneChoice> {
    (!spec.scenes.images.is_empty()).then(|| {
        let index = key.scene(spec.scenes.images.len());
        SceneChoice { index, path: spec.scenes.images[index].clone() }
    })
}

/// Whether a path names a PNG or JPEG file (by extension, any case).
pub fn is_image(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    [".png", ".jpg", ".jpeg"].iter().any(|ext| lower.ends_with(ext))
}

/// Resolves a dataset listing (paths relative to the input root, `/`-separated) into jobs: images
/// under the spec's image folders, kept by the model and view filters, times `variants`.
pub fn resolve_run(spec: &RunSpec, files: &[String]) -> Result<Resolution, IdGrammarError> {
    let grammar = spec.grammar()?;
    let views = ViewFilter::parse(&spec.filters.views).unwrap_or_default();
    let folders: Vec<String> = spec.dataset.as_ref().map(|d| d.images.iter().map(|f| format!("{}/", f.trim_end_matches('/'))).collect()).unwrap_or_default();
    let mut out = Resolution::default();
    let mut images: Vec<&String> = files.iter().filter(|f| is_image(f) && folders.iter().any(|d| f.starts_with(d.as_str()))).collect();
    images.sort();
    for path in images {
        let id = match grammar.parse(path) {
            Ok(id) => id,
            Err(source) => {
                out.rejected.push(ResolveError::SampleId { path: path.clone(), source });
                continue;
            }
        };
        let model_ok = spec.filters.models.is_empty() || spec.filters.models.iter().any(|m| m == &id.model_key());
        if !model_ok || !views.contains(id.frame) {
            out.filtered_out += 1;
            continue;
        }
        for variant in 0..spec.run.variants {
            // The id parsed above, so resolution cannot fail here.
            out.jobs.push(resolve_job(spec, &grammar, path, variant, 0).expect("id parsed"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn example() -> RunSpec {
        RunSpec::parse(include_str!("../../examples/acusim.toml"), Path::new("examples/acusim.toml")).unwrap()
    }

    /// 225 anatomical models × 144 views, in AcuSim's layout.
    fn acusim_layout() -> Vec<String> {
        let mut files = vec!["map.txt".to_string()];
        let names = ["Asher", "Brisen", "Grace", "Minami", "Novak"];
        let mut models = Vec::new();
        'outer: for gender in ["M", "F"] {
            for i in 0..120 {
                for size in ["F", "N", "S"] {
                    models.push(format!("{gender}_{}{i}_{size}_HD", names[i % names.len()]));
                    if models.len() == 225 {
                        break 'outer;
                    }
                }
            }
        }
        for model in &models {
            for frame in 0..144 {
                files.push(format!("train/image/img_512/{model}_{frame:04}.png"));
                files.push(format!("train/label/label/{model}_{frame:04}.json"));
            }
        }
        files
    }

    #[test]
    fn a_qa_plan_holds_the_jobs_of_the_next_tries() {
        let text = format!("{}\n[qa]\nmax_drift_px = 10.0\nmax_retries = 2\n", include_str!("../../examples/acusim.toml"));
        let spec = RunSpec::parse(&text, Path::new("x.toml")).unwrap();
        let grammar = spec.grammar().unwrap();
        let path = "train/image/img_512/M_Asher_N_HD_0017.png";
        let job = resolve_job(&spec, &grammar, path, 0, 0).unwrap();
        let plan = job.qa.as_ref().unwrap();
        assert_eq!(plan.limits.max_drift_px, Some(10.0));
        assert_eq!(plan.retries.iter().map(|r| r.qa_try).collect::<Vec<_>>(), [1, 2]);
        for k in 1..=2u32 {
            // Try k of the plan is exactly the job resolved with qa_try = k (cfg is a drawn range).
            let direct = resolve_job(&spec, &grammar, path, 0, k).unwrap();
            let retried = job.with_qa_retry(k as usize).unwrap();
            assert_eq!((retried.qa_try, retried.seed, &retried.params, &retried.scene), (k, direct.seed, &direct.params, &direct.scene));
            assert_ne!(retried.seed, job.seed);
        }
        assert!(job.with_qa_retry(0).is_none() && job.with_qa_retry(3).is_none());
        assert!(resolve_job(&example(), &grammar, path, 0, 0).unwrap().qa.is_none());
    }

    #[test]
    fn example_spec_over_225_models_gives_9900_jobs() {
        let r = resolve_run(&example(), &acusim_layout()).unwrap();
        assert_eq!(r.jobs.len(), 9_900);
        assert_eq!(r.filtered_out, 225 * 100);
        assert!(r.rejected.is_empty());
        let shards: std::collections::BTreeSet<&str> = r.jobs.iter().map(|j| j.shard.as_str()).collect();
        assert_eq!(shards.len(), 225);
        let seeds: std::collections::HashSet<u64> = r.jobs.iter().map(|j| j.seed).collect();
        assert_eq!(seeds.len(), 9_900, "every job has its own noise seed");
    }

    #[test]
    fn jobs_are_fully_specified_and_reproducible() {
        let spec = example();
        let g = spec.grammar().unwrap();
        let a = resolve_job(&spec, &g, "train/image/img_512/F_Grace_N_HA_0031.png", 0, 0).unwrap();
        assert_eq!(a, resolve_job(&spec, &g, "train/image/img_512/F_Grace_N_HA_0031.png", 0, 0).unwrap());
        assert_eq!(a.label.as_deref(), Some("train/label/label/F_Grace_N_HA_0031.json"));
        assert_eq!(a.output, a.source);
        assert_eq!(a.prompt_set, PromptCategory::Female);
        assert!((1.8..=2.4).contains(&a.params.cfg), "cfg drawn from the spec's range: {}", a.params.cfg);
        assert_eq!(a.params.steps, 28);
        assert_eq!(a.scene.as_ref().unwrap().path, "scenes/warm_room.png");
        let v1 = resolve_job(&spec, &g, "train/image/img_512/F_Grace_N_HA_0031.png", 1, 0).unwrap();
        assert_eq!(v1.output, "v1/train/image/img_512/F_Grace_N_HA_0031.png");
        assert_eq!(v1.output_label.as_deref(), Some("v1/train/label/label/F_Grace_N_HA_0031.json"));
        assert_ne!(v1.seed, a.seed);
        let retry = resolve_job(&spec, &g, "train/image/img_512/F_Grace_N_HA_0031.png", 0, 1).unwrap();
        assert_ne!(retry.seed, a.seed, "a QA retry draws new noise");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), a);
    }

    #[test]
    fn unparseable_ids_are_reported_not_skipped() {
        let files = vec!["train/image/img_512/M_Asher_N_HD_0003.png".to_string(), "train/image/img_512/holiday.png".to_string()];
        let r = resolve_run(&example(), &files).unwrap();
        assert_eq!(r.jobs.len(), 1);
        assert_eq!(r.rejected.len(), 1);
        assert!(r.rejected[0].to_string().starts_with("train/image/img_512/holiday.png: sample id `holiday`"));
    }

    #[test]
    fn model_filter_and_variants() {
        let text = include_str!("../../examples/acusim.toml").replace("models = []", "models = [\"M_Asher_N_HD\"]").replace("variants = 1", "variants = 2");
        let spec = RunSpec::parse(&text, Path::new("x.toml")).unwrap();
        let files: Vec<String> =
            ["M_Asher_N_HD_0003.png", "M_Asher_N_HD_0000.png", "F_Grace_N_HA_0003.png"].iter().map(|f| format!("test/image/img_512/{f}")).collect();
        let r = resolve_run(&spec, &files).unwrap();
        assert_eq!(r.jobs.len(), 2, "one image kept, two variants");
        assert_eq!(r.filtered_out, 2);
    }
}
