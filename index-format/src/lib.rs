//! The milan on-disk index format: record types, their codecs and the version constants.
//!
//! An index is a directory holding one redb file, [`DATABASE_FILE`], with the tables named by the
//! `*_TABLE` constants. This crate owns every byte that goes into those tables; the storage engine
//! only moves the encoded bytes in and out of redb. The byte-level specification, and the version
//! log, are in this crate's README.md.
//!
//! Types:
//! - [`MetaRecord`]: the single meta record (magic, format version, code layout, counters).
//! - [`ItemRecord`]: what is known about one stored code (key, content hash, label, metadata);
//!   from format version 3, stored only for items that are not empty.
//! - [`CodeLayout`]: how a code of `bits` bits splits into `substrings` substrings, and which
//!   code bits beside each substring make its filter ([`CodeLayout::filter_range`]).
//! - [`CodeBlock`] (decoded) and [`CodeBlockBuf`] (being written): the codes of
//!   [`block_ids`] consecutive ids (as many as fill a 64 KiB run of the storage engine's pages,
//!   by the code length) and which of them are stored, under the block number in
//!   [`CODE_BLOCKS_TABLE`] (format version 3).
//! - [`PartKey`] and [`PartKind`]: the key of one part of one hash table array (sparse keys,
//!   offsets or entries; [`part_elements`] elements each, as many as fill an 8 MiB run) in
//!   [`HASH_TABLES_TABLE`] (format version 3).
//! - [`TablesRecord`] and [`TableRecord`]: which ids the stored hash tables cover, each table's
//!   shape (dense or sparse, how many keys and entries) and the planner's neighbour sample,
//!   under [`TABLES_KEY`] (format version 3).
//! - [`ModelRecord`]: the feature extractor an image index is bound to (its contract and
//!   fingerprint), under [`MODEL_KEY`].
//! - [`HeadFile`]: a hash head (weights, activation, the extractor it expects), as a standalone
//!   file and, embedded, under [`HEAD_KEY`].
//! - Feature vectors kept for re-coding ([`encode_features`], [`decode_features`]).
//! - The key lookup: item keys to ids in [`KEYS_TABLE`] (format version 5), plain `&str` keys
//!   and `u64` values with no record of this crate's.
//! - [`ImportRecord`]: how far a bulk import of one source has committed, under the source's
//!   fingerprint in [`IMPORTS_TABLE`] (format version 2).
//! - Format versions 1 and 2 only, read to upgrade them: [`BucketKey`] and the bucket value
//!   codec ([`encode_bucket_ids`], [`decode_bucket_ids`]), one chunk of a multi-index-hashing
//!   bucket in [`BUCKETS_TABLE`], and [`check_code_bytes`] for the per-id codes of
//!   [`CODES_TABLE`].
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
/// Table `u64 -> &[u8]`: id to the packed code bytes (`bits / 8` bytes, most significant bit
/// first). Versions 1 and 2 only; version 3 keeps codes in [`CODE_BLOCKS_TABLE`].
pub const CODES_TABLE: &str = "codes";
/// Table `&[u8; 14] -> &[u8]`: an encoded [`BucketKey`] to a chunk of ids (see
/// [`encode_bucket_ids`]). Versions 1 and 2 only; version 3 keeps [`HASH_TABLES_TABLE`].
pub const BUCKETS_TABLE: &str = "buckets";
/// Table `u64 -> &[u8]` (format version 3): block number to a [`CodeBlock`], the codes of ids
/// `block * BLOCK_IDS ..` and which of them are stored.
pub const CODE_BLOCKS_TABLE: &str = "code_blocks";
/// Table `&[u8; 7] -> &[u8]` (format version 3): an encoded [`PartKey`] to one part of one hash
/// table's arrays, as described by the [`TablesRecord`].
pub const HASH_TABLES_TABLE: &str = "hash_tables";
/// Key in [`META_TABLE`] of the [`TablesRecord`] (format version 3; absent while no code is filed
/// in the hash tables).
pub const TABLES_KEY: &str = "tables";
/// Key in [`META_TABLE`] of the generation (format version 4): the number of commits since the
/// index was created or upgraded to version 4, `u64` LE (eight bytes).
pub const GENERATION_KEY: &str = "generation";
/// Table `u64 -> &[u8]` (format version 4): generation to the [`CommitRecord`] of the commit that
/// made it, for the last [`COMMIT_LOG_LEN`] commits, so that a handle open in another process
/// catches up by applying what changed instead of reading the whole index again.
pub const COMMITS_TABLE: &str = "commits";
/// Multimap table `&str -> u64` (format version 5): an item's key ([`ItemRecord::key`]) to the
/// ids of the live items stored under it, so that an application finds, replaces or deletes the
/// items of a key without keeping its own map. Keys need not be unique.
pub const KEYS_TABLE: &str = "keys";
/// The first format version with [`KEYS_TABLE`]; older files are read by a scan of the items.
pub const KEYS_VERSION: u32 = 5;
/// Commits kept in [`COMMITS_TABLE`]: each commit removes the record [`COMMIT_LOG_LEN`]
/// generations older than its own.
pub const COMMIT_LOG_LEN: u64 = 1024;
/// Most deleted ids a [`CommitRecord`] lists; a commit that deletes more is recorded with
/// `reload` set instead.
pub const MAX_LOGGED_DELETES: usize = 1 << 16;
/// The file beside [`DATABASE_FILE`] whose exclusive lock (`flock`) a process holds while it
/// writes (format version 4). Its content names the holder (process id and command line) for
/// the messages of processes waiting for it; the lock, not the content, is what counts.
pub const WRITER_LOCK_FILE: &str = "writer.lock";
/// The file beside [`DATABASE_FILE`] that processes waiting for [`WRITER_LOCK_FILE`] hold a
/// shared lock on, so that a writer about to begin again lets them go first.
pub const WRITER_QUEUE_FILE: &str = "writer.queue";
/// The storage engine stores a large value in a run of pages whose length is a power of two;
/// code blocks are sized to fill 64 KiB runs and hash table parts 8 MiB runs, each less room
/// for the engine's own headers, so that little of either run is left empty.
const BLOCK_RUN_BYTES: usize = 1 << 16;
const PART_RUN_BYTES: usize = 1 << 23;
/// Room left in a run for the storage engine's page header and key.
const BLOCK_SLACK_BYTES: usize = 1024;
const PART_SLACK_BYTES: usize = 4096;

