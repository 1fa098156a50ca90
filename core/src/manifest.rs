//! Manifest formats (DESIGN §7): `manifest.jsonl` (one row per output), `manifest.summary.json`,
//! and `metadata.jsonl` rows that Hugging Face `datasets` (`imagefolder`) loads directly, carrying
//! each image's keypoints from its label file.

use crate::prompt::PromptCategory;
use crate::resolve::{JobParams, SceneChoice};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANIFEST: &str = "manifest.jsonl";
pub const SUMMARY: &str = "manifest.summary.json";
pub const METADATA: &str = "metadata.jsonl";

/// A file and the sha256 of its bytes. Paths are relative to the input or output root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub name: String,
    /// sha256 of bundle.toml, which lists the sha256 of every graph.
    pub sha256: String,
}

/// One output image and everything needed to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRow {
    pub run: String,
    pub shard: String,
    pub sample_id: String,
    pub variant: u32,
    pub qa_try: u32,
    /// How many times the output was regenerated with new seeds (enters every seed; absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reseed: u32,
    pub source: FileRef,
    pub output: FileRef,
    /// The label copied beside the output (byte-for-byte, so its hash equals the source label's).
    pub annotation: Option<FileRef>,
    pub prompt_set: PromptCategory,
    pub prompt: String,
    pub negative: String,
    pub seed: u64,
    pub scene: Option<SceneChoice>,
    pub params: JobParams,
    pub bundle: BundleRef,
    pub worker: String,
    pub execution_provider: String,
    pub attempt: i32,
    /// Seconds per stage (e.g. `download`, `render`, `upload`, and per graph inside ONNX Runtime).
    pub timings: BTreeMap<String, f64>,
    /// The landmark-drift QA gate's check of every rendered try (runs with `[qa]` only); the last
    /// one is this output's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qa: Vec<crate::qa::QaRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("label {path} is not valid JSON ({reason}); fix or replace the file")]
    Json { path: String, reason: String },
    #[error("label {path} has no `label` list of points; AcuSim labels look like {{\"label\":[{{\"name\":…,\"coordinate\":{{\"x\":…,\"y\":…}}}}]}}")]
    Shape { path: String },
}

/// One keypoint as stored in `metadata.jsonl`: normalised x, y (from the top-left), and the
/// dataset's `n` (cos of view vs normal) and `h` (depth, metres) where present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keypoint {
    pub name: String,
    pub x: f64,
    pub y: f64,
    pub n: Option<f64>,
    pub h: Option<f64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Parses an AcuSim label file into keypoints; a malformed label is a clear error.
pub fn parse_label(bytes: &[u8], path: &str) -> Result<Vec<Keypoint>, LabelError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| LabelError::Json { path: path.to_string(), reason: e.to_string() })?;
    let points = value.get("label").and_then(|l| l.as_array()).ok_or_else(|| LabelError::Shape { path: path.to_string() })?;
    points
        .iter()
        .map(|p| {
            let c = p.get("coordinate")?;
            Some(Keypoint {
                name: p.get("name")?.as_str()?.to_string(),
                x: c.get("x")?.as_f64()?,
                y: c.get("y")?.as_f64()?,
                n: c.get("n").and_then(|v| v.as_f64()),
                h: c.get("h").and_then(|v| v.as_f64()),
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| LabelError::Shape { path: path.to_string() })
}

/// A `metadata.jsonl` row: `file_name` relative to the metadata file (one per top-level split
/// folder, as Hugging Face's imagefolder expects) plus the sample's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataRow {
    pub file_name: String,
    pub sample_id: String,
    pub variant: u32,
    pub prompt_set: PromptCategory,
    pub keypoints: Vec<Keypoint>,
}

/// `manifest.summary.json`: counts and the run's parameters at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    pub run: String,
    pub outputs: usize,
    pub failed: usize,
    pub failures_by_class: BTreeMap<String, usize>,
    pub shards: usize,
    /// Seconds of work the outputs took, each second counted once: per output the sum of its
    /// top-level stages (`fetch`, `render`, `qa`, `upload`), without the stages nested inside
    /// another ([`NESTED_STAGES`]: `onnxruntime` is part of `render`), summed over outputs. With
    /// several workers (or a worker fetching the next batch while it renders) this exceeds the
    /// run's wall time; that is in `wall_seconds`.
    pub seconds_total: f64,
    /// Wall-clock seconds from the run's creation (submit, or the first `acufarm run`) to the end
    /// of its last job, time without workers included; absent for a run without jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
    /// Mean seconds per stage over all outputs (nested stages included, each under its name).
    pub seconds_mean: BTreeMap<String, f64>,
    /// The landmark-drift QA gate (runs with `[qa]` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<crate::qa::QaSummary>,
}

/// Timing stages measured inside another stage, so not added again to `seconds_total`:
/// `onnxruntime` is the part of `render` spent in ONNX Runtime's sessions. A stage named
/// `outer/inner` is nested too (room for finer timings without double counting).
pub const NESTED_STAGES: &[&str] = &["onnxruntime"];

