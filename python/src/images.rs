//! Images from Python: the `Extractor` class (an ONNX model behind the extractor contract) and
//! the work behind `Index.add_images` and `Index.search_images`, which go through the crate's
//! ingest pipeline (`milan::ingest`), so that their codes are those of `milan index add`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use milan::extract::pipeline::{extract_files, Extracted, FileOutcome};
use milan::extract::{Device, Extractor, ExtractorOptions, ReadOptions};
use milan::ingest::{add_images, check_extractor, keeps_features, key_path, IngestOptions};
use milan::ExtractError;
use milan::{Code, Error, ExtractorContract, Index, UnknownName};
use numpy::ndarray::Array2;
use numpy::{PyArray2, ToPyArray};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert::read_paths;
use crate::errors::{Fail, Kind};
use crate::watch::Watch;

/// An ONNX image model that turns image files into feature vectors.
///
/// ``Extractor(model, input_size=None, layout=None, pixel_range=None, output=None,
/// device="auto", threads=None, ort_library=None)``: ``model`` is the ONNX file; the contract
/// (``input_size`` in pixels, ``layout`` ``"nchw"`` or ``"nhwc"``, ``pixel_range`` ``"0..1"``,
/// ``"-1..1"`` or ``"imagenet"``, the ``output`` tensor) comes from the model's ``milan.*``
/// metadata unless given, as with ``milan index create --model``. ``device``: ``"auto"``,
/// ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``threads``: ONNX Runtime's threads (default all
/// cores). ONNX Runtime 1.31 is loaded on first use: ``ort_library``, ``MILAN_ORT_LIB``,
/// ``ORT_DYLIB_PATH``, the ``onnxruntime`` Python package, ... (``milan._runtime`` lists every
/// place).
///
/// Raises ``ModelError`` when ONNX Runtime or the model cannot be loaded, or the model does not
/// fit the contract (it is checked by running one blank image).
#[pyclass(module = "milan", name = "Extractor", frozen)]
pub struct PyExtractor {
    inner: Mutex<Extractor>,
    contract: ExtractorContract,
    device: String,
}

impl PyExtractor {
    /// Opens an extractor, finding ONNX Runtime as the package does (`milan._runtime`).
    pub fn open(py: Python<'_>, mut options: ExtractorOptions) -> PyResult<PyExtractor> {
        let prefer_gpu = options.device != Device::Cpu;
        let library = py
            .import("milan._runtime")?
            .call_method1("find_library", (options.ort_library.clone(), prefer_gpu))?
            .extract::<PathBuf>()?;
        options.ort_library = Some(library);
        let extractor = py
            .detach(|| Extractor::open(&options))
            .map_err(|err| PyErr::from(Fail::from(err)))?;
        Ok(PyExtractor {
            contract: extractor.contract().clone(),
            device: extractor.device().to_string(),
            inner: Mutex::new(extractor),
        })
    }

    /// The extractor an image index was built with: its model file and contract, as
    /// `milan index add` opens it when given no `--model`.
    pub fn for_index(py: Python<'_>, model: &ExtractorContract) -> PyResult<PyExtractor> {
        let options = ExtractorOptions {
            input_size: Some(model.size),
            layout: Some(model.layout),
            pixel_range: Some(model.pixel_range),
            output: Some(model.output.clone()),
            ..ExtractorOptions::new(&model.path)
        };
        PyExtractor::open(py, options).map_err(|err| {
            let detail = err.value(py).to_string();
            Fail::new(
                Kind::Model,
                format!(
                    "opening the model the index was built with ({}); pass extractor= if it moved: {detail}",
                    model.path
                ),
            )
            .into()
        })
    }

    /// The resolved contract, with the model's fingerprint and feature dimension. Read without
    /// the session's lock, which a call on another thread may hold while it waits for the GIL.
    pub fn contract(&self) -> &ExtractorContract {
        &self.contract
    }

