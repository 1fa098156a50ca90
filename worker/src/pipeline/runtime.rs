//! ONNX Runtime: finding the library, execution providers, and sessions.
//!
//! Library search order (first hit wins):
//! 1. `$ORT_DYLIB_PATH` (a file);
//! 2. `libonnxruntime.so*` beside the `acufarm` executable;
//! 3. `$ACUFARM_HOME/onnxruntime/` (default `~/.cache/acufarm/onnxruntime/`), where `scripts/setup.sh`
//!    unpacks the `onnxruntime==1.31.1` wheel's library;
//! 4. the system's dynamic-loader path (`libonnxruntime.so`).
//!
//! Execution providers are registered in the order given with `error_on_failure`, so asking for a
//! GPU provider that cannot start is an error, never a silent CPU run.

use crate::pipeline::bundle::ActualTensor;
use ort::environment::Environment;
use ort::ep;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library not found (looked in {looked}); run scripts/setup.sh or set ORT_DYLIB_PATH to libonnxruntime.so")]
    NotFound { looked: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}; point ORT_DYLIB_PATH at libonnxruntime.so of version 1.31")]
    Load { path: PathBuf, reason: String },
    #[error("unknown execution provider `{0}`; choose from tensorrt, cuda, cpu (e.g. --ep cuda,cpu)")]
    UnknownEp(String),
    #[error("execution provider `{0}` is not compiled into this build; rebuild acufarm with `--features {0}`")]
    NotCompiled(&'static str),
    #[error(
        "the {ep} execution provider could not start for {graph}: {reason}; install onnxruntime-gpu 1.31 with its CUDA/TensorRT libraries, or pass --ep cpu"
    )]
    EpFailed { ep: String, graph: PathBuf, reason: String },
    #[error("ONNX Runtime cannot load {graph}: {reason}; the file is damaged or not an ONNX model, so re-export the bundle")]
    Session { graph: PathBuf, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ep {
    TensorRt,
    Cuda,
    Cpu,
}

impl FromStr for Ep {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Ok(Self::TensorRt),
            "cuda" => Ok(Self::Cuda),
            "cpu" => Ok(Self::Cpu),
            other => Err(RuntimeError::UnknownEp(other.to_string())),
        }
    }
}

impl fmt::Display for Ep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TensorRt => "tensorrt",
            Self::Cuda => "cuda",
            Self::Cpu => "cpu",
        })
    }
}

/// Parses `tensorrt,cuda,cpu`-style lists; order is priority.
pub fn parse_ep_list(list: &str) -> Result<Vec<Ep>, RuntimeError> {
    let eps: Vec<Ep> = list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<_, _>>()?;
    if eps.is_empty() {
        return Err(RuntimeError::UnknownEp(list.to_string()));
    }
    Ok(eps)
}

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub eps: Vec<Ep>,
    /// Threads inside one operator; 0 lets ONNX Runtime choose (one per core).
    pub intra_threads: usize,
    /// Where TensorRT keeps built engines, so a worker restart does not rebuild them.
    pub trt_cache_dir: PathBuf,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self { eps: vec![Ep::Cpu], intra_threads: 0, trt_cache_dir: acufarm_home().join("trt-cache") }
    }
}

/// TensorRT optimisation profile: `name:d0xd1x…` lists for min, opt and max shapes.
#[derive(Debug, Clone, Default)]
pub struct TrtProfile {
    pub min: String,
    pub opt: String,
    pub max: String,
}

pub struct Runtime {
    env: Environment,
    pub library: PathBuf,
    pub options: RuntimeOptions,
}

pub fn acufarm_home() -> PathBuf {
    std::env::var_os("ACUFARM_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache/acufarm"))
}

/// Finds the ONNX Runtime library following the documented search order.
pub fn locate_library() -> Result<PathBuf, RuntimeError> {
    let mut looked = Vec::new();
    // An empty value (`ORT_DYLIB_PATH=`) means unset, as shells and container specs write it.
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(RuntimeError::Load { path, reason: "ORT_DYLIB_PATH names no file".into() });
    }
    looked.push("$ORT_DYLIB_PATH (unset)".to_string());
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        dirs.push(exe_dir);
    }
    dirs.push(acufarm_home().join("onnxruntime"));
    for dir in dirs {
        looked.push(dir.display().to_string());
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut hits: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
                .collect();
            hits.sort();
            if let Some(hit) = hits.pop() {
                return Ok(hit);
            }
        }
    }
    looked.push("the system library path".to_string());
    // Let the dynamic loader search its own path as a last resort.
    let system = PathBuf::from("libonnxruntime.so");
    if unsafe { libc_dlopen_probe(&system) } {
        return Ok(system);
    }
    Err(RuntimeError::NotFound { looked: looked.join(", ") })
}

/// Whether the dynamic loader can resolve `name` on its own search path.
unsafe fn libc_dlopen_probe(name: &Path) -> bool {
    unsafe extern "C" {
        fn dlopen(filename: *const std::ffi::c_char, flag: std::ffi::c_int) -> *mut std::ffi::c_void;
        fn dlclose(handle: *mut std::ffi::c_void) -> std::ffi::c_int;
    }
    let Ok(c) = std::ffi::CString::new(name.as_os_str().as_encoded_bytes()) else { return false };
    let handle = unsafe { dlopen(c.as_ptr(), 1) };
    if handle.is_null() {
        return false;
    }
    unsafe { dlclose(handle) };
    true
}

