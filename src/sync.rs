//! Keeping an image index in line with folders: [`SyncPlan::new`] compares the items whose keys
//! lie under the folders with the files found there now, and [`SyncPlan::apply`] carries the
//! plan out.
//!
//! The key of an image item is its file's absolute path, and its content hash the BLAKE3 of the
//! file's bytes; a sync matches the two sides on both:
//! - **unchanged**: an item whose file is still at its key with the same content: untouched;
//! - **moved**: content whose file is gone from its key turns up at a path no item holds: the item
//!   is re-keyed ([`Writer::update_item`]), keeping its id, code and kept features, and the model
//!   does not run. A key is matched at the path [`key_path`] spells for
//!   it, as files found are spelled, so an item whose key names its file through `..` is re-keyed
//!   to the plain spelling too;
//! - **re-coded**: the file at a key holds new content: the old item is deleted and the file coded
//!   and added again (a new id; ids are never reused), keeping the old item's label and metadata,
//!   and its kept features when it had them;
//! - **added**: a file no item knows, coded as [`add_images`](crate::ingest::add_images) codes it;
//! - **deleted**: an item whose file is gone (`gone`), or whose file now holds content that is
//!   indexed under another item (`stale`);
//! - **duplicate**: a file whose content is already indexed under another key (or met earlier in
//!   the same sync) is not added, as `index add` skips content it has indexed: each content is
//!   indexed once. Should the indexed copy go, the next sync re-keys its item to the remaining one.
//!
//! Only items whose keys are absolute paths inside the given folders (compared component by
//! component, after resolving `.` and `..` in the text) are in scope; every other item is never
//! touched. An item whose file exists but cannot be read (permissions, say) is kept as it is, and
//! the file reported as skipped.
//!
//! Transactions: deletes and re-keys commit first, in batches of
//! [`IngestOptions::commit_every`]; each re-coded file's delete commits together with its new
//! code, in the batches of the coding pipeline. An interrupted sync therefore leaves whole
//! commits, and a new plan made afterwards finishes the job.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, ExtractError, Mismatch, Result};
use crate::extract::image::hash_file;
use crate::extract::{Extractor, SkipReason};
use crate::index::{Index, Item, Reader, Writer};
use crate::ingest::{
    keeps_features, key_path, normalised, parent_label, Batches, FailedFile, Failures, FileHooks,
    IngestOptions, IngestReport,
};

/// Files hashed between two progress calls (and cancel checks) while planning.
const HASH_CHUNK: usize = 64;

/// An item whose file moved: re-keyed from `from` to `to`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Move {
    /// The item.
    pub id: u64,
    /// Its key now.
    pub from: String,
    /// The path its content was found at.
    pub to: String,
}

/// A file whose content changed at the same path: its old item is deleted and the file coded
/// again.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recode {
    /// The item that holds the old content.
    pub id: u64,
    /// The file, which is also the key.
    pub path: String,
}

/// Why an item is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// No file is at its key any more.
    Gone,
    /// The file at its key holds other content, which is indexed under another item (or is a
    /// duplicate of indexed content).
    Stale,
}

/// An item to delete.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Removal {
    /// The item.
    pub id: u64,
    /// Its key.
    pub key: String,
    /// Why.
    pub reason: RemovalReason,
}

/// A file not added because its content is already indexed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Duplicate {
    /// The file.
    pub path: String,
    /// The key its content is indexed (or, earlier in this sync, added) under; `None` for an
    /// indexed item without a key.
    pub of: Option<String>,
}

/// What a sync will do, worked out from the index and the files without changing either. See the
/// [module documentation](self) for the rules.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct SyncPlan {
    /// The folders in scope, absolute and normalised (in JSON, lossily where not UTF-8).
    #[serde(serialize_with = "lossy_paths")]
    pub folders: Vec<PathBuf>,
    /// Items whose file is unchanged.
    pub unchanged: usize,
    /// Items to re-key.
    pub moves: Vec<Move>,
    /// Files to code again.
    pub recodes: Vec<Recode>,
    /// Files to add.
    pub adds: Vec<String>,
    /// Items to delete.
    pub deletes: Vec<Removal>,
    /// Files not added because their content is indexed.
    pub duplicates: Vec<Duplicate>,
    /// Files that could not be read (items with such a key are kept as they are).
    pub skipped: Vec<FailedFile>,
    /// Whether planning was cancelled: such a plan is incomplete and must not be applied.
    pub cancelled: bool,
    /// Content hashes that stay indexed whatever the plan does: the coding step skips them.
    #[serde(skip)]
    known: HashSet<[u8; 32]>,
}

