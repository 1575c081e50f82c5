//! The extension module `milan._milan`: the `Index` class over the Rust crate's
//! [`milan::Index`] (this file), `Extractor` and the image calls (`images.rs`), `Head`, `train`,
//! `evaluate` and `split` (`training.rs`). The Python package `milan` re-exports them with its
//! exceptions.
//!
//! Every call that touches the index, a model or a head runs with the GIL released: batch
//! searches run on every core (the crate's thread pool), and other Python threads run meanwhile.

mod convert;
mod errors;
mod images;
mod snapshot;
mod training;
mod watch;

use milan::WriteError;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use milan::{Code, Error, Hit, Index as RustIndex, IndexBuilder, Item, Reader};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use convert::{read_codes, read_ids, read_paths, read_strings};
use errors::{closed, Fail, Kind};
use images::{positive, PyExtractor};
use training::PyHead;
use watch::Watch;

/// An open milan index: binary hash codes stored in a directory, searched exactly by Hamming
/// distance.
///
/// Make one with ``Index.create(path, bits=64)`` or ``Index.open(path)``; use it as a context
/// manager (``with milan.Index.open(path) as index:``) or call ``close()``. One handle may be
/// used from many threads at once; other handles and other processes may use the same index,
/// and each call sees every transaction committed before it began.
///
/// Codes are given as a numpy ``uint8`` array of shape ``(n, bits // 8)`` in
/// ``numpy.packbits`` order (bit 0 of a code is the most significant bit of its first byte),
/// or one code as shape ``(bits // 8,)``. For 64-bit indexes a ``uint64`` array of shape
/// ``(n,)`` works too (or ``()`` for one code): the integer's most significant bit is the
/// code's first, so ``v`` is the code ``numpy.array([v], ">u8").view(numpy.uint8)``.
#[pyclass(module = "milan", name = "Index", frozen)]
struct PyIndex {
    /// `None` once closed.
    inner: RwLock<Option<RustIndex>>,
    /// Set when `close` begins: later calls fail at once, without waiting for the lock that
    /// `close` waits for (with the GIL held, that wait would stop every Python thread).
    closing: AtomicBool,
    path: PathBuf,
    bits: u32,
    read_only: bool,
    /// The index's own extractor, opened by the first image call given none.
    extractor: OnceLock<Py<PyExtractor>>,
}

/// What `search` returns: ids and distances, `[nq, k]` each.
pub(crate) type TopK<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<i32>>);

/// What `range_search` returns: lims, ids and distances.
pub(crate) type Ranges<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i32>>,
);

/// A lock timeout in seconds as a duration.
fn lock_timeout(seconds: f64) -> Result<Duration, Fail> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        Fail::value(format!(
            "lock_timeout must be a finite number of seconds, 0 or more; got {seconds}"
        ))
    })
}

/// An argument that must fit a `u32`, as `u32`.
fn small(value: i64, what: &str, expected: &str) -> Result<u32, Fail> {
    u32::try_from(value).map_err(|_| Fail::value(format!("{what} must be {expected}; got {value}")))
}

/// Room for `len` values, or a `MemoryError`.
fn room<T>(len: usize) -> Result<Vec<T>, Fail> {
    let mut values = Vec::new();
    values.try_reserve_exact(len).map_err(|_| {
        Fail::new(
            Kind::Memory,
            format!("cannot allocate the answer ({len} values)"),
        )
    })?;
    Ok(values)
}

impl PyIndex {
    fn new(index: RustIndex, read_only: bool) -> PyIndex {
        PyIndex {
            path: index.path().to_path_buf(),
            bits: index.bits(),
            read_only,
            inner: RwLock::new(Some(index)),
            closing: AtomicBool::new(false),
            extractor: OnceLock::new(),
        }
    }

    /// The extractor for an image call: the one given, or the index's own model (opened once,
    /// as `milan index add` opens it when given no `--model`).
    fn extractor_for(
        &self,
        py: Python<'_>,
        given: Option<Py<PyExtractor>>,
    ) -> PyResult<Py<PyExtractor>> {
        if let Some(given) = given {
            return Ok(given);
        }
        if let Some(own) = self.extractor.get() {
            return Ok(own.clone_ref(py));
        }
        let model = self.with(py, |index| Ok(index.model().cloned()))?;
        let Some(model) = model else {
            return Err(Fail::new(
                Kind::Mismatch,
                format!(
                    "{}: this index stores codes only; create it with milan.Index.create(path, extractor=..., head=...) to add images",
                    self.path.display()
                ),
            )
            .into());
        };
        let opened = Py::new(py, PyExtractor::for_index(py, &model)?)?;
        Ok(self.extractor.get_or_init(|| opened).clone_ref(py))
    }

