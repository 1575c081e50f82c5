//! Files of codes and keys: numpy `.npy` arrays of packed codes (`uint8 [n, bits / 8]`, bits packed
//! as `numpy.packbits` packs them) and text files of keys, one per line.

use std::path::Path;

use anyhow::{bail, Context, Result};
use milan::Code;
use ndarray::Array2;

/// Reads packed codes, checking dtype, rank and width against `bits` when given.
pub fn read_codes(path: &Path, bits: Option<u32>) -> Result<Array2<u8>> {
    let array: Array2<u8> = ndarray_npy::read_npy(path).map_err(|err| {
        anyhow::anyhow!(
            "{}: expected a numpy uint8 array of shape [n, bits / 8] (codes packed with numpy.packbits): {err}",
            path.display()
        )
    })?;
    let width = array.ncols();
    if let Some(bits) = bits {
        if width * 8 != bits as usize {
            bail!(
                "{}: rows are {width} bytes ({}-bit codes) but the index stores {bits}-bit codes ({} bytes per row)",
                path.display(),
                width * 8,
                bits / 8
            );
        }
    } else if width == 0 || width > 128 {
        bail!(
            "{}: rows of {width} bytes are not codes of 8 to 1024 bits",
            path.display()
        );
    }
    Ok(array)
}

/// The rows of a packed-code array as codes.
pub fn rows_to_codes(array: &Array2<u8>) -> Result<Vec<Code>> {
    array
        .rows()
        .into_iter()
        .map(|row| Ok(Code::from_bytes(&row.to_vec())?))
        .collect()
}

/// Writes codes as a packed `uint8 [n, bits / 8]` array.
pub fn write_codes(path: &Path, bytes_per_code: usize, codes: &[u8]) -> Result<()> {
    let rows = codes.len() / bytes_per_code.max(1);
    let array = Array2::from_shape_vec((rows, bytes_per_code), codes.to_vec())
        .context("codes of uneven length")?;
    ndarray_npy::write_npy(path, &array)
        .with_context(|| format!("{}: cannot write", path.display()))
}

/// Reads one key per line; the count must equal `expected`.
pub fn read_keys(path: &Path, expected: usize, codes_path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read keys", path.display()))?;
    let keys: Vec<String> = text.lines().map(str::to_string).collect();
    if keys.len() != expected {
        bail!(
            "{} has {} lines but {} has {expected} codes: give one key per code, in row order",
            path.display(),
            keys.len(),
            codes_path.display()
        );
    }
    Ok(keys)
}
