//! Exact Hamming search over a [`View`]: radius and top-k, by multi-index hashing or a linear scan.
//!
//! Multi-index hashing splits each code into `m` substrings, one hash table each. A code within
//! distance `r = m * q + a` (`0 <= a < m`) of the query matches it within `q` bits on one of the
//! first `a + 1` substrings or within `q - 1` bits on one of the others (pigeonhole), so probing those
//! buckets and checking the full distance of every candidate is exact. Top-k probes all tables at
//! substring distance 0, then 1, and so on: after table `j` at distance `s`, every code not yet seen
//! is at least `m * s + j + 1` away, so the search stops once `k` results lie below that bound.
//!
//! A candidate found in several tables is reported only from the first probe that reaches it, which
//! the per-substring distances of its XOR with the query tell without any "seen" set.
//!
//! Multi-index hashing loses to a scan on tiny indexes, long codes and large radii over uniform
//! codes; [`Strategy::Auto`] prices both per query (probes and candidates against codes scanned)
//! and takes the cheaper. A top-k search learns its cost only as it finds its k-th nearest, so it
//! starts on the tables (unless sample codes predict the scan) and, from the hits found so far,
//! estimates where the k-th nearest lies and what the rest will cost: it switches to the scan as
//! soon as that is expected to be cheaper, and never after spending a scan's cost
//! ([`View::top_k_gives_up`]). Codes added since the last table build (the delta) are always
//! scanned.
//!
//! A forced [`Strategy::MultiIndex`] has no such escape, so it has a budget instead
//! ([`View::forced_probe_budget`]): a query that would probe more buckets is refused with
//! [`TooCostly`] rather than left to run for minutes.

use super::layout::BitField;
use super::table::{BucketEntry, Table};
use super::View;

/// How a search finds its answers. The answers are the same whichever is used; only
/// [`Strategy::MultiIndex`] may refuse a query instead (see there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Per query, whichever the cost model expects to be faster.
    #[default]
    Auto,
    /// Always multi-index hashing (the hash tables; codes added since their last build are
    /// scanned), for measuring it.
    ///
    /// Its cost grows with the number of substring values it enumerates, which on long or uniform
    /// codes, large radii or a large k can exceed a scan's by many orders of magnitude. So it is
    /// bounded: a query that would probe more than `max(2^20, 64 x (a scan's cost in probes))`
    /// buckets (2^20 probes take from a few milliseconds to about 20) is refused with
    /// [`SearchError::MultiIndexTooCostly`](crate::SearchError::MultiIndexTooCostly), naming the probes it
    /// would need, before it starts where the need is known (radius searches, and top-k searches
    /// predicted from the sampled k-th distance) and otherwise when it runs past the budget.
    /// [`Strategy::Auto`] and [`Strategy::Scan`] answer the same query at a scan's cost at most.
    MultiIndex,
    /// Always a linear scan of every code.
    Scan,
}

/// A result packed as `distance << 32 | id`, so that sorting orders by distance, then id.
pub(crate) type Packed = u64;

fn pack(distance: u32, id: usize) -> Packed {
    (u64::from(distance) << 32) | id as u64
}

/// What bounds a top-k search on the hash tables.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// Planned ([`Strategy::Auto`]): stop once the rest is expected to cost more than a scan.
    ScanCost,
    /// Forced ([`Strategy::MultiIndex`]): refuse past this many bucket probes.
    Probes(f64),
}

/// How a top-k search on the hash tables ended.
enum TablesOutcome {
    /// The `k` best are certain.
    Complete,
    /// Planned search gave up: a scan is expected to be cheaper.
    ScanCheaper,
    /// Forced search stopped at its budget.
    OverBudget(TooCostly),
}

/// Most words in a code (1024 bits).
pub(super) const MAX_WORDS: usize = 16;

// Cost model, in nanoseconds, calibrated with `milan bench search` (docs/benchmarks.md). Only the
// ratios matter: they decide where multi-index hashing stops paying (here and in the self-join).
/// Scanning one code, per 64-bit word.
pub(super) const SCAN_NS_PER_WORD: f64 = 0.45;
/// Enumerating one probe and looking up its bucket.
pub(super) const PROBE_NS: f64 = 3.0;
/// Reading one bucket entry and its filter.
pub(super) const ENTRY_NS: f64 = 1.5;
/// Reading and checking the code of an entry that its filter did not reject (a random access),
/// before the per-word and per-table terms of `View::verify_ns`.
const SURVIVOR_NS: f64 = 8.0;
/// Below this many slots a scan is always cheaper.
const SCAN_BELOW_SLOTS: usize = 2048;
/// A bucket probe of a top-k search. Its keys spread over the whole table, so nearly every probe
/// misses the caches (the bucket's offset, then its entries): 20-40 ns on the workloads of
/// docs/benchmarks.md, where a scan read a word in 0.25 ns; so about 50 ns at `SCAN_NS_PER_WORD`.
/// (`PROBE_NS`, 17 times less, is kept for the radius search and the self-join, as calibrated
/// for them.)
const TOP_K_PROBE_NS: f64 = 50.0;
/// A planned top-k search takes every probe step that keeps it within this fraction of a scan's
/// cost, whatever it predicts: the first steps tell too little (at 10,000,000 64-bit codes in 3
/// substrings, two levels found no hit nearer than 15 bits for queries whose 20th nearest lies at
/// 11).
const EXPLORE_BUDGET: f64 = 0.03;
/// A top-k search starts on the hash tables only when, at the sampled k-th distance, they are
/// predicted to cost less than this fraction of a scan. The prediction is rough, but the search
/// itself switches to the scan when its own query turns out costly: the clustered workloads of
/// docs/benchmarks.md predict under 0.25 for their top-20, uniform and very long codes 1.7 and
/// more.
const TOP_K_PLAN_MARGIN: f64 = 1.0;
/// A forced multi-index search may probe this many buckets whatever the index's size: every
/// value of 16 tables of 16-bit substrings, so that small indexes with substrings that narrow can
/// always be searched that way. At `PROBE_NS` that is 3 ms, but probes of tables too large for the
/// processor's caches take several times that: 1,000 uniform 1024-bit codes in 52 tables of
/// 20-bit substrings probe at about 19 ns each, so their top-5 (12.7 million probes, a quarter
/// of a second) is refused where a scan takes microseconds.
const FORCED_MIN_PROBES: f64 = (1u64 << 20) as f64;
/// ... and on larger indexes up to this many scans' worth of probes.
const FORCED_SCAN_MULTIPLE: f64 = 64.0;
/// Filter survivors gathered before their codes are read.
const SURVIVOR_BATCH: usize = 64;
/// Codes per block of the scan kernel: distances first (a tight loop), reports second.
const SCAN_BLOCK: usize = 128;

