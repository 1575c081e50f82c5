//! The redb tables that make up an index on disk, and the reads and writes the engine needs.
//!
//! The byte layout of every table is specified in `index-format/README.md` and encoded by the
//! `milan-index-format` crate; this module only moves those bytes in and out of redb:
//! - [`Db`]: a database opened writable or read-only;
//! - [`read_meta`], [`load_view`]: what an open reads (validating as it goes, so a damaged index is
//!   refused rather than searched wrongly);
//! - [`add_bucket_chunks`], [`remove_from_bucket`], [`rewrite_buckets`]: bucket maintenance;
//! - [`read_import`]: the progress of a bulk import (format version 2);
//! - [`check`](mod@check): the full invariant check behind `milan index check`.

pub(crate) mod check;

use std::path::Path;
use std::sync::Arc;

use bitvec::vec::BitVec;
use milan_index_format::{
    check_code_bytes, decode_bucket_ids, encode_bucket_ids, BucketKey, ImportRecord, MetaRecord,
    ModelRecord, BUCKETS_TABLE, BUCKET_KEY_BYTES, CODES_TABLE, CONTENT_HASHES_TABLE,
    FEATURES_TABLE, HEAD_KEY, IMPORTS_TABLE, ITEMS_TABLE, META_KEY, META_TABLE, MODEL_KEY,
};
use redb::{
    MultimapTableDefinition, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    Table, TableDefinition,
};

use crate::code::bytes_to_words;
use crate::error::{Error, Result};
use crate::head::HashHead;
use crate::mih::layout::WordLayout;
use crate::mih::table::TableBuilder;
use crate::mih::{View, MAX_IDS};

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new(META_TABLE);
pub(crate) const ITEMS: TableDefinition<u64, &[u8]> = TableDefinition::new(ITEMS_TABLE);
pub(crate) const CODES: TableDefinition<u64, &[u8]> = TableDefinition::new(CODES_TABLE);
pub(crate) const BUCKETS: TableDefinition<&[u8; BUCKET_KEY_BYTES], &[u8]> =
    TableDefinition::new(BUCKETS_TABLE);
pub(crate) const CONTENT_HASHES: MultimapTableDefinition<&[u8; 32], u64> =
    MultimapTableDefinition::new(CONTENT_HASHES_TABLE);
pub(crate) const FEATURES: TableDefinition<u64, &[u8]> = TableDefinition::new(FEATURES_TABLE);
pub(crate) const IMPORTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new(IMPORTS_TABLE);

/// Opens a table that a file may lack (`features` until features are kept, `imports` until an
/// import records progress, and both in older versions): `None` when it is absent.
pub(crate) fn open_optional<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
) -> std::result::Result<Option<redb::ReadOnlyTable<K, V>>, redb::TableError> {
    match txn.open_table(table) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Most ids in one bucket chunk: keeps a delete's read-modify-write of a chunk short.
pub(crate) const MAX_CHUNK_IDS: usize = 4096;

/// An open redb database, shared by its [`Index`](crate::Index) and the
/// [`Reader`](crate::Reader)s it hands out: redb closes the file when the database is dropped, so
/// each reader holds it open until the last of them is gone.
#[derive(Clone)]
pub(crate) enum Db {
    Writable(Arc<redb::Database>),
    ReadOnly(Arc<ReadOnlyDatabase>),
}

impl Db {
    pub(crate) fn begin_read(&self, path: &Path) -> Result<ReadTransaction> {
        match self {
            Db::Writable(db) => db.begin_read(),
            Db::ReadOnly(db) => db.begin_read(),
        }
        .map_err(|err| Error::storage(path, err))
    }
}

/// Reads and decodes the meta record.
pub(crate) fn read_meta(dir: &Path, txn: &ReadTransaction) -> Result<MetaRecord> {
    let table = match txn.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(Error::NotAnIndex {
                path: dir.to_path_buf(),
            })
        }
        Err(err) => return Err(Error::storage(dir, err)),
    };
    let bytes = table
        .get(META_KEY)
        .map_err(|err| Error::storage(dir, err))?
        .ok_or_else(|| Error::NotAnIndex {
            path: dir.to_path_buf(),
        })?;
    MetaRecord::decode(bytes.value()).map_err(|err| Error::from_decode(dir, err))
}