    /// The extractor, for one call at a time (a session runs one batch at once). Take it with
    /// the GIL released only: a holder takes the GIL between batches.
    pub fn lock(&self) -> MutexGuard<'_, Extractor> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl PyExtractor {
    #[new]
    #[pyo3(signature = (model, input_size=None, layout=None, pixel_range=None, output=None, device="auto", threads=None, ort_library=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        model: PathBuf,
        input_size: Option<i64>,
        layout: Option<&str>,
        pixel_range: Option<&str>,
        output: Option<String>,
        device: &str,
        threads: Option<i64>,
        ort_library: Option<PathBuf>,
    ) -> PyResult<PyExtractor> {
        let input_size = input_size
            .map(|size| {
                u32::try_from(size).map_err(|_| {
                    Fail::value(format!("input_size must be a number of pixels; got {size}"))
                })
            })
            .transpose()?;
        let threads = threads
            .map(|n| {
                usize::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| Fail::value(format!("threads must be 1 or more; got {n}")))
            })
            .transpose()?;
        // Absolute, so that an index created with this extractor names the file wherever it
        // is opened from later.
        let model = std::path::absolute(&model).unwrap_or(model);
        let options = ExtractorOptions {
            model,
            input_size,
            layout: layout
                .map(str::parse)
                .transpose()
                .map_err(|err: UnknownName| Fail::value(err.to_string()))?,
            pixel_range: pixel_range
                .map(str::parse)
                .transpose()
                .map_err(|err: UnknownName| Fail::value(err.to_string()))?,
            output,
            device: Device::from_str(device).map_err(|err| Fail::value(err.to_string()))?,
            threads,
            ort_library,
            pinned_memory: None,
            io_binding: None,
        };
        PyExtractor::open(py, options)
    }

    /// The ONNX model file.
    #[getter]
    fn model(&self) -> PathBuf {
        PathBuf::from(&self.contract.path)
    }

    /// The length of the feature vectors.
    #[getter]
    fn dim(&self) -> u32 {
        self.contract.dim
    }

    /// The input's height and width in pixels.
    #[getter]
    fn input_size(&self) -> u32 {
        self.contract.size
    }

    /// The input tensor's name.
    #[getter]
    fn input(&self) -> String {
        self.contract.input.clone()
    }

    /// The input layout, ``"nchw"`` or ``"nhwc"``.
    #[getter]
    fn layout(&self) -> &'static str {
        self.contract.layout.name()
    }

    /// The pixel scaling, ``"0..1"``, ``"-1..1"`` or ``"imagenet"``.
    #[getter]
    fn pixel_range(&self) -> &'static str {
        self.contract.pixel_range.name()
    }

    /// The output tensor the features come from.
    #[getter]
    fn output(&self) -> String {
        self.contract.output.clone()
    }

    /// Where the model runs: ``"cpu"`` or ``"cuda:N"``.
    #[getter]
    fn device(&self) -> String {
        self.device.clone()
    }

    /// BLAKE3 of the model file, in hex: what an index and a head bound to this model check.
    #[getter]
    fn fingerprint(&self) -> String {
        hex(&self.contract.fingerprint)
    }

    fn __repr__(&self) -> String {
        format!(
            "<milan.Extractor {:?} output={:?} dim={} device={}>",
            self.contract.path, self.contract.output, self.contract.dim, self.device
        )
    }

    /// The feature vectors of image files: ``float32`` of shape ``(len(paths), dim)``, row
    /// ``i`` for ``paths[i]``.
    ///
    /// Files are read and decoded as ``Index.add_images`` reads them (regular files up to 256
    /// MiB; a truncated JPEG is refused unless ``lenient``), ``batch_size`` images per model
    /// run (default: by device, 16 on the CPU, up to 256 on a large GPU), decoding on every
    /// core beside the model, with the GIL released. ``progress``: an
    /// optional callable, called as ``progress(done, total)`` after each batch.
    ///
    /// Raises ``ImageError`` (a ``ValueError``) naming the first file that cannot be read or
    /// decoded, and why.
    #[pyo3(signature = (paths, batch_size=None, lenient=false, progress=None))]
    fn features<'py>(
        &self,
        py: Python<'py>,
        paths: &Bound<'py, PyAny>,
        batch_size: Option<i64>,
        lenient: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let paths = read_paths(paths, "paths")?;
        let batch_size = batch_size.map(|n| positive(n, "batch_size")).transpose()?;
        let watch = Watch::new(progress);
        let result = py.detach(|| {
            let mut extractor = self.lock();
            let batch_size = batch_size.unwrap_or_else(|| extractor.default_batch_size());
            features_of(&mut extractor, &paths, batch_size, lenient, &watch)
        });
        let features = watch.finish(result.map_err(PyErr::from))?;
        Ok(features.to_pyarray(py))
    }

    /// Every readable file's feature vector and content hash, and every other file with why:
    /// a ``dict`` with ``rows`` (``int64``, the positions in ``paths`` that were coded, in
    /// order), ``features`` (``float32``, one row per coded file), ``content_hashes``
    /// (``uint8`` ``(n, 32)``, the BLAKE3 of each coded file, as an index stores it) and
    /// ``failed`` (a list of ``{"path", "reason", "detail"}``, as ``Index.add_images`` reports
    /// them). Files are read and decoded as :meth:`features` reads them; none stops the call.
    #[pyo3(signature = (paths, batch_size=None, lenient=false, progress=None))]
    fn extract<'py>(
        &self,
        py: Python<'py>,
        paths: &Bound<'py, PyAny>,
        batch_size: Option<i64>,
        lenient: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let paths = read_paths(paths, "paths")?;
        let batch_size = batch_size.map(|n| positive(n, "batch_size")).transpose()?;
        let watch = Watch::new(progress);
        let result = py.detach(|| {
            let mut extractor = self.lock();
            let batch_size = batch_size.unwrap_or_else(|| extractor.default_batch_size());
            extract_each(&mut extractor, &paths, batch_size, lenient, &watch)
        });
        let found = watch.finish(result.map_err(PyErr::from))?;
        let out = PyDict::new(py);
        out.set_item("rows", numpy::PyArray1::from_vec(py, found.rows))?;
        out.set_item("features", found.features.to_pyarray(py))?;
        out.set_item("content_hashes", found.hashes.to_pyarray(py))?;
        let failed = pyo3::types::PyList::empty(py);
        for file in found.failed {
            let entry = PyDict::new(py);
            entry.set_item("path", file.path.to_string_lossy())?;
            entry.set_item("reason", file.reason)?;
            entry.set_item("detail", file.detail)?;
            failed.append(entry)?;
        }
        out.set_item("failed", failed)?;
        Ok(out)
    }
}

