//! [`Error`], the one error type of the library, and the [`Result`] alias.
//!
//! Every variant carries what the user needs to fix the problem: the path involved, the expected and
//! found values. Nothing in the library panics on user input; damaged files come back as
//! [`Error::Corrupted`].

use std::path::PathBuf;

use milan_index_format::{DecodeError, LayoutError, DATABASE_FILE};

/// `Result` with milan's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in milan: an error of one operation ([`OpenError`],
/// [`WriteError`], [`CodeError`], [`SearchError`], [`ExtractError`], `TrainError` with the
/// `train` feature), or one that any of them can meet (a damaged index, an unknown id, a bad argument, I/O).
///
/// Match on the operation, then on its error:
///
/// ```
/// use milan::{Code, Error, Index, SearchError};
/// # let tmp = tempfile::tempdir().unwrap();
/// let index = Index::builder(16).create(tmp.path().join("idx")).unwrap();
/// let err = index.reader().unwrap().search(&Code::from([0u8, 0])).unwrap().top_k(0).unwrap_err();
/// assert!(matches!(err, Error::Search(SearchError::ZeroK)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of opening or creating an index.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// An error of changing an index: taking the writer's turn, adding, compacting.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// An error of making, parsing or comparing codes.
    #[error(transparent)]
    Code(#[from] CodeError),
    /// An error of searching.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// An error of turning images into features and codes.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// An error of training and evaluating hash heads.
    #[cfg(feature = "train")]
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Stored data violates the format.
    #[error("{}: the index is damaged: {detail}; Index::verify_dir lists every problem", path.display())]
    Corrupted {
        /// The index directory or file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// No live item has this id.
    #[error("no item with id {id} in the index")]
    UnknownId {
        /// The id asked for.
        id: u64,
    },
    /// An argument out of range.
    #[error("{detail}")]
    InvalidArgument {
        /// What is wrong.
        detail: String,
    },
    /// A long operation was cancelled through its callback.
    #[cfg(feature = "train")]
    #[error("cancelled")]
    Cancelled,
    /// An I/O error on a named file.
    ///
    /// Its message names the file; the cause is its [`source`](std::error::Error::source) (print
    /// the chain, as `anyhow`'s `{:#}` does, to see both), not repeated in the message.
    #[error("{}: I/O error", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An error from the storage engine.
    ///
    /// Like [`Error::Io`], the message names the file and the cause is the error's source.
    #[error("{}: storage error", path.display())]
    Storage {
        /// The database file.
        path: PathBuf,
        /// The cause, the storage engine's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What can go wrong when opening or creating an index; converts into [`Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The index directory does not exist.
    #[error("{}: no such directory", path.display())]
    MissingDirectory {
        /// The directory asked for.
        path: PathBuf,
    },
    /// The path given as the index directory is something else, such as a plain file.
    #[error("{}: not a directory (an index is a directory holding {DATABASE_FILE})", path.display())]
    NotADirectory {
        /// The path asked for.
        path: PathBuf,
    },
    /// The directory exists but holds no milan index.
    #[error("{}: not a milan index (no {DATABASE_FILE} inside); create one with Index::builder(bits).create", path.display())]
    NotAnIndex {
        /// The directory asked for.
        path: PathBuf,
    },
    /// `create` found an index already there.
    #[error("{}: an index already exists here; open it instead, or choose another directory", path.display())]
    AlreadyExists {
        /// The directory asked for.
        path: PathBuf,
    },
    /// The database file is locked whole by a program that does not share it: a milan older than
    /// format version 4 (which locked the file for as long as it had it open), or another program
    /// using the file. milan processes of this version share an index: readers never wait, and
    /// writers take turns ([`WriteError::LockTimeout`]).
    #[error("{}: locked whole by another program (a milan older than index format 4, or another user of the file); wait for it to finish", path.display())]
    Locked {
        /// The locked file.
        path: PathBuf,
    },
    /// The index was written by a newer milan.
    #[error("{}: index format version {found} is newer than this milan supports ({supported}); upgrade milan", path.display())]
    TooNew {
        /// The index directory.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Newest version supported.
        supported: u32,
    },
    /// The index format is too old to read.
    #[error("{}: index format version {found} is older than this milan can read (oldest {oldest}); export it with the milan that wrote it and import it again", path.display())]
    UpgradeRequired {
        /// The index directory.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Oldest version supported.
        oldest: u32,
    },
    /// A writer was killed while the index was open; a read-only open cannot recover it.
    #[error("{}: the index was not closed cleanly (a writer stopped mid-way) and must be recovered by opening it for writing once (Index::open)", path.display())]
    NeedsRecovery {
        /// The database file.
        path: PathBuf,
    },
    /// [`IndexBuilder::open`](crate::IndexBuilder::open) of an index that stores codes of
    /// another length than the builder's.
    #[error("{}: the index stores {stored}-bit codes, not the {requested} bits asked for (Index::open takes the stored length)", path.display())]
    BitsMismatch {
        /// The index directory.
        path: PathBuf,
        /// The stored index's code length.
        stored: u32,
        /// The length the builder was made with.
        requested: u32,
    },
    /// [`IndexBuilder::open`](crate::IndexBuilder::open) with
    /// [`substrings`](crate::IndexBuilder::substrings) set to another number than the stored
    /// index has.
    #[error("{}: the index has {stored} substrings, not the {requested} asked for; an open does not change them, Index::optimize does", path.display())]
    SubstringsMismatch {
        /// The index directory.
        path: PathBuf,
        /// The stored index's number of substrings.
        stored: u32,
        /// The number the builder was given.
        requested: u32,
    },
}

/// What can go wrong when changing an index: taking the writer's turn, adding, compacting; converts into [`Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A write on an index opened read-only.
    #[error("{}: opened read-only; open it for writing to change it", path.display())]
    ReadOnly {
        /// The index directory.
        path: PathBuf,
    },
    /// A second writer (or [`Index::optimize`](crate::Index::optimize)) started on a thread that
    /// already holds this index's [`Writer`](crate::Writer): waiting for it would wait forever.
    /// Writers on other threads wait for each other instead.
    #[error("{}: this thread already holds the index's writer; commit or drop that Writer before starting another write or an optimize", path.display())]
    WriterBusy {
        /// The index directory.
        path: PathBuf,
    },
    /// A write waited longer than the lock timeout for another process (or another handle of
    /// this process) to end its own write.
    #[error("{}: waited {} for another writer{} to finish; try again later, or wait longer (IndexBuilder::lock_timeout)", path.display(), seconds(*waited), holder.as_deref().map(|holder| format!(" ({holder})")).unwrap_or_default())]
    LockTimeout {
        /// The index directory.
        path: PathBuf,
        /// How long the write waited.
        waited: std::time::Duration,
        /// The process holding the writer's turn, as it describes itself, when known.
        holder: Option<String>,
    },
    /// Readers are open on the index (in this process or another), and the operation needs
    /// none: compaction, and the storage engine's structural check on an open handle.
    #[error("{}: readers are open on this index (in this process or another); compaction needs none open: try again when they are done", path.display())]
    ReadersOpen {
        /// The database file.
        path: PathBuf,
    },
    /// The id space of the in-memory engine is exhausted.
    #[error("the index is full: at most {max} ids can be handed out")]
    Full {
        /// Largest number of ids.
        max: u64,
    },
    /// An item's key, label and metadata together exceed the record limit.
    #[error("item too large: {bytes} bytes of key, label and metadata (at most {max})")]
    ItemTooLarge {
        /// Bytes given.
        bytes: usize,
        /// Most allowed.
        max: usize,
    },
}

/// What can go wrong when making, parsing or comparing codes; converts into [`Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// A code could not be parsed or has an impossible length.
    #[error("invalid code: {detail}")]
    InvalidCode {
        /// What is wrong.
        detail: String,
    },
    /// A code length that is not a multiple of 8 from 8 to 1024, wherever one is asked for:
    /// [`Index::builder`](crate::Index::builder), a training run, [`Code::from_fn`](crate::Code::from_fn).
    #[error("{bits} bits: the code length must be a multiple of 8 from 8 to 1024")]
    InvalidBits {
        /// The length asked for.
        bits: u32,
    },
    /// A number of substrings that does not fit the code length ([`LayoutError::Substrings`]).
    ///
    /// A bad code length is always [`CodeError::InvalidBits`]: the conversion from [`LayoutError`]
    /// turns [`LayoutError::Bits`] into it.
    #[error(transparent)]
    Layout(LayoutError),
    /// A code of another length than the index's.
    #[error("code has {got} bits but the index stores {expected}-bit codes")]
    CodeLength {
        /// The index's code length.
        expected: u32,
        /// The code's length.
        got: u32,
    },
    /// Two codes of different lengths compared with [`Code::distance`](crate::Code::distance).
    #[error("cannot compare a {left}-bit code with a {right}-bit code: Hamming distance needs codes of one length")]
    CodeLengthsDiffer {
        /// The length of the code `distance` was called on.
        left: u32,
        /// The length of its argument.
        right: u32,
    },
}

