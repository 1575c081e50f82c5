//! The full invariant check behind [`Index::verify`](crate::Index::verify) and `milan index check`.
//!
//! Unlike an open, which reads only what keeps the search in bounds and stops at the first
//! problem, the check reads everything and lists every problem it finds (up to [`MAX_LISTED`],
//! then a count): each stored code in its bucket of every hash table with the right filter,
//! nothing filed twice, items, kept features, content hashes, keys and import progress consistent
//! with the stored codes.

use std::collections::HashSet;

use bitvec::vec::BitVec;
use milan_index_format::{
    block_ids, decode_features, parts_of, CodeBlock, CodeLayout, CommitRecord, ImportRecord,
    ItemRecord, MetaRecord, COMMIT_LOG_LEN, ENTRY_BYTES, KEYS_VERSION,
};
use redb::{ReadableMultimapTable, ReadableTable};

use super::tables::read_arrays;
use super::{
    open_optional, StoreError, StoreRead, CODE_BLOCKS, COMMITS, CONTENT_HASHES, FEATURES,
    HASH_TABLES, IMPORTS, ITEMS, KEYS,
};
use crate::error::Result;
use crate::mih::table::{check_keys, check_offsets, is_dense, BucketEntry};

/// Most problems listed one by one.
pub const MAX_LISTED: usize = 100;

/// What [`Index::verify`](crate::Index::verify) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Every problem found, in words; empty when the index is sound.
    pub problems: Vec<String>,
    /// Problems beyond the listed ones.
    pub unlisted: usize,
    /// Live codes.
    pub codes: u64,
    /// Stored values of the hash tables read (table parts; bucket chunks in versions 1 and 2).
    pub chunks: u64,
    /// Whether redb's own structural check passed (`None` when not run: read-only open).
    pub storage_ok: Option<bool>,
}

impl CheckReport {
    /// Whether every invariant holds.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.storage_ok != Some(false)
    }

    pub(super) fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        } else {
            self.unlisted += 1;
        }
    }
}

/// Every stored code, as packed bytes per slot, and which slots hold one (the blocks' bitmaps
/// one after another: blocks hold a multiple of 8 ids).
struct Codes {
    bytes: Vec<u8>,
    live: Vec<u8>,
    code_bytes: usize,
}

impl Codes {
    fn slots(&self) -> usize {
        self.bytes.len() / self.code_bytes
    }

    fn is_live(&self, id: u64) -> bool {
        (id as usize) < self.slots() && self.live[id as usize / 8] >> (id % 8) & 1 == 1
    }

    /// Pads with empty slots to `slots` (a multiple of 8).
    fn pad_to(&mut self, slots: usize) {
        self.bytes.resize(slots * self.code_bytes, 0);
        self.live.resize(slots / 8, 0);
    }

    fn code(&self, id: u64) -> &[u8] {
        let at = id as usize * self.code_bytes;
        &self.bytes[at..at + self.code_bytes]
    }
}

pub(crate) fn check(read: &StoreRead, meta: &MetaRecord) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let codes = read_codes(read, meta, &mut report)?;
    check_records(read, meta, &|id| codes.is_live(id), &mut report)?;
    check_tables(read, meta, &codes, &mut report)?;
    check_commit_log(read, meta, &mut report)?;
    Ok(report)
}

/// The generation and the commit log (format version 4): the generation decodes, every record
/// decodes and lies within the log's reach of it, `next_id` never decreases from one record to
/// the next, and the last commit's record names the meta record's `next_id`.
fn check_commit_log(read: &StoreRead, meta: &MetaRecord, report: &mut CheckReport) -> Result<()> {
    if meta.format_version < 4 {
        return Ok(());
    }
    let generation = match read.generation() {
        Ok(generation) => generation,
        Err(err) => {
            report.problem(format!("generation: {err}"));
            return Ok(());
        }
    };
    let st = |err: redb::Error| read.st(err);
    let Some(commits) = open_optional(&read.txn, COMMITS).map_err(|e| st(e.into()))? else {
        report.problem("the commit log is missing".into());
        return Ok(());
    };
    let oldest = generation.saturating_sub(COMMIT_LOG_LEN - 1).max(1);
    let mut previous: Option<(u64, u64)> = None;
    for entry in commits.iter().map_err(|e| st(e.into()))? {
        let (key, bytes) = entry.map_err(|e| st(e.into()))?;
        let key = key.value();
        if key < oldest || key > generation {
            report.problem(format!(
                "commit record {key} lies outside the log of generations {oldest} to {generation}"
            ));
        }
        match CommitRecord::decode(bytes.value()) {
            Ok(record) => {
                if let Some((before, next_id)) = previous.filter(|&(_, id)| record.next_id < id) {
                    report.problem(format!(
                        "commit record {key} names next id {} below record {before}'s {next_id}",
                        record.next_id
                    ));
                }
                if key == generation && record.next_id != meta.next_id {
                    report.problem(format!(
                        "the last commit record names next id {}, the meta record {}",
                        record.next_id, meta.next_id
                    ));
                }
                previous = Some((key, record.next_id));
            }
            Err(err) => report.problem(format!("commit record {key}: {err}")),
        }
    }
    Ok(())
}

