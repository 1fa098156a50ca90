//! The datasets of an evaluation: roots opened (an `s3://` root is mirrored into the output's
//! cache first), labelled images listed and matched, written as the index the trainer reads
//! (evaluate/acufarm_eval/data.py documents its format).

use acufarm_core::evaluate::{EvaluateSection, GroupBy};
use acufarm_core::resolve::{fill_template, is_image};
use acufarm_core::{Gender, IdGrammar};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{0}")]
    User(String),
    #[error("cannot read {path}: {source}; check the path and its permissions")]
    Io { path: String, source: std::io::Error },
    #[error("{root}: {source}; check the URL and the AWS_* settings")]
    Storage { root: String, source: acufarm_storage::StorageError },
}

fn user(text: impl Into<String>) -> IndexError {
    IndexError::User(text.into())
}

/// A dataset root on local disk, and the files under it (relative, `/`-separated).
pub struct Local {
    pub shown: String,
    pub dir: PathBuf,
    pub files: BTreeSet<String>,
}

fn wanted(rel: &str) -> bool {
    !acufarm_storage::is_reserved(rel) && (is_image(rel) || (rel.ends_with(".json") && !rel.contains("manifest")) || rel == "map.txt")
}

/// Opens a root: a folder or `file://` path as it is, an object-store root mirrored (images,
/// labels, map.txt; files already mirrored are kept) into `mirror`.
pub fn open(root: &str, mirror: &Path) -> Result<Local, IndexError> {
    let local = root.strip_prefix("file://").map(PathBuf::from).or_else(|| (!root.contains("://")).then(|| PathBuf::from(root)));
    if let Some(dir) = local {
        if !dir.is_dir() {
            return Err(user(format!("{root} is not a folder; pass a dataset root in the AcuSim layout (map.txt, train/image/…, train/label/label/…)")));
        }
        let files = acufarm_storage::list_folder(&dir).map_err(|source| IndexError::Io { path: dir.display().to_string(), source })?;
        return Ok(Local { shown: root.to_string(), dir, files });
    }
    let storage = acufarm_storage::Storage::open(root).map_err(|source| IndexError::Storage { root: root.to_string(), source })?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|source| IndexError::Io { path: "a runtime".into(), source })?;
    let files: Vec<String> = runtime
        .block_on(storage.list(""))
        .map_err(|source| IndexError::Storage { root: root.to_string(), source })?
        .into_iter()
        .filter(|f| wanted(f))
        .collect();
    let missing: Vec<&String> = files.iter().filter(|f| !mirror.join(f).is_file()).collect();
    if !missing.is_empty() {
        eprintln!("evaluate: copying {} files of {root} into {}", missing.len(), mirror.display());
    }
    runtime.block_on(async {
        let storage = std::sync::Arc::new(storage);
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = missing.into_iter();
        loop {
            while tasks.len() < 16 {
                let Some(rel) = pending.next() else { break };
                let (storage, rel, path) = (storage.clone(), rel.clone(), mirror.join(rel));
                tasks.spawn(async move {
                    let bytes = storage.get(&rel).await.map_err(|source| IndexError::Storage { root: format!("{}/{rel}", storage.url()), source })?;
                    let tmp = path.with_extension("part");
                    let io = |source| IndexError::Io { path: path.display().to_string(), source };
                    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
                    std::fs::write(&tmp, &bytes).map_err(io)?;
                    std::fs::rename(&tmp, &path).map_err(io)
                });
            }
            match tasks.join_next().await {
                None => break Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => break Err(e),
                Some(Err(e)) => break Err(user(format!("a copy task failed: {e}"))),
            }
        }
    })?;
    Ok(Local { shown: root.to_string(), dir: mirror.to_path_buf(), files: files.into_iter().collect() })
}

/// One labelled image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub id: String,
    pub model: String,
    pub group: String,
    pub image: String,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The resolution folder number of `…/img_512/…` (0 when the path has none).
fn resolution(rel: &str) -> u32 {
    rel.split('/').filter_map(|c| c.strip_prefix("img_")).find_map(|n| n.parse().ok()).unwrap_or(0)
}

/// Prefers the smallest resolution folder at or above `size`, else the largest.
fn better(candidate: &str, current: &str, size: u32) -> bool {
    let (a, b) = (resolution(candidate), resolution(current));
    match (a >= size, b >= size) {
        (true, true) => a < b,
        (true, false) => true,
        (false, true) => false,
        (false, false) => a > b,
    }
}

/// Keeps, per key, the image whose resolution folder [`better`] prefers.
fn keep<K: Ord>(chosen: &mut BTreeMap<K, (String, Sample)>, key: K, rel: &str, sample: Sample, size: u32) {
    if chosen.get(&key).is_none_or(|(current, _)| better(rel, current, size)) {
        chosen.insert(key, (rel.to_string(), sample));
    }
}

/// `v3/train/…` -> (3, `train/…`); other paths are variant 0.
fn variant(rel: &str) -> (u32, &str) {
    if let Some((head, rest)) = rel.split_once('/')
        && let Some(n) = head.strip_prefix('v').and_then(|n| n.parse::<u32>().ok())
        && n >= 1
    {
        return (n, rest);
    }
    (0, rel)
}

