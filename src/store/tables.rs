//! The hash tables (format version 3): each table's arrays (sparse keys, offsets, entries) in
//! parts of about 8 MiB ([`part_elements`]), described by the [`TablesRecord`] in the meta table. An
//! open reads a few hundred large values per table, in order, straight into the arrays the
//! search uses; a rebuild writes each bucket once.

use std::sync::Arc;

use milan_index_format::{
    part_elements, parts_of, MetaRecord, PartKey, PartKind, TableRecord, TablesRecord, ENTRY_BYTES,
    PART_KEY_BYTES,
};
use redb::{ReadOnlyTable, Table as RedbTable};

use super::blocks::StoredCodes;
use super::StoreError;
use crate::mih::layout::WordLayout;
use crate::mih::table::{entry_bytes, extend_entries, is_dense, BucketEntry, Table};
use crate::mih::View;

/// Writes `view`'s tables into an empty parts table; returns the record describing them.
pub(super) fn write(
    parts: &mut RedbTable<&[u8; PART_KEY_BYTES], &[u8]>,
    view: &View,
) -> Result<TablesRecord, StoreError> {
    let mut tables = Vec::with_capacity(view.tables().len());
    for (j, table) in view.tables().iter().enumerate() {
        let stored = table.stored();
        let substring = j as u16;
        if !stored.dense {
            write_u32s(parts, substring, PartKind::Keys, stored.keys)?;
        }
        write_u32s(parts, substring, PartKind::Offsets, stored.offsets)?;
        for (part, chunk) in entry_bytes(stored.entries)
            .chunks(part_elements(ENTRY_BYTES) * ENTRY_BYTES)
            .enumerate()
        {
            let key = PartKey {
                substring,
                kind: PartKind::Entries,
                part: part as u32,
            };
            parts.insert(&key.encode(), chunk)?;
        }
        tables.push(TableRecord {
            dense: stored.dense,
            keys: stored.keys.len() as u64,
            entries: stored.entries.len() as u64,
        });
    }
    Ok(TablesRecord {
        slots: view.base_slots() as u64,
        tables,
        sample: view.sample_rows().to_vec(),
    })
}

fn write_u32s(
    parts: &mut RedbTable<&[u8; PART_KEY_BYTES], &[u8]>,
    substring: u16,
    kind: PartKind,
    values: &[u32],
) -> Result<(), StoreError> {
    let per_part = part_elements(4);
    let mut bytes = Vec::with_capacity(per_part.min(values.len()) * 4);
    for (part, chunk) in values.chunks(per_part).enumerate() {
        bytes.clear();
        bytes.extend(chunk.iter().flat_map(|value| value.to_le_bytes()));
        let key = PartKey {
            substring,
            kind,
            part: part as u32,
        };
        parts.insert(&key.encode(), bytes.as_slice())?;
    }
    Ok(())
}

/// Reads the parts of one array in order, handing each to `sink`, and checks that there are
/// exactly the parts `elements` elements of `element_bytes` take.
fn read_array(
    parts: &ReadOnlyTable<&[u8; PART_KEY_BYTES], &[u8]>,
    substring: u16,
    kind: PartKind,
    elements: u64,
    element_bytes: usize,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), StoreError> {
    let name = || format!("hash table {substring}, {kind:?} array");
    let low = PartKey {
        substring,
        kind,
        part: 0,
    }
    .encode();
    let high = PartKey {
        substring,
        kind,
        part: u32::MAX,
    }
    .encode();
    let expected = parts_of(elements, element_bytes);
    let per_part = part_elements(element_bytes) as u64;
    let mut seen = 0u64;
    for entry in parts.range::<&[u8; PART_KEY_BYTES]>(&low..=&high)? {
        let (key, value) = entry?;
        let part = u64::from(u32::from_be_bytes(
            key.value()[3..7].try_into().expect("4 bytes"),
        ));
        if part != seen || seen >= expected {
            return Err(StoreError::Corrupted(format!(
                "{}: part {part} where part {seen} of {expected} is due",
                name()
            )));
        }
        let due = (elements - seen * per_part).min(per_part) as usize;
        if value.value().len() != due * element_bytes {
            return Err(StoreError::Corrupted(format!(
                "{}: part {part} holds {} bytes for {due} elements of {element_bytes}",
                name(),
                value.value().len()
            )));
        }
        sink(value.value());
        seen += 1;
    }
    if seen != expected {
        return Err(StoreError::Corrupted(format!(
            "{}: {seen} parts of the {expected} its {elements} elements take",
            name()
        )));
    }
    Ok(())
}