/// Reads every code block, listing each one out of sequence or malformed (its slots then count
/// as empty).
fn read_codes(read: &StoreRead, meta: &MetaRecord, report: &mut CheckReport) -> Result<Codes> {
    let code_bytes = meta.layout().bytes();
    let mut codes = Codes {
        bytes: Vec::new(),
        live: Vec::new(),
        code_bytes,
    };
    let per_block = block_ids(code_bytes);
    let table = read
        .txn
        .open_table(CODE_BLOCKS)
        .map_err(|err| read.st(err))?;
    for (expected, entry) in (0u64..).zip(table.iter().map_err(|err| read.st(err))?) {
        let (key, value) = entry.map_err(|err| read.st(err))?;
        let key = key.value();
        // Slots are allocated only for blocks in sequence: a block far out of it cannot make
        // the check allocate what the file does not hold.
        if key != expected {
            report.problem(format!(
                "code block {key} follows block {}: block {expected} is missing, and no later block is read",
                expected as i64 - 1
            ));
            break;
        }
        if codes.slots() != expected as usize * per_block {
            report.problem(format!(
                "code block {} holds {} slots but is not the last block",
                expected - 1,
                codes.slots() % per_block
            ));
            codes.pad_to(expected as usize * per_block);
        }
        match CodeBlock::decode(value.value(), code_bytes) {
            Ok(block) => {
                codes.bytes.extend_from_slice(block.codes());
                codes.live.extend_from_slice(block.live_bitmap());
            }
            Err(err) => report.problem(format!("code block {key}: {err}")),
        }
    }
    if codes.slots() as u64 > meta.next_id {
        report.problem(format!(
            "code ids run to {}, at or past the next id {}",
            codes.slots() - 1,
            meta.next_id
        ));
    }
    report.codes = codes
        .live
        .iter()
        .map(|byte| u64::from(byte.count_ones()))
        .sum();
    if report.codes != meta.live_count {
        report.problem(format!(
            "{} codes stored but the meta record counts {}",
            report.codes, meta.live_count
        ));
    }
    Ok(codes)
}