/// Whether a timing stage lies inside another one ([`NESTED_STAGES`]).
pub fn is_nested_stage(stage: &str) -> bool {
    NESTED_STAGES.contains(&stage) || stage.contains('/')
}

/// A [`Summary`] built one row at a time (the manifest writer streams rows).
#[derive(Debug, Default)]
pub struct SummaryTotals {
    outputs: usize,
    seconds: BTreeMap<String, f64>,
    shards: std::collections::BTreeSet<String>,
    qa: crate::qa::QaTotals,
}

impl SummaryTotals {
    /// Rows added so far.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    pub fn add(&mut self, row: &ManifestRow) {
        self.outputs += 1;
        for (stage, seconds) in &row.timings {
            match self.seconds.get_mut(stage) {
                Some(total) => *total += seconds,
                None => {
                    self.seconds.insert(stage.clone(), *seconds);
                }
            }
        }
        self.qa.add(&row.qa);
        if !self.shards.contains(&row.shard) {
            self.shards.insert(row.shard.clone());
        }
    }

    /// The summary of the rows added; `wall_seconds` is the run's span (see [`Summary`]).
    pub fn finish(self, run: &str, failures_by_class: BTreeMap<String, usize>, wall_seconds: Option<f64>) -> Summary {
        let qa = self.qa.finish(failures_by_class.get("qa").copied().unwrap_or(0));
        let n = self.outputs.max(1) as f64;
        Summary {
            run: run.to_string(),
            outputs: self.outputs,
            failed: failures_by_class.values().sum(),
            failures_by_class,
            shards: self.shards.len(),
            seconds_total: self.seconds.iter().filter(|(stage, _)| !is_nested_stage(stage)).map(|(_, seconds)| seconds).sum(),
            wall_seconds,
            seconds_mean: self.seconds.into_iter().map(|(k, v)| (k, v / n)).collect(),
            qa,
        }
    }
}

/// sha256 of a file's bytes, hex, streamed.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// sha256 of bytes in memory, hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_acusim_labels() {
        let text = r#"{"label": [{"name": "LI17_天鼎_left", "coordinate": {"x": 0.6171875, "y": 0.9072265625, "n": -0.67, "h": 0.87}},
                                  {"name": "GV20", "coordinate": {"x": 0.5, "y": 0.1}}]}"#;
        let points = parse_label(text.as_bytes(), "a.json").unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].name, "LI17_天鼎_left");
        assert_eq!((points[1].x, points[1].n), (0.5, None));
    }

    #[test]
    fn seconds_total_counts_each_second_of_work_once() {
        let file = |path: &str| FileRef { path: path.into(), sha256: "0".repeat(64) };
        let timings = [("fetch", 0.25), ("render", 2.0), ("onnxruntime", 1.5), ("qa", 0.5), ("upload", 0.25), ("render/unet", 1.0)];
        let row = ManifestRow {
            run: "r".into(),
            shard: "s".into(),
            sample_id: "a".into(),
            variant: 0,
            qa_try: 0,
            reseed: 0,
            source: file("a.png"),
            output: file("a.png"),
            annotation: None,
            prompt_set: PromptCategory::Male,
            prompt: "p".into(),
            negative: String::new(),
            seed: 1,
            scene: None,
            params: JobParams::default(),
            bundle: BundleRef { name: "b".into(), sha256: "1".repeat(64) },
            worker: "w".into(),
            execution_provider: "cpu".into(),
            attempt: 1,
            timings: timings.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            qa: Vec::new(),
        };
        let mut totals = SummaryTotals::default();
        totals.add(&row);
        totals.add(&row);
        let summary = totals.finish("r", BTreeMap::new(), Some(2.5));
        // (0.25 + 2 + 0.5 + 0.25) per output; onnxruntime and render/unet lie inside render.
        assert_eq!(summary.seconds_total, 6.0);
        assert_eq!(summary.wall_seconds, Some(2.5));
        assert_eq!((summary.seconds_mean["onnxruntime"], summary.seconds_mean["render"]), (1.5, 2.0));
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["wall_seconds"], 2.5);
        let old: Summary = serde_json::from_value(
            serde_json::json!({"run": "r", "outputs": 0, "failed": 0, "failures_by_class": {}, "shards": 0, "seconds_total": 0.0, "seconds_mean": {}}),
        )
        .unwrap();
        assert_eq!(old.wall_seconds, None, "a summary written before wall_seconds still reads");
    }

    #[test]
    fn table_of_bad_labels() {
        for (text, want) in [
            ("", "not valid JSON"),
            ("{", "not valid JSON"),
            ("[]", "no `label` list"),
            (r#"{"label": 3}"#, "no `label` list"),
            (r#"{"label": [{"name": "x"}]}"#, "no `label` list"),
            (r#"{"label": [{"name": 1, "coordinate": {"x": 0, "y": 0}}]}"#, "no `label` list"),
        ] {
            let msg = parse_label(text.as_bytes(), "bad.json").unwrap_err().to_string();
            assert!(msg.contains(want) && msg.contains("bad.json"), "{text}: {msg}");
        }
    }
}