/// What can go wrong when searching; converts into [`Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// Radius larger than the code length.
    #[error("radius {radius} is larger than the code length ({bits} bits); use 0 to {bits}")]
    RadiusTooLarge {
        /// Requested radius.
        radius: u32,
        /// Code length.
        bits: u32,
    },
    /// Top-k with k = 0.
    #[error("k must be at least 1")]
    ZeroK,
    /// A search forced to [`Strategy::MultiIndex`](crate::Strategy::MultiIndex) that would
    /// enumerate far more buckets than a linear scan costs; nothing was searched.
    #[error("multi-index hashing would probe about {probes} buckets for this query, over the budget of {budget} for an index of {codes} codes; search with the auto or scan strategy, which return the same answers")]
    MultiIndexTooCostly {
        /// Bucket probes the search was expected to need (a prediction for top-k).
        probes: u64,
        /// Most probes a forced multi-index search may make on this index.
        budget: u64,
        /// Live codes in the index.
        codes: u64,
    },
}

/// What can go wrong when turning images into features and codes; converts into [`Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// ONNX Runtime could not be found or loaded.
    #[cfg(feature = "images")]
    #[error("{detail}")]
    Runtime {
        /// What was tried and what failed.
        detail: String,
    },
    /// The ONNX model cannot serve as a feature extractor.
    #[cfg(feature = "images")]
    #[error("{}: {detail}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        detail: String,
    },
    /// An image that cannot be read or decoded.
    #[cfg(feature = "images")]
    #[error("{}: {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// Why it was skipped.
        reason: crate::extract::SkipReason,
    },
    /// An index bound to one extractor or head, used with another (or a code-only index asked
    /// for images).
    #[error("{}: {reason}", path.display())]
    Mismatch {
        /// The index directory.
        path: PathBuf,
        /// What differs.
        reason: Mismatch,
    },
    /// A hash head file is unreadable or inconsistent.
    #[error("{}: not a usable hash head: {detail}", path.display())]
    BadHead {
        /// The head file (empty when decoded from memory).
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Features of another dimension than expected.
    #[error("features have {got} dimensions but {expected} are expected")]
    FeatureDim {
        /// Expected dimension.
        expected: u32,
        /// Given dimension.
        got: u32,
    },
}

