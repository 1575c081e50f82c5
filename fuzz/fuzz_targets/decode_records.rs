//! `decode_records`: every decoder of `milan-index-format` on arbitrary bytes (meta, item, import
//! and model records, head files, bucket chunks and keys, feature vectors, code layouts).
//!
//! Asserts that no decoder panics (bad bytes give a `DecodeError`), that whatever decodes
//! re-encodes to exactly the bytes it came from (so a decoded record hides nothing and rewriting
//! it changes nothing), and that `CodeLayout::new` on arbitrary numbers either refuses them with the
//! matching `LayoutError` or returns substrings that tile the code exactly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use milan_index_format::{
    check_code_bytes, decode_bucket_ids, decode_features, encode_bucket_ids, encode_features,
    BucketKey, CodeLayout, DecodeError, HeadFile, ImportRecord, ItemRecord, LayoutError,
    MetaRecord, ModelRecord, BUCKET_KEY_BYTES, FORMAT_VERSION, HEAD_MAGIC, HEAD_VERSION, MAGIC,
    MAX_BITS, MAX_SUBSTRING_BITS, MIN_BITS, MIN_SUBSTRING_BITS, OLDEST_SUPPORTED_VERSION,
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
    let bits_ok = (MIN_BITS..=MAX_BITS).contains(&bits) && bits % 8 == 0;
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
}
