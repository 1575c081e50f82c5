//! [`Index`]: an index directory opened for reading and writing, and its [`IndexBuilder`].
//!
//! An index owns the redb database and the current search snapshot (an `Arc<View>`). Writes go
//! through a [`Writer`] (one at a time), reads through a [`Reader`] that pins a snapshot of both the
//! codes and the stored items, so a reader never sees half a commit.
//!
//! One writer at a time: a [`Writer`] (and [`Index::optimize`]) holds the index's writer lock for
//! its whole life. Other threads asking for it wait ([`Index::writer`]) or are told it is taken
//! ([`Index::try_writer`]); the thread that holds it gets [`Error::WriterBusy`], since waiting
//! for itself would never end.

mod reader;
mod rehash;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::thread::ThreadId;

use milan_index_format::{
    CodeLayout, MetaRecord, ModelRecord, DATABASE_FILE, FORMAT_VERSION, MAGIC,
};

pub use reader::{BatchSearch, Hit, Pair, PairBatches, Reader, Search};
pub use rehash::RehashReport;
pub use writer::{ImportProgress, Item, Writer, MAX_ITEM_BYTES};

use crate::error::{Error, Result};
use crate::head::HashHead;
use crate::mih::layout::WordLayout;
use crate::mih::View;
use crate::store::{self, CheckReport, Store, StoreWrite};

/// The milan version written into the meta record.
const MILAN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The number of codes [`IndexBuilder::create`] sizes the hash tables for when not told.
pub const DEFAULT_EXPECTED_LEN: u64 = 1 << 20;

/// Default redb page cache: enough for the hot upper levels of the tables; search itself runs from
/// the in-memory snapshot, not from this cache.
pub const DEFAULT_CACHE_BYTES: usize = 8 << 20;

/// Creates or opens an index with non-default settings.
///
/// On [`create`](IndexBuilder::create) every setting applies. On [`open`](IndexBuilder::open)
/// and [`open_read_only`](IndexBuilder::open_read_only) the index's own layout rules: the
/// builder's code length and, when set, its [`substrings`](IndexBuilder::substrings) are checked
/// against it ([`Error::BitsMismatch`], [`Error::SubstringsMismatch`]; [`Index::optimize`]
/// changes the substrings); [`cache_size`](IndexBuilder::cache_size) applies;
/// [`expected_len`](IndexBuilder::expected_len) is ignored (it only chooses the substrings of a
/// new index); [`images`](IndexBuilder::images) is refused ([`Error::InvalidArgument`]), since an
/// image index keeps the extractor and head it was created with ([`Index::rehash`] changes the
/// head). [`Index::open`] checks nothing and takes the index as it is.
///
/// ```
/// # fn main() -> milan::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use milan::{Error, Index};
///
/// let index = Index::builder(64).substrings(4).create(dir.path())?;
/// assert_eq!(index.substrings(), 4);
/// drop(index);
///
/// assert_eq!(Index::builder(64).substrings(4).open(dir.path())?.bits(), 64);
/// assert!(matches!(
///     Index::builder(128).open(dir.path()),
///     Err(Error::BitsMismatch { stored: 64, requested: 128, .. })
/// ));
/// assert!(matches!(
///     Index::builder(64).substrings(8).open(dir.path()),
///     Err(Error::SubstringsMismatch { stored: 4, requested: 8, .. })
/// ));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    /// `None` only for [`Index::open`] and [`Index::open_read_only`], which take the stored
    /// length.
    bits: Option<u32>,
    substrings: Option<u32>,
    expected_len: u64,
    cache_bytes: usize,
    images: Option<(ModelRecord, HashHead)>,
}

impl IndexBuilder {
    /// Number of multi-index-hashing substrings. Default: [`Index::recommended_substrings`] for
    /// the expected number of codes. On open, the number the index must have
    /// ([`Error::SubstringsMismatch`] otherwise).
    pub fn substrings(mut self, substrings: u32) -> Self {
        self.substrings = Some(substrings);
        self
    }

    /// The number of codes the index is expected to hold, which sets the default number of
    /// substrings. Default: [`DEFAULT_EXPECTED_LEN`] (about a million). Used by
    /// [`create`](IndexBuilder::create) only; an open ignores it.
    pub fn expected_len(mut self, len: u64) -> Self {
        self.expected_len = len;
        self
    }

