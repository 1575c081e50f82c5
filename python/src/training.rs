//! Hash heads from Python: the `Head` class (load, save, code features), `train` (the crate's
//! `milan::train::Trainer`, as `milan train` runs it), `evaluate` (the MiLaN papers' protocol,
//! as `milan eval` runs it) and `split` (the per-class train/test split both use).

use std::path::PathBuf;

use milan::dataset::SplitSpec;
use milan::eval::{evaluate, select, select_rows, split_per_class, EvalOptions, Split};
use milan::train::{Recipe, TrainConfig, TrainData, TrainProgress, Trainer};
use milan::{Error, ExtractorBinding, HashHead};
use milan::{ExtractError, SearchError};
use numpy::ndarray::Array2;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::convert::{read_features, read_labels, read_rows};
use crate::errors::{Fail, Kind};
use crate::images::{from_json, hex, PyExtractor};
use crate::watch::Watch;

/// A hash head: the small network that turns feature vectors into binary codes (bit ``i`` set
/// where output ``i`` is positive).
///
/// Get one from ``milan.train``, ``Head.load(path)`` (a file of ``milan train`` or
/// ``milan head init``), ``Head.lsh(bits, dim)`` (random hyperplanes, an untrained baseline) or
/// ``Index.head``. Heads pickle (as their bytes).
#[pyclass(module = "milan", name = "Head", frozen)]
pub struct PyHead {
    pub head: HashHead,
}

impl PyHead {
    fn decode(bytes: Vec<u8>, source: &str) -> Result<PyHead, Fail> {
        let head = HashHead::from_bytes(bytes).map_err(|err| match err {
            Error::Extract(ExtractError::BadHead { detail, .. }) => {
                Error::Extract(ExtractError::BadHead {
                    path: PathBuf::from(source),
                    detail,
                })
            }
            other => other,
        })?;
        Ok(PyHead { head })
    }
}