    /// The `search` answer for `queries`: ids and distances, `[nq, k]` each, padded with -1.
    fn top_k<'py>(&self, py: Python<'py>, queries: Vec<Code>, k: i64) -> PyResult<TopK<'py>> {
        let k = checked_k(k, queries.len())?;
        let nq = queries.len();
        let (ids, distances) = self.with(py, |index| top_k_of(&index.reader()?, &queries, k))?;
        top_k_arrays(py, ids, distances, nq, k)
    }

    /// Runs `work` on the open index with the GIL released. Calls run side by side; `close`
    /// waits for those under way.
    fn with<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send,
        F: Send + FnOnce(&RustIndex) -> Result<T, Fail>,
    {
        py.detach(|| {
            let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
            let index = guard
                .as_ref()
                .filter(|_| !self.closing.load(Ordering::SeqCst))
                .ok_or_else(closed)?;
            work(index)
        })
        .map_err(PyErr::from)
    }

    /// Fails at once on a closed index, before the arguments are read.
    fn check_open(&self) -> PyResult<()> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(closed().into());
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), Fail> {
        if self.read_only {
            return Err(Error::Write(WriteError::ReadOnly {
                path: self.path.clone(),
            })
            .into());
        }
        Ok(())
    }
}

#[pymethods]
impl PyIndex {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = None)]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Err(Fail::type_(
            "milan.Index cannot be made directly: use milan.Index.create(path, bits=64) for a new \
             index or milan.Index.open(path) for an existing one",
        )
        .into())
    }

    /// Creates a new, empty index in the directory ``path`` (made if missing) and opens it for
    /// reading and writing.
    ///
    /// ``bits``: the code length, a multiple of 8 from 8 to 1024 (default 64, or the head's).
    /// ``substrings``: the number of multi-index-hashing substrings (default: the best for
    /// ``expected_size`` codes). ``expected_size``: the number of codes the index is expected
    /// to hold (default about a million); it only chooses the default substrings.
    /// ``lock_timeout``: seconds a write waits for another handle's or process's write before
    /// ``LockTimeoutError``.
    ///
    /// ``extractor`` and ``head`` (together) make an image index, as ``milan index create
    /// --model --head``: ``add_images`` and ``search_images`` then code images through them.
    /// The head must take the extractor's features (and, when bound to a model, that model).
    ///
    /// Raises ``IndexExistsError`` (a ``FileExistsError``) when an index is there already,
    /// ``InvalidArgumentError`` (a ``ValueError``) for bits or substrings out of range,
    /// ``MismatchError`` (a ``ValueError``) for a head that does not fit the extractor or bits.
    #[staticmethod]
    #[pyo3(signature = (path, bits=None, substrings=None, expected_size=None, lock_timeout=30.0, extractor=None, head=None))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        py: Python<'_>,
        path: PathBuf,
        bits: Option<i64>,
        substrings: Option<i64>,
        expected_size: Option<i64>,
        lock_timeout: f64,
        extractor: Option<&Bound<'_, PyExtractor>>,
        head: Option<&Bound<'_, PyHead>>,
    ) -> PyResult<PyIndex> {
        let images = match (extractor, head) {
            (None, None) => None,
            (Some(extractor), Some(head)) => {
                let model = extractor.get().contract().clone();
                Some((model, head.get().head.clone()))
            }
            _ => {
                return Err(Fail::value(
                    "an image index needs both extractor= and head= (a head codes the extractor's features)",
                )
                .into())
            }
        };
        let bits = match (bits, &images) {
            (Some(bits), _) => small(bits, "bits", "a multiple of 8 from 8 to 1024")?,
            (None, Some((_, head))) => head.bits(),
            (None, None) => 64,
        };
        let mut builder = RustIndex::builder(bits).lock_timeout(self::lock_timeout(lock_timeout)?);
        if let Some(substrings) = substrings {
            builder = builder.substrings(small(substrings, "substrings", "a positive number")?);
        }
        if let Some(expected) = expected_size {
            let expected = u64::try_from(expected).map_err(|_| {
                Fail::value(format!("expected_size must be 0 or more; got {expected}"))
            })?;
            builder = builder.expected_len(expected);
        }
        if let Some((model, head)) = images {
            builder = builder.images(model, head);
        }
        let index = py
            .detach(|| builder.create(&path))
            .map_err(|err| PyErr::from(Fail::from(err)))?;
        Ok(PyIndex::new(index, false))
    }

    /// Opens the index in the directory ``path``, for reading and writing, or for reading only
    /// with ``read_only=True`` (writes then raise ``ReadOnlyError``).
    ///
    /// Other handles and processes may have the index open at the same time: reads never wait,
    /// and a write waits up to ``lock_timeout`` seconds for another's before raising
    /// ``LockTimeoutError`` (a ``TimeoutError``).
    ///
    /// Raises ``NotAnIndexError`` (a ``FileNotFoundError``) when ``path`` holds no index.
    #[staticmethod]
    #[pyo3(signature = (path, read_only=false, lock_timeout=30.0))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        read_only: bool,
        lock_timeout: f64,
    ) -> PyResult<PyIndex> {
        let builder = IndexBuilder::default().lock_timeout(self::lock_timeout(lock_timeout)?);
        let index = py
            .detach(|| {
                if read_only {
                    builder.open_read_only(&path)
                } else {
                    builder.open(&path)
                }
            })
            .map_err(|err| PyErr::from(Fail::from(err)))?;
        Ok(PyIndex::new(index, read_only))
    }

    /// The index directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The code length in bits.
    #[getter]
    fn bits(&self) -> u32 {
        self.bits
    }

    /// Whether this handle was opened read-only.
    #[getter]
    fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Closes the handle: calls that begin later raise ``ClosedIndexError``, and the index is
    /// released once the calls under way on other threads end (``close`` waits for them).
    /// Closing twice does nothing.
    fn close(&self, py: Python<'_>) {
        self.closing.store(true, Ordering::SeqCst);
        py.detach(|| {
            let index = self.inner.write().unwrap_or_else(|e| e.into_inner()).take();
            drop(index);
        });
    }

    /// Returns the index itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the index.
    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    /// The number of live codes, as of the last commit of any handle or process.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let len = self.with(py, |index| Ok(index.len()))?;
        usize::try_from(len).map_err(|_| Fail::new(Kind::Milan, "too many codes").into())
    }

    /// ``<milan.Index '/path' bits=64>``, with ``read_only`` or ``closed`` when so.
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let state = if self.closed() {
            " closed"
        } else if self.read_only {
            " read_only"
        } else {
            ""
        };
        let path = self.path.clone().into_pyobject(py)?.str()?.repr()?;
        Ok(format!("<milan.Index {path} bits={}{state}>", self.bits))
    }

    /// Adds codes in one transaction; returns their new ids (``int64``, in order, never reused).
    ///
    /// ``codes``: ``uint8`` of shape ``(n, bits // 8)`` (numpy.packbits order) or
    /// ``(bits // 8,)`` for one code; for 64-bit indexes also ``uint64`` of shape ``(n,)``, the
    /// integer's most significant bit first. ``keys``, ``labels``: optional sequences of ``n``
    /// entries, each a ``str`` or ``None``.
    ///
    /// Either every code is added or, on any error, none: ``InvalidTypeError`` (a
    /// ``TypeError``) for a wrong dtype, ``InvalidArgumentError`` (a ``ValueError``) for a
    /// wrong shape, code length or number of keys, ``ReadOnlyError`` on a read-only handle,
    /// ``LockTimeoutError`` when another writer holds the index too long.
    #[pyo3(signature = (codes, keys=None, labels=None))]
    fn add<'py>(
        &self,
        py: Python<'py>,
        codes: &Bound<'py, PyAny>,
        keys: Option<&Bound<'py, PyAny>>,
        labels: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        self.check_open()?;
        let codes = read_codes(codes, self.bits, "codes")?;
        let n = codes.len();
        let keys = read_strings(keys, n, "keys")?;
        let labels = read_strings(labels, n, "labels")?;
        let codes = codes.to_codes()?;
        let ids = self.with(py, |index| {
            self.check_writable()?;
            if n == 0 {
                return Ok(Vec::new());
            }
            let mut writer = index.writer()?;
            let mut ids = room(n)?;
            for (i, code) in codes.iter().enumerate() {
                let item = Item {
                    key: keys.as_ref().and_then(|keys| keys[i].clone()),
                    label: labels.as_ref().and_then(|labels| labels[i].clone()),
                    ..Item::default()
                };
                ids.push(writer.add(code, item)? as i64);
            }
            writer.commit()?;
            Ok(ids)
        })?;
        Ok(PyArray1::from_vec(py, ids))
    }

    /// Deletes ids in one transaction; returns how many were deleted (an id given twice
    /// counts once).
    ///
    /// Every id must be live: an unknown or already deleted id raises ``UnknownIdError`` (a
    /// ``KeyError``) naming it, and nothing is deleted. ``ids``: a sequence of ints or a 1-D
    /// integer array.
    fn delete(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.check_open()?;
        let ids = read_ids(ids)?;
        self.with(py, |index| {
            self.check_writable()?;
            if ids.is_empty() {
                return Ok(0);
            }
            let mut writer = index.writer()?;
            let mut seen = HashSet::new();
            for &id in &ids {
                if !seen.insert(id) {
                    continue;
                }
                let deleted = match u64::try_from(id) {
                    Ok(id) => writer.delete(id)?,
                    Err(_) => false,
                };
                if !deleted {
                    // The writer is dropped uncommitted: nothing is deleted.
                    return Err(Fail::new(
                        Kind::UnknownId,
                        format!("no item with id {id} in the index; nothing was deleted"),
                    ));
                }
            }
            writer.commit()?;
            Ok(seen.len())
        })
    }

    /// The live ids stored under ``key``, increasing (``int64``); empty when none is.
    ///
    /// Keys need not be unique. The index keeps a lookup from keys to ids, so this does not
    /// read every item (an index of format 4 or older opened read-only is the exception: it has
    /// no lookup yet, and is read whole).
    fn ids_with_key<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyArray1<i64>>> {
        self.check_open()?;
        let ids = self.with(py, |index| {
            let ids = index.reader()?.ids_with_key(key)?;
            Ok(ids.into_iter().map(|id| id as i64).collect::<Vec<_>>())
        })?;
        Ok(PyArray1::from_vec(py, ids))
    }

    /// Deletes every item stored under each of ``keys``, in one transaction; returns the
    /// deleted ids (``int64``, increasing).
    ///
    /// A key with no live item raises ``UnknownIdError`` (a ``KeyError``) naming it, and nothing
    /// is deleted, as ``delete`` does for an unknown id. ``keys``: a sequence of str.
    fn delete_keys<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        self.check_open()?;
        let keys = read_key_list(keys)?;
        let mut deleted = self.with(py, |index| {
            self.check_writable()?;
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut writer = index.writer()?;
            let mut deleted = Vec::new();
            let mut seen = HashSet::new();
            for key in &keys {
                if !seen.insert(key.as_str()) {
                    continue;
                }
                let ids = writer.delete_key(key)?;
                if ids.is_empty() {
                    // The writer is dropped uncommitted: nothing is deleted.
                    return Err(Fail::new(
                        Kind::UnknownId,
                        format!("no item with key {key:?} in the index; nothing was deleted"),
                    ));
                }
                deleted.extend(ids.into_iter().map(|id| id as i64));
            }
            writer.commit()?;
            Ok(deleted)
        })?;
        deleted.sort_unstable();
        Ok(PyArray1::from_vec(py, deleted))
    }

    /// Adds each code in place of every item stored under its key, in one transaction: the new
    /// item gets a new id, and the items its key held before are deleted by the same commit.
    /// Afterwards each key holds exactly its new item (a key given twice: its last row).
    ///
    /// Returns ``(ids, replaced)``: the new ids (``int64``, one per code) and the ids that were
    /// replaced (``int64``, increasing; ids added earlier in this call and replaced by a later row
    /// of the same key are among them). ``codes`` and ``labels`` as for ``add``; ``keys`` is
    /// required, one str per code.
    #[pyo3(signature = (codes, keys, labels=None))]
    fn upsert<'py>(
        &self,
        py: Python<'py>,
        codes: &Bound<'py, PyAny>,
        keys: &Bound<'py, PyAny>,
        labels: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<IdArrays<'py>> {
        self.check_open()?;
        let codes = read_codes(codes, self.bits, "codes")?;
        let n = codes.len();
        let keys = read_key_list(keys)?;
        if keys.len() != n {
            return Err(Fail::value(format!(
                "keys must hold one str per code: got {} keys for {n} codes",
                keys.len()
            ))
            .into());
        }
        let labels = read_strings(labels, n, "labels")?;
        let codes = codes.to_codes()?;
        let (ids, mut replaced) = self.with(py, |index| {
            self.check_writable()?;
            if n == 0 {
                return Ok((Vec::new(), Vec::new()));
            }
            let mut writer = index.writer()?;
            let mut ids = room(n)?;
            let mut replaced = Vec::new();
            for (i, code) in codes.iter().enumerate() {
                let item = Item {
                    key: Some(keys[i].clone()),
                    label: labels.as_ref().and_then(|labels| labels[i].clone()),
                    ..Item::default()
                };
                let upserted = writer.upsert(code, item)?;
                ids.push(upserted.id as i64);
                replaced.extend(upserted.replaced.into_iter().map(|id| id as i64));
            }
            writer.commit()?;
            Ok((ids, replaced))
        })?;
        replaced.sort_unstable();
        Ok((
            PyArray1::from_vec(py, ids),
            PyArray1::from_vec(py, replaced),
        ))
    }

    /// The ``k`` nearest codes to each query, by Hamming distance, then id.
    ///
    /// Returns ``(ids, distances)``: ``int64`` and ``int32`` arrays of shape ``(nq, k)``, row
    /// ``i`` for query ``i``, ordered by distance, then id; where the index holds fewer than
    /// ``k`` codes, the rows end in ``-1`` ids at distance ``-1``. Ids come first, unlike
    /// FAISS's ``D, I``. ``codes``: as for ``add``; one code of shape ``(bits // 8,)`` (or a
    /// 0-d ``uint64``) is one query, answered as one row. The queries run in parallel on every
    /// core, with the GIL released. Exact: the same answer as comparing every stored code.
    #[pyo3(signature = (codes, k=20))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        codes: &Bound<'py, PyAny>,
        k: i64,
    ) -> PyResult<TopK<'py>> {
        self.check_open()?;
        let queries = read_codes(codes, self.bits, "queries")?;
        checked_k(k, 0)?;
        let queries = queries.to_codes()?;
        self.top_k(py, queries, k)
    }

    /// The index as of its last commit, held for many searches (a ``Snapshot``): its calls
    /// skip the fresh read of the last commit that each ``Index`` call begins (about 3 µs), for
    /// loops of single queries. It answers from that commit whatever is committed later; close
    /// it (or use it as a context manager) when done, since an open snapshot holds its read.
    fn snapshot(&self, py: Python<'_>) -> PyResult<snapshot::PySnapshot> {
        self.check_open()?;
        let reader = self.with(py, |index| Ok(index.reader()?))?;
        Ok(snapshot::PySnapshot::new(reader, self.bits))
    }

    /// Every code within ``radius`` bits of each query, in FAISS's range-search layout.
    ///
    /// Returns ``(lims, ids, distances)``: ``lims`` is ``int64`` of shape ``(nq + 1,)``, and
    /// the answers of query ``i`` are ``ids[lims[i]:lims[i + 1]]`` (``int64``) at
    /// ``distances[lims[i]:lims[i + 1]]`` (``int32``), ordered by distance, then id (ids come
    /// before distances, unlike FAISS's ``lims, D, I``).
    /// ``radius``: 0 to ``bits``, inclusive. ``codes``: as for ``search``. Parallel and exact
    /// like ``search``.
    fn range_search<'py>(
        &self,
        py: Python<'py>,
        codes: &Bound<'py, PyAny>,
        radius: i64,
    ) -> PyResult<Ranges<'py>> {
        self.check_open()?;
        let queries = read_codes(codes, self.bits, "queries")?;
        let radius = checked_radius(radius, self.bits)?;
        let queries = queries.to_codes()?;
        let (lims, ids, distances) =
            self.with(py, |index| ranges_of(&index.reader()?, &queries, radius))?;
        Ok(ranges_arrays(py, lims, ids, distances))
    }

    /// Adds image files through the index's model and hash head, as ``milan index add``: the
    /// same codes, keys (each path made absolute) and skips. Returns the report that
    /// ``milan index add --json`` prints: a dict with ``added``, ``already_indexed`` (content
    /// already in the index), ``duplicates`` (content met earlier in the call), ``failed`` (a
    /// list of dicts with ``path``, ``reason`` and ``detail``), ``failed_by_reason``, ``ids``
    /// (the first and last id handed out, or ``None``), ``device``, ``seconds`` and
    /// ``cancelled``.
    ///
    /// ``paths``: image files (a folder is reported as ``not_a_file``; list its files with
    /// ``pathlib.Path.rglob``). ``extractor``: the model to run (default: the one the index
    /// was created with, opened once per handle); another model is refused with
    /// ``MismatchError``. ``label_from_dir``: label each image with its folder's name.
    /// ``keep_features``: keep the feature vectors in the index (implied when it keeps them
    /// already). ``lenient``: accept truncated JPEGs. ``batch_size`` images per model run
    /// (default: by device, 16 on the CPU, up to 256 on a large GPU);
    /// a commit every ``commit_every`` images. ``progress``: called as
    /// ``progress(done, total)`` after each batch.
    ///
    /// Files that cannot be read or decoded are skipped and listed, not raised. Runs with the
    /// GIL released; Ctrl-C (or an exception from ``progress``) stops after the batch in hand,
    /// keeping what was committed, and is raised.
    #[pyo3(signature = (paths, extractor=None, label_from_dir=false, keep_features=false, lenient=false, batch_size=None, commit_every=512, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_images<'py>(
        &self,
        py: Python<'py>,
        paths: &Bound<'py, PyAny>,
        extractor: Option<Py<PyExtractor>>,
        label_from_dir: bool,
        keep_features: bool,
        lenient: bool,
        batch_size: Option<i64>,
        commit_every: i64,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.check_open()?;
        let paths = read_paths(paths, "paths")?;
        let how = images::AddImages {
            label_from_dir,
            keep_features,
            lenient,
            batch_size: batch_size.map(|n| positive(n, "batch_size")).transpose()?,
            commit_every: positive(commit_every, "commit_every")?,
        };
        self.check_writable()?;
        let extractor = self.extractor_for(py, extractor)?;
        let watch = Watch::new(progress);
        let result = self.with(py, |index| {
            let mut extractor = extractor.get().lock();
            images::add_files(index, &mut extractor, &paths, &how, &watch)
        });
        let report = watch.finish(result)?;
        images::from_json(py, &report)
    }

    /// The ``k`` nearest codes to each image, coded by the index's model and head as
    /// ``add_images`` codes them: ``(ids, distances)`` as ``search`` returns them, row ``i``
    /// for ``paths[i]``.
    ///
    /// ``extractor``, ``batch_size``, ``lenient``: as for ``add_images``. Raises
    /// ``ImageError`` (a ``ValueError``) naming the first image that cannot be read or decoded.
    #[pyo3(signature = (paths, k=20, extractor=None, batch_size=None, lenient=false))]
    fn search_images<'py>(
        &self,
        py: Python<'py>,
        paths: &Bound<'py, PyAny>,
        k: i64,
        extractor: Option<Py<PyExtractor>>,
        batch_size: Option<i64>,
        lenient: bool,
    ) -> PyResult<TopK<'py>> {
        self.check_open()?;
        let paths = read_paths(paths, "paths")?;
        if k < 1 {
            return Err(Fail::value(format!("k must be at least 1; got {k}")).into());
        }
        let batch_size = batch_size.map(|n| positive(n, "batch_size")).transpose()?;
        let extractor = self.extractor_for(py, extractor)?;
        let watch = Watch::new(None);
        let result = self.with(py, |index| {
            let mut extractor = extractor.get().lock();
            let batch_size = batch_size.unwrap_or_else(|| extractor.default_batch_size());
            images::code_files(index, &mut extractor, &paths, batch_size, lenient, &watch)
        });
        let queries = watch.finish(result)?;
        self.top_k(py, queries, k)
    }

    /// The hash head of an image index (a ``Head``), or ``None`` for a codes-only index.
    #[getter]
    fn head(&self, py: Python<'_>) -> PyResult<Option<PyHead>> {
        self.with(py, |index| {
            Ok(index.head().map(|head| PyHead {
                head: (*head).clone(),
            }))
        })
    }

    /// The model an image index is bound to: a dict with ``path``, ``fingerprint`` (hex),
    /// ``input``, ``layout``, ``input_size``, ``pixel_range``, ``output`` and ``dim``; ``None``
    /// for a codes-only index.
    #[getter]
    fn model<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let model = self.with(py, |index| Ok(index.model().cloned()))?;
        model
            .map(|model| images::model_dict(py, &model))
            .transpose()
    }

    /// The live ids, increasing (``int64``).
    fn ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let ids = self.with(py, |index| {
            let reader = index.reader()?;
            Ok(reader.ids().map(|id| id as i64).collect::<Vec<_>>())
        })?;
        Ok(PyArray1::from_vec(py, ids))
    }

    /// The keys stored with ``ids``, a list of ``str`` or ``None`` (an id added without a key).
    ///
    /// Raises ``UnknownIdError`` (a ``KeyError``) for an id that is not live.
    fn keys(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<Vec<Option<String>>> {
        self.items(py, ids, |item| item.key)
    }

    /// The labels stored with ``ids``, a list of ``str`` or ``None`` (an id added without one).
    ///
    /// Raises ``UnknownIdError`` (a ``KeyError``) for an id that is not live.
    fn labels(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<Vec<Option<String>>> {
        self.items(py, ids, |item| item.label)
    }

    /// The codes stored under ``ids``: ``uint8`` of shape ``(len(ids), bits // 8)``, in
    /// numpy.packbits order.
    ///
    /// Raises ``UnknownIdError`` (a ``KeyError``) for an id that is not live.
    fn codes<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<u8>>> {
        self.check_open()?;
        let ids = read_ids(ids)?;
        let width = self.bits as usize / 8;
        let bytes = self.with(py, |index| {
            let reader = index.reader()?;
            let mut bytes = room::<u8>(ids.len() * width)?;
            for &id in &ids {
                let code = u64::try_from(id)
                    .ok()
                    .and_then(|id| reader.code(id))
                    .ok_or_else(|| unknown(id))?;
                bytes.extend_from_slice(code.as_bytes());
            }
            Ok(bytes)
        })?;
        PyArray1::from_vec(py, bytes).reshape([ids.len(), width])
    }

    /// Facts about the index, as of the last commit: a dict with ``path``, ``format_version``,
    /// ``bits``, ``substrings``, ``recommended_substrings``, ``len``, ``next_id``,
    /// ``file_bytes``, ``memory_bytes``, ``created_by``, ``written_by`` and ``read_only``.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = self.with(py, |index| Ok(index.info()))?;
        let dict = PyDict::new(py);
        dict.set_item("path", info.path)?;
        dict.set_item("format_version", info.format_version)?;
        dict.set_item("bits", info.bits)?;
        dict.set_item("substrings", info.substrings)?;
        dict.set_item("recommended_substrings", info.recommended_substrings)?;
        dict.set_item("len", info.len)?;
        dict.set_item("next_id", info.next_id)?;
        dict.set_item("file_bytes", info.file_bytes)?;
        dict.set_item("memory_bytes", info.memory_bytes)?;
        dict.set_item("created_by", info.created_by)?;
        dict.set_item("written_by", info.written_by)?;
        dict.set_item("read_only", self.read_only)?;
        Ok(dict)
    }

    /// Checks every invariant of the stored index (each live code in its hash-table buckets,
    /// no dangling ids, consistent counts, and on a writable handle the storage engine's own
    /// structure). Waits for the calls under way on this handle, and holds the others back
    /// while it runs.
    ///
    /// Returns a dict: ``ok`` (bool), ``problems`` (a list of ``str``, empty when sound),
    /// ``unlisted`` (problems beyond the listed ones), ``codes`` (live codes) and
    /// ``storage_ok`` (``None`` when not checked: read-only handles).
    fn check<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = py
            .detach(|| {
                let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
                let index = guard
                    .as_mut()
                    .filter(|_| !self.closing.load(Ordering::SeqCst))
                    .ok_or_else(closed)?;
                index.verify().map_err(Fail::from)
            })
            .map_err(PyErr::from)?;
        let dict = PyDict::new(py);
        dict.set_item("ok", report.is_ok())?;
        dict.set_item("problems", report.problems.clone())?;
        dict.set_item("unlisted", report.unlisted)?;
        dict.set_item("codes", report.codes)?;
        dict.set_item("storage_ok", report.storage_ok)?;
        Ok(dict)
    }
}

