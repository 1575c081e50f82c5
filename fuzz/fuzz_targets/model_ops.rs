//! `model_ops`: the engine answers exactly like a brute-force model, whatever it is asked to do,
//! through either of two handles on one index.
//!
//! A random sequence of adds, deletes, commits, aborts, reopens, read-only opens, optimizes and
//! queries runs against a real index in a temporary directory and against a model (the committed
//! codes by id, plus the open writer's pending changes). Two handles share the index directory, as
//! two processes would: the first, created by the target, and a second opened beside it (writable
//! or read-only, with a lock timeout of 0 to 3 ms); most ops act through the first, the `Second*`
//! ops through the second, and either handle may hold the one writer. Asserts that:
//! - every top-k, radius and search-by-id answer (ids and distances, by distance then id) equals
//!   the model's brute-force answer, with each of the three strategies;
//! - every self-join (`pairs_within`) equals the model's brute-force one: each pair of live codes
//!   within the radius once, `a < b`, by `a` then `b`;
//! - after commit, abort, reopen and optimize, `len()`, the live ids, their codes and items, and
//!   the content-hash and key lookups equal the model; ids are dense and never reused; a reader
//!   opened before a commit keeps its snapshot;
//! - upserts and deletes by key (through either handle's writer) replace and delete exactly the
//!   items the model holds under the key, counting the writer's own pending adds and deletes,
//!   which the writer's key lookup shows before the commit;
//! - invalid arguments (k = 0, radius > bits in searches and self-joins, substrings out of range,
//!   codes of another length to add or upsert, writes through a read-only handle, a second
//!   writer or an optimize on the thread holding the writer) return their typed error, and a
//!   third writable handle opens beside the two and agrees with the model;
//! - a k beyond the live count (up to `usize::MAX`) returns every code; a forced multi-index
//!   radius search far beyond its probe budget is refused with `MultiIndexTooCostly` (or, with
//!   every code still in the scanned delta, answered).
//!
//! Across the two handles:
//! - whatever one handle commits (adds, deletes, an optimize's new tables, a reopen's), the
//!   other's next `len()`, `info()` and readers show that latest commit and nothing of a writer
//!   still open: every answer of the second handle's readers equals the model's;
//! - adds and deletes through the second handle's writer hand out the same dense ids the model
//!   does, whichever handle wrote last;
//! - while one handle holds the writer, the other's `writer()`, `try_writer()` and `optimize`,
//!   and a writable open of a third handle, fail with `LockTimeout` after exactly their handle's
//!   timeout, naming this process as the holder; a read-only open beside the writer does not
//!   wait and sees the last commit;
//! - a reader taken from either handle and kept (up to four at once, across later commits,
//!   optimizes and reopens of both handles) answers exactly as the model's commit at the time it
//!   was taken: its ids, codes, items, content-hash lookups, searches and self-join, with every
//!   id handed out later dead.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use milan::{CodeError, SearchError, WriteError};
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
/// Each expected `LockTimeout` costs its timeout; past this many per input they are not tried.
const MAX_WAITS: usize = 16;
/// The first handle's lock timeout (the second's comes from the input).
const FIRST_TIMEOUT: Duration = Duration::from_millis(1);
/// Readers kept across later ops at once.
const MAX_KEPT: usize = 4;

#[derive(Arbitrary, Debug)]
struct Input {
    bits: u8,
    substrings: Option<u8>,
    /// The second handle's lock timeout in milliseconds, modulo 4.
    timeout: u8,
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
    /// An add through the second handle's writer.
    SecondAdd {
        code: CodeSpec,
        key: Option<u8>,
    },
    SecondDelete {
        which: u16,
    },
    SecondCommit,
    SecondAbort,
    /// The whole committed state as the second handle sees it.
    SecondCheck,
    SecondOptimize {
        substrings: Option<u8>,
    },
    /// Closes the second handle and opens it again, writable or read-only, with a new timeout.
    SecondReopen {
        read_only: bool,
        timeout: u8,
    },
    /// Keeps a new reader of either handle for later checks.
    KeepReader {
        second: bool,
    },
    CheckKept {
        which: u8,
        query: CodeSpec,
        k: u8,
    },
    DropKept {
        which: u8,
    },
    /// Replaces every item of `key` (of either handle's writer) with a new one.
    Upsert {
        code: CodeSpec,
        key: u8,
        second: bool,
    },
    /// Deletes every item of `key` (of either handle's writer).
    DeleteKey {
        key: u8,
        second: bool,
    },
    /// Searches through a new reader of the second handle. Last: a run of 0xff bytes (which
    /// mutations often make) decodes as this op, a cheap one that checks something.
    SecondQuery {
        query: CodeSpec,
        k: u8,
        r: u8,
        which: u16,
    },
}