    /// Binds the index to a feature extractor and a hash head, so that it can take images: the
    /// head's code length must be the index's, its input the extractor's output, and, when the
    /// head was made for a particular extractor, that extractor. Default: a code-only index.
    /// For [`create`](IndexBuilder::create) only: an open with it set fails with
    /// [`Error::InvalidArgument`].
    pub fn images(mut self, model: ModelRecord, head: HashHead) -> Self {
        self.images = Some((model, head));
        self
    }

    /// Size of redb's page cache in bytes. Default: [`DEFAULT_CACHE_BYTES`].
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Creates a new, empty index in `dir` (created if missing; an existing index there is an error).
    pub fn create(&self, dir: impl AsRef<Path>) -> Result<Index> {
        let dir = dir.as_ref();
        let bits = self.bits.unwrap_or(64);
        let substrings = self
            .substrings
            .unwrap_or_else(|| Index::recommended_substrings(bits, self.expected_len));
        let layout = CodeLayout::new(bits, substrings)?;
        if let Some((model, head)) = &self.images {
            check_binding(dir, bits, model, head)?;
        }
        if dir.exists() && !dir.is_dir() {
            return Err(Error::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let db_path = dir.join(DATABASE_FILE);
        if db_path.exists() {
            return Err(Error::AlreadyExists {
                path: dir.to_path_buf(),
            });
        }
        let meta = MetaRecord {
            magic: MAGIC,
            format_version: FORMAT_VERSION,
            bits: layout.bits(),
            substrings: layout.substrings(),
            next_id: 0,
            live_count: 0,
            created_by: MILAN_VERSION.to_string(),
            written_by: MILAN_VERSION.to_string(),
        };
        let binding = self.images.as_ref().map(|(model, head)| (model, head));
        let store = Store::create(dir, &db_path, self.cache_bytes, &meta, binding)?;
        let layout = Arc::new(WordLayout::new(layout));
        let view = View::build(layout, Vec::new(), Default::default());
        let (model, head) = match self.images.clone() {
            Some((model, head)) => (Some(model), Some(head)),
            None => (None, None),
        };
        Ok(Index::assemble(dir, store, meta, view, model, head))
    }

    /// Opens the index in `dir` for reading and writing.
    pub fn open(&self, dir: impl AsRef<Path>) -> Result<Index> {
        self.open_mode(dir.as_ref(), true)
    }

    /// Opens the index in `dir` for reading only; other read-only openers may share it.
    pub fn open_read_only(&self, dir: impl AsRef<Path>) -> Result<Index> {
        self.open_mode(dir.as_ref(), false)
    }

    fn open_mode(&self, dir: &Path, writable: bool) -> Result<Index> {
        if self.images.is_some() {
            return Err(Error::InvalidArgument {
                detail: format!(
                    "{}: IndexBuilder::images applies to create only; an open index codes images \
                     with the extractor and head it stores (Index::rehash changes the head)",
                    dir.display()
                ),
            });
        }
        let db_path = database_path(dir)?;
        let store = store::guard(&db_path, || {
            Store::open(dir, &db_path, self.cache_bytes, writable, |meta| {
                self.check_settings(dir, meta)
            })
        })?;
        // The store lives outside the guarded reads, so that a panic of the storage engine on
        // damaged data never drops it while unwinding: it closes normally on the error.
        let (mut meta, model, head, mut view, tables_slots) = store::guard(&db_path, || {
            let read = store.read()?;
            let meta = read.meta()?;
            self.check_settings(dir, &meta)?;
            let (model, head) = read.binding()?;
            let view = read.load_view(&meta)?;
            let tables_slots = read.tables_slots()?;
            Ok((meta, model, head, view, tables_slots))
        })?;
        let mut upgraded_from = None;
        if store.is_writable() && meta.format_version < FORMAT_VERSION {
            // Upgraded only once the whole file has loaded without damage, so that a damaged
            // old index is refused as it stands rather than rewritten.
            upgraded_from = Some(meta.format_version);
            // The old tables are checked at open only for their counts: the new ones are built
            // from the codes, so that no damage of theirs is carried over.
            view = View::build(
                view.layout().clone(),
                view.all_words(),
                view.deleted_flags().clone(),
            );
            meta = upgrade(&store, meta, &view)?;
        } else if store.is_writable() && delta_over_limit(view.slots(), tables_slots) {
            // The open filed codes the stored tables lack (a bulk load stopped before its
            // tables were built): stored now, so that the next open need not do it again.
            let mut txn = store.write()?;
            store::guard(dir, || txn.put_tables(&view))?;
            txn.commit()?;
        }
        let mut index = Index::assemble(dir, store, meta, view, model, head);
        index.upgraded_from = upgraded_from;
        Ok(index)
    }
}

impl IndexBuilder {
    /// Refuses an open whose explicitly set code length or substrings differ from the index's.
    fn check_settings(&self, dir: &Path, meta: &MetaRecord) -> Result<()> {
        if let Some(requested) = self.bits.filter(|&bits| bits != meta.bits) {
            return Err(Error::BitsMismatch {
                path: dir.to_path_buf(),
                stored: meta.bits,
                requested,
            });
        }
        if let Some(requested) = self.substrings.filter(|&m| m != meta.substrings) {
            return Err(Error::SubstringsMismatch {
                path: dir.to_path_buf(),
                stored: meta.substrings,
                requested,
            });
        }
        Ok(())
    }
}

/// Brings the index of an older format version to [`FORMAT_VERSION`] in one transaction:
/// versions 1 and 2 kept one entry per code and the buckets in chunks; their codes (`view`, read
/// from those tables) are written as code blocks, its hash tables as whole arrays, and the old
/// tables dropped. Version 2's import progress and every item stay as they are.
fn upgrade(store: &Store, mut meta: MetaRecord, view: &View) -> Result<MetaRecord> {
    meta.format_version = FORMAT_VERSION;
    meta.written_by = MILAN_VERSION.to_string();
    let mut txn = store.write()?;
    store::guard(store.dir(), || {
        txn.upgrade_tables(view)?;
        txn.put_meta(&meta)
    })?;
    txn.commit()?;
    Ok(meta)
}

fn check_binding(dir: &Path, bits: u32, model: &ModelRecord, head: &HashHead) -> Result<()> {
    let mismatch = |detail: String| Error::Mismatch {
        path: dir.to_path_buf(),
        detail,
    };
    if head.bits() != bits {
        return Err(mismatch(format!(
            "the hash head makes {}-bit codes but the index is for {bits}-bit codes",
            head.bits()
        )));
    }
    head.check_model(model).map_err(mismatch)
}

/// Lower-case hex of some bytes, for naming fingerprints in messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The database file of the index in `dir`, which must exist.
fn database_path(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        let path = dir.to_path_buf();
        // `exists` follows links: a dangling link is missing, a link to a file is not a directory.
        return Err(if dir.exists() {
            Error::NotADirectory { path }
        } else {
            Error::MissingDirectory { path }
        });
    }
    let db_path = dir.join(DATABASE_FILE);
    if !db_path.is_file() {
        return Err(Error::NotAnIndex {
            path: dir.to_path_buf(),
        });
    }
    Ok(db_path)
}

/// Whether more codes lie past the stored tables' coverage than the delta may hold: a bulk load
/// stopped before its tables were built (the open then built them in memory).
fn delta_over_limit(slots: usize, tables_slots: Option<u64>) -> bool {
    let covered = tables_slots.unwrap_or(0) as usize;
    slots.saturating_sub(covered) > crate::mih::rebuild_threshold(covered)
}

/// The snapshot a commit makes current.
pub(crate) enum Next {
    /// A snapshot built for the commit (new hash tables).
    Replace(View),
    /// The current snapshot with `ids` (their codes' words one after another in `words`) added
    /// to its delta and `deletes` flagged.
    Append {
        ids: Vec<u64>,
        words: Vec<u64>,
        deletes: Vec<u64>,
    },
}

/// The index's writer lock, held by one thread: records that thread while held, so that it gets
/// [`Error::WriterBusy`] if it asks again.
pub(crate) struct WriterLock<'a> {
    thread: &'a Mutex<Option<ThreadId>>,
    _guard: MutexGuard<'a, ()>,
}