impl PyIndex {
    /// One field of the items of `ids`, read from one snapshot.
    fn items(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        field: fn(Item) -> Option<String>,
    ) -> PyResult<Vec<Option<String>>> {
        self.check_open()?;
        let ids = read_ids(ids)?;
        self.with(py, |index| {
            let reader = index.reader()?;
            let mut values = room(ids.len())?;
            for &id in &ids {
                let item = match u64::try_from(id) {
                    Ok(id) => reader.item(id)?,
                    Err(_) => None,
                };
                values.push(field(item.ok_or_else(|| unknown(id))?));
            }
            Ok(values)
        })
    }
}

/// `k` as a count, refused below 1 or when `nq` rows of it cannot be held.
pub(crate) fn checked_k(k: i64, nq: usize) -> Result<usize, Fail> {
    if k < 1 {
        return Err(Fail::value(format!("k must be at least 1; got {k}")));
    }
    let k = usize::try_from(k).map_err(|_| Fail::value(format!("k is too large: {k}")))?;
    nq.checked_mul(k)
        .ok_or_else(|| Fail::value(format!("k is too large: {k} for {nq} queries")))?;
    Ok(k)
}

/// `radius` as a distance, refused below 0 (above the code length, the search refuses it).
pub(crate) fn checked_radius(radius: i64, bits: u32) -> Result<u32, Fail> {
    if radius < 0 {
        return Err(Fail::value(format!(
            "radius must be 0 to {bits} (the code length); got {radius}"
        )));
    }
    Ok(u32::try_from(radius).unwrap_or(u32::MAX))
}

