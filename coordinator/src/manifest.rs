//! Writes `manifest.jsonl`, `manifest.summary.json` and `metadata.jsonl` from the store (never
//! appended by workers), so the manifest always matches what the database says succeeded.

use crate::Store;
use crate::store::JobFilter;
use acufarm_core::manifest::{self, ManifestRow, MetadataRow, SummaryTotals};
use acufarm_core::{JobState, RunId};
use acufarm_storage::{ObjectWriter, Storage, StorageError};
use bytes::Bytes;
use futures_util::TryStreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    #[error(
        "another writer took over the manifest of run {run} while this one was writing it (this writer stalled past its claim); nothing was replaced, and the other writer finishes it"
    )]
    ClaimLost { run: RunId },
}

impl ManifestError {
    /// Whether writing again later may succeed (database or storage hiccup).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Storage(e) => e.is_retryable(),
            Self::ClaimLost { .. } => true,
            _ => false,
        }
    }
}

/// Rows whose labels are read at once.
const LABEL_READS: usize = 32;
/// Bytes gathered before they are handed to a file's upload.
const FLUSH_BYTES: usize = 1 << 20;

/// One file being written: text gathered, then uploaded in parts.
struct Output {
    writer: ObjectWriter,
    pending: String,
}

impl Output {
    fn open(storage: &Storage, rel: &str) -> Result<Self, StorageError> {
        Ok(Self { writer: storage.writer(rel)?, pending: String::new() })
    }

    async fn line(&mut self, line: &str) -> Result<(), StorageError> {
        self.pending.push_str(line);
        self.pending.push('\n');
        if self.pending.len() >= FLUSH_BYTES {
            self.writer.write(Bytes::from(std::mem::take(&mut self.pending))).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), StorageError> {
        if !self.pending.is_empty() {
            self.writer.write(Bytes::from(std::mem::take(&mut self.pending))).await?;
        }
        self.writer.finish().await
    }
}

/// The files of one manifest while they are written; dropped unfinished on an error, so the old
/// files stay in place.
struct Files {
    manifest: Output,
    /// metadata.jsonl per split folder ("train/", "test/", or "" at the root).
    metadata: BTreeMap<String, Output>,
}

impl Files {
    async fn abort(self) {
        let writers = std::iter::once(self.manifest).chain(self.metadata.into_values());
        for output in writers {
            if let Err(error) = output.writer.abort().await {
                tracing::warn!("cannot clean up an unfinished manifest upload: {error}");
            }
        }
    }
}

/// A claim on the write of a run's manifest ([`Store::claim_manifest`]), held by `writer` and
/// renewed for `ttl` at a time while the rows stream.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub writer: &'a str,
    pub ttl: Duration,
}

/// Keeps a claim alive: renewed once a third of its time has passed, and checked right before
/// the files are replaced, so a writer that stalled past its claim never replaces them.
struct Keeper<'a, S> {
    store: &'a S,
    run: RunId,
    claim: Option<Claim<'a>>,
    renewed: Instant,
}

impl<S: Store> Keeper<'_, S> {
    async fn renew(&mut self, force: bool) -> Result<(), ManifestError> {
        let Some(claim) = self.claim else { return Ok(()) };
        if !force && self.renewed.elapsed() < claim.ttl / 3 {
            return Ok(());
        }
        let until = chrono::Utc::now() + chrono::Duration::from_std(claim.ttl).unwrap_or(chrono::Duration::MAX);
        if !self.store.renew_manifest_claim(self.run, claim.writer, until).await? {
            return Err(ManifestError::ClaimLost { run: self.run });
        }
        self.renewed = Instant::now();
        Ok(())
    }
}

/// Writes the manifest of `run` into `output`; returns the summary it wrote (`outputs` = rows).
/// The caller must be its only writer: embedded mode (one process), or a coordinator holding the
/// claim ([`write_claimed`]). Rows stream from the store in output-path order and are uploaded as
/// they come, so memory stays flat for any run size; each file is replaced whole, and the
/// temporary `#N` files an earlier writer's crash left beside them are removed.
pub async fn write<S: Store>(store: &S, run: RunId, run_name: &str, output: &Storage) -> Result<manifest::Summary, ManifestError> {
    write_inner(store, run, run_name, output, None).await
}

/// [`write`] under a claim, which is renewed while the rows stream; fails with
/// [`ManifestError::ClaimLost`], leaving the old files, when another writer took it over.
pub async fn write_claimed<S: Store>(store: &S, run: RunId, run_name: &str, output: &Storage, claim: Claim<'_>) -> Result<manifest::Summary, ManifestError> {
    write_inner(store, run, run_name, output, Some(claim)).await
}

