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

    /// A snapshot read from storage: the codes of every slot (`words`), the hash tables over the
    /// first `base_slots` of them with the neighbour sample they were built with, and the rest
    /// as the scanned delta. A delta past its limit (a bulk import stopped before its tables were
    /// built) is filed in new tables here instead.
    pub(crate) fn from_stored(
        layout: Arc<WordLayout>,
        words: Vec<u64>,
        deleted: BitVec<u64>,
        base_slots: usize,
        tables: Vec<Table>,
        sample: Vec<Vec<u32>>,
    ) -> View {
        let w = layout.words;
        let slots = words.len() / w;
        debug_assert!(base_slots <= slots && deleted.len() == slots);
        if slots - base_slots > rebuild_threshold(base_slots)
            || tables.len() != layout.substrings.len()
        {
            return View::build(layout, words, deleted);
        }
        let live = (slots - deleted.count_ones()) as u64;
        let mut base_words = words;
        let delta = base_words.split_off(base_slots * w);
        let sample = NeighbourSample::from_rows(sample, layout.bits());
        View {
            layout,
            base: Arc::new(Base {
                words: base_words,
                slots: base_slots,
                tables,
                sample,
            }),
            delta: Arc::new(delta),
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

    /// Whether a commit of `adds` more slots would pass the delta's limit, so that the tables
    /// must be rebuilt ([`View::merged`]) rather than the delta grown ([`View::appended`]).
    pub(crate) fn needs_merge(&self, adds: usize) -> bool {
        self.delta.len() / self.layout.words + adds > rebuild_threshold(self.base.slots)
    }

    /// Slots filed in the hash tables; later slots are the scanned delta.
    pub(crate) fn base_slots(&self) -> usize {
        self.base.slots
    }

    /// The hash tables, one per substring, over the first [`View::base_slots`] slots.
    pub(crate) fn tables(&self) -> &[Table] {
        &self.base.tables
    }

    /// The neighbour sample taken when the tables were built.
    pub(crate) fn sample_rows(&self) -> &[Vec<u32>] {
        self.base.sample.rows()
    }

    /// A snapshot of no codes, held for a moment while the current one is taken apart.
    pub(crate) fn placeholder(layout: Arc<WordLayout>) -> View {
        View::build(layout, Vec::new(), BitVec::new())
    }

    /// The snapshot after a commit that keeps the tables: `adds` (ids increasing, all at or
    /// above `slots()`, with their codes' words one after another in `words`) join the delta
    /// and `deletes` (live ids) are flagged. Taking the snapshot by `Arc` lets the commit grow the
    /// delta in place when nothing else holds it, so that a bulk import's many commits cost what
    /// they add, not what is stored.
    pub(crate) fn appended(self: Arc<View>, adds: &[u64], words: &[u64], deletes: &[u64]) -> View {
        let view = Arc::try_unwrap(self).unwrap_or_else(|shared| View {
            layout: shared.layout.clone(),
            base: shared.base.clone(),
            delta: shared.delta.clone(),
            deleted: shared.deleted.clone(),
            live: shared.live,
        });
        let View {
            layout,
            base,
            mut delta,
            mut deleted,
            live,
        } = view;
        let w = layout.words;
        {
            let delta = Arc::make_mut(&mut delta);
            let deleted = Arc::make_mut(&mut deleted);
            record_commit(delta, deleted, base.slots, w, (adds, words), deletes);
        }
        View {
            layout,
            base,
            delta,
            deleted,
            live: live + adds.len() as u64 - deletes.len() as u64,
        }
    }

    /// The snapshot after a commit, with every live code filed in new hash tables (the same
    /// arguments as [`View::appended`]).
    pub(crate) fn merged(&self, adds: &[u64], words: &[u64], deletes: &[u64]) -> View {
        let w = self.layout.words;
        let slots = adds.last().map_or(self.slots(), |&id| id as usize + 1);
        let mut all = self.words_with_room(slots);
        let mut deleted = (*self.deleted).clone();
        record_commit(&mut all, &mut deleted, 0, w, (adds, words), deletes);
        View::build(self.layout.clone(), all, deleted)
    }

    /// The snapshot after a commit of `adds` (`(id, words)`) and `deletes`, merged or appended
    /// as a commit would.
    #[cfg(test)]
    pub(crate) fn apply(&self, adds: &[(u64, Vec<u64>)], deletes: &[u64]) -> View {
        let ids: Vec<u64> = adds.iter().map(|(id, _)| *id).collect();
        let words: Vec<u64> = adds.iter().flat_map(|(_, words)| words.clone()).collect();
        if self.needs_merge(ids.len()) {
            return self.merged(&ids, &words, deletes);
        }
        let shared = Arc::new(View {
            layout: self.layout.clone(),
            base: self.base.clone(),
            delta: self.delta.clone(),
            deleted: self.deleted.clone(),
            live: self.live,
        });
        shared.appended(&ids, &words, deletes)
    }

    /// Every slot's words, deleted ones included (as stale or zero words).
    pub(crate) fn all_words(&self) -> Vec<u64> {
        self.words_with_room(self.slots())
    }

    /// Every slot's words, in a vector with room for `slots` slots.
    fn words_with_room(&self, slots: usize) -> Vec<u64> {
        let mut all = Vec::with_capacity(slots * self.layout.words);
        all.extend_from_slice(&self.base.words);
        all.extend_from_slice(&self.delta);
        all
    }

    /// One flag per slot, set where the id is deleted or was never stored.
    pub(crate) fn deleted_flags(&self) -> &BitVec<u64> {
        &self.deleted
    }
}

/// Appends the codes of a commit's adds (ids increasing, with their words one after another) to
/// `codes`, whose first slot is `first_slot`, with their flags, then flags its `deletes`. An id
/// handed out and deleted in the same transaction never reaches storage: its slot is left
/// zeroed and flagged.
fn record_commit(
    codes: &mut Vec<u64>,
    deleted: &mut BitVec<u64>,
    first_slot: usize,
    w: usize,
    (adds, words): (&[u64], &[u64]),
    deletes: &[u64],
) {
    for (&id, code) in adds.iter().zip(words.chunks_exact(w)) {
        let gap = id as usize - (first_slot + codes.len() / w);
        codes.extend(std::iter::repeat_n(0, gap * w));
        deleted.extend(std::iter::repeat_n(true, gap));
        codes.extend_from_slice(code);
        deleted.push(false);
    }
    for &id in deletes {
        deleted.set(id as usize, true);
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
pub(crate) fn rebuild_threshold(base_slots: usize) -> usize {
    (base_slots / 32).clamp(4096, 65536)
}
