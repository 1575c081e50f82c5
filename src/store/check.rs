//! The full invariant check behind [`Index::verify`](crate::Index::verify) and `milan index check`.
//!
//! Unlike an open, which stops at the first problem, the check reads everything and lists every
//! problem it finds (up to [`MAX_LISTED`], then a count).

use std::collections::HashSet;
use std::path::Path;

use milan_index_format::{
    check_code_bytes, decode_bucket_ids, decode_features, BucketKey, ImportRecord, ItemRecord,
};
use redb::{ReadTransaction, ReadableMultimapTable, ReadableTable};

use super::{open_optional, read_meta, BUCKETS, CODES, CONTENT_HASHES, FEATURES, IMPORTS, ITEMS};
use crate::error::{Error, Result};

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
    /// Bucket chunks read.
    pub chunks: u64,
    /// Whether redb's own structural check passed (`None` when not run: read-only open).
    pub storage_ok: Option<bool>,
}

impl CheckReport {
    /// Whether every invariant holds.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.storage_ok != Some(false)
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        } else {
            self.unlisted += 1;
        }
    }
}

pub(crate) fn check(dir: &Path, txn: &ReadTransaction) -> Result<CheckReport> {
    let meta = read_meta(dir, txn)?;
    let layout = meta.layout();
    let storage = |err: redb::Error| Error::storage(dir, err);
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

    let mut hashed_items: HashSet<([u8; 32], u64)> = HashSet::new();
    let mut item_ids = HashSet::new();
    let table = txn.open_table(ITEMS).map_err(|e| storage(e.into()))?;
    for entry in table.iter().map_err(|e| storage(e.into()))? {
        let (id, bytes) = entry.map_err(|e| storage(e.into()))?;
        let id = id.value();
        item_ids.insert(id);
        match ItemRecord::decode(bytes.value()) {
            Ok(item) => {
                if let Some(hash) = item.content_hash {
                    hashed_items.insert((hash, id));
                }
            }
            Err(err) => report.problem(format!("item {id}: {err}")),
        }
        if !code_ids.contains(&id) {
            report.problem(format!("item {id} has no code"));
        }
    }
    for id in code_ids.difference(&item_ids) {
        report.problem(format!("code {id} has no item record"));
    }

    // Kept features: only for live codes, each of the bound extractor's dimension.
    let (model, _) = super::read_binding(dir, txn)?;
    // Absent from files that never kept features: nothing to check.
    let features = open_optional(txn, FEATURES).map_err(|e| storage(e.into()))?;
    let entries = features
        .as_ref()
        .map(|table| table.iter())
        .transpose()
        .map_err(|e| storage(e.into()))?;
    for entry in entries.into_iter().flatten() {
        let (id, bytes) = entry.map_err(|e| storage(e.into()))?;
        let id = id.value();
        if !code_ids.contains(&id) {
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

    // Import progress (format version 2): every record decodes (which checks committed <= rows),
    // and an import cannot have given out ids the index never handed out.
    // Absent until an import records progress, and from every version-1 file.
    let imports = open_optional(txn, IMPORTS).map_err(|e| storage(e.into()))?;
    let entries = imports
        .as_ref()
        .map(|table| table.iter())
        .transpose()
        .map_err(|e| storage(e.into()))?;
    for entry in entries.into_iter().flatten() {
        let (source, bytes) = entry.map_err(|e| storage(e.into()))?;
        let name = crate::index::hex(source.value());
        match ImportRecord::decode(bytes.value()) {
            Ok(record) => {
                if let Some(first) = record.first_id {
                    if first >= meta.next_id {
                        report.problem(format!(
                            "import {name}: first id {first} is at or past the next id {}",
                            meta.next_id
                        ));
                    }
                }
            }
            Err(err) => report.problem(format!("import {name}: {err}")),
        }
    }

    let hashes = txn
        .open_multimap_table(CONTENT_HASHES)
        .map_err(|e| storage(e.into()))?;
    let mut hash_entries = HashSet::new();
    for entry in hashes.iter().map_err(|e| storage(e.into()))? {
        let (hash, ids) = entry.map_err(|e| storage(e.into()))?;
        let hash = *hash.value();
        for id in ids {
            let id = id.map_err(|e| storage(e.into()))?.value();
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
