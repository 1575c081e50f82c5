//! The redb database behind an index, and the only module that touches redb.
//!
//! The byte layout of every table is specified in `index-format/README.md` and encoded by the
//! `milan-index-format` crate; this module moves those bytes in and out of redb:
//! - [`Store`]: the database file, created, or opened writable or read-only;
//! - [`StoreRead`]: one read transaction: the meta record, the image binding, items, kept
//!   features, the key and content-hash lookups, import progress, and the search snapshot
//!   ([`StoreRead::load_view`]);
//! - [`StoreWrite`]: one write transaction over the same records, committed whole or not at all;
//! - [`blocks`]: codes in blocks of [`block_ids`](milan_index_format::block_ids) ids;
//! - [`tables`]: the hash tables as whole arrays, in parts;
//! - [`legacy`]: versions 1 and 2 (one entry per code, buckets in chunks), read and upgraded;
//! - [`check`](mod@check): the full invariant check behind `milan index check`;
//! - [`turn`]: the writer's turn, which processes sharing an index take one at a time.
//!
//! Every handle opens the database in the storage engine's multi-writer mode: any number of
//! processes may have it open, readers never wait for writers, and each write (including a
//! writable open, which may recover the file) first takes the writer's [`Turn`].
//!
//! redb's errors become [`Error`]s here ([`storage_error`]) and nowhere else.

mod blocks;
pub(crate) mod check;
mod legacy;
mod records;
mod tables;
mod turn;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use milan_index_format::{
    CommitRecord, ImportRecord, ItemRecord, MetaRecord, ModelRecord, TablesRecord,
    CODE_BLOCKS_TABLE, COMMITS_TABLE, COMMIT_LOG_LEN, CONTENT_HASHES_TABLE, FEATURES_TABLE,
    GENERATION_KEY, HASH_TABLES_TABLE, HEAD_KEY, IMPORTS_TABLE, ITEMS_TABLE, KEYS_TABLE,
    KEYS_VERSION, META_KEY, META_TABLE, MODEL_KEY, PART_KEY_BYTES, TABLES_KEY,
};
use redb::{
    ConcurrencyMode, MultimapTableDefinition, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableMultimapTable, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::contract::ExtractorContract;
use crate::error::{Error, OpenError, Result, WriteError};
use crate::head::HashHead;
use crate::index::Item;
use crate::mih::View;

pub(crate) use check::CheckReport;
pub(crate) use turn::{LockSettings, Turn};
pub use turn::{LockWait, DEFAULT_LOCK_TIMEOUT};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new(META_TABLE);
const ITEMS: TableDefinition<u64, &[u8]> = TableDefinition::new(ITEMS_TABLE);
const CODE_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new(CODE_BLOCKS_TABLE);
const HASH_TABLES: TableDefinition<&[u8; PART_KEY_BYTES], &[u8]> =
    TableDefinition::new(HASH_TABLES_TABLE);
const CONTENT_HASHES: MultimapTableDefinition<&[u8; 32], u64> =
    MultimapTableDefinition::new(CONTENT_HASHES_TABLE);
const KEYS: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new(KEYS_TABLE);
const FEATURES: TableDefinition<u64, &[u8]> = TableDefinition::new(FEATURES_TABLE);
const IMPORTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new(IMPORTS_TABLE);
const COMMITS: TableDefinition<u64, &[u8]> = TableDefinition::new(COMMITS_TABLE);

/// The first format version with code blocks and whole hash tables; older ones are read by
/// [`legacy`].
pub(crate) const BLOCKS_VERSION: u32 = 3;

/// The storage engine's settings for every handle: processes share the file, any of them may
/// write (one transaction at a time), and readers follow the commits of all.
fn builder(cache_bytes: usize) -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder
        .set_cache_size(cache_bytes)
        .set_concurrency_mode(ConcurrencyMode::MultiWriter);
    builder
}

/// Maps a storage error on the database at `path`, naming damage and locks as such.
pub(crate) fn storage_error(path: &Path, err: impl Into<redb::Error>) -> Error {
    let err: redb::Error = err.into();
    let path = path.to_path_buf();
    match err {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            Error::Open(OpenError::Locked { path })
        }
        redb::Error::Corrupted(detail) => Error::Corrupted { path, detail },
        redb::Error::TransactionInProgress => Error::Write(WriteError::ReadersOpen { path }),
        redb::Error::RepairAborted => Error::Open(OpenError::NeedsRecovery { path }),
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => Error::Corrupted {
            path,
            detail: format!("not a readable database file ({io})"),
        },
        redb::Error::UpgradeRequired(version) => Error::Corrupted {
            path,
            detail: format!("storage file format {version} is not supported"),
        },
        other => Error::Storage {
            path,
            source: Box::new(other),
        },
    }
}

fn corrupted(dir: &Path, detail: impl Into<String>) -> Error {
    Error::Corrupted {
        path: dir.to_path_buf(),
        detail: detail.into(),
    }
}

