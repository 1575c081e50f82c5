//! The milan on-disk index format: record types, their codecs and the version constants.
//!
//! An index is a directory holding one redb file, [`DATABASE_FILE`], with the tables named by the
//! `*_TABLE` constants. This crate owns every byte that goes into those tables; the storage engine
//! only moves the encoded bytes in and out of redb. The byte-level specification, and the version
//! log, are in this crate's README.md.
//!
//! Types:
//! - [`MetaRecord`]: the single meta record (magic, format version, code layout, counters).
//! - [`ItemRecord`]: what is known about one stored code (key, content hash, label, metadata).
//! - [`BucketKey`] and the bucket value codec ([`encode_bucket_ids`], [`decode_bucket_ids`]): one
//!   chunk of a multi-index-hashing bucket.
//! - [`CodeLayout`]: how a code of `bits` bits splits into `substrings` substrings.
//! - [`ModelRecord`]: the feature extractor an image index is bound to (its contract and
//!   fingerprint), under [`MODEL_KEY`].
//! - [`HeadFile`]: a hash head (weights, activation, the extractor it expects), as a standalone
//!   file and, embedded, under [`HEAD_KEY`].
//! - Feature vectors kept for re-coding ([`encode_features`], [`decode_features`]).
//! - [`ImportRecord`]: how far a bulk import of one source has committed, under the source's
//!   fingerprint in [`IMPORTS_TABLE`] (format version 2).
//!
//! Every decoder takes arbitrary bytes and returns a [`DecodeError`] rather than panicking; the
//! fuzz target `decode_records` holds them to that.

#![warn(missing_docs)]

use bincode::{Decode, Encode};

/// The file name of the redb database inside an index directory.
pub const DATABASE_FILE: &str = "milan.redb";
/// Table `&str -> &[u8]`: [`META_KEY`] maps to an encoded [`MetaRecord`].
pub const META_TABLE: &str = "meta";
/// The key of the meta record in [`META_TABLE`].
pub const META_KEY: &str = "index";
/// Table `u64 -> &[u8]`: id to an encoded [`ItemRecord`].
pub const ITEMS_TABLE: &str = "items";
/// Table `u64 -> &[u8]`: id to the packed code bytes (`bits / 8` bytes, most significant bit first).
pub const CODES_TABLE: &str = "codes";
/// Table `&[u8; 14] -> &[u8]`: an encoded [`BucketKey`] to a chunk of ids (see [`encode_bucket_ids`]).
pub const BUCKETS_TABLE: &str = "buckets";
/// Multimap table `&[u8; 32] -> u64`: content hash to the ids of the items that carry it.
pub const CONTENT_HASHES_TABLE: &str = "content_hashes";
/// Table `u64 -> &[u8]`: id to its feature vector (`f32` little-endian), for indexes that keep them.
pub const FEATURES_TABLE: &str = "features";
/// Table `&[u8; 32] -> &[u8]`: the fingerprint of an import source to an encoded
/// [`ImportRecord`] (format version 2; absent until the first import records its progress).
pub const IMPORTS_TABLE: &str = "imports";
/// Key in [`META_TABLE`] of the [`ModelRecord`] of an image index.
pub const MODEL_KEY: &str = "model";
/// Key in [`META_TABLE`] of the encoded [`HeadFile`] of an image index.
pub const HEAD_KEY: &str = "head";
/// The eight bytes every head file starts with.
pub const HEAD_MAGIC: [u8; 8] = *b"MILANHD\0";
/// The head file version this crate writes and reads.
pub const HEAD_VERSION: u32 = 1;
/// Upper bound on an encoded head file (a 2048-1024-512-1024 network is about 11 MiB).
pub const MAX_HEAD_BYTES: usize = 1 << 28;

/// The eight bytes every meta record starts with.
pub const MAGIC: [u8; 8] = *b"MILANIDX";
/// The format version this crate writes. Version 2 added [`IMPORTS_TABLE`].
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this crate can read (directly or through an upgrade step).
pub const OLDEST_SUPPORTED_VERSION: u32 = 1;

/// The smallest code length, in bits.
pub const MIN_BITS: u32 = 8;
/// The largest code length, in bits.
pub const MAX_BITS: u32 = 1024;
/// The widest substring, in bits: substring values are stored as `u32`.
pub const MAX_SUBSTRING_BITS: u32 = 32;
/// The narrowest substring, in bits.
pub const MIN_SUBSTRING_BITS: u32 = 4;
/// Upper bound on one encoded record, so that a damaged length prefix cannot ask for a huge allocation.
pub const MAX_RECORD_BYTES: usize = 1 << 24;

