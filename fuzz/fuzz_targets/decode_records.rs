//! `decode_records`: every decoder of `milan-index-format` on arbitrary bytes (meta, item, import
//! and model records, head files, bucket chunks and keys, feature vectors, code layouts, and the
//! format-version-3 code blocks, hash table part keys and tables record).
//!
//! Asserts that no decoder panics (bad bytes give a `DecodeError`), that whatever decodes
//! re-encodes to exactly the bytes it came from (so a decoded record hides nothing and rewriting
//! it changes nothing), and that `CodeLayout::new` on arbitrary numbers either refuses them with the
//! matching `LayoutError` or returns substrings that tile the code exactly, each with a filter
//! beside it. Code blocks are decoded for several code lengths (1 to 128 bytes, each with its own
//! `block_ids` and bitmap length) and checked against their shape rules (bitmap, whole codes, at
//! most a block's ids, no stored bit past the slots, no more than 64,512 bytes); lengths of 0 or
//! over 128 bytes are refused. Besides the input as it is, a block made of the input (its bytes
//! as the codes, repeated as the bitmap) is always decoded, since the bitmap of a long block is
//! longer than most inputs. A block is also built from the input with `CodeBlockBuf` (sets,
//! clears, including past the block, and padding) and compared with a model of its slots. Part
//! keys keep numeric order in byte order; a decoded tables record keeps its sample's shape, and
//! the offsets and part counts derived from its claims neither overflow nor disagree with
//! `part_elements` (each part at most 8,384,512 bytes).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

use milan_index_format::{
    block_bitmap_bytes, block_ids, check_code_bytes, decode_bucket_ids, decode_features,
    encode_bucket_ids, encode_features, part_elements, parts_of, BucketKey, CodeBlock,
    CodeBlockBuf, CodeLayout, DecodeError, HeadFile, ImportRecord, ItemRecord, LayoutError,
    MetaRecord, ModelRecord, PartKey, TablesRecord, BUCKET_KEY_BYTES, ENTRY_BYTES, FILTER_BITS,
    FORMAT_VERSION, HEAD_MAGIC, HEAD_VERSION, MAGIC, MAX_BITS, MAX_SAMPLES, MAX_SUBSTRING_BITS,
    MIN_BITS, MIN_SUBSTRING_BITS, OLDEST_SUPPORTED_VERSION, PART_KEY_BYTES,
};

fuzz_target!(|data: &[u8]| {
    meta(data);
    item(data);
    import(data);
    bucket_ids(data);
    bucket_keys(data);
    layout(data);
    model(data);
    head(data);
    features(data);
    code_blocks(data);
    code_block_buf(data);
    part_keys(data);
    tables_record(data);
});

fn meta(data: &[u8]) {
    let has_magic = data.len() >= 12 && data[..8] == MAGIC;
    match MetaRecord::decode(data) {
        Ok(meta) => {
            assert_eq!(meta.encode(), data, "meta record does not round-trip");
            // What the engine relies on without checking again.
            assert!((OLDEST_SUPPORTED_VERSION..=FORMAT_VERSION).contains(&meta.format_version));
            assert!(meta.live_count <= meta.next_id);
            let layout = meta.layout(); // panics if decode let a bad layout through
            assert_eq!(
                (layout.bits(), layout.substrings()),
                (meta.bits, meta.substrings)
            );
        }
        // The magic check comes first, so "not an index" is told apart from "damaged index".
        Err(DecodeError::BadMagic) => assert!(!has_magic),
        Err(DecodeError::TooNew { found, .. }) => assert!(has_magic && found > FORMAT_VERSION),
        Err(DecodeError::UpgradeRequired { found, .. }) => {
            assert!(has_magic && found < OLDEST_SUPPORTED_VERSION)
        }
        Err(_) => assert!(has_magic),
    }
}

fn item(data: &[u8]) {
    if let Ok(item) = ItemRecord::decode(data) {
        assert_eq!(item.encode(), data, "item record does not round-trip");
    }
}

fn import(data: &[u8]) {
    if let Ok(record) = ImportRecord::decode(data) {
        assert_eq!(record.encode(), data, "import record does not round-trip");
        assert!(record.committed <= record.rows);
    }
}

