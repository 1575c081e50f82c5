//! [`Table`]: one multi-index-hashing hash table, substring value -> ids, in compressed sparse rows.
//!
//! Narrow substrings use a directly addressed offset array (one `u32` per possible value); wide ones,
//! where that array would dwarf the ids, keep only the occupied values, sorted, and binary-search them.
//! Ids within a bucket are increasing. Beside each id sits its filter (a few code bits outside the
//! substring, see [`super::layout::WordLayout::filters`]), so most candidates are rejected by a
//! sequential read instead of a random access to their code.

/// One hash table.
pub(crate) struct Table {
    lookup: Lookup,
    ids: Vec<u32>,
    filters: Vec<u16>,
    /// Entries in the fullest bucket: bounds a search's work without looking at its buckets.
    largest_bucket: usize,
}

/// One table entry as built: substring value, id, filter.
pub(crate) type Entry = (u32, u32, u16);

enum Lookup {
    /// `offsets[v]..offsets[v + 1]` is bucket `v`; `2^width + 1` entries.
    Dense(Vec<u32>),
    /// `keys[i]` owns `offsets[i]..offsets[i + 1]`.
    Sparse { keys: Vec<u32>, offsets: Vec<u32> },
}

/// A hint to load the cache line holding `address`; never faults, does nothing elsewhere than on
/// x86-64.
#[inline(always)]
pub(crate) fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never dereferences in a way that can fault, whatever
    // the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(address.cast(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Whether a table of `width`-bit substrings over `slots` ids is directly addressed.
fn is_dense(width: u32, slots: usize) -> bool {
    (1u64 << width) <= (slots as u64 * 2).max(1 << 16)
}

impl Table {
    fn assemble(lookup: Lookup, ids: Vec<u32>, filters: Vec<u16>) -> Table {
        let offsets = match &lookup {
            Lookup::Dense(offsets) | Lookup::Sparse { offsets, .. } => offsets,
        };
        let largest_bucket = offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0);
        Table {
            lookup,
            ids,
            filters,
            largest_bucket,
        }
    }

    /// Entries in the fullest bucket.
    pub(crate) fn largest_bucket(&self) -> usize {
        self.largest_bucket
    }

    /// The ids whose substring equals `key`, with their filters.
    #[inline]
    pub(crate) fn bucket(&self, key: u32) -> (&[u32], &[u16]) {
        let range = match &self.lookup {
            Lookup::Dense(offsets) => {
                offsets[key as usize] as usize..offsets[key as usize + 1] as usize
            }
            Lookup::Sparse { keys, offsets } => match keys.binary_search(&key) {
                Ok(i) => offsets[i] as usize..offsets[i + 1] as usize,
                Err(_) => 0..0,
            },
        };
        (&self.ids[range.clone()], &self.filters[range])
    }

    /// Asks the processor to start loading bucket `key`'s entries and filters, so that the
    /// buckets of several tables arrive in parallel instead of one cache miss after another.
    #[inline]
    pub(crate) fn prefetch(&self, key: u32) {
        let (ids, filters) = self.bucket(key);
        prefetch(ids.as_ptr().cast());
        prefetch(filters.as_ptr().cast());
    }

    /// Number of ids in bucket `key`.
    #[inline]
    pub(crate) fn bucket_len(&self, key: u32) -> usize {
        self.bucket(key).0.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        let lookup = match &self.lookup {
            Lookup::Dense(offsets) => offsets.capacity() * 4,
            Lookup::Sparse { keys, offsets } => (keys.capacity() + offsets.capacity()) * 4,
        };
        lookup + self.ids.capacity() * 4 + self.filters.capacity() * 2
    }

    /// Builds a table from entries in any order (a counting sort when dense).
    pub(crate) fn from_entries(width: u32, slots: usize, entries: &mut [Entry]) -> Table {
        if is_dense(width, slots) {
            let mut offsets = vec![0u32; (1usize << width) + 1];
            for &(value, _, _) in entries.iter() {
                offsets[value as usize + 1] += 1;
            }
            for i in 1..offsets.len() {
                offsets[i] += offsets[i - 1];
            }
            let mut cursor = offsets.clone();
            let mut ids = vec![0u32; entries.len()];
            let mut filters = vec![0u16; entries.len()];
            // Entries arrive in id order from a rebuild, so buckets stay sorted; sort otherwise.
            if !entries.windows(2).all(|w| w[0].1 <= w[1].1) {
                entries.sort_unstable_by_key(|&(_, id, _)| id);
            }
            for &(value, id, filter) in entries.iter() {
                let at = &mut cursor[value as usize];
                ids[*at as usize] = id;
                filters[*at as usize] = filter;
                *at += 1;
            }
            Table::assemble(Lookup::Dense(offsets), ids, filters)
        } else {
            entries.sort_unstable();
            let mut builder = TableBuilder::new(width, slots);
            for &(value, id, filter) in entries.iter() {
                builder.push(value, id, filter);
            }
            builder.finish()
        }
    }
}