const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<MAX_RECORD_BYTES>,
> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<MAX_RECORD_BYTES>();

/// Why bytes read from an index could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The meta record does not start with [`MAGIC`]: the file is not a milan index.
    #[error("not a milan index: the meta record does not start with the magic bytes {MAGIC:?}")]
    BadMagic,
    /// The index was written by a newer milan.
    #[error("index format version {found} is newer than this milan supports ({supported}); upgrade milan")]
    TooNew {
        /// The version found in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The index format is older than anything this milan can read or upgrade.
    #[error("index format version {found} is older than the oldest this milan can upgrade ({oldest}); rebuild the index with `milan index export` from an older milan and `milan index import`")]
    UpgradeRequired {
        /// The version found in the file.
        found: u32,
        /// The oldest version this build reads.
        oldest: u32,
    },
    /// A record is malformed.
    #[error("malformed {record} record: {detail}")]
    Malformed {
        /// Which record type.
        record: &'static str,
        /// What is wrong.
        detail: String,
    },
}

fn malformed(record: &'static str, detail: impl Into<String>) -> DecodeError {
    DecodeError::Malformed {
        record,
        detail: detail.into(),
    }
}

const HEAD_CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<MAX_HEAD_BYTES>,
> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<MAX_HEAD_BYTES>();

/// Decodes a head with a limit just above the input's size: the limit bounds what a length
/// prefix may reserve before the bytes behind it are read, so a tiny damaged file cannot ask for
/// hundreds of megabytes.
fn decode_head_bytes(bytes: &[u8]) -> Result<HeadFile, DecodeError> {
    const MIB: usize = 1 << 20;
    let config = bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding();
    match bytes.len() {
        n if n <= MIB / 4 => decode_exact_with("head", bytes, config.with_limit::<MIB>()),
        n if n <= 4 * MIB => decode_exact_with("head", bytes, config.with_limit::<{ 16 * MIB }>()),
        _ => decode_exact_with("head", bytes, HEAD_CONFIG),
    }
}

fn decode_exact<T: Decode<()>>(record: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    decode_exact_with(record, bytes, CONFIG)
}

fn decode_exact_with<T: Decode<()>, C: bincode::config::Config>(
    record: &'static str,
    bytes: &[u8],
    config: C,
) -> Result<T, DecodeError> {
    let (value, read) = bincode::decode_from_slice::<T, _>(bytes, config)
        .map_err(|err| malformed(record, err.to_string()))?;
    if read != bytes.len() {
        return Err(malformed(
            record,
            format!("{} trailing bytes after the record", bytes.len() - read),
        ));
    }
    Ok(value)
}

fn encode<T: Encode>(value: &T) -> Vec<u8> {
    // Encoding into a Vec fails only past MAX_RECORD_BYTES; the engine validates sizes before
    // building records, so a failure here is a bug, not bad input.
    bincode::encode_to_vec(value, CONFIG).expect("record within MAX_RECORD_BYTES")
}

/// How codes of `bits` bits are split into `substrings` contiguous substrings for multi-index hashing.
///
/// With `bits = substrings * w + r`, the first `r` substrings are `w + 1` bits wide and the rest `w`
/// bits; substring `j` covers the bits from [`CodeLayout::substring_start`] on, most significant first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodeLayout {
    bits: u32,
    substrings: u32,
}

impl CodeLayout {
    /// Checks `bits` and `substrings` and returns the layout.
    pub fn new(bits: u32, substrings: u32) -> Result<CodeLayout, LayoutError> {
        if !(MIN_BITS..=MAX_BITS).contains(&bits) || bits % 8 != 0 {
            return Err(LayoutError::Bits { bits });
        }
        let (min, max) = Self::substring_range(bits);
        if !(min..=max).contains(&substrings) {
            return Err(LayoutError::Substrings {
                bits,
                substrings,
                min,
                max,
            });
        }
        Ok(CodeLayout { bits, substrings })
    }