/// What [`extract_each`] found.
struct Found {
    rows: Vec<i64>,
    features: Array2<f32>,
    hashes: Array2<u8>,
    failed: Vec<milan::ingest::FailedFile>,
}

/// The features and content hashes of every readable file in `paths`, and the others with why.
fn extract_each(
    extractor: &mut Extractor,
    paths: &[PathBuf],
    batch_size: usize,
    lenient: bool,
    watch: &Watch,
) -> Result<Found, Fail> {
    let dim = extractor.contract().dim as usize;
    let (mut rows, mut features, mut hashes, mut failed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    each_file(extractor, paths, batch_size, lenient, watch, |extracted| {
        match extracted.outcome {
            FileOutcome::Features {
                features: row,
                content_hash,
            } => {
                rows.push(extracted.position as i64);
                features.extend_from_slice(&row);
                hashes.extend_from_slice(&content_hash);
            }
            FileOutcome::Failed(reason) => {
                failed.push(milan::ingest::FailedFile::new(extracted.path, &reason))
            }
            // Nothing is known: every file is decoded.
            FileOutcome::Known { .. } => unreachable!("no known hashes were given"),
        }
        Ok(())
    })?;
    let n = rows.len();
    Ok(Found {
        rows,
        features: Array2::from_shape_vec((n, dim), features)
            .map_err(|err| Fail::new(Kind::Milan, err.to_string()))?,
        hashes: Array2::from_shape_vec((n, 32), hashes)
            .map_err(|err| Fail::new(Kind::Milan, err.to_string()))?,
        failed,
    })
}

/// Runs every file of `paths` through the crate's batch pipeline and hands each outcome to
/// `each`, in batches, ticking `watch` after each batch; fails when `watch` stopped the run
/// (its exception is raised by `finish`) or `each` failed.
fn each_file(
    extractor: &mut Extractor,
    paths: &[PathBuf],
    batch_size: usize,
    lenient: bool,
    watch: &Watch,
    mut each: impl FnMut(Extracted) -> milan::Result<()>,
) -> Result<(), Fail> {
    let mut done = 0;
    let mut stopped = false;
    extract_files(
        extractor,
        paths,
        batch_size,
        &HashSet::new(),
        &ReadOptions { lenient },
        &watch.cancel,
        |batch| {
            for extracted in batch {
                each(extracted)?;
                done += 1;
            }
            if !watch.tick(counts(done, paths.len())) {
                stopped = true;
            }
            Ok(())
        },
    )?;
    if stopped || done < paths.len() {
        // The watch holds the exception that stopped the run; finish() raises it.
        return Err(Fail::new(Kind::Milan, "stopped before the end"));
    }
    Ok(())
}

/// ``content_hash(data)``: the BLAKE3 of ``bytes``, or of a file's content when given a path
/// (``str`` or ``os.PathLike``): what an index stores as an image's content hash.
#[pyfunction]
#[pyo3(name = "content_hash")]
pub fn py_content_hash(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = data.cast::<pyo3::types::PyBytes>() {
        return Ok(blake3::hash(bytes.as_bytes()).as_bytes().to_vec());
    }
    let path: PathBuf = data.extract().map_err(|_| {
        Fail::type_(format!(
            "content_hash takes bytes or a path (str or os.PathLike); got {}",
            data.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let hashed = py.detach(|| -> std::io::Result<[u8; 32]> {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(&path)?)?;
        Ok(*hasher.finalize().as_bytes())
    });
    hashed.map(|hash| hash.to_vec()).map_err(|err| {
        pyo3::exceptions::PyOSError::new_err(format!("{}: cannot read ({err})", path.display()))
    })
}

/// A count that must be at least 1.
pub fn positive(value: i64, what: &str) -> Result<usize, Fail> {
    usize::try_from(value)
        .ok()
        .filter(|&value| value > 0)
        .ok_or_else(|| Fail::value(format!("{what} must be 1 or more; got {value}")))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The progress arguments `(done, total)`.
fn counts(
    done: usize,
    total: usize,
) -> impl for<'a> FnOnce(Python<'a>) -> PyResult<Bound<'a, PyTuple>> {
    move |py| PyTuple::new(py, [done, total])
}

/// The features of every file in `paths`, in order, through the crate's batch pipeline; the
/// first file that cannot be read or decoded fails the call.
pub fn features_of(
    extractor: &mut Extractor,
    paths: &[PathBuf],
    batch_size: usize,
    lenient: bool,
    watch: &Watch,
) -> Result<Array2<f32>, Fail> {
    let dim = extractor.contract().dim as usize;
    let mut features = Array2::<f32>::zeros((paths.len(), dim));
    each_file(extractor, paths, batch_size, lenient, watch, |extracted| {
        match extracted.outcome {
            FileOutcome::Features { features: row, .. } => features
                .row_mut(extracted.position)
                .assign(&numpy::ndarray::ArrayView1::from(&row)),
            FileOutcome::Failed(reason) => {
                return Err(Error::Extract(ExtractError::Image {
                    path: extracted.path,
                    reason,
                }))
            }
            // Nothing is known: every file is decoded.
            FileOutcome::Known { .. } => unreachable!("no known hashes were given"),
        }
        Ok(())
    })?;
    Ok(features)
}

/// How `Index.add_images` runs.
pub struct AddImages {
    pub label_from_dir: bool,
    pub keep_features: bool,
    pub lenient: bool,
    /// `None`: the extractor's choice for its device.
    pub batch_size: Option<usize>,
    pub commit_every: usize,
}

/// `milan index add` for a list of files: the report as the command's `--json` prints it.
pub fn add_files(
    index: &Index,
    extractor: &mut Extractor,
    paths: &[PathBuf],
    how: &AddImages,
    watch: &Watch,
) -> Result<String, Fail> {
    // Keys are spelled as `milan index add` and `sync` spell them.
    let files: Vec<PathBuf> = paths.iter().map(|path| key_path(path)).collect();
    let options = IngestOptions {
        batch_size: how
            .batch_size
            .unwrap_or_else(|| extractor.default_batch_size()),
        commit_every: how.commit_every,
        label_from_dir: how.label_from_dir,
        keep_features: how.keep_features || keeps_features(index)?,
        lenient: how.lenient,
    };
    let report = add_images(
        index,
        extractor,
        &files,
        &options,
        &mut |done, total| {
            watch.tick(counts(done, total));
        },
        &watch.cancel,
    )?;
    serde_json::to_string(&report).map_err(|err| Fail::new(Kind::Milan, err.to_string()))
}

/// The codes of `paths` by the index's model and head, as `add_images` makes them.
pub fn code_files(
    index: &Index,
    extractor: &mut Extractor,
    paths: &[PathBuf],
    batch_size: usize,
    lenient: bool,
    watch: &Watch,
) -> Result<Vec<Code>, Fail> {
    let (_, head) = check_extractor(index, extractor)?;
    let features = features_of(extractor, paths, batch_size, lenient, watch)?;
    Ok(head.codes(features.view())?)
}

/// The model record as a dict: what `Index.model` returns.
pub fn model_dict<'py>(py: Python<'py>, model: &ExtractorContract) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("path", Path::new(&model.path))?;
    dict.set_item("fingerprint", hex(&model.fingerprint))?;
    dict.set_item("input", &model.input)?;
    dict.set_item("layout", model.layout.name())?;
    dict.set_item("input_size", model.size)?;
    dict.set_item("pixel_range", model.pixel_range.name())?;
    dict.set_item("output", &model.output)?;
    dict.set_item("dim", model.dim)?;
    Ok(dict)
}

/// A JSON text as Python values (dicts, lists, numbers, strings), through the `json` module.
pub fn from_json<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (text,))
}