impl Drop for WriterLock<'_> {
    fn drop(&mut self) {
        // Runs before the guard field is dropped, so the id is gone before another thread can
        // take the lock and store its own.
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Facts about an index, for `milan index info`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Info {
    /// The index directory.
    pub path: PathBuf,
    /// Format version on disk.
    pub format_version: u32,
    /// Code length in bits.
    pub bits: u32,
    /// Multi-index-hashing substrings.
    pub substrings: u32,
    /// What [`Index::recommended_substrings`] advises for the current size.
    pub recommended_substrings: u32,
    /// Live codes.
    pub len: u64,
    /// The id the next code will get.
    pub next_id: u64,
    /// Size of the database file in bytes.
    pub file_bytes: u64,
    /// Heap bytes of the in-memory search snapshot.
    pub memory_bytes: u64,
    /// The milan version that created the index.
    pub created_by: String,
    /// The milan version that last wrote it.
    pub written_by: String,
}

/// What [`Index::optimize`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OptimizeReport {
    /// Substrings before.
    pub old_substrings: u32,
    /// Substrings after.
    pub new_substrings: u32,
}

/// An open index: see the crate documentation for an example.
pub struct Index {
    dir: PathBuf,
    store: Store,
    /// The format version an open upgraded the file from, if it did.
    upgraded_from: Option<u32>,
    /// The committed meta record; the writer lock serialises its updates.
    meta: Mutex<MetaRecord>,
    view: RwLock<Arc<View>>,
    writer_lock: Mutex<()>,
    /// The thread holding `writer_lock`, so that it gets [`Error::WriterBusy`] instead of waiting
    /// for itself.
    writer_thread: Mutex<Option<ThreadId>>,
    model: Option<ModelRecord>,
    head: Option<HashHead>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("bits", &self.bits())
            .field("len", &self.len())
            .finish()
    }
}

