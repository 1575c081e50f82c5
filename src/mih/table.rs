//! [`Table`]: one multi-index-hashing hash table, substring value -> ids, in compressed sparse rows.
//!
//! Narrow substrings use a directly addressed offset array (one `u32` per possible value); wide ones,
//! where that array would dwarf the ids, keep only the occupied values, sorted, and binary-search them.
//! Ids within a bucket are increasing. Each entry holds its id and its filter (up to 24 code bits
//! outside the substring, see [`super::layout::WordLayout::filters`]) in seven bytes, so that most
//! candidates are rejected by a sequential read instead of a random access to their code, and a
//! bucket is one run of memory whose cache lines can all be requested at once.

/// Bytes at the start of a bucket that [`Table::prefetch`] asks for: all of a bucket of up to 146
/// entries.
const PREFETCH_BYTES: usize = 1024;

// A filter must fit the 24 bits an entry keeps of it: a wider one would be compared, truncated,
// with the query's, and the search would no longer be exact.
const _: () = assert!(super::layout::FILTER_BITS <= 24);

/// Bytes in a cache line.
const LINE_BYTES: usize = 64;

/// One hash table.
pub(crate) struct Table {
    lookup: Lookup,
    entries: Vec<BucketEntry>,
    /// Entries in the fullest bucket: bounds a search's work without looking at its buckets.
    largest_bucket: usize,
    /// Whether an entry's bucket typically spans several cache lines: then [`Table::prefetch`]
    /// asks for all of them.
    long_buckets: bool,
}

/// One table entry as built: substring value, id, filter.
pub(crate) type Entry = (u32, u32, u32);

/// A bucket entry: a little-endian `u32` id, then the low 24 bits of its filter. Seven bytes, not
/// eight: the memory budget of an entry (one per code per table) is tight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct BucketEntry([u8; 7]);

impl BucketEntry {
    /// An entry for `id`; `filter` must fit 24 bits.
    fn new(id: u32, filter: u32) -> BucketEntry {
        debug_assert!(filter < 1 << 24);
        let [a, b, c, d] = id.to_le_bytes();
        let [e, f, g, _] = filter.to_le_bytes();
        BucketEntry([a, b, c, d, e, f, g])
    }

    // Both read four bytes in one load; the filter's overlaps the id's last byte.
    #[inline(always)]
    pub(crate) fn id(&self) -> u32 {
        let [a, b, c, d, ..] = self.0;
        u32::from_le_bytes([a, b, c, d])
    }

    #[inline(always)]
    pub(crate) fn filter(&self) -> u32 {
        let [.., d, e, f, g] = self.0;
        u32::from_le_bytes([d, e, f, g]) >> 8
    }
}

enum Lookup {
    /// `offsets[v]..offsets[v + 1]` is bucket `v`; `2^width + 1` entries.
    Dense(Vec<u32>),
    /// `keys[i]` owns `offsets[i]..offsets[i + 1]`.
    Sparse { keys: Vec<u32>, offsets: Vec<u32> },
}

/// A table's arrays as stored (format version 3): the lookup and the entries.
pub(crate) struct StoredTable<'a> {
    pub(crate) dense: bool,
    /// The occupied values of a sparse table (empty when dense).
    pub(crate) keys: &'a [u32],
    pub(crate) offsets: &'a [u32],
    pub(crate) entries: &'a [BucketEntry],
}

/// The bytes of `entries`, seven per entry, as stored.
pub(crate) fn entry_bytes(entries: &[BucketEntry]) -> &[u8] {
    // SAFETY: BucketEntry is a transparent wrapper of [u8; 7], so a slice of n entries is 7n
    // initialised bytes with alignment 1.
    unsafe { std::slice::from_raw_parts(entries.as_ptr().cast::<u8>(), entries.len() * 7) }
}

/// Appends the entries encoded in `bytes` (a multiple of seven) to `entries`.
pub(crate) fn extend_entries(entries: &mut Vec<BucketEntry>, bytes: &[u8]) {
    entries.extend(
        bytes
            .chunks_exact(7)
            .map(|chunk| BucketEntry(chunk.try_into().expect("seven bytes"))),
    );
}

/// Checks that `offsets` divide `entries` entries into the buckets of a `width`-bit table of
/// the given form (`keys` occupied values when sparse): as many as the form takes, from 0 to the
/// number of entries, never decreasing.
pub(crate) fn check_offsets(
    width: u32,
    dense: bool,
    keys: usize,
    offsets: &[u32],
    entries: usize,
) -> Result<(), String> {
    let expected = if dense {
        (1usize << width) + 1
    } else {
        keys + 1
    };
    if offsets.len() != expected {
        return Err(format!(
            "{} offsets where {expected} are due",
            offsets.len()
        ));
    }
    if offsets[0] != 0 || offsets[offsets.len() - 1] as usize != entries {
        return Err(format!(
            "offsets run from {} to {}, not from 0 to the {entries} entries",
            offsets[0],
            offsets[offsets.len() - 1],
        ));
    }
    if offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err("offsets decrease".into());
    }
    Ok(())
}