/// Ids per code block for codes of `code_bytes` bytes (at least 1): the largest multiple of 8
/// whose bitmap and codes fit 64,512 bytes, `8 * floor(64512 / (8 * code_bytes + 1))` (7,936
/// for 64-bit codes, 496 for 1024-bit ones).
pub fn block_ids(code_bytes: usize) -> usize {
    8 * ((BLOCK_RUN_BYTES - BLOCK_SLACK_BYTES) / (8 * code_bytes.max(1) + 1))
}

/// Bytes of the live bitmap of a code block for codes of `code_bytes` bytes.
pub fn block_bitmap_bytes(code_bytes: usize) -> usize {
    block_ids(code_bytes) / 8
}

/// Elements per hash table part for elements of `element_bytes` bytes (at least 1):
/// `floor(8384512 / element_bytes)` (2,096,128 keys or offsets, 1,197,787 entries); the last
/// part of an array may hold fewer, and an empty array has no parts.
pub fn part_elements(element_bytes: usize) -> usize {
    (PART_RUN_BYTES - PART_SLACK_BYTES) / element_bytes.max(1)
}
/// Bytes of one hash table entry: the id (`u32` LE), then the low 24 bits of its filter (LE).
pub const ENTRY_BYTES: usize = 7;
/// Most sample rows in a [`TablesRecord`].
pub const MAX_SAMPLES: usize = 16;
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
/// The format version this crate writes. Version 2 added [`IMPORTS_TABLE`]; version 3 replaced
/// the per-id codes and the bucket chunks by code blocks and whole hash tables; version 4 added
/// the generation and the commit log ([`GENERATION_KEY`], [`COMMITS_TABLE`]), and the writer's
/// lock file, for processes that share an index; version 5 added the key lookup
/// ([`KEYS_TABLE`]).
pub const FORMAT_VERSION: u32 = 5;
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
/// Bits of a hash table entry's filter (see [`CodeLayout::filter_range`]).
pub const FILTER_BITS: u32 = 24;
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
        if !(MIN_BITS..=MAX_BITS).contains(&bits) || !bits.is_multiple_of(8) {
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

    /// The filter of substring `j`: first bit and width of up to [`FILTER_BITS`] code bits beside
    /// the substring, on whichever side has more room (after it when both have enough). Each
    /// hash table entry stores its code's filter value, so that most candidates are rejected
    /// without reading their code.
    pub fn filter_range(&self, j: u32) -> (u32, u32) {
        let (start, width) = (self.substring_start(j), self.substring_width(j));
        let (after, before) = (self.bits - start - width, start);
        if after >= before.min(FILTER_BITS) {
            (start + width, after.min(FILTER_BITS))
        } else {
            (start - before.min(FILTER_BITS), before.min(FILTER_BITS))
        }
    }

    /// The value of bits `start .. start + width` (at most 32) of `code`, the first the most
    /// significant.
    pub fn bits_value(code: &[u8], start: u32, width: u32) -> u32 {
        let mut value = 0u64;
        for bit in start as usize..(start + width) as usize {
            let byte = code[bit / 8];
            value = (value << 1) | u64::from((byte >> (7 - bit % 8)) & 1);
        }
        value as u32
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
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
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

/// What one commit changed (format version 4), under the generation it made in
/// [`COMMITS_TABLE`]: enough for a handle at the previous generation to catch up.
///
/// Codes the commit added are the stored ids from the previous record's `next_id` up to this
/// one's; deleted ids are listed. `reload` says that the change cannot be applied as adds and
/// deletes (hash tables rebuilt, codes re-coded, the layout or head changed, or more than
/// [`MAX_LOGGED_DELETES`] deletes): a handle reads the whole index again.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct CommitRecord {
    /// The meta record's `next_id` after the commit.
    pub next_id: u64,
    /// Whether a handle must read the whole index again instead of applying the change.
    pub reload: bool,
    /// The ids the commit deleted, increasing (empty when `reload`).
    pub deleted: Vec<u64>,
}

impl CommitRecord {
    /// Encodes the record: `next_id` u64 LE, `reload` one byte (0 or 1), then the deleted ids as
    /// a u64 LE count and that many u64 LE ids.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a record from arbitrary bytes, checking that the deleted ids increase, lie below
    /// `next_id`, and number at most [`MAX_LOGGED_DELETES`].
    pub fn decode(bytes: &[u8]) -> Result<CommitRecord, DecodeError> {
        let record: CommitRecord = decode_exact("commit", bytes)?;
        let bad = |detail: String| Err(malformed("commit", detail));
        if record.deleted.len() > MAX_LOGGED_DELETES {
            return bad(format!(
                "{} deleted ids listed, more than {MAX_LOGGED_DELETES}",
                record.deleted.len()
            ));
        }
        if record.deleted.windows(2).any(|pair| pair[0] >= pair[1]) {
            return bad("deleted ids are not increasing".into());
        }
        if let Some(&last) = record.deleted.last().filter(|&&id| id >= record.next_id) {
            return bad(format!(
                "deleted id {last} has not been handed out (next id {})",
                record.next_id
            ));
        }
        Ok(record)
    }
}

/// Decodes the generation stored under [`GENERATION_KEY`].
pub fn decode_generation(bytes: &[u8]) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| malformed("generation", format!("{} bytes instead of 8", bytes.len())))?;
    Ok(u64::from_le_bytes(bytes))
}

