//! Files of codes: numpy `.npy` arrays of packed codes (`uint8 [n, bits / 8]`, bits packed as
//! `numpy.packbits` packs them), read through `milan::npy` and written with `ndarray-npy`.

use std::path::Path;

use anyhow::{Context, Result};
use milan::npy::CodesReader;
use milan::report::write_atomically_with;
use milan::Code;
use ndarray::ArrayView2;
use ndarray_npy::WriteNpyExt;

/// Reads every code of a packed-code file, which must hold `bits`-bit codes. The header is checked
/// against the file's length first, so memory is bounded by what the file holds.
pub fn read_codes(path: &Path, bits: u32) -> Result<Vec<Code>> {
    let mut codes = CodesReader::open(path)?;
    codes.expect_bits(bits)?;
    Ok(codes.read_all()?)
}

/// Writes codes as a packed `uint8 [n, bits / 8]` array, whole or not at all.
pub fn write_codes(path: &Path, bytes_per_code: usize, codes: &[u8]) -> Result<()> {
    let rows = codes.len() / bytes_per_code.max(1);
    let array =
        ArrayView2::from_shape((rows, bytes_per_code), codes).context("codes of uneven length")?;
    write_atomically_with(path, |out| {
        array
            .write_npy(out)
            .map_err(|err| std::io::Error::other(err.to_string()))
    })?;
    Ok(())
}