/// Runs a read of the database, turning a panic of the storage engine on damaged data into
/// [`Error::Corrupted`]: opens no longer verify every page's checksum (that is the full
/// check's job), and this keeps a damaged file from taking the process down with it.
pub(crate) fn guard<T>(path: &Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(Error::Corrupted {
            path: path.to_path_buf(),
            detail: format!("the storage engine failed on damaged data ({detail})"),
        })
    })
}

/// An open redb database, shared by its [`Store`] and the [`StoreRead`]s it hands out: redb
/// closes the file when the database is dropped, so each read transaction holds it open until
/// the last of them is gone.
#[derive(Clone)]
enum Db {
    /// Locked for writing only by the operations that need the database alone (compaction, the
    /// structural check); transactions begin under the read lock.
    Writable(Arc<RwLock<SafeClose<redb::Database>>>),
    ReadOnly(Arc<ReadOnlyDatabase>),
}

/// A redb database or write transaction whose closing cannot take the process down: redb writes
/// its allocator state when a writable database closes, and rolls back a transaction dropped
/// uncommitted, either of which can panic on a damaged file that nothing read deeply enough to
/// refuse (opens no longer verify every page). That panic is caught; while the thread is already
/// unwinding from an earlier one the value is left unclosed instead (a second panic would
/// abort), and redb recovers at the next open.
struct SafeClose<T>(Option<T>);

impl<T> SafeClose<T> {
    fn new(value: T) -> SafeClose<T> {
        SafeClose(Some(value))
    }

    fn get(&self) -> &T {
        self.0.as_ref().expect("taken only when closed")
    }

    fn get_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("taken only when closed")
    }

    /// The value, to be closed by the caller (a transaction's commit).
    fn take(&mut self) -> T {
        self.0.take().expect("taken only when closed")
    }
}

impl<T> std::ops::Deref for SafeClose<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.get()
    }
}

impl<T> Drop for SafeClose<T> {
    fn drop(&mut self) {
        let Some(value) = self.0.take() else {
            return;
        };
        if std::thread::panicking() {
            std::mem::forget(value);
            return;
        }
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)));
    }
}

/// The database file of an index.
pub(crate) struct Store {
    db: Db,
    dir: PathBuf,
    path: PathBuf,
    /// How this handle's writes wait for their turn.
    lock: LockSettings,
}

impl Store {
    /// Creates the database at `path` (in index directory `dir`) with its meta record, the image
    /// binding if any, and every table. An index that another process created meanwhile is
    /// [`OpenError::AlreadyExists`].
    pub(crate) fn create(
        dir: &Path,
        path: &Path,
        cache_bytes: usize,
        lock: LockSettings,
        meta: &MetaRecord,
        binding: Option<(&ExtractorContract, &HashHead)>,
    ) -> Result<Store> {
        let turn = Turn::take(dir, &lock)?;
        if path.exists() {
            return Err(Error::Open(OpenError::AlreadyExists {
                path: dir.to_path_buf(),
            }));
        }
        let db = builder(cache_bytes)
            .create(path)
            .map_err(|err| storage_error(path, err))?;
        drop(turn);
        let store = Store {
            db: Db::Writable(Arc::new(RwLock::new(SafeClose::new(db)))),
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            lock,
        };
        let mut txn = store.write()?;
        txn.put_meta(meta)?;
        txn.put_generation(0, None)?;
        let create = || -> std::result::Result<(), redb::Error> {
            let mut table = txn.txn.open_table(META)?;
            if let Some((model, head)) = binding {
                table.insert(MODEL_KEY, records::model_record(model).encode().as_slice())?;
                table.insert(HEAD_KEY, head.as_bytes())?;
            }
            txn.txn.open_table(FEATURES)?;
            txn.txn.open_table(ITEMS)?;
            txn.txn.open_table(CODE_BLOCKS)?;
            txn.txn.open_table(HASH_TABLES)?;
            txn.txn.open_multimap_table(CONTENT_HASHES)?;
            txn.txn.open_multimap_table(KEYS)?;
            Ok(())
        };
        create().map_err(|err| storage_error(path, err))?;
        txn.commit()?;
        Ok(store)
    }

    /// Opens the database at `path` (in index directory `dir`). A writable open shows the meta
    /// record to `accept` through a read-only handle first, so that an index of another format
    /// version or layout is refused before anything could write to it. Nothing is read beyond
    /// that: the open costs the same whatever the index holds.
    ///
    /// A writable open takes the writer's turn, since the storage engine may recover the file
    /// (after a killed writer) and waits for other processes' transactions. A read-only open
    /// waits for nothing; when a killed writer left the file to recover, it recovers it through
    /// a writable open first, under the turn, and fails with [`OpenError::NeedsRecovery`] only when
    /// it may not write.
    pub(crate) fn open(
        dir: &Path,
        path: &Path,
        cache_bytes: usize,
        lock: LockSettings,
        writable: bool,
        accept: impl Fn(&MetaRecord) -> Result<()>,
    ) -> Result<Store> {
        let st = |err: redb::DatabaseError| storage_error(path, err);
        let db = if writable {
            let turn = Turn::take(dir, &lock)?;
            match builder(cache_bytes).open_read_only(path) {
                Ok(db) => {
                    let txn = db.begin_read().map_err(|err| storage_error(path, err))?;
                    accept(&read_meta(dir, path, &txn)?)?;
                }
                // Left by a killed writer: the writable open below recovers it first.
                Err(redb::DatabaseError::RepairAborted) => {}
                Err(err) => return Err(st(err)),
            }
            let db = builder(cache_bytes).open(path).map_err(st)?;
            drop(turn);
            Db::Writable(Arc::new(RwLock::new(SafeClose::new(db))))
        } else {
            match builder(cache_bytes).open_read_only(path) {
                Ok(db) => Db::ReadOnly(Arc::new(db)),
                Err(redb::DatabaseError::RepairAborted) => {
                    recover(dir, path, cache_bytes, &lock)?;
                    Db::ReadOnly(Arc::new(
                        builder(cache_bytes).open_read_only(path).map_err(st)?,
                    ))
                }
                Err(err) => return Err(st(err)),
            }
        };
        Ok(Store {
            db,
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            lock,
        })
    }