/// One code block (format version 3), under its block number `b` in [`CODE_BLOCKS_TABLE`]: with
/// `n = block_ids(bits / 8)` ids per block ([`block_ids`]), the ids `b * n .. b * n + slots`.
///
/// Encoded as the live bitmap (`n / 8` bytes, [`block_bitmap_bytes`]; bit `i` is bit `i % 8` of
/// byte `i / 8`, least significant first, set when id `b * n + i` is stored), then `slots` codes
/// of `bits / 8` bytes each in id order. The code of an id that is not stored is written as zero
/// bytes and ignored.
/// `slots` is 1 to `n`; bits at and past `slots` are clear.
#[derive(Debug, Clone, Copy)]
pub struct CodeBlock<'a> {
    live: &'a [u8],
    codes: &'a [u8],
    code_bytes: usize,
}

impl<'a> CodeBlock<'a> {
    /// Decodes a block of codes of `code_bytes` bytes from arbitrary bytes.
    pub fn decode(bytes: &'a [u8], code_bytes: usize) -> Result<CodeBlock<'a>, DecodeError> {
        let bad = |detail: String| malformed("code block", detail);
        if code_bytes == 0 || code_bytes > MAX_BITS as usize / 8 {
            return Err(bad(format!("codes of {code_bytes} bytes")));
        }
        let (capacity, bitmap) = (block_ids(code_bytes), block_bitmap_bytes(code_bytes));
        if bytes.len() < bitmap + code_bytes {
            return Err(bad(format!("{} bytes is too short", bytes.len())));
        }
        let (live, codes) = bytes.split_at(bitmap);
        if codes.len() % code_bytes != 0 || codes.len() / code_bytes > capacity {
            return Err(bad(format!(
                "{} bytes of codes is not 1 to {capacity} codes of {code_bytes} bytes",
                codes.len()
            )));
        }
        let block = CodeBlock {
            live,
            codes,
            code_bytes,
        };
        let slots = block.slots();
        // Bits at and past `slots`: the rest of the byte holding bit `slots`, then whole bytes.
        let partial = live.get(slots / 8).map_or(0, |&byte| byte >> (slots % 8));
        if partial != 0
            || live[(slots / 8 + 1).min(live.len())..]
                .iter()
                .any(|&b| b != 0)
        {
            return Err(bad(format!("ids past its {slots} slots are marked stored")));
        }
        Ok(block)
    }

    /// Number of id slots the block holds.
    pub fn slots(&self) -> usize {
        self.codes.len() / self.code_bytes
    }

    /// Whether slot `i` holds a stored code.
    pub fn is_live(&self, i: usize) -> bool {
        self.live[i / 8] >> (i % 8) & 1 == 1
    }

    /// The live bitmap, [`block_bitmap_bytes`] bytes.
    pub fn live_bitmap(&self) -> &'a [u8] {
        self.live
    }

    /// Number of stored codes.
    pub fn live_count(&self) -> usize {
        self.live
            .iter()
            .map(|byte| byte.count_ones() as usize)
            .sum()
    }

    /// The code bytes of slot `i` (zeros where nothing is stored).
    pub fn code(&self, i: usize) -> &'a [u8] {
        &self.codes[i * self.code_bytes..(i + 1) * self.code_bytes]
    }

    /// Every slot's code bytes, in id order.
    pub fn codes(&self) -> &'a [u8] {
        self.codes
    }
}

/// A [`CodeBlock`] being written.
#[derive(Debug, Clone)]
pub struct CodeBlockBuf {
    bytes: Vec<u8>,
    code_bytes: usize,
}

impl CodeBlockBuf {
    /// An empty block (no slots yet) for codes of `code_bytes` bytes.
    pub fn new(code_bytes: usize) -> CodeBlockBuf {
        CodeBlockBuf {
            bytes: vec![0; block_bitmap_bytes(code_bytes)],
            code_bytes,
        }
    }

    fn bitmap(&self) -> usize {
        block_bitmap_bytes(self.code_bytes)
    }

    /// A copy of a decoded block, to change.
    pub fn from_block(block: &CodeBlock<'_>) -> CodeBlockBuf {
        let mut bytes = Vec::with_capacity(block.live.len() + block.codes.len());
        bytes.extend_from_slice(block.live);
        bytes.extend_from_slice(block.codes);
        CodeBlockBuf {
            bytes,
            code_bytes: block.code_bytes,
        }
    }

