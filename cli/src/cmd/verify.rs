//! `acufarm verify OUTPUT`: re-hashes every output and annotation a run's manifest lists and
//! reports each problem by path — missing, changed, listed twice, present but not listed, or a
//! stray file: a temporary `#N` file of an upload cut short (object_store writes `key#N`, then
//! renames it, and hides such names from its listings, so the folder is read from disk here) or a
//! staging object a finished run should not have left.

use acufarm_core::manifest::{self, ManifestRow};
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Output root of a run (holding manifest.jsonl).
    output: PathBuf,
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

fn read_rows(path: &Path) -> anyhow::Result<Vec<(usize, ManifestRow)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}; pass the output root of a run, which holds {}", path.display(), manifest::MANIFEST))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map(|row| (i + 1, row)).map_err(|e| {
                anyhow::anyhow!("{} line {} is not a manifest row ({e}); the manifest is damaged, so rewrite it from the coordinator", path.display(), i + 1)
            })
        })
        .collect()
}

/// Every file under `dir`, as `/`-separated paths relative to `root`.
pub(crate) fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, root, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.insert(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rows = read_rows(&args.output.join(manifest::MANIFEST))?;
    let mut problems = Vec::new();
    let mut listed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (line, row) in &rows {
        for file in std::iter::once(&row.output).chain(row.annotation.as_ref()) {
            listed.entry(file.path.clone()).or_default().push(*line);
            let path = args.output.join(&file.path);
            match manifest::sha256_file(&path) {
                Err(_) => problems.push(Problem::Missing { path: file.path.clone(), line: *line }),
                Ok(actual) if actual != file.sha256 => {
                    problems.push(Problem::Changed { path: file.path.clone(), line: *line, expected: file.sha256.clone(), actual })
                }
                Ok(_) => {}
            }
        }
    }
    // Every output (and every variant's label copy) belongs to exactly one row.
    for (path, lines) in &listed {
        if lines.len() > 1 {
            problems.push(Problem::Duplicate { path: path.clone(), lines: lines.clone() });
        }
    }
    let mut present = BTreeSet::new();
    walk(&args.output, &args.output, &mut present).with_context(|| format!("cannot list {}", args.output.display()))?;
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
        eprintln!("verified {} outputs in {}: every file matches its manifest sha256", rows.len(), args.output.display());
        return Ok(());
    }
    let count = |kind: fn(&Problem) -> bool| problems.iter().filter(|p| kind(p)).count();
    Err(super::exit::ProblemsFound(format!(
        "{} problems in {} ({} missing, {} changed, {} duplicate, {} unlisted, {} stray); restore the listed files or resubmit their shards, and delete stray files",
        problems.len(),
        args.output.display(),
        count(|p| matches!(p, Problem::Missing { .. })),
        count(|p| matches!(p, Problem::Changed { .. })),
        count(|p| matches!(p, Problem::Duplicate { .. })),
        count(|p| matches!(p, Problem::Unlisted { .. })),
        count(|p| matches!(p, Problem::Stray { .. })),
    ))
    .into())
}