#[inline(always)]
fn stride<const W: usize>(dynamic: usize) -> usize {
    if W == 0 {
        dynamic
    } else {
        W
    }
}

/// XOR of two codes into `out`; returns the Hamming distance.
#[inline(always)]
pub(super) fn xor_distance<const W: usize>(
    a: &[u64],
    b: &[u64],
    words: usize,
    out: &mut [u64; MAX_WORDS],
) -> u32 {
    let n = stride::<W>(words);
    let mut distance = 0;
    for ((x, y), o) in a[..n].iter().zip(&b[..n]).zip(out.iter_mut()) {
        *o = x ^ y;
        distance += o.count_ones();
    }
    distance
}

/// Hamming distance of two codes of `words` words (`W` of them when `W` is not 0).
#[inline(always)]
pub(super) fn distance<const W: usize>(a: &[u64], b: &[u64], words: usize) -> u32 {
    let n = stride::<W>(words);
    a[..n]
        .iter()
        .zip(&b[..n])
        .map(|(x, y)| (x ^ y).count_ones())
        .sum()
}

/// Calls `f` with every `width`-bit value at Hamming distance exactly `s` from `value` (Gosper's
/// hack enumerates the `s`-bit masks in increasing order); stops early when `f` returns false.
#[inline(always)]
fn for_each_at_distance(value: u32, width: u32, s: u32, mut f: impl FnMut(u32) -> bool) -> bool {
    if s == 0 {
        return f(value);
    }
    if s > width {
        return true;
    }
    let limit = 1u64 << width;
    let mut mask: u64 = (1u64 << s) - 1;
    while mask < limit {
        if !f(value ^ mask as u32) {
            return false;
        }
        let lowest = mask & mask.wrapping_neg();
        let ripple = mask + lowest;
        mask = (((ripple ^ mask) >> 2) >> lowest.trailing_zeros()) | ripple;
    }
    true
}

/// Keys prefetched ahead of the one being read by [`for_each_bucket`].
const PREFETCH_AHEAD: usize = 8;

/// Calls `visit(entries)` with every bucket of `table` whose key is at distance `s` from
/// `value`, in [`for_each_at_distance`] order, prefetching each bucket `PREFETCH_AHEAD` keys
/// before it is read, so that the buckets' cache misses overlap instead of following each other.
#[inline(always)]
pub(super) fn for_each_bucket(
    table: &Table,
    value: u32,
    width: u32,
    s: u32,
    mut visit: impl FnMut(&[BucketEntry]),
) {
    if s == 0 {
        // One bucket: nothing to overlap its read with.
        visit(table.bucket(value));
        return;
    }
    let mut ring = [0u32; PREFETCH_AHEAD];
    let mut seen = 0usize;
    for_each_at_distance(value, width, s, |key| {
        table.prefetch(key);
        if seen >= PREFETCH_AHEAD {
            visit(table.bucket(ring[seen % PREFETCH_AHEAD]));
        }
        ring[seen % PREFETCH_AHEAD] = key;
        seen += 1;
        true
    });
    for i in seen.saturating_sub(PREFETCH_AHEAD)..seen {
        visit(table.bucket(ring[i % PREFETCH_AHEAD]));
    }
}

/// Bucket entries that passed their filter, gathered in batches before any of their codes is
/// read: those reads (most of them cache misses) are then independent of each other and the
/// processor overlaps them, also across buckets and tables.
pub(super) struct Survivors {
    /// `(id, table)` of each survivor; the first `count` are pending.
    batch: [(u32, u16); SURVIVOR_BATCH],
    count: usize,
}

impl Survivors {
    pub(super) fn new() -> Survivors {
        Survivors {
            batch: [(0, 0); SURVIVOR_BATCH],
            count: 0,
        }
    }

    /// Gathers the entries of `bucket` (of table `j`) with an id of at least `first_id` whose
    /// filter is within `slack` bits of `filter`, testing them without branches; hands each full
    /// batch to `verify`.
    #[inline(always)]
    pub(super) fn gather(
        &mut self,
        bucket: &[BucketEntry],
        j: usize,
        first_id: u32,
        filter: u32,
        slack: u32,
        verify: &mut impl FnMut(&[(u32, u16)]),
    ) {
        for entry in bucket {
            let id = entry.id();
            self.batch[self.count] = (id, j as u16);
            let keep = id >= first_id && (entry.filter() ^ filter).count_ones() <= slack;
            self.count += usize::from(keep);
            if self.count == SURVIVOR_BATCH {
                verify(&self.batch);
                self.count = 0;
            }
        }
    }

    /// Hands the pending survivors to `verify`.
    #[inline(always)]
    pub(super) fn flush(&mut self, verify: &mut impl FnMut(&[(u32, u16)])) {
        verify(&self.batch[..self.count]);
        self.count = 0;
    }
}

/// Whether a candidate that table `j` reached at substring distance `s` was reported already: by
/// a probe at a lower substring distance, or at the same distance in an earlier table, among the
/// probes the search makes (`probed(table, distance)`). Its per-substring distances tell, so no
/// "seen" set is needed.
#[inline(always)]
fn reached_earlier(
    substrings: &[BitField],
    xor: &[u64; MAX_WORDS],
    s: i64,
    j: usize,
    probed: impl Fn(usize, i64) -> bool,
) -> bool {
    substrings.iter().enumerate().any(|(t, substring)| {
        let dt = i64::from(substring.distance(xor));
        probed(t, dt) && (dt < s || (dt == s && t < j))
    })
}

