//! `model_ops`: the engine answers exactly like a brute-force model, whatever it is asked to do.
//!
//! A random sequence of adds, deletes, commits, aborts, reopens, read-only opens, optimizes and
//! queries runs against a real index in a temporary directory and against a model (the committed
//! codes by id, plus the open writer's pending changes). Asserts that:
//! - every top-k, radius and search-by-id answer (ids and distances, by distance then id) equals
//!   the model's brute-force answer, with each of the three strategies;
//! - every self-join (`pairs_within`) equals the model's brute-force one: each pair of live codes
//!   within the radius once, `a < b`, by `a` then `b`;
//! - after commit, abort, reopen and optimize, `len()`, the live ids, their codes and items, and
//!   the content-hash lookups equal the model; ids are dense and never reused; a reader opened
//!   before a commit keeps its snapshot;
//! - invalid arguments (k = 0, radius > bits in searches and self-joins, substrings out of range,
//!   codes of another length, writes through a read-only handle, a second writer or an
//!   optimize on the thread holding the writer) return their typed error, and a second writable
//!   handle opens beside the first and agrees with the model;
//! - a k beyond the live count (up to `usize::MAX`) returns every code; a forced multi-index
//!   radius search far beyond its probe budget is refused with `MultiIndexTooCostly` (or, with
//!   every code still in the scanned delta, answered).

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use milan::{Code, Error, Hit, Index, Item, Pair, Reader, Strategy, Writer};
use milan_index_format::{CodeLayout, LayoutError};

const BITS: [u32; 6] = [8, 16, 32, 64, 72, 128];
/// Caps that keep one input to milliseconds.
const MAX_OPS: usize = 64;
const MAX_CODES: usize = 256;
/// Reopens, read-only opens and optimizes each rebuild every hash table; past this many per input
/// they are skipped.
const MAX_REBUILDS: usize = 8;
const MAX_BATCH: usize = 64;
const MAX_FLIPS: usize = 8;
/// `Strategy::MultiIndex` enumerates every probe whatever the index size (that is what Auto's cost
/// model is for), so the harness skips it for queries that would probe more buckets than this.
const MAX_PROBES: f64 = 50_000.0;
/// A forced multi-index search may always make this many probes (milan's floor, whatever the
/// index size); these indexes of at most 256 codes allow no more, so a radius search needing
/// more is refused before it probes anything.
const FORCED_BUDGET_FLOOR: f64 = (1u64 << 20) as f64;
const STRATEGIES: [Strategy; 3] = [Strategy::Auto, Strategy::MultiIndex, Strategy::Scan];

#[derive(Arbitrary, Debug)]
struct Input {
    bits: u8,
    substrings: Option<u8>,
    ops: Vec<Op>,
}

/// A code: given outright, or an earlier code with a few bits flipped (so that radius queries and
/// near-duplicates actually occur).
#[derive(Arbitrary, Debug)]
enum CodeSpec {
    Bytes([u8; 16]),
    Near { of: u16, flips: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Add {
        code: CodeSpec,
        key: Option<u8>,
    },
    /// Many codes at once, to fill buckets and chunks beyond what single adds reach.
    AddBatch {
        seed: u64,
        count: u8,
        near: bool,
    },
    /// `which` picks any id handed out so far, or the next one: live, deleted or never stored.
    Delete {
        which: u16,
    },
    Commit,
    Abort,
    Reopen,
    OpenReadOnlyAndQuery {
        query: CodeSpec,
        k: u8,
    },
    TopK {
        query: CodeSpec,
        k: u8,
    },
    Radius {
        query: CodeSpec,
        r: u8,
    },
    SearchId {
        which: u16,
        k: u8,
    },
    /// A self-join at radius `r` modulo (bits + 1).
    PairsWithin {
        r: u8,
    },
    WrongLength {
        bytes: u8,
    },
    Optimize {
        substrings: Option<u8>,
    },
}

fuzz_target!(|input: Input| run(input));

#[derive(Clone, Debug)]
struct Entry {
    code: Vec<u8>,
    key: Option<u8>,
}

impl Entry {
    fn item(&self) -> Item {
        Item {
            key: self.key.map(|k| format!("key-{k}")),
            content_hash: self.key.filter(|k| k % 2 == 0).map(|k| [k; 32]),
            ..Item::default()
        }
    }
}

/// The open writer's changes, not yet visible to readers.
#[derive(Default)]
struct Pending {
    adds: BTreeMap<u64, Entry>,
    deletes: BTreeSet<u64>,
    next_id: u64,
}

struct Model {
    bits: u32,
    committed: BTreeMap<u64, Entry>,
    next_id: u64,
    pending: Option<Pending>,
    /// Every code ever added, for `CodeSpec::Near`.
    history: Vec<Vec<u8>>,
    /// Harness bookkeeping, not model state: table rebuilds so far (see `MAX_REBUILDS`).
    rebuilds: usize,
}

impl Model {
    fn pending(&mut self) -> &mut Pending {
        let next_id = self.next_id;
        self.pending.get_or_insert_with(|| Pending {
            next_id,
            ..Pending::default()
        })
    }

