//! Writes `manifest.jsonl`, `manifest.summary.json` and `metadata.jsonl` from the store (never
//! appended by workers), so the manifest always matches what the database says succeeded.

use crate::Store;
use acufarm_core::manifest::{self, ManifestRow, MetadataRow, Summary};
use acufarm_core::RunId;
use acufarm_storage::Storage;
use bytes::Bytes;
use std::collections::BTreeMap;

/// Why the manifest could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] crate::StoreError),
    #[error(transparent)]
    Storage(#[from] acufarm_storage::StorageError),
    #[error(transparent)]
    Label(#[from] manifest::LabelError),
    #[error("the stored result of {sample_id} is not a manifest row ({reason}); resubmit that job")]
    BadResult { sample_id: String, reason: String },
}

impl ManifestError {
    /// Whether writing again later may succeed (database or storage hiccup).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Storage(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Writes the manifest of `run` into `output`; returns the number of manifest rows written.
/// Idempotent: it is a function of the database, so writing twice (or from two coordinator
/// replicas) gives the same files, and each file is replaced whole.
pub async fn write<S: Store>(store: &S, run: RunId, run_name: &str, output: &Storage) -> Result<usize, ManifestError> {
    let jobs = store.succeeded_jobs(run).await?;
    let mut rows = Vec::with_capacity(jobs.len());
    for job in jobs {
        let row: ManifestRow = serde_json::from_value(job.result)
            .map_err(|e| ManifestError::BadResult { sample_id: job.sample_id.clone(), reason: e.to_string() })?;
        rows.push(row);
    }
    rows.sort_by(|a, b| a.output.path.cmp(&b.output.path));
    let mut manifest_text = String::new();
    // Hugging Face's imagefolder takes split names from top-level folders (train/, test/) and
    // reads a metadata.jsonl inside each, with file names relative to it.
    let mut metadata: BTreeMap<String, String> = BTreeMap::new();
    for row in &rows {
        manifest_text.push_str(&serde_json::to_string(row).expect("a manifest row serializes"));
        manifest_text.push('\n');
        let keypoints = match &row.annotation {
            Some(a) => manifest::parse_label(&output.get(&a.path).await?, &a.path)?,
            None => Vec::new(),
        };
        let (folder, file_name) = match row.output.path.split_once('/') {
            Some((split, rest)) => (format!("{split}/"), rest.to_string()),
            None => (String::new(), row.output.path.clone()),
        };
        let meta = MetadataRow { file_name, sample_id: row.sample_id.clone(), variant: row.variant, prompt_set: row.prompt_set, keypoints };
        let text = metadata.entry(folder).or_default();
        text.push_str(&serde_json::to_string(&meta).expect("a metadata row serializes"));
        text.push('\n');
    }
    let status = store.run_status(run).await?;
    let failures = BTreeMap::from([("failed".to_string(), status.counts.failed as usize)]);
    let summary = Summary::from_rows(run_name, &rows, failures.into_iter().filter(|(_, n)| *n > 0).collect());
    output.put(manifest::MANIFEST, Bytes::from(manifest_text)).await?;
    for (folder, text) in metadata {
        output.put(&format!("{folder}{}", manifest::METADATA), Bytes::from(text)).await?;
    }
    output.put(manifest::SUMMARY, Bytes::from(serde_json::to_string_pretty(&summary).expect("a summary serializes"))).await?;
    Ok(rows.len())
}