/// ONNX Runtime allows one environment per process (ort refuses a second `build`, even after the
/// first is dropped), so every pipeline of the process — embedded mode's N workers, the QA gate's
/// face models — shares this one, made on first use. A failed load is not cached: the next call
/// tries again.
static ENVIRONMENT: std::sync::Mutex<Option<(PathBuf, Environment)>> = std::sync::Mutex::new(None);

fn environment() -> Result<(PathBuf, Environment), RuntimeError> {
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    let library = locate_library()?;
    let load = |reason: String| RuntimeError::Load { path: library.clone(), reason };
    let env = ort::init_from(&library).map_err(|e| load(e.to_string()))?.with_name("acufarm").build().map_err(|e| load(e.to_string()))?;
    *slot = Some((library.clone(), env.clone()));
    Ok((library, env))
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let (library, env) = environment()?;
        for ep in &options.eps {
            match ep {
                Ep::Cuda if !cfg!(feature = "cuda") => return Err(RuntimeError::NotCompiled("cuda")),
                Ep::TensorRt if !cfg!(feature = "tensorrt") => return Err(RuntimeError::NotCompiled("tensorrt")),
                _ => {}
            }
        }
        Ok(Self { env, library, options })
    }

    fn dispatch(&self, ep: Ep, profile: Option<&TrtProfile>) -> Option<ep::ExecutionProviderDispatch> {
        let _ = profile;
        match ep {
            #[cfg(feature = "tensorrt")]
            Ep::TensorRt => {
                let mut trt = ep::TensorRT::default()
                    .with_fp16(true)
                    .with_engine_cache(true)
                    .with_engine_cache_path(self.options.trt_cache_dir.display())
                    .with_timing_cache(true)
                    .with_timing_cache_path(self.options.trt_cache_dir.display());
                if let Some(p) = profile.filter(|p| !p.min.is_empty()) {
                    trt = trt.with_profile_min_shapes(&p.min).with_profile_opt_shapes(&p.opt).with_profile_max_shapes(&p.max);
                }
                Some(trt.build().error_on_failure())
            }
            #[cfg(feature = "cuda")]
            Ep::Cuda => Some(ep::CUDA::default().build().error_on_failure()),
            // ort's CPU provider disables ONNX Runtime's memory arena unless asked; without it every
            // large activation is a fresh mmap (ONNX Runtime's own default is the arena).
            Ep::Cpu => Some(ep::CPU::default().with_arena_allocator(true).build().error_on_failure()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Opens one graph with the configured providers and options.
    pub fn session(&self, graph: &Path, profile: Option<&TrtProfile>) -> Result<Session, RuntimeError> {
        let session_err = |reason: String| RuntimeError::Session { graph: graph.to_path_buf(), reason };
        self.builder(graph, profile)?.commit_from_file(graph).map_err(|e| session_err(e.to_string().trim_end_matches('.').to_string()))
    }

    /// Opens a graph held in memory (the face models compiled into the binary); `name` labels errors.
    pub fn session_from_memory(&self, name: &str, bytes: &[u8]) -> Result<Session, RuntimeError> {
        let graph = Path::new(name);
        self.builder(graph, None)?
            .commit_from_memory(bytes)
            .map_err(|e| RuntimeError::Session { graph: graph.to_path_buf(), reason: e.to_string().trim_end_matches('.').to_string() })
    }

    fn builder(&self, graph: &Path, profile: Option<&TrtProfile>) -> Result<ort::session::builder::SessionBuilder, RuntimeError> {
        let session_err = |reason: String| RuntimeError::Session { graph: graph.to_path_buf(), reason };
        let mut builder = Session::builder(&self.env)
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .map_err(|e| session_err(e.to_string()))?;
        if self.options.intra_threads > 0 {
            builder = builder.with_intra_threads(self.options.intra_threads).map_err(|e| session_err(e.to_string()))?;
        }
        // One provider at a time, in priority order, so a failure names the provider that failed.
        for &ep in &self.options.eps {
            let Some(dispatch) = self.dispatch(ep, profile) else { continue };
            builder = builder.with_execution_providers([dispatch]).map_err(|e| RuntimeError::EpFailed {
                ep: ep.to_string(),
                graph: graph.to_path_buf(),
                reason: e.to_string().trim_end_matches('.').to_string(),
            })?;
        }
        Ok(builder)
    }
}

/// A session's inputs or outputs as plain data for signature checks.
pub fn describe(outlets: &[ort::value::Outlet]) -> Vec<ActualTensor> {
    outlets
        .iter()
        .map(|o| ActualTensor {
            name: o.name().to_string(),
            dtype: o.dtype().tensor_type().map(dtype_name).unwrap_or_else(|| "non-tensor".into()),
            dims: o.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default(),
        })
        .collect()
}

fn dtype_name(t: ort::value::TensorElementType) -> String {
    use ort::value::TensorElementType as T;
    match t {
        T::Float32 => "float32".into(),
        T::Float16 => "float16".into(),
        T::Int32 => "int32".into(),
        T::Int64 => "int64".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ep_lists() {
        assert_eq!(parse_ep_list("tensorrt,cuda,cpu").unwrap(), vec![Ep::TensorRt, Ep::Cuda, Ep::Cpu]);
        assert_eq!(parse_ep_list(" CPU ").unwrap(), vec![Ep::Cpu]);
        for bad in ["", ",", "gpu", "cuda,rocm"] {
            let err = parse_ep_list(bad).unwrap_err().to_string();
            assert!(err.contains("unknown execution provider"), "{bad}: {err}");
        }
    }
}