    /// Opens the database at `path` writable for the full check, with redb's structural check
    /// first (under the writer's turn: no other process writes while it runs); returns the
    /// store and whether that check passed.
    pub(crate) fn open_for_check(
        dir: &Path,
        path: &Path,
        cache_bytes: usize,
        lock: LockSettings,
    ) -> Result<(Store, bool)> {
        let turn = Turn::take(dir, &lock)?;
        let mut db = builder(cache_bytes)
            .open(path)
            .map_err(|err| storage_error(path, err))?;
        let ok = db
            .check_integrity()
            .map_err(|err| storage_error(path, err))?;
        drop(turn);
        let store = Store {
            db: Db::Writable(Arc::new(RwLock::new(SafeClose::new(db)))),
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            lock,
        };
        Ok((store, ok))
    }

    /// How long this handle's writes wait for their turn.
    pub(crate) fn lock_timeout(&self) -> std::time::Duration {
        self.lock.timeout
    }

    /// The index directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn is_writable(&self) -> bool {
        matches!(self.db, Db::Writable(_))
    }

    /// The database file's length in bytes.
    pub(crate) fn file_bytes(&self) -> Result<u64> {
        file_bytes(&self.path)
    }

    /// Starts a read transaction: a snapshot of the last commit.
    pub(crate) fn read(&self) -> Result<StoreRead> {
        let txn = match &self.db {
            Db::Writable(db) => db
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get()
                .begin_read(),
            Db::ReadOnly(db) => db.begin_read(),
        }
        .map_err(|err| storage_error(&self.path, err))?;
        Ok(StoreRead {
            txn,
            _db: self.db.clone(),
            dir: self.dir.clone(),
            path: self.path.clone(),
        })
    }

    /// Starts the write transaction (one at a time, among all processes): takes the writer's
    /// turn, waiting up to the lock timeout for another process's write to end.
    pub(crate) fn write(&self) -> Result<StoreWrite> {
        let Db::Writable(db) = &self.db else {
            return Err(Error::Write(WriteError::ReadOnly {
                path: self.dir.clone(),
            }));
        };
        let turn = Turn::take(&self.dir, &self.lock)?;
        let txn = db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get()
            .begin_write()
            .map_err(|err| storage_error(&self.path, err))?;
        Ok(StoreWrite {
            txn: SafeClose::new(txn),
            _turn: turn,
            dir: self.dir.clone(),
            path: self.path.clone(),
        })
    }

    /// redb's structural check (writable handles only; `None` on a read-only one), under the
    /// writer's turn. Fails with [`WriteError::ReadersOpen`] while a transaction of this store is
    /// alive (redb refuses it), and holds this store's new transactions back while it runs.
    pub(crate) fn check_structure(&self) -> Result<Option<bool>> {
        match &self.db {
            Db::Writable(db) => {
                let _turn = Turn::take(&self.dir, &self.lock)?;
                let mut db = db.write().unwrap_or_else(|e| e.into_inner());
                Ok(Some(
                    db.get_mut()
                        .check_integrity()
                        .map_err(|err| storage_error(&self.path, err))?,
                ))
            }
            Db::ReadOnly(_) => Ok(None),
        }
    }

    /// Gives the file space freed by earlier commits back to the file system, under the
    /// writer's turn. Fails with [`WriteError::ReadersOpen`] while a read of this store or of another
    /// process is alive (redb refuses it), and holds new reads back while it runs.
    pub(crate) fn compact(&self) -> Result<bool> {
        let Db::Writable(db) = &self.db else {
            return Err(Error::Write(WriteError::ReadOnly {
                path: self.dir.clone(),
            }));
        };
        let _turn = Turn::take(&self.dir, &self.lock)?;
        let mut db = db.write().unwrap_or_else(|e| e.into_inner());
        let mut compacted = false;
        while db
            .get_mut()
            .compact()
            .map_err(|err| storage_error(&self.path, err))?
        {
            compacted = true;
        }
        Ok(compacted)
    }
}