/// The `k` nearest of each query in `reader`'s snapshot, as rows of ids and distances padded
/// with -1. Runs without the GIL.
pub(crate) fn top_k_of(
    reader: &Reader,
    queries: &[Code],
    k: usize,
) -> Result<(Vec<i64>, Vec<i32>), Fail> {
    let total = queries.len() * k;
    let mut ids = room::<i64>(total)?;
    let mut distances = room::<i32>(total)?;
    let answers = reader.search_batch(queries)?.top_k(k)?;
    for hits in &answers {
        for hit in hits.iter().take(k) {
            ids.push(hit.id as i64);
            distances.push(hit.distance as i32);
        }
        for _ in hits.len().min(k)..k {
            ids.push(-1);
            distances.push(-1);
        }
    }
    Ok((ids, distances))
}

pub(crate) fn top_k_arrays<'py>(
    py: Python<'py>,
    ids: Vec<i64>,
    distances: Vec<i32>,
    nq: usize,
    k: usize,
) -> PyResult<TopK<'py>> {
    Ok((
        PyArray1::from_vec(py, ids).reshape([nq, k])?,
        PyArray1::from_vec(py, distances).reshape([nq, k])?,
    ))
}

/// `range_search`'s lims, ids and distances before they become arrays.
pub(crate) type RangeRows = (Vec<i64>, Vec<i64>, Vec<i32>);