    fn add(&mut self, entry: Entry) -> u64 {
        self.history.push(entry.code.clone());
        let pending = self.pending();
        let id = pending.next_id;
        pending.next_id += 1;
        pending.adds.insert(id, entry);
        id
    }

    fn delete(&mut self, id: u64) -> bool {
        let live = self.committed.contains_key(&id);
        let pending = self.pending();
        pending.adds.remove(&id).is_some() || (live && pending.deletes.insert(id))
    }

    fn commit(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.committed.extend(pending.adds);
            self.committed.retain(|id, _| !pending.deletes.contains(id));
            self.next_id = pending.next_id;
        }
    }

    fn abort(&mut self) {
        self.pending = None;
    }

    /// The id `which` picks among those handed out so far and the next one.
    fn pick_id(&self, which: u16) -> u64 {
        let next = self.pending.as_ref().map_or(self.next_id, |p| p.next_id);
        u64::from(which) % (next + 1)
    }

    fn code(&self, spec: &CodeSpec) -> Vec<u8> {
        let len = self.bits as usize / 8;
        match spec {
            CodeSpec::Bytes(bytes) => bytes[..len].to_vec(),
            CodeSpec::Near { of, flips } => {
                let mut code = match self.history.len() {
                    0 => vec![0; len],
                    n => self.history[usize::from(*of) % n].clone(),
                };
                for &flip in flips.iter().take(MAX_FLIPS) {
                    let bit = usize::from(flip) % self.bits as usize;
                    code[bit / 8] ^= 0x80 >> (bit % 8);
                }
                code
            }
        }
    }

    /// Every committed code by distance to `query`, then id: the reference answer.
    fn ranked(&self, query: &[u8]) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .committed
            .iter()
            .map(|(&id, entry)| Hit {
                id,
                distance: hamming(&entry.code, query),
            })
            .collect();
        hits.sort();
        hits
    }

    /// Every pair of committed codes within `r`, each once with `a < b`, by `a` then `b`: the
    /// reference self-join.
    fn pairs_within(&self, r: u32) -> Vec<Pair> {
        let live: Vec<(u64, &Entry)> = self.committed.iter().map(|(&id, e)| (id, e)).collect();
        let mut pairs = Vec::new();
        for (i, &(a, first)) in live.iter().enumerate() {
            for &(b, second) in &live[i + 1..] {
                let distance = hamming(&first.code, &second.code);
                if distance <= r {
                    pairs.push(Pair { a, b, distance });
                }
            }
        }
        pairs
    }
}

