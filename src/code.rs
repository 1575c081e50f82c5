//! [`Code`]: a K-bit binary hash code, K a multiple of 8 from 8 to 1024.
//!
//! Bits are packed as `numpy.packbits` packs them: bit 0 is the most significant bit of byte 0.
//! Hex strings spell the packed bytes in order, so `"80"` is the 8-bit code whose first bit is set.
//! A `u64` is read the same way, most significant bit first: `Code::from(1u64 << 63)` is the
//! 64-bit code whose first bit is set, the same code as `"8000000000000000".parse()`.
//!
//! Conversions: [`Code::from_bytes`], [`Code::from_hex`] (also [`str::parse`]), [`Code::from_fn`];
//! infallible ones from `u64` and from byte arrays of 1, 2, 4, 8, 16, 32, 64 and 128 bytes; back
//! with [`Code::as_bytes`], [`Code::to_hex`] (also `Display`) and `u64::try_from(&code)` for a
//! 64-bit code.

use bitvec::prelude::{BitSlice, Msb0};
use milan_index_format::{MAX_BITS, MIN_BITS};

use crate::error::{CodeError, Error, Result};

/// A binary hash code of `bits()` bits.
///
/// ```
/// use milan::Code;
///
/// # fn main() -> milan::Result<()> {
/// let a: Code = "00ff00ff00ff00ff".parse()?;
/// let b = Code::from(0x00ff_00ff_00ff_00feu64);
/// assert_eq!(b, Code::from([0x00, 0xff, 0x00, 0xff, 0x00, 0xff, 0x00, 0xfe]));
/// assert_eq!(a.distance(&b)?, 1);
/// assert_eq!(b.to_string(), "00ff00ff00ff00fe");
/// assert_eq!(u64::try_from(&b)?, 0x00ff_00ff_00ff_00fe);
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Code {
    bytes: Box<[u8]>,
}

impl Code {
    /// A code from its packed bytes; the length in bits is `8 * bytes.len()`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Code> {
        let bits = bytes.len() as u64 * 8;
        if !(u64::from(MIN_BITS)..=u64::from(MAX_BITS)).contains(&bits) {
            return Err(Error::Code(CodeError::InvalidCode {
                detail: format!(
                    "{bits} bits: codes are {MIN_BITS} to {MAX_BITS} bits, a multiple of 8"
                ),
            }));
        }
        Ok(Code {
            bytes: bytes.into(),
        })
    }

    /// A code from hex digits (two per byte, optional `0x` prefix), the packed bytes in order.
    /// `str::parse::<Code>` does the same.
    pub fn from_hex(hex: &str) -> Result<Code> {
        let digits = hex.strip_prefix("0x").unwrap_or(hex);
        if !digits.len().is_multiple_of(2) {
            return Err(Error::Code(CodeError::InvalidCode {
                detail: format!("hex code {hex:?} has an odd number of digits"),
            }));
        }
        let bytes = (0..digits.len())
            .step_by(2)
            .map(|i| {
                digits
                    .get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| {
                        Error::Code(CodeError::InvalidCode {
                            detail: format!(
                                "hex code {hex:?} has a non-hex digit near position {i}"
                            ),
                        })
                    })
            })
            .collect::<Result<Vec<u8>>>()?;
        Code::from_bytes(&bytes)
    }

    /// A code of `bits` bits whose bit `i` is `bit(i)`; [`CodeError::InvalidBits`] unless `bits` is a
    /// multiple of 8 from 8 to 1024.
    pub fn from_fn(bits: u32, mut bit: impl FnMut(usize) -> bool) -> Result<Code> {
        if !bits.is_multiple_of(8) || !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(Error::Code(CodeError::InvalidBits { bits }));
        }
        let mut bytes = vec![0u8; bits as usize / 8];
        let view = BitSlice::<u8, Msb0>::from_slice_mut(&mut bytes);
        for i in 0..bits as usize {
            view.set(i, bit(i));
        }
        Code::from_bytes(&bytes)
    }

    /// Length in bits.
    pub fn bits(&self) -> u32 {
        self.bytes.len() as u32 * 8
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bits, first bit first.
    pub fn as_bitslice(&self) -> &BitSlice<u8, Msb0> {
        BitSlice::from_slice(&self.bytes)
    }

    /// Lower-case hex of the packed bytes.
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Hamming distance to a code of the same length; [`CodeError::CodeLengthsDiffer`] for codes of
    /// different lengths.
    pub fn distance(&self, other: &Code) -> Result<u32> {
        if self.bits() != other.bits() {
            return Err(Error::Code(CodeError::CodeLengthsDiffer {
                left: self.bits(),
                right: other.bits(),
            }));
        }
        Ok(self
            .bytes
            .iter()
            .zip(other.bytes.iter())
            .map(|(a, b)| (a ^ b).count_ones())
            .sum())
    }

    /// The code as big-endian 64-bit words, zero-padded: the engine's in-memory form.
    pub(crate) fn to_words(&self) -> Vec<u64> {
        bytes_to_words(&self.bytes)
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Code({}:{})", self.bits(), self.to_hex())
    }
}

