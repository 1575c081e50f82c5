//! Python inputs to Rust values: codes from numpy arrays, ids, keys and labels, each refused
//! with a message that names what was expected and what was given.

use std::path::PathBuf;

use milan::Code;
use numpy::ndarray::Array2;
use numpy::{
    PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyString};

use crate::errors::{Fail, Kind};

/// Packed codes, one after another, `width` bytes each.
pub struct Codes {
    bytes: Vec<u8>,
    width: usize,
}

impl Codes {
    pub fn len(&self) -> usize {
        self.bytes.len() / self.width
    }

    /// The codes as the engine's type.
    pub fn to_codes(&self) -> Result<Vec<Code>, Fail> {
        self.bytes
            .chunks_exact(self.width)
            .map(|bytes| Code::from_bytes(bytes).map_err(Fail::from))
            .collect()
    }
}

/// A shape as Python writes it: `(3, 8)`, `(5,)`, `()`.
pub fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What codes of an index of `bits` bits may be given as.
fn expected_codes(bits: u32) -> String {
    let width = bits / 8;
    let packed = format!(
        "a numpy uint8 array of shape (n, {width}) in numpy.packbits order (or ({width},) for one code)"
    );
    if bits == 64 {
        format!("{packed}, or a numpy uint64 array of shape (n,) (or () for one code)")
    } else {
        packed
    }
}

/// The Python type name of `obj`, for messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `obj` as a numpy array: an array as it is, a numpy scalar as a 0-d array, anything else
/// `None`.
fn as_array<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyUntypedArray>>> {
    if let Ok(array) = obj.cast::<PyUntypedArray>() {
        return Ok(Some(array.clone()));
    }
    let numpy = obj.py().import("numpy")?;
    if obj.is_instance(&numpy.getattr("generic")?)? {
        let array = numpy.call_method1("asarray", (obj,))?;
        return Ok(array.cast_into::<PyUntypedArray>().ok());
    }
    Ok(None)
}

/// Reads `what` (codes to add, or queries) for an index of `bits`-bit codes: a uint8 array
/// `[n, bits / 8]` or `[bits / 8]` (one code), or for 64-bit codes a uint64 array `[n]` or `[]`
/// (one code), the integer's most significant bit the code's first.
pub fn read_codes(obj: &Bound<'_, PyAny>, bits: u32, what: &str) -> PyResult<Codes> {
    let py = obj.py();
    let width = bits as usize / 8;
    let expected = expected_codes(bits);
    let Some(array) = as_array(obj)? else {
        return Err(Fail::type_(format!(
            "{what} must be {expected}; got {} (convert it with numpy.asarray(..., dtype=numpy.uint8))",
            type_name(obj)
        ))
        .into());
    };
    let dtype = array.dtype();
    let shape = array.shape().to_vec();
    if dtype.is_equiv_to(&numpy::dtype::<u8>(py)) {
        let fits = match shape.as_slice() {
            [_, columns] => *columns == width,
            [len] => *len == width,
            _ => false,
        };
        if !fits {
            return Err(Fail::value(format!(
                "{what} must be {expected}: the index stores {bits}-bit codes ({width} bytes each); got a uint8 array of shape {}",
                shape_text(&shape)
            ))
            .into());
        }
        let array = array
            .cast::<PyArrayDyn<u8>>()?
            .try_readonly()
            .map_err(|err| Fail::value(format!("{what} cannot be read: {err}")))?;
        // In the logical (row-major) order, whatever the memory order: a Fortran-ordered or
        // strided array is read element by element.
        let view = array.as_array();
        let bytes = match view.as_slice() {
            Some(slice) => slice.to_vec(),
            None => view.iter().copied().collect(),
        };
        return Ok(Codes { bytes, width });
    }
    if dtype.is_equiv_to(&numpy::dtype::<u64>(py)) {
        if bits != 64 {
            return Err(Fail::type_(format!(
                "{what} must be {expected}: uint64 codes are only for 64-bit indexes, and this one stores {bits}-bit codes"
            ))
            .into());
        }
        if shape.len() > 1 {
            return Err(Fail::value(format!(
                "{what} must be {expected}; got a uint64 array of shape {}",
                shape_text(&shape)
            ))
            .into());
        }
        let array = array
            .cast::<PyArrayDyn<u64>>()?
            .try_readonly()
            .map_err(|err| Fail::value(format!("{what} cannot be read: {err}")))?;
        let view = array.as_array();
        let mut bytes = Vec::with_capacity(view.len() * 8);
        for value in view.iter() {
            bytes.extend_from_slice(&value.to_be_bytes());
        }
        return Ok(Codes { bytes, width });
    }
    let hint = if dtype.kind() == b'b' {
        " (pack bits into bytes with numpy.packbits(bits, axis=-1))"
    } else {
        ""
    };
    let dtype_text = dtype.str().map(|s| s.to_string()).unwrap_or_default();
    Err(Fail::type_(format!(
        "{what} must be {expected}; got an array of dtype {dtype_text}{hint}"
    ))
    .into())
}

