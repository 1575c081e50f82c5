//! [`Reader`]: a consistent snapshot of an index, the search builders [`Search`] and
//! [`BatchSearch`] it hands out, and the self-join [`Reader::pairs_within`].

use std::path::PathBuf;
use std::sync::Arc;

use rayon::prelude::*;

use super::writer::Item;
use crate::code::{words_to_bytes, Code};
use crate::error::{CodeError, Error, Result, SearchError};
use crate::mih::join::{Join, JoinPlan};
use crate::mih::search::{Packed, Strategy, TooCostly};
use crate::mih::View;
use crate::store::{self, StoreRead};

/// One search result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Hit {
    /// Hamming distance to the query (first, so that hits order by distance, then id).
    pub distance: u32,
    /// The stored id.
    pub id: u64,
}

fn unpack(hits: Vec<Packed>) -> Vec<Hit> {
    hits.into_iter()
        .map(|packed| Hit {
            distance: (packed >> 32) as u32,
            id: packed & 0xffff_ffff,
        })
        .collect()
}

/// Two live codes within a radius of each other, found by [`Reader::pairs_within`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Pair {
    /// The smaller id (first, so that pairs order by `a`, then `b`).
    pub a: u64,
    /// The larger id.
    pub b: u64,
    /// Their Hamming distance.
    pub distance: u32,
}

/// A snapshot of an index: the codes and items of one commit, whatever is committed later.
///
/// A reader keeps the index's database open: it works whole (searches and stored items alike)
/// after its [`Index`](crate::Index) is dropped, and while other handles and processes commit.
/// It locks nobody out, but the storage engine keeps the pages of its commit while it lives, so
/// a reader held for a long time beside a busy writer lets the file grow.
pub struct Reader {
    dir: PathBuf,
    view: Arc<View>,
    /// The stored items of the same commit; it holds the database open while the reader lives.
    read: StoreRead,
}

impl Reader {
    pub(super) fn new(dir: PathBuf, view: Arc<View>, read: StoreRead) -> Reader {
        Reader { dir, view, read }
    }

    /// Number of live codes.
    pub fn len(&self) -> u64 {
        self.view.live()
    }

    /// Whether there is no live code.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Code length in bits.
    pub fn bits(&self) -> u32 {
        self.view.layout().bits()
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: u64) -> bool {
        self.view.is_live(id)
    }