impl Index {
    /// A builder for `bits`-bit codes (a multiple of 8 from 8 to 1024), with defaults for the rest.
    /// Its opens check that the index stores `bits`-bit codes.
    pub fn builder(bits: u32) -> IndexBuilder {
        IndexBuilder {
            bits: Some(bits),
            ..Index::open_builder()
        }
    }

    /// The builder behind [`Index::open`]: default settings, the stored code length.
    fn open_builder() -> IndexBuilder {
        IndexBuilder {
            bits: None,
            substrings: None,
            expected_len: DEFAULT_EXPECTED_LEN,
            cache_bytes: DEFAULT_CACHE_BYTES,
            images: None,
        }
    }

    /// Opens the index in `dir` for reading and writing, whatever its code length and
    /// substrings, with the default cache size.
    ///
    /// Fails with [`Error::Locked`] while another process or another open handle in this process
    /// has the file open, [`Error::MissingDirectory`], [`Error::NotADirectory`] or
    /// [`Error::NotAnIndex`] for a wrong path.
    pub fn open(dir: impl AsRef<Path>) -> Result<Index> {
        Index::open_builder().open(dir)
    }

    /// Opens the index in `dir` read-only, whatever its code length and substrings, with the
    /// default cache size; other read-only handles may share it.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Index> {
        Index::open_builder().open_read_only(dir)
    }

    /// The number of substrings multi-index hashing works best with for `len` codes of `bits` bits:
    /// about `bits / log2(len)` (Norouzi et al.), rounded up, within the allowed range.
    pub fn recommended_substrings(bits: u32, len: u64) -> u32 {
        let log = (len.max(1 << 10) as f64).log2();
        let (min, max) = CodeLayout::substring_range(bits);
        ((f64::from(bits) / log).ceil() as u32).clamp(min, max)
    }

    fn assemble(
        dir: &Path,
        store: Store,
        meta: MetaRecord,
        view: View,
        model: Option<ModelRecord>,
        head: Option<HashHead>,
    ) -> Index {
        Index {
            model,
            head,
            dir: dir.to_path_buf(),
            store,
            upgraded_from: None,
            meta: Mutex::new(meta),
            view: RwLock::new(Arc::new(view)),
            writer_lock: Mutex::new(()),
            writer_thread: Mutex::new(None),
        }
    }

    /// The index directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The format version this handle's open upgraded the index from (in one transaction,
    /// before anything else was written), or `None` when it was current already. Only writable
    /// opens upgrade; a read-only open reads an older version as it is.
    pub fn upgraded_from(&self) -> Option<u32> {
        self.upgraded_from
    }

    fn meta(&self) -> MetaRecord {
        self.meta.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn snapshot(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The feature extractor the index is bound to (`None` for a code-only index).
    pub fn model(&self) -> Option<&ModelRecord> {
        self.model.as_ref()
    }

    /// The hash head the index codes images with (`None` for a code-only index).
    pub fn head(&self) -> Option<&HashHead> {
        self.head.as_ref()
    }

    /// Code length in bits.
    pub fn bits(&self) -> u32 {
        self.snapshot().layout().bits()
    }

    /// Number of multi-index-hashing substrings.
    pub fn substrings(&self) -> u32 {
        self.snapshot().layout().code.substrings()
    }

    /// Number of live codes.
    pub fn len(&self) -> u64 {
        self.snapshot().live()
    }

    /// Whether the index holds no live code.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Facts about the index.
    pub fn info(&self) -> Info {
        let meta = self.meta();
        let view = self.snapshot();
        Info {
            path: self.dir.clone(),
            format_version: meta.format_version,
            bits: meta.bits,
            substrings: meta.substrings,
            recommended_substrings: Index::recommended_substrings(meta.bits, view.live()),
            len: view.live(),
            next_id: meta.next_id,
            file_bytes: self.store.file_bytes().unwrap_or(0),
            memory_bytes: view.heap_bytes() as u64,
            created_by: meta.created_by,
            written_by: meta.written_by,
        }
    }

    /// Starts a write transaction.
    ///
    /// Blocks while a [`Writer`] (or an [`Index::optimize`]) of this handle is active on another
    /// thread, until it commits or is dropped. Fails with [`Error::WriterBusy`] when the calling
    /// thread itself holds one (it would wait forever), and with [`Error::ReadOnly`] on a
    /// read-only handle. [`Index::try_writer`] never blocks.
    pub fn writer(&self) -> Result<Writer<'_>> {
        let lock = self
            .lock_writer(true)?
            .expect("a blocking lock is always taken");
        Writer::begin(self, lock)
    }

    /// Starts a write transaction if no other is active: `Ok(None)` while another thread holds
    /// this handle's writer, instead of waiting for it. Errors as [`Index::writer`].
    pub fn try_writer(&self) -> Result<Option<Writer<'_>>> {
        match self.lock_writer(false)? {
            Some(lock) => Writer::begin(self, lock).map(Some),
            None => Ok(None),
        }
    }

    /// Takes the writer lock, waiting for another thread's writer when `wait` (otherwise `None`
    /// while it is taken); [`Error::WriterBusy`] when this thread holds it already.
    fn lock_writer(&self, wait: bool) -> Result<Option<WriterLock<'_>>> {
        if !self.store.is_writable() {
            return Err(Error::ReadOnly {
                path: self.dir.clone(),
            });
        }
        let me = std::thread::current().id();
        // Only this thread ever stores its own id here, and it clears it before releasing the
        // lock, so seeing it means this thread holds the lock now.
        if *self.writer_thread.lock().unwrap_or_else(|e| e.into_inner()) == Some(me) {
            return Err(Error::WriterBusy {
                path: self.dir.clone(),
            });
        }
        let guard = if wait {
            self.writer_lock.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            match self.writer_lock.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return Ok(None),
            }
        };
        *self.writer_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(me);
        Ok(Some(WriterLock {
            thread: &self.writer_thread,
            _guard: guard,
        }))
    }

    /// The progress of the import of `source` (the fingerprint its importer computed), as last
    /// committed with [`Writer::set_import_progress`]; `None` when none was recorded (always so
    /// for an index of format version 1 opened read-only). Works on read-only handles.
    pub fn import_progress(&self, source: &[u8; 32]) -> Result<Option<ImportProgress>> {
        store::guard(&self.dir, || {
            let record = self.store.read()?.import(source)?;
            Ok(record.map(|record| ImportProgress {
                source: *source,
                rows: record.rows,
                committed: record.committed,
                first_id: record.first_id,
            }))
        })
    }

    /// A consistent snapshot for searching and reading items.
    pub fn reader(&self) -> Result<Reader> {
        // Taken under the view lock so that the codes and the stored items belong to one commit.
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        let read = self.store.read()?;
        Ok(Reader::new(self.dir.clone(), view.clone(), read))
    }

    /// Checks every invariant of the stored index (each live code in exactly its buckets, no
    /// dangling ids, counts and meta consistent) and, when opened writable, redb's own structure.
    pub fn verify(&mut self) -> Result<CheckReport> {
        // Shared only with live readers, whose read transactions redb refuses the check during
        // anyway.
        let dir = self.dir.clone();
        let storage_ok = store::guard(&dir, || self.store.check_structure())?;
        let mut report = store::guard(&self.dir, || self.store.read()?.check())?;
        report.storage_ok = storage_ok;
        Ok(report)
    }

    /// Checks the index in `dir` like [`Index::verify`], without opening it for search first: an
    /// open stops at the first damage it meets, this lists all of it.
    pub fn verify_dir(dir: impl AsRef<Path>) -> Result<CheckReport> {
        let dir = dir.as_ref();
        let db_path = database_path(dir)?;
        store::guard(&db_path, || {
            let (store, storage_ok) = Store::open_for_check(dir, &db_path, DEFAULT_CACHE_BYTES)?;
            let mut report = store.read()?.check()?;
            report.storage_ok = Some(storage_ok);
            Ok(report)
        })
    }

    /// Rebuilds every bucket for `substrings` substrings (default: the recommended number for the
    /// current size) in one transaction, merging the small chunks that many small commits leave.
    ///
    /// Takes the writer lock like [`Index::writer`]: waits for another thread's [`Writer`], and
    /// fails with [`Error::WriterBusy`] while the calling thread holds one.
    pub fn optimize(&self, substrings: Option<u32>) -> Result<OptimizeReport> {
        let _lock = self.lock_writer(true)?;
        let view = self.snapshot();
        let mut meta = self.meta();
        let old_substrings = meta.substrings;
        let new_substrings =
            substrings.unwrap_or_else(|| Index::recommended_substrings(meta.bits, view.live()));
        let layout = WordLayout::new(CodeLayout::new(meta.bits, new_substrings)?);
        meta.substrings = new_substrings;
        meta.written_by = MILAN_VERSION.to_string();
        let rebuilt = View::build(
            Arc::new(layout),
            view.all_words(),
            view.deleted_flags().clone(),
        );
        drop(view);
        let mut txn = self.store.write()?;
        store::guard(&self.dir, || {
            txn.put_tables(&rebuilt)?;
            txn.put_meta(&meta)
        })?;
        self.commit_and_publish(txn, meta, Next::Replace(rebuilt))?;
        Ok(OptimizeReport {
            old_substrings,
            new_substrings,
        })
    }

    /// Gives the file space freed by earlier commits back to the file system (redb compaction).
    /// Returns false when nothing could be reclaimed. Fails with a storage error while a
    /// [`Reader`] of this handle is alive.
    pub fn compact(&mut self) -> Result<bool> {
        let dir = self.dir.clone();
        store::guard(&dir, || self.store.compact())
    }

    /// Commits `txn` and makes the next snapshot current in one step as readers see it: the view
    /// lock is held across the commit, so no reader pairs the old codes with the new items or the
    /// reverse. A snapshot that keeps its tables is derived here, from the current one taken out
    /// of the lock, so that it grows in place when no reader holds it.
    fn commit_and_publish(&self, txn: StoreWrite, meta: MetaRecord, next: Next) -> Result<()> {
        let mut current = self.view.write().unwrap_or_else(|e| e.into_inner());
        txn.commit()?;
        *self.meta.lock().unwrap_or_else(|e| e.into_inner()) = meta;
        let next = match next {
            Next::Replace(view) => view,
            Next::Append {
                ids,
                words,
                deletes,
            } => {
                let placeholder = Arc::new(View::placeholder(current.layout().clone()));
                let old = std::mem::replace(&mut *current, placeholder);
                old.appended(&ids, &words, &deletes)
            }
        };
        *current = Arc::new(next);
        Ok(())
    }
}
