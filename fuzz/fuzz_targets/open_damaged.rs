//! `open_damaged`: opening a damaged index file gives an error, never a crash.
//!
//! A small valid index is built once per process, so that every structure of the current format is
//! present to be damaged: 64-bit codes in three sparse hash tables (22, 21 and 21 bits: keys,
//! offsets and entries arrays) stored with their `tables` record over the first 8,030 ids, in two
//! code blocks (a full one of `block_ids(8)` = 7,936 ids and a short last one); then a commit past
//! the tables (a delta that opens scan) with deletes in both blocks (table entries naming deleted
//! ids); item records for some ids only (the rest have the empty item), content hashes and import
//! progress. Each input damages a copy of its database file (byte overwrites plus an optional
//! truncation), or is itself the whole file. Asserts that `Index::open` and `Index::open_read_only`
//! return Ok or Err without panicking or hanging, and that an index that opens anyway can be
//! searched (including with k = `usize::MAX`), read (items, import progress), written (with import
//! progress, which creates the imports table in the damaged file) and verified, again with Ok or
//! Err results only.
//!
//! "Without panicking" means no panic reaches the caller: milan catches the storage engine's
//! panics on damaged pages and returns `Error::Corrupted`, which is allowed. libFuzzer's default
//! hook would abort on those caught panics too, so this target installs its own (see
//! `record_panics`); set `MILAN_FUZZ_ABORT_ON_ANY_PANIC=1` to get the default back and see them.
//!
//! Input layout: byte 0 is the mode; the rest is the file (mode % 16 == 0) or, otherwise, an
//! optional truncation length (u32 LE, when mode & 0x10) followed by 5-byte overwrites (u32 LE
//! offset, byte). Mode & 0x20 also runs a small write transaction on the opened index.

#![no_main]

use std::backtrace::Backtrace;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use milan::{Code, ImportProgress, Index, Item, Strategy};
use milan_index_format::{block_ids, DATABASE_FILE};

/// Granularity at which the base file is split into used (non-zero) and unused regions.
const PAGE: usize = 4096;
/// Most overwrites applied per input: enough to break several structures at once.
const MAX_WRITES: usize = 64;
const STRATEGIES: [Strategy; 3] = [Strategy::Auto, Strategy::MultiIndex, Strategy::Scan];
/// The import source whose progress the base records and the write step updates and reads back.
const IMPORT_SOURCE: [u8; 32] = [0x5a; 32];
/// Ids filed in the base's stored hash tables: a little more than one code block of 64-bit codes
/// holds (`block_ids(8)` = 7,936), so that the second block is short.
const BASE_TABLE_IDS: u64 = 7936 + 94;

struct Base {
    /// The database file of the valid index.
    bytes: Vec<u8>,
    /// Start offsets of its pages that hold anything but zeros: overwrites land there, where
    /// redb and the decoders look, instead of in preallocated empty space.
    used_pages: Vec<usize>,
}

static BASE: LazyLock<Base> = LazyLock::new(build_base);

/// The last panic, in whichever thread it happened: where, and the stack.
static LAST_PANIC: Mutex<Option<(String, Backtrace)>> = Mutex::new(None);

fuzz_target!(init: record_panics(), |data: &[u8]| {
    let base = &*BASE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode % 16 == 0 {
        rest.to_vec()
    } else {
        damage(base, mode, rest)
    };
    // A fresh directory per input (cheap on tmpfs), removed when done.
    let scratch = scratch_dir();
    let escaped = catch_unwind(AssertUnwindSafe(|| exercise(scratch.path(), &file, mode & 0x20 != 0)));
    if escaped.is_err() {
        let last = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (what, stack) = last.expect("a panic went through the hook");
        eprintln!("a panic escaped milan's API: {what}\n{stack}");
        std::process::abort();
    }
});

/// Replaces libFuzzer's abort-on-every-panic hook with one that records the panic, so that panics
/// the library catches pass and one that escapes is reported, by the target, with its stack.
fn record_panics() {
    if std::env::var_os("MILAN_FUZZ_ABORT_ON_ANY_PANIC").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let last = (info.to_string(), Backtrace::force_capture());
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
    }));
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