/// Room reserved for `elements` elements of `element_bytes`: exact, for the memory budget, but
/// never more than the file could hold, whatever a damaged record claims.
fn reserve(elements: u64, element_bytes: usize, file_bytes: u64) -> usize {
    elements.min(file_bytes / element_bytes as u64) as usize
}

fn read_u32s(
    parts: &ReadOnlyTable<&[u8; PART_KEY_BYTES], &[u8]>,
    substring: u16,
    kind: PartKind,
    elements: u64,
    file_bytes: u64,
) -> Result<Vec<u32>, StoreError> {
    let mut values = Vec::with_capacity(reserve(elements, 4, file_bytes));
    read_array(parts, substring, kind, elements, 4, |bytes| {
        values.extend(
            bytes
                .chunks_exact(4)
                .map(|value| u32::from_le_bytes(value.try_into().expect("four bytes"))),
        );
    })?;
    Ok(values)
}

/// The search snapshot: the stored codes, and the hash tables over the first `record.slots` of
/// them (none without a record: every code is then filed in tables built here).
pub(super) fn load(
    parts: &ReadOnlyTable<&[u8; PART_KEY_BYTES], &[u8]>,
    meta: &MetaRecord,
    record: Option<TablesRecord>,
    stored: StoredCodes,
    file_bytes: u64,
) -> Result<View, StoreError> {
    let layout = Arc::new(WordLayout::new(meta.layout()));
    let StoredCodes { words, deleted } = stored;
    let slots = deleted.len();
    let Some(record) = record else {
        return Ok(View::build(layout, words, deleted));
    };
    if record.tables.len() != layout.substrings.len() {
        return Err(StoreError::Corrupted(format!(
            "{} hash tables recorded for {} substrings",
            record.tables.len(),
            layout.substrings.len()
        )));
    }
    if record.slots > slots as u64 {
        return Err(StoreError::Corrupted(format!(
            "the hash tables cover {} ids but {slots} are stored",
            record.slots
        )));
    }
    let base_slots = record.slots as usize;
    let mut tables = Vec::with_capacity(record.tables.len());
    for (j, (shape, sub)) in record.tables.iter().zip(&layout.substrings).enumerate() {
        let substring = j as u16;
        let bad = |detail: String| StoreError::Corrupted(format!("hash table {j}: {detail}"));
        if shape.dense && shape.keys != 0 {
            return Err(bad("a dense table with a keys array".into()));
        }
        // A dense shape the build would not choose is refused before its offsets are read.
        if shape.dense && !is_dense(sub.width, base_slots) {
            return Err(bad(format!(
                "stored dense for {}-bit values over {base_slots} ids",
                sub.width
            )));
        }
        let (keys, offsets, entries) = read_arrays(parts, substring, shape, sub.width, file_bytes)?;
        let table = Table::from_stored(sub.width, base_slots, shape.dense, keys, offsets, entries)
            .map_err(bad)?;
        tables.push(table);
    }
    Ok(View::from_stored(
        layout,
        words,
        deleted,
        base_slots,
        tables,
        record.sample,
    ))
}

/// A table's arrays as read: keys (empty when dense), offsets, entries.
pub(super) type TableArrays = (Vec<u32>, Vec<u32>, Vec<BucketEntry>);

/// The arrays of table `substring` of `shape`, whose substrings are `width` bits wide.
pub(super) fn read_arrays(
    parts: &ReadOnlyTable<&[u8; PART_KEY_BYTES], &[u8]>,
    substring: u16,
    shape: &TableRecord,
    width: u32,
    file_bytes: u64,
) -> Result<TableArrays, StoreError> {
    let keys = if shape.dense {
        Vec::new()
    } else {
        read_u32s(parts, substring, PartKind::Keys, shape.keys, file_bytes)?
    };
    let offsets = read_u32s(
        parts,
        substring,
        PartKind::Offsets,
        shape.offsets(width),
        file_bytes,
    )?;
    let mut entries: Vec<BucketEntry> =
        Vec::with_capacity(reserve(shape.entries, ENTRY_BYTES, file_bytes));
    read_array(
        parts,
        substring,
        PartKind::Entries,
        shape.entries,
        ENTRY_BYTES,
        |bytes| extend_entries(&mut entries, bytes),
    )?;
    Ok((keys, offsets, entries))
}
