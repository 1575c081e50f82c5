//! Long calls (image batches, training) run without the GIL; between units of work a [`Watch`]
//! takes the GIL back for a moment, to see Ctrl-C and to call the caller's progress function.
//! A Python exception there (`KeyboardInterrupt`, or one the progress function raised) stops the
//! work at that point, and is raised when the call returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

pub struct Watch {
    /// Set once the work must stop; the library's loops poll it.
    pub cancel: AtomicBool,
    raised: Mutex<Option<PyErr>>,
    progress: Option<Py<PyAny>>,
}

impl Watch {
    /// A watch calling `progress` (a Python callable, or `None`) at each [`Watch::tick`].
    pub fn new(progress: Option<Py<PyAny>>) -> Watch {
        Watch {
            cancel: AtomicBool::new(false),
            raised: Mutex::new(None),
            progress: progress.filter(|callable| Python::attach(|py| !callable.is_none(py))),
        }
    }

    /// Checks for Ctrl-C, then calls the progress function with `args`. Returns whether the
    /// work may go on; when not, [`Watch::cancel`] is set and the exception kept.
    pub fn tick<'py, F>(&self, args: F) -> bool
    where
        F: for<'a> FnOnce(Python<'a>) -> PyResult<Bound<'a, PyTuple>>,
    {
        if self.cancel.load(Ordering::Relaxed) {
            return false;
        }
        let outcome = Python::attach(|py| {
            py.check_signals()?;
            if let Some(progress) = &self.progress {
                progress.call1(py, args(py)?)?;
            }
            Ok::<(), PyErr>(())
        });
        match outcome {
            Ok(()) => true,
            Err(err) => {
                *self.raised.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                self.cancel.store(true, Ordering::Relaxed);
                false
            }
        }
    }

    /// The call's outcome: the exception that stopped the work if there is one, else `result`.
    pub fn finish<T>(&self, result: Result<T, PyErr>) -> PyResult<T> {
        match self.raised.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(err) => Err(err),
            None => result,
        }
    }
}
