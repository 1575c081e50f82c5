//! [`Writer`]: one write transaction. Adds, deletes, item updates and upserts (and import
//! progress) are buffered and reach the database, and the search snapshot, together at
//! [`Writer::commit`]; dropping the writer discards them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

#[cfg(feature = "images")]
use crate::error::ExtractError;
use milan_index_format::{ImportRecord, MetaRecord, MAX_RECORD_BYTES};

use super::{commit_record, Index, Next, WriterLock, MILAN_VERSION};
use crate::code::{extend_words, Code};
use crate::error::{CodeError, Error, Result, WriteError};
use crate::mih::{View, MAX_IDS};
use crate::store::{self, StoreWrite};

/// What is stored with a code: key, content hash, label, metadata (all optional).
///
/// ```
/// let item = milan::Item { key: Some("a.png".into()), label: Some("beach".into()), ..Default::default() };
/// assert_eq!(item.content_hash, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// The external key, such as a file path. Keys need not be unique.
    pub key: Option<String>,
    /// A hash of the content the code was made from (BLAKE3 of the file for images), by which
    /// `milan index add` and `milan index sync` skip content already indexed.
    pub content_hash: Option<[u8; 32]>,
    /// A class label.
    pub label: Option<String>,
    /// Free-form application metadata.
    pub metadata: Option<Vec<u8>>,
}

/// Most bytes of key, label and metadata together in one [`Item`]: the record limit of the
/// format, less room for the record's own framing. [`Writer::add`] refuses larger items with
/// [`WriteError::ItemTooLarge`].
pub const MAX_ITEM_BYTES: usize = MAX_RECORD_BYTES - 1024;

/// How far a bulk import of one source has come, stored with the rows it counts so that a re-run
/// after a failure can resume after the last committed row instead of adding rows again.
///
/// Recorded with [`Writer::set_import_progress`] (durable at the commit, atomically with that
/// commit's adds) and read back with [`Index::import_progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProgress {
    /// Fingerprint of the source (BLAKE3 of its input files, computed by the importer); the key
    /// the progress is stored under.
    pub source: [u8; 32],
    /// Rows in the whole source.
    pub rows: u64,
    /// Rows committed so far: the source's first `committed` rows. At most `rows`.
    pub committed: u64,
    /// The id given to the source's first row, once one is committed.
    pub first_id: Option<u64>,
}

/// What [`Writer::upsert`] did: the id of the new item and the ids of the items it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Upserted {
    /// The new item's id.
    pub id: u64,
    /// The ids that were stored under the key and are deleted by the same commit, increasing
    /// (empty when the key was new).
    pub replaced: Vec<u64>,
}

struct PendingAdd {
    id: u64,
    /// Where its code starts in the writer's `codes`.
    at: usize,
    item: Item,
    features: Option<Vec<f32>>,
}

/// A write transaction on an [`Index`].
///
/// ```
/// # fn main() -> milan::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let index = milan::Index::builder(8).create(dir.path())?;
/// let mut writer = index.writer()?;
/// let id = writer.add(&milan::Code::from_hex("0f")?, milan::Item::default())?;
/// writer.commit()?;
/// assert_eq!((id, index.len()), (0, 1));
/// # Ok(()) }
/// ```
pub struct Writer<'a> {
    index: &'a Index,
    _exclusive: WriterLock<'a>,
    txn: StoreWrite,
    /// The last commit's snapshot; current for the writer's whole life, since writes are
    /// exclusive (among processes too).
    view: Arc<View>,
    meta: MetaRecord,
    /// The last commit's generation; the commit makes the next.
    generation: u64,
    adds: Vec<PendingAdd>,
    /// The packed codes of the adds, one after another (one buffer, not one per add).
    codes: Vec<u8>,
    deletes: Vec<u64>,
    deleted: HashSet<u64>,
    /// New items for committed ids, written at commit over the stored ones.
    updates: BTreeMap<u64, Item>,
    /// The ids of this transaction's adds and updates, by their new items' keys: what the key
    /// lookup will hold for them after the commit.
    pending_keys: HashMap<String, Vec<u64>>,
    /// Import progress to store at commit, by source.
    imports: BTreeMap<[u8; 32], ImportRecord>,
    /// Leave the adds in the scanned delta whatever its size (see [`Writer::defer_merge`]).
    defer_merge: bool,
}