/// Checks that the keys of a sparse `width`-bit table are strictly increasing substring values.
pub(crate) fn check_keys(width: u32, keys: &[u32]) -> Result<(), String> {
    if keys.windows(2).any(|w| w[0] >= w[1])
        || keys.last().is_some_and(|&k| width < 32 && k >> width > 0)
    {
        return Err("keys are not increasing values of the substring's width".into());
    }
    Ok(())
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
pub(crate) fn is_dense(width: u32, slots: usize) -> bool {
    (1u64 << width) <= (slots as u64 * 2).max(1 << 16)
}

impl Table {
    fn assemble(lookup: Lookup, entries: Vec<BucketEntry>) -> Table {
        let offsets = match &lookup {
            Lookup::Dense(offsets) | Lookup::Sparse { offsets, .. } => offsets,
        };
        let (mut largest_bucket, mut squares) = (0usize, 0f64);
        for w in offsets.windows(2) {
            let len = (w[1] - w[0]) as usize;
            largest_bucket = largest_bucket.max(len);
            squares += (len as f64) * (len as f64);
        }
        // The size of the bucket an entry sits in, averaged over entries (not buckets): what a
        // probe that finds anything finds.
        let entry_bucket_len = squares / entries.len().max(1) as f64;
        let long_buckets =
            entry_bucket_len * std::mem::size_of::<BucketEntry>() as f64 > 2.0 * LINE_BYTES as f64;
        Table {
            lookup,
            entries,
            largest_bucket,
            long_buckets,
        }
    }

    /// A table read from storage, after checking that its arrays are consistent and that every
    /// entry names a slot below `slots`: a damaged table can then give wrong answers (which the
    /// full check reports) but never index out of bounds. The dense form is allowed only where a
    /// build would choose it, so a damaged record cannot make the reader allocate a huge offsets
    /// array.
    pub(crate) fn from_stored(
        width: u32,
        slots: usize,
        dense: bool,
        keys: Vec<u32>,
        offsets: Vec<u32>,
        entries: Vec<BucketEntry>,
    ) -> Result<Table, String> {
        if dense != is_dense(width, slots) {
            return Err(format!(
                "a {}-bit table over {slots} ids is stored {}",
                width,
                if dense { "dense" } else { "sparse" }
            ));
        }
        check_offsets(width, dense, keys.len(), &offsets, entries.len())?;
        check_keys(width, &keys)?;
        // One pass, vectorised: the largest id decides.
        let largest = entries.iter().map(BucketEntry::id).max().unwrap_or(0);
        if !entries.is_empty() && largest as usize >= slots {
            return Err(format!(
                "an entry names id {largest}, past the {slots} ids the table covers"
            ));
        }
        let lookup = if dense {
            Lookup::Dense(offsets)
        } else {
            Lookup::Sparse { keys, offsets }
        };
        Ok(Table::assemble(lookup, entries))
    }

    /// The arrays to store.
    pub(crate) fn stored(&self) -> StoredTable<'_> {
        match &self.lookup {
            Lookup::Dense(offsets) => StoredTable {
                dense: true,
                keys: &[],
                offsets,
                entries: &self.entries,
            },
            Lookup::Sparse { keys, offsets } => StoredTable {
                dense: false,
                keys,
                offsets,
                entries: &self.entries,
            },
        }
    }

    /// Entries in the fullest bucket.
    pub(crate) fn largest_bucket(&self) -> usize {
        self.largest_bucket
    }

    /// The entries (ids with their filters) whose substring equals `key`.
    #[inline]
    pub(crate) fn bucket(&self, key: u32) -> &[BucketEntry] {
        let range = match &self.lookup {
            Lookup::Dense(offsets) => {
                offsets[key as usize] as usize..offsets[key as usize + 1] as usize
            }
            Lookup::Sparse { keys, offsets } => match keys.binary_search(&key) {
                Ok(i) => offsets[i] as usize..offsets[i + 1] as usize,
                Err(_) => 0..0,
            },
        };
        &self.entries[range]
    }

    /// Asks the processor to start loading bucket `key` (its first cache line, or in a table of
    /// long buckets every line up to [`PREFETCH_BYTES`]), so that the buckets of several tables,
    /// and the lines of one bucket, arrive in parallel instead of one cache miss after another.
    /// Short buckets get one line: a loop of varying length per probe costs more in mispredicted
    /// branches than it saves when thousands of mostly short buckets are probed.
    #[inline]
    pub(crate) fn prefetch(&self, key: u32) {
        let bucket = self.bucket(key);
        let start = bucket.as_ptr().cast::<u8>();
        if !self.long_buckets {
            prefetch(start);
            return;
        }
        // From the line the bucket starts in, which it rarely starts at the beginning of.
        let lead = start as usize % LINE_BYTES;
        let bytes = std::mem::size_of_val(bucket).min(PREFETCH_BYTES) + lead;
        for offset in (0..bytes).step_by(LINE_BYTES) {
            prefetch(start.wrapping_sub(lead).wrapping_add(offset));
        }
    }

    /// Number of ids in bucket `key`.
    #[inline]
    pub(crate) fn bucket_len(&self, key: u32) -> usize {
        self.bucket(key).len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        let lookup = match &self.lookup {
            Lookup::Dense(offsets) => offsets.capacity() * 4,
            Lookup::Sparse { keys, offsets } => (keys.capacity() + offsets.capacity()) * 4,
        };
        lookup + self.entries.capacity() * std::mem::size_of::<BucketEntry>()
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
            let mut bucketed = vec![BucketEntry::new(0, 0); entries.len()];
            // Entries arrive in id order from a rebuild, so buckets stay sorted; sort otherwise.
            if !entries.windows(2).all(|w| w[0].1 <= w[1].1) {
                entries.sort_unstable_by_key(|&(_, id, _)| id);
            }
            for &(value, id, filter) in entries.iter() {
                let at = &mut cursor[value as usize];
                bucketed[*at as usize] = BucketEntry::new(id, filter);
                *at += 1;
            }
            Table::assemble(Lookup::Dense(offsets), bucketed)
        } else {
            entries.sort_unstable();
            let mut builder = TableBuilder::new(width, slots, entries.len());
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
    entries: Vec<BucketEntry>,
    width: u32,
}

impl TableBuilder {
    /// A builder for a table of `width`-bit substrings over `slots` ids that will hold `entries`
    /// entries (reserved exactly: a table is most of an index's memory).
    pub(crate) fn new(width: u32, slots: usize, entries: usize) -> TableBuilder {
        TableBuilder {
            dense: is_dense(width, slots),
            keys: Vec::new(),
            offsets: Vec::new(),
            entries: Vec::with_capacity(entries),
            width,
        }
    }

    /// Appends an entry to bucket `value`; values must not decrease between calls.
    pub(crate) fn push(&mut self, value: u32, id: u32, filter: u32) {
        if self.keys.last() != Some(&value) {
            self.keys.push(value);
            self.offsets.push(self.entries.len() as u32);
        }
        self.entries.push(BucketEntry::new(id, filter));
    }

    pub(crate) fn finish(mut self) -> Table {
        let total = self.entries.len() as u32;
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
            Table::assemble(Lookup::Dense(offsets), self.entries)
        } else {
            self.offsets.push(total);
            self.keys.shrink_to_fit();
            self.offsets.shrink_to_fit();
            Table::assemble(
                Lookup::Sparse {
                    keys: self.keys,
                    offsets: self.offsets,
                },
                self.entries,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_every_id_and_filter_bit() {
        for (id, filter) in [
            (0, 0),
            (u32::MAX, (1 << 24) - 1),
            (0x0102_0304, 0x00a0_b0c0),
        ] {
            let entry = BucketEntry::new(id, filter);
            assert_eq!((entry.id(), entry.filter()), (id, filter));
        }
        assert_eq!(std::mem::size_of::<BucketEntry>(), 7);
    }

    #[test]
    fn only_tables_of_long_buckets_prefetch_whole_buckets() {
        // 1,000 entries in 10 buckets of 100 (700 bytes each) against 1,000 buckets of one.
        let mut clustered: Vec<Entry> = (0..1000).map(|id| (id % 10, id, 0)).collect();
        let mut spread: Vec<Entry> = (0..1000).map(|id| (id, id, 0)).collect();
        assert!(Table::from_entries(10, 1000, &mut clustered).long_buckets);
        assert!(!Table::from_entries(10, 1000, &mut spread).long_buckets);
    }

    #[test]
    fn dense_and_sparse_agree() {
        let entries = vec![
            (3u32, 0u32, 30u32),
            (1, 1, 11),
            (3, 2, 32),
            (7, 3, 73),
            (1, 4, 14),
        ];
        for (width, slots) in [(4, 10), (30, 10)] {
            let table = Table::from_entries(width, slots, &mut entries.clone());
            let contents = |key| {
                let bucket = table.bucket(key);
                let ids: Vec<u32> = bucket.iter().map(|e| e.id()).collect();
                let filters: Vec<u32> = bucket.iter().map(|e| e.filter()).collect();
                (ids, filters)
            };
            assert_eq!(contents(3), (vec![0, 2], vec![30, 32]));
            assert_eq!(contents(1), (vec![1, 4], vec![11, 14]));
            assert_eq!(contents(7).0, vec![3]);
            assert_eq!(table.bucket_len(0), 0);
            assert_eq!(table.bucket_len(5), 0);
            let mut builder = TableBuilder::new(width, slots, 5);
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
