//! [`Index`]: an index directory opened for reading and writing, and its [`IndexBuilder`].
//!
//! An index owns the redb database and the current search snapshot (an `Arc<View>`). Writes go
//! through a [`Writer`] (one at a time), reads through a [`Reader`] that pins a snapshot of both the
//! codes and the stored items, so a reader never sees half a commit.
//!
//! One writer at a time: a [`Writer`] (and [`Index::optimize`]) holds the index's writer lock for
//! its whole life. Other threads asking for it wait ([`Index::writer`]) or are told it is taken
//! ([`Index::try_writer`]); the thread that holds it gets [`WriteError::WriterBusy`], since waiting
//! for itself would never end.
//!
//! Many processes, one index: every handle shares the file. A writer takes the writer's turn
//! among processes too, waiting up to the lock timeout ([`IndexBuilder::lock_timeout`]); readers
//! never wait. Each commit raises the index's generation and logs what it changed, and a handle
//! catches up with other processes' commits at its next transaction ([`Index::reader`],
//! [`Index::writer`]): it applies the logged adds and deletes, or reads the whole index again
//! when the log cannot tell them (rebuilt hash tables, a re-coded index, a log that no longer
//! reaches back).

mod reader;
#[cfg(feature = "images")]
mod rehash;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::ThreadId;
use std::time::Duration;

use milan_index_format::{
    CodeLayout, CommitRecord, MetaRecord, DATABASE_FILE, FORMAT_VERSION, KEYS_VERSION, MAGIC,
    MAX_LOGGED_DELETES,
};

pub use reader::{BatchSearch, Hit, Pair, PairBatches, Reader, Search};
#[cfg(feature = "images")]
pub use rehash::RehashReport;
pub use writer::{ImportProgress, Item, Upserted, Writer, MAX_ITEM_BYTES};

use crate::contract::ExtractorContract;
use crate::error::{Error, ExtractError, Mismatch, OpenError, Result, WriteError};
use crate::head::HashHead;
use crate::mih::layout::WordLayout;
use crate::mih::View;
use crate::store::{
    self, CheckReport, LockSettings, LockWait, Store, StoreRead, StoreWrite, BLOCKS_VERSION,
};

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
/// against it ([`OpenError::BitsMismatch`], [`OpenError::SubstringsMismatch`]; [`Index::optimize`]
/// changes the substrings); [`cache_size`](IndexBuilder::cache_size) applies;
/// [`expected_len`](IndexBuilder::expected_len) is ignored (it only chooses the substrings of a
/// new index); `images` (feature `images`) is refused ([`Error::InvalidArgument`]), since an
/// image index keeps the extractor and head it was created with (`Index::rehash` changes the
/// head). [`Index::open`] checks nothing and takes the index as it is.
///
/// ```
/// # fn main() -> milan::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use milan::{Error, Index, OpenError};
///
/// let index = Index::builder(64).substrings(4).create(dir.path())?;
/// assert_eq!(index.substrings(), 4);
/// drop(index);
///
/// assert_eq!(Index::builder(64).substrings(4).open(dir.path())?.bits(), 64);
/// assert!(matches!(
///     Index::builder(128).open(dir.path()),
///     Err(Error::Open(OpenError::BitsMismatch { stored: 64, requested: 128, .. }))
/// ));
/// assert!(matches!(
///     Index::builder(64).substrings(8).open(dir.path()),
///     Err(Error::Open(OpenError::SubstringsMismatch { stored: 4, requested: 8, .. }))
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
    images: Option<(ExtractorContract, HashHead)>,
    lock: LockSettings,
}

impl IndexBuilder {
    /// Number of multi-index-hashing substrings. Default: [`Index::recommended_substrings`] for
    /// the expected number of codes. On open, the number the index must have
    /// ([`OpenError::SubstringsMismatch`] otherwise).
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
    #[cfg(feature = "images")]
    pub fn images(mut self, model: ExtractorContract, head: HashHead) -> Self {
        self.images = Some((model, head));
        self
    }