fn hamming(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

fn run(input: Input) {
    let bits = BITS[usize::from(input.bits) % BITS.len()];
    let tmp = scratch_dir();
    let dir = tmp.path().join("index");
    let mut index = create(bits, input.substrings, &dir);
    let mut model = Model {
        bits,
        committed: BTreeMap::new(),
        next_id: 0,
        pending: None,
        history: Vec::new(),
        rebuilds: 0,
    };
    let mut ops = input.ops.iter().take(MAX_OPS);
    // A session runs ops on one open handle until one needs the handle closed.
    while let Some(op) = session(&index, &mut model, &mut ops) {
        // The session's writer is gone, and its changes with it.
        model.abort();
        match op {
            Op::Reopen => {
                // Handles share the index: a second writable one opens and agrees.
                let second = Index::open(&dir).expect("a second writable handle");
                check_state(&second, &model);
                drop(second);
                drop(index);
                index = Index::open(&dir).expect("reopen");
                check_state(&index, &model);
                let report = index.verify().expect("verify");
                assert!(report.is_ok(), "verify after reopen: {report:?}");
            }
            Op::OpenReadOnlyAndQuery { query, k } => {
                drop(index);
                let mut read_only = Index::open_read_only(&dir).expect("open read-only");
                check_state(&read_only, &model);
                let reader = read_only.reader().expect("reader");
                top_k(
                    &reader,
                    &model,
                    read_only.substrings(),
                    &model.code(query),
                    *k,
                );
                drop(reader);
                assert!(matches!(read_only.writer(), Err(Error::ReadOnly { .. })));
                assert!(matches!(
                    read_only.optimize(None),
                    Err(Error::ReadOnly { .. })
                ));
                let report = read_only.verify().expect("verify read-only");
                assert!(report.is_ok() && report.storage_ok.is_none(), "{report:?}");
                drop(read_only);
                index = Index::open(&dir).expect("reopen after read-only");
                check_state(&index, &model);
            }
            other => unreachable!("session returned {other:?}"),
        }
    }
}

/// A directory on tmpfs when there is one: redb syncs on every commit.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new()
        .prefix("milan-fuzz-")
        .tempdir_in(shm);
    builder
        .or_else(|_| tempfile::tempdir())
        .expect("temporary directory")
}

/// Creates the index; substrings out of range must be refused with a layout error first.
fn create(bits: u32, substrings: Option<u8>, dir: &Path) -> Index {
    if let Some(substrings) = substrings.map(u32::from) {
        let result = Index::builder(bits).substrings(substrings).create(dir);
        let (min, max) = CodeLayout::substring_range(bits);
        if (min..=max).contains(&substrings) {
            let index = result.expect("create");
            assert_eq!(index.substrings(), substrings);
            return index;
        }
        assert!(
            matches!(result, Err(Error::Layout(LayoutError::Substrings { .. }))),
            "{substrings} substrings for {bits} bits: {result:?}"
        );
    }
    let index = Index::builder(bits).create(dir).expect("create");
    assert_eq!((index.bits(), index.len()), (bits, 0));
    index
}

