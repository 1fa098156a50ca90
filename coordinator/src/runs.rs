//! What turns a run spec into jobs, and a staged output into a committed one: shared by the
//! embedded runner and the gRPC service so both queue, name and commit jobs the same way.

use crate::store::{JobRecord, NewJob, NewRun, Resubmission};
use acufarm_core::manifest::{BundleRef, FileRef, ManifestRow};
use acufarm_core::qa::QaRecord;
use acufarm_core::resolve::Resolution;
use acufarm_core::{JobSpec, ResolveError, RunSpec};
use acufarm_storage::{Storage, StorageError};
use std::collections::{BTreeMap, HashMap};

pub use acufarm_core::resolve::UNRESOLVED_SHARD;

/// Unique key of a job within its run: the sample id, with `/v{n}` for variants after the first.
pub fn job_key(job: &JobSpec) -> String {
    if job.variant == 0 { job.sample_id.clone() } else { format!("{}/v{}", job.sample_id, job.variant) }
}

/// The spec a job gets when its image cannot be resolved: it fails permanently on its first
/// attempt with `error`, so it shows among the run's failures instead of vanishing.
pub fn unresolved_spec(rejected: &ResolveError) -> serde_json::Value {
    let ResolveError::SampleId { path, .. } = rejected;
    serde_json::json!({ "error": rejected.to_string(), "source": path })
}

/// The input path a stored job spec renders (either kind of spec).
pub fn spec_source(spec: &serde_json::Value) -> Option<&str> {
    spec.get("source").and_then(|source| source.as_str())
}

/// The run to insert for a resolution: one job per resolved image (and variant), one per
/// unparseable image, shards in key order.
pub fn plan_run(spec: &RunSpec, spec_text: &str, resolution: &Resolution, bundle_sha256: &str) -> Result<NewRun, serde_json::Error> {
    let mut jobs: Vec<NewJob> = resolution
        .jobs
        .iter()
        .map(|job| Ok(NewJob { shard_key: job.shard.clone(), sample_id: job_key(job), spec: serde_json::to_value(job)? }))
        .collect::<Result<_, serde_json::Error>>()?;
    for rejected in &resolution.rejected {
        let ResolveError::SampleId { path, .. } = rejected;
        jobs.push(NewJob { shard_key: UNRESOLVED_SHARD.into(), sample_id: path.clone(), spec: unresolved_spec(rejected) });
    }
    let mut shards: Vec<String> = jobs.iter().map(|job| job.shard_key.clone()).collect();
    shards.sort();
    shards.dedup();
    Ok(NewRun {
        name: spec.run.name.clone(),
        spec: spec_text.to_string(),
        priority: spec.run.priority,
        bundle_sha256: bundle_sha256.to_string(),
        max_lost: spec.retry.max_lost,
        shards,
        jobs,
    })
}

/// New specs for failed jobs from a fresh resolution, matched by input path and variant: a job
/// whose file now resolves gets its new spec; one that still does not gets the reason again.
/// Returns the resubmissions and how many of them are still unresolved.
pub fn re_resolve(failed: &[JobRecord], resolution: &Resolution) -> Result<(Vec<Resubmission>, usize), serde_json::Error> {
    let mut resolved: HashMap<(&str, u32), &JobSpec> = HashMap::new();
    for job in &resolution.jobs {
        resolved.insert((job.source.as_str(), job.variant), job);
    }
    let rejected: HashMap<&str, &ResolveError> = resolution
        .rejected
        .iter()
        .map(|rejected| {
            let ResolveError::SampleId { path, .. } = rejected;
            (path.as_str(), rejected)
        })
        .collect();
    let mut out = Vec::with_capacity(failed.len());
    let mut unresolved = 0;
    for record in failed {
        let spec: serde_json::Value = serde_json::from_str(&record.spec)?;
        let source = spec_source(&spec).unwrap_or(record.sample_id.as_str());
        let variant = spec.get("variant").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        let spec = match (resolved.get(&(source, variant)), rejected.get(source)) {
            (Some(job), _) => serde_json::to_value(job)?,
            (None, Some(rejected)) => {
                unresolved += 1;
                unresolved_spec(rejected)
            }
            (None, None) => {
                unresolved += 1;
                serde_json::json!({
                    "error": format!("{source} is no longer part of the run (deleted, or left out by the spec's filters); restore it or ignore this failure"),
                    "source": source,
                })
            }
        };
        out.push(Resubmission { job: record.job, spec, regenerate: false });
    }
    Ok((out, unresolved))
}

/// A staged output as its worker reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedOutput {
    pub staging_key: String,
    pub sha256: String,
    pub source_sha256: String,
    pub timings: BTreeMap<String, f64>,
    /// The QA gate's checks, one per rendered qa_try; the last one is the committed output's.
    pub qa: Vec<QaRecord>,
}

/// Who produced an output, for its manifest row.
#[derive(Debug, Clone)]
pub struct Producer<'a> {
    pub run: &'a str,
    pub bundle: BundleRef,
    pub worker: &'a str,
    pub execution_provider: &'a str,
    pub attempt: i32,
}

/// How many labels a batch commit copies at once.
const LABEL_CONCURRENCY: usize = 16;

/// One staged output to commit: the job it renders, what its worker reported, who made it.
pub struct Commit<'a> {
    pub job: &'a JobSpec,
    pub staged: StagedOutput,
    pub producer: Producer<'a>,
}

/// Moves a staged output to its final key (the dataset layout restored), copies its label beside
/// it byte-for-byte and returns its manifest row. Safe to repeat: a second commit of the same
/// attempt finds the object already moved only if it was lost, and then fails with NotFound.
pub async fn commit_output(
    input: &Storage,
    output: &Storage,
    job: &JobSpec,
    staged: &StagedOutput,
    producer: Producer<'_>,
) -> Result<ManifestRow, StorageError> {
    let commit = Commit { job, staged: staged.clone(), producer };
    commit_outputs(input, output, vec![commit]).await.pop().expect("one result per commit")
}