#[pymethods]
impl PyHead {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = None)]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Err(Fail::type_(
            "milan.Head cannot be made directly: use milan.train(...), milan.Head.load(path) or \
             milan.Head.lsh(bits, dim)",
        )
        .into())
    }

    /// Reads a head file (written by ``Head.save``, ``milan train`` or ``milan head init``).
    ///
    /// Raises ``HeadError`` (a ``ValueError``) when the file is not a usable head, and
    /// ``StorageError`` (an ``OSError``) when it cannot be read.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<PyHead> {
        let head = py
            .detach(|| HashHead::read(&path))
            .map_err(|err| PyErr::from(Fail::from(err)))?;
        Ok(PyHead { head })
    }

    /// A head from the bytes of a head file (``Head.to_bytes``).
    #[staticmethod]
    fn from_bytes(bytes: &[u8]) -> PyResult<PyHead> {
        Ok(PyHead::decode(bytes.to_vec(), "the head bytes")?)
    }

    /// Random-hyperplane LSH: ``bits`` hyperplanes drawn from a standard normal with ``seed``,
    /// through ``mean`` (a ``float32`` vector of ``dim`` values) or the origin, as
    /// ``milan head init --lsh``. ``extractor``: bind the head to that extractor's model, so
    /// that an index refuses features of another.
    #[staticmethod]
    #[pyo3(signature = (bits, dim, seed=0, mean=None, extractor=None))]
    fn lsh(
        bits: i64,
        dim: i64,
        seed: u64,
        mean: Option<&Bound<'_, PyAny>>,
        extractor: Option<&Bound<'_, PyExtractor>>,
    ) -> PyResult<PyHead> {
        let bits = u32::try_from(bits)
            .ok()
            .filter(|bits| (8..=1024).contains(bits) && bits % 8 == 0)
            .ok_or_else(|| {
                Fail::value(format!(
                    "bits must be a multiple of 8 from 8 to 1024; got {bits}"
                ))
            })?;
        let dim = u32::try_from(dim)
            .ok()
            .filter(|&dim| dim > 0)
            .ok_or_else(|| Fail::value(format!("dim must be 1 or more; got {dim}")))?;
        let mean = mean
            .filter(|mean| !mean.is_none())
            .map(|mean| -> PyResult<Vec<f32>> {
                let row = mean.call_method1("reshape", (1, -1)).map_err(|_| {
                    Fail::type_("mean must be a 1-D numpy float32 array of dim values")
                })?;
                Ok(read_features(&row, "mean")?.into_raw_vec_and_offset().0)
            })
            .transpose()?;
        let binding = extractor.map(|extractor| binding(extractor.get()));
        let head = HashHead::lsh(bits, dim, seed, mean.as_deref(), binding).map_err(Fail::from)?;
        Ok(PyHead { head })
    }

    /// Writes the head file (whole or not at all: through a temporary file renamed over
    /// ``path``), readable by ``Head.load`` and by ``milan index create --head``.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.head.write(&path))
            .map_err(|err| PyErr::from(Fail::from(err)))
    }

    /// The bytes of the head file.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.head.as_bytes())
    }

    /// Pickles as its bytes.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let class = py.get_type::<PyHead>();
        let from_bytes = class.getattr("from_bytes")?;
        let bytes = PyBytes::new(py, slf.get().head.as_bytes());
        PyTuple::new(
            py,
            [from_bytes.into_any(), PyTuple::new(py, [bytes])?.into_any()],
        )
    }

    /// The code length in bits.
    #[getter]
    fn bits(&self) -> u32 {
        self.head.bits()
    }

    /// The length of the feature vectors it takes.
    #[getter]
    fn dim(&self) -> u32 {
        self.head.input_dim()
    }

    /// How it was made: ``"lsh"``, or the training recipe (``"milan-plus"``, ``"milan-paper"``).
    #[getter]
    fn kind(&self) -> String {
        self.head.kind().to_string()
    }

    /// BLAKE3 of the head's bytes, in hex.
    #[getter]
    fn fingerprint(&self) -> String {
        hex(&self.head.fingerprint())
    }

    /// The fingerprint (hex) of the model the head is bound to, or ``None`` for a head that
    /// takes any features of its dimension.
    #[getter]
    fn extractor_fingerprint(&self) -> Option<String> {
        self.head
            .extractor()
            .map(|binding| hex(&binding.fingerprint))
    }

    /// How the head was made: the settings, the data's counts and fingerprint (a dict, from
    /// the head's JSON provenance; empty when it has none).
    #[getter]
    fn provenance<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = self.head.provenance();
        if text.trim().is_empty() {
            return Ok(PyDict::new(py).into_any());
        }
        from_json(py, text)
    }

    fn __repr__(&self) -> String {
        format!(
            "<milan.Head {} bits={} dim={} {}>",
            self.head.kind(),
            self.head.bits(),
            self.head.input_dim(),
            &hex(&self.head.fingerprint())[..16]
        )
    }

    /// The codes of feature vectors: ``uint8`` of shape ``(n, bits // 8)`` in
    /// ``numpy.packbits`` order, as ``Index.add`` takes them.
    ///
    /// ``features``: ``float32`` (or ``float64``) of shape ``(n, dim)``. Raises
    /// ``InvalidArgumentError`` (a ``ValueError``) for another dimension or non-finite values,
    /// ``InvalidTypeError`` (a ``TypeError``) for another dtype.
    fn codes<'py>(
        &self,
        py: Python<'py>,
        features: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<u8>>> {
        let features = read_features(features, "features")?;
        let n = features.nrows();
        let width = self.head.bits() as usize / 8;
        let bytes = py.detach(|| -> Result<Vec<u8>, Fail> {
            let codes = self.head.codes(features.view())?;
            Ok(codes
                .iter()
                .flat_map(|code| code.as_bytes().to_vec())
                .collect())
        })?;
        PyArray1::from_vec(py, bytes).reshape([n, width])
    }
}

/// The binding a head made for `extractor` records.
fn binding(extractor: &PyExtractor) -> ExtractorBinding {
    ExtractorBinding {
        fingerprint: extractor.contract().fingerprint,
        output: extractor.contract().output.clone(),
    }
}