    /// The allowed number of substrings for `bits`-bit codes: each substring between
    /// [`MIN_SUBSTRING_BITS`] and [`MAX_SUBSTRING_BITS`] bits wide.
    pub fn substring_range(bits: u32) -> (u32, u32) {
        (
            bits.div_ceil(MAX_SUBSTRING_BITS),
            (bits / MIN_SUBSTRING_BITS).max(1),
        )
    }

    /// Code length in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Code length in bytes.
    pub fn bytes(&self) -> usize {
        self.bits as usize / 8
    }

    /// Number of substrings (hash tables).
    pub fn substrings(&self) -> u32 {
        self.substrings
    }

    /// Width of substring `j`, in bits.
    pub fn substring_width(&self, j: u32) -> u32 {
        let base = self.bits / self.substrings;
        let wider = self.bits % self.substrings;
        base + u32::from(j < wider)
    }

    /// First bit of substring `j` (bit 0 is the most significant bit of byte 0).
    pub fn substring_start(&self, j: u32) -> u32 {
        let base = self.bits / self.substrings;
        let wider = self.bits % self.substrings;
        j * base + j.min(wider)
    }

    /// The value of substring `j` of `code` (packed bytes), its first bit the most significant.
    pub fn substring_value(&self, code: &[u8], j: u32) -> u32 {
        let start = self.substring_start(j) as usize;
        let width = self.substring_width(j) as usize;
        let mut value = 0u64;
        for bit in start..start + width {
            let byte = code[bit / 8];
            value = (value << 1) | u64::from((byte >> (7 - bit % 8)) & 1);
        }
        value as u32
    }
}

/// Why a code layout is not allowed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum LayoutError {
    /// Bits out of range or not a multiple of 8.
    #[error("code length {bits} bits is not supported: use a multiple of 8 from {MIN_BITS} to {MAX_BITS}")]
    Bits {
        /// The requested length.
        bits: u32,
    },
    /// Number of substrings out of range for the code length.
    #[error("{substrings} substrings do not fit {bits}-bit codes: use {min} to {max} (each substring {MIN_SUBSTRING_BITS} to {MAX_SUBSTRING_BITS} bits)")]
    Substrings {
        /// Code length.
        bits: u32,
        /// The requested number.
        substrings: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
}

/// The meta record: one per index, under [`META_KEY`] in [`META_TABLE`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MetaRecord {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The format version the index is written in.
    pub format_version: u32,
    /// Code length in bits.
    pub bits: u32,
    /// Number of multi-index-hashing substrings.
    pub substrings: u32,
    /// The id the next added code gets; ids are never reused.
    pub next_id: u64,
    /// Number of live (not deleted) codes.
    pub live_count: u64,
    /// The milan version that created the index.
    pub created_by: String,
    /// The milan version that last committed to it.
    pub written_by: String,
}

impl MetaRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a meta record, checking magic and version before anything else so that an index
    /// of another version is named as such, whatever the rest of its record looks like.
    pub fn decode(bytes: &[u8]) -> Result<MetaRecord, DecodeError> {
        if bytes.len() < 12 || bytes[..8] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version > FORMAT_VERSION {
            return Err(DecodeError::TooNew {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version < OLDEST_SUPPORTED_VERSION {
            return Err(DecodeError::UpgradeRequired {
                found: version,
                oldest: OLDEST_SUPPORTED_VERSION,
            });
        }
        let meta: MetaRecord = decode_exact("meta", bytes)?;
        CodeLayout::new(meta.bits, meta.substrings)
            .map_err(|err| malformed("meta", err.to_string()))?;
        if meta.live_count > meta.next_id {
            return Err(malformed(
                "meta",
                format!(
                    "live count {} exceeds the ids handed out ({})",
                    meta.live_count, meta.next_id
                ),
            ));
        }
        Ok(meta)
    }

    /// The code layout the record describes.
    pub fn layout(&self) -> CodeLayout {
        CodeLayout::new(self.bits, self.substrings).expect("validated at decode or construction")
    }
}

/// What is stored about one code, under its id in [`ITEMS_TABLE`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct ItemRecord {
    /// The external key, such as a file path.
    pub key: Option<String>,
    /// A hash of the content the code was made from (BLAKE3 for images).
    pub content_hash: Option<[u8; 32]>,
    /// A class label.
    pub label: Option<String>,
    /// Free-form application metadata.
    pub metadata: Option<Vec<u8>>,
}

impl ItemRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a record from arbitrary bytes.
    pub fn decode(bytes: &[u8]) -> Result<ItemRecord, DecodeError> {
        decode_exact("item", bytes)
    }
}

