//! `acufarm verify OUTPUT`: re-hashes every output and annotation a run's manifest lists and
//! reports each problem by path — missing, changed, listed twice, present but not listed, or a
//! stray file: a temporary `#N` file of an upload cut short (object_store writes `key#N`, then
//! renames it, and hides such names from its listings, so the folder is read from disk here) or a
//! staging object a finished run should not have left. A local folder is read from disk; an
//! `s3://` root through the storage layer the farm writes with (the `AWS_*` settings).

use acufarm_core::manifest::{self, ManifestRow};
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Output root of a run (holding manifest.jsonl): a folder, file:///… or s3://bucket/prefix.
    output: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(tag = "problem", rename_all = "snake_case")]
enum Problem {
    Missing { path: String, line: usize },
    Changed { path: String, line: usize, expected: String, actual: String },
    Duplicate { path: String, lines: Vec<usize> },
    Unlisted { path: String },
    Stray { path: String, reason: &'static str },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { path, line } => write!(f, "missing   {path} (manifest line {line})"),
            Self::Changed { path, line, expected, actual } => write!(f, "changed   {path} (manifest line {line}): sha256 {actual}, manifest says {expected}"),
            Self::Duplicate { path, lines } => write!(f, "duplicate {path} is listed on manifest lines {lines:?}"),
            Self::Unlisted { path } => write!(f, "unlisted  {path} is in the output but not in the manifest"),
            Self::Stray { path, reason } => write!(f, "stray     {path} is {reason}; delete it"),
        }
    }
}

/// Where the output lives.
enum Root {
    /// A folder, read from disk (so the `#N` files of interrupted uploads show).
    Local(PathBuf),
    /// An object store root, read through `acufarm-storage`.
    Store(acufarm_storage::Storage),
}

impl Root {
    fn open(arg: &str) -> anyhow::Result<Root> {
        if let Some(path) = arg.strip_prefix("file://") {
            return Ok(Root::Local(PathBuf::from(path)));
        }
        if arg.contains("://") {
            return Ok(Root::Store(acufarm_storage::Storage::open(arg)?));
        }
        Ok(Root::Local(PathBuf::from(arg)))
    }

    fn manifest(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<(String, String)> {
        let fix = format!("pass the output root of a run, which holds {}", manifest::MANIFEST);
        match self {
            Root::Local(dir) => {
                let path = dir.join(manifest::MANIFEST);
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}; {fix}", path.display()))?;
                Ok((path.display().to_string(), text))
            }
            Root::Store(storage) => {
                let shown = format!("{}/{}", storage.url().trim_end_matches('/'), manifest::MANIFEST);
                let bytes = runtime.block_on(storage.get(manifest::MANIFEST)).with_context(|| format!("cannot read {shown}; {fix}"))?;
                let text = String::from_utf8(bytes.to_vec()).with_context(|| format!("{shown} is not UTF-8 text; the manifest is damaged"))?;
                Ok((shown, text))
            }
        }
    }

    /// sha256 of each of `paths` (`None`: missing).
    fn hashes(&self, runtime: &tokio::runtime::Runtime, paths: &[String]) -> Vec<Option<String>> {
        match self {
            Root::Local(dir) => paths.iter().map(|p| manifest::sha256_file(&dir.join(p)).ok()).collect(),
            Root::Store(storage) => runtime.block_on(async {
                let mut out = Vec::with_capacity(paths.len());
                // A few requests at a time, in order.
                for chunk in paths.chunks(32) {
                    let mut tasks = Vec::with_capacity(chunk.len());
                    for path in chunk {
                        let (storage, path) = (storage.clone(), path.clone());
                        tasks.push(tokio::spawn(async move { storage.sha256(&path).await.ok() }));
                    }
                    for task in tasks {
                        out.push(task.await.ok().flatten());
                    }
                }
                out
            }),
        }
    }