/// `milan train`'s settings from the arguments of `milan.train`.
pub struct TrainArgs {
    pub bits: i64,
    pub recipe: String,
    pub iters: Option<u64>,
    pub batch: Option<usize>,
    pub hidden: Option<Vec<usize>>,
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    pub gamma: Option<f64>,
    pub lr: Option<f64>,
    pub seed: u64,
    pub threads: usize,
    pub validate_every: Option<u64>,
    pub keep_best: bool,
    pub patience: u64,
}

impl TrainArgs {
    fn config(&self, validating: bool) -> Result<TrainConfig, Fail> {
        let recipe = Recipe::from_name(&self.recipe).ok_or_else(|| {
            let names: Vec<_> = Recipe::ALL.iter().map(|r| r.name()).collect();
            Fail::value(format!(
                "unknown recipe {:?}; use one of {}",
                self.recipe,
                names.join(", ")
            ))
        })?;
        let bits = u32::try_from(self.bits).unwrap_or(0);
        let mut config = TrainConfig::new(recipe, bits);
        if bits == 0 {
            return Err(Fail::value(format!(
                "bits must be a multiple of 8 from 8 to 1024; got {}",
                self.bits
            )));
        }
        config.iters = self.iters.unwrap_or(config.iters);
        config.batch = self.batch.unwrap_or(config.batch);
        config.hidden = self.hidden.clone().unwrap_or(config.hidden);
        config.alpha = self.alpha.unwrap_or(config.alpha);
        config.beta = self.beta.unwrap_or(config.beta);
        config.gamma = self.gamma.unwrap_or(config.gamma);
        config.lr = self.lr.unwrap_or(config.lr);
        config.seed = self.seed;
        config.threads = self.threads;
        config.validate_every = match (validating, self.validate_every) {
            (false, _) => 0,
            (true, Some(every)) => every,
            // A validation set is given to be used: the recipe's interval, else 500 (the CLI's).
            (true, None) if config.validate_every == 0 => 500,
            (true, None) => config.validate_every,
        };
        if self.keep_best && !validating {
            return Err(Fail::value(
                "keep_best needs a validation set: pass validation=(features, labels) held out of the training data",
            ));
        }
        config.keep_best = self.keep_best;
        config.patience = self.patience;
        Ok(config)
    }
}

/// The progress dict of one step.
fn progress_dict<'py>(py: Python<'py>, p: &TrainProgress) -> PyResult<Bound<'py, PyTuple>> {
    let dict = PyDict::new(py);
    dict.set_item("step", p.step)?;
    dict.set_item("iters", p.iters)?;
    dict.set_item("loss", p.loss.total)?;
    dict.set_item("validation_map", p.val_map)?;
    dict.set_item("best", p.best)?;
    PyTuple::new(py, [dict])
}

