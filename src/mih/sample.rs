//! [`NeighbourSample`]: how far the k-th nearest code typically lies, measured once per table build
//! from a few stored codes, so that a top-k search can choose between the hash tables and a scan
//! before spending anything.
//!
//! Without it, a top-k search learns the k-th distance only by probing, and on uniform or very long
//! codes that probing (every candidate verified while fewer than k are known) costs a good share of
//! the scan it then falls back to.

use bitvec::vec::BitVec;
use rayon::prelude::*;

use super::search::distance;

/// Stored codes used as sample queries.
const SAMPLES: usize = 16;

/// Per sample query, how many other live codes lie at each distance, cumulated.
pub(crate) struct NeighbourSample {
    /// `within[i][d]`: codes within distance `d` of sample `i` (itself excluded).
    within: Vec<Vec<u32>>,
}

impl NeighbourSample {
    /// Samples `SAMPLES` live codes spread evenly over the slots of `words` (`words` words per
    /// code, `bits` bits).
    pub(crate) fn of(words: &[u64], stride: usize, deleted: &BitVec<u64>, bits: u32) -> Self {
        let live = deleted.len() - deleted.count_ones();
        if live < 2 {
            return NeighbourSample { within: Vec::new() };
        }
        let every = (live / SAMPLES).max(1);
        let picks: Vec<usize> = deleted.iter_zeros().step_by(every).take(SAMPLES).collect();
        let deleted_words = deleted.as_raw_slice();
        let is_live = |slot: usize| deleted_words[slot / 64] >> (slot % 64) & 1 == 0;
        let within = picks
            .par_iter()
            .map(|&pick| {
                let query = &words[pick * stride..(pick + 1) * stride];
                let mut counts = vec![0u32; bits as usize + 1];
                for (slot, code) in words.chunks_exact(stride).enumerate() {
                    let d = distance::<0>(query, code, stride);
                    counts[d as usize] += u32::from(is_live(slot));
                }
                counts[0] -= 1; // the sample itself
                let mut total = 0;
                for count in &mut counts {
                    total += *count;
                    *count = total;
                }
                counts
            })
            .collect();
        NeighbourSample { within }
    }

    /// The counts as stored with the hash tables: per sample, codes within each distance.
    pub(crate) fn rows(&self) -> &[Vec<u32>] {
        &self.within
    }

    /// A sample read back from storage; rows of another length than `bits + 1` are dropped
    /// (the sample only guides planning, so a damaged one costs time, never answers).
    pub(crate) fn from_rows(rows: Vec<Vec<u32>>, bits: u32) -> Self {
        let within = rows
            .into_iter()
            .filter(|row| row.len() == bits as usize + 1)
            .collect();
        NeighbourSample { within }
    }

    /// The median over the samples of the distance within which `k` other codes lie; `None` with
    /// no samples or fewer than `k` other codes.
    pub(crate) fn kth_distance(&self, k: usize) -> Option<u32> {
        let mut distances: Vec<u32> = self
            .within
            .iter()
            .filter_map(|within| within.iter().position(|&n| n as usize >= k))
            .map(|d| d as u32)
            .collect();
        if distances.len() < self.within.len() || distances.is_empty() {
            return None;
        }
        distances.sort_unstable();
        Some(distances[distances.len() / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kth_distance_of_evenly_spread_codes() {
        // 8-bit codes 0..=255 in one word each: each code has 8 others at distance 1, 28 at 2.
        let words: Vec<u64> = (0..256u64).collect();
        let deleted = BitVec::repeat(false, 256);
        let sample = NeighbourSample::of(&words, 1, &deleted, 8);
        assert_eq!(sample.kth_distance(1), Some(1));
        assert_eq!(sample.kth_distance(8), Some(1));
        assert_eq!(sample.kth_distance(9), Some(2));
        assert_eq!(sample.kth_distance(36), Some(2));
        assert_eq!(sample.kth_distance(255), Some(8));
        assert_eq!(sample.kth_distance(256), None);
        // Deleted codes do not count.
        let mut deleted = BitVec::repeat(true, 256);
        deleted.set(0, false);
        assert_eq!(
            NeighbourSample::of(&words, 1, &deleted, 8).kth_distance(1),
            None
        );
    }
}