    /// Stores `code` in slot `i` (below [`block_ids`]), adding zeroed slots up to it.
    pub fn set(&mut self, i: usize, code: &[u8]) {
        assert!(i < block_ids(self.code_bytes) && code.len() == self.code_bytes);
        let at = self.bitmap() + i * self.code_bytes;
        if self.bytes.len() < at + self.code_bytes {
            self.bytes.resize(at + self.code_bytes, 0);
        }
        self.bytes[at..at + self.code_bytes].copy_from_slice(code);
        self.bytes[i / 8] |= 1 << (i % 8);
    }

    /// Makes the block hold at least `slots` slots (at most [`block_ids`]), the new ones empty.
    pub fn pad_to(&mut self, slots: usize) {
        let len = self.bitmap() + slots.min(block_ids(self.code_bytes)) * self.code_bytes;
        if self.bytes.len() < len {
            self.bytes.resize(len, 0);
        }
    }

    /// Removes the code of slot `i`, zeroing its bytes; returns whether one was stored.
    pub fn clear(&mut self, i: usize) -> bool {
        if i >= block_ids(self.code_bytes) {
            return false;
        }
        let at = self.bitmap() + i * self.code_bytes;
        if self.bytes.len() < at + self.code_bytes || self.bytes[i / 8] >> (i % 8) & 1 == 0 {
            return false;
        }
        self.bytes[i / 8] &= !(1 << (i % 8));
        self.bytes[at..at + self.code_bytes].fill(0);
        true
    }

    /// Whether the block has no slots yet (and so must not be written).
    pub fn is_empty(&self) -> bool {
        self.bytes.len() == self.bitmap()
    }

    /// The encoded block.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Which array of a hash table a part belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PartKind {
    /// The occupied substring values of a sparse table, `u32` LE, strictly increasing.
    Keys = 1,
    /// Bucket boundaries, `u32` LE, non-decreasing, from 0 to the number of entries.
    Offsets = 2,
    /// The entries, [`ENTRY_BYTES`] each, bucket after bucket, ids increasing within a bucket.
    Entries = 3,
}

/// The key of one part of one hash table array in [`HASH_TABLES_TABLE`]: 7 bytes, big-endian,
/// so that redb's byte order keeps each array's parts together and in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartKey {
    /// Which substring (hash table), `0..substrings`.
    pub substring: u16,
    /// Which array.
    pub kind: PartKind,
    /// Part number: elements `part * part_elements(element bytes) ..`.
    pub part: u32,
}

/// Encoded length of a [`PartKey`].
pub const PART_KEY_BYTES: usize = 7;

impl PartKey {
    /// Encodes the key: `substring` u16 BE, `kind` u8, `part` u32 BE.
    pub fn encode(&self) -> [u8; PART_KEY_BYTES] {
        let mut out = [0u8; PART_KEY_BYTES];
        out[0..2].copy_from_slice(&self.substring.to_be_bytes());
        out[2] = self.kind as u8;
        out[3..7].copy_from_slice(&self.part.to_be_bytes());
        out
    }

    /// Decodes a key, refusing an unknown array kind.
    pub fn decode(bytes: &[u8; PART_KEY_BYTES]) -> Result<PartKey, DecodeError> {
        let kind = match bytes[2] {
            1 => PartKind::Keys,
            2 => PartKind::Offsets,
            3 => PartKind::Entries,
            other => return Err(malformed("hash table part key", format!("kind {other}"))),
        };
        Ok(PartKey {
            substring: u16::from_be_bytes([bytes[0], bytes[1]]),
            kind,
            part: u32::from_be_bytes(bytes[3..7].try_into().expect("4 bytes")),
        })
    }
}

/// One hash table's shape in the [`TablesRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct TableRecord {
    /// Directly addressed (offsets for every possible value) rather than sparse (offsets for
    /// the occupied values, listed in a keys array).
    pub dense: bool,
    /// Occupied values listed in the keys array: 0 when dense.
    pub keys: u64,
    /// Entries in the table.
    pub entries: u64,
}

impl TableRecord {
    /// Elements of the offsets array for a table of `width`-bit substrings.
    pub fn offsets(&self, width: u32) -> u64 {
        if self.dense {
            (1u64 << width.min(63)) + 1
        } else {
            self.keys.saturating_add(1)
        }
    }
}

/// Parts holding an array of `elements` elements.
pub fn parts_of(elements: u64, element_bytes: usize) -> u64 {
    elements.div_ceil(part_elements(element_bytes) as u64)
}

/// The hash tables' record (format version 3), under [`TABLES_KEY`] in [`META_TABLE`]: which ids
/// the tables cover, their shapes, and the neighbour sample the search planner was built with.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TablesRecord {
    /// The tables file ids below this; later ids are searched by a scan until the next build.
    pub slots: u64,
    /// Per substring, in order.
    pub tables: Vec<TableRecord>,
    /// Up to [`MAX_SAMPLES`] rows of `bits + 1` counts: for a sample stored code, how many other
    /// codes lay within each distance when the tables were built (cumulative). Only guides the
    /// choice between the tables and a scan.
    pub sample: Vec<Vec<u32>>,
}