fuzz_target!(|input: Input| run(input));

#[derive(Clone, Debug)]
struct Entry {
    code: Vec<u8>,
    key: Option<u8>,
}

/// The item key of model key `k`.
fn key_name(k: u8) -> String {
    format!("key-{k}")
}

impl Entry {
    fn item(&self) -> Item {
        Item {
            key: self.key.map(key_name),
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
    /// Harness bookkeeping: lock timeouts waited for so far (see `MAX_WAITS`).
    waits: usize,
}

impl Model {
    fn new(bits: u32) -> Model {
        Model {
            bits,
            committed: BTreeMap::new(),
            next_id: 0,
            pending: None,
            history: Vec::new(),
            rebuilds: 0,
            waits: 0,
        }
    }

    /// The last commit alone: what a reader taken now answers, whatever is committed later.
    fn snapshot(&self) -> Model {
        Model {
            committed: self.committed.clone(),
            next_id: self.next_id,
            ..Model::new(self.bits)
        }
    }

    /// Whether one more lock timeout may be waited for (counted).
    fn wait(&mut self) -> bool {
        self.waits += 1;
        self.waits <= MAX_WAITS
    }

    /// The next id a writer will hand out.
    fn next_unused(&self) -> u64 {
        self.pending.as_ref().map_or(self.next_id, |p| p.next_id)
    }

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

    /// The live ids stored under `key` once the open writer (if any) commits, increasing.
    fn ids_with_key(&self, key: u8) -> Vec<u64> {
        let deletes = self.pending.as_ref().map(|p| &p.deletes);
        let mut ids: Vec<u64> = self
            .committed
            .iter()
            .filter(|(id, e)| e.key == Some(key) && !deletes.is_some_and(|d| d.contains(id)))
            .map(|(&id, _)| id)
            .collect();
        if let Some(pending) = &self.pending {
            // Pending ids are all past the committed ones: the order holds.
            ids.extend(
                pending
                    .adds
                    .iter()
                    .filter(|(_, e)| e.key == Some(key))
                    .map(|(&id, _)| id),
            );
        }
        ids
    }

    /// Deletes every item of `key`; returns their ids.
    fn delete_key(&mut self, key: u8) -> Vec<u64> {
        let ids = self.ids_with_key(key);
        for &id in &ids {
            assert!(self.delete(id));
        }
        ids
    }

    /// Adds `entry` (which has a key) in place of every item of its key: its id and theirs.
    fn upsert(&mut self, entry: Entry) -> (u64, Vec<u64>) {
        let key = entry.key.expect("an upsert has a key");
        let replaced = self.ids_with_key(key);
        let id = self.add(entry);
        for &old in &replaced {
            assert!(self.delete(old));
        }
        (id, replaced)
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
        u64::from(which) % (self.next_unused() + 1)
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

/// An open handle and how its writes wait.
struct Handle {
    index: Index,
    timeout: Duration,
    read_only: bool,
}

impl Handle {
    /// The first handle, opened again: writable, with the first handle's timeout.
    fn first(dir: &Path, bits: u32) -> Handle {
        let index = Index::builder(bits)
            .lock_timeout(FIRST_TIMEOUT)
            .open(dir)
            .expect("reopen");
        Handle {
            index,
            timeout: FIRST_TIMEOUT,
            read_only: false,
        }
    }

    /// The second handle, opened beside the first with a timeout of 0 to 3 ms.
    fn second(dir: &Path, bits: u32, timeout: u8, read_only: bool) -> Handle {
        let timeout = Duration::from_millis(u64::from(timeout % 4));
        let builder = Index::builder(bits).lock_timeout(timeout);
        let index = if read_only {
            builder
                .open_read_only(dir)
                .expect("second handle, read-only")
        } else {
            builder.open(dir).expect("second handle")
        };
        Handle {
            index,
            timeout,
            read_only,
        }
    }
}

/// A reader kept across later ops, with the commit it was taken on and that commit's substrings.
struct Kept {
    reader: Reader,
    commit: Model,
    substrings: u32,
}

fn run(input: Input) {
    let bits = BITS[usize::from(input.bits) % BITS.len()];
    let tmp = scratch_dir();
    let dir = tmp.path().join("index");
    let mut first = Handle {
        index: create(bits, input.substrings, &dir),
        timeout: FIRST_TIMEOUT,
        read_only: false,
    };
    let mut second = Handle::second(&dir, bits, input.timeout, false);
    let mut model = Model::new(bits);
    let mut kept: Vec<Kept> = Vec::new();
    let mut ops = input.ops.iter().take(MAX_OPS);
    // A session runs ops on the two open handles until one needs a handle closed.
    while let Some(op) = session(&first, &second, &mut model, &mut kept, &mut ops) {
        // The session's writer is gone, and its changes with it.
        model.abort();
        match op {
            Op::Reopen => {
                // Handles share the index: a third writable one opens beside the two and agrees.
                let third = Index::open(&dir).expect("a third writable handle");
                check_state(&third, &model);
                drop(third);
                drop(first);
                first = Handle::first(&dir, bits);
                check_state(&first.index, &model);
                let report = first.index.verify().expect("verify");
                assert!(report.is_ok(), "verify after reopen: {report:?}");
                check_len(&second.index, &model);
            }
            Op::OpenReadOnlyAndQuery { query, k } => {
                drop(first);
                let read_only = Index::open_read_only(&dir).expect("open read-only");
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
                assert!(matches!(read_only.writer(), Err(Error::Write(WriteError::ReadOnly { .. }))));
                assert!(matches!(
                    read_only.optimize(None),
                    Err(Error::Write(WriteError::ReadOnly { .. }))
                ));
                let report = read_only.verify().expect("verify read-only");
                assert!(report.is_ok() && report.storage_ok.is_none(), "{report:?}");
                drop(read_only);
                first = Handle::first(&dir, bits);
                check_state(&first.index, &model);
            }
            Op::SecondReopen { read_only, timeout } => {
                drop(second);
                second = Handle::second(&dir, bits, *timeout, *read_only);
                check_state(&second.index, &model);
            }
            other => unreachable!("session returned {other:?}"),
        }
        check_kept(&kept, &model);
    }
    // Every reader still kept answers as its commit, after whatever came later.
    for kept in &kept {
        check_reader(&kept.reader, &kept.commit, kept.substrings, &model);
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
        let result = Index::builder(bits)
            .substrings(substrings)
            .lock_timeout(FIRST_TIMEOUT)
            .create(dir);
        let (min, max) = CodeLayout::substring_range(bits);
        if (min..=max).contains(&substrings) {
            let index = result.expect("create");
            assert_eq!(index.substrings(), substrings);
            return index;
        }
        assert!(
            matches!(result, Err(Error::Code(CodeError::Layout(LayoutError::Substrings { .. })))),
            "{substrings} substrings for {bits} bits: {result:?}"
        );
    }
    let index = Index::builder(bits)
        .lock_timeout(FIRST_TIMEOUT)
        .create(dir)
        .expect("create");
    assert_eq!((index.bits(), index.len()), (bits, 0));
    index
}

/// Runs ops on the two handles until they run out (None) or one needs a handle dropped
/// (returned). At most one of the two writers is open at a time.
fn session<'a, 'b, 'o>(
    first: &'a Handle,
    second: &'b Handle,
    model: &mut Model,
    kept: &mut Vec<Kept>,
    ops: &mut impl Iterator<Item = &'o Op>,
) -> Option<&'o Op> {
    let index = &first.index;
    let other = &second.index;
    let mut writer: Option<Writer<'a>> = None;
    let mut second_writer: Option<Writer<'b>> = None;
    for op in ops {
        match op {
            Op::Add { code, key } => {
                if model.history.len() < MAX_CODES {
                    let entry = Entry {
                        code: model.code(code),
                        key: *key,
                    };
                    let busy = second_writer.is_some();
                    if let Some(writer) = take_writer(&mut writer, first, busy, model) {
                        add(writer, model, entry);
                    }
                }
            }
            Op::AddBatch { seed, count, near } => {
                let busy = second_writer.is_some();
                let Some(writer) = take_writer(&mut writer, first, busy, model) else {
                    continue;
                };
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
                let busy = second_writer.is_some();
                if let Some(writer) = take_writer(&mut writer, first, busy, model) {
                    delete(writer, model, id);
                }
            }
            Op::Commit => {
                if take_writer(&mut writer, first, second_writer.is_some(), model).is_some() {
                    let writer = writer.take().expect("the writer just taken");
                    commit(writer, index, other, model, kept);
                }
            }
            Op::Abort => {
                if let Some(writer) = writer.take() {
                    writer.abort();
                    model.abort();
                }
                check_state(index, model);
            }
            Op::Reopen | Op::OpenReadOnlyAndQuery { .. } | Op::SecondReopen { .. } => {
                if model.rebuilds < MAX_REBUILDS {
                    model.rebuilds += 1;
                    if writer.is_some() || second_writer.is_some() {
                        opens_beside_writer(op, first, model);
                    }
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
                    matches!(result, Err(Error::Code(CodeError::CodeLength { expected, got }))
                        if expected == model.bits && got as usize == len * 8)
                };
                let reader = index.reader().expect("reader");
                assert!(wrong_length(reader.search(&code).map(drop)));
                // Refused without handing out an id: the next add checks that ids stay dense.
                // A refused upsert deletes nothing of its key either (the model checks that at
                // the commit).
                let keyed = Item {
                    key: Some(key_name(0)),
                    ..Item::default()
                };
                if let Some(writer) = writer.as_mut() {
                    assert!(wrong_length(writer.add(&code, Item::default()).map(drop)));
                    assert!(wrong_length(writer.upsert(&code, keyed.clone()).map(drop)));
                }
                if let Some(writer) = second_writer.as_mut() {
                    assert!(wrong_length(writer.add(&code, Item::default()).map(drop)));
                    assert!(wrong_length(writer.upsert(&code, keyed).map(drop)));
                }
            }
            Op::Optimize { substrings } => {
                if model.rebuilds >= MAX_REBUILDS {
                    continue;
                }
                model.rebuilds += 1;
                let substrings = substrings.map(u32::from);
                // Optimize takes the writer lock: on the thread holding it, a typed error (not
                // a deadlock), the same as a second writer; then close it, as a user must.
                if writer.is_some() {
                    let busy =
                        |result: Result<(), Error>| matches!(result, Err(Error::Write(WriteError::WriterBusy { .. })));
                    assert!(busy(index.optimize(substrings).map(drop)));
                    assert!(busy(index.writer().map(drop)));
                    assert!(busy(index.try_writer().map(drop)));
                }
                // While the other handle writes, it waits for the turn and gives up.
                if second_writer.is_some() && model.wait() {
                    assert_timed_out(index.optimize(substrings).map(drop), first);
                }
                drop(writer.take());
                drop(second_writer.take());
                model.abort();
                optimize(index, model, substrings);
                // The other handle reloads the new tables at its next transaction.
                check_len(other, model);
                assert_eq!(other.substrings(), index.substrings());
                check_kept(kept, model);
            }
            Op::SecondAdd { code, key } => {
                if model.history.len() < MAX_CODES {
                    let entry = Entry {
                        code: model.code(code),
                        key: *key,
                    };
                    let busy = writer.is_some();
                    if let Some(writer) = take_writer(&mut second_writer, second, busy, model) {
                        add(writer, model, entry);
                    }
                }
            }
            Op::SecondDelete { which } => {
                let id = model.pick_id(*which);
                let busy = writer.is_some();
                if let Some(writer) = take_writer(&mut second_writer, second, busy, model) {
                    delete(writer, model, id);
                }
            }
            Op::SecondCommit => {
                if take_writer(&mut second_writer, second, writer.is_some(), model).is_some() {
                    let writer = second_writer.take().expect("the writer just taken");
                    commit(writer, other, index, model, kept);
                }
            }
            Op::SecondAbort => {
                if let Some(writer) = second_writer.take() {
                    writer.abort();
                    model.abort();
                }
                check_len(other, model);
            }
            Op::Upsert {
                code,
                key,
                second: on_second,
            } => {
                if model.history.len() < MAX_CODES {
                    let entry = Entry {
                        code: model.code(code),
                        key: Some(*key),
                    };
                    if *on_second {
                        let busy = writer.is_some();
                        if let Some(writer) = take_writer(&mut second_writer, second, busy, model) {
                            upsert(writer, model, entry);
                        }
                    } else {
                        let busy = second_writer.is_some();
                        if let Some(writer) = take_writer(&mut writer, first, busy, model) {
                            upsert(writer, model, entry);
                        }
                    }
                }
            }
            Op::DeleteKey {
                key,
                second: on_second,
            } => {
                if *on_second {
                    let busy = writer.is_some();
                    if let Some(writer) = take_writer(&mut second_writer, second, busy, model) {
                        delete_key(writer, model, *key);
                    }
                } else {
                    let busy = second_writer.is_some();
                    if let Some(writer) = take_writer(&mut writer, first, busy, model) {
                        delete_key(writer, model, *key);
                    }
                }
            }
            Op::SecondQuery { query, k, r, which } => {
                // A new reader catches up with the last commit, whichever handle made it.
                check_len(other, model);
                let reader = other.reader().expect("reader");
                assert_eq!(reader.len(), model.committed.len() as u64);
                let substrings = other.substrings();
                let query = model.code(query);
                top_k(&reader, model, substrings, &query, *k);
                radius(&reader, model, substrings, &query, u32::from(*r));
                search_id(&reader, model, substrings, model.pick_id(*which), *k);
            }
            Op::SecondCheck => check_state(other, model),
            Op::SecondOptimize { substrings } => {
                if model.rebuilds >= MAX_REBUILDS {
                    continue;
                }
                model.rebuilds += 1;
                let substrings = substrings.map(u32::from);
                if second.read_only {
                    assert!(matches!(
                        other.optimize(substrings),
                        Err(Error::Write(WriteError::ReadOnly { .. }))
                    ));
                    continue;
                }
                if second_writer.is_some() {
                    assert!(matches!(
                        other.optimize(substrings),
                        Err(Error::Write(WriteError::WriterBusy { .. }))
                    ));
                }
                if writer.is_some() && model.wait() {
                    assert_timed_out(other.optimize(substrings).map(drop), second);
                }
                drop(writer.take());
                drop(second_writer.take());
                model.abort();
                optimize(other, model, substrings);
                // The first handle reloads the new tables at its next transaction.
                check_state(index, model);
                assert_eq!(index.substrings(), other.substrings());
                check_kept(kept, model);
            }
            Op::KeepReader {
                second: from_second,
            } => {
                if kept.len() < MAX_KEPT {
                    let handle = if *from_second { other } else { index };
                    let reader = handle.reader().expect("reader");
                    assert_eq!(reader.len(), model.committed.len() as u64);
                    kept.push(Kept {
                        reader,
                        commit: model.snapshot(),
                        substrings: handle.substrings(),
                    });
                }
            }
            Op::CheckKept { which, query, k } => {
                if let Some(kept) = kept.get(usize::from(*which) % kept.len().max(1)) {
                    let (reader, commit) = (&kept.reader, &kept.commit);
                    check_reader(reader, commit, kept.substrings, model);
                    top_k(reader, commit, kept.substrings, &model.code(query), *k);
                }
            }
            Op::DropKept { which } => {
                if !kept.is_empty() {
                    kept.remove(usize::from(*which) % kept.len());
                }
            }
        }
    }
    None
}

/// Before a reopen while either handle holds the writer: a writable open takes the writer's turn
/// and gives up after its timeout; a read-only open does not wait and sees the last commit.
fn opens_beside_writer(op: &Op, first: &Handle, model: &mut Model) {
    let dir = first.index.path();
    let builder = Index::builder(model.bits).lock_timeout(first.timeout);
    if let Op::OpenReadOnlyAndQuery { .. } = op {
        let read_only = builder
            .open_read_only(dir)
            .expect("a read-only open beside a writer");
        check_state(&read_only, model);
    } else if model.wait() {
        assert_timed_out(builder.open(dir).map(drop), first);
    }
}

/// The handle's writer, begun if need be; `None` when it cannot begin: the handle is read-only,
/// or the other handle holds the writer (`other_writing`), when the attempt must time out.
fn take_writer<'w, 'i>(
    slot: &'w mut Option<Writer<'i>>,
    handle: &'i Handle,
    other_writing: bool,
    model: &mut Model,
) -> Option<&'w mut Writer<'i>> {
    if slot.is_none() {
        if handle.read_only {
            assert!(matches!(handle.index.writer(), Err(Error::Write(WriteError::ReadOnly { .. }))));
            return None;
        }
        if other_writing {
            if model.wait() {
                // `try_writer` only declines to wait for this handle's own writer (on another
                // thread): it waits for the other handle's turn like `writer`.
                let result = if model.waits.is_multiple_of(2) {
                    handle.index.writer().map(drop)
                } else {
                    handle.index.try_writer().map(drop)
                };
                assert_timed_out(result, handle);
            }
            return None;
        }
        *slot = Some(begin(&handle.index));
    }
    slot.as_mut()
}

/// A write of `handle` gave up waiting for the other handle's writer: after exactly its timeout,
/// naming this process as the holder.
fn assert_timed_out(result: Result<(), Error>, handle: &Handle) {
    let me = format!("process {} ", std::process::id());
    match result {
        Err(Error::Write(WriteError::LockTimeout {
            path,
            waited,
            holder,
        })) => {
            assert_eq!(path, handle.index.path());
            assert_eq!(waited, handle.timeout);
            assert!(
                holder.as_ref().is_some_and(|h| h.starts_with(&me)),
                "holder {holder:?}"
            );
        }
        other => panic!("a write beside another handle's writer: {other:?}"),
    }
}

/// Commits `writer` of `index`. Readers of both handles taken before keep their snapshot (one is
/// kept for later checks while there is room); both handles show the commit after (`other`
/// catching up with it).
fn commit(
    writer: Writer<'_>,
    index: &Index,
    other: &Index,
    model: &mut Model,
    kept: &mut Vec<Kept>,
) {
    let before = [
        (index.reader().expect("reader"), index.substrings()),
        (other.reader().expect("reader"), other.substrings()),
    ];
    let snapshot = model.snapshot();
    writer.commit().expect("commit");
    model.commit();
    // A reader keeps the snapshot it was opened on.
    for (reader, _) in &before {
        assert!(reader.ids().eq(snapshot.committed.keys().copied()));
        assert_eq!(reader.len(), snapshot.committed.len() as u64);
    }
    check_len(other, model);
    check_state(index, model);
    if kept.len() < MAX_KEPT && !snapshot.committed.is_empty() {
        // Alternately the committing handle's reader and the other's.
        let [first, second] = before;
        let (reader, substrings) = if kept.len().is_multiple_of(2) {
            first
        } else {
            second
        };
        kept.push(Kept {
            reader,
            commit: snapshot,
            substrings,
        });
    }
    check_kept(kept, model);
}

/// Every kept reader still answers as the commit it was taken on, after whatever came since
/// (`now`): a quick look at what changed since (the full check is `check_reader`). Ids deleted
/// since are there with their code and item, ids handed out since are not; a top-k around its
/// first code equals its commit's.
fn check_kept(kept: &[Kept], now: &Model) {
    for Kept {
        reader,
        commit,
        substrings,
    } in kept
    {
        assert_eq!(reader.len(), commit.committed.len() as u64, "a kept reader");
        assert!(
            reader.ids().eq(commit.committed.keys().copied()),
            "a kept reader's ids"
        );
        for (&id, entry) in &commit.committed {
            if !now.committed.contains_key(&id) {
                assert_eq!(reader.code(id).expect("live code").as_bytes(), entry.code);
                assert_eq!(
                    reader.item(id).expect("item"),
                    Some(entry.item()),
                    "item {id}"
                );
            }
        }
        for id in commit.next_id..now.next_unused() {
            assert!(
                !reader.contains(id) && reader.code(id).is_none(),
                "id {id} is dead"
            );
            assert_eq!(
                reader.item(id).expect("item"),
                None,
                "item of later id {id}"
            );
        }
        if let Some(entry) = commit.committed.values().next() {
            top_k(reader, commit, *substrings, &entry.code, 4);
        }
    }
}

/// The handle's `len()` and `info()` are the last commit's, whichever handle made it.
fn check_len(index: &Index, model: &Model) {
    assert_eq!(index.len(), model.committed.len() as u64, "len()");
    let info = index.info();
    assert_eq!(
        (info.len, info.next_id),
        (model.committed.len() as u64, model.next_id),
        "info()"
    );
}

fn begin(index: &Index) -> Writer<'_> {
    index.writer().expect("writer")
}

fn add(writer: &mut Writer<'_>, model: &mut Model, entry: Entry) {
    let code = Code::from_bytes(&entry.code).expect("code of the index's length");
    let id = writer.add(&code, entry.item()).expect("add");
    assert_eq!(id, model.add(entry), "ids are dense and never reused");
}

/// An upsert: the same new id as the model's, the same replaced ids, and the writer's key
/// lookup then lists the new id alone.
fn upsert(writer: &mut Writer<'_>, model: &mut Model, entry: Entry) {
    let code = Code::from_bytes(&entry.code).expect("code of the index's length");
    let name = key_name(entry.key.expect("an upsert has a key"));
    let upserted = writer.upsert(&code, entry.item()).expect("upsert");
    let (id, replaced) = model.upsert(entry);
    assert_eq!(upserted.id, id, "ids are dense and never reused");
    assert_eq!(upserted.replaced, replaced, "upsert of {name}");
    assert_eq!(writer.ids_with_key(&name).expect("key lookup"), [id]);
}

/// A delete by key: the same ids as the model's, and none left under the key.
fn delete_key(writer: &mut Writer<'_>, model: &mut Model, key: u8) {
    let name = key_name(key);
    let deleted = writer.delete_key(&name).expect("delete_key");
    assert_eq!(deleted, model.delete_key(key), "delete_key({name})");
    assert!(writer.ids_with_key(&name).expect("key lookup").is_empty());
}

fn delete(writer: &mut Writer<'_>, model: &mut Model, id: u64) {
    let deleted = writer.delete(id).expect("delete");
    assert_eq!(deleted, model.delete(id), "delete({id})");
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
                Err(Error::Code(CodeError::Layout(LayoutError::Substrings { .. })))
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

/// The committed state as the handle's readers see it equals the model's.
fn check_state(index: &Index, model: &Model) {
    assert_eq!(index.len(), model.committed.len() as u64);
    assert_eq!(index.bits(), model.bits);
    assert_eq!(index.info().next_id, model.next_id);
    let reader = index.reader().expect("reader");
    check_reader(&reader, model, index.substrings(), model);
}

/// The reader answers as the model's committed state (`substrings`: its index's then). For a
/// reader kept from an earlier commit (`model`), what the current model (`now`) has handed out or
/// stored since is not there: later ids are dead, later content hashes unknown.
fn check_reader(reader: &Reader, model: &Model, substrings: u32, now: &Model) {
    assert_eq!(reader.len(), model.committed.len() as u64);
    assert_eq!(reader.bits(), model.bits);
    let ids: Vec<u64> = reader.ids().collect();
    assert_eq!(ids, model.committed.keys().copied().collect::<Vec<_>>());
    for id in 0..=now.next_unused().max(model.next_id) {
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
        .chain(now.committed.values())
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
    // Every key either commit used, and keys of items deleted since.
    let keys: BTreeSet<u8> = model
        .committed
        .values()
        .chain(now.committed.values())
        .filter_map(|e| e.key)
        .collect();
    for key in keys {
        let expected: Vec<u64> = model
            .committed
            .iter()
            .filter(|(_, e)| e.key == Some(key))
            .map(|(&id, _)| id)
            .collect();
        assert_eq!(
            reader.ids_with_key(&key_name(key)).expect("key lookup"),
            expected,
            "key {key}"
        );
    }
    spot_check(reader, model, substrings);
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
            assert!(matches!(search.top_k(0), Err(Error::Search(SearchError::ZeroK))));
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
                Err(Error::Search(SearchError::RadiusTooLarge { radius, bits })) if radius == r && bits == model.bits
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
            Err(Error::Search(SearchError::MultiIndexTooCostly { probes, budget, .. })) => {
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
        Err(Error::Search(SearchError::RadiusTooLarge { radius, bits })) if radius == too_large && bits == model.bits
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
            Err(Error::Search(SearchError::ZeroK))
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