/// Expected cost of one bucket entry whose filter (`filter_width` bits) may differ from the
/// query's in up to `slack` bits: the share of entries that survive the filter, as if their filter
/// bits were random, pays for a code read.
#[inline]
fn entry_cost(filter_width: u32, slack: i64, verify_ns: f64) -> f64 {
    if slack < 0 {
        return ENTRY_NS;
    }
    let (width, slack) = (
        filter_width as usize,
        (slack as usize).min(filter_width as usize),
    );
    ENTRY_NS + verify_ns * FILTER_SURVIVAL[width][slack]
}

/// Widest substring (and so the largest `n` of [`binomial`] that the search asks for).
const MAX_WIDTH: usize = milan_index_format::MAX_SUBSTRING_BITS as usize;
/// Widest filter.
const MAX_FILTER: usize = super::layout::FILTER_BITS as usize;

/// `n choose k` for `n, k <= MAX_WIDTH`, computed once at compile time: the planner asks for them
/// on every query.
static BINOMIALS: [[f64; MAX_WIDTH + 1]; MAX_WIDTH + 1] = binomials();

/// `FILTER_SURVIVAL[w][s]`: the share of uniform `w`-bit values within `s` bits of a given one.
static FILTER_SURVIVAL: [[f64; MAX_FILTER + 1]; MAX_FILTER + 1] = filter_survival();

const fn binomials() -> [[f64; MAX_WIDTH + 1]; MAX_WIDTH + 1] {
    let mut table = [[0.0; MAX_WIDTH + 1]; MAX_WIDTH + 1];
    table[0][0] = 1.0;
    let mut n = 1;
    while n <= MAX_WIDTH {
        table[n][0] = 1.0;
        let mut k = 1;
        while k <= n {
            table[n][k] = table[n - 1][k - 1] + table[n - 1][k];
            k += 1;
        }
        n += 1;
    }
    table
}

const fn filter_survival() -> [[f64; MAX_FILTER + 1]; MAX_FILTER + 1] {
    let binomials = binomials();
    let mut table = [[0.0; MAX_FILTER + 1]; MAX_FILTER + 1];
    let mut width = 0;
    while width <= MAX_FILTER {
        let values = (1u64 << width) as f64;
        let (mut within, mut slack) = (0.0, 0);
        while slack <= MAX_FILTER {
            if slack <= width {
                within += binomials[width][slack];
            }
            table[width][slack] = within / values;
            slack += 1;
        }
        width += 1;
    }
    table
}

/// `n choose k`, as a float (counts of probes, which may exceed any integer type in principle).
#[inline]
pub(super) fn binomial(n: u32, k: u32) -> f64 {
    if k > n {
        return 0.0;
    }
    match BINOMIALS.get(n as usize) {
        Some(row) => row[k as usize],
        None => (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1)),
    }
}

/// `P(X <= r)` for `X ~ Binomial(n, p)`.
fn binomial_cdf(n: u32, p: f64, r: i64) -> f64 {
    if r < 0 {
        return 0.0;
    }
    if r >= i64::from(n) {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0; // X = n > r
    }
    // Terms C(n, i) p^i (1-p)^(n-i), each from the one before.
    let mut term = (1.0 - p).powi(n as i32);
    let mut sum = term;
    for i in 0..r as u32 {
        term *= f64::from(n - i) / f64::from(i + 1) * p / (1.0 - p);
        sum += term;
    }
    sum
}

/// The last `(width, radius)` for which [`View::found_share`] computed a table's miss share, with
/// that share: substrings come in at most two widths, in runs, so most tables reuse it.
#[derive(Default)]
struct ShareCache {
    last: Option<(u32, i64, f64)>,
}

impl ShareCache {
    fn get(&mut self, width: u32, radius: i64, compute: impl FnOnce() -> f64) -> f64 {
        match self.last {
            Some((w, r, share)) if (w, r) == (width, radius) => share,
            _ => {
                let share = compute();
                self.last = Some((width, radius, share));
                share
            }
        }
    }
}

/// The best `k` results seen so far, with `cap` the largest distance that can still make the cut.
struct TopK {
    k: usize,
    hits: Vec<Packed>,
    /// Hits kept before those beyond `cap` are dropped: a few times `k`, so that dropping is
    /// amortised. Saturating, so that a huge `k` means "never", not a wrapped small number.
    prune_at: usize,
    counts: Vec<usize>,
    cap: u32,
    /// Hits at or below `cap`.
    within_cap: usize,
}

impl TopK {
    fn new(k: usize, bits: u32) -> TopK {
        TopK {
            k,
            hits: Vec::with_capacity(k.min(1 << 16) * 2),
            prune_at: k.saturating_mul(4).saturating_add(64),
            counts: vec![0; bits as usize + 1],
            cap: bits,
            within_cap: 0,
        }
    }

    /// Adds a hit at or below `cap`; returns the (possibly lowered) cap.
    #[inline(always)]
    fn push(&mut self, distance: u32, id: usize) -> u32 {
        self.hits.push(pack(distance, id));
        self.counts[distance as usize] += 1;
        self.within_cap += 1;
        while self.cap > 0 && self.within_cap - self.counts[self.cap as usize] >= self.k {
            self.within_cap -= self.counts[self.cap as usize];
            self.counts[self.cap as usize] = 0;
            self.cap -= 1;
        }
        if self.hits.len() >= self.prune_at {
            let cap = self.cap;
            self.hits.retain(|&hit| (hit >> 32) as u32 <= cap);
        }
        self.cap
    }

    /// Whether k hits are known (so `cap` bounds the k-th distance).
    fn full(&self) -> bool {
        self.within_cap >= self.k
    }

    /// Whether the `k` best are known when every unseen code is at least `bound` away.
    fn complete_below(&self, bound: u32) -> bool {
        self.full() && self.cap < bound
    }

