//! Retrieval metrics on packed binary codes (Hamming ranking) and on float features (Euclidean).

use ndarray::{Array1, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::error::{CodeError, Error, Result, SearchError, TrainError};
use crate::head::HashHead;

/// Codes packed in `u64` words for fast Hamming distances.
///
/// Bit `i` of a code is bit `7 - i % 8` of byte `i / 8` (as [`Code`] and `numpy.packbits`
/// store it); bytes `8w..8w+8` form word `w` little-endian, the last word zero-padded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedCodes {
    bits: u32,
    words: usize,
    data: Vec<u64>,
}

impl PackedCodes {
    fn from_byte_rows<'a>(bits: u32, rows: impl Iterator<Item = &'a [u8]>) -> PackedCodes {
        let words = (bits as usize).div_ceil(64);
        let mut data = Vec::new();
        for bytes in rows {
            for w in 0..words {
                let mut word = [0u8; 8];
                let start = (w * 8).min(bytes.len());
                let end = (w * 8 + 8).min(bytes.len());
                word[..end - start].copy_from_slice(&bytes[start..end]);
                data.push(u64::from_le_bytes(word));
            }
        }
        PackedCodes { bits, words, data }
    }

    /// Packs codes, which must all have the same length: [`CodeError::CodeLengthsDiffer`] names the
    /// first code's length (`left`) and the first other length found (`right`).
    pub fn from_codes(codes: &[Code]) -> Result<PackedCodes> {
        let bits = codes.first().map_or(8, Code::bits);
        if let Some(other) = codes.iter().find(|c| c.bits() != bits) {
            return Err(Error::Code(CodeError::CodeLengthsDiffer {
                left: bits,
                right: other.bits(),
            }));
        }
        Ok(PackedCodes::from_byte_rows(
            bits,
            codes.iter().map(Code::as_bytes),
        ))
    }

    /// Codes from a head's last-layer outputs: bit `i` set where `logits[i] > 0`.
    pub fn from_logits(logits: ArrayView2<'_, f32>) -> PackedCodes {
        let bits = logits.ncols() as u32;
        let n_bytes = (bits as usize).div_ceil(8);
        let bytes: Vec<u8> = logits
            .axis_iter(Axis(0))
            .flat_map(|row| {
                (0..n_bytes).map(move |b| {
                    (0..8).fold(0u8, |acc, i| {
                        let bit = b * 8 + i;
                        acc | (u8::from(bit < row.len() && row[bit] > 0.0) << (7 - i))
                    })
                })
            })
            .collect();
        PackedCodes::from_byte_rows(bits, bytes.chunks_exact(n_bytes.max(1)))
    }

    /// The codes a head gives `features`.
    pub fn from_head(head: &HashHead, features: ArrayView2<'_, f32>) -> Result<PackedCodes> {
        Ok(PackedCodes::from_logits(head.logits(features)?.view()))
    }

    /// Number of codes.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.words).unwrap_or(0)
    }

    /// Whether there are no codes.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Code length.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The codes as packed bytes, `bits / 8` per code in order (`numpy.packbits` layout, as
    /// `index import` reads).
    pub fn to_bytes(&self) -> Vec<u8> {
        let per = (self.bits as usize).div_ceil(8);
        self.data
            .chunks_exact(self.words.max(1))
            .flat_map(|words| {
                words
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .take(per)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Hamming distance between codes `i` and `j`.
    pub fn distance(&self, i: usize, j: usize) -> u32 {
        let (a, b) = (self.code(i), self.code(j));
        a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
    }

    /// The `count` codes nearest to code `query`, ranked as the protocol ranks them: every other
    /// code by Hamming distance, ties in database order. Pairs of (position, distance).
    pub fn ranking(&self, query: usize, count: usize) -> Vec<(usize, u32)> {
        let mut others: Vec<(usize, u32)> = (0..self.len())
            .filter(|&i| i != query)
            .map(|i| (i, self.distance(query, i)))
            .collect();
        others.sort_by_key(|&(i, d)| (d, i));
        others.truncate(count);
        others
    }

    fn code(&self, i: usize) -> &[u64] {
        &self.data[i * self.words..(i + 1) * self.words]
    }
}

/// One point of the precision-recall curve over Hamming radius.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrPoint {
    /// Everything within this Hamming distance of the query is retrieved.
    pub radius: u32,
    /// Mean over queries that retrieve at least one item of (relevant retrieved / retrieved).
    pub precision: f64,
    /// Mean over queries with at least one relevant item of (relevant retrieved / relevant).
    pub recall: f64,
}

/// Retrieval quality of one representation, every test item querying all the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// mAP@k as a fraction (0..1).
    pub map_at_k: f64,
    /// Precision at cutoffs 1, 2, ...: mean over queries of hits in the top `c` / `c` (with `c`
    /// capped at the database size, all other test items).
    pub precision_at_k: Vec<f64>,
    /// Precision and recall at each Hamming radius `0..=bits` (empty for float features).
    pub pr_curve: Vec<PrPoint>,
}

