//! Dataset and output storage over the `object_store` crate: local filesystem (`file://`) and S3
//! (`s3://bucket/prefix`, configured by the usual `AWS_*` environment variables, e.g.
//! `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true` for an S3-compatible server).
//!
//! Paths are `/`-separated and relative to the root the URL names. Results are written to a
//! staging key first and committed (renamed) to their final key, so a reader never sees a partial
//! output and a crashed upload leaves only staging objects, which `clean_staging` removes.
//!
//! On `file://` roots object_store writes every object as `key#N` first and renames it to `key`
//! when the upload completes, so a process killed in between leaves `key#N` behind; its listings
//! hide such names ([`is_temporary`]). Staging cleanup and [`Storage::staging_count`] therefore
//! read the staging folder from the filesystem itself, and writes outside staging that a crash
//! must not litter (label copies) go through a staging file and a rename.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

/// Folder (under an output root) that holds uploads not yet committed.
pub const STAGING: &str = "_staging";
/// Root of files shipped with a run spec (scene images), `_acufarm/<run>/…`; not part of the outputs.
pub const SHIPPED: &str = "_acufarm";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("`{url}` is not a storage location ({reason}); use file:///absolute/path, file://relative/path or s3://bucket/prefix")]
    BadUrl { url: String, reason: String },
    #[error("cannot open {url}: {reason}; for S3 set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (and AWS_ENDPOINT_URL for S3-compatible servers)")]
    Open { url: String, reason: String },
    #[error("{path} does not exist in {root}; check the dataset layout and the run spec's paths")]
    NotFound { root: String, path: String },
    #[error("storage error at {root}/{path}: {reason}")]
    Io { root: String, path: String, reason: String },
    #[error(
        "refusing to clean the staging objects of run `{run}` in {root}: a run name is one non-empty path segment (no `/`, not `.` or `..`), so rename the run"
    )]
    BadRunName { root: String, run: String },
}

impl StorageError {
    /// Missing files and bad locations are permanent; other I/O may succeed on a retry.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}

/// How many objects a batch commit moves at once on S3 (each move is a copy plus a delete).
const COMMIT_CONCURRENCY: usize = 32;

/// Part size of an [`ObjectWriter`] (S3 parts must be at least 5 MiB).
const WRITER_PART: usize = 8 << 20;

/// An object being written in parts; see [`Storage::writer`].
pub struct ObjectWriter {
    inner: object_store::buffered::BufWriter,
    root: String,
    path: String,
}

impl ObjectWriter {
    fn io(&self, e: impl std::fmt::Display) -> StorageError {
        StorageError::Io { root: self.root.clone(), path: self.path.clone(), reason: e.to_string() }
    }

    pub async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        self.inner.put(bytes).await.map_err(|e| self.io(e))
    }

    /// Completes the upload: the object now exists whole.
    pub async fn finish(mut self) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt;
        self.inner.shutdown().await.map_err(|e| self.io(e))
    }

    /// Abandons the upload and removes its parts.
    pub async fn abort(mut self) -> Result<(), StorageError> {
        self.inner.abort().await.map_err(|e| self.io(e))
    }
}

/// One storage root.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The same store when it is the local filesystem, for batch renames in one blocking task.
    local: Option<Arc<object_store::local::LocalFileSystem>>,
    prefix: ObjectPath,
    url: String,
}