fn model(data: &[u8]) {
    if let Ok(model) = ModelRecord::decode(data) {
        assert_eq!(model.encode(), data, "model record does not round-trip");
    }
}

fn head(data: &[u8]) {
    if let Ok(head) = HeadFile::decode(data) {
        assert!(data.starts_with(&HEAD_MAGIC) && head.version == HEAD_VERSION);
        // Weights are compared as bytes: a decoded head keeps every bit of every f32.
        assert_eq!(head.encode(), data, "head file does not round-trip");
    }
}

fn features(data: &[u8]) {
    // Once with the dimension the length implies, once with one read from the input.
    let implied = (data.len() / 4) as u32;
    let read = data
        .first_chunk::<4>()
        .map_or(0, |b| u32::from_le_bytes(*b));
    for dim in [implied, read] {
        if let Ok(features) = decode_features(data, dim) {
            assert_eq!(features.len(), dim as usize);
            assert_eq!(
                encode_features(&features),
                data,
                "features do not round-trip"
            );
        }
    }
}

fn bucket_ids(data: &[u8]) {
    if let Ok(ids) = decode_bucket_ids(data) {
        assert!(!ids.is_empty() && ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            encode_bucket_ids(&ids),
            data,
            "bucket chunk does not round-trip"
        );
    }
}

fn bucket_keys(data: &[u8]) {
    let Some((first, rest)) = data.split_first_chunk::<BUCKET_KEY_BYTES>() else {
        return;
    };
    let a = BucketKey::decode(first);
    assert_eq!(&a.encode(), first, "bucket key does not round-trip");
    // redb sorts keys by their bytes; the engine relies on that being the numeric order.
    if let Some(second) = rest.first_chunk::<BUCKET_KEY_BYTES>() {
        let b = BucketKey::decode(second);
        assert_eq!(
            first.cmp(second),
            a.cmp(&b),
            "byte order differs from key order"
        );
    }
}

fn layout(data: &[u8]) {
    let Some((head, code)) = data.split_first_chunk::<8>() else {
        return;
    };
    let bits = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let substrings = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    check_layout(bits, substrings, code);
    // Raw u32s almost never form a valid layout; fold the same numbers into the valid range too,
    // so that the accepted side is explored as much as the refused one.
    let bits = 8 * (1 + bits % (MAX_BITS / 8));
    let (min, max) = CodeLayout::substring_range(bits);
    let substrings = min + substrings % (max - min + 1);
    assert!(
        CodeLayout::new(bits, substrings).is_ok(),
        "{bits} bits, {substrings} substrings"
    );
    check_layout(bits, substrings, code);
}