/// Trains a head; see `milan.train` in lib.rs for the Python side.
#[allow(clippy::too_many_arguments)]
pub fn train<'py>(
    py: Python<'py>,
    features: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    args: TrainArgs,
    validation: Option<&Bound<'py, PyAny>>,
    extractor: Option<&Bound<'py, PyExtractor>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<PyHead> {
    let features = read_features(features, "features")?;
    let labels = read_labels(labels, Some(features.nrows()), "labels")?.values;
    let validation = match validation.filter(|v| !v.is_none()) {
        None => None,
        Some(pair) => {
            let (v_features, v_labels): (Bound<'py, PyAny>, Bound<'py, PyAny>) = pair
                .extract()
                .map_err(|_| Fail::type_("validation must be a pair (features, labels)"))?;
            let v_features = read_features(&v_features, "validation features")?;
            let v_labels =
                read_labels(&v_labels, Some(v_features.nrows()), "validation labels")?.values;
            Some((v_features, v_labels))
        }
    };
    let config = args.config(validation.is_some())?;
    let binding = extractor.map(|extractor| binding(extractor.get()));
    let classes = {
        let mut seen = labels.clone();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    };
    let watch = Watch::new(progress);
    let result = py.detach(|| -> Result<HashHead, Fail> {
        let data = TrainData {
            features: features.view(),
            labels: &labels,
        };
        let validation = validation.as_ref().map(|(features, labels)| TrainData {
            features: features.view(),
            labels,
        });
        let mut trainer = Trainer::new(config, data, validation)?;
        // The GIL is taken back every 10 steps (and at validations, and the last step), as
        // often as `milan train` redraws its bar: Ctrl-C and the progress function are seen.
        let mut report = |p: &TrainProgress| {
            if p.step.is_multiple_of(10) || p.step == p.iters || p.val_map.is_some() {
                let p = *p;
                watch.tick(move |py| progress_dict(py, &p));
            }
        };
        match trainer.run(&mut report, &watch.cancel) {
            Ok(()) => {}
            Err(Error::Cancelled) => return Err(Fail::new(Kind::Milan, "training stopped")),
            Err(err) => return Err(err.into()),
        }
        let description = serde_json::json!({
            "source": "python",
            "items": labels.len(),
            "classes": classes,
            "validation": validation.map(|v| v.labels.len()),
        });
        Ok(trainer.head(binding, description)?)
    });
    let head = watch.finish(result.map_err(PyErr::from))?;
    Ok(PyHead { head })
}

/// The per-class split of `labels` as `milan train` and `milan eval` make it: rows sorted by key
/// within each class (by row when no keys), shuffled with `seed` when given, the first
/// `round(train_fraction * n_class)` training.
pub fn split_rows(
    labels: &[i64],
    keys: Option<&[String]>,
    train_fraction: f64,
    seed: Option<u64>,
) -> Result<Split, Fail> {
    if !(0.0..=1.0).contains(&train_fraction) {
        return Err(Fail::value(format!(
            "train_fraction must be from 0 to 1; got {train_fraction}"
        )));
    }
    let blank;
    let keys: &[String] = match keys {
        Some(keys) => keys,
        None => {
            // Equal keys: the order within a class is the rows' order.
            blank = vec![String::new(); labels.len()];
            &blank
        }
    };
    Ok(split_per_class(labels, keys, train_fraction, seed)?)
}

/// Reads optional keys: one str per row.
pub fn read_keys(obj: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Option<Vec<String>>> {
    let Some(obj) = obj.filter(|obj| !obj.is_none()) else {
        return Ok(None);
    };
    let expected = "keys must be a sequence of str, one per row";
    if obj.is_instance_of::<pyo3::types::PyString>() {
        return Err(Fail::type_(format!("{expected}; got a single str")).into());
    }
    let keys: Vec<String> = obj
        .extract()
        .map_err(|err| Fail::type_(format!("{expected} ({err})")))?;
    if keys.len() != n {
        return Err(
            Fail::value(format!("{expected}: got {} keys for {n} rows", keys.len())).into(),
        );
    }
    Ok(Some(keys))
}

/// The two row lists as int64 arrays.
pub fn split_arrays<'py>(py: Python<'py>, split: Split) -> PyResult<Bound<'py, PyTuple>> {
    let to_array =
        |rows: Vec<usize>| PyArray1::from_vec(py, rows.into_iter().map(|r| r as i64).collect());
    PyTuple::new(py, [to_array(split.train), to_array(split.test)])
}

/// Settings of `milan.evaluate`.
pub struct EvalArgs {
    pub train_fraction: f64,
    pub split_seed: Option<u64>,
    pub k: usize,
    pub lsh_seed: u64,
    pub threads: usize,
}