    /// Live ids in increasing order.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.view.live_ids()
    }

    /// The code of a live id.
    pub fn code(&self, id: u64) -> Option<Code> {
        let words = self.view.code(id)?;
        let bytes = words_to_bytes(words, self.bits() as usize / 8);
        Some(Code::from_bytes(&bytes).expect("stored codes have a valid length"))
    }

    /// The item stored with a live id (`None` for an id that is not live).
    pub fn item(&self, id: u64) -> Result<Option<Item>> {
        if !self.view.is_live(id) {
            return Ok(None);
        }
        // A live id without a stored record has the empty item.
        store::guard(&self.dir, || Ok(self.read.item(id)?.unwrap_or_default())).map(Some)
    }

    /// The feature vector kept for a live id (indexes built with kept features).
    pub fn features(&self, id: u64, dim: u32) -> Result<Option<Vec<f32>>> {
        store::guard(&self.dir, || self.read.features(id, dim))
    }

    /// The live ids of the items stored under `key` ([`Item::key`]), in increasing order;
    /// empty when no item has it. Keys need not be unique, so there may be several.
    ///
    /// Answered from the index's key lookup, at a cost independent of the index's size. An
    /// index of format version 4 or older opened read-only has no key lookup (a writable open
    /// adds it) and is answered by a scan of every item record instead: correct, but in time
    /// proportional to the items.
    ///
    /// ```
    /// # fn main() -> milan::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use milan::{Code, Index, Item};
    /// let index = Index::builder(8).create(dir.path())?;
    /// let mut writer = index.writer()?;
    /// let item = Item { key: Some("a.png".into()), ..Item::default() };
    /// let id = writer.add(&Code::from_hex("0f")?, item)?;
    /// writer.commit()?;
    /// assert_eq!(index.reader()?.ids_with_key("a.png")?, [id]);
    /// assert!(index.reader()?.ids_with_key("b.png")?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn ids_with_key(&self, key: &str) -> Result<Vec<u64>> {
        let mut ids = store::guard(&self.dir, || self.read.ids_with_key(key))?;
        // The lookup and the snapshot are of one commit; this only keeps a damaged file's
        // stray entries out of the answer.
        ids.retain(|&id| self.view.is_live(id));
        Ok(ids)
    }

    /// The ids of the items stored with this content hash.
    pub fn ids_with_content_hash(&self, hash: &[u8; 32]) -> Result<Vec<u64>> {
        store::guard(&self.dir, || self.read.ids_with_content_hash(hash))
    }

    /// The live ids of every content hash stored by two items or more (the same file content),
    /// each list in increasing order, the lists ordered by their first id. Code-only indexes
    /// store no content hashes, and `index add` skips content it holds already, so this is
    /// usually empty; items written through the library may share one.
    pub fn content_hash_groups(&self) -> Result<Vec<Vec<u64>>> {
        let mut groups = store::guard(&self.dir, || self.read.shared_content_hashes())?;
        for ids in &mut groups {
            ids.retain(|&id| self.view.is_live(id));
            ids.sort_unstable();
        }
        groups.retain(|ids| ids.len() > 1);
        groups.sort_unstable();
        Ok(groups)
    }

    /// Every content hash stored.
    pub fn content_hashes(&self) -> Result<std::collections::HashSet<[u8; 32]>> {
        store::guard(&self.dir, || self.read.content_hashes())
    }

    fn query_words(&self, query: &Code) -> Result<Vec<u64>> {
        if query.bits() != self.bits() {
            return Err(Error::Code(CodeError::CodeLength {
                expected: self.bits(),
                got: query.bits(),
            }));
        }
        Ok(query.to_words())
    }

    /// Searches around `query`.
    ///
    /// ```
    /// # fn main() -> milan::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let index = milan::Index::builder(16).create(dir.path())?;
    /// let reader = index.reader()?;
    /// let hits = reader.search(&milan::Code::from_hex("00ff")?)?.top_k(10)?;
    /// assert!(hits.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn search(&self, query: &Code) -> Result<Search<'_>> {
        Ok(Search {
            view: &self.view,
            query: self.query_words(query)?,
            strategy: Strategy::Auto,
        })
    }

    /// Searches around the code stored under `id`: the same as [`Reader::search`] with that
    /// code, so the code itself matches at distance 0.
    ///
    /// Results are ordered by distance, then by id, and `id` gets no precedence: where more than
    /// k codes are identical to it, [`Search::top_k`] returns the k smallest of their ids, which
    /// need not include `id`. [`Search::within`] always includes it.
    ///
    /// ```
    /// # fn main() -> milan::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use milan::{Code, Index, Item};
    /// let index = Index::builder(16).create(dir.path())?;
    /// let mut writer = index.writer()?;
    /// for _ in 0..20 {
    ///     writer.add(&Code::from_hex("0ff0")?, Item::default())?; // ids 0 to 19, all alike
    /// }
    /// writer.commit()?;
    /// let reader = index.reader()?;
    /// let top: Vec<u64> = reader.search_id(15)?.top_k(5)?.iter().map(|hit| hit.id).collect();
    /// assert_eq!(top, [0, 1, 2, 3, 4]); // ties by id: 15 is not among them
    /// assert!(reader.search_id(15)?.within(0)?.iter().any(|hit| hit.id == 15));
    /// # Ok(()) }
    /// ```
    pub fn search_id(&self, id: u64) -> Result<Search<'_>> {
        let words = self.view.code(id).ok_or(Error::UnknownId { id })?;
        Ok(Search {
            view: &self.view,
            query: words.to_vec(),
            strategy: Strategy::Auto,
        })
    }

    /// Every pair of live codes within `radius` bits of each other (an exact self-join), each
    /// pair once with `a < b`, in batches ordered by `a`, then `b`.
    ///
    /// The pairs are found by multi-index hashing, each code a query for the codes after it,
    /// on every core (rayon's pool), a few thousand codes at a time, and handed out as they are
    /// found: memory holds about one batch of pairs per core, not the whole answer, and
    /// dropping the iterator stops the work. Codes that many others are close to (identical
    /// codes, above all) make many pairs: `n` copies of a code make `n (n - 1) / 2`.
    ///
    /// ```
    /// # fn main() -> milan::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use milan::{Code, Index, Item, Pair};
    /// let index = Index::builder(16).create(dir.path())?;
    /// let mut writer = index.writer()?;
    /// for hex in ["00ff", "ff00", "00fe", "00ff"] {
    ///     writer.add(&Code::from_hex(hex)?, Item::default())?;
    /// }
    /// writer.commit()?;
    /// let pairs: Vec<Pair> = index.reader()?.pairs_within(1)?.flatten().collect();
    /// let found: Vec<_> = pairs.iter().map(|p| (p.a, p.b, p.distance)).collect();
    /// assert_eq!(found, [(0, 2, 1), (0, 3, 0), (2, 3, 1)]);
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: [`SearchError::RadiusTooLarge`] past the code length.
    pub fn pairs_within(&self, radius: u32) -> Result<PairBatches<'_>> {
        check_radius(&self.view, radius)?;
        Ok(PairBatches {
            join: Join::new(&self.view, radius, JoinPlan::Auto),
        })
    }

    /// Searches around many queries at once, in parallel; results come back in query order.
    pub fn search_batch(&self, queries: &[Code]) -> Result<BatchSearch<'_>> {
        Ok(BatchSearch {
            view: &self.view,
            queries: queries
                .iter()
                .map(|query| self.query_words(query))
                .collect::<Result<_>>()?,
            strategy: Strategy::Auto,
        })
    }
}

