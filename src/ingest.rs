//! Images into an index: [`add_images`] runs files through the extractor and the index's hash
//! head and commits the codes in batches; [`code_image`] codes one query image the same way.
//! [`crate::sync`] codes new and changed files through the same batch pipeline.
//!
//! A re-run skips files whose content is already indexed (by BLAKE3 of the file), a file that
//! cannot be read or decoded is reported and skipped, and an interrupted run loses at most the
//! batch it had not committed. Only regular files are read, up to
//! [`MAX_FILE_BYTES`](crate::extract::MAX_FILE_BYTES); a truncated JPEG is skipped
//! unless [`IngestOptions::lenient`]; a path that is not valid UTF-8 is skipped, since its key
//! could not name the file again. Keys are the paths exactly as given, as UTF-8.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ndarray::ArrayView2;

use crate::code::Code;
use crate::contract::ExtractorContract;
use crate::error::{Error, ExtractError, Mismatch, Result};
use crate::extract::pipeline::{extract_files, FileOutcome, StageTimes};
use crate::extract::ReadOptions;
use crate::extract::{read_image, Extractor, SkipReason};
use crate::head::HashHead;
use crate::index::{Index, Item, Writer};

/// How [`add_images`] runs.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Images per model run. Default 16.
    pub batch_size: usize,
    /// Images per commit. Default 512.
    pub commit_every: usize,
    /// Label each image with the name of its parent folder. Default false.
    pub label_from_dir: bool,
    /// Keep each image's feature vector in the index. Default false.
    pub keep_features: bool,
    /// Accept JPEGs that end before their end-of-image marker (the decoder fills in the missing
    /// part). Default false: they are skipped as `truncated`.
    pub lenient: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            batch_size: 16,
            commit_every: 512,
            label_from_dir: false,
            keep_features: false,
            lenient: false,
        }
    }
}

/// What [`add_images`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct IngestReport {
    /// Images added.
    pub added: usize,
    /// Images whose content was already in the index.
    pub already_indexed: usize,
    /// Images whose content appeared earlier in the same run.
    pub duplicates: usize,
    /// Files that could not be read or decoded (in JSON, `failed` and `failed_by_reason`).
    #[serde(flatten)]
    pub failures: Failures,
    /// The first and last id handed out.
    pub ids: Option<(u64, u64)>,
    /// The device the model ran on.
    pub device: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Whether the run was cancelled before the end.
    pub cancelled: bool,
    /// Images per model run.
    pub batch_size: usize,
    /// Where the time went.
    pub stages: StageTimes,
}

/// The files a run skipped, with why, and their counts by reason: part of [`IngestReport`] and
/// [`SyncReport`](crate::sync::SyncReport).
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct Failures {
    /// Each file skipped, in the order met.
    pub failed: Vec<FailedFile>,
    /// The files skipped, counted by reason (`corrupt`, `unsupported`, `unreadable`, ...).
    pub failed_by_reason: BTreeMap<String, usize>,
}

impl Failures {
    /// Records one skipped file.
    pub fn push(&mut self, failed: FailedFile) {
        *self
            .failed_by_reason
            .entry(failed.reason.clone())
            .or_default() += 1;
        self.failed.push(failed);
    }

    /// Whether no file was skipped.
    pub fn is_empty(&self) -> bool {
        self.failed.is_empty()
    }

    /// How many files were skipped.
    pub fn len(&self) -> usize {
        self.failed.len()
    }
}

/// A file that could not be added.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedFile {
    /// The file (in JSON, lossily where it is not valid UTF-8).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// Short reason ([`SkipReason::kind`]: `corrupt`, `truncated`, `unsupported`, `empty`,
    /// `unreadable`, `not_a_file`, `name_not_utf8`, `too_large`; the command line adds
    /// `unlistable_folder` for a folder its walk could not list).
    pub reason: String,
    /// The decoder's words.
    pub detail: String,
}

impl FailedFile {
    /// `path`, skipped for `reason`.
    pub fn new(path: PathBuf, reason: &SkipReason) -> FailedFile {
        FailedFile {
            path,
            reason: reason.kind().to_string(),
            detail: reason.to_string(),
        }
    }
}