fn group(id: &acufarm_core::SampleId, by: GroupBy) -> String {
    match by {
        GroupBy::Model => id.model_key(),
        GroupBy::Name => format!("{}_{}", if id.gender == Gender::Female { "F" } else { "M" }, id.name),
    }
}

/// The labelled images of the original root, keyed by their label's path.
pub fn originals(root: &Local, grammar: &IdGrammar, cfg: &EvaluateSection) -> Result<BTreeMap<String, Sample>, IndexError> {
    if !root.files.contains("map.txt") {
        return Err(user(format!("{} has no map.txt; an AcuSim dataset root carries one (the 174 point names, one per line)", root.shown)));
    }
    let mut chosen: BTreeMap<String, (String, Sample)> = BTreeMap::new();
    let (mut unlabelled, mut bad_ids) = (Vec::new(), Vec::new());
    for rel in root.files.iter().filter(|f| is_image(f)) {
        let id = match grammar.parse(rel) {
            Ok(id) => id,
            Err(e) => {
                bad_ids.push(e.to_string());
                continue;
            }
        };
        let label = fill_template(&cfg.label_template, rel, &id);
        if !root.files.contains(&label) {
            unlabelled.push(rel.clone());
            continue;
        }
        let stem = label.rsplit('/').next().unwrap_or(&label).trim_end_matches(".json");
        let split = rel.split('/').next().unwrap_or("");
        let sample = Sample {
            id: format!("{split}/{stem}"),
            model: id.model_key(),
            group: group(&id, cfg.group_by),
            image: root.dir.join(rel).display().to_string(),
            label: root.dir.join(&label).display().to_string(),
            source: None,
        };
        keep(&mut chosen, label, rel, sample, cfg.image_size);
    }
    if !bad_ids.is_empty() {
        return Err(user(format!(
            "{} images of {} have file names the id patterns do not parse (first: {}); add a matching pattern under [sample_id] in --config",
            bad_ids.len(),
            root.shown,
            bad_ids[0]
        )));
    }
    if chosen.is_empty() {
        return Err(user(format!(
            "{} holds no image with a label at `{}` ({} images without one); point --original at an AcuSim-layout root or set evaluate.label_template",
            root.shown,
            cfg.label_template,
            unlabelled.len()
        )));
    }
    if !unlabelled.is_empty() {
        eprintln!("evaluate: {} images of {} have no label and are left out (first: {})", unlabelled.len(), root.shown, unlabelled[0]);
    }
    Ok(chosen.into_iter().map(|(label, (_, s))| (label, s)).collect())
}

/// The augmented copies under a run's output root, each matched to its original by the label it
/// renders (variant n ≥ 1 lives under `v{n}/`); a copy's own label is read where the run wrote one.
pub fn augmented(root: &Local, originals: &BTreeMap<String, Sample>, grammar: &IdGrammar, cfg: &EvaluateSection) -> Result<Vec<Sample>, IndexError> {
    let mut chosen: BTreeMap<(u32, String), (String, Sample)> = BTreeMap::new();
    let mut orphans = Vec::new();
    for rel in root.files.iter().filter(|f| is_image(f)) {
        let (n, base) = variant(rel);
        let Ok(id) = grammar.parse(base) else {
            orphans.push(rel.clone());
            continue;
        };
        let label = fill_template(&cfg.label_template, base, &id);
        let Some(original) = originals.get(&label) else {
            orphans.push(rel.clone());
            continue;
        };
        let own = if n == 0 { label.clone() } else { format!("v{n}/{label}") };
        let label_path = if root.files.contains(&own) { root.dir.join(&own).display().to_string() } else { original.label.clone() };
        let sample = Sample {
            id: if n == 0 { original.id.clone() } else { format!("v{n}/{}", original.id) },
            model: original.model.clone(),
            group: original.group.clone(),
            image: root.dir.join(rel).display().to_string(),
            label: label_path,
            source: Some(original.id.clone()),
        };
        keep(&mut chosen, (n, label), rel, sample, cfg.image_size);
    }
    if !orphans.is_empty() {
        return Err(user(format!(
            "{} images of {} match no labelled original (first: {}); pass the --original root the run read",
            orphans.len(),
            root.shown,
            orphans[0]
        )));
    }
    if chosen.is_empty() {
        return Err(user(format!("{} holds no images; pass the output root of a finished run as --augmented", root.shown)));
    }
    Ok(chosen.into_values().map(|(_, s)| s).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_folders_and_variants() {
        assert_eq!(resolution("train/image/img_512/a.png"), 512);
        assert!(better("train/image/img_256/a.png", "train/image/img_512/a.png", 128));
        assert!(better("train/image/img_512/a.png", "train/image/img_256/a.png", 384));
        assert!(better("train/image/img_256/a.png", "train/image/img_128/a.png", 1024));
        assert_eq!(variant("v2/train/image/a.png"), (2, "train/image/a.png"));
        assert_eq!(variant("v0/train/a.png"), (0, "v0/train/a.png"));
        assert_eq!(variant("train/a.png"), (0, "train/a.png"));
    }
}