/// Recovers the database at `path`, left by a killed writer, through a writable open under the
/// writer's turn; [`OpenError::NeedsRecovery`] when this process may not write to the index.
fn recover(dir: &Path, path: &Path, cache_bytes: usize, lock: &LockSettings) -> Result<()> {
    let needs_recovery = || {
        Error::Open(OpenError::NeedsRecovery {
            path: path.to_path_buf(),
        })
    };
    let turn = match Turn::take(dir, lock) {
        Err(Error::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            return Err(needs_recovery())
        }
        other => other?,
    };
    let db = match builder(cache_bytes).open(path) {
        Ok(db) => db,
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(io)))
            if matches!(
                io.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            return Err(needs_recovery())
        }
        Err(err) => return Err(storage_error(path, err)),
    };
    drop(SafeClose::new(db));
    drop(turn);
    Ok(())
}

/// The length in bytes of the database file at `path`.
fn file_bytes(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|meta| meta.len())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads and decodes the meta record.
fn read_meta(dir: &Path, path: &Path, txn: &ReadTransaction) -> Result<MetaRecord> {
    let table = match txn.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(Error::Open(OpenError::NotAnIndex {
                path: dir.to_path_buf(),
            }))
        }
        Err(err) => return Err(storage_error(path, err)),
    };
    let bytes = table
        .get(META_KEY)
        .map_err(|err| storage_error(path, err))?
        .ok_or_else(|| {
            Error::Open(OpenError::NotAnIndex {
                path: dir.to_path_buf(),
            })
        })?;
    MetaRecord::decode(bytes.value()).map_err(|err| Error::from_decode(dir, err))
}

