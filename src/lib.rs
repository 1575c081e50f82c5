//! milan: an embedded search engine for content-based image retrieval.
//!
//! Images become compact binary hash codes; similar images have codes a small Hamming distance
//! apart. milan stores the codes durably in an index directory (one redb file) and answers exact
//! Hamming radius and top-k queries from an in-memory multi-index-hashing snapshot built at open.
//!
//! ```
//! use milan::{Code, Index, Item};
//!
//! # fn main() -> milan::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("photos.milan");
//! let index = Index::builder(16).create(&dir)?;
//! let mut writer = index.writer()?;
//! for (hex, name) in [("00ff", "a.png"), ("00fe", "b.png"), ("ff00", "c.png")] {
//!     let item = Item { key: Some(name.into()), ..Item::default() };
//!     writer.add(&Code::from_hex(hex)?, item)?;
//! }
//! writer.commit()?;
//! drop(index);
//!
//! let index = Index::open_read_only(&dir)?;
//! let reader = index.reader()?;
//! let hits = reader.search(&Code::from_hex("00ff")?)?.top_k(2)?;
//! assert_eq!(hits.iter().map(|hit| (hit.id, hit.distance)).collect::<Vec<_>>(), [(0, 0), (1, 1)]);
//! assert_eq!(reader.item(1)?.unwrap().key.as_deref(), Some("b.png"));
//! assert_eq!(reader.search(&Code::from_hex("ff00")?)?.within(3)?.len(), 1);
//! # Ok(()) }
//! ```
//!
//! The README's example is a complete program and runs as a documentation test too. The on-disk
//! format is the `milan-index-format` crate, re-exported as [`format`](mod@format); the MiLaN method and the
//! evaluation protocol that training and evaluation implement are described in `docs/method.md`.
//!
//! # Where to start
//!
//! | job | start from | feature |
//! |---|---|---|
//! | store codes durably, search them (top-k, radius, all pairs) | [`Index`], with [`Writer`] and [`Reader`] | none |
//! | make and compare codes (hex, bytes, Hamming distance) | [`Code`] | none |
//! | read codes from a numpy `.npy` file | [`npy::CodesReader`] | none |
//! | know what went wrong | [`Error`] | none |
//! | turn images into feature vectors with an ONNX model | [`Extractor`] | `images` |
//! | turn feature vectors into codes | [`HashHead::codes`], [`HashHead::lsh`] | `images` |
//! | add a folder of images to an index, code a query image | [`add_images`], [`code_image`] | `images` |
//! | keep an index in step with its folders | [`SyncPlan`] | `images` |
//! | re-code an index with a new head | [`Index::rehash`] | `images` |
//! | train a hash head | [`Trainer`], [`TrainConfig`] | `train` |
//! | load features and labels to train on | [`Dataset`] | `train` |
//! | measure codes (mAP@k, precision-recall) | [`evaluate`] | `train` |
//!
//! # Features
//!
//! The default feature, `cli`, builds the `milan` command line, so that installing the crate
//! gives every subcommand. An application links only what it uses:
//!
//! ```toml
//! [dependencies]
//! milan = { version = "0.1", default-features = false }                       # the engine
//! milan = { version = "0.1", default-features = false, features = ["images"] } # or more
//! ```
//!
//! - none: the engine: [`Code`], [`Index`] and its writers, readers and searches, [`npy`],
//!   [`Error`]. It opens any index, image indexes included (their head and model record are
//!   data to it), and compiles redb, bitvec, rayon and thiserror besides the format crate.
//! - `serde`: `serde::Serialize` for [`Hit`], [`Pair`] and [`Info`].
//! - `images` (with `serde`): `extract`, `ingest`, `sync` and `report`; running a [`HashHead`]
//!   and drawing an LSH one; binding a new index to a model and a head
//!   (`IndexBuilder::images`), keeping features (`Writer::add_with_features`) and re-coding
//!   (`Index::rehash`). Compiles the ONNX Runtime bindings (the library itself is loaded at run
//!   time), the image decoders and ndarray.
//! - `train` (with `images`): `train`, `eval` and `dataset`.
//! - `cli` (with `train`, the default): the `milan` binary.
//!
//! Items that the benchmarks drive directly sit behind the hidden `bench-internals` feature;
//! they are no stable API.
//!

#![warn(missing_docs)]
// The table above links to the items of each feature where it is on, and to the list of
// features where it is off.
#![cfg_attr(
    feature = "images",
    doc = "[`Extractor`]: extract::Extractor\n[`add_images`]: ingest::add_images\n\
           [`code_image`]: ingest::code_image\n[`SyncPlan`]: sync::SyncPlan\n\
           [`HashHead::codes`]: HashHead::codes\n[`HashHead::lsh`]: HashHead::lsh\n\
           [`Index::rehash`]: Index::rehash"
)]
#![cfg_attr(
    not(feature = "images"),
    doc = "[`Extractor`]: #features\n[`add_images`]: #features\n[`code_image`]: #features\n\
           [`SyncPlan`]: #features\n[`HashHead::codes`]: #features\n\
           [`HashHead::lsh`]: #features\n[`Index::rehash`]: #features"
)]
#![cfg_attr(
    feature = "train",
    doc = "[`Trainer`]: train::Trainer\n[`TrainConfig`]: train::TrainConfig\n\
           [`Dataset`]: dataset::Dataset\n[`evaluate`]: eval::evaluate"
)]
#![cfg_attr(
    not(feature = "train"),
    doc = "[`Trainer`]: #features\n[`TrainConfig`]: #features\n[`Dataset`]: #features\n\
           [`evaluate`]: #features"
)]

// The engine: always compiled.
mod code;
mod contract;
mod error;
mod head;
mod index;
mod mih;
pub mod npy;
mod store;
pub mod text;

// `images`: extraction, ingest, sync, HTML pages.
#[cfg(feature = "images")]
pub mod extract;
#[cfg(feature = "images")]
pub mod ingest;
#[cfg(feature = "images")]
pub mod report;
#[cfg(feature = "images")]
pub mod sync;

// `train`: training, evaluation, data sets.
#[cfg(feature = "train")]
pub mod dataset;
#[cfg(feature = "train")]
pub mod eval;
#[cfg(feature = "train")]
pub mod train;

pub use code::Code;
pub use contract::{ExtractorContract, InputLayout, PixelRange, UnknownName};
#[cfg(feature = "train")]
pub use error::TrainError;
pub use error::{
    CodeError, Error, ExtractError, Mismatch, OpenError, Result, SearchError, WriteError,
};
pub use head::{ExtractorBinding, HashHead, HeadMismatch};
#[cfg(feature = "images")]
pub use index::RehashReport;
pub use index::{
    BatchSearch, Hit, ImportProgress, Index, IndexBuilder, Info, Item, OptimizeReport, Pair,
    PairBatches, Reader, Search, Upserted, Writer, DEFAULT_CACHE_BYTES, DEFAULT_EXPECTED_LEN,
    MAX_ITEM_BYTES,
};
pub use mih::search::Strategy;
pub use store::check::CheckReport;
pub use store::{LockWait, DEFAULT_LOCK_TIMEOUT};

/// The on-disk format crate, re-exported for tools that read index files directly.
pub use milan_index_format as format;

/// The README's Rust blocks, run as documentation tests so that its example keeps compiling and
/// running exactly as printed (its other blocks are `sh`, which rustdoc does not run).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