    fn finish(mut self) -> Vec<Packed> {
        let cap = self.cap;
        self.hits.retain(|&hit| (hit >> 32) as u32 <= cap);
        self.hits.sort_unstable();
        self.hits.truncate(self.k);
        self.hits
    }
}

/// A search forced to [`Strategy::MultiIndex`] that would probe more buckets than
/// [`View::forced_probe_budget`] allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TooCostly {
    /// Probes the search needs: exact for a radius search, predicted for top-k.
    pub(crate) probes: f64,
    /// The budget it exceeds.
    pub(crate) budget: f64,
}

impl View {
    /// Every live code within `radius` of `query`, ordered by distance, then id.
    pub(crate) fn radius(
        &self,
        query: &[u64],
        radius: u32,
        strategy: Strategy,
    ) -> Result<Vec<Packed>, TooCostly> {
        match self.layout.words {
            1 => self.radius_impl::<1>(query, radius, strategy),
            2 => self.radius_impl::<2>(query, radius, strategy),
            _ => self.radius_impl::<0>(query, radius, strategy),
        }
    }

    /// The `k` live codes nearest to `query` (every live code when `k` is larger), ordered by
    /// distance, then id.
    pub(crate) fn top_k(
        &self,
        query: &[u64],
        k: usize,
        strategy: Strategy,
    ) -> Result<Vec<Packed>, TooCostly> {
        // A k beyond the live count asks for everything: clamping it here keeps every size
        // derived from k (reservations, pruning thresholds, the planner's lookups) within the
        // index's size, whatever k the caller passed.
        let k = k.min(usize::try_from(self.live).unwrap_or(usize::MAX));
        if k == 0 {
            return Ok(Vec::new());
        }
        match self.layout.words {
            1 => self.top_k_impl::<1>(query, k, strategy),
            2 => self.top_k_impl::<2>(query, k, strategy),
            _ => self.top_k_impl::<0>(query, k, strategy),
        }
    }

    /// Most bucket probes a search forced to [`Strategy::MultiIndex`] may make: a fixed floor, or
    /// [`FORCED_SCAN_MULTIPLE`] scans of every slot priced in probes, whichever is larger. The
    /// floor keeps small indexes searchable that way; the multiple keeps the bound proportionate
    /// on large ones.
    pub(crate) fn forced_probe_budget(&self) -> f64 {
        let scan = self.slots() as f64 * SCAN_NS_PER_WORD * self.layout.words as f64;
        (FORCED_SCAN_MULTIPLE * scan / PROBE_NS).max(FORCED_MIN_PROBES)
    }

    /// Cost of checking one surviving candidate: its code's words, and one substring distance per
    /// table for the "reported earlier" test.
    fn verify_ns(&self) -> f64 {
        SURVIVOR_NS + 0.5 * self.layout.words as f64 + 0.3 * self.layout.substrings.len() as f64
    }

    fn scan_cost(&self) -> f64 {
        self.base.slots as f64 * SCAN_NS_PER_WORD * self.layout.words as f64
    }

    /// Expected entries in one bucket of table `j` if codes were uniform.
    fn uniform_bucket_len(&self, j: usize) -> f64 {
        self.live as f64 / (1u64 << self.layout.substrings[j].width) as f64
    }

    /// Probe radius of table `j` for an exact radius search (negative: table not probed).
    #[inline]
    pub(super) fn table_radius(&self, radius: u32, j: usize) -> i64 {
        let m = self.layout.substrings.len() as u32;
        let (q, a) = (i64::from(radius / m), radius % m);
        let r = if (j as u32) <= a { q } else { q - 1 };
        r.min(i64::from(self.layout.substrings[j].width))
    }