/// `milan eval` on arrays: the report as its `--json` prints it.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_head<'py>(
    py: Python<'py>,
    head: &PyHead,
    features: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    keys: Option<&Bound<'py, PyAny>>,
    split: Option<&Bound<'py, PyAny>>,
    args: EvalArgs,
) -> PyResult<Bound<'py, PyAny>> {
    let features = read_features(features, "features")?;
    let n = features.nrows();
    let labels = read_labels(labels, Some(n), "labels")?.values;
    let keys = read_keys(keys, n)?;
    if args.k == 0 {
        return Err(Fail::from(Error::Search(SearchError::ZeroK)).into());
    }
    let (split, spec) = match split.filter(|split| !split.is_none()) {
        Some(pair) => {
            let (train, test): (Bound<'py, PyAny>, Bound<'py, PyAny>) = pair
                .extract()
                .map_err(|_| Fail::type_("split must be a pair (train_rows, test_rows)"))?;
            let mut train = read_rows(&train, n, "split's train rows")?;
            let mut test = read_rows(&test, n, "split's test rows")?;
            train.sort_unstable();
            test.sort_unstable();
            let json =
                serde_json::json!({"kind": "rows", "train": train.len(), "test": test.len()});
            (Split { train, test }, json)
        }
        None => {
            let split = split_rows(
                &labels,
                keys.as_deref(),
                args.train_fraction,
                args.split_seed,
            )?;
            let spec = SplitSpec::PerClass {
                train_fraction: args.train_fraction,
                seed: args.split_seed,
            };
            (
                split,
                serde_json::to_value(&spec)
                    .map_err(|err| Fail::new(Kind::Milan, err.to_string()))?,
            )
        }
    };
    if split.test.len() < 2 {
        return Err(Fail::value(format!(
            "the test split has {} items; each test item queries the others, so at least 2 are needed (lower train_fraction)",
            split.test.len()
        ))
        .into());
    }
    let head_ref = &head.head;
    let text = py.detach(|| -> Result<String, Fail> {
        let train_features: Array2<f32> = select_rows(features.view(), &split.train);
        let test_features = select_rows(features.view(), &split.test);
        let test_labels = select(&labels, &split.test);
        let options = EvalOptions {
            k: args.k,
            lsh_seed: args.lsh_seed,
            ..EvalOptions::default()
        };
        let pool = rayon_pool(args.threads)?;
        let report = pool.install(|| {
            evaluate(
                head_ref,
                train_features.view(),
                test_features.view(),
                &test_labels,
                &options,
            )
        })?;
        let mut value =
            serde_json::to_value(&report).map_err(|err| Fail::new(Kind::Milan, err.to_string()))?;
        value["head"] = serde_json::json!({
            "kind": head_ref.kind(),
            "fingerprint": hex(&head_ref.fingerprint()),
        });
        value["split"] = spec;
        Ok(value.to_string())
    })?;
    from_json(py, &text)
}

/// A thread pool of `threads` workers (0: one per core).
fn rayon_pool(threads: usize) -> Result<rayon::ThreadPool, Fail> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|err| Fail::value(format!("cannot start {threads} threads: {err}")))
}

