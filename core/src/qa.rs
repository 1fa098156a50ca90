//! The landmark-drift QA gate's data (DESIGN §8): the `[qa]` spec section, the limits and
//! re-generation plan each job carries, and the record of every checked attempt that ends up in
//! the manifest. The measuring itself lives in the worker (`acufarm_worker::drift`).

use crate::resolve::{JobParams, SceneChoice};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The 8 points of the seed paper's protocol, in report order.
pub const DRIFT_POINTS: [&str; 8] = ["RE_outer", "RE_inner", "LE_inner", "LE_outer", "Mouth_R", "Mouth_L", "Philtrum", "NasalBridgeMid"];

/// `[qa]` in a run spec. Present = every output is measured against its source.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct QaSection {
    /// Largest allowed drift of any of the 8 points, in pixels.
    pub max_drift_px: Option<f32>,
    /// Per-point limits in pixels, by point name (e.g. `Philtrum = 15`).
    #[serde(default)]
    pub max_point_drift_px: BTreeMap<String, f32>,
    /// Smallest mean absolute change outside the face (0–255 levels per channel): an output that
    /// did not change is no augmentation.
    #[serde(default = "default_min_change")]
    pub min_change: f32,
    /// Re-generations with the next `qa_try` seed before the job fails with class `qa`.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

fn default_min_change() -> f32 {
    1.0
}
fn default_max_retries() -> u32 {
    2
}

impl QaSection {
    /// Checks names and values, adding one sentence per problem (naming the key to fix).
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Some(v) = self.max_drift_px
            && !(v > 0.0 && v.is_finite())
        {
            problems.push(format!("`qa.max_drift_px` must be a positive number of pixels, not {v}"));
        }
        for (name, v) in &self.max_point_drift_px {
            if !DRIFT_POINTS.contains(&name.as_str()) {
                problems.push(format!("`qa.max_point_drift_px` names unknown point `{name}`; the points are {}", DRIFT_POINTS.join(", ")));
            }
            if !(*v > 0.0 && v.is_finite()) {
                problems.push(format!("`qa.max_point_drift_px.{name}` must be a positive number of pixels, not {v}"));
            }
        }
        if !(self.min_change >= 0.0 && self.min_change <= 255.0) {
            problems.push(format!("`qa.min_change` is a mean change in 0–255 levels, not {}", self.min_change));
        }
        if self.max_retries > 20 {
            problems.push(format!("`qa.max_retries` is {}, but at most 20 re-generations are allowed per job", self.max_retries));
        }
    }

    pub fn limits(&self) -> QaLimits {
        QaLimits { max_drift_px: self.max_drift_px, max_point_drift_px: self.max_point_drift_px.clone(), min_change: self.min_change }
    }
}

/// What an output must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaLimits {
    pub max_drift_px: Option<f32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_point_drift_px: BTreeMap<String, f32>,
    pub min_change: f32,
}

