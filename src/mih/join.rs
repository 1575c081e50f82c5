//! Exact self-join: every pair of live codes within a Hamming radius, by multi-index hashing.
//!
//! Each live code `a` is a query for the codes `b > a` (so each pair is found once): its buckets
//! are probed as in a radius search ([`super::search`], whose bucket enumeration, survivor
//! batches and cost model it shares), entries up to `a` and most of the rest are rejected by one
//! branch-free test of id and filter, and survivors are verified. A pair within the radius lies
//! within the probe radius of at least one table (pigeonhole), and it is reported only from the
//! first such table, which the per-substring distances of the two codes' XOR tell without a
//! "seen" set.
//!
//! Codes added since the last table build (the view's delta) get hash tables of their own for the
//! join's duration when they are many, so that the pairs between them and the tables' codes cost
//! probes, not a scan of the delta per code. Per code and part, a scan of the candidates `b > a`
//! replaces the probes where it is cheaper: always near the end of the id range, everywhere on
//! small indexes and at radii where the probes outnumber the codes.
//!
//! [`Join`] streams the pairs in order of `(a, b)` in batches: codes are cut into blocks, a wave of
//! blocks runs in parallel (rayon), and their pairs are handed out in block order before the next
//! wave starts. Memory is bounded by one wave's pairs: blocks are sized from the pairs per code seen
//! so far, and a block that finds far more than that (a run of identical codes) stops early; the
//! blocks after it in its wave are then computed again in the next.

use std::collections::VecDeque;

use rayon::prelude::*;

use super::layout::BitField;
use super::search::{
    binomial, distance, for_each_bucket, xor_distance, Survivors, ENTRY_NS, MAX_WORDS, PROBE_NS,
    SCAN_NS_PER_WORD,
};
use super::table::Table;
use super::View;

/// One pair of live ids `a < b` within the radius, at Hamming distance `distance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JoinPair {
    pub(crate) a: u32,
    pub(crate) b: u32,
    pub(crate) distance: u32,
}

/// How the pairs are found; the answer is the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinPlan {
    /// Per code and part, probes or a scan, whichever is expected to be cheaper.
    Auto,
    /// Probes wherever there are hash tables (the delta gets its own whatever its size): the
    /// tests' way of checking the probing path on indexes the cost model would scan.
    #[cfg_attr(not(test), allow(dead_code))]
    Tables,
    /// A scan of every later code.
    Scan,
}

/// Below this many codes the delta is scanned, not given tables of its own: building them costs
/// more than scanning so few.
const DELTA_TABLES_FROM: usize = 2048;
/// Pairs a block aims at; with a few blocks per thread in a wave, this bounds the memory a wave
/// holds (12 bytes a pair) to a few megabytes per thread.
const TARGET_PAIRS: usize = 1 << 16;
/// A block stops after the code that takes it past this many pairs.
const BLOCK_PAIR_CAP: usize = 4 * TARGET_PAIRS;
/// Most codes per block, so that a wave still spreads over the threads on small indexes.
const MAX_BLOCK: usize = 4096;
/// Codes per block in the first wave, before anything is known of the pairs per code.
const FIRST_BLOCK: usize = 64;
/// Blocks per thread in a wave: enough for rayon to even out blocks of unequal cost.
const BLOCKS_PER_THREAD: usize = 4;
/// How many codes ahead of the one being joined its first buckets are prefetched.
const CODES_AHEAD: usize = 2;

/// The codes of one contiguous slot range, with hash tables when they pay.
struct Part<'v> {
    start: usize,
    end: usize,
    /// Codes of slots `start..end`.
    words: &'v [u64],
    tables: Option<&'v [Table]>,
    /// Fewest candidates `b > a` in this part for which probing beats scanning them.
    probe_from: usize,
}

/// The pairs of a view, in batches, ordered by `a`, then `b`.
pub(crate) struct Join<'v> {
    view: &'v View,
    radius: u32,
    /// Probe radius per table (negative: not probed).
    radii: Vec<i64>,
    delta_tables: Option<Vec<Table>>,
    plan: JoinPlan,
    /// The next slot to take as `a`.
    next: usize,
    /// Codes per block in the next wave.
    block: usize,
    ready: VecDeque<Vec<JoinPair>>,
}

