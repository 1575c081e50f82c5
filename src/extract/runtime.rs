//! Finding and loading the ONNX Runtime library, once per process.
//!
//! milan links ONNX Runtime at run time, so one binary serves the CPU build and the CUDA build.
//! The library is looked for, in order: an explicit path (`--ort-lib`), `MILAN_ORT_LIB`,
//! `ORT_DYLIB_PATH`, beside the executable, and the project's own `.onnxruntime/` folder that
//! `make setup` (CPU) and `make setup-gpu` (CUDA) fill.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::error::{Error, Result};

/// File name of the library on this platform.
#[cfg(target_os = "macos")]
const LIBRARY: &str = "libonnxruntime.dylib";
#[cfg(target_os = "windows")]
const LIBRARY: &str = "onnxruntime.dll";
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
const LIBRARY: &str = "libonnxruntime.so";

/// Where `make setup` and `make setup-gpu` put the libraries, relative to the project.
const PROJECT_FOLDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.onnxruntime");

/// The loaded library and environment, or why loading failed (kept, so every later call reports
/// the same error instead of retrying a half-initialised runtime).
static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// A loaded ONNX Runtime.
pub(crate) struct Runtime {
    pub(crate) environment: Environment,
    pub(crate) library: PathBuf,
    /// Whether the library is the CUDA build (its CUDA provider library sits beside it).
    pub(crate) gpu_build: bool,
}

/// The candidate library paths, in order, with where each came from.
pub fn library_candidates(explicit: Option<&Path>, prefer_gpu: bool) -> Vec<(PathBuf, String)> {
    let mut candidates = Vec::new();
    if let Some(path) = explicit {
        candidates.push((path.to_path_buf(), "--ort-lib".to_string()));
    }
    for variable in ["MILAN_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(value) = std::env::var_os(variable) {
            candidates.push((PathBuf::from(value), variable.to_string()));
        }
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        candidates.push((dir.join(LIBRARY), "beside the executable".to_string()));
    }
    let project = Path::new(PROJECT_FOLDER);
    let (gpu, cpu) = (
        project.join("gpu").join(LIBRARY),
        project.join("cpu").join(LIBRARY),
    );
    if prefer_gpu {
        candidates.push((gpu, "the project's .onnxruntime/gpu".to_string()));
        candidates.push((cpu, "the project's .onnxruntime/cpu".to_string()));
    } else {
        candidates.push((cpu, "the project's .onnxruntime/cpu".to_string()));
        candidates.push((gpu, "the project's .onnxruntime/gpu".to_string()));
    }
    candidates
}

/// Loads ONNX Runtime (the first candidate that exists) and creates the environment; later calls
/// return the same runtime whatever they ask for.
pub(crate) fn runtime(explicit: Option<&Path>, prefer_gpu: bool) -> Result<&'static Runtime> {
    let loaded = RUNTIME.get_or_init(|| {
        let candidates = library_candidates(explicit, prefer_gpu);
        let Some((library, _)) = candidates.iter().find(|(path, _)| path.is_file()) else {
            let searched: Vec<String> = candidates
                .iter()
                .map(|(path, source)| format!("{} ({source})", path.display()))
                .collect();
            return Err(format!(
                "ONNX Runtime 1.31 was not found; run `make setup` (or `make setup-gpu`), or point \
                 --ort-lib or MILAN_ORT_LIB at libonnxruntime. Looked in: {}",
                searched.join(", ")
            ));
        };
        let builder = ort::init_from(library)
            .map_err(|err| format!("{}: cannot load ONNX Runtime: {err}", library.display()))?;
        let environment = builder
            .with_name("milan")
            .build()
            .map_err(|err| format!("{}: cannot start ONNX Runtime: {err}", library.display()))?;
        let gpu_build = library
            .parent()
            .is_some_and(|dir| dir.join("libonnxruntime_providers_cuda.so").is_file());
        Ok(Runtime {
            environment,
            library: library.clone(),
            gpu_build,
        })
    });
    loaded.as_ref().map_err(|detail| Error::Runtime {
        detail: detail.clone(),
    })
}