/// Runs ops on `index` until they run out (None) or one needs the handle dropped (returned).
fn session<'i, 'o>(
    index: &'i Index,
    model: &mut Model,
    ops: &mut impl Iterator<Item = &'o Op>,
) -> Option<&'o Op> {
    let mut writer: Option<Writer<'i>> = None;
    for op in ops {
        match op {
            Op::Add { code, key } => {
                if model.history.len() < MAX_CODES {
                    let entry = Entry {
                        code: model.code(code),
                        key: *key,
                    };
                    add(writer.get_or_insert_with(|| begin(index)), model, entry);
                }
            }
            Op::AddBatch { seed, count, near } => {
                let writer = writer.get_or_insert_with(|| begin(index));
                let mut state = seed | 1;
                let count = usize::from(*count).min(MAX_BATCH);
                for _ in 0..count.min(MAX_CODES.saturating_sub(model.history.len())) {
                    let random = xorshift(&mut state);
                    let spec = if *near {
                        // Up to three flips of an earlier code (repeats cancel out).
                        let flips = (0..random % 4)
                            .map(|_| xorshift(&mut state) as u8)
                            .collect();
                        CodeSpec::Near {
                            of: random as u16,
                            flips,
                        }
                    } else {
                        let mut bytes = [0; 16];
                        bytes[..8].copy_from_slice(&random.to_le_bytes());
                        bytes[8..].copy_from_slice(&xorshift(&mut state).to_le_bytes());
                        CodeSpec::Bytes(bytes)
                    };
                    let entry = Entry {
                        code: model.code(&spec),
                        key: None,
                    };
                    add(writer, model, entry);
                }
            }
            Op::Delete { which } => {
                let id = model.pick_id(*which);
                let writer = writer.get_or_insert_with(|| begin(index));
                let deleted = writer.delete(id).expect("delete");
                assert_eq!(deleted, model.delete(id), "delete({id})");
            }
            Op::Commit => {
                let writer = writer.take().unwrap_or_else(|| begin(index));
                let before = index.reader().expect("reader");
                let ids_before: Vec<u64> = model.committed.keys().copied().collect();
                writer.commit().expect("commit");
                model.commit();
                // A reader keeps the snapshot it was opened on.
                assert_eq!(before.ids().collect::<Vec<_>>(), ids_before);
                assert_eq!(before.len(), ids_before.len() as u64);
                check_state(index, model);
            }
            Op::Abort => {
                if let Some(writer) = writer.take() {
                    writer.abort();
                }
                model.abort();
                check_state(index, model);
            }
            Op::Reopen | Op::OpenReadOnlyAndQuery { .. } => {
                if model.rebuilds < MAX_REBUILDS {
                    model.rebuilds += 1;
                    return Some(op);
                }
            }
            Op::TopK { query, k } => {
                let reader = index.reader().expect("reader");
                top_k(&reader, model, index.substrings(), &model.code(query), *k);
            }
            Op::Radius { query, r } => {
                let reader = index.reader().expect("reader");
                radius(
                    &reader,
                    model,
                    index.substrings(),
                    &model.code(query),
                    u32::from(*r),
                );
            }
            Op::SearchId { which, k } => {
                let reader = index.reader().expect("reader");
                search_id(
                    &reader,
                    model,
                    index.substrings(),
                    model.pick_id(*which),
                    *k,
                );
            }
            Op::PairsWithin { r } => {
                let reader = index.reader().expect("reader");
                pairs_within(&reader, model, u32::from(*r) % (model.bits + 1));
            }
            Op::WrongLength { bytes } => {
                let mut len = 1 + usize::from(*bytes) % 128;
                if len == model.bits as usize / 8 {
                    len += 1;
                }
                let code = Code::from_bytes(&vec![0xa5; len]).expect("valid length");
                let wrong_length = |result: Result<_, Error>| {
                    matches!(result, Err(Error::CodeLength { expected, got })
                        if expected == model.bits && got as usize == len * 8)
                };
                let reader = index.reader().expect("reader");
                assert!(wrong_length(reader.search(&code).map(drop)));
                // Refused without handing out an id: the next add checks that ids stay dense.
                if let Some(writer) = writer.as_mut() {
                    assert!(wrong_length(writer.add(&code, Item::default()).map(drop)));
                }
            }
            Op::Optimize { substrings } => {
                if model.rebuilds >= MAX_REBUILDS {
                    continue;
                }
                model.rebuilds += 1;
                // Optimize takes the writer lock: on the thread holding it, a typed error (not
                // a deadlock), the same as a second writer; then close it, as a user must.
                if writer.is_some() {
                    let busy =
                        |result: Result<(), Error>| matches!(result, Err(Error::WriterBusy { .. }));
                    assert!(busy(index.optimize(substrings.map(u32::from)).map(drop)));
                    assert!(busy(index.writer().map(drop)));
                    assert!(busy(index.try_writer().map(drop)));
                }
                drop(writer.take());
                model.abort();
                optimize(index, model, substrings.map(u32::from));
            }
        }
    }
    None
}

fn begin(index: &Index) -> Writer<'_> {
    index.writer().expect("writer")
}