/// Opens a table that a file may lack (`features` until features are kept, `imports` until an
/// import records progress, and both in older versions): `None` when it is absent.
fn open_optional<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
) -> std::result::Result<Option<redb::ReadOnlyTable<K, V>>, redb::TableError> {
    match txn.open_table(table) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The ids a content-hash table holds under `hash`.
fn ids_under(
    table: &impl ReadableMultimapTable<&'static [u8; 32], u64>,
    hash: &[u8; 32],
    path: &Path,
) -> Result<Vec<u64>> {
    let ids = table.get(hash).map_err(|err| storage_error(path, err))?;
    collect_ids(ids, path)
}

/// The ids a key table holds under `key`, in increasing order.
fn ids_under_key(
    table: &impl ReadableMultimapTable<&'static str, u64>,
    key: &str,
    path: &Path,
) -> Result<Vec<u64>> {
    let ids = table.get(key).map_err(|err| storage_error(path, err))?;
    collect_ids(ids, path)
}

/// The values of one key of a multimap table of ids.
fn collect_ids(ids: redb::MultimapValue<'_, u64>, path: &Path) -> Result<Vec<u64>> {
    ids.map(|id| Ok(id.map_err(|err| storage_error(path, err))?.value()))
        .collect()
}

/// The progress record of the import of `source` in an imports table.
fn import_record(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    source: &[u8; 32],
    dir: &Path,
    path: &Path,
) -> Result<Option<ImportRecord>> {
    let Some(bytes) = table.get(source).map_err(|err| storage_error(path, err))? else {
        return Ok(None);
    };
    ImportRecord::decode(bytes.value())
        .map(Some)
        .map_err(|err| Error::from_decode(dir, err))
}

/// One read transaction. It keeps the database open while it lives.
pub(crate) struct StoreRead {
    /// Declared before `_db`, so that the transaction ends before the database can close.
    txn: ReadTransaction,
    _db: Db,
    dir: PathBuf,
    path: PathBuf,
}

impl StoreRead {
    fn st(&self, err: impl Into<redb::Error>) -> Error {
        storage_error(&self.path, err)
    }

    /// The database file's length in bytes: what bounds every allocation a read makes.
    fn file_bytes(&self) -> Result<u64> {
        file_bytes(&self.path)
    }

    /// The meta record.
    pub(crate) fn meta(&self) -> Result<MetaRecord> {
        read_meta(&self.dir, &self.path, &self.txn)
    }

    /// The extractor and head an image index is bound to (both absent for a code-only index).
    pub(crate) fn binding(&self) -> Result<(Option<ExtractorContract>, Option<HashHead>)> {
        let table = self.txn.open_table(META).map_err(|err| self.st(err))?;
        let get = |key: &str| -> Result<Option<Vec<u8>>> {
            Ok(table
                .get(key)
                .map_err(|err| self.st(err))?
                .map(|bytes| bytes.value().to_vec()))
        };
        let model = match get(MODEL_KEY)? {
            Some(bytes) => Some(records::contract_from_record(
                ModelRecord::decode(&bytes).map_err(|err| Error::from_decode(&self.dir, err))?,
            )),
            None => None,
        };
        let head = match get(HEAD_KEY)? {
            Some(bytes) => Some(
                HashHead::from_bytes(bytes)
                    .map_err(|err| corrupted(&self.dir, format!("the stored hash head: {err}")))?,
            ),
            None => None,
        };
        if model.is_some() != head.is_some() {
            return Err(corrupted(
                &self.dir,
                "the index stores a model record without a head, or the reverse",
            ));
        }
        Ok((model, head))
    }

    /// The generation: the commits made since the index was created or upgraded to format
    /// version 4 (0 for older versions, which do not count them).
    pub(crate) fn generation(&self) -> Result<u64> {
        let table = self.txn.open_table(META).map_err(|err| self.st(err))?;
        let Some(bytes) = table.get(GENERATION_KEY).map_err(|err| self.st(err))? else {
            return Ok(0);
        };
        milan_index_format::decode_generation(bytes.value())
            .map_err(|err| Error::from_decode(&self.dir, err))
    }

    /// The records of the commits that made generations `after + 1 ..= upto`, in order, or
    /// `None` when the log no longer holds all of them.
    pub(crate) fn commits(&self, after: u64, upto: u64) -> Result<Option<Vec<CommitRecord>>> {
        let Some(table) = open_optional(&self.txn, COMMITS).map_err(|err| self.st(err))? else {
            return Ok(None);
        };
        if upto.saturating_sub(after) > COMMIT_LOG_LEN {
            return Ok(None);
        }
        let mut records = Vec::with_capacity((upto - after) as usize);
        for generation in after + 1..=upto {
            let Some(bytes) = table.get(generation).map_err(|err| self.st(err))? else {
                return Ok(None);
            };
            records.push(
                CommitRecord::decode(bytes.value())
                    .map_err(|err| Error::from_decode(&self.dir, err))?,
            );
        }
        Ok(Some(records))
    }

    /// The stored codes of ids `from .. to`: their ids and their words one after another.
    pub(crate) fn codes_between(
        &self,
        code_bytes: usize,
        from: u64,
        to: u64,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        let load = || -> std::result::Result<_, StoreError> {
            let table = self.txn.open_table(CODE_BLOCKS)?;
            blocks::load_range(&table, code_bytes, from, to)
        };
        load().map_err(|err| err.into_error(&self.dir, &self.path))
    }

    /// Ids the stored hash tables cover (format version 3; `None` without tables).
    pub(crate) fn tables_slots(&self) -> Result<Option<u64>> {
        Ok(self.tables_record()?.map(|record| record.slots))
    }

    /// The hash tables' record (format version 3): `None` while no code is filed in tables.
    fn tables_record(&self) -> Result<Option<TablesRecord>> {
        let table = self.txn.open_table(META).map_err(|err| self.st(err))?;
        let Some(bytes) = table.get(TABLES_KEY).map_err(|err| self.st(err))? else {
            return Ok(None);
        };
        TablesRecord::decode(bytes.value())
            .map(Some)
            .map_err(|err| Error::from_decode(&self.dir, err))
    }

    /// The search snapshot of every stored code: read from the code blocks and the hash tables
    /// (or, for versions 1 and 2, from one entry per code and the bucket chunks). Checks what
    /// keeps the search in bounds and every allocation within what the file holds; the
    /// invariants that only decide answers are the full check's.
    pub(crate) fn load_view(&self, meta: &MetaRecord) -> Result<View> {
        if meta.format_version < BLOCKS_VERSION {
            return legacy::load_view(&self.dir, &self.txn, meta, self.file_bytes()?);
        }
        let file_bytes = self.file_bytes()?;
        let record = self.tables_record()?;
        let load = || -> std::result::Result<View, StoreError> {
            let codes = self.txn.open_table(CODE_BLOCKS)?;
            let stored = blocks::load(&codes, meta, file_bytes)?;
            let parts = self.txn.open_table(HASH_TABLES)?;
            tables::load(&parts, meta, record, stored, file_bytes)
        };
        load().map_err(|err| err.into_error(&self.dir, &self.path))
    }

    /// The item stored with `id`: `None` when there is no record (a live id without one has
    /// the empty item).
    pub(crate) fn item(&self, id: u64) -> Result<Option<Item>> {
        let table = self.txn.open_table(ITEMS).map_err(|err| self.st(err))?;
        let Some(bytes) = table.get(id).map_err(|err| self.st(err))? else {
            return Ok(None);
        };
        ItemRecord::decode(bytes.value())
            .map(|record| Some(records::item_from_record(record)))
            .map_err(|err| Error::from_decode(&self.dir, err))
    }

    /// The features kept for `id`, of dimension `dim`.
    pub(crate) fn features(&self, id: u64, dim: u32) -> Result<Option<Vec<f32>>> {
        let Some(table) = open_optional(&self.txn, FEATURES).map_err(|err| self.st(err))? else {
            return Ok(None);
        };
        let Some(bytes) = table.get(id).map_err(|err| self.st(err))? else {
            return Ok(None);
        };
        milan_index_format::decode_features(bytes.value(), dim)
            .map(Some)
            .map_err(|err| Error::from_decode(&self.dir, err))
    }

    /// The ids stored under a content hash.
    pub(crate) fn ids_with_content_hash(&self, hash: &[u8; 32]) -> Result<Vec<u64>> {
        let table = self
            .txn
            .open_multimap_table(CONTENT_HASHES)
            .map_err(|err| self.st(err))?;
        ids_under(&table, hash, &self.path)
    }

    /// The ids of the items stored under `key`, in increasing order. A file older than
    /// [`KEYS_VERSION`] (opened read-only: a writable open upgrades it) has no key lookup, and is
    /// answered by a scan of every item record instead.
    pub(crate) fn ids_with_key(&self, key: &str) -> Result<Vec<u64>> {
        if self.meta()?.format_version < KEYS_VERSION {
            return self.scan_ids_with_key(key);
        }
        let table = match self.txn.open_multimap_table(KEYS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(corrupted(&self.dir, "the keys table is missing"))
            }
            Err(err) => return Err(self.st(err)),
        };
        ids_under_key(&table, key, &self.path)
    }

    /// The ids of the item records whose key is `key`, read one record after another.
    fn scan_ids_with_key(&self, key: &str) -> Result<Vec<u64>> {
        let table = self.txn.open_table(ITEMS).map_err(|err| self.st(err))?;
        let mut ids = Vec::new();
        for entry in table.iter().map_err(|err| self.st(err))? {
            let (id, bytes) = entry.map_err(|err| self.st(err))?;
            let item = ItemRecord::decode(bytes.value())
                .map_err(|err| Error::from_decode(&self.dir, err))?;
            if item.key.as_deref() == Some(key) {
                ids.push(id.value());
            }
        }
        Ok(ids)
    }

    /// The ids of every content hash stored with two ids or more.
    pub(crate) fn shared_content_hashes(&self) -> Result<Vec<Vec<u64>>> {
        let table = self
            .txn
            .open_multimap_table(CONTENT_HASHES)
            .map_err(|err| self.st(err))?;
        let mut groups = Vec::new();
        for entry in table.iter().map_err(|err| self.st(err))? {
            let (_, ids) = entry.map_err(|err| self.st(err))?;
            let ids = ids
                .map(|id| Ok(id.map_err(|err| self.st(err))?.value()))
                .collect::<Result<Vec<u64>>>()?;
            if ids.len() > 1 {
                groups.push(ids);
            }
        }
        Ok(groups)
    }

    /// Every content hash stored.
    pub(crate) fn content_hashes(&self) -> Result<HashSet<[u8; 32]>> {
        let table = self
            .txn
            .open_multimap_table(CONTENT_HASHES)
            .map_err(|err| self.st(err))?;
        let iter = table.iter().map_err(|err| self.st(err))?;
        iter.map(|entry| Ok(*entry.map_err(|err| self.st(err))?.0.value()))
            .collect()
    }

    /// The progress record of the import of `source` (`None` when there is none, including in
    /// a version-1 file, which has no imports table).
    pub(crate) fn import(&self, source: &[u8; 32]) -> Result<Option<ImportRecord>> {
        let Some(table) = open_optional(&self.txn, IMPORTS).map_err(|err| self.st(err))? else {
            return Ok(None);
        };
        import_record(&table, source, &self.dir, &self.path)
    }

    /// Every invariant of the stored index, each violation listed (see [`check`](mod@check)).
    pub(crate) fn check(&self) -> Result<CheckReport> {
        let meta = self.meta()?;
        if meta.format_version < BLOCKS_VERSION {
            return legacy::check(&self.dir, &self.txn, &meta, self);
        }
        check::check(self, &meta)
    }
}