/// Builds a [`Table`] from buckets delivered in increasing value order (as stored on disk).
pub(crate) struct TableBuilder {
    dense: bool,
    keys: Vec<u32>,
    offsets: Vec<u32>,
    ids: Vec<u32>,
    filters: Vec<u16>,
    width: u32,
}

impl TableBuilder {
    pub(crate) fn new(width: u32, slots: usize) -> TableBuilder {
        TableBuilder {
            dense: is_dense(width, slots),
            keys: Vec::new(),
            offsets: Vec::new(),
            ids: Vec::new(),
            filters: Vec::new(),
            width,
        }
    }

    /// Appends an entry to bucket `value`; values must not decrease between calls.
    pub(crate) fn push(&mut self, value: u32, id: u32, filter: u16) {
        if self.keys.last() != Some(&value) {
            self.keys.push(value);
            self.offsets.push(self.ids.len() as u32);
        }
        self.ids.push(id);
        self.filters.push(filter);
    }

    pub(crate) fn finish(mut self) -> Table {
        let total = self.ids.len() as u32;
        if self.dense {
            let mut offsets = vec![0u32; (1usize << self.width) + 1];
            // Fill from the top so that empty buckets take the next bucket's start.
            let mut next = total;
            let mut key_index = self.keys.len();
            for value in (0..(1usize << self.width)).rev() {
                if key_index > 0 && self.keys[key_index - 1] as usize == value {
                    key_index -= 1;
                    next = self.offsets[key_index];
                }
                offsets[value] = next;
            }
            offsets[1usize << self.width] = total;
            Table::assemble(Lookup::Dense(offsets), self.ids, self.filters)
        } else {
            self.offsets.push(total);
            Table::assemble(
                Lookup::Sparse {
                    keys: self.keys,
                    offsets: self.offsets,
                },
                self.ids,
                self.filters,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_agree() {
        let entries = vec![
            (3u32, 0u32, 30u16),
            (1, 1, 11),
            (3, 2, 32),
            (7, 3, 73),
            (1, 4, 14),
        ];
        for (width, slots) in [(4, 10), (30, 10)] {
            let table = Table::from_entries(width, slots, &mut entries.clone());
            assert_eq!(table.bucket(3), (&[0, 2][..], &[30, 32][..]));
            assert_eq!(table.bucket(1), (&[1, 4][..], &[11, 14][..]));
            assert_eq!(table.bucket(7).0, &[3]);
            assert_eq!(table.bucket_len(0), 0);
            assert_eq!(table.bucket_len(5), 0);
            let mut builder = TableBuilder::new(width, slots);
            for (value, id, filter) in [(1, 1, 11), (1, 4, 14), (3, 0, 30), (3, 2, 32), (7, 3, 73)]
            {
                builder.push(value, id, filter);
            }
            let built = builder.finish();
            for key in 0..16 {
                assert_eq!(built.bucket(key), table.bucket(key), "key {key}");
            }
        }
    }
}