impl<'v> Join<'v> {
    /// A join of `view` at `radius` (at most the code length).
    pub(crate) fn new(view: &'v View, radius: u32, plan: JoinPlan) -> Join<'v> {
        let layout = &view.layout;
        let radii = (0..layout.substrings.len())
            .map(|j| view.table_radius(radius, j))
            .collect();
        let delta_slots = view.delta.len() / layout.words;
        let delta_tables = match plan {
            JoinPlan::Scan => None,
            JoinPlan::Tables => (delta_slots > 0).then(|| delta_tables(view)),
            JoinPlan::Auto => (delta_slots >= DELTA_TABLES_FROM).then(|| delta_tables(view)),
        };
        Join {
            view,
            radius,
            radii,
            delta_tables,
            plan,
            next: 0,
            block: FIRST_BLOCK,
            ready: VecDeque::new(),
        }
    }

    fn parts(&self) -> [Part<'_>; 2] {
        let view = self.view;
        let base = Part {
            start: 0,
            end: view.base.slots,
            words: &view.base.words,
            tables: (self.plan != JoinPlan::Scan && view.base.slots > 0)
                .then_some(view.base.tables.as_slice()),
            probe_from: 0,
        };
        let delta = Part {
            start: view.base.slots,
            end: view.slots(),
            words: &view.delta,
            tables: self.delta_tables.as_deref(),
            probe_from: 0,
        };
        [base, delta].map(|mut part| {
            part.probe_from = match self.plan {
                JoinPlan::Auto => self.probe_break_even(&part),
                JoinPlan::Tables => 0,
                JoinPlan::Scan => usize::MAX,
            };
            part
        })
    }

    /// Candidates above which probing `part`'s tables is expected to beat scanning them: the
    /// probes, and the entries of their buckets were the part's codes uniform, priced with the
    /// search planner's cost model.
    fn probe_break_even(&self, part: &Part<'_>) -> usize {
        let layout = &self.view.layout;
        let codes = (part.end - part.start) as f64;
        let cost_ns: f64 = layout
            .substrings
            .iter()
            .zip(&self.radii)
            .map(|(sub, &r)| {
                let probes: f64 = (0..=r).map(|s| binomial(sub.width, s as u32)).sum::<f64>();
                let per_bucket = codes / 2f64.powi(sub.width as i32);
                probes * (PROBE_NS + per_bucket * ENTRY_NS)
            })
            .sum();
        let candidates = cost_ns / (SCAN_NS_PER_WORD * layout.words as f64);
        if candidates.is_finite() && candidates < usize::MAX as f64 {
            candidates.ceil() as usize
        } else {
            usize::MAX
        }
    }

    /// Computes the next wave of blocks into `ready`.
    fn wave(&mut self) {
        let slots = self.view.slots();
        let blocks = BLOCKS_PER_THREAD * rayon::current_num_threads().max(1);
        let ranges: Vec<(usize, usize)> = (0..blocks)
            .map(|b| {
                let start = self.next.saturating_add(b.saturating_mul(self.block));
                (
                    start.min(slots),
                    start.saturating_add(self.block).min(slots),
                )
            })
            .filter(|(start, end)| start < end)
            .collect();
        let parts = self.parts();
        let results: Vec<(Vec<JoinPair>, usize)> = ranges
            .par_iter()
            .map(|&(start, end)| self.block_pairs(&parts, start, end))
            .collect();
        let (mut pairs, mut codes) = (0usize, 0usize);
        for ((batch, stopped), &(start, end)) in results.into_iter().zip(&ranges) {
            pairs += batch.len();
            codes += stopped - start;
            self.next = stopped;
            self.ready.push_back(batch);
            if stopped < end {
                // The later blocks of this wave are dropped: their pairs would have to wait for
                // the rest of this one, and holding them is what the cap avoids.
                break;
            }
        }
        let per_code = pairs.div_ceil(codes.max(1)).max(1);
        self.block = (TARGET_PAIRS / per_code).clamp(1, MAX_BLOCK);
    }

    /// The pairs with `a` in `start..end`, by `a` then `b`, and the slot after the last `a` done
    /// (before `end` when the block reached [`BLOCK_PAIR_CAP`]).
    fn block_pairs(&self, parts: &[Part<'_>], start: usize, end: usize) -> (Vec<JoinPair>, usize) {
        match self.view.layout.words {
            1 => self.block_pairs_impl::<1>(parts, start, end),
            2 => self.block_pairs_impl::<2>(parts, start, end),
            _ => self.block_pairs_impl::<0>(parts, start, end),
        }
    }

    fn block_pairs_impl<const W: usize>(
        &self,
        parts: &[Part<'_>],
        start: usize,
        end: usize,
    ) -> (Vec<JoinPair>, usize) {
        let view = self.view;
        let mut out = Vec::new();
        let mut found: Vec<(u32, u32)> = Vec::new();
        for a in start..end {
            if view.deleted[a] {
                continue;
            }
            if let (Some(tables), true) = (parts[0].tables, a + CODES_AHEAD < view.base.slots) {
                // The next codes' own buckets, the first each of their probes reads, arrive
                // while this code is joined.
                let next = view.slot_words(a + CODES_AHEAD);
                for (sub, table) in view.layout.substrings.iter().zip(tables) {
                    table.prefetch(sub.value(next));
                }
            }
            let code = view.slot_words(a);
            found.clear();
            for part in parts {
                let first = part.start.max(a + 1);
                if first >= part.end {
                    continue;
                }
                match part.tables {
                    Some(tables) if part.end - first >= part.probe_from => {
                        self.probe::<W>(part, tables, a, code, &mut found)
                    }
                    _ => self.scan::<W>(part, first, code, &mut found),
                }
            }
            // Pairs of several tables and parts interleave; a scan's come ordered.
            found.sort_unstable();
            out.extend(found.iter().map(|&(b, d)| JoinPair {
                a: a as u32,
                b,
                distance: d,
            }));
            if out.len() >= BLOCK_PAIR_CAP {
                return (out, a + 1);
            }
        }
        (out, end)
    }

    /// Appends `(b, distance)` for every live `b` in `first..part.end` within the radius.
    fn scan<const W: usize>(
        &self,
        part: &Part<'_>,
        first: usize,
        code: &[u64],
        found: &mut Vec<(u32, u32)>,
    ) {
        let words = self.view.layout.words;
        let codes = &part.words[(first - part.start) * words..(part.end - part.start) * words];
        for (i, other) in codes.chunks_exact(words).enumerate() {
            let d = distance::<W>(code, other, words);
            let b = first + i;
            if d <= self.radius && !self.view.deleted[b] {
                found.push((b as u32, d));
            }
        }
    }

    /// Appends `(b, distance)` for every live `b > a` of the part within the radius, probing its
    /// tables.
    ///
    /// Entries are tested for `b > a` and by their filter without branches, and the survivors of
    /// all tables gathered before any code is read: those reads (most of them cache misses) are
    /// then independent of each other and the processor overlaps them.
    fn probe<const W: usize>(
        &self,
        part: &Part<'_>,
        tables: &[Table],
        a: usize,
        code: &[u64],
        found: &mut Vec<(u32, u32)>,
    ) {
        let layout = &self.view.layout;
        let words = layout.words;
        let subs = &layout.substrings;
        let mut xor = [0u64; MAX_WORDS];
        let mut survivors = Survivors::new();
        let mut verify = |batch: &[(u32, u16)]| {
            for &(b, j) in batch {
                let b = b as usize;
                let at = (b - part.start) * words;
                let d = xor_distance::<W>(code, &part.words[at..], words, &mut xor);
                if d > self.radius || self.view.deleted[b] {
                    continue;
                }
                if !reached_by_earlier_table(subs, &self.radii, &xor, usize::from(j)) {
                    found.push((b as u32, d));
                }
            }
        };
        // Only `b > a`: each pair is found from its smaller id.
        let first_id = a as u32 + 1;
        for (j, (sub, table)) in subs.iter().zip(tables).enumerate() {
            let r = self.radii[j];
            if r < 0 {
                continue;
            }
            let value = sub.value(code);
            let filter = layout.filters[j].value(code);
            for s in 0..=r as u32 {
                // Entries whose filter alone puts them beyond the radius need no code read.
                let slack = self.radius - s;
                for_each_bucket(table, value, sub.width, s, |bucket| {
                    survivors.gather(bucket, j, first_id, filter, slack, &mut verify);
                });
            }
        }
        survivors.flush(&mut verify);
    }
}

impl Iterator for Join<'_> {
    type Item = Vec<JoinPair>;

    fn next(&mut self) -> Option<Vec<JoinPair>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                if !batch.is_empty() {
                    return Some(batch);
                }
                continue;
            }
            if self.next >= self.view.slots() {
                return None;
            }
            self.wave();
        }
    }
}