/// The key of one bucket chunk: substring number, substring value, and the chunk's lower id bound.
///
/// Encoded big-endian so that redb's byte order is numeric order: all chunks of one bucket are
/// adjacent and ordered by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketKey {
    /// Which substring (hash table), `0..substrings`.
    pub substring: u16,
    /// The substring's value.
    pub value: u32,
    /// No id in this chunk is smaller; every id is smaller than the next chunk's `first_id`.
    pub first_id: u64,
}

/// Encoded length of a [`BucketKey`].
pub const BUCKET_KEY_BYTES: usize = 14;

impl BucketKey {
    /// Encodes the key: `substring` u16 BE, `value` u32 BE, `first_id` u64 BE.
    pub fn encode(&self) -> [u8; BUCKET_KEY_BYTES] {
        let mut out = [0u8; BUCKET_KEY_BYTES];
        out[0..2].copy_from_slice(&self.substring.to_be_bytes());
        out[2..6].copy_from_slice(&self.value.to_be_bytes());
        out[6..14].copy_from_slice(&self.first_id.to_be_bytes());
        out
    }

    /// Decodes a key; every 14-byte string is a valid key.
    pub fn decode(bytes: &[u8; BUCKET_KEY_BYTES]) -> BucketKey {
        BucketKey {
            substring: u16::from_be_bytes([bytes[0], bytes[1]]),
            value: u32::from_be_bytes(bytes[2..6].try_into().expect("4 bytes")),
            first_id: u64::from_be_bytes(bytes[6..14].try_into().expect("8 bytes")),
        }
    }
}

/// Encodes a bucket chunk: the ids as consecutive u64 little-endian, strictly increasing.
pub fn encode_bucket_ids(ids: &[u64]) -> Vec<u8> {
    debug_assert!(ids.windows(2).all(|w| w[0] < w[1]));
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// Decodes a bucket chunk, checking that it is non-empty and strictly increasing.
pub fn decode_bucket_ids(bytes: &[u8]) -> Result<Vec<u64>, DecodeError> {
    if bytes.is_empty() || bytes.len() % 8 != 0 {
        return Err(malformed(
            "bucket",
            format!("{} bytes is not a non-empty multiple of 8", bytes.len()),
        ));
    }
    let ids: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|chunk| u64::from_le_bytes(chunk.try_into().expect("8 bytes")))
        .collect();
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(malformed("bucket", "ids are not strictly increasing"));
    }
    Ok(ids)
}

/// Checks that `bytes` is a code of the layout's length.
pub fn check_code_bytes(layout: &CodeLayout, bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() != layout.bytes() {
        return Err(malformed(
            "code",
            format!(
                "{} bytes where {}-bit codes take {}",
                bytes.len(),
                layout.bits(),
                layout.bytes()
            ),
        ));
    }
    Ok(())
}

/// How far the import of one source has come, under the source's fingerprint in
/// [`IMPORTS_TABLE`]. Written in the same transaction as the rows it counts, so that a re-run
/// after a failure resumes exactly after the last committed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct ImportRecord {
    /// Rows in the whole source.
    pub rows: u64,
    /// Rows committed so far (the first `committed` rows of the source); at most `rows`.
    pub committed: u64,
    /// The id the source's first row was given, once one is committed.
    pub first_id: Option<u64>,
}

/// Encoded length of an [`ImportRecord`] with `first_id`; without it, 8 bytes fewer.
pub const IMPORT_RECORD_BYTES: usize = 25;

impl ImportRecord {
    /// Encodes the record: `rows` u64 LE, `committed` u64 LE, `first_id` as an option of u64 LE.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a record from arbitrary bytes, checking that `committed <= rows`.
    pub fn decode(bytes: &[u8]) -> Result<ImportRecord, DecodeError> {
        let record: ImportRecord = decode_exact("import", bytes)?;
        if record.committed > record.rows {
            return Err(malformed(
                "import",
                format!(
                    "{} rows committed of a source of {} rows",
                    record.committed, record.rows
                ),
            ));
        }
        Ok(record)
    }
}

/// How pixels are scaled before they reach the extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum PixelRange {
    /// RGB divided by 255.
    ZeroOne,
    /// RGB scaled to -1..1.
    MinusOneOne,
    /// RGB divided by 255, then normalised with the ImageNet mean and standard deviation.
    ImageNet,
}