const EXPECTED_IDS: &str = "a sequence of ints or a 1-D numpy integer array";

/// Reads ids: a 1-D integer array or a sequence of ints (not a single int, which would leave
/// the shape of the answer unclear).
pub fn read_ids(obj: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    if let Some(array) = as_array(obj)? {
        let shape = array.shape().to_vec();
        if shape.len() != 1 {
            return Err(Fail::value(format!(
                "ids must be {EXPECTED_IDS}; got an array of shape {}{}",
                shape_text(&shape),
                if shape.is_empty() {
                    " (write [id] for one id)"
                } else {
                    ""
                }
            ))
            .into());
        }
        let dtype = array.dtype();
        let kind = dtype.kind();
        if kind != b'i' && kind != b'u' {
            let dtype_text = dtype.str().map(|s| s.to_string()).unwrap_or_default();
            return Err(Fail::type_(format!(
                "ids must be {EXPECTED_IDS}; got an array of dtype {dtype_text}"
            ))
            .into());
        }
        if kind == b'u' && dtype.itemsize() == 8 {
            let array = array
                .cast::<PyArrayDyn<u64>>()?
                .try_readonly()
                .map_err(|err| Fail::value(format!("ids cannot be read: {err}")))?;
            return array
                .as_array()
                .iter()
                .map(|&id| {
                    i64::try_from(id).map_err(|_| {
                        Fail::new(
                            Kind::UnknownId,
                            format!("no item with id {id} in the index"),
                        )
                        .into()
                    })
                })
                .collect();
        }
        let wide = array.call_method1("astype", ("int64",))?;
        let wide = wide
            .cast::<PyArrayDyn<i64>>()?
            .try_readonly()
            .map_err(|err| Fail::value(format!("ids cannot be read: {err}")))?;
        return Ok(wide.as_array().iter().copied().collect());
    }
    if obj.is_instance_of::<PyInt>() {
        return Err(Fail::type_(format!(
            "ids must be {EXPECTED_IDS}; got a single int (write [id] for one id)"
        ))
        .into());
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(Fail::type_(format!(
            "ids must be {EXPECTED_IDS}; got {}",
            type_name(obj)
        ))
        .into());
    }
    obj.extract::<Vec<i64>>().map_err(|err| {
        Fail::type_(format!(
            "ids must be {EXPECTED_IDS}; got {} ({err})",
            type_name(obj)
        ))
        .into()
    })
}

/// Reads optional keys or labels: `None`, or one `str` (or `None`) per code.
pub fn read_strings(
    obj: Option<&Bound<'_, PyAny>>,
    n: usize,
    what: &str,
) -> PyResult<Option<Vec<Option<String>>>> {
    let Some(obj) = obj.filter(|obj| !obj.is_none()) else {
        return Ok(None);
    };
    let expected = format!("{what} must be a sequence of str (or None entries), one per code");
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(Fail::type_(format!("{expected}; got a single {}", type_name(obj))).into());
    }
    let values = obj
        .extract::<Vec<Option<String>>>()
        .map_err(|err| Fail::type_(format!("{expected}; got {} ({err})", type_name(obj))))?;
    if values.len() != n {
        return Err(Fail::value(format!(
            "{expected}: got {} {what} for {n} codes",
            values.len()
        ))
        .into());
    }
    Ok(Some(values))
}

