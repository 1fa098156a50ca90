//! Model bundles: `bundle.toml` plus the ONNX graphs it names (format in `models/BUNDLE.md`).
//!
//! Loading checks what can be checked without ONNX Runtime (keys, files, sha256s, the graph set
//! the declared features need); `check_signature` compares a declared signature with the one a
//! session reports, so a bundle that disagrees with its graphs is refused at start-up.

use acufarm_core::manifest::sha256_file;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read bundle file {path}: {reason}; pass --bundle a directory holding bundle.toml (e.g. models/tiny/fc)")]
    Read { path: PathBuf, reason: String },
    #[error("bundle file {path} is not valid: {reason}; re-export the bundle with models/export.py")]
    Manifest { path: PathBuf, reason: String },
    #[error("bundle {bundle}: {file} is missing; copy the whole bundle directory again")]
    MissingFile { bundle: PathBuf, file: PathBuf },
    #[error(
        "bundle {bundle}: sha256 of {file} is {actual} but bundle.toml says {expected}; the file is corrupt or from another export, so copy the bundle again"
    )]
    ShaMismatch { bundle: PathBuf, file: PathBuf, expected: String, actual: String },
    #[error("bundle {bundle}: graph {file} does not match bundle.toml: {reason}; re-export the bundle with models/export.py")]
    Signature { bundle: PathBuf, file: PathBuf, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IcLight {
    None,
    Fc,
    Fbc,
}

impl IcLight {
    /// Latent channels the UNet expects: 4 of the noisy latent plus the concat.
    pub fn unet_channels(self, latent_channels: usize) -> usize {
        latent_channels
            * match self {
                Self::None => 1,
                Self::Fc => 2,
                Self::Fbc => 3,
            }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub file: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Symbolic(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<Dim>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphEntry {
    pub file: PathBuf,
    pub sha256: String,
    #[serde(default)]
    pub external_data: Vec<FileEntry>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub family: String,
    pub iclight: IcLight,
    pub ip_adapter: bool,
    pub latent_scale: f32,
    pub latent_channels: usize,
    pub vae_scale_factor: usize,
    pub unet_in_channels: usize,
    pub text_max_length: usize,
    pub cross_attention_dim: usize,
    pub ip_tokens: usize,
    pub image_encoder_size: usize,
    pub precision: String,
    pub random_weights: bool,
    pub tokenizer: FileEntry,
    pub graphs: BTreeMap<String, GraphEntry>,
}

/// The graphs the pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Graph {
    TextEncoder,
    VaeEncoder,
    VaeDecoder,
    Unet,
    ImageEncoder,
    ImageProj,
}

impl Graph {
    pub const ALL: [Graph; 6] = [Self::TextEncoder, Self::VaeEncoder, Self::VaeDecoder, Self::Unet, Self::ImageEncoder, Self::ImageProj];

    pub fn key(self) -> &'static str {
        match self {
            Self::TextEncoder => "text_encoder",
            Self::VaeEncoder => "vae_encoder",
            Self::VaeDecoder => "vae_decoder",
            Self::Unet => "unet",
            Self::ImageEncoder => "image_encoder",
            Self::ImageProj => "image_proj",
        }
    }

    /// Input and output names the pipeline feeds and reads.
    pub fn io_names(self, ip_adapter: bool) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Self::TextEncoder => (&["input_ids"], &["last_hidden_state"]),
            Self::VaeEncoder => (&["sample"], &["latent_mean"]),
            Self::VaeDecoder => (&["latent_sample"], &["sample"]),
            Self::Unet if ip_adapter => (&["sample", "timestep", "encoder_hidden_states", "ip_tokens", "ip_scale"], &["out_sample"]),
            Self::Unet => (&["sample", "timestep", "encoder_hidden_states"], &["out_sample"]),
            Self::ImageEncoder => (&["pixel_values"], &["image_embeds"]),
            Self::ImageProj => (&["image_embeds"], &["ip_tokens"]),
        }
    }

    pub fn needed(self, ip_adapter: bool) -> bool {
        ip_adapter || !matches!(self, Self::ImageEncoder | Self::ImageProj)
    }
}

/// A validated bundle on disk.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// sha256 of bundle.toml, which itself lists every file's sha256: the bundle's identity.
    pub sha256: String,
}

