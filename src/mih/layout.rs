//! [`WordLayout`]: where each substring sits in a code held as big-endian 64-bit words.

use milan_index_format::CodeLayout;

/// One substring's position, with the masks that select it from an XOR of two codes.
#[derive(Debug, Clone)]
pub(crate) struct Substring {
    pub(crate) width: u32,
    word: usize,
    offset: u32,
    mask_high: u64,
    mask_low: u64,
}

impl Substring {
    /// The substring's value in `code`, first bit most significant.
    #[inline(always)]
    pub(crate) fn value(&self, code: &[u64]) -> u32 {
        let high = code[self.word] << self.offset;
        let joined = if self.offset + self.width > 64 {
            high | (code[self.word + 1] >> (64 - self.offset))
        } else {
            high
        };
        (joined >> (64 - self.width)) as u32
    }

    /// Number of set bits of `xor` inside this substring.
    #[inline(always)]
    pub(crate) fn distance(&self, xor: &[u64]) -> u32 {
        let high = (xor[self.word] & self.mask_high).count_ones();
        if self.mask_low == 0 {
            high
        } else {
            high + (xor[self.word + 1] & self.mask_low).count_ones()
        }
    }
}

/// A [`CodeLayout`] resolved to word positions and masks.
#[derive(Debug, Clone)]
pub(crate) struct WordLayout {
    pub(crate) code: CodeLayout,
    /// 64-bit words per code.
    pub(crate) words: usize,
    pub(crate) substrings: Vec<Substring>,
}

impl WordLayout {
    pub(crate) fn new(code: CodeLayout) -> WordLayout {
        let substrings = (0..code.substrings())
            .map(|j| {
                let start = code.substring_start(j);
                let width = code.substring_width(j);
                let offset = start % 64;
                let end_in_word = (offset + width).min(64);
                let mask_high = (u64::MAX >> offset) & (u64::MAX << (64 - end_in_word));
                let mask_low = if offset + width > 64 {
                    u64::MAX << (128 - offset - width)
                } else {
                    0
                };
                Substring {
                    width,
                    word: (start / 64) as usize,
                    offset,
                    mask_high,
                    mask_low,
                }
            })
            .collect();
        WordLayout {
            code,
            words: (code.bits() as usize).div_ceil(64),
            substrings,
        }
    }

    pub(crate) fn bits(&self) -> u32 {
        self.code.bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::bytes_to_words;

    #[test]
    fn word_extraction_matches_byte_extraction() {
        let bytes: Vec<u8> = (0..24u8).map(|i| i.wrapping_mul(97).wrapping_add(13)).collect();
        for substrings in [6, 7, 13, 48] {
            let code = CodeLayout::new(192, substrings).unwrap();
            let layout = WordLayout::new(code);
            let words = bytes_to_words(&bytes);
            let zero = vec![0u64; words.len()];
            for (j, sub) in layout.substrings.iter().enumerate() {
                assert_eq!(sub.value(&words), code.substring_value(&bytes, j as u32));
                assert_eq!(sub.distance(&words), sub.value(&words).count_ones());
                assert_eq!(sub.distance(&zero), 0);
            }
            let total: u32 = layout.substrings.iter().map(|s| s.distance(&words)).sum();
            assert_eq!(total, bytes.iter().map(|b| b.count_ones()).sum::<u32>());
        }
    }
}
