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
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use milan_index_format::ModelRecord;
use ndarray::ArrayView2;

use crate::code::Code;
use crate::error::{Error, Result};
use crate::extract::pipeline::{extract_files, FileOutcome};
use crate::extract::ReadOptions;
use crate::extract::{read_image, Extractor, SkipReason};
use crate::head::HashHead;
use crate::index::{hex, Index, Item, Writer};

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
    /// Files that could not be read or decoded, with why.
    pub failed: Vec<FailedFile>,
    /// Failures counted by reason (`corrupt`, `unsupported`, ...).
    pub failed_by_reason: BTreeMap<String, usize>,
    /// The first and last id handed out.
    pub ids: Option<(u64, u64)>,
    /// The device the model ran on.
    pub device: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Whether the run was cancelled before the end.
    pub cancelled: bool,
}

/// A file that could not be added.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedFile {
    /// The file (in JSON, lossily where it is not valid UTF-8).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// Short reason ([`SkipReason::kind`]: `corrupt`, `truncated`, `unsupported`, `empty`,
    /// `unreadable`, `not_a_file`, `name_not_utf8`, `too_large`).
    pub reason: String,
    /// The decoder's words.
    pub detail: String,
}

fn lossy_path<S: serde::Serializer>(
    path: &Path,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// Checks that `extractor` is the one the index is bound to.
pub fn check_extractor(index: &Index, extractor: &Extractor) -> Result<(ModelRecord, HashHead)> {
    let (Some(model), Some(head)) = (index.model(), index.head()) else {
        return Err(Error::Mismatch {
            path: index.path().to_path_buf(),
            detail: "this index stores codes only; create it with --model and --head to add images"
                .into(),
        });
    };
    let given = extractor.contract();
    let same = given.fingerprint == model.fingerprint
        && given.output == model.output
        && given.size == model.size
        && given.layout == model.layout
        && given.pixel_range == model.pixel_range
        && given.input == model.input;
    if !same {
        return Err(Error::Mismatch {
            path: index.path().to_path_buf(),
            detail: format!(
                "the index was built with model {} (fingerprint {}, output {:?}, size {}), not {} (fingerprint {}, output {:?}, size {}); use the same model and settings",
                model.path,
                hex(&model.fingerprint[..8]),
                model.output,
                model.size,
                given.path,
                hex(&given.fingerprint[..8]),
                given.output,
                given.size
            ),
        });
    }
    Ok((model.clone(), head.clone()))
}

/// The label of `path` under `--label-from-dir`: its parent folder's name.
pub(crate) fn parent_label(path: &Path) -> Option<String> {
    path.parent()?
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
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
    let (_, head) = check_extractor(index, extractor)?;
    let known: HashSet<[u8; 32]> = index.reader()?.content_hashes()?;
    let mut report = IngestReport {
        device: extractor.device().to_string(),
        ..IngestReport::default()
    };
    let mut hooks = Plain {
        paths,
        label_from_dir: options.label_from_dir,
    };
    add_files(
        &mut Batches {
            index,
            extractor,
            head: &head,
            options,
            progress,
            cancel,
        },
        paths,
        &known,
        &mut report,
        &mut hooks,
    )?;
    report.cancelled = cancel.load(std::sync::atomic::Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What [`add_files`] runs with: the index and its coder, and how.
pub(crate) struct Batches<'r, 'x> {
    pub index: &'r Index,
    pub extractor: &'x mut Extractor,
    pub head: &'r HashHead,
    pub options: &'r IngestOptions,
    pub progress: &'r mut dyn FnMut(usize, usize),
    pub cancel: &'r AtomicBool,
}

/// What a caller of [`add_files`] adds to each file: its item beyond key and content hash, and
/// further writes in the transaction that holds the file's add.
pub(crate) trait FileHooks {
    /// The item for `paths[position]`; its key and content hash are filled in from the file.
    fn item(&mut self, position: usize) -> Item;

    /// Called once for each file the run reached, in the writer that holds its add when there is
    /// one: `added` is its new id, or `None` when it was not added (content already indexed, a
    /// duplicate, or unreadable). Writes made here commit atomically with that add.
    fn done(&mut self, writer: &mut Writer<'_>, position: usize, added: Option<u64>) -> Result<()>;
}

/// The batch pipeline behind [`add_images`] and sync: reads, hashes, decodes and codes `paths`,
/// adding each file whose content hash is neither in `known` nor met earlier in the run, and
/// commits every `commit_every` adds (and at the end, or when cancelled after the batch in hand).
pub(crate) fn add_files(
    run: &mut Batches<'_, '_>,
    paths: &[PathBuf],
    known: &HashSet<[u8; 32]>,
    report: &mut IngestReport,
    hooks: &mut dyn FileHooks,
) -> Result<()> {
    let Batches {
        index,
        extractor,
        head,
        options,
        progress,
        cancel,
    } = run;
    let (index, head, options) = (*index, *head, *options);
    let mut seen_this_run = HashSet::new();
    // An Option, so that a full writer can be committed before the next one is begun.
    let mut writer = Some(index.writer()?);
    let mut done = 0;
    extract_files(
        extractor,
        paths,
        options.batch_size,
        known,
        &ReadOptions {
            lenient: options.lenient,
        },
        cancel,
        |batch| {
            let open = writer.as_mut().expect("a writer is open between commits");
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
                            hooks.done(open, extracted.position, None)?;
                            continue;
                        }
                        // The pipeline skips paths that are not UTF-8; a key must name the file.
                        let Some(key) = extracted.path.to_str().map(str::to_string) else {
                            record_failure(report, extracted.path, &SkipReason::NameNotUtf8);
                            hooks.done(open, extracted.position, None)?;
                            continue;
                        };
                        rows.extend_from_slice(&features);
                        pending.push((extracted.position, key, content_hash, features));
                    }
                    FileOutcome::Known { .. } => {
                        report.already_indexed += 1;
                        hooks.done(open, extracted.position, None)?;
                    }
                    FileOutcome::Failed(reason) => {
                        record_failure(report, extracted.path, &reason);
                        hooks.done(open, extracted.position, None)?;
                    }
                }
            }
            if !pending.is_empty() {
                let dim = head.input_dim() as usize;
                let matrix = ArrayView2::from_shape((pending.len(), dim), &rows).map_err(|_| {
                    Error::FeatureDim {
                        expected: head.input_dim(),
                        got: (rows.len() / pending.len()) as u32,
                    }
                })?;
                let codes = head.codes(matrix)?;
                for ((position, key, content_hash, features), code) in
                    pending.into_iter().zip(codes)
                {
                    let item = Item {
                        key: Some(key),
                        content_hash: Some(content_hash),
                        ..hooks.item(position)
                    };
                    let id = if options.keep_features {
                        open.add_with_features(&code, item, features)?
                    } else {
                        open.add(&code, item)?
                    };
                    hooks.done(open, position, Some(id))?;
                    report.added += 1;
                    report.ids = Some((report.ids.map_or(id, |(first, _)| first), id));
                }
            }
            done += options.batch_size.min(paths.len() - done);
            if open.pending_adds() >= options.commit_every {
                writer.take().expect("checked").commit()?;
                writer = Some(index.writer()?);
            }
            progress(done, paths.len());
            Ok(())
        },
    )?;
    if let Some(writer) = writer {
        writer.commit()?;
    }
    Ok(())
}

fn record_failure(report: &mut IngestReport, path: PathBuf, reason: &SkipReason) {
    *report
        .failed_by_reason
        .entry(reason.kind().to_string())
        .or_default() += 1;
    report.failed.push(FailedFile {
        path,
        reason: reason.kind().to_string(),
        detail: reason.to_string(),
    });
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
    let decoded = read_image(path).map_err(|reason| Error::Image {
        path: path.to_path_buf(),
        reason,
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