impl QaLimits {
    /// The limit for point `i` of [`DRIFT_POINTS`]: the tighter of its own and the overall one.
    pub fn limit(&self, i: usize) -> Option<f32> {
        let own = self.max_point_drift_px.get(DRIFT_POINTS[i]).copied();
        match (own, self.max_drift_px) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The job as rendered with another `qa_try`: what changes with the seed stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaAlternate {
    pub qa_try: u32,
    pub seed: u64,
    pub scene: Option<SceneChoice>,
    pub params: JobParams,
}

/// The gate a job runs: its limits and the re-generations it may use, resolved at submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaPlan {
    pub limits: QaLimits,
    pub retries: Vec<QaAlternate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QaVerdict {
    /// Within every limit.
    Pass,
    /// Over a limit or unchanged: re-generated while tries remain.
    Fail,
    /// The source has no measurable face, so drift cannot be measured; the output passes with
    /// the reason recorded (the minimum-change rule still applies).
    Unmeasured,
}

/// One checked attempt, as written into the manifest row (`qa`) of the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaRecord {
    pub qa_try: u32,
    pub seed: u64,
    pub verdict: QaVerdict,
    /// Why it failed, or why drift was not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Drift per point in pixels (points not found on both images are absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift_px: BTreeMap<String, f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drift_px: Option<f32>,
    /// Inter-ocular distance of the source (drift / this is resolution-independent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_ocular_px: Option<f32>,
    /// Mean absolute change outside the source's face, 0–255 levels.
    pub change_outside_face: f32,
    /// The 8 points as found on the source and on this output, in pixels of each image (x, y
    /// from the top-left), for drawing them; points not found are absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_points: BTreeMap<String, [f32; 2]>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_points: BTreeMap<String, [f32; 2]>,
    /// Width and height of the source and of the output the points are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_size: Option<[u32; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_size: Option<[u32; 2]>,
}

impl QaRecord {
    pub fn passed(&self) -> bool {
        self.verdict != QaVerdict::Fail
    }
}

/// n, mean, median, p95 and max of one sample of drifts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub n: usize,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

/// The `q`-quantile of sorted values with linear interpolation between closest ranks (NumPy's
/// default), `q` in [0, 1].
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

impl Distribution {
    pub fn of(values: &[f64]) -> Distribution {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        Distribution {
            n,
            mean: (n > 0).then(|| sorted.iter().sum::<f64>() / n as f64),
            median: quantile(&sorted, 0.5),
            p95: quantile(&sorted, 0.95),
            max: sorted.last().copied(),
        }
    }
}

/// The QA part of `manifest.summary.json`: how the gate went and the drift of the committed
/// outputs per point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QaSummary {
    /// Outputs checked by the gate.
    pub checked: usize,
    /// Outputs that passed on their first render.
    pub first_try: usize,
    /// Outputs that passed only after re-generation.
    pub regenerated: usize,
    /// Outputs whose source had no measurable face (passed, drift not measured), by reason.
    pub unmeasured: BTreeMap<String, usize>,
    /// Jobs that failed the gate on every try (no output, class `qa`).
    #[serde(default)]
    pub failed: usize,
    /// Drift of the committed outputs per point, in pixels.
    pub points: BTreeMap<String, Distribution>,
    /// The largest of the 8 drifts per output.
    pub max_of_points: Distribution,
}

/// One paragraph for a terminal: how the gate went and the drift per point.
pub fn describe(qa: &QaSummary) -> String {
    let fmt = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.1}"));
    let mut out = format!(
        "qa: {} passed ({} on the first try, {} re-generated, {} unmeasured: no measurable face in the source), {} failed the gate",
        qa.checked,
        qa.first_try,
        qa.regenerated,
        qa.unmeasured.values().sum::<usize>(),
        qa.failed
    );
    if qa.max_of_points.n > 0 {
        out.push_str(
            "
qa drift px (n mean median p95 max):",
        );
        for name in DRIFT_POINTS {
            if let Some(s) = qa.points.get(name) {
                out.push_str(&format!(
                    "
  {name:<15} {:>5} {:>6} {:>6} {:>6} {:>6}",
                    s.n,
                    fmt(s.mean),
                    fmt(s.median),
                    fmt(s.p95),
                    fmt(s.max)
                ));
            }
        }
    }
    out
}

/// Builds a [`QaSummary`] one manifest row at a time.
#[derive(Debug, Default)]
pub struct QaTotals {
    checked: usize,
    first_try: usize,
    regenerated: usize,
    unmeasured: BTreeMap<String, usize>,
    drift: [Vec<f64>; 8],
    max: Vec<f64>,
}

impl QaTotals {
    /// Adds one output's checks (the manifest row's `qa`, last = committed).
    pub fn add(&mut self, checks: &[QaRecord]) {
        let Some(last) = checks.last() else { return };
        self.checked += 1;
        if checks.len() == 1 {
            self.first_try += 1;
        } else {
            self.regenerated += 1;
        }
        if last.verdict == QaVerdict::Unmeasured {
            *self.unmeasured.entry(last.reason.clone().unwrap_or_default()).or_default() += 1;
        }
        for (i, name) in DRIFT_POINTS.iter().enumerate() {
            if let Some(d) = last.drift_px.get(*name) {
                self.drift[i].push(*d as f64);
            }
        }
        if let Some(m) = last.max_drift_px {
            self.max.push(m as f64);
        }
    }

