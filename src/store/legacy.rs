//! Format versions 1 and 2: one `codes` entry per code and the hash tables as bucket chunks
//! (`buckets`). Read as they are by read-only opens, checked by `milan index check`, and
//! converted to the current layout by the first writable open ([`drop_tables`] after the
//! caller has written the new one).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use bitvec::vec::BitVec;
use milan_index_format::{
    check_code_bytes, decode_bucket_ids, BucketKey, MetaRecord, BUCKETS_TABLE, BUCKET_KEY_BYTES,
    CODES_TABLE,
};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::check::CheckReport;
use super::{corrupted, storage_error, StoreRead};
use crate::code::bytes_to_words;
use crate::error::Result;
use crate::mih::layout::WordLayout;
use crate::mih::table::TableBuilder;
use crate::mih::{View, MAX_IDS};

const CODES: TableDefinition<u64, &[u8]> = TableDefinition::new(CODES_TABLE);
const BUCKETS: TableDefinition<&[u8; BUCKET_KEY_BYTES], &[u8]> =
    TableDefinition::new(BUCKETS_TABLE);

/// Drops the tables of versions 1 and 2 that version 3 replaced.
pub(super) fn drop_tables(txn: &WriteTransaction) -> std::result::Result<(), redb::TableError> {
    txn.delete_table(CODES)?;
    txn.delete_table(BUCKETS)?;
    Ok(())
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
    let storage = |err: redb::StorageError| storage_error(dir, err);
    let codes = txn
        .open_table(CODES)
        .map_err(|err| storage_error(dir, err))?;
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
    let storage = |err: redb::StorageError| storage_error(dir, err);

    let codes = txn
        .open_table(CODES)
        .map_err(|err| storage_error(dir, err))?;
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
        .map_err(|err| storage_error(dir, err))?;
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

pub(super) fn check(
    dir: &Path,
    txn: &ReadTransaction,
    meta: &MetaRecord,
    read: &StoreRead,
) -> Result<CheckReport> {
    let layout = meta.layout();
    let storage = |err: redb::Error| storage_error(dir, err);
    let mut report = CheckReport::default();

    let mut codes: Vec<(u64, Vec<u8>)> = Vec::new();
    let table = txn.open_table(CODES).map_err(|e| storage(e.into()))?;
    for entry in table.iter().map_err(|e| storage(e.into()))? {
        let (id, bytes) = entry.map_err(|e| storage(e.into()))?;
        let (id, bytes) = (id.value(), bytes.value());
        if id >= meta.next_id {
            report.problem(format!(
                "code {id} is at or past the next id {}",
                meta.next_id
            ));
        }
        match check_code_bytes(&layout, bytes) {
            Ok(()) => codes.push((id, bytes.to_vec())),
            Err(err) => report.problem(format!("code {id}: {err}")),
        }
    }
    report.codes = codes.len() as u64;
    if report.codes != meta.live_count {
        report.problem(format!(
            "{} codes stored but the meta record counts {}",
            report.codes, meta.live_count
        ));
    }
    let code_ids: HashSet<u64> = codes.iter().map(|(id, _)| *id).collect();
    // Items, features, import progress and content hashes as in version 3, and in these
    // versions every stored code also has an item record.
    let item_ids =
        super::check::check_records(read, meta, &|id| code_ids.contains(&id), &mut report)?;
    for id in code_ids.difference(&item_ids) {
        report.problem(format!("code {id} has no item record"));
    }

    // Each live code must appear exactly once in each of its m buckets, and nothing else may.
    let m = layout.substrings();
    let mut expected: Vec<(u32, u64, u32)> = codes
        .iter()
        .flat_map(|(id, bytes)| (0..m).map(move |j| (j, *id, layout.substring_value(bytes, j))))
        .collect();
    expected.sort_unstable();
    let mut actual: Vec<(u32, u64, u32)> = Vec::with_capacity(expected.len());
    let table = txn.open_table(BUCKETS).map_err(|e| storage(e.into()))?;
    let mut previous: Option<(BucketKey, u64)> = None;
    for entry in table.iter().map_err(|e| storage(e.into()))? {
        let (key, value) = entry.map_err(|e| storage(e.into()))?;
        report.chunks += 1;
        let key = BucketKey::decode(key.value());
        let name = format!(
            "bucket chunk {}:{}@{}",
            key.substring, key.value, key.first_id
        );
        if u32::from(key.substring) >= m {
            report.problem(format!("{name}: substring out of range ({m} substrings)"));
            continue;
        }
        if u64::from(key.value) >= 1u64 << layout.substring_width(u32::from(key.substring)) {
            report.problem(format!("{name}: value wider than its substring"));
        }
        let ids = match decode_bucket_ids(value.value()) {
            Ok(ids) => ids,
            Err(err) => {
                report.problem(format!("{name}: {err}"));
                continue;
            }
        };
        if ids[0] < key.first_id {
            report.problem(format!("{name}: holds id {} below its first id", ids[0]));
        }
        if let Some((prev, prev_last)) = previous {
            if (prev.substring, prev.value) == (key.substring, key.value)
                && prev_last >= key.first_id
            {
                report.problem(format!("{name}: overlaps the previous chunk of its bucket"));
            }
        }
        previous = Some((key, *ids.last().expect("non-empty")));
        actual.extend(
            ids.iter()
                .map(|&id| (u32::from(key.substring), id, key.value)),
        );
    }
    actual.sort_unstable();
    for pair in actual.windows(2) {
        if pair[0].0 == pair[1].0 && pair[0].1 == pair[1].1 {
            report.problem(format!(
                "id {} is filed twice in hash table {}",
                pair[0].1, pair[0].0
            ));
        }
    }
    let (mut e, mut a) = (0, 0);
    while e < expected.len() || a < actual.len() {
        match (expected.get(e), actual.get(a)) {
            (Some(x), Some(y)) if x == y => {
                e += 1;
                a += 1;
            }
            (Some(x), y) if y.is_none_or(|y| x < y) => {
                report.problem(format!("id {} is missing from bucket {}:{}", x.1, x.0, x.2));
                e += 1;
            }
            (_, Some(y)) => {
                if code_ids.contains(&y.1) {
                    report.problem(format!(
                        "id {} is filed under the wrong bucket {}:{}",
                        y.1, y.0, y.2
                    ));
                } else {
                    report.problem(format!(
                        "bucket {}:{} lists id {}, which has no code",
                        y.0, y.2, y.1
                    ));
                }
                a += 1;
            }
            (None, None) => break,
            (Some(_), None) => unreachable!("handled above"),
        }
    }
    Ok(report)
}