fn check_inputs(n: usize, labels: &[i64], k: usize) -> Result<Vec<u32>> {
    if labels.len() != n {
        return Err(Error::Train(TrainError::LengthMismatch {
            features: n,
            labels: labels.len(),
        }));
    }
    if n < 2 {
        return Err(Error::Train(TrainError::EmptyData {
            what: format!(
                "the test split ({n} item{}; retrieval needs a query and at least one other item)",
                if n == 1 { "" } else { "s" }
            ),
        }));
    }
    if k == 0 {
        return Err(Error::Search(SearchError::ZeroK));
    }
    // Dense class numbers for fast comparisons.
    let mut distinct = labels.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    Ok(labels
        .iter()
        .map(|l| distinct.binary_search(l).expect("listed") as u32)
        .collect())
}

/// Queries per deterministic accumulation chunk.
const CHUNK: usize = 128;

#[derive(Clone)]
struct Partial {
    ap: f64,
    precision: Vec<f64>,
    pr_precision: Vec<f64>,
    pr_precision_queries: Vec<u64>,
    pr_recall: Vec<f64>,
    pr_recall_queries: u64,
}

impl Partial {
    fn new(cutoffs: usize, radii: usize) -> Partial {
        Partial {
            ap: 0.0,
            precision: vec![0.0; cutoffs],
            pr_precision: vec![0.0; radii],
            pr_precision_queries: vec![0; radii],
            pr_recall: vec![0.0; radii],
            pr_recall_queries: 0,
        }
    }

    fn add(&mut self, other: &Partial) {
        self.ap += other.ap;
        for (a, b) in self.precision.iter_mut().zip(&other.precision) {
            *a += b;
        }
        for (a, b) in self.pr_precision.iter_mut().zip(&other.pr_precision) {
            *a += b;
        }
        for (a, b) in self
            .pr_precision_queries
            .iter_mut()
            .zip(&other.pr_precision_queries)
        {
            *a += b;
        }
        for (a, b) in self.pr_recall.iter_mut().zip(&other.pr_recall) {
            *a += b;
        }
        self.pr_recall_queries += other.pr_recall_queries;
    }

    /// Adds one query's ranking (`relevant[r]`: whether rank `r` has the query's class).
    fn add_ranking(&mut self, relevant: impl Iterator<Item = bool>, k: usize, database: usize) {
        let mut hits = 0usize;
        let mut ap = 0.0;
        let mut hits_at_k = 0usize;
        for (rank, rel) in relevant.enumerate() {
            if rel {
                hits += 1;
                if rank < k {
                    ap += hits as f64 / (rank + 1) as f64;
                }
            }
            if rank < k {
                hits_at_k = hits;
            }
            if rank < self.precision.len() {
                self.precision[rank] += hits as f64 / (rank + 1) as f64;
            }
        }
        if hits_at_k > 0 {
            self.ap += ap / hits_at_k as f64;
        }
        // Cutoffs beyond the database: precision over the whole database.
        let whole = hits as f64 / database as f64;
        for p in self.precision.iter_mut().skip(database) {
            *p += whole;
        }
    }

    fn finish(self, queries: usize, bits: Option<u32>) -> RetrievalMetrics {
        let q = queries as f64;
        let pr_curve = match bits {
            None => Vec::new(),
            Some(_) => (0..self.pr_precision.len())
                .map(|r| PrPoint {
                    radius: r as u32,
                    precision: match self.pr_precision_queries[r] {
                        0 => 0.0,
                        n => self.pr_precision[r] / n as f64,
                    },
                    recall: match self.pr_recall_queries {
                        0 => 0.0,
                        n => self.pr_recall[r] / n as f64,
                    },
                })
                .collect(),
        };
        RetrievalMetrics {
            map_at_k: self.ap / q,
            precision_at_k: self.precision.into_iter().map(|p| p / q).collect(),
            pr_curve,
        }
    }
}