    /// Size of redb's page cache in bytes. Default: [`DEFAULT_CACHE_BYTES`].
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// How long a write waits for another process's write (or another handle's in this
    /// process) to end before failing with [`WriteError::LockTimeout`]. Default:
    /// [`DEFAULT_LOCK_TIMEOUT`](crate::DEFAULT_LOCK_TIMEOUT), 30 seconds. Applies to the
    /// handle's opens (a writable open takes the writer's turn briefly) and to every write
    /// after. Reads never wait.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock.timeout = timeout;
        self
    }

    /// Calls `notice` each time a write of this handle begins to wait for another process's
    /// turn, with the holder when known: for a message such as the command line's "waiting for
    /// another writer". Nothing is called when the turn is free.
    pub fn on_lock_wait(mut self, notice: impl Fn(&LockWait) + Send + Sync + 'static) -> Self {
        self.lock.on_wait = Some(Arc::new(notice));
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
            return Err(Error::Open(OpenError::NotADirectory {
                path: dir.to_path_buf(),
            }));
        }
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let db_path = dir.join(DATABASE_FILE);
        if db_path.exists() {
            return Err(Error::Open(OpenError::AlreadyExists {
                path: dir.to_path_buf(),
            }));
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
        let store = Store::create(
            dir,
            &db_path,
            self.cache_bytes,
            self.lock.clone(),
            &meta,
            binding,
        )?;
        let layout = Arc::new(WordLayout::new(layout));
        let view = View::build(layout, Vec::new(), Default::default());
        let (model, head) = match self.images.clone() {
            Some((model, head)) => (Some(model), Some(head)),
            None => (None, None),
        };
        let current = Current {
            generation: 0,
            meta,
            view: Arc::new(view),
        };
        Ok(Index::assemble(dir, store, current, model, head))
    }

    /// Opens the index in `dir` for reading and writing.
    pub fn open(&self, dir: impl AsRef<Path>) -> Result<Index> {
        self.open_mode(dir.as_ref(), true)
    }

    /// Opens the index in `dir` for reading only. Other handles, of this process or others,
    /// read-only or writable, may have it open too; reads never wait for them.
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
            Store::open(
                dir,
                &db_path,
                self.cache_bytes,
                self.lock.clone(),
                writable,
                |meta| self.check_settings(dir, meta),
            )
        })?;
        // The store lives outside the guarded reads, so that a panic of the storage engine on
        // damaged data never drops it while unwinding: it closes normally on the error.
        let load = |store: &Store| {
            store::guard(&db_path, || {
                let read = store.read()?;
                let meta = read.meta()?;
                self.check_settings(dir, &meta)?;
                let (model, head) = read.binding()?;
                let view = read.load_view(&meta)?;
                let tables_slots = read.tables_slots()?;
                let generation = read.generation()?;
                Ok((meta, model, head, view, tables_slots, generation))
            })
        };
        let (mut meta, mut model, mut head, mut view, mut tables_slots, mut generation) =
            load(&store)?;
        let mut upgraded_from = None;
        if store.is_writable() && meta.format_version < FORMAT_VERSION {
            let txn = store.write()?;
            // Read again under the writer's turn: another process may have upgraded the index
            // or committed since.
            (meta, model, head, view, tables_slots, generation) = load(&store)?;
            if meta.format_version < FORMAT_VERSION {
                // Upgraded only once the whole file has loaded without damage, so that a
                // damaged old index is refused as it stands rather than rewritten.
                upgraded_from = Some(meta.format_version);
                generation += 1;
                (meta, view) = upgrade(&store, txn, meta, view, generation)?;
            } else {
                drop(txn);
            }
        }
        if store.is_writable() && delta_over_limit(view.slots(), tables_slots) {
            // The open filed codes the stored tables lack (a bulk load stopped before its
            // tables were built): stored now, so that the next open need not do it again.
            let mut txn = store.write()?;
            (meta, model, head, view, tables_slots, generation) = load(&store)?;
            if delta_over_limit(view.slots(), tables_slots) {
                generation += 1;
                let record = reload_record(&meta);
                store::guard(dir, || {
                    txn.put_tables(&view)?;
                    txn.put_generation(generation, Some(&record))
                })?;
                txn.commit()?;
            }
        }
        let current = Current {
            generation,
            meta,
            view: Arc::new(view),
        };
        let mut index = Index::assemble(dir, store, current, model, head);
        index.upgraded_from = upgraded_from;
        Ok(index)
    }
}