    fn radius_impl<const W: usize>(
        &self,
        query: &[u64],
        radius: u32,
        strategy: Strategy,
    ) -> Result<Vec<Packed>, TooCostly> {
        let mut out = Vec::new();
        let mut report = |d: u32, slot: usize| {
            if !self.deleted[slot] {
                out.push(pack(d, slot));
            }
            radius
        };
        let use_tables = match strategy {
            // With nothing in the tables (every code still in the scanned delta), probing them
            // finds nothing: the scan alone is the same answer.
            Strategy::MultiIndex => self.base.slots > 0,
            Strategy::Scan => false,
            Strategy::Auto => self.tables_pay_for_radius(query, radius),
        };
        if use_tables && strategy == Strategy::MultiIndex {
            let probes = self.radius_probes(radius);
            let budget = self.forced_probe_budget();
            if probes > budget {
                return Err(TooCostly { probes, budget });
            }
        }
        if use_tables {
            self.scan_range::<W>(query, self.base.slots..self.slots(), radius, &mut report);
            self.radius_tables::<W>(query, radius, &mut out);
        } else {
            self.scan_range::<W>(query, 0..self.slots(), radius, &mut report);
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Bucket probes of a multi-index radius search: every value within each table's radius.
    fn radius_probes(&self, total_radius: u32) -> f64 {
        let subs = &self.layout.substrings;
        self.radius_levels(total_radius)
            .map(|(j, s, _)| binomial(subs[j].width, s))
            .sum()
    }

    /// Every probe level of a radius search: `(table, substring distance, expected cost of one
    /// bucket entry there)`.
    fn radius_levels(&self, total_radius: u32) -> impl Iterator<Item = (usize, u32, f64)> + '_ {
        let verify_ns = self.verify_ns();
        self.layout
            .filters
            .iter()
            .enumerate()
            .flat_map(move |(j, filter)| {
                (0..=self.table_radius(total_radius, j)).map(move |s| {
                    let per_entry =
                        entry_cost(filter.width, i64::from(total_radius) - s, verify_ns);
                    (j, s as u32, per_entry)
                })
            })
    }

    /// Prices the probes first (cheap to count), then the bucket entries (with an early exit),
    /// against a scan.
    fn tables_pay_for_radius(&self, query: &[u64], total_radius: u32) -> bool {
        if self.base.slots < SCAN_BELOW_SLOTS {
            return false;
        }
        let subs = &self.layout.substrings;
        let scan = self.scan_cost();
        let probe_cost = self.radius_probes(total_radius) * PROBE_NS;
        // Counting the entries costs about as much as the probes: not worth it when they alone
        // already take a tenth of a scan.
        if probe_cost > 0.1 * scan {
            return false;
        }
        // Even if every probed bucket were the fullest of its table, would the tables win? Then
        // no need to look at the buckets (their entries are counted otherwise).
        let worst: f64 = self
            .radius_levels(total_radius)
            .map(|(j, s, per_entry)| {
                binomial(subs[j].width, s) * self.base.tables[j].largest_bucket() as f64 * per_entry
            })
            .sum();
        if probe_cost + worst <= scan {
            return true;
        }
        let mut cost = probe_cost;
        for (j, s, per_entry) in self.radius_levels(total_radius) {
            let table = &self.base.tables[j];
            let within = for_each_at_distance(subs[j].value(query), subs[j].width, s, |key| {
                cost += table.bucket_len(key) as f64 * per_entry;
                cost <= scan
            });
            if !within {
                return false;
            }
        }
        true
    }

    fn radius_tables<const W: usize>(&self, query: &[u64], radius: u32, out: &mut Vec<Packed>) {
        let words = self.layout.words;
        let subs = &self.layout.substrings;
        let max_r = (0..subs.len())
            .map(|j| self.table_radius(radius, j))
            .max()
            .unwrap_or(-1);
        let probed = |t: usize, dt: i64| dt <= self.table_radius(radius, t);
        for (j, (sub, table)) in subs.iter().zip(&self.base.tables).enumerate() {
            if self.table_radius(radius, j) >= 0 {
                table.prefetch(sub.value(query));
            }
        }
        let mut xor = [0u64; MAX_WORDS];
        // Survivors of every table of a level are gathered before any is verified, so that the
        // code reads of different tables (each a likely cache miss) overlap.
        let mut survivors = Survivors::new();
        for s in 0..=max_r {
            let mut verify = |batch: &[(u32, u16)]| {
                for &(slot, j) in batch {
                    let slot = slot as usize;
                    let code = &self.base.words[slot * words..];
                    let d = xor_distance::<W>(query, code, words, &mut xor);
                    if d > radius {
                        continue;
                    }
                    let seen = reached_earlier(subs, &xor, s, usize::from(j), probed);
                    if !seen && !self.deleted[slot] {
                        out.push(pack(d, slot));
                    }
                }
            };
            for (j, (sub, table)) in subs.iter().zip(&self.base.tables).enumerate() {
                if s > self.table_radius(radius, j) {
                    continue;
                }
                let query_filter = self.layout.filters[j].value(query);
                // Entries whose filter alone puts them beyond the radius need no code read.
                let filter_slack = radius - s as u32;
                for_each_bucket(table, sub.value(query), sub.width, s as u32, |entries| {
                    survivors.gather(entries, j, 0, query_filter, filter_slack, &mut verify);
                });
            }
            survivors.flush(&mut verify);
        }
    }

    fn top_k_impl<const W: usize>(
        &self,
        query: &[u64],
        k: usize,
        strategy: Strategy,
    ) -> Result<Vec<Packed>, TooCostly> {
        let bits = self.layout.bits();
        let scan_all = || {
            let mut top = TopK::new(k, bits);
            let mut report = |d: u32, slot: usize| {
                if self.deleted[slot] {
                    top.cap
                } else {
                    top.push(d, slot)
                }
            };
            self.scan_range::<W>(query, 0..self.slots(), bits, &mut report);
            top.finish()
        };
        let use_tables = match strategy {
            // Empty tables (every code in the scanned delta) cannot add to the scan's answer.
            Strategy::MultiIndex => self.base.slots > 0,
            Strategy::Scan => false,
            Strategy::Auto => {
                self.base.slots >= SCAN_BELOW_SLOTS && !self.scan_expected_cheaper_for_top(k)
            }
        } && (k as u64) < self.live;
        if !use_tables {
            return Ok(scan_all());
        }
        let budget = (strategy == Strategy::MultiIndex).then(|| self.forced_probe_budget());
        if let (Some(budget), Some(cap)) = (budget, self.base.sample.kth_distance(k)) {
            // Refused before any work where the sampled k-th distance predicts the overrun; the
            // prediction is rough, so `top_k_tables` also stops at the budget as it goes.
            let probes = self.predicted_top_k_probes(0, 0, cap);
            if probes > budget {
                return Err(TooCostly { probes, budget });
            }
        }
        let mut top = TopK::new(k, bits);
        {
            let mut report = |d: u32, slot: usize| {
                if self.deleted[slot] {
                    top.cap
                } else {
                    top.push(d, slot)
                }
            };
            self.scan_range::<W>(query, self.base.slots..self.slots(), bits, &mut report);
        }
        let limit = match budget {
            Some(budget) => Limit::Probes(budget),
            None => Limit::ScanCost,
        };
        match self.top_k_tables::<W>(query, &mut top, limit).0 {
            TablesOutcome::Complete => Ok(top.finish()),
            TablesOutcome::ScanCheaper => Ok(scan_all()),
            TablesOutcome::OverBudget(refusal) => Err(refusal),
        }
    }

    /// Whether, at the k-th distance typical of this index (measured on sample codes), the hash
    /// tables would cost more than a scan: then the scan runs from the start, instead of after
    /// probing has found that out (uniform codes, very long codes).
    pub(crate) fn scan_expected_cheaper_for_top(&self, k: usize) -> bool {
        match self.base.sample.kth_distance(k) {
            Some(cap) => {
                self.predicted_top_k_cost(0, 0, cap, 0.0) > TOP_K_PLAN_MARGIN * self.scan_cost()
            }
            None => false,
        }
    }

    /// The probe steps `(substring distance, table)` of a top-k search from `(s, j)` on, until
    /// the bound on unseen codes passes `cap` or a table is fully enumerated.
    fn top_k_steps(&self, s: u32, j: usize, cap: u32) -> impl Iterator<Item = (u32, usize)> + '_ {
        let subs = &self.layout.substrings;
        let m = subs.len() as u32;
        let mut next = Some((s, j));
        std::iter::from_fn(move || {
            let (s, j) = next?;
            let width = subs.get(j)?.width;
            if s > width {
                return None;
            }
            next = if s == width || m * s + j as u32 + 1 > cap {
                None
            } else if j + 1 == subs.len() {
                Some((s + 1, 0))
            } else {
                Some((s, j + 1))
            };
            Some((s, j))
        })
    }