/// A deterministic generator, so that every process builds the same base file and reproducers
/// stay valid.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn build_base() -> Base {
    let block = block_ids(8) as u64;
    assert!(
        (block + 1..2 * block).contains(&BASE_TABLE_IDS),
        "the base must span two code blocks, the last one short"
    );
    let build = scratch_dir();
    let dir = build.path().join("base");
    let index = Index::builder(64)
        .substrings(3)
        .create(&dir)
        .expect("create base index");
    // Clustered codes, so that searches of the opened index find neighbours at small distances.
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let centres: Vec<u64> = (0..8).map(|_| xorshift(&mut state)).collect();
    let next_code = |state: &mut u64| {
        let centre = centres[(xorshift(state) % 8) as usize];
        let flips = xorshift(state) & xorshift(state) & xorshift(state);
        Code::from_bytes(&(centre ^ flips).to_be_bytes()).expect("8-byte code")
    };
    // Round 0 fills one code block and starts a second; round 1 stays in the delta.
    for (round, count) in [(0u64, BASE_TABLE_IDS), (1, 40)] {
        let mut writer = index.writer().expect("writer");
        for i in 0..count {
            // Most items are empty (no record stored); the others vary in which fields they hold.
            let item = Item {
                key: (i % 4 == 0).then(|| format!("img-{round}-{i}.png")),
                content_hash: (i % 12 == 0).then_some([(i % 7) as u8; 32]),
                label: (i % 20 == 0).then(|| "cat".to_string()),
                metadata: (i % 44 == 0).then(|| vec![round as u8; 4]),
            };
            writer.add(&next_code(&mut state), item).expect("add");
        }
        if round == 1 {
            for id in (0..80).step_by(13).chain([block + 4, BASE_TABLE_IDS - 1]) {
                assert!(writer.delete(id).expect("delete"));
            }
            writer.set_import_progress(ImportProgress {
                source: IMPORT_SOURCE,
                rows: 100,
                committed: count,
                first_id: Some(BASE_TABLE_IDS),
            });
        }
        writer.commit().expect("commit");
        if round == 0 {
            // Stores the hash tables and their record over every id so far.
            index.optimize(Some(3)).expect("optimize");
        }
    }
    // Pages freed by the rewrites go back, so that overwrites land on what an open reads.
    let mut index = index;
    index.compact().expect("compact");
    drop(index);
    let bytes = std::fs::read(dir.join(DATABASE_FILE)).expect("read base file");
    let used_pages: Vec<usize> = (0..bytes.len())
        .step_by(PAGE)
        .filter(|&at| {
            bytes[at..(at + PAGE).min(bytes.len())]
                .iter()
                .any(|&b| b != 0)
        })
        .collect();
    Base { bytes, used_pages }
}

/// The base file with the input's truncation and overwrites applied.
fn damage(base: &Base, mode: u8, mut rest: &[u8]) -> Vec<u8> {
    let mut file = base.bytes.clone();
    let mut truncate = None;
    if mode & 0x10 != 0 {
        if let Some((len, tail)) = rest.split_first_chunk::<4>() {
            truncate = Some(u32::from_le_bytes(*len) as usize % (file.len() + 1));
            rest = tail;
        }
    }
    let span = base.used_pages.len() * PAGE;
    for write in rest.chunks_exact(5).take(MAX_WRITES) {
        let offset = u32::from_le_bytes([write[0], write[1], write[2], write[3]]) as usize % span;
        let at = base.used_pages[offset / PAGE] + offset % PAGE;
        if let Some(byte) = file.get_mut(at) {
            *byte = write[4];
        }
    }
    if let Some(len) = truncate {
        file.truncate(len);
    }
    file
}

fn exercise(dir: &Path, file: &[u8], write: bool) {
    let db = dir.join(DATABASE_FILE);
    std::fs::write(&db, file).expect("write damaged file");
    if let Ok(mut index) = Index::open(dir) {
        use_index(&index, write);
        // Writable handles also run redb's integrity check.
        let _ = index.verify();
    }
    // The writable open may have repaired or rewritten the file: damage it afresh.
    std::fs::write(&db, file).expect("write damaged file");
    if let Ok(index) = Index::open_read_only(dir) {
        // No verify here: its table walk is the writable one's, and it would double the time.
        use_index(&index, write);
    }
}

/// Everything a user may do with an opened index; each call may fail, none may panic.
fn use_index(index: &Index, write: bool) {
    let _ = index.info();
    let bits = index.bits();
    if let Ok(reader) = index.reader() {
        let ids: Vec<u64> = reader.ids().take(4).collect();
        for &id in &ids {
            let _ = reader.code(id);
            let _ = reader.item(id);
            // A stored code as the query: its neighbours are close, so multi-index search is cheap.
            for strategy in STRATEGIES {
                if let Ok(search) = reader.search_id(id) {
                    let search = search.strategy(strategy);
                    let _ = (search.top_k(5), search.within(4));
                }
            }
        }
        let _ = reader.search_id(u64::MAX);
        let _ = reader.ids_with_content_hash(&[0; 32]);
        if let Ok(query) = Code::from_fn(bits, |i| i % 3 == 0) {
            if let Ok(search) = reader.search(&query) {
                let _ = (search.top_k(2), search.within(2), search.top_k(usize::MAX));
            }
        }
    }
    let _ = index.import_progress(&IMPORT_SOURCE);
    if write {
        if let Ok(Some(mut writer)) = index.try_writer() {
            let code = Code::from_fn(bits, |i| i % 2 == 0);
            let added = code
                .ok()
                .and_then(|code| writer.add(&code, Item::default()).ok());
            let first = index.reader().ok().and_then(|r| r.ids().next());
            let _ = first.map(|id| writer.delete(id));
            writer.set_import_progress(ImportProgress {
                source: IMPORT_SOURCE,
                rows: 2,
                committed: u64::from(added.is_some()),
                first_id: added,
            });
            let _ = writer.commit();
            let _ = index.import_progress(&IMPORT_SOURCE);
        }
    }
}