/// The pairs of [`Reader::pairs_within`], in batches (each non-empty), ordered by `a`, then `b`
/// within and across batches.
pub struct PairBatches<'r> {
    join: Join<'r>,
}

impl Iterator for PairBatches<'_> {
    type Item = Vec<Pair>;

    fn next(&mut self) -> Option<Vec<Pair>> {
        let batch = self.join.next()?;
        Some(
            batch
                .into_iter()
                .map(|pair| Pair {
                    a: u64::from(pair.a),
                    b: u64::from(pair.b),
                    distance: pair.distance,
                })
                .collect(),
        )
    }
}

/// The typed error of a forced multi-index search over its budget.
fn too_costly(view: &View, refusal: TooCostly) -> Error {
    // Saturating float-to-int conversions: a predicted count can exceed u64 (2^32 values in each
    // of hundreds of tables is far below it, but the conversion must not matter either way).
    Error::Search(SearchError::MultiIndexTooCostly {
        probes: refusal.probes.ceil() as u64,
        budget: refusal.budget as u64,
        codes: view.live(),
    })
}

fn check_k(k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::Search(SearchError::ZeroK));
    }
    Ok(())
}

fn check_radius(view: &View, radius: u32) -> Result<()> {
    let bits = view.layout().bits();
    if radius > bits {
        return Err(Error::Search(SearchError::RadiusTooLarge { radius, bits }));
    }
    Ok(())
}

/// An exact search around one query; finish it with [`top_k`](Search::top_k) or
/// [`within`](Search::within).
pub struct Search<'r> {
    view: &'r View,
    query: Vec<u64>,
    strategy: Strategy,
}

impl Search<'_> {
    /// How to search (default [`Strategy::Auto`]); answers do not depend on it, but a forced
    /// [`Strategy::MultiIndex`] refuses queries that would probe too many buckets (see there).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The `k` nearest live codes, by distance, then id. A `k` at or above the number of live
    /// codes (up to `usize::MAX`) returns them all, at the cost of one scan.
    ///
    /// Errors: [`SearchError::ZeroK`] for `k = 0`; [`SearchError::MultiIndexTooCostly`] when forced to
    /// [`Strategy::MultiIndex`] and over its budget.
    pub fn top_k(&self, k: usize) -> Result<Vec<Hit>> {
        check_k(k)?;
        self.view
            .top_k(&self.query, k, self.strategy)
            .map(unpack)
            .map_err(|refusal| too_costly(self.view, refusal))
    }

    /// Every live code within `radius` bits, by distance, then id.
    ///
    /// Errors: [`SearchError::RadiusTooLarge`] past the code length; [`SearchError::MultiIndexTooCostly`]
    /// when forced to [`Strategy::MultiIndex`] and over its budget.
    pub fn within(&self, radius: u32) -> Result<Vec<Hit>> {
        check_radius(self.view, radius)?;
        self.view
            .radius(&self.query, radius, self.strategy)
            .map(unpack)
            .map_err(|refusal| too_costly(self.view, refusal))
    }
}

/// Exact searches around many queries, run in parallel.
pub struct BatchSearch<'r> {
    view: &'r View,
    queries: Vec<Vec<u64>>,
    strategy: Strategy,
}

impl BatchSearch<'_> {
    /// How to search (default [`Strategy::Auto`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// [`Search::top_k`] for every query; one refused query fails the whole batch.
    pub fn top_k(&self, k: usize) -> Result<Vec<Vec<Hit>>> {
        check_k(k)?;
        self.queries
            .par_iter()
            .map(|query| {
                self.view
                    .top_k(query, k, self.strategy)
                    .map(unpack)
                    .map_err(|refusal| too_costly(self.view, refusal))
            })
            .collect()
    }

    /// [`Search::within`] for every query; one refused query fails the whole batch.
    pub fn within(&self, radius: u32) -> Result<Vec<Vec<Hit>>> {
        check_radius(self.view, radius)?;
        self.queries
            .par_iter()
            .map(|query| {
                self.view
                    .radius(query, radius, self.strategy)
                    .map(unpack)
                    .map_err(|refusal| too_costly(self.view, refusal))
            })
            .collect()
    }
}