    /// Predicted cost of the probe steps from `(s, j)` on until the bound passes `cap`, with
    /// buckets holding `entries_per_probe` entries.
    fn predicted_top_k_cost(&self, s: u32, j: usize, cap: u32, entries_per_probe: f64) -> f64 {
        self.top_k_steps(s, j, cap)
            .map(|(s, j)| self.top_k_step_cost(s, j, cap, entries_per_probe))
            .sum()
    }

    /// Predicted cost of probe step `(s, j)` with `cap` the k-th distance so far.
    fn top_k_step_cost(&self, s: u32, j: usize, cap: u32, entries_per_probe: f64) -> f64 {
        let per_entry = entry_cost(
            self.layout.filters[j].width,
            i64::from(cap) - i64::from(s),
            self.verify_ns(),
        );
        let entries = entries_per_probe.max(self.uniform_bucket_len(j));
        binomial(self.layout.substrings[j].width, s) * (TOP_K_PROBE_NS + entries * per_entry)
    }

    /// Bucket probes of the steps from `(s, j)` on until the bound passes `cap`.
    fn predicted_top_k_probes(&self, s: u32, j: usize, cap: u32) -> f64 {
        let subs = &self.layout.substrings;
        self.top_k_steps(s, j, cap)
            .map(|(s, j)| binomial(subs[j].width, s))
            .sum()
    }

    /// Where the query's k-th nearest code is expected to lie, from the hits `top` holds before
    /// probe step `(s, j)`: a code at distance `d` has been found with probability
    /// [`View::found_share`], so each hit at `d` stands for `1 / share` codes (a Horvitz-Thompson
    /// estimate); the k-th is where those add up to `k`, and at most `top.cap`. After two levels
    /// it is within a bit or two of the true distance on the clustered workloads, where the cap
    /// can still be twice that.
    fn estimated_kth(&self, top: &TopK, s: u32, j: usize) -> u32 {
        let mut expected = 0.0;
        for d in 0..=top.cap {
            let count = top.counts[d as usize];
            if count > 0 {
                expected += count as f64 / self.found_share(d, s, j).max(1e-9);
                if expected >= top.k as f64 {
                    return d;
                }
            }
        }
        top.cap
    }

    /// Share of the codes at distance `d` from the query that the probes before step `(s, j)`
    /// have reached: those with a substring within `s` bits on tables `0..j`, or within `s - 1`
    /// on the others, as if the `d` differing bits fell independently on each bit position.
    fn found_share(&self, d: u32, s: u32, j: usize) -> f64 {
        let subs = &self.layout.substrings;
        if d < subs.len() as u32 * s + j as u32 {
            return 1.0; // every code that near has been found (pigeonhole)
        }
        let bits = f64::from(self.layout.bits());
        let mut shares = ShareCache::default();
        let missed: f64 = subs
            .iter()
            .enumerate()
            .map(|(t, sub)| {
                let radius = i64::from(s) - i64::from(t >= j);
                shares.get(sub.width, radius, || {
                    1.0 - binomial_cdf(d, f64::from(sub.width) / bits, radius)
                })
            })
            .product();
        1.0 - missed
    }

    /// Whether a planned top-k search that has spent `spent` should give up for the scan before
    /// probe step `(s, j)`. A step that keeps it within [`EXPLORE_BUDGET`] of a scan's cost is
    /// always taken: it is cheap, and its hits sharpen the estimate of the k-th distance. Past
    /// that, it goes on while the rest, predicted at the estimated k-th distance, costs less than
    /// a scan (what it spent is spent either way), but never into a step that would take it past
    /// a scan's cost: so no query costs much more than two scans, and those expected to cost
    /// more than one switch early.
    fn top_k_gives_up(
        &self,
        top: &TopK,
        s: u32,
        j: usize,
        spent: f64,
        entries_per_probe: f64,
    ) -> bool {
        let scan = self.scan_cost();
        let next = spent + self.top_k_step_cost(s, j, top.cap, entries_per_probe);
        if next <= EXPLORE_BUDGET * scan {
            return false;
        }
        if next > scan {
            return true;
        }
        let rest = |cap| self.predicted_top_k_cost(s, j, cap, entries_per_probe);
        // At the cap first: an upper bound on the k-th distance, and cheap.
        rest(top.cap) > scan && rest(self.estimated_kth(top, s, j)) > scan
    }