/// Every file under a local folder, relative to it and `/`-separated, read from disk itself (so
/// the `#N` temporaries object_store hides are listed too).
pub fn list_folder(dir: &std::path::Path) -> std::io::Result<std::collections::BTreeSet<String>> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut std::collections::BTreeSet<String>) -> std::io::Result<()> {
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
    let mut out = std::collections::BTreeSet::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Whether a relative path lies under one of acufarm's own folders (staging, shipped files).
pub fn is_reserved(rel: &str) -> bool {
    matches!(rel.split('/').next(), Some(STAGING | SHIPPED))
}

/// Whether a path names one of object_store's temporary upload files on the local filesystem:
/// a file name with `#` followed by digits only (`x.png#1`), the same rule object_store uses to
/// hide them from listings. A crash between its write and its rename leaves one behind.
pub fn is_temporary(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.split_once('#').is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
}

/// Root URL of the files shipped with run `run` under an output root.
pub fn shipped_url(output_url: &str, run: &str) -> String {
    format!("{}/{SHIPPED}/{run}", output_url.trim_end_matches('/'))
}

/// How long an S3 request is retried (transient errors, a refused or timed-out connection) before
/// it fails: `ACUFARM_S3_MAX_RETRIES` (default 10) and `ACUFARM_S3_RETRY_TIMEOUT_S` (default 180),
/// object_store's own defaults. A worker that should give up on a dead endpoint quickly (so its
/// jobs go to healthy workers) sets them low.
fn s3_retry() -> Result<object_store::RetryConfig, String> {
    fn var<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
        match std::env::var(name) {
            Ok(text) if !text.trim().is_empty() => {
                text.trim().parse().map(Some).map_err(|_| format!("{name} = `{text}` is not a whole number; set it to a count (retries) or seconds"))
            }
            _ => Ok(None),
        }
    }
    let mut retry = object_store::RetryConfig::default();
    if let Some(max) = var::<usize>("ACUFARM_S3_MAX_RETRIES")? {
        retry.max_retries = max;
    }
    if let Some(seconds) = var::<u64>("ACUFARM_S3_RETRY_TIMEOUT_S")? {
        retry.retry_timeout = std::time::Duration::from_secs(seconds);
    }
    Ok(retry)
}

impl Storage {
    /// Opens `file:///abs`, `file://relative` (to the working directory) or `s3://bucket/prefix`.
    /// A local root is created if missing.
    pub fn open(url: &str) -> Result<Self, StorageError> {
        Self::open_with(url, std::iter::empty::<(String, String)>())
    }