fn check_layout(bits: u32, substrings: u32, source: &[u8]) {
    let bits_ok = (MIN_BITS..=MAX_BITS).contains(&bits) && bits.is_multiple_of(8);
    let layout = match CodeLayout::new(bits, substrings) {
        Ok(layout) => layout,
        Err(LayoutError::Bits { bits: got }) => {
            assert!(!bits_ok && got == bits);
            return;
        }
        Err(LayoutError::Substrings { min, max, .. }) => {
            assert!(bits_ok && (min, max) == CodeLayout::substring_range(bits));
            assert!(!(min..=max).contains(&substrings));
            return;
        }
        Err(other) => panic!("unexpected layout error {other:?}"),
    };
    assert!(bits_ok);
    assert_eq!((layout.bits(), layout.substrings()), (bits, substrings));
    assert_eq!(layout.bytes() * 8, bits as usize);

    // The substrings are contiguous, each of an allowed width, and cover the code exactly.
    let mut next = 0;
    for j in 0..substrings {
        assert_eq!(
            layout.substring_start(j),
            next,
            "substring {j} of {layout:?}"
        );
        let width = layout.substring_width(j);
        assert!((MIN_SUBSTRING_BITS..=MAX_SUBSTRING_BITS).contains(&width));
        next += width;
    }
    assert_eq!(next, bits);

    // A code from the rest of the input (repeated, or zeros when there is none).
    let code: Vec<u8> = (0..layout.bytes())
        .map(|i| source.get(i % source.len().max(1)).copied().unwrap_or(0))
        .collect();
    assert!(check_code_bytes(&layout, &code).is_ok());
    assert!(check_code_bytes(&layout, &code[1..]).is_err());
    assert!(check_code_bytes(&layout, &[code.as_slice(), &[0]].concat()).is_err());

    // Each substring value fits its width, and the values, concatenated, give the code back.
    let mut rebuilt = vec![0u8; code.len()];
    let mut bit = 0usize;
    for j in 0..substrings {
        let width = layout.substring_width(j);
        let value = layout.substring_value(&code, j);
        assert!(
            u64::from(value) < 1u64 << width,
            "substring {j} value {value} too wide"
        );
        for b in (0..width).rev() {
            if value >> b & 1 == 1 {
                rebuilt[bit / 8] |= 0x80 >> (bit % 8);
            }
            bit += 1;
        }
    }
    assert_eq!(rebuilt, code, "substring values do not reassemble the code");

    // Each filter lies inside the code, right before or right after its substring, as wide as
    // the roomier side allows up to FILTER_BITS, and its value fits that width.
    for j in 0..substrings {
        let (start, width) = layout.filter_range(j);
        let (s, w) = (layout.substring_start(j), layout.substring_width(j));
        assert!(
            start + width <= bits,
            "filter {j} of {layout:?} leaves the code"
        );
        assert!(
            start + width == s || start == s + w,
            "filter {j} of {layout:?} is not beside its substring"
        );
        assert_eq!(width, s.max(bits - s - w).min(FILTER_BITS));
        let value = CodeLayout::bits_value(&code, start, width);
        assert!(u64::from(value) < 1u64 << width);
    }
}

/// Code lengths, in bytes, that blocks are decoded with: the shortest, odd ones, the common ones
/// and the longest. Each has its own block length (`block_ids`) and bitmap length.
const CODE_BYTES: [usize; 5] = [1, 3, 8, 16, 128];

/// The most bytes a full code block takes: a 64 KiB run of the storage engine's pages, less
/// 1 KiB for its page header and the key.
const MAX_BLOCK_BYTES: usize = 64_512;

fn code_blocks(data: &[u8]) {
    // Code lengths the format does not have are refused, whatever the bytes.
    for code_bytes in [0, MAX_BITS as usize / 8 + 1, usize::MAX] {
        assert!(
            CodeBlock::decode(data, code_bytes).is_err(),
            "{code_bytes}-byte codes accepted"
        );
    }
    for code_bytes in CODE_BYTES {
        let (ids, bitmap) = (block_ids(code_bytes), block_bitmap_bytes(code_bytes));
        assert!(ids > 0 && bitmap * 8 == ids);
        assert!(bitmap + ids * code_bytes <= MAX_BLOCK_BYTES);
        check_block(data, code_bytes);
        // The same bytes with every bit past the slots cleared: accepted exactly when the length
        // fits, so that the accepted side is explored as much as the refused one.
        if data.len() > bitmap {
            let slots = (data.len() - bitmap) / code_bytes;
            let fits =
                (data.len() - bitmap).is_multiple_of(code_bytes) && (1..=ids).contains(&slots);
            let mut cleared = data.to_vec();
            clear_bits_from(&mut cleared[..bitmap], slots.min(ids));
            assert_eq!(
                check_block(&cleared, code_bytes),
                fits,
                "{} bytes, {code_bytes}-byte codes",
                data.len()
            );
        }
        // The bitmap of long blocks (7,168 bytes for 1-byte codes) is longer than most inputs:
        // also a block whose codes are the input (whole codes, at most a block's worth) and whose
        // bitmap is the input repeated, bits past the slots cleared. It always decodes.
        let slots = (data.len() / code_bytes).min(ids);
        if slots > 0 {
            let mut block: Vec<u8> = data.iter().copied().cycle().take(bitmap).collect();
            clear_bits_from(&mut block, slots);
            block.extend_from_slice(&data[..slots * code_bytes]);
            assert!(
                check_block(&block, code_bytes),
                "{slots} slots of {code_bytes}-byte codes refused"
            );
        }
    }
}

