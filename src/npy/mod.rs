//! Packed codes in numpy `.npy` files (`uint8 [n, bits / 8]`, bits packed as `numpy.packbits`
//! packs them), read in batches.
//!
//! [`CodesReader`] checks the header against the file's length before it allocates anything, so a
//! header that promises more rows than the file holds is an error, not a terabyte allocation; and
//! it hands out rows in batches, so that reading a file of any size takes bounded memory.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::Code;
use header::{Header, Literal};

mod header;

/// The largest header read: numpy writes a few hundred bytes for any array of codes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Brackets allowed in a header: a real one has one dict and one shape tuple. Bounding them keeps
/// the header parser's recursion shallow whatever the file holds.
const MAX_HEADER_BRACKETS: usize = 8;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Why a file of codes cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NpyError {
    /// The file cannot be opened or read.
    #[error("{}: cannot read", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not an `.npy` file, or its header cannot be read.
    #[error("{}: not a numpy .npy file: {detail}", path.display())]
    NotNpy {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A valid `.npy` file that does not hold packed codes.
    #[error(
        "{}: expected a numpy uint8 array of shape [n, bits / 8] with 1 to 128 bytes per row \
         (codes packed with numpy.packbits), found {found}",
        path.display()
    )]
    NotCodes {
        /// The file.
        path: PathBuf,
        /// What it holds instead.
        found: String,
    },
    /// The header promises more (or less) data than the file holds.
    #[error(
        "{}: the header promises {rows} rows of {width} bytes ({expected} bytes) but the file \
         holds {actual} bytes after its header; the file is truncated or its header is wrong",
        path.display()
    )]
    LengthMismatch {
        /// The file.
        path: PathBuf,
        /// Rows the header promises.
        rows: u64,
        /// Bytes per row.
        width: usize,
        /// Bytes the rows need.
        expected: u128,
        /// Bytes the file holds after its header.
        actual: u64,
    },
    /// Codes of another length than the index stores.
    #[error(
        "{}: rows are {width} bytes ({}-bit codes) but the index stores {bits}-bit codes ({} bytes per row)",
        path.display(),
        width * 8,
        bits / 8
    )]
    CodeLength {
        /// The file.
        path: PathBuf,
        /// Bytes per row in the file.
        width: usize,
        /// The index's code length.
        bits: u32,
    },
}

/// Rows of packed codes read from an `.npy` file in batches, the header already checked against
/// the file's length.
pub struct CodesReader<R> {
    path: PathBuf,
    reader: R,
    rows: u64,
    width: usize,
    next_row: u64,
}

/// Opens `path` and returns it with its length. Only a regular file is opened, so that a FIFO
/// or a device named by mistake fails at once instead of blocking or reading without end.
fn open_regular(path: &Path) -> Result<(File, u64), NpyError> {
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(NpyError::NotNpy {
            path: path.to_path_buf(),
            detail: "not a regular file".into(),
        });
    }
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    Ok((file, len))
}

impl CodesReader<BufReader<File>> {
    /// Opens `path` (a regular file only) and checks its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NpyError> {
        let path = path.as_ref();
        let (file, len) = open_regular(path)?;
        Self::new(BufReader::new(file), len, path)
    }
}