    /// Like `open`, with S3 settings given as `aws_*` keys (e.g. `aws_endpoint`, `aws_allow_http`)
    /// on top of the environment's.
    pub fn open_with(url: &str, s3_options: impl IntoIterator<Item = (String, String)>) -> Result<Self, StorageError> {
        let bad = |reason: &str| StorageError::BadUrl { url: url.to_string(), reason: reason.to_string() };
        let open_err = |e: &dyn std::fmt::Display| StorageError::Open { url: url.to_string(), reason: e.to_string() };
        if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(bad("the path is empty"));
            }
            let path = std::path::Path::new(rest);
            std::fs::create_dir_all(path).map_err(|e| open_err(&e))?;
            // fsync: an output the database records as committed must survive a machine crash,
            // as it would on S3.
            let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(path).map_err(|e| open_err(&e))?.with_fsync(true));
            return Ok(Self { store: store.clone(), local: Some(store), prefix: ObjectPath::default(), url: url.to_string() });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(s3_retry().map_err(|e| open_err(&e))?);
            for (key, value) in s3_options {
                let key = key.parse::<object_store::aws::AmazonS3ConfigKey>().map_err(|e| open_err(&e))?;
                builder = builder.with_config(key, value);
            }
            let store = builder.build().map_err(|e| open_err(&e))?;
            let prefix = ObjectPath::parse(prefix.trim_matches('/')).map_err(|e| bad(&e.to_string()))?;
            return Ok(Self { store: Arc::new(store), local: None, prefix, url: url.to_string() });
        }
        Err(bad("unknown scheme"))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, rel: &str) -> Result<ObjectPath, StorageError> {
        let rel = ObjectPath::parse(rel).map_err(|e| StorageError::Io { root: self.url.clone(), path: rel.to_string(), reason: e.to_string() })?;
        Ok(self.prefix.parts().chain(rel.parts()).collect())
    }

    fn rel(&self, key: &ObjectPath) -> Option<String> {
        key.prefix_match(&self.prefix).map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
    }

    fn io(&self, path: &str, e: object_store::Error) -> StorageError {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound { root: self.url.clone(), path: path.to_string() },
            other => StorageError::Io { root: self.url.clone(), path: path.to_string(), reason: other.to_string() },
        }
    }

    /// Every object under `under` (relative paths, sorted). Staging objects are left out.
    pub async fn list(&self, under: &str) -> Result<Vec<String>, StorageError> {
        let prefix = if under.is_empty() { self.prefix.clone() } else { self.key(under)? };
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await.map_err(|e| self.io(under, e))?;
        let mut out: Vec<String> = metas.iter().filter_map(|m| self.rel(&m.location)).filter(|p| !is_reserved(p)).collect();
        out.sort();
        Ok(out)
    }

    pub async fn get(&self, rel: &str) -> Result<Bytes, StorageError> {
        let key = self.key(rel)?;
        let result = self.store.get(&key).await.map_err(|e| self.io(rel, e))?;
        result.bytes().await.map_err(|e| self.io(rel, e))
    }

    pub async fn exists(&self, rel: &str) -> Result<bool, StorageError> {
        match self.store.head(&self.key(rel)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.io(rel, e)),
        }
    }

    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store.put(&self.key(rel)?, PutPayload::from_bytes(bytes)).await.map(|_| ()).map_err(|e| self.io(rel, e))
    }

    pub async fn delete(&self, rel: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.key(rel)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io(rel, e)),
        }
    }

    /// The staging key of one attempt of one job. One flat folder per run: no folder to create
    /// per upload, and a batch commit fsyncs one source folder.
    pub fn staging_key(run: &str, job: i64, attempt: i32) -> String {
        format!("{STAGING}/{run}/{job}.{attempt}")
    }

    /// Moves a staged object to its final key (replacing an earlier output of the same job).
    /// Committing an already-committed staging key is a no-op when the final object exists, so
    /// a commit retried after a crash is safe.
    pub async fn commit(&self, staging: &str, final_rel: &str) -> Result<(), StorageError> {
        match self.store.rename(&self.key(staging)?, &self.key(final_rel)?).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) if self.exists(final_rel).await? => Ok(()),
            Err(e) => Err(self.io(staging, e)),
        }
    }

    /// Commits a batch of staged objects, `(staging, final)` pairs, with the same meaning as
    /// [`Storage::commit`] for each; returns one result per pair, in order. On the local
    /// filesystem all renames run in one blocking task and each touched folder is fsynced once;
    /// on S3 up to 32 moves run at once.
    pub async fn commit_many(&self, moves: &[(&str, &str)]) -> Vec<Result<(), StorageError>> {
        let Some(local) = &self.local else {
            let mut results = Vec::with_capacity(moves.len());
            for chunk in moves.chunks(COMMIT_CONCURRENCY) {
                let commits: Vec<_> = chunk.iter().map(|(from, to)| self.commit(from, to)).collect();
                results.extend(futures::future::join_all(commits).await);
            }
            return results;
        };
        let paths = moves
            .iter()
            .map(|(from, to)| {
                let from_path = local.path_to_filesystem(&self.key(from)?).map_err(|e| self.io(from, e))?;
                let to_path = local.path_to_filesystem(&self.key(to)?).map_err(|e| self.io(to, e))?;
                Ok((from_path, to_path))
            })
            .collect::<Vec<Result<_, StorageError>>>();
        let done = tokio::task::spawn_blocking(move || local_commit(paths)).await;
        let outcomes = match done {
            Ok(outcomes) => outcomes,
            Err(e) => moves.iter().map(|_| Err(LocalFailure::Io(format!("the commit task failed: {e}")))).collect(),
        };
        outcomes
            .into_iter()
            .zip(moves)
            .map(|(outcome, (from, _))| {
                outcome.map_err(|failure| match failure {
                    LocalFailure::Prepared(error) => error,
                    LocalFailure::NotFound => StorageError::NotFound { root: self.url.clone(), path: from.to_string() },
                    LocalFailure::Io(reason) => StorageError::Io { root: self.url.clone(), path: from.to_string(), reason },
                })
            })
            .collect()
    }

    /// Starts writing an object too large to build in memory (a manifest): bytes are uploaded in
    /// parts as they come, and the object appears whole at `rel` only on
    /// [`ObjectWriter::finish`] (an abandoned writer leaves nothing at `rel`).
    pub fn writer(&self, rel: &str) -> Result<ObjectWriter, StorageError> {
        let key = self.key(rel)?;
        Ok(ObjectWriter {
            inner: object_store::buffered::BufWriter::with_capacity(self.store.clone(), key, WRITER_PART),
            root: self.url.clone(),
            path: rel.to_string(),
        })
    }

    /// Copies bytes from another root unchanged (labels, `map.txt`).
    pub async fn copy_from(&self, source: &Storage, rel_from: &str, rel_to: &str) -> Result<(), StorageError> {
        let bytes = source.get(rel_from).await?;
        self.put(rel_to, bytes).await
    }

    /// Removes every staging object of a run (or of all runs with `run = None`); returns how many.
    /// On the local filesystem the folder is read from disk, so object_store's temporary `#N`
    /// files of uploads cut short (which its listings hide) go too.
    pub async fn clean_staging(&self, run: Option<&str>) -> Result<usize, StorageError> {
        let under = match run {
            // An empty name would widen the prefix to every run's staging objects.
            Some(run) if run.is_empty() || run.contains('/') || run == "." || run == ".." => {
                return Err(StorageError::BadRunName { root: self.url.clone(), run: run.to_string() });
            }
            Some(run) => format!("{STAGING}/{run}"),
            None => STAGING.to_string(),
        };
        if let Some(dir) = self.local_path(&under)? {
            let removed = tokio::task::spawn_blocking(move || remove_tree(&dir)).await;
            return removed.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())).map_err(|reason| StorageError::Io {
                root: self.url.clone(),
                path: under,
                reason,
            });
        }
        let key = self.key(&under)?;
        let metas: Vec<_> = self.store.list(Some(&key)).try_collect().await.map_err(|e| self.io(&under, e))?;
        for meta in &metas {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.io(meta.location.as_ref(), e)),
            }
        }
        Ok(metas.len())
    }

    /// Number of staging objects left (a finished run leaves none), temporary `#N` files of
    /// interrupted uploads included on the local filesystem.
    pub async fn staging_count(&self) -> Result<usize, StorageError> {
        if let Some(dir) = self.local_path(STAGING)? {
            let counted = tokio::task::spawn_blocking(move || files_under(&dir)).await;
            return counted.map_err(|e| e.to_string()).and_then(|r| r.map(|files| files.len()).map_err(|e| e.to_string())).map_err(|reason| StorageError::Io {
                root: self.url.clone(),
                path: STAGING.into(),
                reason,
            });
        }
        let key = self.key(STAGING)?;
        let metas: Vec<_> = self.store.list(Some(&key)).try_collect().await.map_err(|e| self.io(STAGING, e))?;
        Ok(metas.len())
    }

    /// Copies bytes from another root unchanged, like [`Storage::copy_from`], without ever
    /// leaving a partial or temporary file beside `rel_to`: on the local filesystem the bytes are
    /// written (and fsynced) to a file named after `staging` (a staging key of the run) and then
    /// renamed into place, so a crash at any point leaves at most a staging file, which
    /// [`Storage::clean_staging`] removes. On S3 a put is atomic and goes straight to `rel_to`.
    pub async fn copy_from_staged(&self, source: &Storage, rel_from: &str, rel_to: &str, staging: &str) -> Result<(), StorageError> {
        let bytes = source.get(rel_from).await?;
        self.put_staged(rel_to, bytes, staging).await
    }

    /// Writes `bytes` to `rel_to` the way [`Storage::copy_from_staged`] copies: through a temporary
    /// file beside the staging key `staging`, so a crash leaves debris only where the run's staging
    /// cleanup removes it.
    pub async fn put_staged(&self, rel_to: &str, bytes: Bytes, staging: &str) -> Result<(), StorageError> {
        let (Some(temp_base), Some(to)) = (self.local_path(staging)?, self.local_path(rel_to)?) else {
            return self.put(rel_to, bytes).await;
        };
        let written = tokio::task::spawn_blocking(move || local_put_via(&temp_base, &to, &bytes)).await;
        written.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())).map_err(|reason| StorageError::Io {
            root: self.url.clone(),
            path: rel_to.to_string(),
            reason,
        })
    }

    /// Removes the temporary `#N` files object_store left beside `rel` (uploads of it cut short
    /// by a crash); returns how many. Only the one writer of `rel` may call this (a concurrent
    /// upload's temporary file would go too). Nothing to do on S3, whose uploads are invisible
    /// until complete.
    pub async fn remove_temporaries(&self, rel: &str) -> Result<usize, StorageError> {
        let Some(path) = self.local_path(rel)? else { return Ok(0) };
        let removed = tokio::task::spawn_blocking(move || remove_temporaries_of(&path)).await;
        removed.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())).map_err(|reason| StorageError::Io {
            root: self.url.clone(),
            path: rel.to_string(),
            reason,
        })
    }

    /// The filesystem path of `rel` on a local root; `None` on S3.
    fn local_path(&self, rel: &str) -> Result<Option<std::path::PathBuf>, StorageError> {
        let Some(local) = &self.local else { return Ok(None) };
        local.path_to_filesystem(&self.key(rel)?).map(Some).map_err(|e| self.io(rel, e))
    }

    /// sha256 of an object's bytes.
    pub async fn sha256(&self, rel: &str) -> Result<String, StorageError> {
        Ok(acufarm_core::manifest::sha256_bytes(&self.get(rel).await?))
    }
}