/// Where the channel axis of the extractor's input sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum TensorLayout {
    /// `[batch, channels, height, width]`.
    Nchw,
    /// `[batch, height, width, channels]`.
    Nhwc,
}

/// The feature extractor an image index is bound to, under [`MODEL_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ModelRecord {
    /// BLAKE3 of the ONNX model file's bytes.
    pub fingerprint: [u8; 32],
    /// The model file when the index was made (a hint for later runs; the fingerprint decides).
    pub path: String,
    /// Input tensor name.
    pub input: String,
    /// Input layout.
    pub layout: TensorLayout,
    /// Input height and width in pixels.
    pub size: u32,
    /// Pixel scaling.
    pub pixel_range: PixelRange,
    /// Output tensor name.
    pub output: String,
    /// Feature dimension (after global average pooling of a 4-D output).
    pub dim: u32,
}

impl ModelRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a record from arbitrary bytes.
    pub fn decode(bytes: &[u8]) -> Result<ModelRecord, DecodeError> {
        decode_exact("model", bytes)
    }
}

/// One dense layer of a hash head: `y = W x + b`, `W` row-major `[outputs, inputs]`.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct DenseLayer {
    /// Number of inputs.
    pub inputs: u32,
    /// Number of outputs.
    pub outputs: u32,
    /// `outputs * inputs` weights, row-major.
    pub weights: Vec<f32>,
    /// `outputs` biases.
    pub bias: Vec<f32>,
}

/// A hash head: dense layers with LeakyReLU between them; bit `i` of the code is set where output
/// `i` of the last layer is positive (the sigmoid above 0.5).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct HeadFile {
    /// Always [`HEAD_MAGIC`].
    pub magic: [u8; 8],
    /// Always [`HEAD_VERSION`].
    pub version: u32,
    /// Code length: outputs of the last layer.
    pub bits: u32,
    /// Feature dimension: inputs of the first layer.
    pub input_dim: u32,
    /// Negative slope of the LeakyReLU between layers.
    pub leaky_slope: f32,
    /// The layers, first to last.
    pub layers: Vec<DenseLayer>,
    /// The extractor it was made for (BLAKE3 of the model file), if bound to one.
    pub extractor_fingerprint: Option<[u8; 32]>,
    /// The extractor output it was made for.
    pub extractor_output: Option<String>,
    /// How it was made: `lsh`, or the training recipe.
    pub kind: String,
    /// Free-form description of the settings and data that made it (JSON).
    pub provenance: String,
}

impl HeadFile {
    /// Encodes the head.
    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, HEAD_CONFIG).expect("head within MAX_HEAD_BYTES")
    }

    /// Decodes and checks a head: magic, version, and layer shapes that chain from `input_dim`
    /// to `bits`.
    pub fn decode(bytes: &[u8]) -> Result<HeadFile, DecodeError> {
        if bytes.len() < 12 || bytes[..8] != HEAD_MAGIC {
            return Err(malformed("head", "not a milan head file (bad magic bytes)"));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != HEAD_VERSION {
            return Err(malformed(
                "head",
                format!("head file version {version}; this milan reads version {HEAD_VERSION}"),
            ));
        }
        let head = decode_head_bytes(bytes)?;
        head.check().map_err(|detail| malformed("head", detail))?;
        Ok(head)
    }

    fn check(&self) -> Result<(), String> {
        if self.layers.is_empty() {
            return Err("no layers".into());
        }
        if !(MIN_BITS..=MAX_BITS).contains(&self.bits) || self.bits % 8 != 0 {
            return Err(format!("{} bits is not a supported code length", self.bits));
        }
        let mut inputs = self.input_dim;
        for (i, layer) in self.layers.iter().enumerate() {
            let expected = u64::from(layer.inputs) * u64::from(layer.outputs);
            if layer.inputs != inputs
                || layer.weights.len() as u64 != expected
                || layer.bias.len() != layer.outputs as usize
            {
                return Err(format!("layer {i} has inconsistent shapes"));
            }
            if layer
                .weights
                .iter()
                .chain(&layer.bias)
                .any(|w| !w.is_finite())
            {
                return Err(format!("layer {i} holds a NaN or infinite weight"));
            }
            inputs = layer.outputs;
        }
        if inputs != self.bits {
            return Err(format!(
                "the last layer has {inputs} outputs for {}-bit codes",
                self.bits
            ));
        }
        Ok(())
    }
}