/// Clears bits `from ..` of a bitmap (least significant bit first).
fn clear_bits_from(bitmap: &mut [u8], from: usize) {
    for (at, byte) in bitmap.iter_mut().enumerate().skip(from / 8) {
        if at == from / 8 {
            *byte &= (1u8 << (from % 8)) - 1;
        } else {
            *byte = 0;
        }
    }
}

/// Decodes `data` as a block of `code_bytes`-byte codes and, when it decodes, checks it against
/// the format; returns whether it decoded.
fn check_block(data: &[u8], code_bytes: usize) -> bool {
    let Ok(block) = CodeBlock::decode(data, code_bytes) else {
        return false;
    };
    let (ids, bitmap) = (block_ids(code_bytes), block_bitmap_bytes(code_bytes));
    let slots = block.slots();
    assert!((1..=ids).contains(&slots));
    assert_eq!(data.len(), bitmap + slots * code_bytes);
    assert!(data.len() <= MAX_BLOCK_BYTES);
    assert_eq!(block.live_bitmap(), &data[..bitmap]);
    assert_eq!(block.codes(), &data[bitmap..]);
    let mut past = block.live_bitmap().to_vec();
    clear_bits_from(&mut past, slots);
    assert_eq!(past, block.live_bitmap(), "a bit past the slots is set");
    let live: Vec<usize> = (0..slots).filter(|&i| block.is_live(i)).collect();
    assert_eq!(block.live_count(), live.len());
    for i in 0..slots {
        assert_eq!(
            block.code(i),
            &data[bitmap + i * code_bytes..][..code_bytes]
        );
    }
    // A copy encodes to the same bytes.
    let copy = CodeBlockBuf::from_block(&block);
    assert_eq!(copy.as_bytes(), data, "code block does not round-trip");
    // Built afresh from its stored codes, it gives the same bytes when the slots without a code
    // hold zeros (as the format requires; the decoder does not check the code bytes).
    let mut built = CodeBlockBuf::new(code_bytes);
    built.pad_to(slots);
    for &i in &live {
        built.set(i, block.code(i));
    }
    let zeros = (0..slots)
        .filter(|&i| !block.is_live(i))
        .all(|i| block.code(i).iter().all(|&b| b == 0));
    assert_eq!(built.as_bytes() == data, zeros);
    // Clearing every slot removes exactly the stored codes and keeps the slots; slots past the
    // block (up to one whose offset would overflow) hold nothing to clear.
    let mut cleared = copy;
    for i in (0..slots + 2).chain([
        ids,
        ids * 8,
        (usize::MAX / code_bytes).saturating_add(1),
        usize::MAX,
    ]) {
        assert_eq!(cleared.clear(i), i < slots && block.is_live(i), "slot {i}");
    }
    let empty = CodeBlock::decode(cleared.as_bytes(), code_bytes).expect("a cleared block decodes");
    assert_eq!((empty.slots(), empty.live_count()), (slots, 0));
    true
}