    /// Grows the substring radius until the `k` best are certain. Stops early, leaving `top`
    /// partial, when `limit` says the rest costs too much. Also returns the cost of what it did,
    /// as the planner prices it.
    fn top_k_tables<const W: usize>(
        &self,
        query: &[u64],
        top: &mut TopK,
        limit: Limit,
    ) -> (TablesOutcome, f64) {
        let words = self.layout.words;
        let subs = &self.layout.substrings;
        let m = subs.len() as u32;
        for (sub, table) in subs.iter().zip(&self.base.tables) {
            table.prefetch(sub.value(query));
        }
        let mut xor = [0u64; MAX_WORDS];
        let (mut spent, mut probes_done) = (0.0f64, 0.0f64);
        // (probes, entries) of the level being probed and of the one before: the buckets of
        // clustered codes empty as the substring distance grows, so the latest level tells best
        // how full the next ones are.
        let (mut level, mut last_level) = ((0.0f64, 0usize), (0.0f64, 0usize));
        let max_width = subs.iter().map(|sub| sub.width).max().unwrap_or(0);
        for s in 0..=max_width {
            last_level = if level.0 > 0.0 { level } else { last_level };
            level = (0.0, 0);
            for (j, (sub, table)) in subs.iter().zip(&self.base.tables).enumerate() {
                match limit {
                    Limit::ScanCost => {
                        let (probes, entries) = if level.0 > 0.0 { level } else { last_level };
                        let per_probe = entries as f64 / probes.max(1.0);
                        if (s, j) != (0, 0) && self.top_k_gives_up(top, s, j, spent, per_probe) {
                            return (TablesOutcome::ScanCheaper, spent);
                        }
                    }
                    Limit::Probes(budget) => {
                        if probes_done + binomial(sub.width, s) > budget {
                            let probes = probes_done + self.predicted_top_k_probes(s, j, top.cap);
                            let refusal = TooCostly { probes, budget };
                            return (TablesOutcome::OverBudget(refusal), spent);
                        }
                    }
                }
                let mut entries = 0usize;
                let query_filter = self.layout.filters[j].value(query);
                // Survivors of many buckets are gathered before their codes are read, so that
                // those reads (cache misses, mostly) overlap.
                let cap = std::cell::Cell::new(top.cap);
                let mut verified = 0usize;
                let mut verify = |batch: &[(u32, u16)]| {
                    verified += batch.len();
                    for &(slot, _) in batch {
                        let slot = slot as usize;
                        let code = &self.base.words[slot * words..];
                        let d = xor_distance::<W>(query, code, words, &mut xor);
                        if d > cap.get() {
                            continue;
                        }
                        let seen = reached_earlier(subs, &xor, i64::from(s), j, |_, _| true);
                        if !seen && !self.deleted[slot] {
                            cap.set(top.push(d, slot));
                        }
                    }
                };
                let mut survivors = Survivors::new();
                for_each_bucket(table, sub.value(query), sub.width, s, |bucket| {
                    entries += bucket.len();
                    if let Some(slack) = cap.get().checked_sub(s) {
                        survivors.gather(bucket, j, 0, query_filter, slack, &mut verify);
                    }
                });
                survivors.flush(&mut verify);
                let probes = binomial(sub.width, s);
                probes_done += probes;
                level = (level.0 + probes, level.1 + entries);
                spent += probes * TOP_K_PROBE_NS
                    + entries as f64 * ENTRY_NS
                    + verified as f64 * self.verify_ns();
                // Table j fully enumerated: every code has been seen.
                if s == sub.width || top.complete_below(m * s + j as u32 + 1) {
                    return (TablesOutcome::Complete, spent);
                }
            }
        }
        (TablesOutcome::Complete, spent)
    }