impl TablesRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a record from arbitrary bytes, checking the sample's shape.
    pub fn decode(bytes: &[u8]) -> Result<TablesRecord, DecodeError> {
        let record: TablesRecord = decode_exact("tables", bytes)?;
        if record.sample.len() > MAX_SAMPLES {
            return Err(malformed(
                "tables",
                format!("{} sample rows", record.sample.len()),
            ));
        }
        if let Some(first) = record.sample.first() {
            if record.sample.iter().any(|row| row.len() != first.len()) {
                return Err(malformed("tables", "sample rows of different lengths"));
            }
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
        if !(MIN_BITS..=MAX_BITS).contains(&self.bits) || !self.bits.is_multiple_of(8) {
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

    #[test]
    fn code_blocks_fill_a_64_kib_run() {
        // (code bytes, ids per block, bitmap bytes, encoded bytes of a full block)
        for (code_bytes, ids, bitmap, full) in [
            (1, 57_344, 7_168, 64_512),
            (8, 7_936, 992, 64_480),
            (16, 4_000, 500, 64_500),
            (128, 496, 62, 63_550),
        ] {
            assert_eq!(block_ids(code_bytes), ids, "{code_bytes}-byte codes");
            assert_eq!(
                block_bitmap_bytes(code_bytes),
                bitmap,
                "{code_bytes}-byte codes"
            );
            assert_eq!(bitmap + ids * code_bytes, full, "{code_bytes}-byte codes");
        }
        for code_bytes in 1..=MAX_BITS as usize / 8 {
            let (ids, bitmap) = (block_ids(code_bytes), block_bitmap_bytes(code_bytes));
            // A whole number of bitmap bytes, one bit per id.
            assert!(ids > 0 && ids % 8 == 0, "{code_bytes}-byte codes");
            assert_eq!(bitmap * 8, ids, "{code_bytes}-byte codes");
            // A full block fits the run less the engine's room, and 8 more ids would not.
            assert!(
                bitmap + ids * code_bytes <= 64_512,
                "{code_bytes}-byte codes"
            );
            assert!(
                bitmap + 1 + (ids + 8) * code_bytes > 64_512,
                "{code_bytes}-byte codes"
            );
        }
    }

    #[test]
    fn code_blocks_refuse_bad_shapes() {
        let malformed = |result: Result<CodeBlock<'_>, DecodeError>| {
            matches!(
                result,
                Err(DecodeError::Malformed {
                    record: "code block",
                    ..
                })
            )
        };
        let (ids8, bitmap8) = (block_ids(8), block_bitmap_bytes(8));
        let (ids4, bitmap4) = (block_ids(4), block_bitmap_bytes(4));
        // Shorter than the bitmap and one code, or no slot at all.
        assert!(malformed(CodeBlock::decode(&[], 8)));
        assert!(malformed(CodeBlock::decode(&vec![0; bitmap8], 8)));
        assert!(malformed(CodeBlock::decode(&vec![0; bitmap8 + 7], 8)));
        // Codes of no bytes, or longer than the longest code (128 bytes), whatever the length.
        assert!(malformed(CodeBlock::decode(&vec![0; bitmap8 + 8], 0)));
        assert!(malformed(CodeBlock::decode(&[0; 64], 0)));
        let longest = MAX_BITS as usize / 8;
        assert_eq!(longest, 128);
        let one = |code_bytes: usize| vec![0; block_bitmap_bytes(code_bytes) + code_bytes];
        assert_eq!(
            CodeBlock::decode(&one(longest), longest).unwrap().slots(),
            1
        );
        assert!(malformed(CodeBlock::decode(&one(longest + 1), longest + 1)));
        assert!(malformed(CodeBlock::decode(&one(4096), 4096)));
        assert!(malformed(CodeBlock::decode(&[0; 64], usize::MAX)));
        // Codes that are not a whole number of codes, or more than a block holds.
        assert!(malformed(CodeBlock::decode(
            &vec![0; bitmap8 + 3 * 8 + 1],
            8
        )));
        assert!(malformed(CodeBlock::decode(&vec![0; bitmap8 + 3 * 4], 8)));
        let full = vec![0; bitmap4 + ids4 * 4];
        assert_eq!(CodeBlock::decode(&full, 4).unwrap().slots(), ids4);
        let over = vec![0; bitmap4 + (ids4 + 1) * 4];
        assert!(malformed(CodeBlock::decode(&over, 4)));
        // The bitmap is that of the code length: a full block of 8-byte codes read as 4-byte
        // codes has a bitmap of another size, and so other slots.
        let full8 = vec![0; bitmap8 + ids8 * 8];
        assert_eq!(CodeBlock::decode(&full8, 8).unwrap().slots(), ids8);
        assert!(malformed(CodeBlock::decode(&full8, 4)));
        for code_bytes in [1, 16, longest] {
            let (ids, bitmap) = (block_ids(code_bytes), block_bitmap_bytes(code_bytes));
            let full = vec![0; bitmap + ids * code_bytes];
            assert_eq!(CodeBlock::decode(&full, code_bytes).unwrap().slots(), ids);
            let over = vec![0; bitmap + (ids + 1) * code_bytes];
            assert!(malformed(CodeBlock::decode(&over, code_bytes)));
        }
        // A stored bit at or past the slots the block holds.
        let mut bytes = vec![0; bitmap8 + 3 * 8];
        bytes[0] = 0b0000_0111;
        assert_eq!(CodeBlock::decode(&bytes, 8).unwrap().live_count(), 3);
        bytes[0] = 0b0000_1000;
        assert!(malformed(CodeBlock::decode(&bytes, 8)));
        bytes[0] = 0;
        bytes[bitmap8 - 1] = 0x80;
        assert!(malformed(CodeBlock::decode(&bytes, 8)));
        // A full block may mark its last slot.
        let mut full = full;
        full[bitmap4 - 1] = 0x80;
        let block = CodeBlock::decode(&full, 4).unwrap();
        assert!(block.is_live(ids4 - 1) && block.live_count() == 1);
    }

    #[test]
    fn code_blocks_round_trip_through_the_buffer() {
        let code = |n: u8| [n, n ^ 0xff, 0x5a];
        let (ids, bitmap) = (block_ids(3), block_bitmap_bytes(3));
        assert_eq!((ids, bitmap), (20_640, 2_580));
        let mut buf = CodeBlockBuf::new(3);
        assert!(buf.is_empty());
        assert_eq!(buf.as_bytes(), &vec![0; bitmap][..]);
        buf.set(0, &code(1));
        buf.set(9, &code(2));
        buf.set(5, &code(3));
        assert!(!buf.is_empty());
        let bytes = buf.as_bytes().to_vec();
        // The bitmap, least significant bit first, then ten codes with zeros where none is stored.
        assert_eq!(bytes.len(), bitmap + 10 * 3);
        assert_eq!(&bytes[..2], &[0b0010_0001, 0b0000_0010]);
        assert!(bytes[2..bitmap].iter().all(|&b| b == 0));
        assert_eq!(&bytes[bitmap..bitmap + 3], &code(1));
        assert_eq!(&bytes[bitmap + 27..], &code(2));
        let block = CodeBlock::decode(&bytes, 3).unwrap();
        assert_eq!((block.slots(), block.live_count()), (10, 3));
        let live: Vec<usize> = (0..10).filter(|&i| block.is_live(i)).collect();
        assert_eq!(live, vec![0, 5, 9]);
        assert_eq!(block.code(5), &code(3));
        assert_eq!(block.code(4), &[0, 0, 0]);
        assert_eq!(block.codes(), &bytes[bitmap..]);
        assert_eq!(block.live_bitmap(), &bytes[..bitmap]);
        // A copy changes without touching the original, and encodes to the same bytes.
        let mut copy = CodeBlockBuf::from_block(&block);
        assert_eq!(copy.as_bytes(), &bytes[..]);
        assert!(copy.clear(5));
        assert!(!copy.clear(5), "cleared twice");
        assert!(!copy.clear(4), "never stored");
        assert!(!copy.clear(10), "past the slots");
        assert!(!copy.clear(ids), "past the block");
        assert!(!copy.clear(ids * 8 + 1), "past the bitmap");
        assert!(!copy.clear(usize::MAX / 3 + 1), "offset overflows");
        assert!(!copy.clear(usize::MAX), "offset overflows");
        let cleared = CodeBlock::decode(copy.as_bytes(), 3).unwrap();
        assert_eq!((cleared.slots(), cleared.live_count()), (10, 2));
        assert!(!cleared.is_live(5));
        assert_eq!(cleared.code(5), &[0, 0, 0]);
        assert_eq!(block.code(5), &code(3));
        // Clearing every code keeps the slots: a block is never shortened.
        assert!(copy.clear(0) && copy.clear(9));
        let empty = CodeBlock::decode(copy.as_bytes(), 3).unwrap();
        assert_eq!((empty.slots(), empty.live_count()), (10, 0));
        assert!(empty.codes().iter().all(|&b| b == 0));
        // Padding adds empty slots, never more than a block holds, and never shortens.
        copy.pad_to(4);
        assert_eq!(copy.as_bytes().len(), bitmap + 10 * 3);
        copy.pad_to(ids + 100);
        assert_eq!(copy.as_bytes().len(), bitmap + ids * 3);
        copy.pad_to(usize::MAX);
        assert_eq!(copy.as_bytes().len(), bitmap + ids * 3);
        copy.set(ids - 1, &code(4));
        let padded = CodeBlock::decode(copy.as_bytes(), 3).unwrap();
        assert_eq!((padded.slots(), padded.live_count()), (ids, 1));
        assert_eq!(padded.code(ids - 1), &code(4));
        assert_eq!(copy.as_bytes()[bitmap - 1], 0x80);
        assert!(copy.clear(ids - 1) && !copy.clear(ids));
        // Setting a slot past the end grows the block to it.
        let mut grown = CodeBlockBuf::new(3);
        grown.pad_to(2);
        assert_eq!(
            CodeBlock::decode(grown.as_bytes(), 3).unwrap().live_count(),
            0
        );
        grown.set(6, &code(5));
        let grown = CodeBlock::decode(grown.as_bytes(), 3).unwrap();
        assert_eq!((grown.slots(), grown.live_count()), (7, 1));
        // Every code length: a block filled to its last slot through the buffer decodes to the
        // codes it was given, and fits the run.
        for code_bytes in [1, 8, 16, 128] {
            let ids = block_ids(code_bytes);
            let mut buf = CodeBlockBuf::new(code_bytes);
            for i in [0, ids / 2, ids - 1] {
                buf.set(i, &vec![(i % 251) as u8 + 1; code_bytes]);
            }
            assert!(!buf.clear(ids) && !buf.clear(usize::MAX));
            assert!(buf.as_bytes().len() <= 64_512);
            let block = CodeBlock::decode(buf.as_bytes(), code_bytes).unwrap();
            assert_eq!((block.slots(), block.live_count()), (ids, 3));
            for i in [0, ids / 2, ids - 1] {
                assert!(block.is_live(i));
                assert_eq!(block.code(i), &vec![(i % 251) as u8 + 1; code_bytes][..]);
            }
            assert_eq!(CodeBlockBuf::from_block(&block).as_bytes(), buf.as_bytes());
        }
    }

    #[test]
    #[should_panic]
    fn code_block_buffers_refuse_a_slot_past_the_block() {
        CodeBlockBuf::new(8).set(block_ids(8), &[0; 8]);
    }

    #[test]
    fn part_keys_round_trip_in_numeric_order() {
        let key = PartKey {
            substring: 0x0102,
            kind: PartKind::Entries,
            part: 0x0304_0506,
        };
        assert_eq!(key.encode(), [0x01, 0x02, 3, 0x03, 0x04, 0x05, 0x06]);
        assert_eq!(PartKey::decode(&key.encode()), Ok(key));
        let mut keys = Vec::new();
        for substring in [0, 1, 300] {
            for kind in [PartKind::Keys, PartKind::Offsets, PartKind::Entries] {
                for part in [0, 1, 256, u32::MAX] {
                    keys.push(PartKey {
                        substring,
                        kind,
                        part,
                    });
                }
            }
        }
        for key in &keys {
            assert_eq!(PartKey::decode(&key.encode()), Ok(*key));
        }
        // Generated in order: the encoded bytes sort the same way.
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(keys.windows(2).all(|w| w[0].encode() < w[1].encode()));
        assert_eq!(
            [PartKind::Keys, PartKind::Offsets, PartKind::Entries].map(|kind| kind as u8),
            [1, 2, 3]
        );
        for kind in [0u8, 4, 0xff] {
            assert!(matches!(
                PartKey::decode(&[0, 0, kind, 0, 0, 0, 0]),
                Err(DecodeError::Malformed {
                    record: "hash table part key",
                    ..
                })
            ));
        }
    }

    #[test]
    fn tables_record_layout_is_the_documented_bytes() {
        let record = TablesRecord {
            slots: 5000,
            tables: vec![
                TableRecord {
                    dense: true,
                    keys: 0,
                    entries: 4990,
                },
                TableRecord {
                    dense: false,
                    keys: 1234,
                    entries: 4990,
                },
            ],
            sample: vec![vec![0, 1, 3], vec![2, 2, 9]],
        };
        let bytes = record.encode();
        let mut expected = Vec::new();
        expected.extend(5000u64.to_le_bytes());
        expected.extend(2u64.to_le_bytes());
        expected.push(1);
        expected.extend(0u64.to_le_bytes());
        expected.extend(4990u64.to_le_bytes());
        expected.push(0);
        expected.extend(1234u64.to_le_bytes());
        expected.extend(4990u64.to_le_bytes());
        expected.extend(2u64.to_le_bytes());
        for row in [[0u32, 1, 3], [2, 2, 9]] {
            expected.extend(3u64.to_le_bytes());
            for count in row {
                expected.extend(count.to_le_bytes());
            }
        }
        assert_eq!(bytes, expected);
        assert_eq!(TablesRecord::decode(&bytes), Ok(record.clone()));
        // No tables and no sample (an index of no codes) is a record too.
        let empty = TablesRecord {
            slots: 0,
            tables: Vec::new(),
            sample: Vec::new(),
        };
        assert_eq!(empty.encode(), [0u8; 24]);
        assert_eq!(TablesRecord::decode(&empty.encode()), Ok(empty));
        // Trailing or missing bytes, and a `dense` byte other than 0 or 1.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(TablesRecord::decode(&trailing).is_err());
        assert!(TablesRecord::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad_bool = bytes.clone();
        bad_bool[16] = 2;
        assert!(TablesRecord::decode(&bad_bool).is_err());
        // At most MAX_SAMPLES rows, all of one length.
        let rows = |n: usize| TablesRecord {
            sample: vec![vec![1; 3]; n],
            ..record.clone()
        };
        assert!(TablesRecord::decode(&rows(MAX_SAMPLES).encode()).is_ok());
        let refused = |record: &TablesRecord| {
            matches!(
                TablesRecord::decode(&record.encode()),
                Err(DecodeError::Malformed {
                    record: "tables",
                    ..
                })
            )
        };
        assert!(refused(&rows(MAX_SAMPLES + 1)));
        let mut ragged = record.clone();
        ragged.sample[1].push(10);
        assert!(refused(&ragged));
        let mut ragged = record;
        ragged.sample[0].clear();
        assert!(refused(&ragged));
    }

    #[test]
    fn table_shapes_count_their_elements_and_parts() {
        let dense = TableRecord {
            dense: true,
            keys: 0,
            entries: 10,
        };
        let sparse = TableRecord {
            dense: false,
            keys: 7,
            entries: 10,
        };
        assert_eq!(dense.offsets(16), 65537);
        assert_eq!(sparse.offsets(32), 8);
        // Counts past what any file holds saturate instead of overflowing.
        assert_eq!(dense.offsets(63), (1 << 63) + 1);
        assert_eq!(dense.offsets(64), (1 << 63) + 1);
        assert_eq!(dense.offsets(u32::MAX), (1 << 63) + 1);
        let huge = TableRecord {
            keys: u64::MAX,
            ..sparse
        };
        assert_eq!(huge.offsets(32), u64::MAX);
        assert_eq!(
            TableRecord {
                keys: u64::MAX - 1,
                ..sparse
            }
            .offsets(32),
            u64::MAX
        );
    }

    #[test]
    fn hash_table_parts_fill_an_8_mib_run() {
        // Keys and offsets (u32), and entries (ENTRY_BYTES).
        assert_eq!(part_elements(4), 2_096_128);
        assert_eq!(part_elements(ENTRY_BYTES), 1_197_787);
        assert_eq!(ENTRY_BYTES, 7);
        for element_bytes in [1, 2, 3, 4, ENTRY_BYTES, 8, 16, 1000] {
            let elements = part_elements(element_bytes);
            // A full part fits the run less the engine's room, and one more element would not.
            assert!(elements * element_bytes <= 8_384_512, "{element_bytes}");
            assert!(
                (elements + 1) * element_bytes > 8_384_512,
                "{element_bytes}"
            );
        }
        assert_eq!(4 * part_elements(4), 8_384_512);
        assert_eq!(7 * part_elements(7), 8_384_509);
    }

    #[test]
    fn arrays_take_the_parts_their_elements_need() {
        for element_bytes in [4, ENTRY_BYTES] {
            let per = part_elements(element_bytes) as u64;
            assert_eq!(parts_of(0, element_bytes), 0, "an empty array has no parts");
            assert_eq!(parts_of(1, element_bytes), 1);
            assert_eq!(parts_of(per - 1, element_bytes), 1);
            assert_eq!(parts_of(per, element_bytes), 1);
            assert_eq!(parts_of(per + 1, element_bytes), 2);
            assert_eq!(parts_of(2 * per, element_bytes), 2);
            assert_eq!(parts_of(2 * per + 1, element_bytes), 3);
            assert_eq!(
                parts_of(u64::MAX, element_bytes),
                u64::MAX.div_ceil(per),
                "no overflow"
            );
        }
        // The same count of keys and of entries takes parts of different lengths.
        assert_eq!(parts_of(1_197_788, ENTRY_BYTES), 2);
        assert_eq!(parts_of(1_197_788, 4), 1);
        assert_eq!(parts_of(2_096_129, 4), 2);
        // Dense offsets: 2^20 + 1 fit one part, 2^21 + 1 need two, 2^32 + 1 need 2,050.
        let dense = TableRecord {
            dense: true,
            keys: 0,
            entries: 10,
        };
        assert_eq!(parts_of(dense.offsets(20), 4), 1);
        assert_eq!(parts_of(dense.offsets(21), 4), 2);
        assert_eq!(parts_of(dense.offsets(32), 4), 2050);
        assert_eq!(
            parts_of(dense.offsets(64), 4),
            ((1u64 << 63) + 1).div_ceil(2_096_128)
        );
    }

    #[test]
    fn filters_sit_beside_their_substring() {
        // 64 bits in four substrings of 16: the first two take the 24 bits after them, the last
        // two (with fewer than 24 after) the 24 before.
        let layout = CodeLayout::new(64, 4).unwrap();
        let ranges: Vec<(u32, u32)> = (0..4).map(|j| layout.filter_range(j)).collect();
        assert_eq!(ranges, vec![(16, 24), (32, 24), (8, 24), (24, 24)]);
        // 64 bits in 22 + 21 + 21: the middle substring has 22 bits before it and 21 after.
        let layout = CodeLayout::new(64, 3).unwrap();
        let ranges: Vec<(u32, u32)> = (0..3).map(|j| layout.filter_range(j)).collect();
        assert_eq!(ranges, vec![(22, 24), (0, 22), (19, 24)]);
        // 16 bits in two bytes: each filter is the other byte.
        let layout = CodeLayout::new(16, 2).unwrap();
        assert_eq!(layout.filter_range(0), (8, 8));
        assert_eq!(layout.filter_range(1), (0, 8));
        let (start, width) = layout.filter_range(0);
        assert_eq!(CodeLayout::bits_value(&[0xAB, 0xCD], start, width), 0xCD);
        // Equal room on both sides: after.
        let layout = CodeLayout::new(24, 3).unwrap();
        assert_eq!(layout.filter_range(1), (16, 8));
        // A single substring leaves no bits: an empty filter, value 0.
        let layout = CodeLayout::new(32, 1).unwrap();
        assert_eq!(layout.filter_range(0), (32, 0));
        assert_eq!(CodeLayout::bits_value(&[0xff; 4], 32, 0), 0);
        // Values are read most significant bit first, across bytes.
        assert_eq!(CodeLayout::bits_value(&[0xAB, 0xCD], 4, 8), 0xBC);
        assert_eq!(CodeLayout::bits_value(&[0x80, 0, 0, 1], 0, 32), 0x8000_0001);
        // Everywhere: inside the code, beside the substring, as wide as the wider side allows.
        for bits in (MIN_BITS..=MAX_BITS).step_by(8) {
            let (min, max) = CodeLayout::substring_range(bits);
            for substrings in [min, (min + max) / 2, max] {
                let layout = CodeLayout::new(bits, substrings).unwrap();
                for j in 0..substrings {
                    let (start, width) = layout.filter_range(j);
                    let (s, w) = (layout.substring_start(j), layout.substring_width(j));
                    let (before, after) = (s, bits - s - w);
                    assert!(start + width <= bits);
                    assert!(
                        start + width == s || start == s + w,
                        "{bits}/{substrings}/{j}"
                    );
                    assert_eq!(
                        width,
                        before.max(after).min(FILTER_BITS),
                        "{bits}/{substrings}/{j}"
                    );
                }
            }
        }
    }
}