/// Reads `what`: feature vectors, a 2-D numpy float array `[n, dim]` (float32, or float64 and
/// float16 converted to float32), in row-major order whatever its memory order.
pub fn read_features(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Array2<f32>> {
    let expected = "a 2-D numpy float32 array of shape (n, dim)";
    let Some(array) = as_array(obj)? else {
        return Err(Fail::type_(format!(
            "{what} must be {expected}; got {} (convert it with numpy.asarray(..., dtype=numpy.float32))",
            type_name(obj)
        ))
        .into());
    };
    let dtype = array.dtype();
    if dtype.kind() != b'f' {
        let dtype_text = dtype.str().map(|s| s.to_string()).unwrap_or_default();
        return Err(Fail::type_(format!(
            "{what} must be {expected}; got an array of dtype {dtype_text} (convert it with .astype(numpy.float32))"
        ))
        .into());
    }
    let shape = array.shape().to_vec();
    if shape.len() != 2 {
        let hint = if shape.len() == 1 {
            " (write features[None, :] for one vector)"
        } else {
            ""
        };
        return Err(Fail::value(format!(
            "{what} must be {expected}; got an array of shape {}{hint}",
            shape_text(&shape)
        ))
        .into());
    }
    let array = if dtype.is_equiv_to(&numpy::dtype::<f32>(obj.py())) {
        array.clone().into_any()
    } else {
        array.call_method1("astype", ("float32",))?
    };
    let array = array
        .cast::<PyArray2<f32>>()?
        .try_readonly()
        .map_err(|err| Fail::value(format!("{what} cannot be read: {err}")))?;
    Ok(array.as_array().to_owned())
}

/// Class labels, one per row: ints as they are, strings numbered in sorted order.
pub struct Labels {
    /// The class of each row.
    pub values: Vec<i64>,
}

const EXPECTED_LABELS: &str =
    "a 1-D numpy integer array, or a sequence of ints or of str, one label per row";

/// Reads labels for `n` rows (any number when `None`): a 1-D integer array, a sequence of ints, or a sequence (or numpy
/// array) of strings, which are numbered by their sorted order.
pub fn read_labels(obj: &Bound<'_, PyAny>, n: Option<usize>, what: &str) -> PyResult<Labels> {
    let values: Vec<i64> = if let Some(array) = as_array(obj)? {
        let shape = array.shape().to_vec();
        if shape.len() != 1 {
            return Err(Fail::value(format!(
                "{what} must be {EXPECTED_LABELS}; got an array of shape {}",
                shape_text(&shape)
            ))
            .into());
        }
        match array.dtype().kind() {
            b'i' | b'u' | b'b' => {
                let wide = array.call_method1("astype", ("int64",))?;
                let wide = wide
                    .cast::<PyArrayDyn<i64>>()?
                    .try_readonly()
                    .map_err(|err| Fail::value(format!("{what} cannot be read: {err}")))?;
                wide.as_array().iter().copied().collect()
            }
            b'U' | b'O' | b'S' => {
                let list = array.call_method0("tolist")?;
                string_labels(&list, what)?
            }
            _ => {
                let dtype_text = array
                    .dtype()
                    .str()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                return Err(Fail::type_(format!(
                    "{what} must be {EXPECTED_LABELS}; got an array of dtype {dtype_text}"
                ))
                .into());
            }
        }
    } else if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(Fail::type_(format!(
            "{what} must be {EXPECTED_LABELS}; got a single {}",
            type_name(obj)
        ))
        .into());
    } else if let Ok(ints) = obj.extract::<Vec<i64>>() {
        ints
    } else {
        string_labels(obj, what)?
    };
    match n {
        Some(n) if values.len() != n => Err(Fail::value(format!(
            "{what} must hold one label per row: got {} labels for {n} rows",
            values.len()
        ))
        .into()),
        _ => Ok(Labels { values }),
    }
}

/// String labels numbered by their sorted order (the first name in sorted order is 0).
fn string_labels(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<i64>> {
    let names = obj.extract::<Vec<String>>().map_err(|err| {
        Fail::type_(format!(
            "{what} must be {EXPECTED_LABELS}; got {} ({err})",
            type_name(obj)
        ))
    })?;
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    sorted.dedup();
    Ok(names
        .iter()
        .map(|name| sorted.binary_search(&name).expect("every name is listed") as i64)
        .collect())
}

/// Reads file paths: a sequence of `str` or `os.PathLike` (not a single one, whose characters
/// would be taken for paths).
pub fn read_paths(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<PathBuf>> {
    let expected = format!("{what} must be a sequence of paths (str or os.PathLike)");
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(Fail::type_(format!(
            "{expected}; got a single {} (write [path] for one file)",
            type_name(obj)
        ))
        .into());
    }
    let os = obj.py().import("os")?;
    if obj.is_instance(&os.getattr("PathLike")?)? {
        return Err(Fail::type_(format!(
            "{expected}; got a single {} (write [path] for one file)",
            type_name(obj)
        ))
        .into());
    }
    obj.extract::<Vec<PathBuf>>()
        .map_err(|err| Fail::type_(format!("{expected}; got {} ({err})", type_name(obj))).into())
}

/// Reads row numbers below `n`: a sequence of ints or a 1-D integer array.
pub fn read_rows(obj: &Bound<'_, PyAny>, n: usize, what: &str) -> PyResult<Vec<usize>> {
    let expected = format!("{what} must be {EXPECTED_IDS} of row numbers");
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(Fail::type_(format!("{expected}; got {}", type_name(obj))).into());
    }
    let array = obj.py().import("numpy")?.call_method1("asarray", (obj,))?;
    let array = array
        .cast_into::<PyUntypedArray>()
        .map_err(|_| Fail::type_(format!("{expected}; got {}", type_name(obj))))?;
    let (shape, kind) = (array.shape().to_vec(), array.dtype().kind());
    if shape.len() != 1 || !(kind == b'i' || kind == b'u' || shape == [0]) {
        let dtype_text = array
            .dtype()
            .str()
            .map(|s| s.to_string())
            .unwrap_or_default();
        return Err(Fail::type_(format!(
            "{expected}; got {} of shape {} and dtype {dtype_text}",
            type_name(obj),
            shape_text(&shape)
        ))
        .into());
    }
    let wide = array.call_method1("astype", ("int64",))?;
    let wide = wide
        .cast::<PyArrayDyn<i64>>()?
        .try_readonly()
        .map_err(|err| Fail::value(format!("{what} cannot be read: {err}")))?;
    wide.as_array()
        .iter()
        .map(|&row| {
            usize::try_from(row)
                .ok()
                .filter(|&row| row < n)
                .ok_or_else(|| {
                    Fail::value(format!(
                        "{what}: row {row} is out of range (0 to {})",
                        n.saturating_sub(1)
                    ))
                    .into()
                })
        })
        .collect()
}
