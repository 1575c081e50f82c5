//! Failures and the Python exceptions they become.
//!
//! The exception classes live in the Python module `milan._errors` (so that they can derive from
//! two built-in exceptions, such as `MilanError` and `TimeoutError`); a [`Fail`] names the class
//! and carries the message, and becomes a Python exception once the GIL is held again.

use milan::Error;
use milan::{CodeError, ExtractError, OpenError, SearchError, TrainError, WriteError};
use pyo3::exceptions::{PyMemoryError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyType;

/// The Python exception class of a failure (a class of `milan._errors`, or a built-in one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `MilanError`: every failure without a more precise class.
    Milan,
    /// `NotAnIndexError` (a `FileNotFoundError`).
    NotAnIndex,
    /// `IndexExistsError` (a `FileExistsError`).
    IndexExists,
    /// `LockTimeoutError` (a `TimeoutError`).
    LockTimeout,
    /// `ReadOnlyError` (a `PermissionError`).
    ReadOnly,
    /// `CorruptedError`.
    Corrupted,
    /// `IndexVersionError`.
    Version,
    /// `InvalidArgumentError` (a `ValueError`).
    InvalidArgument,
    /// `InvalidTypeError` (a `TypeError`).
    InvalidType,
    /// `UnknownIdError` (a `KeyError`).
    UnknownId,
    /// `ClosedIndexError` (a `ValueError`).
    Closed,
    /// `StorageError` (an `OSError`).
    Storage,
    /// The built-in `MemoryError`.
    Memory,
    /// `ModelError`: an ONNX model or ONNX Runtime that cannot be found, loaded or run.
    Model,
    /// `MismatchError` (a `ValueError`): a model or head that is not the one an index or a
    /// head is made for.
    Mismatch,
    /// `ImageError` (a `ValueError`): an image that cannot be read or decoded.
    Image,
    /// `HeadError` (a `ValueError`): bytes or a file that are not a usable hash head.
    Head,
}

impl Kind {
    /// The class name in `milan._errors`.
    fn class_name(self) -> &'static str {
        match self {
            Kind::Milan => "MilanError",
            Kind::NotAnIndex => "NotAnIndexError",
            Kind::IndexExists => "IndexExistsError",
            Kind::LockTimeout => "LockTimeoutError",
            Kind::ReadOnly => "ReadOnlyError",
            Kind::Corrupted => "CorruptedError",
            Kind::Version => "IndexVersionError",
            Kind::InvalidArgument => "InvalidArgumentError",
            Kind::InvalidType => "InvalidTypeError",
            Kind::UnknownId => "UnknownIdError",
            Kind::Closed => "ClosedIndexError",
            Kind::Storage => "StorageError",
            Kind::Memory => "MemoryError",
            Kind::Model => "ModelError",
            Kind::Mismatch => "MismatchError",
            Kind::Image => "ImageError",
            Kind::Head => "HeadError",
        }
    }
}

/// A failure on its way to Python: made without the GIL, raised with it.
#[derive(Debug)]
pub struct Fail {
    kind: Kind,
    message: String,
}

impl Fail {
    pub fn new(kind: Kind, message: impl Into<String>) -> Fail {
        Fail {
            kind,
            message: message.into(),
        }
    }

    /// A `ValueError` (`InvalidArgumentError`).
    pub fn value(message: impl Into<String>) -> Fail {
        Fail::new(Kind::InvalidArgument, message)
    }

    /// A `TypeError` (`InvalidTypeError`).
    pub fn type_(message: impl Into<String>) -> Fail {
        Fail::new(Kind::InvalidType, message)
    }

    /// The Python exception.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        if self.kind == Kind::Memory {
            return PyMemoryError::new_err(self.message);
        }
        match class(py, self.kind.class_name()) {
            Ok(class) => PyErr::from_type(class, self.message),
            // Only when milan._errors cannot be imported, which the package always does first.
            Err(err) => PyTypeError::new_err(format!("{} ({err})", self.message)),
        }
    }
}

fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py
        .import("milan._errors")?
        .getattr(name)?
        .cast_into::<PyType>()?)
}

impl From<Fail> for PyErr {
    fn from(fail: Fail) -> PyErr {
        Python::attach(|py| fail.into_pyerr(py))
    }
}

impl From<Error> for Fail {
    /// The class that mirrors the error's variant, and its message followed by its causes (an
    /// I/O or storage error names the file, and its cause says what went wrong).
    fn from(err: Error) -> Fail {
        let kind = match &err {
            Error::Open(OpenError::MissingDirectory { .. })
            | Error::Open(OpenError::NotADirectory { .. })
            | Error::Open(OpenError::NotAnIndex { .. }) => Kind::NotAnIndex,
            Error::Open(OpenError::AlreadyExists { .. }) => Kind::IndexExists,
            Error::Write(WriteError::LockTimeout { .. }) => Kind::LockTimeout,
            Error::Write(WriteError::ReadOnly { .. }) => Kind::ReadOnly,
            Error::Corrupted { .. } => Kind::Corrupted,
            Error::Open(OpenError::TooNew { .. })
            | Error::Open(OpenError::UpgradeRequired { .. }) => Kind::Version,
            Error::UnknownId { .. } => Kind::UnknownId,
            Error::Code(CodeError::Layout(_))
            | Error::Code(CodeError::InvalidBits { .. })
            | Error::Code(CodeError::CodeLength { .. })
            | Error::Code(CodeError::CodeLengthsDiffer { .. })
            | Error::Code(CodeError::InvalidCode { .. })
            | Error::Search(SearchError::RadiusTooLarge { .. })
            | Error::Search(SearchError::ZeroK)
            | Error::Write(WriteError::ItemTooLarge { .. })
            | Error::InvalidArgument { .. }
            | Error::Train(TrainError::LengthMismatch { .. })
            | Error::Open(OpenError::BitsMismatch { .. })
            | Error::Open(OpenError::SubstringsMismatch { .. })
            | Error::Extract(ExtractError::FeatureDim { .. })
            | Error::Train(TrainError::EmptyData { .. })
            | Error::Train(TrainError::NonFiniteFeature { .. })
            | Error::Train(TrainError::ClassTooSmall { .. })
            | Error::Train(TrainError::TooFewClasses { .. })
            | Error::Train(TrainError::BadData { .. }) => Kind::InvalidArgument,
            Error::Extract(ExtractError::Runtime { .. })
            | Error::Extract(ExtractError::Model { .. }) => Kind::Model,
            Error::Extract(ExtractError::Mismatch { .. }) => Kind::Mismatch,
            Error::Extract(ExtractError::Image { .. }) => Kind::Image,
            Error::Extract(ExtractError::BadHead { .. }) => Kind::Head,
            Error::Io { .. } | Error::Storage { .. } => Kind::Storage,
            _ => Kind::Milan,
        };
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Fail::new(kind, message)
    }
}

/// The failure of any use of a closed index.
pub fn closed() -> Fail {
    Fail::new(
        Kind::Closed,
        "the index is closed; open it again with milan.Index.open(path)",
    )
}