/// Items, kept features, import progress, content hashes and keys against the stored codes
/// (`is_live` tells which ids hold one); returns the ids that have an item record.
pub(super) fn check_records(
    read: &StoreRead,
    meta: &MetaRecord,
    is_live: &dyn Fn(u64) -> bool,
    report: &mut CheckReport,
) -> Result<HashSet<u64>> {
    let st = |err: redb::Error| read.st(err);
    let mut hashed_items: HashSet<([u8; 32], u64)> = HashSet::new();
    let mut keyed_items: HashSet<(String, u64)> = HashSet::new();
    let mut item_ids = HashSet::new();
    let table = read.txn.open_table(ITEMS).map_err(|e| st(e.into()))?;
    for entry in table.iter().map_err(|e| st(e.into()))? {
        let (id, bytes) = entry.map_err(|e| st(e.into()))?;
        let id = id.value();
        item_ids.insert(id);
        match ItemRecord::decode(bytes.value()) {
            Ok(item) => {
                if let Some(hash) = item.content_hash {
                    hashed_items.insert((hash, id));
                }
                if let Some(key) = item.key {
                    keyed_items.insert((key, id));
                }
            }
            Err(err) => report.problem(format!("item {id}: {err}")),
        }
        if !is_live(id) {
            report.problem(format!("item {id} has no code"));
        }
    }

    // Kept features: only for live codes, each of the bound extractor's dimension.
    let (model, _) = read.binding()?;
    let features = open_optional(&read.txn, FEATURES).map_err(|e| st(e.into()))?;
    if let Some(features) = &features {
        for entry in features.iter().map_err(|e| st(e.into()))? {
            let (id, bytes) = entry.map_err(|e| st(e.into()))?;
            let id = id.value();
            if !is_live(id) {
                report.problem(format!("features kept for id {id}, which has no code"));
            }
            match &model {
                Some(model) => {
                    if let Err(err) = decode_features(bytes.value(), model.dim) {
                        report.problem(format!("features of id {id}: {err}"));
                    }
                }
                None => report.problem(format!(
                    "features kept for id {id} in an index bound to no extractor"
                )),
            }
        }
    }

    // Import progress: every record decodes (which checks committed <= rows), and an import
    // cannot have given out ids the index never handed out.
    let imports = open_optional(&read.txn, IMPORTS).map_err(|e| st(e.into()))?;
    if let Some(imports) = &imports {
        for entry in imports.iter().map_err(|e| st(e.into()))? {
            let (source, bytes) = entry.map_err(|e| st(e.into()))?;
            let name = crate::index::hex(source.value());
            match ImportRecord::decode(bytes.value()) {
                Ok(record) => {
                    if let Some(first) = record.first_id.filter(|&first| first >= meta.next_id) {
                        report.problem(format!(
                            "import {name}: first id {first} is at or past the next id {}",
                            meta.next_id
                        ));
                    }
                }
                Err(err) => report.problem(format!("import {name}: {err}")),
            }
        }
    }

    let hashes = read
        .txn
        .open_multimap_table(CONTENT_HASHES)
        .map_err(|e| st(e.into()))?;
    let mut hash_entries = HashSet::new();
    for entry in hashes.iter().map_err(|e| st(e.into()))? {
        let (hash, ids) = entry.map_err(|e| st(e.into()))?;
        let hash = *hash.value();
        for id in ids {
            let id = id.map_err(|e| st(e.into()))?.value();
            if !hashed_items.contains(&(hash, id)) {
                report.problem(format!(
                    "content hash entry for id {id} matches no item with that hash"
                ));
            }
            hash_entries.insert((hash, id));
        }
    }
    for (_, id) in hashed_items.difference(&hash_entries) {
        report.problem(format!(
            "item {id} has a content hash missing from the hash table"
        ));
    }
    if meta.format_version >= KEYS_VERSION {
        check_keys_table(read, &keyed_items, report)?;
    }
    Ok(item_ids)
}

/// The key lookup (format version 5) holds exactly the (key, id) pairs of the item records.
fn check_keys_table(
    read: &StoreRead,
    keyed_items: &HashSet<(String, u64)>,
    report: &mut CheckReport,
) -> Result<()> {
    let st = |err: redb::Error| read.st(err);
    let keys = match read.txn.open_multimap_table(KEYS) {
        Ok(keys) => keys,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            report.problem("the keys table is missing".into());
            return Ok(());
        }
        Err(err) => return Err(st(err.into())),
    };
    let mut key_entries = HashSet::new();
    for entry in keys.iter().map_err(|e| st(e.into()))? {
        let (key, ids) = entry.map_err(|e| st(e.into()))?;
        let key = key.value().to_string();
        for id in ids {
            let id = id.map_err(|e| st(e.into()))?.value();
            if !keyed_items.contains(&(key.clone(), id)) {
                report.problem(format!(
                    "key entry {key:?} for id {id} matches no item with that key"
                ));
            }
            key_entries.insert((key.clone(), id));
        }
    }
    for (key, id) in keyed_items.difference(&key_entries) {
        report.problem(format!(
            "item {id} has key {key:?} missing from the keys table"
        ));
    }
    Ok(())
}

