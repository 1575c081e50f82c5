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
//! Modules map to concerns: [`Code`] (the code type), [`Index`] with [`Writer`] and [`Reader`]
//! (the embedded store), [`Error`]. The on-disk format is the `milan-index-format` crate.
//! The README's example is a complete program and runs as a documentation test too; the MiLaN
//! method and evaluation protocol that [`train`] and [`eval`] implement are described in
//! `docs/method.md`.

#![warn(missing_docs)]

mod code;
mod contract;
pub mod dataset;
mod error;
pub mod eval;
pub mod extract;
mod head;
mod index;
pub mod ingest;
mod mih;
pub mod npy;
pub mod report;
mod store;
pub mod sync;
pub mod text;
pub mod train;

pub use code::Code;
pub use contract::{ExtractorContract, InputLayout, PixelRange, UnknownName};
pub use error::{
    CodeError, Error, ExtractError, Mismatch, OpenError, Result, SearchError, TrainError,
    WriteError,
};
pub use head::{ExtractorBinding, HashHead, HeadMismatch};
pub use index::{
    BatchSearch, Hit, ImportProgress, Index, IndexBuilder, Info, Item, OptimizeReport, Pair,
    PairBatches, Reader, RehashReport, Search, Writer, DEFAULT_CACHE_BYTES, DEFAULT_EXPECTED_LEN,
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