/// A failure inside the code block and hash table modules: damage found in the bytes, or the
/// storage engine's own error, mapped once the index's paths are at hand.
enum StoreError {
    Corrupted(String),
    Storage(redb::Error),
}

impl StoreError {
    fn into_error(self, dir: &Path, path: &Path) -> Error {
        match self {
            StoreError::Corrupted(detail) => corrupted(dir, detail),
            StoreError::Storage(err) => storage_error(path, err),
        }
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(err: redb::StorageError) -> StoreError {
        StoreError::Storage(err.into())
    }
}

impl From<redb::TableError> for StoreError {
    fn from(err: redb::TableError) -> StoreError {
        StoreError::Storage(err.into())
    }
}

/// The write transaction. Dropped without [`StoreWrite::commit`], it changes nothing.
pub(crate) struct StoreWrite {
    txn: SafeClose<WriteTransaction>,
    /// The writer's turn, released after the transaction ends (fields drop in order).
    _turn: Turn,
    dir: PathBuf,
    path: PathBuf,
}

impl StoreWrite {
    fn st(&self, err: impl Into<redb::Error>) -> Error {
        storage_error(&self.path, err)
    }

    /// Writes the meta record.
    pub(crate) fn put_meta(&mut self, meta: &MetaRecord) -> Result<()> {
        let mut table = self.txn.open_table(META).map_err(|err| self.st(err))?;
        table
            .insert(META_KEY, meta.encode().as_slice())
            .map_err(|err| self.st(err))?;
        Ok(())
    }