async fn write_inner<S: Store>(store: &S, run: RunId, run_name: &str, output: &Storage, claim: Option<Claim<'_>>) -> Result<manifest::Summary, ManifestError> {
    let mut keeper = Keeper { store, run, claim, renewed: Instant::now() };
    let mut files = Files { manifest: Output::open(output, manifest::MANIFEST)?, metadata: BTreeMap::new() };
    let prepared = async {
        let totals = write_rows(store, run, output, &mut files, &mut keeper).await?;
        // Failures by class (retryable, permanent, qa): failed jobs are few, so read them.
        let failed = store.run_jobs(run, &JobFilter { state: Some(JobState::Failed), ..JobFilter::default() }).await?;
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        for job in &failed {
            *failures.entry(job.failure_class.map_or("unknown", |c| c.as_str()).to_string()).or_default() += 1;
        }
        let status = store.run_status(run).await?;
        let wall_seconds = status.last_change.map(|end| (end - status.run.created_at).as_seconds_f64().max(0.0));
        // Still the one writer? Checked last, right before the files are replaced.
        keeper.renew(true).await?;
        Ok::<_, ManifestError>(totals.finish(run_name, failures, wall_seconds))
    }
    .await;
    let summary = match prepared {
        Ok(summary) => summary,
        Err(error) => {
            files.abort().await;
            return Err(error);
        }
    };
    let mut written = vec![manifest::MANIFEST.to_string()];
    files.manifest.finish().await?;
    for (folder, metadata) in files.metadata {
        metadata.finish().await?;
        written.push(format!("{folder}{}", manifest::METADATA));
    }
    output.put(manifest::SUMMARY, Bytes::from(serde_json::to_string_pretty(&summary).expect("a summary serializes"))).await?;
    written.push(manifest::SUMMARY.to_string());
    // The one writer may remove what an earlier writer's crash left mid-upload.
    for rel in &written {
        let removed = output.remove_temporaries(rel).await?;
        if removed > 0 {
            tracing::info!(file = %rel, removed, "removed temporary files of an interrupted manifest write");
        }
    }
    Ok(summary)
}

async fn write_rows<S: Store>(store: &S, run: RunId, output: &Storage, files: &mut Files, keeper: &mut Keeper<'_, S>) -> Result<SummaryTotals, ManifestError> {
    let mut jobs = store.succeeded_jobs(run).await?;
    let mut totals = SummaryTotals::default();
    let mut chunk: Vec<ManifestRow> = Vec::with_capacity(LABEL_READS);
    loop {
        chunk.clear();
        while chunk.len() < LABEL_READS {
            let Some(job) = jobs.try_next().await? else { break };
            let row: ManifestRow =
                serde_json::from_str(&job.result).map_err(|e| ManifestError::BadResult { sample_id: job.sample_id.clone(), reason: e.to_string() })?;
            chunk.push(row);
        }
        if chunk.is_empty() {
            return Ok(totals);
        }
        keeper.renew(false).await?;
        let labels: Vec<_> = chunk.iter().map(|row| read_keypoints(output, row)).collect();
        let labels = futures_util::future::join_all(labels).await;
        for (row, keypoints) in chunk.iter().zip(labels) {
            totals.add(row);
            files.manifest.line(&serde_json::to_string(row).expect("a manifest row serializes")).await?;
            // Hugging Face's imagefolder takes split names from top-level folders (train/,
            // test/) and reads a metadata.jsonl inside each, with file names relative to it.
            let (folder, file_name) = match row.output.path.split_once('/') {
                Some((split, rest)) => (format!("{split}/"), rest.to_string()),
                None => (String::new(), row.output.path.clone()),
            };
            let meta = MetadataRow { file_name, sample_id: row.sample_id.clone(), variant: row.variant, prompt_set: row.prompt_set, keypoints: keypoints? };
            let file = match files.metadata.entry(folder) {
                std::collections::btree_map::Entry::Occupied(file) => file.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let file = Output::open(output, &format!("{}{}", slot.key(), manifest::METADATA))?;
                    slot.insert(file)
                }
            };
            file.line(&serde_json::to_string(&meta).expect("a metadata row serializes")).await?;
        }
    }
}

/// The keypoints of a row's copied label (none when the image has no label).
async fn read_keypoints(output: &Storage, row: &ManifestRow) -> Result<Vec<manifest::Keypoint>, ManifestError> {
    match &row.annotation {
        Some(a) => Ok(manifest::parse_label(&output.get(&a.path).await?, &a.path)?),
        None => Ok(Vec::new()),
    }
}