/// What can go wrong when training and evaluating hash heads; converts into [`Error`].
#[cfg(feature = "train")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Features and labels (or keys) that must hold one entry per item differ in length.
    #[error("features have {features} rows but there are {labels} labels; give exactly one label per feature row")]
    LengthMismatch {
        /// Feature rows (or items).
        features: usize,
        /// Labels (or keys) given.
        labels: usize,
    },
    /// A data set or split with no items where some are needed.
    #[error("{what} is empty")]
    EmptyData {
        /// Which data, and what to do about it.
        what: String,
    },
    /// A NaN or infinite feature value.
    #[error(
        "feature row {row}, column {column} is NaN or infinite; features must be finite numbers"
    )]
    NonFiniteFeature {
        /// Row (item) number, from 0.
        row: usize,
        /// Column (dimension) number, from 0.
        column: usize,
    },
    /// A class with fewer training items than the recipe's triplets need.
    #[error("class {label} has {items} training items but at least {needed} are needed: {why}")]
    ClassTooSmall {
        /// The class label.
        label: i64,
        /// Its training items.
        items: usize,
        /// Items needed.
        needed: usize,
        /// Why, and what to do.
        why: String,
    },
    /// Training data with fewer than two classes.
    #[error("training needs at least 2 classes (triplets need a negative class), found {found}")]
    TooFewClasses {
        /// Distinct labels found.
        found: usize,
    },
    /// A training or evaluation data set that cannot be used.
    #[error("{}: not usable as training data: {detail}", path.display())]
    BadData {
        /// The data folder or the file in it.
        path: PathBuf,
        /// What is wrong, and what to do.
        detail: String,
    },
    /// A training checkpoint that cannot be resumed.
    #[error("not a usable training checkpoint: {detail}")]
    BadCheckpoint {
        /// What is wrong.
        detail: String,
    },
}

