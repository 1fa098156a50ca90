//! What a run would queue, for `--dry-run`: job and shard counts, the prompt set chosen per id,
//! the spread of every drawn parameter and the first jobs in full. Built from a resolution, so it
//! shows exactly what a real submit would store.

use crate::resolve::{JobSpec, Resolution};
use crate::spec::RunSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Jobs printed in full.
const FIRST_JOBS: usize = 5;
/// Unresolved images named (the count is always complete).
const UNRESOLVED_SHOWN: usize = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub run: String,
    pub jobs: usize,
    pub shards: BTreeMap<String, usize>,
    /// Jobs per prompt set, with a few of the ids that chose it.
    pub prompt_sets: BTreeMap<String, PromptSetPlan>,
    /// Images whose sample id does not parse: they become permanently failed jobs.
    pub unresolved: usize,
    pub unresolved_examples: Vec<String>,
    /// Images left out by the filters.
    pub filtered_out: usize,
    /// The lowest and highest value each numeric parameter takes over the jobs, and the choices used.
    pub params: ParamSpread,
    pub first_jobs: Vec<JobSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSetPlan {
    pub jobs: usize,
    pub example_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamSpread {
    pub steps: Option<[f64; 2]>,
    pub t0: Option<[f64; 2]>,
    pub denoise: Option<[f64; 2]>,
    pub cfg: Option<[f64; 2]>,
    pub ipa_weight: Option<[f64; 2]>,
    pub ic_multiplier: Option<[f64; 2]>,
    pub samplers: Vec<String>,
    pub schedulers: Vec<String>,
    pub foregrounds: Vec<String>,
    pub backgrounds: Vec<String>,
    pub scenes: usize,
}

fn widen(span: &mut Option<[f64; 2]>, v: f64) {
    *span = Some(match *span {
        None => [v, v],
        Some([lo, hi]) => [lo.min(v), hi.max(v)],
    });
}

/// An f32 parameter as the f64 of its shortest decimal form, so 0.6 prints as 0.6.
fn shortest(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

fn add(list: &mut Vec<String>, v: String) {
    if !list.contains(&v) {
        list.push(v);
    }
}

impl Plan {
    pub fn new(spec: &RunSpec, resolution: &Resolution) -> Self {
        let mut shards: BTreeMap<String, usize> = BTreeMap::new();
        let mut prompt_sets: BTreeMap<String, PromptSetPlan> = BTreeMap::new();
        let mut params = ParamSpread::default();
        let mut scenes = std::collections::BTreeSet::new();
        for job in &resolution.jobs {
            *shards.entry(job.shard.clone()).or_default() += 1;
            let set = prompt_sets.entry(job.prompt_set.as_str().to_string()).or_insert(PromptSetPlan { jobs: 0, example_ids: Vec::new() });
            set.jobs += 1;
            if set.example_ids.len() < 3 && !set.example_ids.contains(&job.sample_id) {
                set.example_ids.push(job.sample_id.clone());
            }
            let p = &job.params;
            widen(&mut params.steps, p.steps as f64);
            if let Some(t0) = p.t0 {
                widen(&mut params.t0, t0);
            }
            if let Some(d) = p.denoise {
                widen(&mut params.denoise, d);
            }
            widen(&mut params.cfg, shortest(p.cfg));
            widen(&mut params.ipa_weight, shortest(p.ipa_weight));
            widen(&mut params.ic_multiplier, shortest(p.ic_multiplier));
            add(&mut params.samplers, p.sampler.to_string());
            add(&mut params.schedulers, p.scheduler.to_string());
            add(&mut params.foregrounds, p.foreground.to_string());
            add(&mut params.backgrounds, p.background.to_string());
            if let Some(scene) = &job.scene {
                scenes.insert(scene.index);
            }
        }
        params.scenes = scenes.len();
        if !resolution.rejected.is_empty() {
            *shards.entry(crate::resolve::UNRESOLVED_SHARD.to_string()).or_default() += resolution.rejected.len();
        }
        Self {
            run: spec.run.name.clone(),
            jobs: resolution.jobs.len() + resolution.rejected.len(),
            shards,
            prompt_sets,
            unresolved: resolution.rejected.len(),
            unresolved_examples: resolution.rejected.iter().take(UNRESOLVED_SHOWN).map(|r| r.to_string()).collect(),
            filtered_out: resolution.filtered_out,
            params,
            first_jobs: resolution.jobs.iter().take(FIRST_JOBS).cloned().collect(),
        }
    }

    /// The plan as a person reads it.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "dry run of `{}`: would queue {} jobs in {} shards ({} left out by filters, {} unresolved); nothing was written",
            self.run,
            self.jobs,
            self.shards.len(),
            self.filtered_out,
            self.unresolved
        );
        let _ = writeln!(out, "prompt sets:");
        for (name, set) in &self.prompt_sets {
            let _ = writeln!(out, "  {name:<12} {:>7} jobs  e.g. {}", set.jobs, set.example_ids.join(", "));
        }
        let _ = writeln!(out, "parameters over all jobs:");
        let p = &self.params;
        for (name, span) in
            [("steps", p.steps), ("t0", p.t0), ("denoise", p.denoise), ("cfg", p.cfg), ("ipa_weight", p.ipa_weight), ("ic_multiplier", p.ic_multiplier)]
        {
            match span {
                Some([lo, hi]) if lo == hi => _ = writeln!(out, "  {name:<14} {lo}"),
                Some([lo, hi]) => _ = writeln!(out, "  {name:<14} {lo:.4} … {hi:.4}"),
                None => {}
            }
        }
        for (name, list) in [("sampler", &p.samplers), ("scheduler", &p.schedulers), ("foreground", &p.foregrounds), ("background", &p.backgrounds)] {
            let _ = writeln!(out, "  {name:<14} {}", list.join(", "));
        }
        let _ = writeln!(out, "  {:<14} {} distinct", "scenes", p.scenes);
        let shown: Vec<String> = self.shards.iter().take(8).map(|(k, n)| format!("{k} ({n})")).collect();
        let more = self.shards.len().saturating_sub(shown.len());
        let _ = writeln!(out, "shards: {}{}", shown.join(", "), if more > 0 { format!(", … {more} more") } else { String::new() });
        if !self.unresolved_examples.is_empty() {
            let _ = writeln!(out, "unresolved (queued as failed jobs):");
            for e in &self.unresolved_examples {
                let _ = writeln!(out, "  {e}");
            }
        }
        let _ = writeln!(out, "first jobs:");
        for job in &self.first_jobs {
            let p = &job.params;
            let start = match (p.t0, p.denoise) {
                (Some(t0), _) => format!("t0 {t0:.3}"),
                (None, Some(d)) => format!("denoise {d:.3}"),
                (None, None) => "full".into(),
            };
            let scene = job.scene.as_ref().map(|s| s.path.as_str()).unwrap_or("-");
            let _ = writeln!(
                out,
                "  {} → {}  [{}] seed {} · {} {} {} steps {start} cfg {:.2} ipa {:.2} ic {:.4} · scene {scene}",
                job.source,
                job.output,
                job.prompt_set.as_str(),
                job.seed,
                p.sampler,
                p.scheduler,
                p.steps,
                p.cfg,
                p.ipa_weight,
                p.ic_multiplier
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_parameters_keep_their_written_digits() {
        assert_eq!(shortest(0.6), 0.6);
        assert_eq!(shortest(0.18215), 0.18215);
        assert_eq!(shortest(2.0), 2.0);
    }
}