impl<R: Read> CodesReader<R> {
    /// Reads and checks the header of `len` bytes of `.npy` data from `reader`; `path` names the
    /// data in errors.
    pub fn new(mut reader: R, len: u64, path: impl Into<PathBuf>) -> Result<Self, NpyError> {
        let path = path.into();
        let header = read_header(&mut reader, len, &path)?;
        let not_codes = |found: String| NpyError::NotCodes {
            path: path.clone(),
            found,
        };
        let is_u8 = matches!(&header.header.descr,
            Literal::Str(descr) if matches!(descr.as_str(), "|u1" | "<u1" | ">u1" | "u1" | "=u1"));
        if !is_u8 {
            return Err(not_codes(format!("dtype {}", header.header.descr)));
        }
        let shape = &header.header.shape;
        let (rows, width) = match shape.as_slice() {
            &[rows, width] if rows >= 0 && width >= 0 => (rows, width),
            _ => return Err(not_codes(format!("shape {shape:?}"))),
        };
        if !(1..=128).contains(&width) {
            return Err(not_codes(format!("{width} bytes per row")));
        }
        let width = width as usize;
        let Ok(rows) = u64::try_from(rows) else {
            return Err(not_codes(format!("{rows} rows, more than a file can hold")));
        };
        // Column-major bytes are the transpose, unless one side is 1 and the order is moot.
        if header.header.fortran_order && rows > 1 && width > 1 {
            return Err(not_codes(
                "a Fortran-ordered array; save numpy.ascontiguousarray(codes) instead".into(),
            ));
        }
        let expected = rows as u128 * width as u128;
        let actual = len.saturating_sub(header.bytes);
        if expected != u128::from(actual) {
            return Err(NpyError::LengthMismatch {
                path,
                rows,
                width,
                expected,
                actual,
            });
        }
        Ok(CodesReader {
            path,
            reader,
            rows,
            width,
            next_row: 0,
        })
    }

    /// Rows in the file.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows not read yet.
    pub fn remaining(&self) -> u64 {
        self.rows - self.next_row
    }

    /// The code length in bits.
    pub fn bits(&self) -> u32 {
        self.width as u32 * 8
    }

    /// Refuses codes of another length than `bits`.
    pub fn expect_bits(&self, bits: u32) -> Result<(), NpyError> {
        if self.bits() == bits {
            Ok(())
        } else {
            Err(NpyError::CodeLength {
                path: self.path.clone(),
                width: self.width,
                bits,
            })
        }
    }