    /// With `failed` jobs of class `qa`; `None` when the gate never ran (a run without `[qa]`).
    pub fn finish(self, failed: usize) -> Option<QaSummary> {
        (self.checked > 0 || failed > 0).then(|| QaSummary {
            checked: self.checked,
            first_try: self.first_try,
            regenerated: self.regenerated,
            unmeasured: self.unmeasured,
            failed,
            points: DRIFT_POINTS.iter().zip(&self.drift).map(|(name, v)| (name.to_string(), Distribution::of(v))).collect(),
            max_of_points: Distribution::of(&self.max),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> QaSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn quantiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [50, 95]) = [3.0, 8.8]
        let s = Distribution::of(&[10.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s.n, 5);
        assert_eq!(s.median, Some(3.0));
        assert!((s.p95.unwrap() - 8.8).abs() < 1e-12);
        assert_eq!(s.mean, Some(4.0));
        assert_eq!(s.max, Some(10.0));
        assert_eq!(Distribution::of(&[]), Distribution::default());
        assert_eq!(Distribution::of(&[2.5]).p95, Some(2.5));
    }

    #[test]
    fn totals_summarise_the_committed_check() {
        let check = |qa_try: u32, verdict: QaVerdict, drift: f32| QaRecord {
            qa_try,
            seed: 1,
            verdict,
            reason: (verdict == QaVerdict::Unmeasured).then(|| "source: no face detected".to_string()),
            drift_px: if verdict == QaVerdict::Unmeasured { BTreeMap::new() } else { DRIFT_POINTS.iter().map(|p| (p.to_string(), drift)).collect() },
            max_drift_px: (verdict != QaVerdict::Unmeasured).then_some(drift),
            inter_ocular_px: None,
            change_outside_face: 10.0,
            source_points: BTreeMap::new(),
            output_points: BTreeMap::new(),
            source_size: None,
            output_size: None,
        };
        let mut totals = QaTotals::default();
        totals.add(&[check(0, QaVerdict::Pass, 2.0)]);
        totals.add(&[check(0, QaVerdict::Fail, 30.0), check(1, QaVerdict::Pass, 4.0)]);
        totals.add(&[check(0, QaVerdict::Unmeasured, 0.0)]);
        totals.add(&[]);
        let s = totals.finish(2).unwrap();
        assert_eq!((s.checked, s.first_try, s.regenerated, s.failed), (3, 2, 1, 2));
        assert_eq!(s.unmeasured["source: no face detected"], 1);
        assert_eq!(s.points["Philtrum"].n, 2);
        assert_eq!(s.points["Philtrum"].mean, Some(3.0), "only the committed checks count");
        assert_eq!(s.max_of_points.max, Some(4.0));
        assert!(QaTotals::default().finish(0).is_none());
        let all_failed = QaTotals::default().finish(4).unwrap();
        assert_eq!((all_failed.checked, all_failed.failed), (0, 4));
        assert!(
            describe(&all_failed)
                .starts_with("qa: 0 passed (0 on the first try, 0 re-generated, 0 unmeasured: no measurable face in the source), 4 failed the gate")
        );
        assert!(describe(&s).contains("\n  Philtrum            2    3.0    3.0    3.9    4.0"), "{}", describe(&s));
    }

    #[test]
    fn defaults_and_limits() {
        let s = section("max_drift_px = 12.0\nmax_point_drift_px = { Philtrum = 15.0, RE_outer = 8.0 }");
        let mut problems = Vec::new();
        s.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((s.min_change, s.max_retries), (1.0, 2));
        let l = s.limits();
        assert_eq!(l.limit(0), Some(8.0), "own limit tighter than the overall one");
        assert_eq!(l.limit(6), Some(12.0), "overall limit tighter than the point's own");
        assert_eq!(l.limit(3), Some(12.0));
        let only_point = section("max_point_drift_px = { Mouth_L = 5 }").limits();
        assert_eq!((only_point.limit(5), only_point.limit(0)), (Some(5.0), None));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, needle) in [
            ("max_drift_px = 0.0", "qa.max_drift_px"),
            ("max_drift_px = -3.0", "qa.max_drift_px"),
            ("max_point_drift_px = { Nose = 3.0 }", "unknown point `Nose`"),
            ("max_point_drift_px = { Philtrum = 0.0 }", "qa.max_point_drift_px.Philtrum"),
            ("min_change = 300.0", "qa.min_change"),
            ("min_change = -1.0", "qa.min_change"),
        ] {
            let mut problems = Vec::new();
            section(text).validate(&mut problems);
            assert!(problems.len() == 1 && problems[0].contains(needle), "{text}: {problems:?}");
        }
    }
}
