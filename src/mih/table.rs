//! [`Table`]: one multi-index-hashing hash table, substring value -> ids, in compressed sparse rows.
//!
//! Narrow substrings use a directly addressed offset array (one `u32` per possible value); wide ones,
//! where that array would dwarf the ids, keep only the occupied values, sorted, and binary-search them.
//! Ids within a bucket are increasing.

/// One hash table.
pub(crate) struct Table {
    lookup: Lookup,
    ids: Vec<u32>,
}

enum Lookup {
    /// `offsets[v]..offsets[v + 1]` is bucket `v`; `2^width + 1` entries.
    Dense(Vec<u32>),
    /// `keys[i]` owns `offsets[i]..offsets[i + 1]`.
    Sparse { keys: Vec<u32>, offsets: Vec<u32> },
}

/// Whether a table of `width`-bit substrings over `slots` ids is directly addressed.
fn is_dense(width: u32, slots: usize) -> bool {
    (1u64 << width) <= (slots as u64 * 2).max(1 << 16)
}

impl Table {
    /// The ids whose substring equals `key`.
    #[inline]
    pub(crate) fn bucket(&self, key: u32) -> &[u32] {
        match &self.lookup {
            Lookup::Dense(offsets) => {
                let start = offsets[key as usize] as usize;
                let end = offsets[key as usize + 1] as usize;
                &self.ids[start..end]
            }
            Lookup::Sparse { keys, offsets } => match keys.binary_search(&key) {
                Ok(i) => &self.ids[offsets[i] as usize..offsets[i + 1] as usize],
                Err(_) => &[],
            },
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        let lookup = match &self.lookup {
            Lookup::Dense(offsets) => offsets.capacity() * 4,
            Lookup::Sparse { keys, offsets } => (keys.capacity() + offsets.capacity()) * 4,
        };
        lookup + self.ids.capacity() * 4
    }

    /// Builds a table from `(value, id)` pairs in any order (a counting sort when dense).
    pub(crate) fn from_pairs(width: u32, slots: usize, pairs: &mut [(u32, u32)]) -> Table {
        if is_dense(width, slots) {
            let mut offsets = vec![0u32; (1usize << width) + 1];
            for &(value, _) in pairs.iter() {
                offsets[value as usize + 1] += 1;
            }
            for i in 1..offsets.len() {
                offsets[i] += offsets[i - 1];
            }
            let mut cursor = offsets.clone();
            let mut ids = vec![0u32; pairs.len()];
            // Pairs arrive in id order from the rebuild, so buckets stay sorted; sort otherwise.
            let in_id_order = pairs.windows(2).all(|w| w[0].1 <= w[1].1);
            if !in_id_order {
                pairs.sort_unstable_by_key(|&(_, id)| id);
            }
            for &(value, id) in pairs.iter() {
                let at = &mut cursor[value as usize];
                ids[*at as usize] = id;
                *at += 1;
            }
            Table {
                lookup: Lookup::Dense(offsets),
                ids,
            }
        } else {
            pairs.sort_unstable();
            let mut builder = TableBuilder::new(width, slots);
            for &(value, id) in pairs.iter() {
                builder.push(value, &[id]);
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
    width: u32,
}

impl TableBuilder {
    pub(crate) fn new(width: u32, slots: usize) -> TableBuilder {
        TableBuilder {
            dense: is_dense(width, slots),
            keys: Vec::new(),
            offsets: Vec::new(),
            ids: Vec::new(),
            width,
        }
    }

    /// Appends ids to bucket `value`; values must not decrease between calls.
    pub(crate) fn push(&mut self, value: u32, ids: &[u32]) {
        if self.keys.last() != Some(&value) {
            self.keys.push(value);
            self.offsets.push(self.ids.len() as u32);
        }
        self.ids.extend_from_slice(ids);
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
            Table {
                lookup: Lookup::Dense(offsets),
                ids: self.ids,
            }
        } else {
            self.offsets.push(total);
            Table {
                lookup: Lookup::Sparse {
                    keys: self.keys,
                    offsets: self.offsets,
                },
                ids: self.ids,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_agree() {
        let pairs = vec![(3u32, 0u32), (1, 1), (3, 2), (7, 3), (1, 4)];
        for (width, slots) in [(4, 10), (30, 10)] {
            let table = Table::from_pairs(width, slots, &mut pairs.clone());
            assert_eq!(table.bucket(3), &[0, 2]);
            assert_eq!(table.bucket(1), &[1, 4]);
            assert_eq!(table.bucket(7), &[3]);
            assert!(table.bucket(0).is_empty());
            assert!(table.bucket(5).is_empty());
            let mut builder = TableBuilder::new(width, slots);
            builder.push(1, &[1, 4]);
            builder.push(3, &[0, 2]);
            builder.push(7, &[3]);
            let built = builder.finish();
            for key in 0..16 {
                assert_eq!(built.bucket(key), table.bucket(key), "key {key}");
            }
        }
    }
}