fn add(writer: &mut Writer<'_>, model: &mut Model, entry: Entry) {
    let code = Code::from_bytes(&entry.code).expect("code of the index's length");
    let id = writer.add(&code, entry.item()).expect("add");
    assert_eq!(id, model.add(entry), "ids are dense and never reused");
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn optimize(index: &Index, model: &Model, substrings: Option<u32>) {
    let before = index.substrings();
    let result = index.optimize(substrings);
    let (min, max) = CodeLayout::substring_range(model.bits);
    match substrings {
        Some(s) if !(min..=max).contains(&s) => {
            assert!(matches!(
                result,
                Err(Error::Layout(LayoutError::Substrings { .. }))
            ));
            assert_eq!(index.substrings(), before);
        }
        _ => {
            let report = result.expect("optimize");
            assert_eq!(report.old_substrings, before);
            assert!(substrings.is_none_or(|s| s == report.new_substrings));
            assert_eq!(index.substrings(), report.new_substrings);
        }
    }
    check_state(index, model);
}

/// The committed state as readers see it equals the model's.
fn check_state(index: &Index, model: &Model) {
    assert_eq!(index.len(), model.committed.len() as u64);
    assert_eq!(index.bits(), model.bits);
    assert_eq!(index.info().next_id, model.next_id);
    let reader = index.reader().expect("reader");
    let ids: Vec<u64> = reader.ids().collect();
    assert_eq!(ids, model.committed.keys().copied().collect::<Vec<_>>());
    for id in 0..=model.next_id {
        match model.committed.get(&id) {
            Some(entry) => {
                assert!(reader.contains(id));
                assert_eq!(reader.code(id).expect("live code").as_bytes(), entry.code);
                assert_eq!(
                    reader.item(id).expect("item"),
                    Some(entry.item()),
                    "item {id}"
                );
            }
            None => {
                assert!(
                    !reader.contains(id) && reader.code(id).is_none(),
                    "id {id} is dead"
                );
                assert_eq!(reader.item(id).expect("item"), None, "item of dead id {id}");
            }
        }
    }
    let hashes: BTreeSet<[u8; 32]> = model
        .committed
        .values()
        .filter_map(|e| e.item().content_hash)
        .collect();
    for hash in hashes {
        let expected: Vec<u64> = model
            .committed
            .iter()
            .filter(|(_, e)| e.item().content_hash == Some(hash))
            .map(|(&id, _)| id)
            .collect();
        assert_eq!(
            reader.ids_with_content_hash(&hash).expect("hash lookup"),
            expected
        );
    }
    spot_check(&reader, model, index.substrings());
}

/// Queries around a few committed codes (first, middle, last) and far from them, and a self-join,
/// so that every state change is followed by searches whether or not the input asks for any.
fn spot_check(reader: &Reader, model: &Model, substrings: u32) {
    let codes: Vec<&Entry> = model.committed.values().collect();
    let Some(last) = codes.last() else {
        return;
    };
    for entry in [codes[0], codes[codes.len() / 2], last] {
        radius(reader, model, substrings, &entry.code, model.bits / 8);
        top_k(reader, model, substrings, &entry.code, 4);
    }
    pairs_within(reader, model, model.bits / 8);
    let far: Vec<u8> = codes[0].code.iter().map(|b| !b).collect();
    top_k(reader, model, substrings, &far, 3);
    // Any k past the live count means all of them (a scan, whatever the strategy).
    let all = model.ranked(&far);
    let query = Code::from_bytes(&far).expect("query");
    for strategy in STRATEGIES {
        let search = reader.search(&query).expect("search").strategy(strategy);
        assert_eq!(search.top_k(usize::MAX).expect("top_k(MAX)"), all);
    }
}

/// Bucket probes of a multi-index search that probes substring j of m up to distance `depth(j, m)`.
fn probes(bits: u32, m: u32, depth: impl Fn(u32, u32) -> i64) -> f64 {
    let layout = CodeLayout::new(bits, m).expect("index layout");
    (0..m)
        .map(|j| {
            let width = layout.substring_width(j);
            let depth = depth(j, m).min(i64::from(width));
            (0..=depth).map(|s| binomial(width, s as u32)).sum::<f64>()
        })
        .sum()
}

fn binomial(n: u32, k: u32) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1))
}

fn strategies(affordable: bool) -> impl Iterator<Item = Strategy> {
    STRATEGIES
        .into_iter()
        .filter(move |&s| affordable || s != Strategy::MultiIndex)
}

fn top_k(reader: &Reader, model: &Model, substrings: u32, query: &[u8], k: u8) {
    let query_code = Code::from_bytes(query).expect("query");
    if k == 0 {
        for strategy in STRATEGIES {
            let search = reader
                .search(&query_code)
                .expect("search")
                .strategy(strategy);
            assert!(matches!(search.top_k(0), Err(Error::ZeroK)));
        }
        return;
    }
    let mut expected = model.ranked(query);
    expected.truncate(usize::from(k));
    // Tables are used only while k < len; they stop once every unseen code lies beyond the k-th
    // distance, that is at substring distance (k-th distance) / m.
    let kth = expected.last().map_or(0, |hit| hit.distance);
    let affordable = probes(model.bits, substrings, |_, m| i64::from(kth / m)) <= MAX_PROBES;
    for strategy in strategies(affordable) {
        let got = reader
            .search(&query_code)
            .expect("search")
            .strategy(strategy)
            .top_k(usize::from(k))
            .expect("top_k");
        assert_eq!(got, expected, "top_k({k}) with {strategy:?}");
    }
}