/// The protocol on binary codes: each code queries all the others (itself left out), ranked by
/// Hamming distance with ties in database order (a stable sort); mAP@`k`, precision at cutoffs
/// `1..=max_cutoff`, and precision-recall over radius `0..=bits`.
///
/// AP of one query: walking ranks `1..=k`, at each rank `i` holding the query's class the
/// precision `hits so far / i` is recorded; AP is their sum divided by the number of hits in the
/// top `k`, and 0 when there is none.
pub fn hamming_retrieval(
    codes: &PackedCodes,
    labels: &[i64],
    k: usize,
    max_cutoff: usize,
) -> Result<RetrievalMetrics> {
    let n = codes.len();
    let classes = check_inputs(n, labels, k)?;
    let bits = codes.bits as usize;
    let database = n - 1;
    let depth = k.max(max_cutoff).min(database);
    let chunks: Vec<Partial> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|chunk| {
            let mut partial = Partial::new(max_cutoff, bits + 1);
            let mut dist = vec![0u16; n];
            let mut hist = vec![0usize; bits + 1];
            let mut hist_rel = vec![0usize; bits + 1];
            let mut next = vec![0usize; bits + 1];
            let mut ranking = vec![0u32; depth];
            for q in chunk * CHUNK..((chunk + 1) * CHUNK).min(n) {
                let cq = classes[q];
                let qc = codes.code(q);
                hist.fill(0);
                hist_rel.fill(0);
                if codes.words == 1 {
                    let qw = qc[0];
                    for ((d, &c), &class) in dist.iter_mut().zip(&codes.data).zip(&classes) {
                        let h = (c ^ qw).count_ones() as usize;
                        *d = h as u16;
                        hist[h] += 1;
                        hist_rel[h] += usize::from(class == cq);
                    }
                } else {
                    for ((d, c), &class) in dist
                        .iter_mut()
                        .zip(codes.data.chunks_exact(codes.words))
                        .zip(&classes)
                    {
                        let h: u32 = c.iter().zip(qc).map(|(a, b)| (a ^ b).count_ones()).sum();
                        *d = h as u16;
                        hist[h as usize] += 1;
                        hist_rel[h as usize] += usize::from(class == cq);
                    }
                }
                // The query itself: distance 0, same class.
                hist[0] -= 1;
                hist_rel[0] -= 1;

                // Counting sort of the first `depth` ranks, stable in database order.
                let mut cutoff = 0;
                let mut total = 0;
                for (d, &count) in hist.iter().enumerate() {
                    next[d] = total;
                    total += count;
                    cutoff = d;
                    if total >= depth {
                        break;
                    }
                }
                for (j, &d) in dist.iter().enumerate() {
                    let d = d as usize;
                    if j == q || d > cutoff {
                        continue;
                    }
                    let slot = next[d];
                    if slot < depth {
                        ranking[slot] = j as u32;
                        next[d] += 1;
                    }
                }
                partial.add_ranking(
                    ranking.iter().map(|&j| classes[j as usize] == cq),
                    k,
                    database,
                );

                // Precision and recall over the Hamming radius.
                let relevant_total: usize = hist_rel.iter().sum();
                let (mut retrieved, mut relevant) = (0usize, 0usize);
                for r in 0..=bits {
                    retrieved += hist[r];
                    relevant += hist_rel[r];
                    if retrieved > 0 {
                        partial.pr_precision[r] += relevant as f64 / retrieved as f64;
                        partial.pr_precision_queries[r] += 1;
                    }
                    if relevant_total > 0 {
                        partial.pr_recall[r] += relevant as f64 / relevant_total as f64;
                    }
                }
                partial.pr_recall_queries += u64::from(relevant_total > 0);
            }
            partial
        })
        .collect();
    let mut total = Partial::new(max_cutoff, bits + 1);
    for partial in &chunks {
        total.add(partial);
    }
    Ok(total.finish(n, Some(codes.bits)))
}

/// mAP@`k` of binary codes under the protocol (see [`hamming_retrieval`]).
pub fn map_at_k(codes: &PackedCodes, labels: &[i64], k: usize) -> Result<f64> {
    Ok(hamming_retrieval(codes, labels, k, 0)?.map_at_k)
}

/// The protocol on float features: squared Euclidean distance (computed as
/// `||x||^2 - 2 q.x` in `f32`, the query's own norm being the same for every item), ties in
/// database order. No precision-recall curve.
pub fn euclidean_retrieval(
    features: ArrayView2<'_, f32>,
    labels: &[i64],
    k: usize,
    max_cutoff: usize,
) -> Result<RetrievalMetrics> {
    let n = features.nrows();
    let classes = check_inputs(n, labels, k)?;
    if let Some((row, column)) = first_non_finite(features) {
        return Err(Error::Train(TrainError::NonFiniteFeature { row, column }));
    }
    let database = n - 1;
    let depth = k.max(max_cutoff).min(database);
    let norms: Array1<f32> = features.map_axis(Axis(1), |row| row.dot(&row));
    let chunks: Vec<Partial> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|chunk| {
            let mut partial = Partial::new(max_cutoff, 0);
            let start = chunk * CHUNK;
            let end = ((chunk + 1) * CHUNK).min(n);
            let queries = features.slice(ndarray::s![start..end, ..]);
            let dots = queries.dot(&features.t());
            let mut order: Vec<(f32, u32)> = Vec::with_capacity(n);
            for (qi, q) in (start..end).enumerate() {
                order.clear();
                order.extend(
                    (0..n)
                        .filter(|&j| j != q)
                        .map(|j| (norms[j] - 2.0 * dots[[qi, j]], j as u32)),
                );
                let key = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                if depth < order.len() {
                    order.select_nth_unstable_by(depth, key);
                    order.truncate(depth);
                }
                order.sort_unstable_by(key);
                let cq = classes[q];
                partial.add_ranking(
                    order.iter().map(|&(_, j)| classes[j as usize] == cq),
                    k,
                    database,
                );
            }
            partial
        })
        .collect();
    let mut total = Partial::new(max_cutoff, 0);
    for partial in &chunks {
        total.add(partial);
    }
    Ok(total.finish(n, None))
}

/// The first `(row, column)` holding a NaN or infinity.
pub(crate) fn first_non_finite(features: ArrayView2<'_, f32>) -> Option<(usize, usize)> {
    features
        .indexed_iter()
        .find(|(_, v)| !v.is_finite())
        .map(|(index, _)| index)
}