    /// Every file present, and how many staging objects are left (counted apart on a store,
    /// whose listings leave them out).
    fn present(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<(BTreeSet<String>, usize)> {
        match self {
            Root::Local(dir) => {
                let present = acufarm_storage::list_folder(dir).with_context(|| format!("cannot list {}", dir.display()))?;
                Ok((present, 0))
            }
            Root::Store(storage) => {
                let listed = runtime.block_on(storage.list("")).with_context(|| format!("cannot list {}", storage.url()))?;
                let staging =
                    runtime.block_on(storage.staging_count()).with_context(|| format!("cannot list {}/{}", storage.url(), acufarm_storage::STAGING))?;
                Ok((listed.into_iter().collect(), staging))
            }
        }
    }

    fn shown(&self) -> String {
        match self {
            Root::Local(dir) => dir.display().to_string(),
            Root::Store(storage) => storage.url().to_string(),
        }
    }
}

fn parse_rows(shown: &str, text: &str) -> anyhow::Result<Vec<(usize, ManifestRow)>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map(|row| (i + 1, row))
                .map_err(|e| anyhow::anyhow!("{shown} line {} is not a manifest row ({e}); the manifest is damaged, so rewrite it from the coordinator", i + 1))
        })
        .collect()
}

/// Every file under `dir`, as `/`-separated paths relative to `root`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let root = Root::open(&args.output)?;
    let (shown, text) = root.manifest(&runtime)?;
    let rows = parse_rows(&shown, &text)?;
    let mut problems = Vec::new();
    let mut listed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut files = Vec::new();
    for (line, row) in &rows {
        for file in std::iter::once(&row.output).chain(row.annotation.as_ref()) {
            listed.entry(file.path.clone()).or_default().push(*line);
            files.push((*line, file));
        }
    }
    let paths: Vec<String> = files.iter().map(|(_, file)| file.path.clone()).collect();
    for ((line, file), actual) in files.iter().zip(root.hashes(&runtime, &paths)) {
        match actual {
            None => problems.push(Problem::Missing { path: file.path.clone(), line: *line }),
            Some(actual) if actual != file.sha256 => {
                problems.push(Problem::Changed { path: file.path.clone(), line: *line, expected: file.sha256.clone(), actual })
            }
            Some(_) => {}
        }
    }
    // Every output (and every variant's label copy) belongs to exactly one row.
    for (path, lines) in &listed {
        if lines.len() > 1 {
            problems.push(Problem::Duplicate { path: path.clone(), lines: lines.clone() });
        }
    }
    let (present, staging) = root.present(&runtime)?;
    if staging > 0 {
        problems.push(Problem::Stray {
            path: format!("{}/ ({staging} objects)", acufarm_storage::STAGING),
            reason: "staging objects left behind (a finished run leaves none)",
        });
    }
    for path in present {
        if acufarm_storage::is_temporary(&path) {
            problems.push(Problem::Stray { path, reason: "the temporary file of an upload cut short (a process died mid-write)" });
            continue;
        }
        if path.split('/').next() == Some(acufarm_storage::STAGING) {
            problems.push(Problem::Stray { path, reason: "a staging object left behind (a finished run leaves none)" });
            continue;
        }
        // acufarm's own files: the manifest, staging and files shipped with the spec.
        let is_own = [manifest::MANIFEST, manifest::SUMMARY, manifest::METADATA].contains(&path.as_str()) || acufarm_storage::is_reserved(&path);
        let is_output = path.rsplit_once('.').is_some_and(|(_, ext)| matches!(ext.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "json"));
        if !is_own && is_output && !listed.contains_key(&path) {
            problems.push(Problem::Unlisted { path });
        }
    }
    problems.sort();
    if args.json {
        println!("{}", serde_json::json!({ "outputs": rows.len(), "problems": problems }));
    } else {
        for p in &problems {
            println!("{p}");
        }
    }
    if problems.is_empty() {
        eprintln!("verified {} outputs in {}: every file matches its manifest sha256", rows.len(), root.shown());
        return Ok(());
    }
    let count = |kind: fn(&Problem) -> bool| problems.iter().filter(|p| kind(p)).count();
    Err(super::exit::ProblemsFound(format!(
        "{} problems in {} ({} missing, {} changed, {} duplicate, {} unlisted, {} stray); restore the listed files or resubmit their shards, and delete stray files",
        problems.len(),
        root.shown(),
        count(|p| matches!(p, Problem::Missing { .. })),
        count(|p| matches!(p, Problem::Changed { .. })),
        count(|p| matches!(p, Problem::Duplicate { .. })),
        count(|p| matches!(p, Problem::Unlisted { .. })),
        count(|p| matches!(p, Problem::Stray { .. })),
    ))
    .into())
}