/// Every file under `dir` (none when it does not exist).
fn files_under(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() { folders.push(entry.path()) } else { files.push(entry.path()) }
        }
    }
    Ok(files)
}

/// Removes every file under `dir`, then the folders left empty; returns how many files went. A
/// folder that gained a file meanwhile (a late upload) stays.
fn remove_tree(dir: &std::path::Path) -> std::io::Result<usize> {
    let files = files_under(dir)?;
    for file in &files {
        if let Err(e) = std::fs::remove_file(file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e);
        }
    }
    let mut folders: Vec<std::path::PathBuf> = files.iter().filter_map(|f| f.parent().map(|p| p.to_path_buf())).collect();
    folders.push(dir.to_path_buf());
    // Deepest first, so a parent is tried after its children.
    folders.sort_by_key(|f| std::cmp::Reverse(f.components().count()));
    folders.dedup();
    for folder in folders.iter().filter(|f| f.starts_with(dir)) {
        let _ = std::fs::remove_dir(folder);
    }
    Ok(files.len())
}

/// Writes `bytes` to a new file beside `temp_base` (`<base>.copy<N>`, never an existing file, so
/// two writers of the same key cannot share one), fsyncs it, renames it to `to` and fsyncs the
/// destination folder.
fn local_put_via(temp_base: &std::path::Path, to: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{ErrorKind, Write};
    if let Some(parent) = temp_base.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let (mut file, temp) = (1..)
        .map(|n| {
            let mut name = temp_base.as_os_str().to_owned();
            name.push(format!(".copy{n}"));
            let temp = std::path::PathBuf::from(name);
            std::fs::File::options().write(true).create_new(true).open(&temp).map(|file| (file, temp))
        })
        .find(|opened| !matches!(opened, Err(e) if e.kind() == ErrorKind::AlreadyExists))
        .expect("an unbounded range")?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    let moved = written.and_then(|()| {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&temp, to)
    });
    if let Err(e) = moved {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    match to.parent() {
        Some(parent) => std::fs::File::open(parent).and_then(|dir| dir.sync_all()),
        None => Ok(()),
    }
}

