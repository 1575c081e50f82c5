//! `milan.Snapshot`: one commit of an index held for many searches, so that a call pays for the
//! search and the binding alone, not for beginning a read of the last commit each time.

use std::sync::RwLock;

use milan::Reader;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::read_codes;
use crate::errors::{Fail, Kind};
use crate::{checked_k, checked_radius, ranges_arrays, ranges_of, top_k_arrays, top_k_of};
use crate::{Ranges, TopK};

/// The index as of one commit, for many searches: ``Index.snapshot()`` makes one.
///
/// ``search`` and ``range_search`` take and return what ``Index``'s do, and answer from the
/// commit the snapshot was taken at, whatever is committed later. Each ``Index`` call begins a
/// fresh read of the last commit (about 3 µs); a snapshot begins it once, which is what a loop of
/// single queries wants. While it is open, the index cannot be compacted (``Index.check`` and
/// the command line's ``index compact`` wait for no open reader): close it, or use it as a
/// context manager.
#[pyclass(module = "milan", name = "Snapshot", frozen)]
pub struct PySnapshot {
    /// `None` once closed.
    reader: RwLock<Option<Reader>>,
    bits: u32,
}

impl PySnapshot {
    pub fn new(reader: Reader, bits: u32) -> PySnapshot {
        PySnapshot {
            reader: RwLock::new(Some(reader)),
            bits,
        }
    }

    /// Runs `work` on the open snapshot with the GIL released.
    fn with<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send,
        F: Send + FnOnce(&Reader) -> Result<T, Fail>,
    {
        py.detach(|| {
            let guard = self.reader.read().unwrap_or_else(|e| e.into_inner());
            let reader = guard.as_ref().ok_or_else(|| {
                Fail::new(
                    Kind::Closed,
                    "this snapshot is closed; take another with Index.snapshot()",
                )
            })?;
            work(reader)
        })
        .map_err(PyErr::from)
    }
}

#[pymethods]
impl PySnapshot {
    /// The ``k`` nearest codes to each query, as ``Index.search``.
    #[pyo3(signature = (codes, k=20))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        codes: &Bound<'py, PyAny>,
        k: i64,
    ) -> PyResult<TopK<'py>> {
        let queries = read_codes(codes, self.bits, "queries")?.to_codes()?;
        let nq = queries.len();
        let k = checked_k(k, nq)?;
        let (ids, distances) = self.with(py, |reader| top_k_of(reader, &queries, k))?;
        top_k_arrays(py, ids, distances, nq, k)
    }

    /// Every code within ``radius`` bits of each query, as ``Index.range_search``.
    fn range_search<'py>(
        &self,
        py: Python<'py>,
        codes: &Bound<'py, PyAny>,
        radius: i64,
    ) -> PyResult<Ranges<'py>> {
        let queries = read_codes(codes, self.bits, "queries")?.to_codes()?;
        let radius = checked_radius(radius, self.bits)?;
        let (lims, ids, distances) = self.with(py, |reader| ranges_of(reader, &queries, radius))?;
        Ok(ranges_arrays(py, lims, ids, distances))
    }

    /// The number of live codes in the snapshot.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |reader| Ok(reader.len() as usize))
    }

    /// The code length in bits.
    #[getter]
    fn bits(&self) -> u32 {
        self.bits
    }

    /// Whether ``close`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.reader
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Ends the snapshot's read; later calls raise ``ClosedIndexError``. Closing twice is fine.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            self.reader
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }
}