impl Default for IndexBuilder {
    /// The settings of [`Index::open`]: opens take the stored code length and substrings (a
    /// create makes 64-bit codes), with the default cache size and lock timeout.
    fn default() -> IndexBuilder {
        Index::open_builder()
    }
}

impl IndexBuilder {
    /// Checks the index in `dir` like [`Index::verify_dir`], with this builder's cache size and
    /// lock timeout (the storage check takes the writer's turn).
    pub fn verify_dir(&self, dir: impl AsRef<Path>) -> Result<CheckReport> {
        let dir = dir.as_ref();
        let db_path = database_path(dir)?;
        store::guard(&db_path, || {
            let (store, storage_ok) =
                Store::open_for_check(dir, &db_path, self.cache_bytes, self.lock.clone())?;
            let mut report = store.read()?.check()?;
            report.storage_ok = Some(storage_ok);
            Ok(report)
        })
    }

    /// Refuses an open whose explicitly set code length or substrings differ from the index's.
    fn check_settings(&self, dir: &Path, meta: &MetaRecord) -> Result<()> {
        if let Some(requested) = self.bits.filter(|&bits| bits != meta.bits) {
            return Err(Error::Open(OpenError::BitsMismatch {
                path: dir.to_path_buf(),
                stored: meta.bits,
                requested,
            }));
        }
        if let Some(requested) = self.substrings.filter(|&m| m != meta.substrings) {
            return Err(Error::Open(OpenError::SubstringsMismatch {
                path: dir.to_path_buf(),
                stored: meta.substrings,
                requested,
            }));
        }
        Ok(())
    }
}

/// Brings the index of an older format version to [`FORMAT_VERSION`] in `txn`, making
/// `generation`:
/// - versions 1 and 2 kept one entry per code and the buckets in chunks; their codes (`view`,
///   read from those tables) are written as code blocks, its hash tables (built anew from the
///   codes, so that no damage of the old ones is carried over) as whole arrays, and the old
///   tables dropped. Version 2's import progress and every item stay as they are;
/// - version 3 gains the generation and the commit log;
/// - version 4 (and every older one) gains the key lookup, filled from the item records.
fn upgrade(
    store: &Store,
    mut txn: StoreWrite,
    mut meta: MetaRecord,
    mut view: View,
    generation: u64,
) -> Result<(MetaRecord, View)> {
    let from = meta.format_version;
    let rebuild = from < BLOCKS_VERSION;
    if rebuild {
        view = View::build(
            view.layout().clone(),
            view.all_words(),
            view.deleted_flags().clone(),
        );
    }
    meta.format_version = FORMAT_VERSION;
    meta.written_by = MILAN_VERSION.to_string();
    // Handles that read the old version catch up: in full after a rebuild, else by nothing.
    let record = if rebuild {
        reload_record(&meta)
    } else {
        CommitRecord {
            next_id: meta.next_id,
            ..CommitRecord::default()
        }
    };
    store::guard(store.dir(), || {
        if rebuild {
            txn.upgrade_tables(&view)?;
        }
        if from < KEYS_VERSION {
            txn.build_keys()?;
        }
        txn.put_meta(&meta)?;
        txn.put_generation(generation, Some(&record))
    })?;
    txn.commit()?;
    Ok((meta, view))
}

/// The log record of a commit that handles of other processes must read in full.
fn reload_record(meta: &MetaRecord) -> CommitRecord {
    CommitRecord {
        next_id: meta.next_id,
        reload: true,
        deleted: Vec::new(),
    }
}

/// The log record of a commit that added the ids below `meta.next_id` it stored and deleted
/// `deletes`, or replaced the snapshot (`rebuilt`).
fn commit_record(meta: &MetaRecord, deletes: &[u64], rebuilt: bool) -> CommitRecord {
    if rebuilt || deletes.len() > MAX_LOGGED_DELETES {
        return reload_record(meta);
    }
    let mut deleted = deletes.to_vec();
    deleted.sort_unstable();
    CommitRecord {
        next_id: meta.next_id,
        reload: false,
        deleted,
    }
}