/// Hash tables over the delta's live codes, with the view's substrings.
fn delta_tables(view: &View) -> Vec<Table> {
    super::build_tables(&view.layout, &view.delta, view.base.slots, &view.deleted)
}

/// Whether a table before `j` also reaches the pair whose XOR is `xor` within its probe radius:
/// then that table reports it.
#[inline(always)]
fn reached_by_earlier_table(
    subs: &[BitField],
    radii: &[i64],
    xor: &[u64; MAX_WORDS],
    j: usize,
) -> bool {
    subs[..j]
        .iter()
        .zip(radii)
        .any(|(sub, &r)| i64::from(sub.distance(xor)) <= r)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bitvec::vec::BitVec;
    use rand::{Rng, RngExt, SeedableRng};

    use super::*;
    use crate::mih::layout::WordLayout;

    /// Every pair within `radius` by comparing all of them.
    fn brute_force(view: &View, radius: u32) -> Vec<JoinPair> {
        let words = view.layout.words;
        let live: Vec<usize> = view.live_ids().map(|id| id as usize).collect();
        let mut pairs = Vec::new();
        for (i, &a) in live.iter().enumerate() {
            for &b in &live[i + 1..] {
                let d = distance::<0>(view.slot_words(a), view.slot_words(b), words);
                if d <= radius {
                    pairs.push(JoinPair {
                        a: a as u32,
                        b: b as u32,
                        distance: d,
                    });
                }
            }
        }
        pairs
    }

    fn joined(view: &View, radius: u32, plan: JoinPlan) -> Vec<JoinPair> {
        Join::new(view, radius, plan).flatten().collect()
    }

    /// `n` codes of `bits` bits around `centres` centres (each bit flipped with `flip`).
    fn codes(seed: u64, bits: u32, n: usize, centres: usize, flip: f64) -> Vec<u64> {
        let words = bits.div_ceil(64) as usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mask = |w: usize| {
            let used = (bits as usize - w * 64).min(64);
            if used == 64 {
                u64::MAX
            } else {
                u64::MAX << (64 - used)
            }
        };
        let centre_codes: Vec<Vec<u64>> = (0..centres)
            .map(|_| (0..words).map(|w| rng.next_u64() & mask(w)).collect())
            .collect();
        (0..n)
            .flat_map(|_| {
                let centre = centre_codes[rng.random_range(0..centres)].clone();
                (0..words)
                    .map(|w| {
                        let mut word = centre[w];
                        for bit in 0..64 {
                            if rng.random_bool(flip) {
                                word ^= 1 << bit;
                            }
                        }
                        word & mask(w)
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn view(bits: u32, substrings: u32, words: Vec<u64>) -> View {
        let layout =
            WordLayout::new(milan_index_format::CodeLayout::new(bits, substrings).unwrap());
        let slots = words.len() / layout.words;
        View::build(Arc::new(layout), words, BitVec::repeat(false, slots))
    }

    #[test]
    fn every_plan_equals_brute_force_with_a_delta_and_deletes() {
        for (bits, substrings, radius) in [(64u32, 4, 6), (128, 5, 12), (24, 3, 3), (72, 3, 5)] {
            let words = bits.div_ceil(64) as usize;
            let all = codes(u64::from(bits), bits, 3000, 40, 0.06);
            let (base, added) = all.split_at(2500 * words);
            let adds: Vec<(u64, Vec<u64>)> = added
                .chunks(words)
                .enumerate()
                .map(|(i, code)| (2500 + i as u64, code.to_vec()))
                .collect();
            let deletes: Vec<u64> = (0..3000).step_by(7).collect();
            let view = view(bits, substrings, base.to_vec()).apply(&adds, &deletes);
            assert_eq!(view.base.slots, 2500, "the adds wait in the delta");
            let truth = brute_force(&view, radius);
            assert!(truth.len() > 100, "{bits} bits: {} pairs", truth.len());
            assert!(truth.iter().any(|p| p.a < 2500 && p.b >= 2500));
            for plan in [JoinPlan::Auto, JoinPlan::Tables, JoinPlan::Scan] {
                assert_eq!(joined(&view, radius, plan), truth, "{bits} bits, {plan:?}");
            }
        }
    }

    #[test]
    fn identical_codes_stream_in_capped_blocks() {
        // 1,500 copies of one code: 1.1 million pairs, far past a block's cap, so blocks stop
        // early and waves are cut short; the batches must still come out whole and in order.
        let view = view(64, 4, vec![0x0123_4567_89ab_cdef; 1500]);
        let batches: Vec<Vec<JoinPair>> = Join::new(&view, 0, JoinPlan::Auto).collect();
        assert!(batches.len() > 1);
        assert!(batches
            .iter()
            .all(|batch| batch.len() <= BLOCK_PAIR_CAP + 1500));
        let pairs: Vec<JoinPair> = batches.into_iter().flatten().collect();
        assert_eq!(pairs.len(), 1500 * 1499 / 2);
        assert!(pairs
            .windows(2)
            .all(|w| (w[0].a, w[0].b) < (w[1].a, w[1].b)));
        assert!(pairs.iter().all(|p| p.distance == 0));
    }

    #[test]
    fn probing_pays_only_past_a_number_of_candidates() {
        let view = view(64, 4, codes(1, 64, 5000, 50, 0.1));
        let small = Join::new(&view, 2, JoinPlan::Auto);
        let large = Join::new(&view, 40, JoinPlan::Auto);
        let [base, _] = small.parts();
        assert!(
            base.probe_from > 0 && base.probe_from < 5000,
            "{}",
            base.probe_from
        );
        // At radius 40 of 64 bits every table enumerates most of its values.
        assert!(large.parts()[0].probe_from > 5000);
        assert_eq!(joined(&view, 40, JoinPlan::Auto), brute_force(&view, 40));
    }
}