fn radius(reader: &Reader, model: &Model, substrings: u32, query: &[u8], r: u32) {
    let query_code = Code::from_bytes(query).expect("query");
    if r > model.bits {
        for strategy in STRATEGIES {
            let search = reader
                .search(&query_code)
                .expect("search")
                .strategy(strategy);
            assert!(matches!(
                search.within(r),
                Err(Error::RadiusTooLarge { radius, bits }) if radius == r && bits == model.bits
            ));
        }
        return;
    }
    let expected: Vec<Hit> = model
        .ranked(query)
        .into_iter()
        .filter(|hit| hit.distance <= r)
        .collect();
    // Pigeonhole: with r = q * m + a, the first a + 1 substrings are probed to q, the rest to q - 1.
    let depth = |j, m| i64::from(r / m) - i64::from(j > r % m);
    let needed = probes(model.bits, substrings, depth);
    let affordable = needed <= MAX_PROBES;
    if needed > FORCED_BUDGET_FLOOR {
        let forced = reader
            .search(&query_code)
            .expect("search")
            .strategy(Strategy::MultiIndex)
            .within(r);
        match forced {
            Err(Error::MultiIndexTooCostly { probes, budget, .. }) => {
                // The harness's binomials are floating-point products, milan's exact sums.
                let named = probes as f64;
                assert!(
                    (named - needed).abs() <= 1.0 + needed * 1e-9,
                    "within({r}): {named} probes named, {needed} needed"
                );
                assert!(probes > budget);
            }
            // Every code still in the scanned delta: the tables have nothing to probe.
            Ok(got) => assert_eq!(got, expected, "within({r}) with MultiIndex"),
            Err(err) => panic!("within({r}) with MultiIndex: {err}"),
        }
    }
    for strategy in strategies(affordable) {
        let got = reader
            .search(&query_code)
            .expect("search")
            .strategy(strategy)
            .within(r)
            .expect("within");
        assert_eq!(got, expected, "within({r}) with {strategy:?}");
    }
}

/// The self-join at `r` (at most the code length) equals the model's; one past the code length
/// is refused.
fn pairs_within(reader: &Reader, model: &Model, r: u32) {
    let got: Vec<Pair> = reader
        .pairs_within(r)
        .expect("pairs_within")
        .inspect(|batch| assert!(!batch.is_empty(), "an empty batch"))
        .flatten()
        .collect();
    assert_eq!(got, model.pairs_within(r), "pairs_within({r})");
    let too_large = model.bits + 1;
    assert!(matches!(
        reader.pairs_within(too_large).map(drop),
        Err(Error::RadiusTooLarge { radius, bits }) if radius == too_large && bits == model.bits
    ));
}

fn search_id(reader: &Reader, model: &Model, substrings: u32, id: u64, k: u8) {
    let Some(entry) = model.committed.get(&id) else {
        assert!(
            matches!(reader.search_id(id).map(drop), Err(Error::UnknownId { id: got }) if got == id)
        );
        return;
    };
    if k == 0 {
        assert!(matches!(
            reader.search_id(id).expect("search_id").top_k(0),
            Err(Error::ZeroK)
        ));
        return;
    }
    let mut expected = model.ranked(&entry.code);
    expected.truncate(usize::from(k));
    assert!(
        expected.iter().any(|hit| hit.id == id) || expected.iter().all(|hit| hit.distance == 0)
    );
    let kth = expected.last().map_or(0, |hit| hit.distance);
    let affordable = probes(model.bits, substrings, |_, m| i64::from(kth / m)) <= MAX_PROBES;
    for strategy in strategies(affordable) {
        let got = reader
            .search_id(id)
            .expect("search_id")
            .strategy(strategy)
            .top_k(usize::from(k))
            .expect("top_k");
        assert_eq!(
            got, expected,
            "search_id({id}).top_k({k}) with {strategy:?}"
        );
    }
}
