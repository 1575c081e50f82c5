//! [`Writer`]: one write transaction. Adds, deletes and item updates (and import progress) are
//! buffered and reach the database, and the search snapshot, together at [`Writer::commit`];
//! dropping the writer discards them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::error::{CodeError, ExtractError, WriteError};
use milan_index_format::{ImportRecord, MetaRecord, MAX_RECORD_BYTES};

use super::{commit_record, Index, Next, WriterLock, MILAN_VERSION};
use crate::code::{extend_words, Code};
use crate::error::{Error, Result};
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
    pub fn add_with_features(
        &mut self,
        code: &Code,
        item: Item,
        features: Vec<f32>,
    ) -> Result<u64> {
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
        self.add_inner(code, item, Some(features))
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

    /// Deletes a live id (committed, or added in this transaction). Returns false when there is no
    /// such live id.
    pub fn delete(&mut self, id: u64) -> Result<bool> {
        if let Ok(at) = self.adds.binary_search_by_key(&id, |add| add.id) {
            self.adds.remove(at);
            return Ok(true);
        }
        if self.view.is_live(id) && self.deleted.insert(id) {
            self.deletes.push(id);
            // A deleted id keeps no item, so an update of it is moot.
            self.updates.remove(&id);
            return Ok(true);
        }
        Ok(false)
    }

    /// Replaces the item stored with a live id (committed, or added in this transaction), keeping
    /// its id, code and kept features: a file that moved is re-keyed without being coded again.
    /// The content-hash lookup ([`Reader::ids_with_content_hash`](super::Reader)) follows the new
    /// item's hash. Returns false when there is no such live id.
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
        if let Ok(at) = self.adds.binary_search_by_key(&id, |add| add.id) {
            // Not yet written: the add itself carries the new item.
            self.adds[at].item = item;
            return Ok(true);
        }
        if self.view.is_live(id) && !self.deleted.contains(&id) {
            self.updates.insert(id, item);
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
                txn.add_item(add.id, &add.item)?;
                if let Some(vector) = &add.features {
                    txn.put_features(add.id, vector)?;
                }
            }
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