fn lossy_path<S: serde::Serializer>(
    path: &Path,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// Checks that `extractor` is the one the index is bound to.
pub fn check_extractor(
    index: &Index,
    extractor: &Extractor,
) -> Result<(ExtractorContract, HashHead)> {
    index.check_head_current()?;
    let (Some(model), Some(head)) = (index.model(), index.head()) else {
        return Err(Error::Extract(ExtractError::Mismatch {
            path: index.path().to_path_buf(),
            reason: Mismatch::CodesOnly,
        }));
    };
    let given = extractor.contract();
    let same = given.fingerprint == model.fingerprint
        && given.output == model.output
        && given.size == model.size
        && given.layout == model.layout
        && given.pixel_range == model.pixel_range
        && given.input == model.input;
    if !same {
        return Err(Error::Extract(ExtractError::Mismatch {
            path: index.path().to_path_buf(),
            reason: Mismatch::Extractor {
                index: Box::new(model.clone()),
                given: Box::new(given.clone()),
            },
        }));
    }
    Ok((model.clone(), HashHead::clone(&head)))
}

/// The label of `path` under `--label-from-dir`: its parent folder's name.
pub fn parent_label(path: &Path) -> Option<String> {
    path.parent()?
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
}

/// `path` made absolute, with `.` and `..` resolved in the text (not against the disk). `None`
/// when `..` would climb above the root.
pub(crate) fn normalised(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// `path` as a key spells it: absolute, with `.` and `..` resolved in the text when that still
/// names the same file or folder (a link before a `..` can make it another); otherwise absolute
/// as given. `milan index add` and `milan index sync` key files by it, so that both spell a path
/// alike however it was typed.
pub fn key_path(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let Some(plain) = normalised(&absolute) else {
        return absolute;
    };
    if plain.as_os_str() == absolute.as_os_str() {
        return absolute;
    }
    let climbs = absolute
        .components()
        .any(|component| component == Component::ParentDir);
    // Without a `..`, only `.` and doubled separators went: the same path by definition.
    if !climbs || same_file(&plain, &absolute) {
        plain
    } else {
        absolute
    }
}

/// Whether `a` and `b` name the same existing file or folder (links followed).
#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    // No cheap identity to compare: the path stays as given.
    false
}

/// Whether the image index keeps feature vectors, so that [`Index::rehash`] can re-code it:
/// whether its most recently added live item has them (`index add` and sync keep them then, even
/// without being asked). False for an empty or code-only index.
pub fn keeps_features(index: &Index) -> Result<bool> {
    let Some(model) = index.model() else {
        return Ok(false);
    };
    let reader = index.reader()?;
    let Some(last) = reader.ids().last() else {
        return Ok(false);
    };
    Ok(reader.features(last, model.dim)?.is_some())
}

/// Adds `paths` to the index. `progress(done, total)` is called after each batch; setting
/// `cancel` stops after the batch in hand, committing what was done.
pub fn add_images(
    index: &Index,
    extractor: &mut Extractor,
    paths: &[PathBuf],
    options: &IngestOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> Result<IngestReport> {
    /// Plain adds: a label from the folder when asked, nothing else to do per file.
    struct Plain<'p> {
        paths: &'p [PathBuf],
        label_from_dir: bool,
    }
    impl FileHooks for Plain<'_> {
        fn item(&mut self, position: usize) -> Item {
            Item {
                label: if self.label_from_dir {
                    parent_label(&self.paths[position])
                } else {
                    None
                },
                ..Item::default()
            }
        }

        fn done(&mut self, _: &mut Writer<'_>, _: usize, _: Option<u64>) -> Result<()> {
            Ok(())
        }
    }

    let started = Instant::now();
    let mut batches = Batches::new(index, extractor, options, progress, cancel)?;
    let known: HashSet<[u8; 32]> = index.reader()?.content_hashes()?;
    let mut report = IngestReport {
        device: batches.device(),
        ..IngestReport::default()
    };
    let mut hooks = Plain {
        paths,
        label_from_dir: options.label_from_dir,
    };
    batches.add_files(paths, &known, &mut report, &mut hooks)?;
    report.cancelled = cancel.load(std::sync::atomic::Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What [`Batches::add_files`] runs with: the index and its coder, and how.
pub(crate) struct Batches<'r, 'x> {
    index: &'r Index,
    extractor: &'x mut Extractor,
    head: HashHead,
    options: &'r IngestOptions,
    progress: &'r mut dyn FnMut(usize, usize),
    cancel: &'r AtomicBool,
}

/// What a caller of [`Batches::add_files`] adds to each file: its item beyond key and content
/// hash, whether its features are kept, and further writes in the transaction that holds the
/// file's add.
pub(crate) trait FileHooks {
    /// The item for `paths[position]`; its key and content hash are filled in from the file.
    fn item(&mut self, position: usize) -> Item;

    /// Whether `paths[position]` keeps its feature vector even without
    /// [`IngestOptions::keep_features`].
    fn keep_features(&self, _position: usize) -> bool {
        false
    }

    /// Called once for each file the run reached, in the writer that holds its add when there is
    /// one: `added` is its new id, or `None` when it was not added (content already indexed, a
    /// duplicate, or unreadable). Writes made here commit atomically with that add.
    fn done(&mut self, writer: &mut Writer<'_>, position: usize, added: Option<u64>) -> Result<()>;
}

impl<'r, 'x> Batches<'r, 'x> {
    /// The pipeline for `index`, coding with `extractor` (checked to be the index's) and the
    /// index's head.
    pub(crate) fn new(
        index: &'r Index,
        extractor: &'x mut Extractor,
        options: &'r IngestOptions,
        progress: &'r mut dyn FnMut(usize, usize),
        cancel: &'r AtomicBool,
    ) -> Result<Self> {
        let (_, head) = check_extractor(index, extractor)?;
        Ok(Batches {
            index,
            extractor,
            head,
            options,
            progress,
            cancel,
        })
    }

    /// The device the model runs on.
    pub(crate) fn device(&self) -> String {
        self.extractor.device().to_string()
    }

    /// The batch pipeline behind [`add_images`] and sync: reads, hashes, decodes and codes
    /// `paths`, adding each file whose content hash is neither in `known` nor met earlier in the
    /// run, and commits every `commit_every` adds (and at the end, or when cancelled after the
    /// batch in hand).
    ///
    /// The coded files wait in memory and the writer is begun only to commit them, so that
    /// other processes writing to the index take their turns between this run's commits, not
    /// after the whole run. Content another process added meanwhile is skipped then, as already
    /// indexed.
    pub(crate) fn add_files(
        &mut self,
        paths: &[PathBuf],
        known: &HashSet<[u8; 32]>,
        report: &mut IngestReport,
        hooks: &mut dyn FileHooks,
    ) -> Result<()> {
        let (index, head, options) = (self.index, &self.head, self.options);
        let progress = &mut self.progress;
        let mut seen_this_run = HashSet::new();
        // Every file reached since the last commit, in order, with its add if it is one.
        let mut reached: Vec<(usize, Option<CodedFile>)> = Vec::new();
        let mut waiting_adds = 0;
        let mut done = 0;
        let (mut head_time, mut commit_time) = (Duration::ZERO, Duration::ZERO);
        report.batch_size = options.batch_size;
        let mut stages = extract_files(
            self.extractor,
            paths,
            options.batch_size,
            known,
            &ReadOptions {
                lenient: options.lenient,
            },
            self.cancel,
            |batch| {
                let mut rows = Vec::new();
                let mut pending = Vec::new();
                for extracted in batch {
                    match extracted.outcome {
                        FileOutcome::Features {
                            features,
                            content_hash,
                        } => {
                            if !seen_this_run.insert(content_hash) {
                                report.duplicates += 1;
                                reached.push((extracted.position, None));
                                continue;
                            }
                            // The pipeline skips paths that are not UTF-8; a key must name the file.
                            let Some(key) = extracted.path.to_str().map(str::to_string) else {
                                report.failures.push(FailedFile::new(
                                    extracted.path,
                                    &SkipReason::NameNotUtf8,
                                ));
                                reached.push((extracted.position, None));
                                continue;
                            };
                            rows.extend_from_slice(&features);
                            pending.push((extracted.position, key, content_hash, features));
                        }
                        FileOutcome::Known { .. } => {
                            report.already_indexed += 1;
                            reached.push((extracted.position, None));
                        }
                        FileOutcome::Failed(reason) => {
                            report
                                .failures
                                .push(FailedFile::new(extracted.path, &reason));
                            reached.push((extracted.position, None));
                        }
                    }
                }
                if !pending.is_empty() {
                    let dim = head.input_dim() as usize;
                    let matrix =
                        ArrayView2::from_shape((pending.len(), dim), &rows).map_err(|_| {
                            Error::Extract(ExtractError::FeatureDim {
                                expected: head.input_dim(),
                                got: (rows.len() / pending.len()) as u32,
                            })
                        })?;
                    let coding = Instant::now();
                    let codes = head.codes(matrix)?;
                    head_time += coding.elapsed();
                    for ((position, key, content_hash, features), code) in
                        pending.into_iter().zip(codes)
                    {
                        let item = Item {
                            key: Some(key),
                            content_hash: Some(content_hash),
                            ..hooks.item(position)
                        };
                        let keep = options.keep_features || hooks.keep_features(position);
                        let features = keep.then_some(features);
                        reached.push((
                            position,
                            Some(CodedFile {
                                code,
                                item,
                                features,
                                content_hash,
                            }),
                        ));
                        waiting_adds += 1;
                    }
                }
                done += options.batch_size.min(paths.len() - done);
                if waiting_adds >= options.commit_every {
                    let committing = Instant::now();
                    commit_files(index, head, &mut reached, report, hooks)?;
                    commit_time += committing.elapsed();
                    waiting_adds = 0;
                }
                progress(done, paths.len());
                Ok(())
            },
        )?;
        let committing = Instant::now();
        let committed = commit_files(index, head, &mut reached, report, hooks);
        commit_time += committing.elapsed();
        stages.head = head_time.as_secs_f64();
        stages.commit = commit_time.as_secs_f64();
        report.stages = stages;
        committed
    }
}

/// A file coded and waiting for its commit.
struct CodedFile {
    code: Code,
    item: Item,
    /// Kept with the code when asked for.
    features: Option<Vec<f32>>,
    content_hash: [u8; 32],
}

/// Commits the files reached since the last commit in one transaction: adds the coded ones
/// whose content the index does not hold yet, and shows every file to `hooks`.
fn commit_files(
    index: &Index,
    head: &HashHead,
    reached: &mut Vec<(usize, Option<CodedFile>)>,
    report: &mut IngestReport,
    hooks: &mut dyn FileHooks,
) -> Result<()> {
    let mut writer = index.writer()?;
    // Beginning the writer caught up with other processes' commits: a rehash among them, or
    // one through this handle by another thread, makes these codes, coded with the old head,
    // wrong for the index.
    index.check_head_is(head)?;
    for (position, file) in reached.drain(..) {
        let added = match file {
            Some(file) if !writer.ids_with_content_hash(&file.content_hash)?.is_empty() => {
                // Added by another process since this run read the index's hashes.
                report.already_indexed += 1;
                None
            }
            Some(file) => {
                let id = match file.features {
                    Some(features) => writer.add_with_features(&file.code, file.item, features)?,
                    None => writer.add(&file.code, file.item)?,
                };
                report.added += 1;
                report.ids = Some((report.ids.map_or(id, |(first, _)| first), id));
                Some(id)
            }
            None => None,
        };
        hooks.done(&mut writer, position, added)?;
    }
    writer.commit()
}

/// One image coded by [`code_image`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CodedImage {
    /// Its code.
    pub code: Code,
    /// Its feature vector.
    pub features: Vec<f32>,
    /// BLAKE3 of the file, as [`add_images`] stores it.
    pub content_hash: [u8; 32],
}

/// The code of one image, made by the index's extractor and head. The file is read as
/// [`add_images`] reads it (a regular file within the size limit; a truncated JPEG is refused).
pub fn code_image(index: &Index, extractor: &mut Extractor, path: &Path) -> Result<CodedImage> {
    let (model, head) = check_extractor(index, extractor)?;
    let decoded = read_image(path).map_err(|reason| {
        Error::Extract(ExtractError::Image {
            path: path.to_path_buf(),
            reason,
        })
    })?;
    let mut input = vec![0.0; extractor.input_len()];
    crate::extract::image::write_input(
        &decoded.image,
        model.size,
        model.layout,
        model.pixel_range,
        &mut input,
    );
    let features = extractor.run(&input, 1)?;
    let code = head.codes(features.view())?.remove(0);
    Ok(CodedImage {
        code,
        features: features.row(0).to_vec(),
        content_hash: decoded.content_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn keys_resolve_dots_only_where_the_path_names_the_same_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let photos = root.join("photos");
        let deep = root.join("deep/er");
        std::fs::create_dir_all(&photos).unwrap();
        std::fs::create_dir_all(deep.join("photos")).unwrap();
        std::fs::create_dir(root.join("x")).unwrap();
        std::os::unix::fs::symlink(&deep, root.join("link")).unwrap();
        // Plain paths stay as they are; `.` and doubled separators go without looking.
        assert_eq!(key_path(&photos), photos);
        let dotted = PathBuf::from(format!("{}/./photos//a.png", root.display()));
        assert_eq!(key_path(&dotted), photos.join("a.png"));
        // `x/..` is the folder itself: resolved.
        let through_x = root.join("x/../photos");
        assert_eq!(key_path(&through_x), photos);
        // `link/..` is deep, not root: `root/link/../photos` names deep/photos, so it stays.
        let through_link = root.join("link/../photos");
        assert_eq!(key_path(&through_link), through_link);
        // A missing path cannot be compared: it stays as given.
        let missing = root.join("nowhere/../photos/b.png");
        assert_eq!(key_path(&missing), missing);
    }
}
