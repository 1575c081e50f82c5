//! [`WordLayout`]: where each substring sits in a code held as big-endian 64-bit words.

use milan_index_format::CodeLayout;

/// A run of at most 32 bits of a code (a substring, or a filter), with the masks that select it
/// from an XOR of two codes.
#[derive(Debug, Clone)]
pub(crate) struct BitField {
    pub(crate) width: u32,
    word: usize,
    offset: u32,
    mask_high: u64,
    mask_low: u64,
}

impl BitField {
    fn new(start: u32, width: u32) -> BitField {
        let offset = start % 64;
        let end_in_word = (offset + width).min(64);
        let mask_high = if width == 0 {
            0
        } else {
            (u64::MAX >> offset) & (u64::MAX << (64 - end_in_word))
        };
        let mask_low = if offset + width > 64 {
            u64::MAX << (128 - offset - width)
        } else {
            0
        };
        BitField {
            width,
            word: (start / 64) as usize,
            offset,
            mask_high,
            mask_low,
        }
    }

    /// The field's value in `code`, first bit most significant.
    #[inline(always)]
    pub(crate) fn value(&self, code: &[u64]) -> u32 {
        let high = code[self.word] << self.offset;
        let joined = if self.offset + self.width > 64 {
            high | (code[self.word + 1] >> (64 - self.offset))
        } else {
            high
        };
        if self.width == 0 {
            return 0;
        }
        (joined >> (64 - self.width)) as u32
    }

    /// Number of set bits of `xor` inside this field.
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

/// Bits of a filter: stored in each bucket entry, they bound the entry's distance from below
/// without reading its code. 24 bits, where 16 let through about four times as many entries to a
/// code read at radius 2 on clustered codes.
pub(crate) const FILTER_BITS: u32 = milan_index_format::FILTER_BITS;

/// A [`CodeLayout`] resolved to word positions and masks.
#[derive(Debug, Clone)]
pub(crate) struct WordLayout {
    pub(crate) code: CodeLayout,
    /// 64-bit words per code.
    pub(crate) words: usize,
    pub(crate) substrings: Vec<BitField>,
    /// Per substring, up to [`FILTER_BITS`] bits outside it, on whichever side of it has more
    /// room. An entry found by substring distance `s` is at least `s + distance(filters)` from
    /// the query.
    pub(crate) filters: Vec<BitField>,
}

impl WordLayout {
    pub(crate) fn new(code: CodeLayout) -> WordLayout {
        let bits = code.bits();
        let substrings = (0..code.substrings())
            .map(|j| BitField::new(code.substring_start(j), code.substring_width(j)))
            .collect();
        // Stored with each entry on disk: the format's own definition.
        let filters = (0..code.substrings())
            .map(|j| {
                let (start, width) = code.filter_range(j);
                BitField::new(start, width)
            })
            .collect();
        WordLayout {
            code,
            words: (bits as usize).div_ceil(64),
            substrings,
            filters,
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
        for (bits, substrings) in [
            (192, 6),
            (192, 7),
            (192, 13),
            (192, 48),
            (24, 3),
            (16, 2),
            (8, 1),
            (40, 3),
            (64, 4),
            (128, 7),
        ] {
            let bytes: Vec<u8> = (0..bits as u8 / 8)
                .map(|i| i.wrapping_mul(97).wrapping_add(13))
                .collect();
            let code = CodeLayout::new(bits, substrings).unwrap();
            let layout = WordLayout::new(code);
            let words = bytes_to_words(&bytes);
            let zero = vec![0u64; words.len()];
            for (j, sub) in layout.substrings.iter().enumerate() {
                assert_eq!(sub.value(&words), code.substring_value(&bytes, j as u32));
                assert_eq!(sub.distance(&words), sub.value(&words).count_ones());
                assert_eq!(sub.distance(&zero), 0);
            }
            for (j, filter) in layout.filters.iter().enumerate() {
                let start = filter.word * 64 + filter.offset as usize;
                let expected = (start..start + filter.width as usize).fold(0u32, |value, bit| {
                    (value << 1) | u32::from(bytes[bit / 8] >> (7 - bit % 8) & 1)
                });
                assert_eq!(
                    filter.value(&words),
                    expected,
                    "filter {j} of {bits}/{substrings}"
                );
                let sub = &layout.substrings[j];
                let (a, b) = (
                    sub.word * 64 + sub.offset as usize,
                    filter.word * 64 + filter.offset as usize,
                );
                let disjoint = a + sub.width as usize <= b || b + filter.width as usize <= a;
                assert!(disjoint, "filter {j} overlaps its substring");
                assert!(b + filter.width as usize <= bits as usize);
            }
            let total: u32 = layout.substrings.iter().map(|s| s.distance(&words)).sum();
            assert_eq!(total, bytes.iter().map(|b| b.count_ones()).sum::<u32>());
        }
    }
}