fn check_binding(dir: &Path, bits: u32, model: &ExtractorContract, head: &HashHead) -> Result<()> {
    let mismatch = |reason: Mismatch| {
        Error::Extract(ExtractError::Mismatch {
            path: dir.to_path_buf(),
            reason,
        })
    };
    if head.bits() != bits {
        return Err(mismatch(Mismatch::HeadBits {
            head: head.bits(),
            index: bits,
        }));
    }
    head.check_contract(model)
        .map_err(|err| mismatch(Mismatch::Head(err)))
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
            Error::Open(OpenError::NotADirectory { path })
        } else {
            Error::Open(OpenError::MissingDirectory { path })
        });
    }
    let db_path = dir.join(DATABASE_FILE);
    if !db_path.is_file() {
        return Err(Error::Open(OpenError::NotAnIndex {
            path: dir.to_path_buf(),
        }));
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

/// The index's writer lock, taken by one thread and released when dropped, on whichever thread
/// the [`Writer`] holding it has moved to (unlike a mutex guard, it may be sent).
pub(crate) struct WriterLock<'a> {
    index: &'a Index,
}

impl Drop for WriterLock<'_> {
    fn drop(&mut self) {
        *self
            .index
            .writer_holder
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.index.writer_released.notify_one();
    }
}

/// Facts about an index, for `milan index info`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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

/// What a handle knows of the index: the search snapshot and meta record of one commit.
struct Current {
    /// The commit's generation.
    generation: u64,
    meta: MetaRecord,
    view: Arc<View>,
}

impl Current {
    /// The snapshot with `ids` (their words one after another in `words`) added and `deletes`
    /// flagged ([`View::appended`]). It is taken out of `self`, leaving an empty placeholder
    /// until the caller stores the result, so that it grows in place when no reader holds it.
    fn take_appended(&mut self, ids: &[u64], words: &[u64], deletes: &[u64]) -> View {
        let placeholder = Arc::new(View::placeholder(self.view.layout().clone()));
        std::mem::replace(&mut self.view, placeholder).appended(ids, words, deletes)
    }
}