impl<'a> Writer<'a> {
    /// Starts the transaction; `exclusive` is the index's writer lock, taken by the caller.
    /// Waits for the writer's turn among processes, then catches up with their commits.
    pub(super) fn begin(index: &'a Index, exclusive: WriterLock<'a>) -> Result<Writer<'a>> {
        let (txn, view, meta, generation) = index.begin_write()?;
        Ok(Writer {
            view,
            meta,
            generation,
            index,
            _exclusive: exclusive,
            txn,
            adds: Vec::new(),
            codes: Vec::new(),
            deletes: Vec::new(),
            deleted: HashSet::new(),
            updates: BTreeMap::new(),
            pending_keys: HashMap::new(),
            imports: BTreeMap::new(),
            defer_merge: false,
        })
    }

    /// Adds a code with its item; returns the new id (dense, in insertion order, never reused).
    pub fn add(&mut self, code: &Code, item: Item) -> Result<u64> {
        self.add_inner(code, item, None)
    }

    /// Adds a code with its item and the feature vector it was made from, kept so that a new
    /// hash head can re-code the index later. Only for an index bound to an extractor, whose
    /// dimension the features must have.
    #[cfg(feature = "images")]
    pub fn add_with_features(
        &mut self,
        code: &Code,
        item: Item,
        features: Vec<f32>,
    ) -> Result<u64> {
        self.check_features(&features)?;
        self.add_inner(code, item, Some(features))
    }

    /// Refuses features in an index bound to no extractor, or of another dimension than its.
    #[cfg(feature = "images")]
    fn check_features(&self, features: &[f32]) -> Result<()> {
        let Some(model) = self.index.model() else {
            return Err(Error::InvalidArgument {
                detail: "features can only be kept in an index bound to an extractor".into(),
            });
        };
        if features.len() != model.dim as usize {
            return Err(Error::Extract(ExtractError::FeatureDim {
                expected: model.dim,
                got: features.len() as u32,
            }));
        }
        Ok(())
    }

    fn add_inner(&mut self, code: &Code, item: Item, features: Option<Vec<f32>>) -> Result<u64> {
        let bits = self.view.layout().bits();
        if code.bits() != bits {
            return Err(Error::Code(CodeError::CodeLength {
                expected: bits,
                got: code.bits(),
            }));
        }
        if self.meta.next_id >= MAX_IDS {
            return Err(Error::Write(WriteError::Full { max: MAX_IDS }));
        }
        check_item_size(&item)?;
        let id = self.meta.next_id;
        self.meta.next_id += 1;
        self.note_key(item.key.as_deref(), id);
        let at = self.codes.len();
        self.codes.extend_from_slice(code.as_bytes());
        self.adds.push(PendingAdd {
            id,
            at,
            item,
            features,
        });
        Ok(id)
    }

    /// Notes that `id` will be stored under `key`, for [`Writer::ids_with_key`].
    fn note_key(&mut self, key: Option<&str>, id: u64) {
        if let Some(key) = key {
            self.pending_keys
                .entry(key.to_string())
                .or_default()
                .push(id);
        }
    }

    /// Forgets what [`Writer::note_key`] noted for `id` under `key`.
    fn forget_key(&mut self, key: Option<&str>, id: u64) {
        let Some(key) = key else {
            return;
        };
        if let Some(ids) = self.pending_keys.get_mut(key) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.pending_keys.remove(key);
            }
        }
    }

    /// Deletes a live id (committed, or added in this transaction). Returns false when there is no
    /// such live id.
    pub fn delete(&mut self, id: u64) -> Result<bool> {
        if let Ok(at) = self.adds.binary_search_by_key(&id, |add| add.id) {
            let add = self.adds.remove(at);
            self.forget_key(add.item.key.as_deref(), id);
            return Ok(true);
        }
        if self.view.is_live(id) && self.deleted.insert(id) {
            self.deletes.push(id);
            // A deleted id keeps no item, so an update of it is moot.
            if let Some(update) = self.updates.remove(&id) {
                self.forget_key(update.key.as_deref(), id);
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// The live ids stored under `key` ([`Item::key`]) as this transaction leaves them: the
    /// last commit of any process with this writer's adds, deletes and item updates applied
    /// (unlike [`Writer::ids_with_content_hash`], which sees committed items only). In
    /// increasing order; empty when no item has the key.
    pub fn ids_with_key(&self, key: &str) -> Result<Vec<u64>> {
        let committed = store::guard(&self.index.dir, || self.txn.ids_with_key(key))?;
        let mut ids: Vec<u64> = committed
            .into_iter()
            // An updated id is listed under its new key, in `pending_keys`.
            .filter(|id| !self.deleted.contains(id) && !self.updates.contains_key(id))
            .collect();
        if let Some(pending) = self.pending_keys.get(key) {
            ids.extend_from_slice(pending);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Deletes every live item stored under `key` (see [`Writer::ids_with_key`]), including
    /// this transaction's own adds; returns their ids, increasing (empty when none had it).
    /// Other handles and processes see the deletes after the commit, like any other.
    ///
    /// ```
    /// # fn main() -> milan::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use milan::{Code, Index, Item};
    /// let index = Index::builder(8).create(dir.path())?;
    /// let keyed = |key: &str| Item { key: Some(key.into()), ..Item::default() };
    /// let mut writer = index.writer()?;
    /// writer.add(&Code::from_hex("01")?, keyed("a.png"))?;
    /// writer.add(&Code::from_hex("02")?, keyed("a.png"))?; // keys need not be unique
    /// writer.add(&Code::from_hex("03")?, keyed("b.png"))?;
    /// writer.commit()?;
    /// let mut writer = index.writer()?;
    /// assert_eq!(writer.delete_key("a.png")?, [0, 1]);
    /// writer.commit()?;
    /// assert_eq!(index.reader()?.ids().collect::<Vec<_>>(), [2]);
    /// # Ok(()) }
    /// ```
    pub fn delete_key(&mut self, key: &str) -> Result<Vec<u64>> {
        let ids = self.ids_with_key(key)?;
        for &id in &ids {
            self.delete(id)?;
        }
        Ok(ids)
    }

    /// Adds `code` with `item` in place of every live item stored under `item.key`: the new
    /// item gets a new id (ids are never reused), and the items the key held before (committed,
    /// or added in this transaction) are deleted, all at the commit. Afterwards the key holds
    /// exactly the new item. Returns the new id and the replaced ids. Readers of other handles
    /// and processes see the add and the deletes together after the commit.
    ///
    /// Errors: [`Error::InvalidArgument`] for an item without a key, and those of
    /// [`Writer::add`]; on any error nothing is added or deleted.
    ///
    /// ```
    /// # fn main() -> milan::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use milan::{Code, Index, Item};
    /// let index = Index::builder(8).create(dir.path())?;
    /// let keyed = |key: &str| Item { key: Some(key.into()), ..Item::default() };
    /// let mut writer = index.writer()?;
    /// let first = writer.upsert(&Code::from_hex("01")?, keyed("a.png"))?;
    /// assert!(first.replaced.is_empty());
    /// writer.commit()?;
    /// let mut writer = index.writer()?;
    /// let second = writer.upsert(&Code::from_hex("f0")?, keyed("a.png"))?;
    /// assert_eq!(second.replaced, [first.id]);
    /// writer.commit()?;
    /// let reader = index.reader()?;
    /// assert_eq!(reader.ids_with_key("a.png")?, [second.id]);
    /// assert_eq!(reader.code(second.id), Some(Code::from_hex("f0")?));
    /// # Ok(()) }
    /// ```
    pub fn upsert(&mut self, code: &Code, item: Item) -> Result<Upserted> {
        self.upsert_inner(code, item, None)
    }

    /// [`Writer::upsert`] keeping the feature vector the code was made from, as
    /// [`Writer::add_with_features`] does.
    #[cfg(feature = "images")]
    pub fn upsert_with_features(
        &mut self,
        code: &Code,
        item: Item,
        features: Vec<f32>,
    ) -> Result<Upserted> {
        self.check_features(&features)?;
        self.upsert_inner(code, item, Some(features))
    }

    fn upsert_inner(
        &mut self,
        code: &Code,
        item: Item,
        features: Option<Vec<f32>>,
    ) -> Result<Upserted> {
        let Some(key) = item.key.clone() else {
            return Err(Error::InvalidArgument {
                detail: "Writer::upsert replaces the items of the new item's key, but the item \
                         has no key (Item::key); use Writer::add for items without one"
                    .into(),
            });
        };
        // Looked up before the add, which checks the code and the item: whichever fails, the
        // transaction is left as it was, with no id handed out.
        let replaced = self.ids_with_key(&key)?;
        let id = self.add_inner(code, item, features)?;
        for &old in &replaced {
            self.delete(old)?;
        }
        Ok(Upserted { id, replaced })
    }

    /// Replaces the item stored with a live id (committed, or added in this transaction), keeping
    /// its id, code and kept features: a file that moved is re-keyed without being coded again.
    /// The key and content-hash lookups ([`Reader::ids_with_key`](super::Reader::ids_with_key),
    /// [`Reader::ids_with_content_hash`](super::Reader::ids_with_content_hash)) follow the new
    /// item. Returns false when there is no such live id.
    ///
    /// Errors: [`WriteError::ItemTooLarge`] past [`MAX_ITEM_BYTES`], as for [`Writer::add`].
    ///
    /// ```
    /// # fn main() -> milan::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let index = milan::Index::builder(8).create(dir.path())?;
    /// let mut writer = index.writer()?;
    /// let item = milan::Item { key: Some("old.png".into()), ..milan::Item::default() };
    /// let id = writer.add(&milan::Code::from_hex("0f")?, item)?;
    /// writer.commit()?;
    /// let mut writer = index.writer()?;
    /// let moved = milan::Item { key: Some("new.png".into()), ..milan::Item::default() };
    /// assert!(writer.update_item(id, moved)?);
    /// writer.commit()?;
    /// assert_eq!(index.reader()?.item(id)?.unwrap().key.as_deref(), Some("new.png"));
    /// # Ok(()) }
    /// ```
    pub fn update_item(&mut self, id: u64, item: Item) -> Result<bool> {
        check_item_size(&item)?;
        let key = item.key.clone();
        if let Ok(at) = self.adds.binary_search_by_key(&id, |add| add.id) {
            // Not yet written: the add itself carries the new item.
            let old = std::mem::replace(&mut self.adds[at].item, item);
            self.forget_key(old.key.as_deref(), id);
            self.note_key(key.as_deref(), id);
            return Ok(true);
        }
        if self.view.is_live(id) && !self.deleted.contains(&id) {
            if let Some(old) = self.updates.insert(id, item) {
                self.forget_key(old.key.as_deref(), id);
            }
            self.note_key(key.as_deref(), id);
            return Ok(true);
        }
        Ok(false)
    }

    /// The ids of the committed items stored with this content hash, as this transaction sees
    /// the index (the last commit of any process; this writer's own adds are not stored until
    /// its commit): for skipping content another process added meanwhile.
    pub fn ids_with_content_hash(&self, hash: &[u8; 32]) -> Result<Vec<u64>> {
        store::guard(&self.index.dir, || self.txn.ids_with_content_hash(hash))
    }

    /// The progress of the import of `source` as last committed, by any process (this writer's
    /// own [`Writer::set_import_progress`] is stored at its commit): an importer compares it
    /// with its own count to find another process importing the same source.
    pub fn import_progress(&self, source: &[u8; 32]) -> Result<Option<ImportProgress>> {
        let record = store::guard(&self.index.dir, || self.txn.import(source))?;
        Ok(record.map(|record| ImportProgress {
            source: *source,
            rows: record.rows,
            committed: record.committed,
            first_id: record.first_id,
        }))
    }

    /// Number of adds waiting for the commit.
    pub fn pending_adds(&self) -> usize {
        self.adds.len()
    }

    /// Records how far the import of `progress.source` has come, to be stored by
    /// [`Writer::commit`] in the same transaction as this writer's adds: after a crash either
    /// both the rows and the progress are stored, or neither. A later call for the same source
    /// replaces the earlier one; dropping the writer discards it, leaving the committed progress.
    ///
    /// The commit refuses (with [`Error::InvalidArgument`], storing nothing) progress with more
    /// rows committed than the source holds, or a first id the index has not handed out.
    pub fn set_import_progress(&mut self, progress: ImportProgress) {
        let record = ImportRecord {
            rows: progress.rows,
            committed: progress.committed,
            first_id: progress.first_id,
        };
        self.imports.insert(progress.source, record);
    }

    /// Leaves this commit's adds in the scanned delta, however many there are, instead of
    /// filing them in new hash tables when the delta passes its limit (which costs a pass over
    /// every stored code). For bulk loads of many commits: searches scan the delta until
    /// [`Index::optimize`] (or a later commit without this) builds the tables once, so the load
    /// costs time in proportion to what it adds, not to what is stored times the commits.
    pub fn defer_merge(&mut self) {
        self.defer_merge = true;
    }

    /// Makes every add, delete and item update durable and visible to new readers, atomically.
    ///
    /// Adds wait in a delta that searches scan; when it passes its limit (a thirty-second of the
    /// codes in the hash tables, from 4,096 to 65,536 codes) the commit files every code in new
    /// tables, unless [`Writer::defer_merge`] was called.
    pub fn commit(self) -> Result<()> {
        let Writer {
            index,
            _exclusive,
            mut txn,
            view,
            mut meta,
            generation,
            adds,
            codes,
            deletes,
            updates,
            imports,
            defer_merge,
            ..
        } = self;
        for (source, record) in &imports {
            let bad = if record.committed > record.rows {
                Some(format!(
                    "{} rows committed of a source of {} rows",
                    record.committed, record.rows
                ))
            } else {
                record
                    .first_id
                    .filter(|&first| first >= meta.next_id)
                    .map(|first| {
                        format!(
                            "first id {first} has not been handed out (the next id is {})",
                            meta.next_id
                        )
                    })
            };
            if let Some(bad) = bad {
                return Err(Error::InvalidArgument {
                    detail: format!(
                        "import progress of source {}: {bad}; nothing was committed",
                        super::hex(source)
                    ),
                });
            }
        }
        // A damaged file can make the storage engine panic where the open did not look: the
        // commit then fails as damage, and the transaction is rolled back.
        let next = store::guard(&index.dir, || -> Result<Next> {
            let layout = view.layout().clone();
            let code_bytes = layout.code.bytes();
            let ids: Vec<u64> = adds.iter().map(|add| add.id).collect();
            let mut bytes = Vec::with_capacity(adds.len() * code_bytes);
            let mut words = Vec::with_capacity(adds.len() * layout.words);
            for add in &adds {
                let code = &codes[add.at..add.at + code_bytes];
                bytes.extend_from_slice(code);
                extend_words(&mut words, code);
                if let Some(vector) = &add.features {
                    txn.put_features(add.id, vector)?;
                }
            }
            txn.add_items(adds.iter().map(|add| (add.id, &add.item)))?;
            txn.add_codes(code_bytes, &ids, &bytes)?;
            txn.delete_codes(code_bytes, &deletes)?;
            for &id in &deletes {
                txn.remove_item(id)?;
                txn.remove_features(id)?;
            }
            for (&id, item) in &updates {
                txn.replace_item(id, item)?;
            }
            for (source, record) in &imports {
                txn.put_import(source, record)?;
            }
            meta.live_count = view.live() + adds.len() as u64 - deletes.len() as u64;
            meta.written_by = MILAN_VERSION.to_string();
            txn.put_meta(&meta)?;
            let next = if !defer_merge && view.needs_merge(ids.len()) {
                let merged = view.merged(&ids, &words, &deletes);
                txn.put_tables(&merged)?;
                Next::Replace(merged)
            } else {
                Next::Append {
                    ids,
                    words,
                    deletes,
                }
            };
            let record = match &next {
                Next::Replace(_) => commit_record(&meta, &[], true),
                Next::Append { deletes, .. } => commit_record(&meta, deletes, false),
            };
            txn.put_generation(generation + 1, Some(&record))?;
            Ok(next)
        })?;
        // Released before the publish, so that the snapshot can grow in place.
        drop(view);
        index.commit_and_publish(txn, meta, generation + 1, next)
    }

    /// Discards every add and delete (the same as dropping the writer).
    pub fn abort(self) {}
}

/// Refuses an item whose key, label and metadata together pass [`MAX_ITEM_BYTES`].
fn check_item_size(item: &Item) -> Result<()> {
    let size = item.key.as_ref().map_or(0, String::len)
        + item.label.as_ref().map_or(0, String::len)
        + item.metadata.as_ref().map_or(0, Vec::len);
    if size > MAX_ITEM_BYTES {
        return Err(Error::Write(WriteError::ItemTooLarge {
            bytes: size,
            max: MAX_ITEM_BYTES,
        }));
    }
    Ok(())
}