    /// Stores the generation this transaction makes and, unless it is the first, the record of
    /// what it changed; drops the record that falls out of the log.
    pub(crate) fn put_generation(
        &mut self,
        generation: u64,
        record: Option<&CommitRecord>,
    ) -> Result<()> {
        let mut meta = self.txn.open_table(META).map_err(|err| self.st(err))?;
        meta.insert(GENERATION_KEY, generation.to_le_bytes().as_slice())
            .map_err(|err| self.st(err))?;
        let mut commits = self.txn.open_table(COMMITS).map_err(|err| self.st(err))?;
        if let Some(record) = record {
            commits
                .insert(generation, record.encode().as_slice())
                .map_err(|err| self.st(err))?;
        }
        if let Some(expired) = generation.checked_sub(COMMIT_LOG_LEN) {
            commits.remove(expired).map_err(|err| self.st(err))?;
        }
        Ok(())
    }

    /// The progress record of the import of `source`, as this transaction sees it.
    pub(crate) fn import(&self, source: &[u8; 32]) -> Result<Option<ImportRecord>> {
        // Opening it creates it in this transaction, as the import's own record will.
        let table = self.txn.open_table(IMPORTS).map_err(|err| self.st(err))?;
        import_record(&table, source, &self.dir, &self.path)
    }

    /// The ids stored under a content hash, as this transaction sees them.
    pub(crate) fn ids_with_content_hash(&self, hash: &[u8; 32]) -> Result<Vec<u64>> {
        let table = self
            .txn
            .open_multimap_table(CONTENT_HASHES)
            .map_err(|err| self.st(err))?;
        ids_under(&table, hash, &self.path)
    }

    /// The ids of the items stored under `key`, as this transaction sees them (a writable
    /// handle's file is always of the current version, with its key lookup).
    pub(crate) fn ids_with_key(&self, key: &str) -> Result<Vec<u64>> {
        let table = self
            .txn
            .open_multimap_table(KEYS)
            .map_err(|err| self.st(err))?;
        ids_under_key(&table, key, &self.path)
    }

    /// Fills the key lookup from every item record (the upgrade of a file older than
    /// [`KEYS_VERSION`]). A record that does not decode is left for the full check to report.
    pub(crate) fn build_keys(&mut self) -> Result<()> {
        let build = || -> std::result::Result<(), redb::Error> {
            let items = self.txn.open_table(ITEMS)?;
            let mut keys = self.txn.open_multimap_table(KEYS)?;
            for entry in items.iter()? {
                let (id, bytes) = entry?;
                if let Ok(ItemRecord { key: Some(key), .. }) = ItemRecord::decode(bytes.value()) {
                    keys.insert(key.as_str(), id.value())?;
                }
            }
            Ok(())
        };
        build().map_err(|err| self.st(err))
    }

    /// Replaces the stored hash head (the model record stays).
    #[cfg(feature = "images")]
    pub(crate) fn put_head(&mut self, head: &HashHead) -> Result<()> {
        let mut table = self.txn.open_table(META).map_err(|err| self.st(err))?;
        table
            .insert(HEAD_KEY, head.as_bytes())
            .map_err(|err| self.st(err))?;
        Ok(())
    }

    /// Stores new codes: `ids` increasing, each with its packed bytes in `bytes` (one code after
    /// another).
    pub(crate) fn add_codes(&mut self, code_bytes: usize, ids: &[u64], bytes: &[u8]) -> Result<()> {
        let mut table = self
            .txn
            .open_table(CODE_BLOCKS)
            .map_err(|err| self.st(err))?;
        blocks::add(&mut table, code_bytes, ids, bytes)
            .map_err(|err| err.into_error(&self.dir, &self.path))
    }

    /// Removes stored codes; an id without a code is damage and fails the transaction.
    pub(crate) fn delete_codes(&mut self, code_bytes: usize, ids: &[u64]) -> Result<()> {
        let mut table = self
            .txn
            .open_table(CODE_BLOCKS)
            .map_err(|err| self.st(err))?;
        blocks::delete(&mut table, code_bytes, ids)
            .map_err(|err| err.into_error(&self.dir, &self.path))
    }

    /// Replaces every code block with the live codes of `view` (a re-coded index).
    pub(crate) fn rewrite_codes(&mut self, view: &View) -> Result<()> {
        self.txn
            .delete_table(CODE_BLOCKS)
            .map_err(|err| self.st(err))?;
        let mut table = self
            .txn
            .open_table(CODE_BLOCKS)
            .map_err(|err| self.st(err))?;
        blocks::write_view(&mut table, view).map_err(|err| err.into_error(&self.dir, &self.path))
    }

    /// Replaces the hash tables and their record with those of `view`.
    pub(crate) fn put_tables(&mut self, view: &View) -> Result<()> {
        self.txn
            .delete_table(HASH_TABLES)
            .map_err(|err| self.st(err))?;
        let mut parts = self
            .txn
            .open_table(HASH_TABLES)
            .map_err(|err| self.st(err))?;
        let record =
            tables::write(&mut parts, view).map_err(|err| err.into_error(&self.dir, &self.path))?;
        let mut meta = self.txn.open_table(META).map_err(|err| self.st(err))?;
        meta.insert(TABLES_KEY, record.encode().as_slice())
            .map_err(|err| self.st(err))?;
        Ok(())
    }