/// An open index: see the crate documentation for an example.
pub struct Index {
    dir: PathBuf,
    store: Store,
    /// The format version an open upgraded the file from, if it did.
    upgraded_from: Option<u32>,
    /// The last commit this handle caught up with.
    current: RwLock<Current>,
    /// Set when another process replaced the stored hash head ([`Index::rehash`]): this handle's
    /// head no longer makes the index's codes, so it adds and codes images no more.
    head_replaced: AtomicBool,
    /// The writer lock: the thread that took it, while a [`Writer`] (or an optimize or rehash) is
    /// active, so that it gets [`WriteError::WriterBusy`] instead of waiting for itself.
    writer_holder: Mutex<Option<ThreadId>>,
    /// Signalled when the writer lock is released.
    writer_released: Condvar,
    model: Option<ExtractorContract>,
    /// The head this handle codes images with: replaced by [`Index::rehash`] through a shared
    /// handle, so handed out as an `Arc` that outlives the swap.
    head: RwLock<Option<Arc<HashHead>>>,
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
            lock: LockSettings::default(),
        }
    }

    /// Opens the index in `dir` for reading and writing, whatever its code length and
    /// substrings, with the default cache size.
    ///
    /// Other processes and other handles may have the index open at the same time, for reading
    /// or writing: writes take turns (waiting up to the lock timeout, 30 s by default, then
    /// [`WriteError::LockTimeout`]), reads never wait. Fails with [`OpenError::MissingDirectory`],
    /// [`OpenError::NotADirectory`] or [`OpenError::NotAnIndex`] for a wrong path, and with
    /// [`OpenError::Locked`] while a program that does not share the file holds it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Index> {
        Index::open_builder().open(dir)
    }

    /// Opens the index in `dir` read-only, whatever its code length and substrings, with the
    /// default cache size. Other handles may have it open too, writable or not (see
    /// [`Index::open`]); reads never wait for them.
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
        current: Current,
        model: Option<ExtractorContract>,
        head: Option<HashHead>,
    ) -> Index {
        Index {
            model,
            head: RwLock::new(head.map(Arc::new)),
            dir: dir.to_path_buf(),
            store,
            upgraded_from: None,
            current: RwLock::new(current),
            head_replaced: AtomicBool::new(false),
            writer_holder: Mutex::new(None),
            writer_released: Condvar::new(),
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

    /// The snapshot and meta record of the last commit, caught up with other processes' commits
    /// when the file can be read (else this handle's last).
    fn latest(&self) -> (Arc<View>, MetaRecord) {
        if let Ok((view, meta, _, _)) = self.latest_commit() {
            return (view, meta);
        }
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        (current.view.clone(), current.meta.clone())
    }

    fn snapshot(&self) -> Arc<View> {
        self.latest().0
    }

    /// Begins a read transaction of the last commit and catches up with it: the commit's
    /// snapshot, meta record and generation, with the transaction.
    fn latest_commit(&self) -> Result<(Arc<View>, MetaRecord, u64, StoreRead)> {
        loop {
            let known = self
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .generation;
            let read = self.store.read()?;
            // A read begun after this handle knew a commit sees that commit or a later one; a
            // file behind it went back (damage) and is taken as it is. A read merely older
            // than what another thread caught up with since is begun again.
            let behind_is_damage = store::guard(&self.dir, || read.generation())? < known;
            if let Some((view, meta, generation)) = self.catch_up(&read, behind_is_damage)? {
                return Ok((view, meta, generation, read));
            }
        }
    }

    /// Brings this handle to the commit `read` sees and returns its snapshot, meta record and
    /// generation; `None` when this handle already knows a later commit than `read` (begin
    /// another read), unless `behind_is_damage`, which reads the file's commit in full. Applies
    /// the changes the commit log records since this handle's generation, or reads the whole
    /// index again when the log cannot tell them.
    fn catch_up(
        &self,
        read: &StoreRead,
        behind_is_damage: bool,
    ) -> Result<Option<(Arc<View>, MetaRecord, u64)>> {
        let generation = store::guard(&self.dir, || read.generation())?;
        let answer = |current: &Current| {
            (
                current.view.clone(),
                current.meta.clone(),
                current.generation,
            )
        };
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.generation == generation {
                return Ok(Some(answer(&current)));
            }
            if current.generation > generation && !behind_is_damage {
                return Ok(None);
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.generation == generation {
            return Ok(Some(answer(&current)));
        }
        if current.generation > generation && !behind_is_damage {
            return Ok(None);
        }
        let meta = store::guard(&self.dir, || read.meta())?;
        let changes = store::guard(&self.dir, || {
            self.logged_changes(&current, read, &meta, generation)
        })?;
        let view = match changes {
            Some((ids, words, deletes)) => current.take_appended(&ids, &words, &deletes),
            None => store::guard(&self.dir, || self.reload(read, &meta))?,
        };
        *current = Current {
            generation,
            meta,
            view: Arc::new(view),
        };
        Ok(Some(answer(&current)))
    }

    /// The adds (ids and words) and deletes of the commits since `current` up to `generation`,
    /// from the commit log; `None` when they must be read in full instead.
    #[allow(clippy::type_complexity)]
    fn logged_changes(
        &self,
        current: &Current,
        read: &StoreRead,
        meta: &MetaRecord,
        generation: u64,
    ) -> Result<Option<(Vec<u64>, Vec<u64>, Vec<u64>)>> {
        if generation < current.generation
            || meta.format_version != current.meta.format_version
            || meta.layout() != current.meta.layout()
        {
            return Ok(None);
        }
        let Some(records) = read.commits(current.generation, generation)? else {
            return Ok(None);
        };
        if records.iter().any(|record| record.reload) {
            return Ok(None);
        }
        let from = current.meta.next_id;
        let (ids, words) = read.codes_between(meta.layout().bytes(), from, meta.next_id)?;
        // Ids added and deleted since are not stored any more; only ids this handle has live
        // can be deleted from its snapshot, and each once (a damaged log may repeat one).
        let mut deletes: Vec<u64> = records
            .iter()
            .flat_map(|record| record.deleted.iter().copied())
            .filter(|&id| current.view.is_live(id))
            .collect();
        deletes.sort_unstable();
        deletes.dedup();
        Ok(Some((ids, words, deletes)))
    }

    /// The whole snapshot of the commit `read` sees. Notes a hash head replaced by another
    /// process, whose codes this handle's head no longer makes.
    fn reload(&self, read: &StoreRead, meta: &MetaRecord) -> Result<View> {
        let view = read.load_view(meta)?;
        let (_, head) = read.binding()?;
        let replaced = match (self.head(), &head) {
            (Some(mine), Some(stored)) => mine.as_bytes() != stored.as_bytes(),
            _ => false,
        };
        if replaced {
            self.head_replaced.store(true, Ordering::Relaxed);
        }
        Ok(view)
    }

    /// Checks that this handle's head ([`Index::head`]) is still the index's: fails with
    /// [`ExtractError::Mismatch`] ([`Mismatch::HeadReplaced`]) once another process re-coded the
    /// index with another head, which catching up with the last commit finds out. Codes made
    /// with the old head must not be added then: a program that adds codes it made itself
    /// checks this with its [`Writer`] open (a rehash waits for the writer's turn, so the head
    /// cannot change before that writer's commit). Image adds through [`crate::ingest`] check it
    /// themselves.
    #[cfg(feature = "images")]
    pub fn check_head_current(&self) -> Result<()> {
        if self.head().is_some() {
            self.latest_commit()?;
        }
        if self.head_replaced.load(Ordering::Relaxed) {
            return Err(Error::Extract(ExtractError::Mismatch {
                path: self.dir.clone(),
                reason: Mismatch::HeadReplaced,
            }));
        }
        Ok(())
    }

    /// The feature extractor the index is bound to (`None` for a code-only index).
    pub fn model(&self) -> Option<&ExtractorContract> {
        self.model.as_ref()
    }

    /// Refuses codes made with `head` once it is no longer this handle's head: another process
    /// replaced it ([`Index::check_head_current`]), or another thread re-coded the index through
    /// this handle ([`Index::rehash`]) while they were being made.
    #[cfg(feature = "images")]
    pub(crate) fn check_head_is(&self, head: &HashHead) -> Result<()> {
        self.check_head_current()?;
        match self.head() {
            Some(current) if current.as_bytes() == head.as_bytes() => Ok(()),
            _ => Err(Error::Extract(ExtractError::Mismatch {
                path: self.dir.clone(),
                reason: Mismatch::RecodedMeanwhile,
            })),
        }
    }

    /// The hash head the index codes images with (`None` for a code-only index). A shared
    /// pointer: it stays valid when `Index::rehash` (feature `images`) replaces the index's
    /// head meanwhile (ask again for the new one).
    pub fn head(&self) -> Option<Arc<HashHead>> {
        self.head.read().unwrap_or_else(|e| e.into_inner()).clone()
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

    /// Facts about the index, as of its last commit.
    pub fn info(&self) -> Info {
        let (view, meta) = self.latest();
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
    /// Blocks while a [`Writer`] (or an [`Index::optimize`]) of this handle is active, until it
    /// commits or is dropped, and while another handle or process writes, up to the lock timeout
    /// ([`IndexBuilder::lock_timeout`]) in all, then fails with [`WriteError::LockTimeout`]. Fails
    /// with [`WriteError::WriterBusy`] when the calling thread began the active writer (even if it
    /// sent it to another thread since: waiting for itself might never end), and with
    /// [`WriteError::ReadOnly`] on a read-only handle. [`Index::try_writer`] does not wait for this handle's writer. A [`Writer`] is
    /// `Send`: it may be begun on one thread and committed on another.
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

    /// Takes the writer lock, waiting up to the lock timeout for another thread's writer when
    /// `wait` (otherwise `None` while it is taken); [`WriteError::WriterBusy`] when this thread took
    /// it and has not released it.
    fn lock_writer(&self, wait: bool) -> Result<Option<WriterLock<'_>>> {
        if !self.store.is_writable() {
            return Err(Error::Write(WriteError::ReadOnly {
                path: self.dir.clone(),
            }));
        }
        let me = std::thread::current().id();
        let timeout = self.store.lock_timeout();
        let started = std::time::Instant::now();
        let mut holder = self.writer_holder.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match *holder {
                None => break,
                Some(thread) if thread == me => {
                    return Err(Error::Write(WriteError::WriterBusy {
                        path: self.dir.clone(),
                    }))
                }
                Some(_) if !wait => return Ok(None),
                Some(_) => {
                    let Some(left) = timeout.checked_sub(started.elapsed()) else {
                        return Err(Error::Write(WriteError::LockTimeout {
                            path: self.dir.clone(),
                            waited: timeout,
                            holder: Some(format!(
                                "another thread of this process ({})",
                                std::process::id()
                            )),
                        }));
                    };
                    holder = self
                        .writer_released
                        .wait_timeout(holder, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        *holder = Some(me);
        Ok(Some(WriterLock { index: self }))
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

    /// A consistent snapshot for searching and reading items: the last commit of any process.
    /// Catching up with other processes' commits costs what they changed (see the module
    /// documentation); the reader never waits for a writer.
    pub fn reader(&self) -> Result<Reader> {
        // The snapshot is paired with the read transaction of its own commit, so that the codes
        // and the stored items belong to one commit.
        let (view, _, _, read) = self.latest_commit()?;
        Ok(Reader::new(self.dir.clone(), view, read))
    }

    /// Begins the write transaction and catches up with the last commit (which, holding the
    /// writer's turn, no other process can pass): the transaction, the snapshot and meta record
    /// it changes, and their generation.
    pub(crate) fn begin_write(&self) -> Result<(StoreWrite, Arc<View>, MetaRecord, u64)> {
        let txn = self.store.write()?;
        let (view, meta, generation, _) = self.latest_commit()?;
        Ok((txn, view, meta, generation))
    }

    /// Checks every invariant of the stored index (each live code in exactly its buckets, no
    /// dangling ids, counts and meta consistent) and, when opened writable, redb's own structure.
    /// Through a shared handle: the structural check takes the writer's turn, fails with
    /// [`WriteError::ReadersOpen`] while a [`Reader`] of this handle is alive, and holds this handle's
    /// new readers back while it runs.
    pub fn verify(&self) -> Result<CheckReport> {
        let dir = self.dir.clone();
        let storage_ok = store::guard(&dir, || self.store.check_structure())?;
        let mut report = store::guard(&self.dir, || self.store.read()?.check())?;
        report.storage_ok = storage_ok;
        Ok(report)
    }

    /// Checks the index in `dir` like [`Index::verify`], without opening it for search first: an
    /// open stops at the first damage it meets, this lists all of it.
    pub fn verify_dir(dir: impl AsRef<Path>) -> Result<CheckReport> {
        Index::open_builder().verify_dir(dir)
    }

    /// Rebuilds every bucket for `substrings` substrings (default: the recommended number for the
    /// current size) in one transaction, merging the small chunks that many small commits leave.
    ///
    /// Takes the writer lock like [`Index::writer`]: waits for another thread's [`Writer`], and
    /// fails with [`WriteError::WriterBusy`] while the calling thread holds one.
    pub fn optimize(&self, substrings: Option<u32>) -> Result<OptimizeReport> {
        let _lock = self.lock_writer(true)?;
        let (mut txn, view, mut meta, generation) = self.begin_write()?;
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
        let record = reload_record(&meta);
        store::guard(&self.dir, || {
            txn.put_tables(&rebuilt)?;
            txn.put_meta(&meta)?;
            txn.put_generation(generation + 1, Some(&record))
        })?;
        self.commit_and_publish(txn, meta, generation + 1, Next::Replace(rebuilt))?;
        Ok(OptimizeReport {
            old_substrings,
            new_substrings,
        })
    }

    /// Gives the file space freed by earlier commits back to the file system (redb compaction),
    /// under the writer's turn. Returns false when nothing could be reclaimed. Fails with
    /// [`WriteError::ReadersOpen`] while a [`Reader`] of this handle, or a read of another handle or
    /// process, is alive (the space is reused by later commits all the same).
    pub fn compact(&self) -> Result<bool> {
        let dir = self.dir.clone();
        store::guard(&dir, || self.store.compact())
    }

    /// Commits `txn`, which makes `generation`, and makes its snapshot this handle's current
    /// one. Readers do not wait for the commit: one that begins after it catches up from the
    /// log itself, and then this publish has nothing left to do. A snapshot that keeps its
    /// tables is derived here, from the current one taken out of the lock, so that it grows in
    /// place when no reader holds it.
    fn commit_and_publish(
        &self,
        txn: StoreWrite,
        meta: MetaRecord,
        generation: u64,
        next: Next,
    ) -> Result<()> {
        txn.commit()?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.generation + 1 != generation {
            return Ok(());
        }
        let next = match next {
            Next::Replace(view) => view,
            Next::Append {
                ids,
                words,
                deletes,
            } => current.take_appended(&ids, &words, &deletes),
        };
        *current = Current {
            generation,
            meta,
            view: Arc::new(next),
        };
        Ok(())
    }
}
