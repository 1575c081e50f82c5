//! [`Code`]: a K-bit binary hash code, K a multiple of 8 from 8 to 1024.
//!
//! Bits are packed as `numpy.packbits` packs them: bit 0 is the most significant bit of byte 0.
//! Hex strings spell the packed bytes in order, so `"80"` is the 8-bit code whose first bit is set.

use bitvec::prelude::{BitSlice, Msb0};
use milan_index_format::{MAX_BITS, MIN_BITS};

use crate::error::{Error, Result};

/// A binary hash code of `bits()` bits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Code {
    bytes: Box<[u8]>,
}

impl Code {
    /// A code from its packed bytes; the length in bits is `8 * bytes.len()`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Code> {
        let bits = bytes.len() as u64 * 8;
        if !(u64::from(MIN_BITS)..=u64::from(MAX_BITS)).contains(&bits) {
            return Err(Error::InvalidCode {
                detail: format!(
                    "{bits} bits: codes are {MIN_BITS} to {MAX_BITS} bits, a multiple of 8"
                ),
            });
        }
        Ok(Code {
            bytes: bytes.into(),
        })
    }

    /// A code from hex digits (two per byte, optional `0x` prefix).
    pub fn from_hex(hex: &str) -> Result<Code> {
        let digits = hex.strip_prefix("0x").unwrap_or(hex);
        if digits.len() % 2 != 0 {
            return Err(Error::InvalidCode {
                detail: format!("hex code {hex:?} has an odd number of digits"),
            });
        }
        let bytes = (0..digits.len())
            .step_by(2)
            .map(|i| {
                digits
                    .get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| Error::InvalidCode {
                        detail: format!("hex code {hex:?} has a non-hex digit near position {i}"),
                    })
            })
            .collect::<Result<Vec<u8>>>()?;
        Code::from_bytes(&bytes)
    }

    /// A code of `bits` bits whose bit `i` is `bit(i)`.
    pub fn from_fn(bits: u32, mut bit: impl FnMut(usize) -> bool) -> Result<Code> {
        if bits % 8 != 0 {
            return Err(Error::InvalidCode {
                detail: format!("{bits} bits is not a multiple of 8"),
            });
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

    /// Hamming distance to a code of the same length.
    pub fn distance(&self, other: &Code) -> Result<u32> {
        if self.bits() != other.bits() {
            return Err(Error::CodeLength {
                expected: self.bits(),
                got: other.bits(),
            });
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

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Packed bytes to big-endian words, the last one zero-padded.
pub(crate) fn bytes_to_words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_be_bytes(word)
        })
        .collect()
}

/// The inverse of [`bytes_to_words`] for a code of `len` bytes.
pub(crate) fn words_to_bytes(words: &[u64], len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    bytes.truncate(len);
    bytes
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
    }
}