impl Bundle {
    /// Reads `dir/bundle.toml`, checks its consistency, the presence of every file and (when
    /// `verify_hashes`) every sha256.
    pub fn load(dir: &Path, verify_hashes: bool) -> Result<Self, BundleError> {
        let toml_path = dir.join("bundle.toml");
        let text = std::fs::read(&toml_path).map_err(|e| BundleError::Read { path: toml_path.clone(), reason: e.to_string() })?;
        let manifest_err = |reason: String| BundleError::Manifest { path: toml_path.clone(), reason };
        let manifest: Manifest = toml::from_str(std::str::from_utf8(&text).map_err(|_| manifest_err("not UTF-8".into()))?)
            .map_err(|e| manifest_err(e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")))?;
        if manifest.format != 1 {
            return Err(manifest_err(format!("format {} is not supported (this build reads format 1)", manifest.format)));
        }
        if manifest.family != "sd15" {
            return Err(manifest_err(format!("family `{}` is not supported (only sd15)", manifest.family)));
        }
        let want_channels = manifest.iclight.unet_channels(manifest.latent_channels);
        if manifest.unet_in_channels != want_channels {
            return Err(manifest_err(format!("unet_in_channels = {} but iclight = {:?} needs {want_channels}", manifest.unet_in_channels, manifest.iclight)));
        }
        for graph in Graph::ALL {
            if graph.needed(manifest.ip_adapter) && !manifest.graphs.contains_key(graph.key()) {
                return Err(manifest_err(format!("[graphs.{}] is missing", graph.key())));
            }
        }
        let bundle = Self { dir: dir.to_path_buf(), sha256: acufarm_core::manifest::sha256_bytes(&text), manifest };
        for entry in bundle.files() {
            let path = dir.join(&entry.file);
            if !path.is_file() {
                return Err(BundleError::MissingFile { bundle: dir.to_path_buf(), file: path });
            }
            if verify_hashes {
                let actual = sha256_file(&path).map_err(|e| BundleError::Read { path: path.clone(), reason: e.to_string() })?;
                if !actual.eq_ignore_ascii_case(&entry.sha256) {
                    return Err(BundleError::ShaMismatch { bundle: dir.to_path_buf(), file: path, expected: entry.sha256.clone(), actual });
                }
            }
        }
        Ok(bundle)
    }

    /// Every file the bundle consists of, with its expected hash.
    pub fn files(&self) -> Vec<FileEntry> {
        let mut files = vec![self.manifest.tokenizer.clone()];
        for graph in self.manifest.graphs.values() {
            files.push(FileEntry { file: graph.file.clone(), sha256: graph.sha256.clone() });
            files.extend(graph.external_data.iter().cloned());
        }
        files
    }

    pub fn graph(&self, graph: Graph) -> Option<&GraphEntry> {
        self.manifest.graphs.get(graph.key())
    }

    pub fn path(&self, file: &Path) -> PathBuf {
        self.dir.join(file)
    }

    pub fn signature_error(&self, graph: Graph, reason: String) -> BundleError {
        let file = self.graph(graph).map(|g| self.path(&g.file)).unwrap_or_else(|| self.dir.join(graph.key()));
        BundleError::Signature { bundle: self.dir.clone(), file, reason }
    }
}

/// A tensor as ONNX Runtime reports it: name, element type and dims (−1 where dynamic).
#[derive(Debug, Clone, PartialEq)]
pub struct ActualTensor {
    pub name: String,
    pub dtype: String,
    pub dims: Vec<i64>,
}

/// Compares declared against actual tensors: same names in any order, same dtype, same rank, and
/// equal sizes where both sides fix them. Then checks the names the pipeline needs are present.
pub fn check_signature(declared: &[TensorSpec], actual: &[ActualTensor], needed: &[&str], side: &str) -> Result<(), String> {
    for want in declared {
        let got =
            actual.iter().find(|t| t.name == want.name).ok_or_else(|| format!("{side} `{}` is declared but the graph has {}", want.name, names(actual)))?;
        if got.dtype != want.dtype {
            return Err(format!("{side} `{}` is {} in the graph but {} in bundle.toml", want.name, got.dtype, want.dtype));
        }
        if got.dims.len() != want.shape.len() {
            return Err(format!("{side} `{}` has rank {} in the graph but {} in bundle.toml", want.name, got.dims.len(), want.shape.len()));
        }
        for (axis, (g, w)) in got.dims.iter().zip(&want.shape).enumerate() {
            if let Dim::Fixed(w) = w
                && *g >= 0
                && g != w
            {
                return Err(format!("{side} `{}` axis {axis} is {g} in the graph but {w} in bundle.toml", want.name));
            }
        }
    }
    if let Some(extra) = actual.iter().find(|t| !declared.iter().any(|d| d.name == t.name)) {
        return Err(format!("the graph has {side} `{}` that bundle.toml does not declare", extra.name));
    }
    if let Some(missing) = needed.iter().find(|n| !actual.iter().any(|t| t.name == **n)) {
        return Err(format!("the pipeline needs {side} `{missing}` but the graph has {}", names(actual)));
    }
    Ok(())
}

fn names(tensors: &[ActualTensor]) -> String {
    let list: Vec<String> = tensors.iter().map(|t| format!("`{}`", t.name)).collect();
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dtype: &str, shape: Vec<Dim>) -> TensorSpec {
        TensorSpec { name: name.into(), dtype: dtype.into(), shape }
    }
    fn actual(name: &str, dtype: &str, dims: Vec<i64>) -> ActualTensor {
        ActualTensor { name: name.into(), dtype: dtype.into(), dims }
    }

    #[test]
    fn signature_table() {
        let declared =
            vec![spec("sample", "float32", vec![Dim::Symbolic("batch".into()), Dim::Fixed(8), Dim::Symbolic("h".into()), Dim::Symbolic("w".into())])];
        let ok = vec![actual("sample", "float32", vec![-1, 8, -1, -1])];
        assert_eq!(check_signature(&declared, &ok, &["sample"], "input"), Ok(()));
        let cases = [
            (vec![actual("x", "float32", vec![-1, 8, -1, -1])], "declared but the graph has `x`"),
            (vec![actual("sample", "float16", vec![-1, 8, -1, -1])], "float16 in the graph"),
            (vec![actual("sample", "float32", vec![-1, 8, -1])], "rank 3"),
            (vec![actual("sample", "float32", vec![-1, 12, -1, -1])], "axis 1 is 12"),
            (vec![actual("sample", "float32", vec![-1, 8, -1, -1]), actual("extra", "float32", vec![1])], "does not declare"),
        ];
        for (got, want) in cases {
            let err = check_signature(&declared, &got, &["sample"], "input").unwrap_err();
            assert!(err.contains(want), "wanted `{want}` in `{err}`");
        }
        let err = check_signature(&declared, &ok, &["sample", "timestep"], "input").unwrap_err();
        assert!(err.contains("needs input `timestep`"), "{err}");
    }

    #[test]
    fn sha_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