/// Removes `path#N` files beside `path`.
fn remove_temporaries_of(path: &std::path::Path) -> std::io::Result<usize> {
    let (Some(folder), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return Ok(0) };
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else { continue };
        if file_name.strip_prefix(name).and_then(|rest| rest.strip_prefix('#')).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

enum LocalFailure {
    /// The key could not be mapped to a path.
    Prepared(StorageError),
    /// Neither the staged nor the final file exists.
    NotFound,
    Io(String),
}

/// Renames staged files to their final paths (creating folders as needed), then fsyncs every
/// folder that gained or lost an entry, once. A missing staged file whose final file exists was
/// committed before (a retried commit) and counts as done.
fn local_commit(paths: Vec<Result<(std::path::PathBuf, std::path::PathBuf), StorageError>>) -> Vec<Result<(), LocalFailure>> {
    use std::collections::HashMap;
    use std::io::ErrorKind;
    let mut touched: HashMap<std::path::PathBuf, Vec<usize>> = HashMap::new();
    let mut outcomes: Vec<Result<(), LocalFailure>> = Vec::with_capacity(paths.len());
    for (index, paths) in paths.into_iter().enumerate() {
        let (from, to) = match paths {
            Ok(paths) => paths,
            Err(error) => {
                outcomes.push(Err(LocalFailure::Prepared(error)));
                continue;
            }
        };
        let moved = match std::fs::rename(&from, &to) {
            Err(e) if e.kind() == ErrorKind::NotFound && from.exists() => match to.parent().map(std::fs::create_dir_all) {
                Some(Err(e)) => Err(e),
                _ => std::fs::rename(&from, &to),
            },
            other => other,
        };
        let outcome = match moved {
            Ok(()) => {
                for dir in [from.parent(), to.parent()].into_iter().flatten() {
                    touched.entry(dir.to_path_buf()).or_default().push(index);
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if to.exists() {
                    Ok(())
                } else {
                    Err(LocalFailure::NotFound)
                }
            }
            Err(e) => Err(LocalFailure::Io(e.to_string())),
        };
        outcomes.push(outcome);
    }
    for (dir, indices) in touched {
        if let Err(e) = std::fs::File::open(&dir).and_then(|dir| dir.sync_all()) {
            for index in indices {
                outcomes[index] = Err(LocalFailure::Io(format!("cannot fsync {}: {e}", dir.display())));
            }
        }
    }
    outcomes
}