/// Reads the extractor and head an image index is bound to (both absent for a code-only index).
pub(crate) fn read_binding(
    dir: &Path,
    txn: &ReadTransaction,
) -> Result<(Option<ModelRecord>, Option<HashHead>)> {
    let table = txn
        .open_table(META)
        .map_err(|err| Error::storage(dir, err))?;
    let get = |key: &str| -> Result<Option<Vec<u8>>> {
        Ok(table
            .get(key)
            .map_err(|err| Error::storage(dir, err))?
            .map(|bytes| bytes.value().to_vec()))
    };
    let model = match get(MODEL_KEY)? {
        Some(bytes) => {
            Some(ModelRecord::decode(&bytes).map_err(|err| Error::from_decode(dir, err))?)
        }
        None => None,
    };
    let head = match get(HEAD_KEY)? {
        Some(bytes) => Some(
            HashHead::from_bytes(bytes)
                .map_err(|err| corrupted(dir, format!("the stored hash head: {err}")))?,
        ),
        None => None,
    };
    if model.is_some() != head.is_some() {
        return Err(corrupted(
            dir,
            "the index stores a model record without a head, or the reverse",
        ));
    }
    Ok((model, head))
}

fn corrupted(dir: &Path, detail: impl Into<String>) -> Error {
    Error::Corrupted {
        path: dir.to_path_buf(),
        detail: detail.into(),
    }
}

/// Reads the progress record of the import of `source` (`None` when there is none, including in
/// a version-1 file, which has no imports table).
pub(crate) fn read_import(
    dir: &Path,
    txn: &ReadTransaction,
    source: &[u8; 32],
) -> Result<Option<ImportRecord>> {
    let Some(table) = open_optional(txn, IMPORTS).map_err(|err| Error::storage(dir, err))? else {
        return Ok(None);
    };
    let Some(bytes) = table.get(source).map_err(|err| Error::storage(dir, err))? else {
        return Ok(None);
    };
    ImportRecord::decode(bytes.value())
        .map(Some)
        .map_err(|err| Error::from_decode(dir, err))
}

/// Ids may run this far past 64 ids per stored code, whatever the code length: the bound of
/// earlier versions, kept as a floor.
const SLOT_SLACK: u64 = 1 << 24;

/// The memory that empty slots (deleted ids, 8 bytes per code word each) may take beyond 64 per
/// stored code, unless the file is longer: see [`max_slots`].
const GAP_BYTES: u64 = 1 << 30;

/// The most slots (the largest stored id + 1) an open allocates for `codes` stored codes of
/// `words` words in a `file_bytes`-byte file.
///
/// What the file proves: its length bounds the number of codes stored (the caller's `codes`), but
/// nothing bounds the largest id: ids are never reused, so an index churned by deletes and
/// re-codes (each sync re-code takes a new id) legitimately holds few codes under huge ids, and
/// compacting it shrinks the file, not the ids. Its writer held the same slots in memory, so they
/// are allowed, up to a budget: 64 slots per stored code, plus empty slots worth [`GAP_BYTES`] of
/// code memory, or the file's length when that is more (a file that once held the deleted codes
/// is at least that long), and never fewer than [`SLOT_SLACK`]. A crafted file can therefore
/// make an open allocate at most about 64 times its length, plus max(1 GiB, its length, 2^24
/// slots) of zeroed memory that only ids it stores are written to.
fn max_slots(codes: u64, words: usize, file_bytes: u64) -> u64 {
    let slot_bytes = 8 * words.max(1) as u64;
    let gap = (GAP_BYTES.max(file_bytes) / slot_bytes).max(SLOT_SLACK);
    codes.saturating_mul(64).saturating_add(gap)
}

