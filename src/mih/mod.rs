//! The in-memory search engine: multi-index hashing (Norouzi, Punjani and Fleet) over a snapshot of
//! the stored codes.
//!
//! Types:
//! - [`View`]: an immutable snapshot of every code, shared by readers through an `Arc`. A commit
//!   derives a new view from the old one ([`View::apply`]) instead of mutating it, so a reader keeps
//!   the snapshot it started with.
//! - [`Base`](self): the bulk of the codes with their hash tables ([`table::Table`]), rebuilt only
//!   when the codes added since its last build (the delta, searched by scanning) grow past a fraction
//!   of it.
//! - [`layout::WordLayout`]: substring positions and masks over 64-bit words.
//!
//! Search itself (exact radius and top-k, multi-index hashing or a linear scan, chosen per query by
//! a cost model) is in [`search`]; the self-join (every pair of codes within a radius) in [`join`].

pub(crate) mod join;
pub(crate) mod layout;
mod sample;
pub(crate) mod search;
pub(crate) mod table;

use std::sync::Arc;

use bitvec::vec::BitVec;
use rayon::prelude::*;

use layout::WordLayout;
use sample::NeighbourSample;
use table::Table;

/// Ids at or above this cannot be held: bucket entries are `u32`.
pub(crate) const MAX_IDS: u64 = u32::MAX as u64;

/// The codes indexed by the hash tables.
pub(crate) struct Base {
    /// Codes of slots `0..slots`, `layout.words` words each; deleted slots hold stale words.
    words: Vec<u64>,
    slots: usize,
    tables: Vec<Table>,
    /// Typical k-th nearest distances, for the top-k planner.
    sample: NeighbourSample,
}

/// An immutable snapshot of the index's codes.
pub(crate) struct View {
    layout: Arc<WordLayout>,
    base: Arc<Base>,
    /// Codes of slots `base.slots..slots()`, not in the hash tables.
    delta: Arc<Vec<u64>>,
    /// One bit per slot, set where the id is deleted or was never stored.
    deleted: Arc<BitVec<u64>>,
    live: u64,
}

impl Base {
    fn build(layout: &WordLayout, words: Vec<u64>, deleted: &BitVec<u64>) -> Base {
        let slots = words.len() / layout.words;
        let tables = build_tables(layout, &words, 0, deleted);
        let sample = NeighbourSample::of(&words, layout.words, deleted, layout.bits());
        Base {
            words,
            slots,
            tables,
            sample,
        }
    }
}

impl View {
    /// A snapshot from codes and hash tables loaded from storage.
    pub(crate) fn from_parts(
        layout: Arc<WordLayout>,
        words: Vec<u64>,
        deleted: BitVec<u64>,
        tables: Vec<Table>,
    ) -> View {
        let slots = words.len() / layout.words;
        debug_assert_eq!(deleted.len(), slots);
        let live = (slots - deleted.count_ones()) as u64;
        let sample = NeighbourSample::of(&words, layout.words, &deleted, layout.bits());
        View {
            layout,
            base: Arc::new(Base {
                words,
                slots,
                tables,
                sample,
            }),
            delta: Arc::new(Vec::new()),
            deleted: Arc::new(deleted),
            live,
        }
    }

    /// A snapshot whose hash tables are computed from the codes.
    pub(crate) fn build(layout: Arc<WordLayout>, words: Vec<u64>, deleted: BitVec<u64>) -> View {
        let slots = words.len() / layout.words;
        let live = (slots - deleted.count_ones()) as u64;
        let base = Base::build(&layout, words, &deleted);
        View {
            layout,
            base: Arc::new(base),
            delta: Arc::new(Vec::new()),
            deleted: Arc::new(deleted),
            live,
        }
    }

    pub(crate) fn layout(&self) -> &Arc<WordLayout> {
        &self.layout
    }

    /// Number of id slots (one past the largest id ever stored in this snapshot).
    pub(crate) fn slots(&self) -> usize {
        self.base.slots + self.delta.len() / self.layout.words
    }