fn lossy_paths<S: serde::Serializer>(
    paths: &[PathBuf],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_seq(paths.iter().map(|path| path.to_string_lossy()))
}

/// What a sync did (or, for a plan not applied, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct SyncReport {
    /// Whether this reports a plan only ([`SyncPlan::report`]), with nothing changed.
    pub dry_run: bool,
    /// Items whose file is unchanged.
    pub unchanged: usize,
    /// Items re-keyed to where their file moved.
    pub moved: usize,
    /// Files added.
    pub added: usize,
    /// Files whose content changed, coded again.
    pub recoded: usize,
    /// Items deleted: their file gone, or stale (see [`RemovalReason`]), or a re-coded file's
    /// old item when the new content could not be coded.
    pub deleted: usize,
    /// Files not added because their content is indexed under another key.
    pub duplicates: usize,
    /// Files skipped, with why (in JSON, `failed` and `failed_by_reason`).
    #[serde(flatten)]
    pub failures: Failures,
    /// The first and last id given to coded files.
    pub ids: Option<(u64, u64)>,
    /// The device the model ran on (empty for a plan).
    pub device: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Whether the run was cancelled before the end; what was done is committed.
    pub cancelled: bool,
}

/// The path an in-scope key is matched at: the key as [`key_path`] spells it.
fn spelled(key: &str) -> String {
    key_path(Path::new(key))
        .into_os_string()
        .into_string()
        .unwrap_or_else(|_| key.to_string())
}

/// Whether the key names a path in one of `folders` (the folder itself included).
fn in_scope(key: &str, folders: &[PathBuf]) -> bool {
    let path = Path::new(key);
    // A relative key names no file for sure: it is left alone.
    if !path.is_absolute() {
        return false;
    }
    let Some(path) = normalised(path) else {
        return false;
    };
    // Path::starts_with compares whole components: /a/b is not in /a/bc.
    folders.iter().any(|folder| path.starts_with(folder))
}

/// An in-scope item as the plan sees it.
struct Stored {
    id: u64,
    /// Its key as stored.
    key: String,
    /// The path it is matched at: its key as [`key_path`] spells it (`..` resolved where that
    /// names the same file), as files found in the folders are spelled.
    at: String,
    hash: Option<[u8; 32]>,
}

/// Who holds content that stays indexed: an item outside the folders (its key read only when
/// needed), or the key an item in them has after the sync.
enum Holder {
    Outside(u64),
    Key(String),
}

fn not_a_folder(folder: &Path) -> Error {
    Error::InvalidArgument {
        detail: format!(
            "{} is not a folder; sync takes folders, and never takes a missing one for an empty one",
            folder.display()
        ),
    }
}

fn refuse_codes_only(index: &Index) -> Result<()> {
    if index.model().is_none() {
        return Err(Error::Extract(ExtractError::Mismatch {
            path: index.path().to_path_buf(),
            reason: Mismatch::CodesOnly,
        }));
    }
    Ok(())
}