/// Each live code below the tables' coverage exactly once in each table, in the bucket of its
/// substring value and with its filter; entries of deleted ids may stay until the next build,
/// but nothing is filed twice and nothing names an id that was never stored.
fn check_tables(
    read: &StoreRead,
    meta: &MetaRecord,
    codes: &Codes,
    report: &mut CheckReport,
) -> Result<()> {
    let layout = meta.layout();
    let record = match read.tables_record() {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(()),
        Err(crate::error::Error::Corrupted { detail, .. }) => {
            report.problem(format!("the tables record: {detail}"));
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let m = layout.substrings() as usize;
    if record.tables.len() != m {
        report.problem(format!(
            "{} hash tables recorded for {m} substrings",
            record.tables.len()
        ));
        return Ok(());
    }
    if record.slots > codes.slots() as u64 {
        report.problem(format!(
            "the hash tables cover {} ids but {} are stored",
            record.slots,
            codes.slots()
        ));
    }
    let covered = (record.slots as usize).min(codes.slots());
    let parts = read
        .txn
        .open_table(HASH_TABLES)
        .map_err(|err| read.st(err))?;
    // Arrays are reserved at most as large as the file, whatever the record claims.
    let file_bytes = read.file_bytes()?;
    for (j, shape) in record.tables.iter().enumerate() {
        let substring = j as u16;
        let width = layout.substring_width(j as u32);
        if shape.dense != is_dense(width, record.slots as usize) {
            report.problem(format!(
                "hash table {j}: stored in the form a build would not choose"
            ));
        }
        if shape.dense && shape.keys != 0 {
            report.problem(format!("hash table {j}: a dense shape it cannot have"));
            continue;
        }
        let (keys, offsets, entries) =
            match read_arrays(&parts, substring, shape, width, file_bytes) {
                Ok(arrays) => arrays,
                Err(StoreError::Corrupted(detail)) => {
                    report.problem(detail);
                    continue;
                }
                Err(StoreError::Storage(err)) => return Err(read.st(err)),
            };
        report.chunks += parts_of(shape.entries, ENTRY_BYTES)
            + parts_of(shape.offsets(width), 4)
            + parts_of(shape.keys, 4);
        check_table(
            j,
            shape.dense,
            &layout,
            codes,
            covered,
            (&keys, &offsets, &entries),
            report,
        );
    }
    Ok(())
}

fn check_table(
    j: usize,
    dense: bool,
    layout: &CodeLayout,
    codes: &Codes,
    covered: usize,
    (keys, offsets, entries): (&[u32], &[u32], &[BucketEntry]),
    report: &mut CheckReport,
) {
    let width = layout.substring_width(j as u32);
    let (filter_start, filter_width) = layout.filter_range(j as u32);
    if let Err(detail) = check_offsets(width, dense, keys.len(), offsets, entries.len()) {
        report.problem(format!("hash table {j}: {detail}"));
        return;
    }
    if let Err(detail) = check_keys(width, keys) {
        report.problem(format!("hash table {j}: {detail}"));
    }
    let mut seen: BitVec<u64> = BitVec::repeat(false, covered);
    for (bucket_index, range) in offsets.windows(2).enumerate() {
        // A dense table's bucket is its value; a sparse one's value is its key.
        let value = if dense {
            bucket_index as u32
        } else {
            keys[bucket_index]
        };
        let bucket = &entries[range[0] as usize..range[1] as usize];
        if bucket.windows(2).any(|w| w[0].id() >= w[1].id()) {
            report.problem(format!("bucket {j}:{value}: ids are not increasing"));
        }
        for entry in bucket {
            let id = u64::from(entry.id());
            if id as usize >= covered {
                report.problem(format!(
                    "bucket {j}:{value} lists id {id}, past the {covered} ids the tables cover"
                ));
                continue;
            }
            if seen.replace(id as usize, true) {
                report.problem(format!("id {id} is filed twice in hash table {j}"));
            }
            if !codes.is_live(id) {
                // A deleted id keeps its entries until the next build.
                continue;
            }
            let code = codes.code(id);
            if layout.substring_value(code, j as u32) != value {
                report.problem(format!(
                    "id {id} is filed under the wrong bucket {j}:{value}"
                ));
            } else if CodeLayout::bits_value(code, filter_start, filter_width) != entry.filter() {
                report.problem(format!("id {id} has a wrong filter in bucket {j}:{value}"));
            }
        }
    }
    for id in 0..covered {
        if codes.is_live(id as u64) && !seen[id] {
            report.problem(format!("id {id} is missing from hash table {j}"));
        }
    }
}