    /// Calls `report(distance, slot)` for every slot in `range` within `limit`, deleted slots
    /// included (callers test the flag only for what they keep, which is little); `report`
    /// returns the limit from then on.
    #[inline(always)]
    fn scan_range<const W: usize>(
        &self,
        query: &[u64],
        range: std::ops::Range<usize>,
        mut limit: u32,
        report: &mut impl FnMut(u32, usize) -> u32,
    ) {
        let words = self.layout.words;
        let n = stride::<W>(words);
        let mut distances = [0u32; SCAN_BLOCK];
        let base_end = range.end.min(self.base.slots);
        let delta_start = range.start.max(self.base.slots);
        let parts = [
            (
                range.start,
                &self.base.words[range.start.min(base_end) * n..base_end * n],
            ),
            (
                delta_start,
                &self.delta[(delta_start - self.base.slots) * n
                    ..range.end.max(delta_start).saturating_sub(self.base.slots) * n],
            ),
        ];
        for (first_slot, codes) in parts {
            for (block, chunk) in codes.chunks(SCAN_BLOCK * n).enumerate() {
                let count = chunk.len() / n;
                for (d, code) in distances.iter_mut().zip(chunk.chunks_exact(n)) {
                    *d = distance::<W>(query, code, words);
                }
                // Most blocks hold nothing within the limit: one vectorised minimum skips them.
                if distances[..count].iter().copied().min().unwrap_or(u32::MAX) > limit {
                    continue;
                }
                for (i, &d) in distances[..count].iter().enumerate() {
                    if d <= limit {
                        limit = report(d, first_slot + block * SCAN_BLOCK + i);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` 64-bit codes around `centres` random centres (each bit flipped with `flip`), or
    /// uniform when `centres` is 0, in a view with the recommended 4 substrings.
    fn view_of(n: usize, centres: usize, flip: f64) -> View {
        use rand::{Rng, RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let centre_codes: Vec<u64> = (0..centres.max(1)).map(|_| rng.next_u64()).collect();
        let words: Vec<u64> = (0..n)
            .map(|_| {
                if centres == 0 {
                    return rng.next_u64();
                }
                let centre = centre_codes[rng.random_range(0..centres)];
                (0..64).fold(centre, |code, bit| {
                    if rng.random_bool(flip) {
                        code ^ (1 << bit)
                    } else {
                        code
                    }
                })
            })
            .collect();
        let layout = super::super::layout::WordLayout::new(
            milan_index_format::CodeLayout::new(64, 4).unwrap(),
        );
        View::build(
            std::sync::Arc::new(layout),
            words,
            bitvec::vec::BitVec::repeat(false, n),
        )
    }

    #[test]
    fn top_k_scans_from_the_start_only_where_the_tables_cannot_pay() {
        // Uniform codes: the 20th nearest of 200,000 lies about 15 bits away, where probing
        // costs more than scanning.
        assert!(view_of(200_000, 0, 0.0).scan_expected_cheaper_for_top(20));
        // Clustered codes: it lies a few bits away, where a few probes find it.
        let clustered = view_of(200_000, 200, 0.1);
        assert!(!clustered.scan_expected_cheaper_for_top(20));
        assert!(clustered.scan_expected_cheaper_for_top(150_000));
    }

    #[test]
    fn planned_top_k_gives_up_early_and_within_a_scan_where_the_kth_nearest_lies_far() {
        use rand::{Rng, SeedableRng};
        // Clustered codes, on which the planner starts every top-k search on the tables. Queries
        // near them finish there; uniform queries have their 20th nearest 20 bits away or more,
        // where the tables would cost several scans.
        let view = view_of(200_000, 200, 0.1);
        assert!(!view.scan_expected_cheaper_for_top(20));
        let scan = view.scan_cost();
        let run = |query: u64, limit: Limit| {
            let mut top = TopK::new(20, 64);
            let (outcome, spent) = view.top_k_tables::<1>(&[query], &mut top, limit);
            (matches!(outcome, TablesOutcome::Complete), spent)
        };
        let mut complete = 0;
        for id in (0..200_000).step_by(4001) {
            let (done, spent) = run(view.code(id).unwrap()[0] ^ 0b101, Limit::ScanCost);
            assert!(
                spent <= scan,
                "near query {id}: {spent} against a scan's {scan}"
            );
            complete += usize::from(done);
        }
        assert!(
            complete >= 40,
            "{complete} of 50 near queries finished on the tables"
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for i in 0..50 {
            let query = rng.next_u64();
            let (done, spent) = run(query, Limit::ScanCost);
            assert!(
                !done && spent <= 0.1 * scan,
                "far query {i}: {spent} against {scan}"
            );
            if i < 5 {
                let (_, unbounded) = run(query, Limit::Probes(f64::INFINITY));
                assert!(
                    unbounded > 2.0 * scan,
                    "far query {i}: {unbounded} against {scan}"
                );
            }
            assert_eq!(
                view.top_k(&[query], 20, Strategy::Auto).unwrap(),
                view.top_k(&[query], 20, Strategy::Scan).unwrap()
            );
        }
    }

    #[test]
    fn a_huge_k_never_overflows_the_pruning_threshold() {
        // `4 * k + 64` overflowed for k near usize::MAX: a panic with overflow checks, and a
        // threshold wrapped to a few dozen (a prune after every hit) without them.
        let mut top = TopK::new(usize::MAX, 64);
        for id in 0..1000 {
            top.push((id * 7 % 65) as u32, id);
        }
        assert_eq!(
            top.hits.len(),
            1000,
            "nothing pruned: every hit is among the k best"
        );
        let hits = top.finish();
        assert_eq!(hits.len(), 1000);
        assert!(hits.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn forced_multi_index_stops_at_its_budget_without_a_prediction() {
        use rand::{Rng, SeedableRng};
        // 64-bit codes in two 32-bit substrings: a full enumeration is 2^33 probes.
        let layout = std::sync::Arc::new(super::super::layout::WordLayout::new(
            milan_index_format::CodeLayout::new(64, 2).unwrap(),
        ));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let base: Vec<u64> = (0..100).map(|_| rng.next_u64()).collect();
        let view = View::build(layout, base, bitvec::vec::BitVec::repeat(false, 100));
        // Later adds wait in the scanned delta; the sample, taken from the 100 codes of the
        // tables, cannot predict a top-150, so only the running count of probes stops it.
        let adds: Vec<(u64, Vec<u64>)> = (100..1100).map(|id| (id, vec![rng.next_u64()])).collect();
        let view = view.apply(&adds, &[]);
        assert_eq!(view.base.sample.kth_distance(150), None);
        let query = [rng.next_u64()];
        let refusal = view.top_k(&query, 150, Strategy::MultiIndex).unwrap_err();
        assert_eq!(refusal.budget, view.forced_probe_budget());
        assert!(refusal.budget >= FORCED_MIN_PROBES);
        assert!(refusal.probes > refusal.budget, "{refusal:?}");
        // Predicted from the sample, refused before any probe.
        let refusal = view.top_k(&query, 5, Strategy::MultiIndex).unwrap_err();
        assert!(refusal.probes > refusal.budget, "{refusal:?}");
        // The other strategies answer, identically.
        let scan = view.top_k(&query, 150, Strategy::Scan).unwrap();
        assert_eq!(view.top_k(&query, 150, Strategy::Auto).unwrap(), scan);
        assert_eq!(scan.len(), 150);
        // A radius whose probes are within the budget is answered, one beyond it refused.
        assert_eq!(
            view.radius(&query, 5, Strategy::MultiIndex).unwrap(),
            view.radius(&query, 5, Strategy::Scan).unwrap()
        );
        let refusal = view.radius(&query, 20, Strategy::MultiIndex).unwrap_err();
        assert_eq!(refusal.probes, view.radius_probes(20));
    }

    #[test]
    fn precomputed_tables_match_direct_computation() {
        let direct =
            |n: u32, k: u32| (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1));
        for n in 0..=MAX_WIDTH as u32 {
            for k in 0..=n {
                assert_eq!(binomial(n, k), direct(n, k).round(), "{n} choose {k}");
            }
            assert_eq!(binomial(n, n + 1), 0.0);
        }
        assert_eq!(binomial(40, 3), 9880.0);
        assert_eq!(FILTER_SURVIVAL[16][2], (1.0 + 16.0 + 120.0) / 65536.0);
        assert_eq!(FILTER_SURVIVAL[4][9], 1.0);
        assert_eq!(entry_cost(16, -1, 10.0), ENTRY_NS);
    }

    #[test]
    fn enumerates_each_value_at_distance_once() {
        for (width, s) in [(5u32, 0u32), (5, 2), (8, 3), (12, 12), (4, 5)] {
            let mut seen = Vec::new();
            for_each_at_distance(0b1010 & ((1 << width) - 1), width, s, |v| {
                seen.push(v);
                true
            });
            let expected = if s > width { 0.0 } else { binomial(width, s) };
            assert_eq!(seen.len() as f64, expected, "width {width} s {s}");
            let value = 0b1010 & ((1u32 << width) - 1);
            assert!(seen
                .iter()
                .all(|&v| (v ^ value).count_ones() == s && v < (1 << width)));
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len() as f64, expected);
        }
    }
}