impl SyncPlan {
    /// Plans the sync of the image index with `folders`, given `files`: the files found in them
    /// now (a recursive walk, such as the command line's). Files are read as the pipeline reads
    /// them (regular files only, up to [`MAX_FILE_BYTES`](crate::extract::MAX_FILE_BYTES)) and
    /// hashed as they stream in (a small buffer per thread, never a whole file); nothing is
    /// decoded and nothing written, so a read-only index will do. Files are keyed as
    /// [`key_path`] spells them.
    /// `progress(done, total)` is called as files are hashed; setting `cancel` stops early with
    /// [`SyncPlan::cancelled`] set.
    ///
    /// An in-scope key that is not among `files` (a file added by name with an extension a walk
    /// skips, say) is looked for on disk before its item is taken for gone.
    ///
    /// Errors: [`Error::InvalidArgument`] for a folder that is not an existing folder (so that a
    /// folder missing, unmounted say, is never taken for an emptied one), or for a file outside
    /// every folder; [`ExtractError::Mismatch`] for an index that stores codes only.
    pub fn new(
        index: &Index,
        folders: &[PathBuf],
        files: &[PathBuf],
        progress: &mut dyn FnMut(usize, usize),
        cancel: &AtomicBool,
    ) -> Result<SyncPlan> {
        refuse_codes_only(index)?;
        let mut scope = Vec::with_capacity(folders.len());
        for folder in folders {
            let is_dir = std::fs::metadata(folder).is_ok_and(|m| m.is_dir());
            match normalised(folder) {
                Some(normal) if is_dir => scope.push(normal),
                _ => return Err(not_a_folder(folder)),
            }
        }
        let reader = index.reader()?;
        // Every item is read: those in scope are matched, the others' content stays indexed.
        let mut stored = Vec::new();
        let mut outside: HashMap<[u8; 32], u64> = HashMap::new();
        for id in reader.ids() {
            let item = reader.item(id)?.unwrap_or_default();
            match item.key {
                Some(key) if in_scope(&key, &scope) => stored.push(Stored {
                    id,
                    at: spelled(&key),
                    key,
                    hash: item.content_hash,
                }),
                _ => {
                    if let Some(hash) = item.content_hash {
                        outside.entry(hash).or_insert(id);
                    }
                }
            }
        }

        // The files to hash: those listed, then in-scope keys still on disk but not listed.
        let mut skipped = Vec::new();
        let mut listed: Vec<(PathBuf, String)> = Vec::new();
        let mut listed_keys = HashSet::new();
        for file in files {
            let path = key_path(file);
            let inside = normalised(&path).is_some_and(|p| scope.iter().any(|f| p.starts_with(f)));
            if !inside {
                return Err(Error::InvalidArgument {
                    detail: format!("{} is in none of the folders being synced", path.display()),
                });
            }
            match path.to_str().map(str::to_string) {
                Some(key) => {
                    if listed_keys.insert(key.clone()) {
                        listed.push((path, key));
                    }
                }
                None => skipped.push(FailedFile::new(path, &SkipReason::NameNotUtf8)),
            }
        }
        for item in &stored {
            if listed_keys.contains(&item.at) {
                continue;
            }
            let gone = std::fs::metadata(&item.at).is_err_and(|err| {
                matches!(
                    err.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                )
            });
            // Anything but a clear "not there" is read like a listed file: a file that cannot be
            // read then keeps its item.
            if !gone {
                listed_keys.insert(item.at.clone());
                listed.push((PathBuf::from(&item.at), item.at.clone()));
            }
        }

        let mut plan = SyncPlan {
            folders: scope,
            unchanged: 0,
            moves: Vec::new(),
            recodes: Vec::new(),
            adds: Vec::new(),
            deletes: Vec::new(),
            duplicates: Vec::new(),
            skipped,
            cancelled: false,
            known: HashSet::new(),
        };

        // Hash in chunks, in parallel within each, reporting and checking for a cancel between.
        let mut on_disk: BTreeMap<String, [u8; 32]> = BTreeMap::new();
        let mut unreadable: HashSet<String> = HashSet::new();
        let total = listed.len();
        for (number, chunk) in listed.chunks(HASH_CHUNK).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                plan.cancelled = true;
                return Ok(plan);
            }
            // Streamed: a thread holds a small buffer, not the file.
            let hashed: Vec<std::result::Result<[u8; 32], SkipReason>> =
                chunk.par_iter().map(|(path, _)| hash_file(path)).collect();
            for ((path, key), hashed) in chunk.iter().zip(hashed) {
                match hashed {
                    Ok(hash) => {
                        on_disk.insert(key.clone(), hash);
                    }
                    Err(reason) => {
                        plan.skipped.push(FailedFile::new(path.clone(), &reason));
                        unreadable.insert(key.clone());
                    }
                }
            }
            progress((number * HASH_CHUNK + chunk.len()).min(total), total);
        }
        plan.classify(&reader, stored, on_disk, &unreadable, outside)?;
        Ok(plan)
    }

    /// Matches the stored items with the files hashed, as the module documentation says.
    fn classify(
        &mut self,
        reader: &Reader,
        stored: Vec<Stored>,
        on_disk: BTreeMap<String, [u8; 32]>,
        unreadable: &HashSet<String>,
        outside: HashMap<[u8; 32], u64>,
    ) -> Result<()> {
        // Items whose file cannot be read now are kept, untouched and unmatched.
        let (kept, stored): (Vec<Stored>, Vec<Stored>) = stored
            .into_iter()
            .partition(|item| unreadable.contains(&item.at));
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_hash: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
        for (at, item) in stored.iter().enumerate() {
            by_key.entry(&item.at).or_default().push(at);
            if let Some(hash) = item.hash {
                by_hash.entry(hash).or_default().push(at);
            }
        }
        let mut used = vec![false; stored.len()];
        // Content that stays indexed, with who holds it (for naming duplicates).
        let mut staying: HashMap<[u8; 32], Holder> = outside
            .into_iter()
            .map(|(hash, id)| (hash, Holder::Outside(id)))
            .collect();
        for item in &kept {
            if let Some(hash) = item.hash {
                staying
                    .entry(hash)
                    .or_insert_with(|| Holder::Key(item.key.clone()));
            }
        }

        // Unchanged: the same content at the same key. Ids ascend, so the oldest item is kept.
        let mut unmatched = Vec::new();
        for (key, hash) in &on_disk {
            let same = by_key.get(key.as_str()).and_then(|ats| {
                ats.iter()
                    .copied()
                    .find(|&at| !used[at] && stored[at].hash == Some(*hash))
            });
            match same {
                Some(at) => {
                    used[at] = true;
                    if stored[at].key == *key {
                        self.unchanged += 1;
                    } else {
                        // The same file under another spelling (`..` in the key): re-keyed to
                        // the spelling `index add` now stores.
                        self.moves.push(Move {
                            id: stored[at].id,
                            from: stored[at].key.clone(),
                            to: key.clone(),
                        });
                    }
                    staying
                        .entry(*hash)
                        .or_insert_with(|| Holder::Key(key.clone()));
                }
                None => unmatched.push((key.as_str(), *hash)),
            }
        }

        // Moved: content no longer at its key turns up at a path that no item matched.
        let mut unplaced = Vec::new();
        for (key, hash) in unmatched {
            let from = by_hash.get(&hash).and_then(|ats| {
                ats.iter().copied().find(|&at| {
                    // An item still at its own, unchanged file was matched above.
                    !used[at]
                })
            });
            match from {
                Some(at) => {
                    used[at] = true;
                    staying
                        .entry(hash)
                        .or_insert_with(|| Holder::Key(key.to_string()));
                    self.moves.push(Move {
                        id: stored[at].id,
                        from: stored[at].key.clone(),
                        to: key.to_string(),
                    });
                }
                None => unplaced.push((key, hash)),
            }
        }

        // New content: coded, once per content. A path with an item left holds new content
        // (re-coded); a path without one is new.
        let mut added_here: HashMap<[u8; 32], &str> = HashMap::new();
        for (key, hash) in unplaced {
            let of = if let Some(holder) = staying.get(&hash) {
                Some(match holder {
                    Holder::Outside(id) => reader.item(*id)?.and_then(|item| item.key),
                    Holder::Key(key) => Some(key.clone()),
                })
            } else {
                added_here.get(&hash).map(|first| Some(first.to_string()))
            };
            if let Some(of) = of {
                self.duplicates.push(Duplicate {
                    path: key.to_string(),
                    of,
                });
                continue;
            }
            added_here.insert(hash, key);
            let old = by_key
                .get(key)
                .and_then(|ats| ats.iter().copied().find(|&at| !used[at]));
            match old {
                Some(at) => {
                    used[at] = true;
                    self.recodes.push(Recode {
                        id: stored[at].id,
                        path: key.to_string(),
                    });
                }
                None => self.adds.push(key.to_string()),
            }
        }

        // Whatever is left is deleted: its file is gone, or holds content kept elsewhere.
        for (at, item) in stored.iter().enumerate() {
            if !used[at] {
                let reason = if on_disk.contains_key(&item.at) {
                    RemovalReason::Stale
                } else {
                    RemovalReason::Gone
                };
                self.deletes.push(Removal {
                    id: item.id,
                    key: item.key.clone(),
                    reason,
                });
            }
        }
        self.known = staying.into_keys().collect();
        Ok(())
    }

    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
            && self.recodes.is_empty()
            && self.adds.is_empty()
            && self.deletes.is_empty()
    }

    /// The counts of the plan, as a report of what applying it would do (`dry_run` set).
    pub fn report(&self) -> SyncReport {
        let mut report = SyncReport {
            dry_run: true,
            unchanged: self.unchanged,
            moved: self.moves.len(),
            added: self.adds.len(),
            recoded: self.recodes.len(),
            deleted: self.deletes.len(),
            duplicates: self.duplicates.len(),
            cancelled: self.cancelled,
            ..SyncReport::default()
        };
        for failed in &self.skipped {
            report.failures.push(failed.clone());
        }
        report
    }

    /// Carries the plan out on `index` (the index it was made from, opened for writing), coding
    /// new and changed files with `extractor` as [`add_images`](crate::ingest::add_images) does,
    /// with `options` (batch sizes, commits, labels, kept features). With `label_from_dir`, moved
    /// items take their new folder's name as their label too.
    ///
    /// Feature vectors are kept, even without [`IngestOptions::keep_features`], for a re-coded
    /// file whose old item had them, and for every coded file when the index keeps features
    /// ([`keeps_features`]): a sync never leaves an index that [`Index::rehash`] could re-code
    /// with items it cannot.
    ///
    /// Deletes and re-keys commit first, `commit_every` to a transaction; then files are coded
    /// and their adds committed `commit_every` at a time, each re-coded file's old item deleted in
    /// the transaction that adds its new code. `progress(done, total)` follows the coding;
    /// setting `cancel` stops after the transaction in hand, with
    /// [`SyncReport::cancelled`] set: a new plan then finishes the job.
    ///
    /// A plan made from an older state of the index is safe to apply: items it names that are no
    /// longer live are passed over.
    ///
    /// Errors: [`Error::InvalidArgument`] for a cancelled (incomplete) plan; [`ExtractError::Mismatch`]
    /// for another extractor than the index's; storage errors as for any write.
    pub fn apply(
        &self,
        index: &Index,
        extractor: &mut Extractor,
        options: &IngestOptions,
        progress: &mut dyn FnMut(usize, usize),
        cancel: &AtomicBool,
    ) -> Result<SyncReport> {
        if self.cancelled {
            return Err(Error::InvalidArgument {
                detail: "the sync plan was cancelled before it was complete; make a new one".into(),
            });
        }
        let started = Instant::now();
        let mut batches = Batches::new(index, extractor, options, progress, cancel)?;
        let mut report = SyncReport {
            dry_run: false,
            unchanged: self.unchanged,
            duplicates: self.duplicates.len(),
            device: batches.device(),
            ..SyncReport::default()
        };
        for failed in &self.skipped {
            report.failures.push(failed.clone());
        }
        let dim = index.model().map_or(0, |model| model.dim);
        let index_keeps = keeps_features(index)?;
        let commit_every = options.commit_every.max(1);

        // What the changes need from the stored items, read before anything is written (and the
        // snapshot let go, so that it does not hold on to pages the writes free).
        let reader = index.reader()?;
        let mut moves = Vec::with_capacity(self.moves.len());
        for moved in &self.moves {
            // An item deleted since the plan was made is passed over.
            if let Some(item) = reader.item(moved.id)? {
                let label = if options.label_from_dir {
                    parent_label(Path::new(&moved.to))
                } else {
                    item.label
                };
                let item = Item {
                    key: Some(moved.to.clone()),
                    label,
                    ..item
                };
                moves.push((moved.id, item));
            }
        }
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut templates = Vec::new();
        for recode in &self.recodes {
            let old = reader.item(recode.id)?.unwrap_or_default();
            let had_features = reader.features(recode.id, dim)?.is_some();
            paths.push(PathBuf::from(&recode.path));
            templates.push(Template {
                replaces: Some(recode.id),
                label: old.label,
                metadata: old.metadata,
                keep_features: had_features || index_keeps,
            });
        }
        for add in &self.adds {
            paths.push(PathBuf::from(add));
            templates.push(Template {
                keep_features: index_keeps,
                ..Template::default()
            });
        }
        drop(reader);

        // Deletes and re-keys: no model, whole transactions of `commit_every` changes.
        let mut changes = self
            .deletes
            .iter()
            .map(|removal| Change::Delete(removal.id))
            .chain(moves.into_iter().map(|(id, item)| Change::Move(id, item)))
            .peekable();
        while changes.peek().is_some() {
            if cancel.load(Ordering::Relaxed) {
                report.cancelled = true;
                break;
            }
            let mut writer = index.writer()?;
            let (mut deleted, mut moved) = (0, 0);
            for change in changes.by_ref().take(commit_every) {
                match change {
                    Change::Delete(id) => deleted += usize::from(writer.delete(id)?),
                    Change::Move(id, item) => moved += usize::from(writer.update_item(id, item)?),
                }
            }
            writer.commit()?;
            report.deleted += deleted;
            report.moved += moved;
        }

        // New and changed files: the ingest pipeline, each old item deleted with its new code.
        if !report.cancelled && !paths.is_empty() {
            let mut hooks = Hooks {
                paths: &paths,
                templates,
                label_from_dir: options.label_from_dir,
                recoded: 0,
                replaced_without_code: 0,
            };
            let mut ingest = IngestReport::default();
            batches.add_files(&paths, &self.known, &mut ingest, &mut hooks)?;
            report.recoded = hooks.recoded;
            report.added = ingest.added - hooks.recoded;
            report.deleted += hooks.replaced_without_code;
            report.duplicates += ingest.already_indexed + ingest.duplicates;
            report.ids = ingest.ids;
            for failed in ingest.failures.failed {
                report.failures.push(failed);
            }
            report.cancelled = cancel.load(Ordering::Relaxed);
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// One change of the first, model-free phase of [`SyncPlan::apply`].
enum Change {
    Delete(u64),
    /// The id and its new item.
    Move(u64, Item),
}

/// The coding phase's per-file work: items carry the old label and metadata, and a re-coded
/// file's old item is deleted in the transaction of its new code.
struct Hooks<'p> {
    paths: &'p [PathBuf],
    /// Per path, what its item takes over.
    templates: Vec<Template>,
    label_from_dir: bool,
    recoded: usize,
    replaced_without_code: usize,
}

/// What a coded file's item takes over from the item it replaces.
#[derive(Default)]
struct Template {
    /// The item whose file changed (none for a new file).
    replaces: Option<u64>,
    label: Option<String>,
    metadata: Option<Vec<u8>>,
    /// Whether its features are kept (see [`SyncPlan::apply`]).
    keep_features: bool,
}

impl FileHooks for Hooks<'_> {
    fn item(&mut self, position: usize) -> Item {
        let template = &self.templates[position];
        Item {
            label: if self.label_from_dir {
                parent_label(&self.paths[position])
            } else {
                template.label.clone()
            },
            metadata: template.metadata.clone(),
            ..Item::default()
        }
    }

    fn keep_features(&self, position: usize) -> bool {
        self.templates[position].keep_features
    }

    fn done(&mut self, writer: &mut Writer<'_>, position: usize, added: Option<u64>) -> Result<()> {
        let Some(old) = self.templates[position].replaces else {
            return Ok(());
        };
        // The old code describes content the file no longer holds: it goes, coded anew or not.
        // An old item deleted since the plan was made leaves a plain add.
        if writer.delete(old)? {
            match added {
                Some(_) => self.recoded += 1,
                None => self.replaced_without_code += 1,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_compares_whole_components_after_dots() {
        let folders = vec![PathBuf::from("/photos/2024")];
        assert!(in_scope("/photos/2024", &folders));
        assert!(in_scope("/photos/2024/a.jpg", &folders));
        assert!(in_scope("/photos/2024/x/../a.jpg", &folders));
        assert!(in_scope("/photos/./2024/a.jpg", &folders));
        assert!(!in_scope("/photos/20245/a.jpg", &folders));
        assert!(!in_scope("/photos/2024/../2025/a.jpg", &folders));
        assert!(!in_scope("/photos/a.jpg", &folders));
        // Keys that are no absolute path are never in scope.
        assert!(!in_scope("photos/2024/a.jpg", &folders));
        assert!(!in_scope("", &folders));
        assert!(!in_scope("/..", &folders));
    }

    #[test]
    fn normalising_resolves_dots_in_the_text() {
        assert_eq!(
            normalised(Path::new("/a/./b/../c")),
            Some(PathBuf::from("/a/c"))
        );
        assert_eq!(normalised(Path::new("/a/../..")), None);
    }
}