/// Lower-case hex of the packed bytes, as [`Code::to_hex`]; `parse` reads it back.
impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Hex digits, as [`Code::from_hex`].
impl std::str::FromStr for Code {
    type Err = Error;

    fn from_str(hex: &str) -> Result<Code> {
        Code::from_hex(hex)
    }
}

/// The 64-bit code whose bit 0 is the most significant bit of `value` (its big-endian bytes, the
/// order of [`Code::from_hex`]).
impl From<u64> for Code {
    fn from(value: u64) -> Code {
        Code {
            bytes: value.to_be_bytes().into(),
        }
    }
}

/// A 64-bit code as a `u64`, its first bit the most significant (the inverse of
/// `Code::from(u64)`); [`CodeError::InvalidCode`] for a code of another length.
impl TryFrom<&Code> for u64 {
    type Error = Error;

    fn try_from(code: &Code) -> Result<u64> {
        let bytes: [u8; 8] = code.as_bytes().try_into().map_err(|_| {
            Error::Code(CodeError::InvalidCode {
                detail: format!(
                    "a {}-bit code does not fit a u64; only 64-bit codes convert",
                    code.bits()
                ),
            })
        })?;
        Ok(u64::from_be_bytes(bytes))
    }
}

/// `From<[u8; N]>` for the array lengths that are valid codes, so that the conversion cannot
/// fail: the packed bytes, `8 * N` bits.
macro_rules! from_byte_arrays {
    ($($n:literal),*) => {$(
        #[doc = concat!("The ", stringify!($n), "-byte packed code (", stringify!($n), " x 8 bits).")]
        impl From<[u8; $n]> for Code {
            fn from(bytes: [u8; $n]) -> Code {
                Code {
                    bytes: bytes.into(),
                }
            }
        }
    )*};
}

from_byte_arrays!(1, 2, 4, 8, 16, 32, 64, 128);

/// Packed bytes to big-endian words, the last one zero-padded.
pub(crate) fn bytes_to_words(bytes: &[u8]) -> Vec<u64> {
    let mut words = Vec::with_capacity(bytes.len().div_ceil(8));
    extend_words(&mut words, bytes);
    words
}

/// Appends the words of `bytes` (a packed code) to `words`, as [`bytes_to_words`] makes them,
/// without a vector per code.
pub(crate) fn extend_words(words: &mut Vec<u64>, bytes: &[u8]) {
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        words.push(u64::from_be_bytes(word));
    }
}

/// The inverse of [`bytes_to_words`] for a code of `len` bytes.
pub(crate) fn words_to_bytes(words: &[u64], len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(words.len() * 8);
    extend_bytes(&mut bytes, words, len);
    bytes
}