    /// Number of live codes.
    pub(crate) fn live(&self) -> u64 {
        self.live
    }

    pub(crate) fn is_live(&self, id: u64) -> bool {
        (id as usize) < self.slots() && !self.deleted[id as usize]
    }

    /// The words of a live code.
    pub(crate) fn code(&self, id: u64) -> Option<&[u64]> {
        if !self.is_live(id) {
            return None;
        }
        Some(self.slot_words(id as usize))
    }

    fn slot_words(&self, slot: usize) -> &[u64] {
        let w = self.layout.words;
        if slot < self.base.slots {
            &self.base.words[slot * w..(slot + 1) * w]
        } else {
            let at = slot - self.base.slots;
            &self.delta[at * w..(at + 1) * w]
        }
    }

    /// Live ids in increasing order.
    pub(crate) fn live_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.deleted.iter_zeros().map(|slot| slot as u64)
    }

    /// Heap bytes held by this snapshot (codes, tables, flags).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.base.words.capacity() * 8
            + self
                .base
                .tables
                .iter()
                .map(Table::heap_bytes)
                .sum::<usize>()
            + self.delta.capacity() * 8
            + self.deleted.as_raw_slice().len() * 8
    }

    /// The snapshot after a commit: `adds` (ids increasing, all at or above `slots()`) stored and
    /// `deletes` (live ids) removed.
    pub(crate) fn apply(&self, adds: &[(u64, Vec<u64>)], deletes: &[u64]) -> View {
        let w = self.layout.words;
        let mut deleted = (*self.deleted).clone();
        let mut delta = (*self.delta).clone();
        for (id, words) in adds {
            let slot = *id as usize;
            while self.base.slots + delta.len() / w < slot {
                // An id handed out and deleted in the same transaction never reaches storage.
                delta.extend(std::iter::repeat_n(0, w));
                deleted.push(true);
            }
            delta.extend_from_slice(words);
            deleted.push(false);
        }
        for &id in deletes {
            deleted.set(id as usize, true);
        }
        let live = self.live + adds.len() as u64 - deletes.len() as u64;
        let delta_slots = delta.len() / w;
        if delta_slots > rebuild_threshold(self.base.slots) {
            let mut words = Vec::with_capacity(self.base.words.len() + delta.len());
            words.extend_from_slice(&self.base.words);
            words.extend_from_slice(&delta);
            let base = Base::build(&self.layout, words, &deleted);
            return View {
                layout: self.layout.clone(),
                base: Arc::new(base),
                delta: Arc::new(Vec::new()),
                deleted: Arc::new(deleted),
                live,
            };
        }
        View {
            layout: self.layout.clone(),
            base: self.base.clone(),
            delta: Arc::new(delta),
            deleted: Arc::new(deleted),
            live,
        }
    }
}

/// One hash table per substring over the live codes of slots `first..`, whose codes `words`
/// holds (`layout.words` words each, from slot `first` on).
fn build_tables(
    layout: &WordLayout,
    words: &[u64],
    first: usize,
    deleted: &BitVec<u64>,
) -> Vec<Table> {
    let slots = words.len() / layout.words;
    layout
        .substrings
        .par_iter()
        .zip(&layout.filters)
        .map(|(sub, filter)| {
            let mut entries: Vec<table::Entry> = (first..first + slots)
                .filter(|&slot| !deleted[slot])
                .map(|slot| {
                    let at = (slot - first) * layout.words;
                    let code = &words[at..at + layout.words];
                    (sub.value(code), slot as u32, filter.value(code))
                })
                .collect();
            Table::from_entries(sub.width, slots, &mut entries)
        })
        .collect()
}

/// How many codes may wait in the scanned delta before the hash tables are rebuilt: a fixed floor
/// for small indexes, a fraction of the base (amortising the rebuild) capped so that scanning the
/// delta stays cheap.
fn rebuild_threshold(base_slots: usize) -> usize {
    (base_slots / 32).clamp(4096, 65536)
}