/// [`commit_output`] for a batch: all staged objects are moved in one storage call
/// ([`Storage::commit_many`]), then labels are copied a few at a time. One result per commit,
/// in order.
pub async fn commit_outputs(input: &Storage, output: &Storage, commits: Vec<Commit<'_>>) -> Vec<Result<ManifestRow, StorageError>> {
    let moves: Vec<(&str, &str)> = commits.iter().map(|c| (c.staged.staging_key.as_str(), c.job.output.as_str())).collect();
    let moved = output.commit_many(&moves).await;
    let mut rows = Vec::with_capacity(commits.len());
    let mut pending = commits.into_iter().zip(moved).peekable();
    while pending.peek().is_some() {
        let chunk: Vec<_> = pending.by_ref().take(LABEL_CONCURRENCY).map(|(commit, moved)| finish_commit(input, output, commit, moved)).collect();
        rows.extend(futures_util::future::join_all(chunk).await);
    }
    rows
}

/// Copies the label of a moved output and builds its manifest row.
async fn finish_commit(input: &Storage, output: &Storage, commit: Commit<'_>, moved: Result<(), StorageError>) -> Result<ManifestRow, StorageError> {
    moved?;
    let job = commit.job;
    let annotation = match (&job.label, &job.output_label) {
        (Some(label), Some(out_label)) => {
            // Through a file in the attempt's staging folder: a crash mid-copy leaves staging
            // debris (removed with the run's staging), never a temporary file beside the labels.
            output.copy_from_staged(input, label, out_label, &format!("{}.label", commit.staged.staging_key)).await?;
            Some(FileRef { path: out_label.to_string(), sha256: output.sha256(out_label).await? })
        }
        _ => None,
    };
    Ok(manifest_row(job, commit.staged, commit.producer, annotation))
}

fn manifest_row(job: &JobSpec, staged: StagedOutput, producer: Producer<'_>, annotation: Option<FileRef>) -> ManifestRow {
    // An output that passed QA on a re-generation was rendered with that try's seed and draws.
    let k = staged.qa.last().map_or(0, |r| r.qa_try.saturating_sub(job.qa_try));
    let retried = if k > 0 { job.with_qa_retry(k as usize) } else { None };
    let job = retried.as_ref().unwrap_or(job);
    ManifestRow {
        run: producer.run.to_string(),
        shard: job.shard.clone(),
        sample_id: job.sample_id.clone(),
        variant: job.variant,
        qa_try: job.qa_try,
        reseed: job.reseed,
        source: FileRef { path: job.source.clone(), sha256: staged.source_sha256 },
        output: FileRef { path: job.output.clone(), sha256: staged.sha256 },
        annotation,
        prompt_set: job.prompt_set,
        prompt: job.prompt.clone(),
        negative: job.negative.clone(),
        seed: job.seed,
        scene: job.scene.clone(),
        params: job.params.clone(),
        bundle: producer.bundle,
        worker: producer.worker.to_string(),
        execution_provider: producer.execution_provider.to_string(),
        attempt: producer.attempt,
        timings: staged.timings,
        qa: staged.qa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acufarm_core::qa::QaVerdict;
    use std::path::Path;

    fn check(qa_try: u32, seed: u64, verdict: QaVerdict) -> QaRecord {
        QaRecord {
            qa_try,
            seed,
            verdict,
            reason: None,
            drift_px: BTreeMap::new(),
            max_drift_px: None,
            inter_ocular_px: None,
            change_outside_face: 20.0,
            source_points: BTreeMap::new(),
            output_points: BTreeMap::new(),
            source_size: None,
            output_size: None,
        }
    }

    #[test]
    fn a_row_committed_after_qa_retries_carries_that_tries_seed_and_every_check() {
        let text = format!("{}\n[qa]\nmax_drift_px = 10.0\nmax_retries = 2\n", include_str!("../../examples/acusim.toml"));
        let spec = RunSpec::parse(&text, Path::new("x.toml")).unwrap();
        let job = acufarm_core::resolve::resolve_job(&spec, &spec.grammar().unwrap(), "train/image/img_512/M_Asher_N_HD_0017.png", 0, 0).unwrap();
        let producer =
            || Producer { run: "r", bundle: BundleRef { name: "b".into(), sha256: "0".repeat(64) }, worker: "w", execution_provider: "cpu", attempt: 1 };
        let staged =
            |qa: Vec<QaRecord>| StagedOutput { staging_key: "k".into(), sha256: "1".repeat(64), source_sha256: "2".repeat(64), timings: BTreeMap::new(), qa };
        let third = job.with_qa_retry(2).unwrap();
        let checks =
            vec![check(0, job.seed, QaVerdict::Fail), check(1, job.with_qa_retry(1).unwrap().seed, QaVerdict::Fail), check(2, third.seed, QaVerdict::Pass)];
        let row = manifest_row(&job, staged(checks.clone()), producer(), None);
        assert_eq!((row.qa_try, row.seed, &row.params, &row.scene), (2, third.seed, &third.params, &third.scene));
        assert_eq!(row.qa, checks, "every try is recorded");
        // Passed on the first render (or no gate): the job's own draws.
        let row = manifest_row(&job, staged(vec![check(0, job.seed, QaVerdict::Pass)]), producer(), None);
        assert_eq!((row.qa_try, row.seed), (0, job.seed));
        let row = manifest_row(&job, staged(Vec::new()), producer(), None);
        assert_eq!((row.qa_try, row.seed, row.qa.len()), (0, job.seed, 0));
    }
}