/// A block built from the input: byte 0 picks the code length, then each 3-byte step is a slot
/// (u16 LE, modulo the block's ids, except that a clear whose action byte has its top bit set
/// keeps the raw u16, which may lie past the block) and an action (set a code made of the action
/// byte, clear, or pad), checked against a model of the slots.
fn code_block_buf(data: &[u8]) {
    let Some((&first, steps)) = data.split_first() else {
        return;
    };
    let code_bytes = CODE_BYTES[first as usize % CODE_BYTES.len()];
    let ids = block_ids(code_bytes);
    let mut buf = CodeBlockBuf::new(code_bytes);
    let mut model: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut slots = 0usize;
    for step in steps.chunks_exact(3) {
        let raw = u16::from_le_bytes([step[0], step[1]]) as usize;
        let slot = raw % ids;
        match step[2] % 4 {
            0 | 1 => {
                let code = vec![step[2]; code_bytes];
                buf.set(slot, &code);
                model.insert(slot, code);
                slots = slots.max(slot + 1);
            }
            2 => {
                let slot = if step[2] & 0x80 != 0 { raw } else { slot };
                assert_eq!(
                    buf.clear(slot),
                    model.remove(&slot).is_some(),
                    "slot {slot}"
                );
            }
            _ => {
                buf.pad_to(slot);
                slots = slots.max(slot);
            }
        }
    }
    assert_eq!(buf.is_empty(), slots == 0);
    assert_eq!(
        buf.as_bytes().len(),
        block_bitmap_bytes(code_bytes) + slots * code_bytes
    );
    if slots == 0 {
        assert!(CodeBlock::decode(buf.as_bytes(), code_bytes).is_err());
        return;
    }
    let block = CodeBlock::decode(buf.as_bytes(), code_bytes).expect("a built block decodes");
    assert_eq!((block.slots(), block.live_count()), (slots, model.len()));
    // The model's slots as the bitmap and codes they make (compared whole: a block of 1-byte
    // codes has up to 57,344 slots).
    let mut bitmap = vec![0u8; block_bitmap_bytes(code_bytes)];
    let mut codes = vec![0u8; slots * code_bytes];
    for (&i, code) in &model {
        assert!(block.is_live(i) && block.code(i) == code.as_slice());
        bitmap[i / 8] |= 1 << (i % 8);
        codes[i * code_bytes..][..code_bytes].copy_from_slice(code);
    }
    assert_eq!(block.live_bitmap(), bitmap.as_slice());
    assert_eq!(block.codes(), codes.as_slice());
}

fn part_keys(data: &[u8]) {
    let Some((first, rest)) = data.split_first_chunk::<PART_KEY_BYTES>() else {
        return;
    };
    let Ok(a) = PartKey::decode(first) else {
        assert!(!(1..=3).contains(&first[2]), "kind {} refused", first[2]);
        return;
    };
    assert_eq!(&a.encode(), first, "part key does not round-trip");
    assert_eq!(a.kind as u8, first[2]);
    // redb sorts keys by their bytes: the parts of one array must sit together, in order.
    if let Some(Ok(b)) = rest.first_chunk::<PART_KEY_BYTES>().map(PartKey::decode) {
        assert_eq!(
            first.cmp(&b.encode()),
            a.cmp(&b),
            "byte order differs from key order"
        );
    }
}

fn tables_record(data: &[u8]) {
    let Ok(record) = TablesRecord::decode(data) else {
        return;
    };
    assert_eq!(record.encode(), data, "tables record does not round-trip");
    assert!(record.sample.len() <= MAX_SAMPLES);
    if let Some(row) = record.sample.first() {
        assert!(record.sample.iter().all(|other| other.len() == row.len()));
    }
    for table in &record.tables {
        // What a reader derives from the record, whatever it claims: counts of offsets (which
        // saturate rather than overflow) and of the parts of each array.
        check_parts(table.entries, ENTRY_BYTES);
        check_parts(table.keys, 4);
        for width in [MIN_SUBSTRING_BITS, 16, MAX_SUBSTRING_BITS, 63, 64, u32::MAX] {
            let offsets = table.offsets(width);
            if table.dense {
                // 2^width + 1, for widths past 63 no more than 2^63 + 1.
                assert_eq!(offsets, (1u64 << width.min(63)) + 1);
            } else {
                // One more than its keys: at most u64::MAX, which no file can hold.
                assert_eq!(offsets, table.keys.checked_add(1).unwrap_or(u64::MAX));
            }
            check_parts(offsets, 4);
        }
    }
}

/// The parts of an array of `elements` elements of `element_bytes` bytes: each holds
/// `part_elements` (filling an 8 MiB run, less 4 KiB), the last 1 to that many.
fn check_parts(elements: u64, element_bytes: usize) {
    let per = part_elements(element_bytes);
    assert!(per * element_bytes <= 8_384_512 && (per + 1) * element_bytes > 8_384_512);
    let parts = parts_of(elements, element_bytes);
    if elements == 0 {
        assert_eq!(parts, 0, "an empty array has no parts");
    } else {
        let per = per as u64;
        assert!(parts >= 1 && (parts - 1) * per < elements);
        assert!(parts.checked_mul(per).is_none_or(|full| full >= elements));
    }
}