    /// Skips up to `rows` rows without decoding them; returns how many were skipped.
    pub fn skip(&mut self, rows: u64) -> Result<u64, NpyError> {
        let rows = rows.min(self.remaining());
        let bytes = rows * self.width as u64;
        let copied = std::io::copy(&mut (&mut self.reader).take(bytes), &mut std::io::sink())
            .map_err(|source| self.io(source))?;
        if copied != bytes {
            return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.next_row += rows;
        Ok(rows)
    }

    /// The next `max_rows` codes (fewer at the end of the file; none once it is read).
    pub fn read(&mut self, max_rows: usize) -> Result<Vec<Code>, NpyError> {
        let rows = (max_rows as u64).min(self.remaining()) as usize;
        let mut bytes = vec![0u8; rows * self.width];
        self.reader
            .read_exact(&mut bytes)
            .map_err(|source| self.io(source))?;
        self.next_row += rows as u64;
        Ok(bytes
            .chunks_exact(self.width)
            .map(|row| Code::from_bytes(row).expect("1 to 128 bytes are a valid code"))
            .collect())
    }

    /// Every remaining code.
    pub fn read_all(&mut self) -> Result<Vec<Code>, NpyError> {
        let remaining = usize::try_from(self.remaining()).unwrap_or(usize::MAX);
        self.read(remaining)
    }

    fn io(&self, source: std::io::Error) -> NpyError {
        NpyError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// The header of an `.npy` file of any array, checked as [`CodesReader`] checks its own: the
/// header's length against the file and [`MAX_HEADER_BYTES`], then the data's length against
/// the shape, so that a caller can read the data knowing its size.
#[derive(Debug, Clone)]
pub struct ArrayHeader {
    /// The numpy type descriptor, such as `<f4` or `|u1`.
    pub descr: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// Whether the data is in column-major (Fortran) order.
    pub fortran_order: bool,
    /// Where the data starts: the header's length in bytes.
    pub data_offset: u64,
}

/// Reads and checks the header of the `.npy` file at `path`, whose elements are `item_bytes`
/// wide: only a regular file is opened, and the bytes after the header must be exactly what
/// the shape needs.
pub fn read_array_header(
    path: impl AsRef<Path>,
    item_bytes: usize,
) -> Result<ArrayHeader, NpyError> {
    let path = path.as_ref();
    let (file, len) = open_regular(path)?;
    let header = read_header(&mut BufReader::new(file), len, path)?;
    let descr = match &header.header.descr {
        Literal::Str(descr) => descr.clone(),
        other => other.to_string(),
    };
    let raw = &header.header.shape;
    let shape: Vec<usize> = raw
        .iter()
        .map(|&side| usize::try_from(side))
        .collect::<Result<_, _>>()
        .map_err(|_| NpyError::NotNpy {
            path: path.to_path_buf(),
            detail: format!("shape {raw:?} has a negative or oversized dimension"),
        })?;
    // Saturating: a shape whose bytes overflow even u128 cannot match any file.
    let expected = shape.iter().fold(item_bytes as u128, |bytes, &side| {
        bytes.saturating_mul(side as u128)
    });
    let actual = len.saturating_sub(header.bytes);
    if expected != u128::from(actual) {
        let (rows, width) = match shape.split_first() {
            Some((&rows, rest)) => (
                rows as u64,
                rest.iter()
                    .fold(item_bytes, |bytes, &side| bytes.saturating_mul(side)),
            ),
            None => (1, item_bytes),
        };
        return Err(NpyError::LengthMismatch {
            path: path.to_path_buf(),
            rows,
            width,
            expected,
            actual,
        });
    }
    Ok(ArrayHeader {
        descr,
        shape,
        fortran_order: header.header.fortran_order,
        data_offset: header.bytes,
    })
}

/// A parsed header and its length in bytes (magic, version, length field and dict).
struct CheckedHeader {
    header: Header,
    bytes: u64,
}

/// Reads the header by hand up to its dict, so that the dict's length is checked against the file
/// and [`MAX_HEADER_BYTES`] before a buffer for it is allocated; then parses it (`header.rs`).
fn read_header(reader: &mut impl Read, len: u64, path: &Path) -> Result<CheckedHeader, NpyError> {
    let not_npy = |detail: String| NpyError::NotNpy {
        path: path.to_path_buf(),
        detail,
    };
    let eof_is_not_npy = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            not_npy("the file ends inside its header".into())
        } else {
            NpyError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let mut prefix = [0u8; 12];
    reader
        .read_exact(&mut prefix[..8])
        .map_err(eof_is_not_npy)?;
    if &prefix[..6] != MAGIC {
        return Err(not_npy(
            "it does not start with the .npy magic bytes".into(),
        ));
    }
    let (prefix_len, dict_len) = match prefix[6] {
        1 => {
            reader
                .read_exact(&mut prefix[8..10])
                .map_err(eof_is_not_npy)?;
            (10, u16::from_le_bytes([prefix[8], prefix[9]]) as usize)
        }
        2 | 3 => {
            reader
                .read_exact(&mut prefix[8..12])
                .map_err(eof_is_not_npy)?;
            let dict_len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            (12, usize::try_from(dict_len).unwrap_or(usize::MAX))
        }
        major => return Err(not_npy(format!("format version {major} is not 1, 2 or 3"))),
    };
    let header_len = prefix_len + dict_len.min(MAX_HEADER_BYTES + 1);
    if dict_len > MAX_HEADER_BYTES || header_len as u64 > len {
        return Err(not_npy(format!(
            "its header claims {dict_len} bytes, more than the file or the {MAX_HEADER_BYTES}-byte limit allows"
        )));
    }
    let mut bytes = vec![0u8; header_len];
    bytes[..prefix_len].copy_from_slice(&prefix[..prefix_len]);
    reader
        .read_exact(&mut bytes[prefix_len..])
        .map_err(eof_is_not_npy)?;
    let brackets = bytes[prefix_len..]
        .iter()
        .filter(|&&b| matches!(b, b'(' | b'[' | b'{'))
        .count();
    if brackets > MAX_HEADER_BRACKETS {
        return Err(not_npy(format!(
            "its header nests {brackets} brackets; a codes header has two"
        )));
    }
    let header = header::parse(&bytes[prefix_len..])
        .map_err(|err| not_npy(format!("unreadable header: {err}")))?;
    Ok(CheckedHeader {
        header,
        bytes: header_len as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 `.npy` file with `dict` as its header and `data` after it.
    fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut dict = dict.to_string();
        while !(10 + dict.len() + 1).is_multiple_of(64) {
            dict.push(' ');
        }
        dict.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((dict.len() as u16).to_le_bytes());
        out.extend(dict.as_bytes());
        out.extend(data);
        out
    }

    fn reader(bytes: &[u8]) -> Result<CodesReader<&[u8]>, NpyError> {
        CodesReader::new(bytes, bytes.len() as u64, "codes.npy")
    }

    #[test]
    fn rows_come_in_batches_and_skips() {
        let data: Vec<u8> = (0..10u8).flat_map(|i| [i, 255 - i]).collect();
        let file = npy(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (10, 2), }",
            &data,
        );
        let mut codes = reader(&file).unwrap();
        assert_eq!((codes.rows(), codes.bits()), (10, 16));
        assert!(codes.expect_bits(16).is_ok());
        assert!(matches!(
            codes.expect_bits(64),
            Err(NpyError::CodeLength { .. })
        ));
        let first = codes.read(4).unwrap();
        assert_eq!(first.len(), 4);
        assert_eq!(first[3].as_bytes(), [3, 252]);
        assert_eq!(codes.skip(3).unwrap(), 3);
        let rest = codes.read_all().unwrap();
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[0].as_bytes(), [7, 248]);
        assert!(codes.read(5).unwrap().is_empty());
        assert_eq!(codes.skip(5).unwrap(), 0);
    }

    #[test]
    fn a_header_that_promises_more_than_the_file_holds_is_refused_before_allocating() {
        // The shape of the report: 2^37 rows in a 192-byte file.
        let file = npy(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (137438953472, 8), }",
            &[0; 64],
        );
        let err = reader(&file).err().unwrap();
        assert!(
            matches!(
                err,
                NpyError::LengthMismatch {
                    rows: 137438953472,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
        // Rows x width beyond u64.
        let file = npy(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (18446744073709551615, 128), }",
            &[],
        );
        assert!(matches!(
            reader(&file),
            Err(NpyError::LengthMismatch { .. })
        ));
        // Trailing bytes are as wrong as missing ones.
        let file = npy(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2), }",
            &[1, 2, 3],
        );
        assert!(matches!(
            reader(&file),
            Err(NpyError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn other_arrays_and_broken_headers_are_named() {
        let cases: [(Vec<u8>, &str); 8] = [
            (b"hello".to_vec(), "ends inside its header"),
            (b"not numpy at all".to_vec(), "magic"),
            (
                npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }",
                    &[0; 4],
                ),
                "dtype",
            ),
            (
                npy(
                    "{'descr': '|u1', 'fortran_order': False, 'shape': (4,), }",
                    &[0; 4],
                ),
                "shape",
            ),
            (
                npy(
                    "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 129), }",
                    &[0; 129],
                ),
                "129 bytes per row",
            ),
            (
                npy(
                    "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 2), }",
                    &[0; 4],
                ),
                "Fortran",
            ),
            (
                npy(&format!("{}{}", "(".repeat(500), ")".repeat(500)), &[]),
                "brackets",
            ),
            (
                {
                    let mut file = MAGIC.to_vec();
                    file.extend([2, 0]);
                    file.extend(u32::MAX.to_le_bytes());
                    file
                },
                "claims 4294967295 bytes",
            ),
        ];
        for (file, expected) in cases {
            let err = reader(&file).err().unwrap();
            assert!(err.to_string().contains(expected), "{err}");
            assert!(err.to_string().starts_with("codes.npy: "), "{err}");
        }
    }
}