/// Trains a hash head on labelled feature vectors, as ``milan train`` does (docs/training.md):
/// returns a ``Head``.
///
/// ``features``: ``float32`` of shape ``(n, dim)``; ``labels``: one class per row (ints, or
/// str). Every row trains: hold the test split out first (``milan.split``), as ``milan train``
/// does with its 60/40 split. ``bits``: the code length; ``recipe``: ``"milan-plus"`` (milan's
/// own, 2,000 steps) or ``"milan-paper"`` (MiLaN as published, 10,000 steps); ``iters``,
/// ``batch``, ``hidden`` (layer widths), ``alpha``, ``beta``, ``gamma``, ``lr``: the recipe's
/// settings overridden. ``seed`` and ``threads`` (0: one per core): the same data, seed and
/// threads give the same head.
///
/// ``validation``: ``(features, labels)`` scored by mAP@20 every ``validate_every`` steps
/// (default the recipe's, else 500); ``keep_best`` keeps the head that scored best, and
/// ``patience`` stops after that many validations without improvement. ``extractor``: bind the
/// head to that model (an index then refuses another). ``progress``: called every 10 steps
/// with a dict (``step``, ``iters``, ``loss``, ``validation_map``, ``best``).
///
/// Runs with the GIL released; Ctrl-C (or an exception from ``progress``) stops it and is
/// raised. Raises ``InvalidArgumentError`` (a ``ValueError``) for unusable data or settings
/// (fewer than 2 classes, a class too small for the recipe's batches, non-finite values).
#[pyfunction]
#[pyo3(name = "train", signature = (features, labels, bits=64, recipe="milan-plus", *, iters=None, batch=None, hidden=None, alpha=None, beta=None, gamma=None, lr=None, seed=0, threads=0, validation=None, validate_every=None, keep_best=false, patience=0, extractor=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn py_train<'py>(
    py: Python<'py>,
    features: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    bits: i64,
    recipe: &str,
    iters: Option<u64>,
    batch: Option<usize>,
    hidden: Option<Vec<usize>>,
    alpha: Option<f64>,
    beta: Option<f64>,
    gamma: Option<f64>,
    lr: Option<f64>,
    seed: u64,
    threads: usize,
    validation: Option<&Bound<'py, PyAny>>,
    validate_every: Option<u64>,
    keep_best: bool,
    patience: u64,
    extractor: Option<&Bound<'py, PyExtractor>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<PyHead> {
    let args = TrainArgs {
        bits,
        recipe: recipe.to_string(),
        iters,
        batch,
        hidden,
        alpha,
        beta,
        gamma,
        lr,
        seed,
        threads,
        validate_every,
        keep_best,
        patience,
    };
    train(py, features, labels, args, validation, extractor, progress)
}

/// A head's retrieval quality by the MiLaN papers' protocol, as ``milan eval --json`` reports
/// it: a dict with ``map_at_k`` (a fraction), ``baselines`` (``lsh``: random hyperplanes
/// through the training mean; ``float_euclidean``: the features themselves),
/// ``precision_at_k``, ``pr_curve``, ``queries``, ``train_items``, ``k``, ``bits``,
/// ``lsh_seed``, ``baseline_details``, ``head`` and ``split``.
///
/// ``features``, ``labels``: the whole labelled data. It is split per class as ``milan eval``
/// splits it (``train_fraction`` of each class trains, sorted by ``keys`` when given, else in
/// row order, shuffled with ``split_seed`` when given; ``milan.split`` gives the same rows), or
/// as ``split=(train_rows, test_rows)`` says. Every test item queries the other test items,
/// ranked by Hamming distance with ties in row order; mAP@``k``.
#[pyfunction]
#[pyo3(name = "evaluate", signature = (head, features, labels, *, k=20, train_fraction=0.6, split_seed=None, keys=None, split=None, lsh_seed=0, threads=0))]
#[allow(clippy::too_many_arguments)]
pub fn py_evaluate<'py>(
    py: Python<'py>,
    head: &Bound<'py, PyHead>,
    features: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    k: usize,
    train_fraction: f64,
    split_seed: Option<u64>,
    keys: Option<&Bound<'py, PyAny>>,
    split: Option<&Bound<'py, PyAny>>,
    lsh_seed: u64,
    threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let args = EvalArgs {
        train_fraction,
        split_seed,
        k,
        lsh_seed,
        threads,
    };
    evaluate_head(py, head.get(), features, labels, keys, split, args)
}

/// The per-class train/test split of ``milan train`` and ``milan eval``: ``(train_rows,
/// test_rows)``, ``int64`` arrays of row numbers, each ascending. In each class, rows are
/// ordered by ``keys`` (when given, else by row), shuffled with ``seed`` when given, and the
/// first ``round(train_fraction * n_class)`` train.
#[pyfunction]
#[pyo3(name = "split", signature = (labels, train_fraction=0.6, seed=None, keys=None))]
pub fn py_split<'py>(
    py: Python<'py>,
    labels: &Bound<'py, PyAny>,
    train_fraction: f64,
    seed: Option<u64>,
    keys: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let labels = read_labels(labels, None, "labels")?.values;
    let keys = read_keys(keys, labels.len())?;
    let split = split_rows(&labels, keys.as_deref(), train_fraction, seed)?;
    split_arrays(py, split)
}