/// Loads every code and the bucket tables into a search snapshot, checking on the way that each
/// bucket entry names a stored code whose substring matches the bucket and that every table holds
/// each live code once.
///
/// `file_bytes` is the database file's length: every allocation here is bounded by what the file
/// can hold, not by counts read from it, so a crafted record cannot ask for a huge allocation.
pub(crate) fn load_view(
    dir: &Path,
    txn: &ReadTransaction,
    meta: &MetaRecord,
    file_bytes: u64,
) -> Result<View> {
    let layout = Arc::new(WordLayout::new(meta.layout()));
    if meta.next_id > MAX_IDS {
        return Err(corrupted(
            dir,
            format!("next id {} is out of range", meta.next_id),
        ));
    }
    let storage = |err: redb::StorageError| Error::storage(dir, err);
    let codes = txn
        .open_table(CODES)
        .map_err(|err| Error::storage(dir, err))?;
    // Slots run to the largest stored id, not to next_id: trailing deleted ids need no memory,
    // and a damaged counter cannot ask for a huge allocation.
    let slots = match codes.last().map_err(storage)? {
        Some((id, _)) => id.value().saturating_add(1),
        None => 0,
    };
    if slots > meta.next_id {
        return Err(corrupted(
            dir,
            format!(
                "code id {} is at or past the next id {}",
                slots - 1,
                meta.next_id
            ),
        ));
    }
    // Ids are dense unless deleted, and a churned index's gaps are bounded as `max_slots` says.
    // The count of codes is the meta record's (checked against the codes actually read below,
    // after this allocation), so it is bounded here by what the file can hold: each stored code
    // takes at least its 8-byte key and its bytes in the file.
    let file_codes = file_bytes / (8 + layout.code.bytes() as u64);
    let codes_bound = meta.live_count.min(file_codes);
    let most = max_slots(codes_bound, layout.words, file_bytes);
    if slots > most {
        return Err(corrupted(
            dir,
            format!(
                "code ids run to {} for at most {} stored codes (the meta record counts {}; the {file_bytes}-byte file holds at most {file_codes}), more gaps than the file justifies (at most {most} slots)",
                slots - 1,
                codes_bound,
                meta.live_count,
            ),
        ));
    }
    let slots = slots as usize;
    let w = layout.words;
    let mut words = vec![0u64; slots * w];
    let mut deleted: BitVec<u64> = BitVec::repeat(true, slots);
    let storage = |err: redb::StorageError| Error::storage(dir, err);

    let codes = txn
        .open_table(CODES)
        .map_err(|err| Error::storage(dir, err))?;
    for entry in codes.iter().map_err(storage)? {
        let (id, bytes) = entry.map_err(storage)?;
        // Every id is below `slots`, which was checked against next_id above.
        let (id, bytes) = (id.value(), bytes.value());
        check_code_bytes(&layout.code, bytes)
            .map_err(|err| corrupted(dir, format!("code {id}: {err}")))?;
        let slot = id as usize;
        words[slot * w..(slot + 1) * w].copy_from_slice(&bytes_to_words(bytes));
        deleted.set(slot, false);
    }
    let live = (slots - deleted.count_ones()) as u64;
    if live != meta.live_count {
        return Err(corrupted(
            dir,
            format!(
                "{live} codes stored but the meta record counts {}",
                meta.live_count
            ),
        ));
    }

    let m = layout.substrings.len();
    let mut builders: Vec<TableBuilder> = layout
        .substrings
        .iter()
        .map(|sub| TableBuilder::new(sub.width, slots, live as usize))
        .collect();
    let mut per_table = vec![0u64; m];
    let buckets = txn
        .open_table(BUCKETS)
        .map_err(|err| Error::storage(dir, err))?;
    for entry in buckets.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        let key = BucketKey::decode(key.value());
        let j = key.substring as usize;
        let sub = layout.substrings.get(j).ok_or_else(|| {
            corrupted(
                dir,
                format!("bucket of substring {j} in an index of {m} substrings"),
            )
        })?;
        if u64::from(key.value) >= 1u64 << sub.width {
            return Err(corrupted(
                dir,
                format!("bucket value {} does not fit substring {j}", key.value),
            ));
        }
        let ids =
            decode_bucket_ids(value.value()).map_err(|err| corrupted(dir, err.to_string()))?;
        per_table[j] += ids.len() as u64;
        let filter = &layout.filters[j];
        for id in ids {
            let slot = id as usize;
            if slot >= slots || deleted[slot] {
                return Err(corrupted(
                    dir,
                    format!("bucket {j}:{} lists id {id}, which has no code", key.value),
                ));
            }
            let code = &words[slot * w..(slot + 1) * w];
            if id < key.first_id || sub.value(code) != key.value {
                return Err(corrupted(
                    dir,
                    format!(
                        "id {id} is filed under the wrong bucket ({j}:{})",
                        key.value
                    ),
                ));
            }
            builders[j].push(key.value, id as u32, filter.value(code));
        }
    }
    if let Some(j) = per_table.iter().position(|&n| n != live) {
        return Err(corrupted(
            dir,
            format!("hash table {j} holds {} ids for {live} codes", per_table[j]),
        ));
    }
    let tables = builders.into_iter().map(TableBuilder::finish).collect();
    Ok(View::from_parts(layout, words, deleted, tables))
}