/// Encodes a feature vector as consecutive `f32` little-endian.
pub fn encode_features(features: &[f32]) -> Vec<u8> {
    features.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes a feature vector of `dim` values.
pub fn decode_features(bytes: &[u8], dim: u32) -> Result<Vec<f32>, DecodeError> {
    if bytes.len() != dim as usize * 4 {
        return Err(malformed(
            "features",
            format!("{} bytes for {dim} features", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes(chunk.try_into().expect("4 bytes")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> MetaRecord {
        MetaRecord {
            magic: MAGIC,
            format_version: FORMAT_VERSION,
            bits: 64,
            substrings: 4,
            next_id: 10,
            live_count: 9,
            created_by: "0.1.0".into(),
            written_by: "0.1.0".into(),
        }
    }

    #[test]
    fn meta_layout_is_the_documented_bytes() {
        let bytes = meta().encode();
        assert_eq!(&bytes[0..8], b"MILANIDX");
        assert_eq!(&bytes[8..12], &FORMAT_VERSION.to_le_bytes());
        assert_eq!(&bytes[12..16], &64u32.to_le_bytes());
        assert_eq!(&bytes[16..20], &4u32.to_le_bytes());
        assert_eq!(&bytes[20..28], &10u64.to_le_bytes());
        assert_eq!(&bytes[28..36], &9u64.to_le_bytes());
        assert_eq!(&bytes[36..44], &5u64.to_le_bytes());
        assert_eq!(&bytes[44..49], b"0.1.0");
        assert_eq!(MetaRecord::decode(&bytes).unwrap(), meta());
    }

    #[test]
    fn meta_of_other_versions_is_named() {
        let mut newer = meta();
        newer.format_version = FORMAT_VERSION + 1;
        assert_eq!(
            MetaRecord::decode(&newer.encode()),
            Err(DecodeError::TooNew {
                found: FORMAT_VERSION + 1,
                supported: FORMAT_VERSION
            })
        );
        // Version 1 (no imports table) is still read; opening it writable upgrades it.
        let mut v1 = meta();
        v1.format_version = 1;
        assert_eq!(MetaRecord::decode(&v1.encode()), Ok(v1));
        assert_eq!(OLDEST_SUPPORTED_VERSION, 1);
        let mut older = meta();
        older.format_version = 0;
        assert!(matches!(
            MetaRecord::decode(&older.encode()),
            Err(DecodeError::UpgradeRequired { found: 0, .. })
        ));
        assert_eq!(
            MetaRecord::decode(b"SQLite format 3"),
            Err(DecodeError::BadMagic)
        );
    }

    #[test]
    fn item_layout_is_the_documented_bytes() {
        let item = ItemRecord {
            key: Some("a.png".into()),
            content_hash: None,
            label: Some("x".into()),
            metadata: Some(vec![7]),
        };
        let bytes = item.encode();
        let mut expected = vec![1u8];
        expected.extend(5u64.to_le_bytes());
        expected.extend(b"a.png");
        expected.push(0);
        expected.push(1);
        expected.extend(1u64.to_le_bytes());
        expected.extend(b"x");
        expected.push(1);
        expected.extend(1u64.to_le_bytes());
        expected.push(7);
        assert_eq!(bytes, expected);
        assert_eq!(ItemRecord::decode(&bytes).unwrap(), item);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(ItemRecord::decode(&trailing).is_err());
    }

    #[test]
    fn import_layout_is_the_documented_bytes() {
        let record = ImportRecord {
            rows: 300,
            committed: 240,
            first_id: Some(7),
        };
        let bytes = record.encode();
        let mut expected = Vec::new();
        expected.extend(300u64.to_le_bytes());
        expected.extend(240u64.to_le_bytes());
        expected.push(1);
        expected.extend(7u64.to_le_bytes());
        assert_eq!(bytes, expected);
        assert_eq!(bytes.len(), IMPORT_RECORD_BYTES);
        assert_eq!(ImportRecord::decode(&bytes).unwrap(), record);
        let none = ImportRecord {
            first_id: None,
            ..record
        };
        assert_eq!(none.encode().len(), IMPORT_RECORD_BYTES - 8);
        assert_eq!(ImportRecord::decode(&none.encode()).unwrap(), none);
        let over = ImportRecord {
            committed: 301,
            ..record
        };
        assert!(matches!(
            ImportRecord::decode(&over.encode()),
            Err(DecodeError::Malformed {
                record: "import",
                ..
            })
        ));
        assert!(ImportRecord::decode(&bytes[..24]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(ImportRecord::decode(&trailing).is_err());
    }

    #[test]
    fn bucket_keys_sort_numerically() {
        let a = BucketKey {
            substring: 0,
            value: 255,
            first_id: 9,
        };
        let b = BucketKey {
            substring: 0,
            value: 256,
            first_id: 0,
        };
        let c = BucketKey {
            substring: 1,
            value: 0,
            first_id: 0,
        };
        assert!(a.encode() < b.encode() && b.encode() < c.encode());
        assert_eq!(BucketKey::decode(&a.encode()), a);
        assert_eq!(
            decode_bucket_ids(&encode_bucket_ids(&[1, 5, 9])).unwrap(),
            vec![1, 5, 9]
        );
        assert!(decode_bucket_ids(&encode_bucket_ids(&[5])[..7]).is_err());
        let mut unsorted = encode_bucket_ids(&[5]);
        unsorted.extend(encode_bucket_ids(&[5]));
        assert!(decode_bucket_ids(&unsorted).is_err());
    }

    fn head() -> HeadFile {
        HeadFile {
            magic: HEAD_MAGIC,
            version: HEAD_VERSION,
            bits: 8,
            input_dim: 3,
            leaky_slope: 0.2,
            layers: vec![DenseLayer {
                inputs: 3,
                outputs: 8,
                weights: (0..24).map(|i| i as f32).collect(),
                bias: vec![0.5; 8],
            }],
            extractor_fingerprint: Some([7; 32]),
            extractor_output: Some("pool".into()),
            kind: "lsh".into(),
            provenance: "{}".into(),
        }
    }

    #[test]
    fn heads_round_trip_and_bad_shapes_are_refused() {
        let bytes = head().encode();
        assert_eq!(&bytes[..8], b"MILANHD\0");
        assert_eq!(HeadFile::decode(&bytes).unwrap(), head());
        let mut short = head();
        short.layers[0].weights.pop();
        assert!(HeadFile::decode(&short.encode()).is_err());
        let mut wrong_bits = head();
        wrong_bits.bits = 16;
        assert!(HeadFile::decode(&wrong_bits.encode()).is_err());
        let mut nan = head();
        nan.layers[0].bias[0] = f32::NAN;
        assert!(HeadFile::decode(&nan.encode()).is_err());
        assert!(HeadFile::decode(b"MILANIDX").is_err());
        assert_eq!(
            decode_features(&encode_features(&[1.5, -2.0]), 2).unwrap(),
            vec![1.5, -2.0]
        );
        assert!(decode_features(&[0; 7], 2).is_err());
    }

    #[test]
    fn model_records_round_trip() {
        let model = ModelRecord {
            fingerprint: [1; 32],
            path: "m.onnx".into(),
            input: "input".into(),
            layout: TensorLayout::Nhwc,
            size: 299,
            pixel_range: PixelRange::ZeroOne,
            output: "pool".into(),
            dim: 2048,
        };
        assert_eq!(ModelRecord::decode(&model.encode()).unwrap(), model);
        assert!(ModelRecord::decode(&model.encode()[1..]).is_err());
    }

    #[test]
    fn layout_splits_and_extracts() {
        let layout = CodeLayout::new(64, 3).unwrap();
        let widths: Vec<u32> = (0..3).map(|j| layout.substring_width(j)).collect();
        assert_eq!(widths, vec![22, 21, 21]);
        assert_eq!(layout.substring_start(2), 43);
        let layout = CodeLayout::new(16, 2).unwrap();
        assert_eq!(layout.substring_value(&[0xAB, 0xCD], 0), 0xAB);
        assert_eq!(layout.substring_value(&[0xAB, 0xCD], 1), 0xCD);
        assert!(CodeLayout::new(12, 1).is_err());
        assert!(CodeLayout::new(64, 1).is_err());
        assert!(CodeLayout::new(64, 17).is_err());
        assert!(CodeLayout::new(1024, 32).is_ok());
    }
}