/// What differs between an image index's extractor and head and what it was used with
/// ([`ExtractError::Mismatch`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// The index stores codes only: it has no extractor to code images with, nor features to
    /// re-code; create an image index with `IndexBuilder::images` (feature `images`).
    #[error("this index stores codes only (it has no extractor and no features); create an image index with IndexBuilder::images to add, sync or re-code images")]
    CodesOnly,
    /// A head whose code length is not the index's.
    #[error("the hash head makes {head}-bit codes but the index is for {index}-bit codes")]
    HeadBits {
        /// The head's code length.
        head: u32,
        /// The index's code length.
        index: u32,
    },
    /// A head that cannot code the index's extractor's features.
    #[error(transparent)]
    Head(crate::head::HeadMismatch),
    /// An extractor other than the index's, or with other settings.
    #[error(
        "the index was built with model {} (fingerprint {}, output {:?}, size {}), not {} (fingerprint {}, output {:?}, size {}); use the same model and settings",
        index.path, index.short_fingerprint(), index.output, index.size,
        given.path, given.short_fingerprint(), given.output, given.size
    )]
    Extractor {
        /// The extractor the index is bound to.
        index: Box<crate::ExtractorContract>,
        /// The extractor given.
        given: Box<crate::ExtractorContract>,
    },
    /// Another process re-coded the index with another head since this handle opened it.
    #[error("another process replaced the index's hash head (rehash) since this handle opened it; open the index again to code images with the new head")]
    HeadReplaced,
    /// The index was re-coded with a new head (through this handle, by another thread) while
    /// images were being coded with the old one: their codes would not match the index's.
    #[error("the index was re-coded with a new hash head (rehash) while these images were coded with the old one; add them again")]
    RecodedMeanwhile,
    /// A rehash of items whose features were not kept when they were added.
    #[error("{missing} of {items} items have no kept features (item {example} is one); only items added with IngestOptions::keep_features can be re-coded")]
    FeaturesNotKept {
        /// Live items without kept features.
        missing: u64,
        /// Live items in all.
        items: u64,
        /// One of them.
        example: u64,
    },
}

/// A duration in seconds, as messages give it.
fn seconds(duration: std::time::Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

impl From<LayoutError> for Error {
    /// [`LayoutError::Bits`] becomes [`CodeError::InvalidBits`], the one error for a bad code
    /// length; the rest [`CodeError::Layout`].
    fn from(err: LayoutError) -> Error {
        match err {
            LayoutError::Bits { bits } => Error::Code(CodeError::InvalidBits { bits }),
            other => Error::Code(CodeError::Layout(other)),
        }
    }
}

impl Error {
    /// Maps a decode failure of data read from the index at `path`.
    pub(crate) fn from_decode(path: &std::path::Path, err: DecodeError) -> Error {
        let path = path.to_path_buf();
        match err {
            DecodeError::TooNew { found, supported } => Error::Open(OpenError::TooNew {
                path,
                found,
                supported,
            }),
            DecodeError::UpgradeRequired { found, oldest } => {
                Error::Open(OpenError::UpgradeRequired {
                    path,
                    found,
                    oldest,
                })
            }
            other => Error::Corrupted {
                path,
                detail: other.to_string(),
            },
        }
    }
}