/// Writes new bucket chunks for `entries` (`(substring, value, id)`, any order), whose ids are all
/// larger than any id already stored, so each chunk sorts after the bucket's existing ones.
pub(crate) fn add_bucket_chunks(
    buckets: &mut Table<&[u8; BUCKET_KEY_BYTES], &[u8]>,
    entries: &mut [(u16, u32, u64)],
) -> std::result::Result<(), redb::StorageError> {
    entries.sort_unstable();
    for group in entries.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
        for chunk in group.chunks(MAX_CHUNK_IDS) {
            let key = BucketKey {
                substring: chunk[0].0,
                value: chunk[0].1,
                first_id: chunk[0].2,
            };
            let ids: Vec<u64> = chunk.iter().map(|e| e.2).collect();
            buckets.insert(&key.encode(), encode_bucket_ids(&ids).as_slice())?;
        }
    }
    Ok(())
}

/// Removes `id` from bucket `(substring, value)`. Returns false when it is not there.
pub(crate) fn remove_from_bucket(
    buckets: &mut Table<&[u8; BUCKET_KEY_BYTES], &[u8]>,
    substring: u16,
    value: u32,
    id: u64,
) -> std::result::Result<bool, redb::StorageError> {
    let low = BucketKey {
        substring,
        value,
        first_id: 0,
    }
    .encode();
    let high = BucketKey {
        substring,
        value,
        first_id: id,
    }
    .encode();
    let found = {
        let mut range = buckets.range::<&[u8; BUCKET_KEY_BYTES]>(&low..=&high)?;
        match range.next_back() {
            Some(entry) => {
                let (key, chunk) = entry?;
                Some((*key.value(), chunk.value().to_vec()))
            }
            None => None,
        }
    };
    let Some((key, chunk)) = found else {
        return Ok(false);
    };
    let Ok(mut ids) = decode_bucket_ids(&chunk) else {
        return Ok(false);
    };
    let Ok(position) = ids.binary_search(&id) else {
        return Ok(false);
    };
    ids.remove(position);
    if ids.is_empty() {
        buckets.remove(&key)?;
    } else {
        buckets.insert(&key, encode_bucket_ids(&ids).as_slice())?;
    }
    Ok(true)
}

/// Replaces every bucket with one built for `layout` from the live codes of `view`, one chunk per
/// bucket (split at [`MAX_CHUNK_IDS`]).
pub(crate) fn rewrite_buckets(
    txn: &redb::WriteTransaction,
    layout: &WordLayout,
    view: &View,
) -> std::result::Result<(), redb::Error> {
    txn.delete_table(BUCKETS)?;
    let mut buckets = txn.open_table(BUCKETS)?;
    for (j, sub) in layout.substrings.iter().enumerate() {
        let mut entries: Vec<(u16, u32, u64)> = view
            .live_ids()
            .map(|id| (j as u16, sub.value(view.code(id).expect("live id")), id))
            .collect();
        add_bucket_chunks(&mut buckets, &mut entries)?;
    }
    Ok(())
}
