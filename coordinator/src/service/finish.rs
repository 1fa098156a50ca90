//! Finished runs: their manifest is written once per set of final counts, by exactly one writer.
//! The write is claimed in the database ([`Store::claim_manifest`]: one conditional update on the
//! run, which also records the counts the files were last written for), so the reaper of every
//! replica, `status --wait` (the `WriteManifest` call) and a restarted coordinator never write the
//! same files at once, and an unchanged manifest is never written again. A claim lapses after
//! [`MANIFEST_CLAIM`] unless its writer renews it, so a writer that dies holds up no one for long.

use super::Coordinator;
use super::RunContext;
use crate::StoreError;
use crate::manifest::{self, Claim, ManifestError};
use crate::store::{ManifestClaim, ManifestCounts, Store};
use acufarm_core::RunId;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a manifest claim lasts without renewal (the writer renews it every third of that).
pub(crate) const MANIFEST_CLAIM: Duration = Duration::from_secs(60);

/// What [`Coordinator::write_manifest_once`] did.
#[allow(clippy::large_enum_variant)] // one value per manifest write
pub(crate) enum Written {
    /// This call wrote the files (and, for a finished run, emptied its staging).
    Now(acufarm_core::manifest::Summary),
    /// The files already match these counts; nothing was written.
    Current,
    /// Another writer holds the claim; ask again later.
    Busy,
}

/// A name for one write attempt, unique across replicas and restarts: a claim is never
/// re-entered, not even by another task of the same process.
fn writer_name() -> String {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let instance = INSTANCE.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{host}/{}/{nanos:x}", std::process::id())
    });
    format!("{instance}/{}", WRITES.fetch_add(1, Ordering::Relaxed))
}

impl<S: Store> Coordinator<S> {
    /// Writes the manifest of every touched run that has nothing queued or leased any more, once
    /// per set of final counts, and removes its leftover staging objects.
    pub(super) async fn finish_runs(&self) {
        let touched: Vec<RunId> = std::mem::take(&mut *self.inner.touched.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect();
        for run in touched {
            if let Err(error) = self.finish_run(run).await {
                tracing::warn!(run = run.0, "finishing the run: {error}; will retry");
                self.touch(run);
            }
        }
    }

    async fn finish_run(&self, run: RunId) -> Result<(), String> {
        // The common case, a run still in flight, is answered from the small partial indexes;
        // the full count below runs only once a run looks finished.
        if self.inner.store.has_unfinished(run).await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        let status = match self.inner.store.run_status(run).await {
            Ok(status) => status,
            Err(StoreError::RunNotFound { .. }) => return Ok(()),
            Err(error) => return Err(error.to_string()),
        };
        let counts = status.counts;
        if counts.queued > 0 || counts.leased > 0 {
            return Ok(());
        }
        let key = ManifestCounts::of(&counts);
        if self.inner.finished.lock().unwrap_or_else(|p| p.into_inner()).get(&run) == Some(&(key.succeeded, key.failed)) {
            return Ok(());
        }
        let context = self.run_context(run).await.map_err(|status| status.message().to_string())?;
        match self.write_manifest_once(run, &context, key, true).await.map_err(|e| e.to_string())? {
            Written::Now(summary) => {
                tracing::info!(run = %context.name, rows = summary.outputs, failed = counts.failed, "run finished; manifest written");
                self.inner
                    .events
                    .publish(&crate::events::Event::RunFinished {
                        run_id: run.0,
                        name: context.name.clone(),
                        succeeded: counts.succeeded,
                        failed: counts.failed,
                    })
                    .await;
            }
            Written::Current => {
                tracing::info!(run = %context.name, succeeded = counts.succeeded, failed = counts.failed, "manifest already written for these counts; not rewritten")
            }
            Written::Busy => {
                // Another writer's claim: look again next pass, in case that writer dies.
                self.touch(run);
                return Ok(());
            }
        }
        self.inner.finished.lock().unwrap_or_else(|p| p.into_inner()).insert(run, (key.succeeded, key.failed));
        Ok(())
    }

    /// Writes the manifest of `run` for `counts` unless it is already written for them or another
    /// writer is at it; `finished` (nothing queued or leased) also empties the run's staging, before
    /// the write is recorded, so a caller that finds the manifest current finds staging clean too.
    pub(crate) async fn write_manifest_once(&self, run: RunId, context: &RunContext, counts: ManifestCounts, finished: bool) -> Result<Written, ManifestError> {
        let store = &self.inner.store;
        let writer = writer_name();
        let now = chrono::Utc::now();
        let until = now + chrono::Duration::from_std(MANIFEST_CLAIM).unwrap_or(chrono::Duration::MAX);
        match store.claim_manifest(run, counts, &writer, until, now).await? {
            ManifestClaim::Current => return Ok(Written::Current),
            ManifestClaim::Busy { writer: other, until } => {
                tracing::debug!(run = %context.name, writer = %other, %until, "another writer holds the manifest claim");
                return Ok(Written::Busy);
            }
            ManifestClaim::Claimed => {}
        }
        let written = async {
            let summary = manifest::write_claimed(store, run, &context.name, &context.output, Claim { writer: &writer, ttl: MANIFEST_CLAIM }).await?;
            if finished {
                context.output.clean_staging(Some(&context.name)).await?;
            }
            Ok::<_, ManifestError>(summary)
        }
        .await;
        match written {
            Ok(summary) => {
                self.remember_qa(run, (counts.succeeded, counts.failed), &summary);
                if !store.end_manifest_claim(run, &writer, Some(counts)).await? {
                    tracing::warn!(run = %context.name, "the manifest claim lapsed while the files were replaced; another writer may write them again");
                }
                Ok(Written::Now(summary))
            }
            Err(error) => {
                if let Err(release) = store.end_manifest_claim(run, &writer, None).await {
                    tracing::warn!(run = %context.name, "cannot release the manifest claim after a failed write ({release}); it lapses in {} s", MANIFEST_CLAIM.as_secs());
                }
                Err(error)
            }
        }
    }

    /// Keeps the QA section of a manifest summary just written for `counts` (succeeded, failed).
    pub(crate) fn remember_qa(&self, run: RunId, counts: (u64, u64), summary: &acufarm_core::manifest::Summary) {
        let json = summary.qa.as_ref().map(|qa| serde_json::to_string(qa).unwrap_or_default()).unwrap_or_default();
        self.inner.qa_summaries.lock().unwrap_or_else(|p| p.into_inner()).insert(run, (counts, json));
    }

    /// The QA section of a finished run's manifest summary for its current `counts`: remembered
    /// from the write, else read once from the output root (e.g. after a coordinator restart).
    pub(crate) async fn qa_summary(&self, run: RunId, counts: (u64, u64), output: &acufarm_storage::Storage) -> String {
        if let Some((at, json)) = self.inner.qa_summaries.lock().unwrap_or_else(|p| p.into_inner()).get(&run)
            && *at == counts
        {
            return json.clone();
        }
        let Ok(bytes) = output.get(acufarm_core::manifest::SUMMARY).await else { return String::new() };
        let Ok(summary) = serde_json::from_slice::<acufarm_core::manifest::Summary>(&bytes) else { return String::new() };
        self.remember_qa(run, counts, &summary);
        self.inner.qa_summaries.lock().unwrap_or_else(|p| p.into_inner()).get(&run).map(|(_, json)| json.clone()).unwrap_or_default()
    }
}