/// Appends the `len` packed bytes of a code held as `words`, as [`words_to_bytes`] makes them.
pub(crate) fn extend_bytes(bytes: &mut Vec<u8>, words: &[u64], len: usize) {
    let start = bytes.len();
    for word in words {
        bytes.extend_from_slice(&word.to_be_bytes());
    }
    bytes.truncate(start + len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bit_order() {
        let code = Code::from_hex("80ff").unwrap();
        assert_eq!(code.bits(), 16);
        assert!(code.as_bitslice()[0]);
        assert!(!code.as_bitslice()[1]);
        assert_eq!(code.to_hex(), "80ff");
        assert_eq!(Code::from_fn(16, |i| i == 0 || i >= 8).unwrap(), code);
        assert_eq!(code.to_words(), vec![0x80ff_0000_0000_0000]);
        assert_eq!(words_to_bytes(&code.to_words(), 2), vec![0x80, 0xff]);
    }

    #[test]
    fn bad_codes_are_refused() {
        assert!(Code::from_hex("abc").is_err());
        assert!(Code::from_hex("zz").is_err());
        assert!(Code::from_hex("").is_err());
        assert!(Code::from_bytes(&[0u8; 129]).is_err());
        let a = Code::from_hex("ff").unwrap();
        assert!(a.distance(&Code::from_hex("ffff").unwrap()).is_err());
        assert_eq!(a.distance(&Code::from_hex("0f").unwrap()).unwrap(), 4);
        assert!(matches!(
            Code::from_fn(12, |_| true),
            Err(Error::Code(CodeError::InvalidBits { bits: 12 }))
        ));
        assert!(matches!(
            Code::from_fn(1032, |_| true),
            Err(Error::Code(CodeError::InvalidBits { bits: 1032 }))
        ));
    }

    #[test]
    fn distance_of_different_lengths_names_both_and_no_index() {
        let err = Code::from_hex("ff")
            .unwrap()
            .distance(&Code::from_hex("ffff").unwrap())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Code(CodeError::CodeLengthsDiffer { left: 8, right: 16 })
            ),
            "{err}"
        );
        let said = err.to_string();
        assert!(said.contains("8-bit") && said.contains("16-bit"), "{said}");
        assert!(!said.contains("index"), "{said}");
    }

    #[test]
    fn u64_conversions_read_the_most_significant_bit_first() {
        for value in [0u64, 1, 1 << 63, 0x00ff_00ff_00ff_00fe, u64::MAX] {
            let code = Code::from(value);
            assert_eq!(code.bits(), 64);
            assert_eq!(code, Code::from_hex(&format!("{value:016x}")).unwrap());
            assert_eq!(u64::try_from(&code).unwrap(), value);
            for bit in 0..64 {
                assert_eq!(code.as_bitslice()[bit], (value >> (63 - bit)) & 1 == 1);
            }
        }
        assert!(Code::from(1u64 << 63).as_bitslice()[0]);
        let short = Code::from_hex("ffff").unwrap();
        let err = u64::try_from(&short).unwrap_err();
        assert!(
            matches!(err, Error::Code(CodeError::InvalidCode { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("16-bit"), "{err}");
    }

    #[test]
    fn arrays_strings_and_display_round_trip() {
        let bytes = [0x80u8, 0x01, 0xfe, 0x7f, 0, 0xff, 0x10, 0x42];
        let code = Code::from(bytes);
        assert_eq!(code, Code::from_bytes(&bytes).unwrap());
        assert_eq!(code, Code::from(u64::from_be_bytes(bytes)));
        assert_eq!(code.to_string(), "8001fe7f00ff1042");
        assert_eq!(code.to_string().parse::<Code>().unwrap(), code);
        assert_eq!("0x8001fe7f00ff1042".parse::<Code>().unwrap(), code);
        assert!(matches!(
            "8001fe7f00ff104".parse::<Code>(),
            Err(Error::Code(CodeError::InvalidCode { .. }))
        ));
        assert!("zz".parse::<Code>().is_err());
        assert_eq!(Code::from([0xa5u8]).bits(), 8);
        assert_eq!(Code::from([7u8; 16]).bits(), 128);
        assert_eq!(Code::from([7u8; 32]).bits(), 256);
        assert_eq!(Code::from([7u8; 128]).bits(), 1024);
        assert_eq!(Code::from([7u8; 2]), Code::from_hex("0707").unwrap());
    }
}
