//! Codes in blocks (format version 3): [`block_ids`] ids per redb entry (7,936 of 64-bit codes),
//! a live bitmap then the codes, so that an open reads a few thousand large values instead of
//! one entry per code, and a commit rewrites only the blocks it touches.
//!
//! Every block from 0 to the last is present, and every block but the last holds all its slots:
//! the slots an open allocates are then proven by the bytes the file holds.

use bitvec::vec::BitVec;
use milan_index_format::{block_ids, CodeBlock, CodeBlockBuf, MetaRecord};
use redb::{ReadOnlyTable, ReadableTable, ReadableTableMetadata, Table};

use super::StoreError;
use crate::code::{extend_bytes, extend_words};
use crate::mih::View;

/// The codes an open read: every slot's words, and a flag per slot set where nothing is stored.
pub(super) struct StoredCodes {
    pub(super) words: Vec<u64>,
    pub(super) deleted: BitVec<u64>,
}

/// Reads every block, checking their sequence, their shape and the count of stored codes.
pub(super) fn load(
    table: &ReadOnlyTable<u64, &[u8]>,
    meta: &MetaRecord,
    file_bytes: u64,
) -> Result<StoredCodes, StoreError> {
    let code_bytes = meta.layout().bytes();
    let per_block = block_ids(code_bytes);
    let words_per_code = code_bytes.div_ceil(8);
    // Reserved exactly (the resident memory of a large index is mostly these words), from the
    // table's count of blocks, but never past what the file could hold.
    let blocks = table
        .len()?
        .min(file_bytes / (per_block * code_bytes) as u64 + 1) as usize;
    let mut words = Vec::with_capacity(blocks * per_block * words_per_code);
    let mut flags: Vec<u8> = Vec::with_capacity(blocks * per_block / 8);
    let (mut slots, mut live) = (0usize, 0u64);
    for (expected, entry) in table.iter()?.enumerate() {
        let (key, value) = entry?;
        let key = key.value();
        if key != expected as u64 {
            return Err(StoreError::Corrupted(format!(
                "code block {key} follows block {}: block {expected} is missing",
                expected as i64 - 1
            )));
        }
        if slots != expected * per_block {
            return Err(StoreError::Corrupted(format!(
                "code block {} holds {} slots but is not the last block",
                expected - 1,
                slots - (expected - 1) * per_block
            )));
        }
        let block = CodeBlock::decode(value.value(), code_bytes)
            .map_err(|err| StoreError::Corrupted(format!("code block {key}: {err}")))?;
        slots += block.slots();
        if slots as u64 > meta.next_id {
            return Err(StoreError::Corrupted(format!(
                "code block {key} holds ids up to {}, at or past the next id {}",
                slots - 1,
                meta.next_id
            )));
        }
        live += block.live_count() as u64;
        if code_bytes.is_multiple_of(8) {
            words.extend(
                block
                    .codes()
                    .chunks_exact(8)
                    .map(|word| u64::from_be_bytes(word.try_into().expect("eight bytes"))),
            );
        } else {
            for i in 0..block.slots() {
                extend_words(&mut words, block.code(i));
            }
        }
        // A block's ids start on a byte of the bitmap (blocks hold a multiple of 8 ids), so
        // the bitmaps, inverted, join into the deleted flags byte by byte.
        flags.extend(block.live_bitmap().iter().map(|byte| !byte));
    }
    if live != meta.live_count {
        return Err(StoreError::Corrupted(format!(
            "{live} codes stored but the meta record counts {}",
            meta.live_count
        )));
    }
    // Least significant bit first in each byte and each word: the flags' own order.
    let raw: Vec<u64> = flags
        .chunks(8)
        .map(|chunk| {
            let mut word = [0xffu8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect();
    let mut deleted = BitVec::from_vec(raw);
    deleted.truncate(slots);
    Ok(StoredCodes { words, deleted })
}

/// The stored codes of ids `from .. to` (the adds of other processes' commits, for a handle
/// catching up): their ids, increasing, and their words one after another. Reads only the
/// blocks that hold those ids.
pub(super) fn load_range(
    table: &ReadOnlyTable<u64, &[u8]>,
    code_bytes: usize,
    from: u64,
    to: u64,
) -> Result<(Vec<u64>, Vec<u64>), StoreError> {
    let (mut ids, mut words) = (Vec::new(), Vec::new());
    if from >= to {
        return Ok((ids, words));
    }
    let per_block = block_ids(code_bytes) as u64;
    for entry in table.range(from / per_block..=(to - 1) / per_block)? {
        let (key, value) = entry?;
        let first = key.value() * per_block;
        let block = CodeBlock::decode(value.value(), code_bytes)
            .map_err(|err| StoreError::Corrupted(format!("code block {}: {err}", key.value())))?;
        for i in 0..block.slots() {
            let id = first + i as u64;
            if id >= from && id < to && block.is_live(i) {
                ids.push(id);
                extend_words(&mut words, block.code(i));
            }
        }
    }
    Ok((ids, words))
}

/// Reads block `b` to change it: a new block when it is not stored yet.
fn block_for_change(
    table: &Table<u64, &[u8]>,
    code_bytes: usize,
    b: u64,
) -> Result<Option<CodeBlockBuf>, StoreError> {
    let Some(value) = table.get(b)? else {
        return Ok(None);
    };
    let block = CodeBlock::decode(value.value(), code_bytes)
        .map_err(|err| StoreError::Corrupted(format!("code block {b}: {err}")))?;
    Ok(Some(CodeBlockBuf::from_block(&block)))
}

/// Stores new codes (`ids` increasing and past every stored slot, their packed bytes one after
/// another in `bytes`). Ids may skip slots (handed out and deleted in the same transaction), even
/// whole blocks: before a block is written, the block before it is padded to full length and any
/// skipped blocks are written empty, so that every block but the last stays full.
pub(super) fn add(
    table: &mut Table<u64, &[u8]>,
    code_bytes: usize,
    ids: &[u64],
    bytes: &[u8],
) -> Result<(), StoreError> {
    let per_block = block_ids(code_bytes) as u64;
    let codes: Vec<&[u8]> = bytes.chunks_exact(code_bytes).collect();
    let mut last = table.last()?.map(|(key, _)| key.value());
    let mut at = 0;
    while at < ids.len() {
        let b = ids[at] / per_block;
        if last.is_none_or(|last| last < b) {
            fill_up_to(table, code_bytes, last, b)?;
        }
        let mut block = match block_for_change(table, code_bytes, b)? {
            Some(block) => block,
            None => CodeBlockBuf::new(code_bytes),
        };
        while at < ids.len() && ids[at] / per_block == b {
            block.set((ids[at] % per_block) as usize, codes[at]);
            at += 1;
        }
        table.insert(b, block.as_bytes())?;
        last = Some(b);
    }
    Ok(())
}

/// Makes every block before block `b` full: pads the last stored one (`last`) and writes empty
/// full blocks for the numbers between it and `b`.
fn fill_up_to(
    table: &mut Table<u64, &[u8]>,
    code_bytes: usize,
    last: Option<u64>,
    b: u64,
) -> Result<(), StoreError> {
    let per_block = block_ids(code_bytes);
    if let Some(last) = last {
        let mut block = block_for_change(table, code_bytes, last)?.expect("the last block");
        block.pad_to(per_block);
        table.insert(last, block.as_bytes())?;
    }
    let mut empty = CodeBlockBuf::new(code_bytes);
    empty.pad_to(per_block);
    for skipped in last.map_or(0, |last| last + 1)..b {
        table.insert(skipped, empty.as_bytes())?;
    }
    Ok(())
}

/// Removes stored codes (`ids` in any order); an id with no stored code is damage.
pub(super) fn delete(
    table: &mut Table<u64, &[u8]>,
    code_bytes: usize,
    ids: &[u64],
) -> Result<(), StoreError> {
    let per_block = block_ids(code_bytes) as u64;
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    for group in ids.chunk_by(|a, b| a / per_block == b / per_block) {
        let b = group[0] / per_block;
        let mut block = block_for_change(table, code_bytes, b)?.ok_or_else(|| {
            StoreError::Corrupted(format!("live id {} has no code block", group[0]))
        })?;
        for &id in group {
            if !block.clear((id % per_block) as usize) {
                return Err(StoreError::Corrupted(format!(
                    "live id {id} has no stored code"
                )));
            }
        }
        table.insert(b, block.as_bytes())?;
    }
    Ok(())
}

/// Writes the blocks of every slot of `view` into an empty table.
pub(super) fn write_view(table: &mut Table<u64, &[u8]>, view: &View) -> Result<(), StoreError> {
    let code_bytes = view.layout().code.bytes();
    let per_block = block_ids(code_bytes);
    let mut bytes = Vec::with_capacity(code_bytes);
    for (b, first) in (0..view.slots()).step_by(per_block).enumerate() {
        let mut block = CodeBlockBuf::new(code_bytes);
        let end = (first + per_block).min(view.slots());
        for slot in first..end {
            match view.code(slot as u64) {
                Some(words) => {
                    bytes.clear();
                    extend_bytes(&mut bytes, words, code_bytes);
                    block.set(slot - first, &bytes);
                }
                None => block.pad_to(slot - first + 1),
            }
        }
        table.insert(b as u64, block.as_bytes())?;
    }
    Ok(())
}