/// Every code within `radius` of each query in `reader`'s snapshot, in FAISS's layout. Runs
/// without the GIL.
pub(crate) fn ranges_of(reader: &Reader, queries: &[Code], radius: u32) -> Result<RangeRows, Fail> {
    let answers = reader.search_batch(queries)?.within(radius)?;
    let total: usize = answers.iter().map(Vec::len).sum();
    let mut lims = room::<i64>(answers.len() + 1)?;
    let mut ids = room::<i64>(total)?;
    let mut distances = room::<i32>(total)?;
    lims.push(0);
    for hits in &answers {
        for &Hit { id, distance } in hits {
            ids.push(id as i64);
            distances.push(distance as i32);
        }
        lims.push(ids.len() as i64);
    }
    Ok((lims, ids, distances))
}

pub(crate) fn ranges_arrays<'py>(
    py: Python<'py>,
    lims: Vec<i64>,
    ids: Vec<i64>,
    distances: Vec<i32>,
) -> Ranges<'py> {
    (
        PyArray1::from_vec(py, lims),
        PyArray1::from_vec(py, ids),
        PyArray1::from_vec(py, distances),
    )
}

/// Two id arrays: an upsert's new ids and the ids it replaced.
type IdArrays<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

/// Reads a sequence of str keys (not a single str, which would be read as its characters).
fn read_key_list(obj: &Bound<'_, PyAny>) -> Result<Vec<String>, Fail> {
    let expected = "keys must be a sequence of str";
    if obj.is_instance_of::<pyo3::types::PyString>() || obj.is_instance_of::<pyo3::types::PyBytes>()
    {
        return Err(Fail::type_(format!(
            "{expected}; got a single {} (wrap it in a list)",
            obj.get_type()
                .name()
                .map(|name| name.to_string())
                .unwrap_or_default()
        )));
    }
    obj.extract::<Vec<String>>()
        .map_err(|err| Fail::type_(format!("{expected}; {err}")))
}

/// The failure for an id that is not live.
fn unknown(id: i64) -> Fail {
    Fail::new(
        Kind::UnknownId,
        format!("no item with id {id} in the index"),
    )
}

/// milan's extension module: the ``Index`` class. Import the package ``milan`` instead, which
/// re-exports it with the exceptions.
#[pymodule]
fn _milan(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyIndex>()?;
    m.add_class::<snapshot::PySnapshot>()?;
    m.add_class::<PyExtractor>()?;
    m.add_class::<PyHead>()?;
    m.add_function(wrap_pyfunction!(training::py_train, m)?)?;
    m.add_function(wrap_pyfunction!(training::py_evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(training::py_split, m)?)?;
    m.add_function(wrap_pyfunction!(images::py_content_hash, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
