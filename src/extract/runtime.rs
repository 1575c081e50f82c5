//! Finding and loading the ONNX Runtime library, once per process.
//!
//! milan links ONNX Runtime at run time, so one binary serves the CPU build and the CUDA build.
//! The library is looked for, in order: an explicit path (`--ort-lib`), `MILAN_ORT_LIB`,
//! `ORT_DYLIB_PATH`, beside the executable, and in a `.onnxruntime/` folder (which `make setup`
//! and `make setup-gpu` fill) beside the executable or, for a binary inside a cargo `target/`
//! folder, in the project that holds it. Every place is found from the executable's real location
//! or given explicitly, never fixed when milan was built, so a binary copied to another machine
//! looks beside itself, and never in other folders above it. A relative path is made
//! absolute against the current directory before it is checked, and the file checked is the file
//! loaded.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::error::{Error, ExtractError, ExtractorSetting, Result};

/// File name of the library on this platform.
#[cfg(target_os = "macos")]
const LIBRARY: &str = "libonnxruntime.dylib";
#[cfg(target_os = "windows")]
const LIBRARY: &str = "onnxruntime.dll";
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
const LIBRARY: &str = "libonnxruntime.so";

/// The folder `make setup` (CPU) and `make setup-gpu` (CUDA) fill, in the project's root.
const PROJECT_FOLDER: &str = ".onnxruntime";

/// How many folders above the executable's own are searched for a cargo `target` folder, whose
/// parent is then the project with [`PROJECT_FOLDER`]: enough for `target/release/` and for
/// `target/debug/deps/` (test binaries).
const TARGET_FOLDER_DEPTH: usize = 3;

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
        candidates.push((
            path.to_path_buf(),
            "ExtractorOptions::ort_library".to_string(),
        ));
    }
    for variable in ["MILAN_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(value) = std::env::var_os(variable) {
            candidates.push((PathBuf::from(value), variable.to_string()));
        }
    }
    // The real location: a link to the binary (say in ~/bin) still finds the project's folder.
    let exe_dir = std::env::current_exe()
        .and_then(|exe| exe.canonicalize())
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    if let Some(dir) = exe_dir {
        candidates.push((dir.join(LIBRARY), "beside the executable".to_string()));
        // Beside the executable, and in the project a cargo build runs from: never in other
        // folders above it, which may be writable by anyone (a binary unpacked in /tmp must not
        // load /tmp/.onnxruntime).
        let project = dir
            .ancestors()
            .take(TARGET_FOLDER_DEPTH + 1)
            .find(|folder| folder.file_name().is_some_and(|name| name == "target"))
            .and_then(Path::parent);
        for folder in std::iter::once(dir.as_path()).chain(project) {
            let root = folder.join(PROJECT_FOLDER);
            let (gpu, cpu) = (
                (root.join("gpu").join(LIBRARY), "gpu"),
                (root.join("cpu").join(LIBRARY), "cpu"),
            );
            let order = if prefer_gpu { [gpu, cpu] } else { [cpu, gpu] };
            for (path, kind) in order {
                candidates.push((
                    path,
                    format!("{} ({PROJECT_FOLDER}/{kind})", folder.display()),
                ));
            }
        }
    }
    candidates
}

/// Loads ONNX Runtime (the first candidate that exists) and creates the environment; later calls
/// return the same runtime whatever they ask for.
pub(crate) fn runtime(explicit: Option<&Path>, prefer_gpu: bool) -> Result<&'static Runtime> {
    let loaded = RUNTIME.get_or_init(|| {
        let candidates = library_candidates(explicit, prefer_gpu);
        // Absolute before the check: dlopen would search the system's folders for a bare file
        // name, not the current directory where `is_file` looked.
        let found = candidates
            .iter()
            .map(|(path, _)| std::path::absolute(path).unwrap_or_else(|_| path.clone()))
            .find(|path| path.is_file());
        let Some(library) = found else {
            let searched: Vec<String> = candidates
                .iter()
                .map(|(path, source)| format!("{} ({source})", path.display()))
                .collect();
            return Err(format!(
                "ONNX Runtime 1.31 was not found; point ExtractorOptions::ort_library or \
                 MILAN_ORT_LIB at libonnxruntime. Looked in: {}",
                searched.join(", ")
            ));
        };
        let builder = ort::init_from(&library)
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
            library,
            gpu_build,
        })
    });
    loaded.as_ref().map_err(|detail| {
        // Every failure to find, load or start the library is settled by naming another one.
        Error::Extract(ExtractError::Runtime {
            detail: detail.clone(),
            setting: Some(ExtractorSetting::OrtLibrary),
        })
    })
}