    /// Stores the item of a new id; the empty item needs no record.
    pub(crate) fn add_item(&mut self, id: u64, item: &Item) -> Result<()> {
        self.add_items([(id, item)])
    }

    /// Stores the items of new ids, with their key and content-hash entries; the empty item
    /// needs no record. Each table is opened once for the whole batch (a commit's adds), which
    /// costs less than once per item.
    pub(crate) fn add_items<'i>(
        &mut self,
        items: impl IntoIterator<Item = (u64, &'i Item)>,
    ) -> Result<()> {
        let add = || -> std::result::Result<(), redb::Error> {
            let mut items_table = self.txn.open_table(ITEMS)?;
            let mut hashes = self.txn.open_multimap_table(CONTENT_HASHES)?;
            let mut keys = self.txn.open_multimap_table(KEYS)?;
            for (id, item) in items {
                if *item == Item::default() {
                    continue;
                }
                items_table.insert(id, records::item_record(item).encode().as_slice())?;
                if let Some(hash) = &item.content_hash {
                    hashes.insert(hash, id)?;
                }
                if let Some(key) = &item.key {
                    keys.insert(key.as_str(), id)?;
                }
            }
            Ok(())
        };
        add().map_err(|err| self.st(err))
    }

    /// Replaces the item of `id`, keeping the key and content-hash lookups in step.
    pub(crate) fn replace_item(&mut self, id: u64, item: &Item) -> Result<()> {
        self.remove_item(id)?;
        self.add_item(id, item)
    }

    /// Removes the item of `id` and its key and content-hash entries; returns the removed item.
    pub(crate) fn remove_item(&mut self, id: u64) -> Result<Option<Item>> {
        let removed = {
            let mut table = self.txn.open_table(ITEMS).map_err(|err| self.st(err))?;
            let removed = table.remove(id).map_err(|err| self.st(err))?;
            removed.map(|bytes| ItemRecord::decode(bytes.value()).map(records::item_from_record))
        };
        // A record that no longer decodes is dropped all the same; its key and hash entries, if
        // any, are the full check's to report.
        let Some(Ok(item)) = removed else {
            return Ok(None);
        };
        if let Some(hash) = &item.content_hash {
            let mut hashes = self
                .txn
                .open_multimap_table(CONTENT_HASHES)
                .map_err(|err| self.st(err))?;
            hashes.remove(hash, id).map_err(|err| self.st(err))?;
        }
        if let Some(key) = &item.key {
            let mut keys = self
                .txn
                .open_multimap_table(KEYS)
                .map_err(|err| self.st(err))?;
            keys.remove(key.as_str(), id).map_err(|err| self.st(err))?;
        }
        Ok(Some(item))
    }

    /// Keeps the features `id` was coded from.
    pub(crate) fn put_features(&mut self, id: u64, features: &[f32]) -> Result<()> {
        let mut table = self.txn.open_table(FEATURES).map_err(|err| self.st(err))?;
        table
            .insert(id, milan_index_format::encode_features(features).as_slice())
            .map_err(|err| self.st(err))?;
        Ok(())
    }

    /// Drops the features kept for `id`, if any.
    pub(crate) fn remove_features(&mut self, id: u64) -> Result<()> {
        let mut table = self.txn.open_table(FEATURES).map_err(|err| self.st(err))?;
        table.remove(id).map_err(|err| self.st(err))?;
        Ok(())
    }

    /// The features kept for `id`, as this transaction sees them.
    #[cfg(feature = "images")]
    pub(crate) fn features(&self, id: u64, dim: u32) -> Result<Option<Vec<f32>>> {
        let table = self.txn.open_table(FEATURES).map_err(|err| self.st(err))?;
        let Some(bytes) = table.get(id).map_err(|err| self.st(err))? else {
            return Ok(None);
        };
        milan_index_format::decode_features(bytes.value(), dim)
            .map(Some)
            .map_err(|err| Error::from_decode(&self.dir, err))
    }

    /// Records the progress of an import.
    pub(crate) fn put_import(&mut self, source: &[u8; 32], record: &ImportRecord) -> Result<()> {
        // Created here on first use: an index without import progress has no table.
        let mut table = self.txn.open_table(IMPORTS).map_err(|err| self.st(err))?;
        table
            .insert(source, record.encode().as_slice())
            .map_err(|err| self.st(err))?;
        Ok(())
    }

    /// Converts a version-1 or version-2 file to the current version: the codes of `view` (read
    /// from the old tables) go into code blocks, its hash tables replace the bucket chunks, and
    /// the old tables are dropped. The caller writes the new meta record.
    pub(crate) fn upgrade_tables(&mut self, view: &View) -> Result<()> {
        legacy::drop_tables(&self.txn).map_err(|err| self.st(err))?;
        self.rewrite_codes(view)?;
        self.put_tables(view)
    }

    /// Makes the transaction durable.
    pub(crate) fn commit(mut self) -> Result<()> {
        let txn = self.txn.take();
        let path = self.path.clone();
        guard(&self.dir, move || {
            txn.commit().map_err(|err| storage_error(&path, err))
        })
    }
}
