//! `milan extract`: features of a labelled image set, for training and evaluation.
//!
//! Writes DATA/features.npy (float32 [n, d]), DATA/labels.npy (int64 [n]), DATA/classes.txt (one
//! class name per line, label i on line i), DATA/paths.txt (one image per line, row order) and
//! DATA/extractor.json (the extractor contract and fingerprint); `milan::dataset` has the layout.
//! Images are read as `index add` reads them (regular files only, each once, up to the size
//! limit; truncated JPEGs skipped unless --lenient).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use milan::dataset::{
    Dataset, CLASSES_FILE, EXTRACTOR_FILE, FEATURES_FILE, LABELS_FILE, PATHS_FILE,
};
use milan::extract::pipeline::{extract_files, FileOutcome};
use milan::extract::{ReadOptions, SkipReason};
use milan::text::for_terminal;
use ndarray::Array2;

use crate::extractor_args::ExtractorArgs;
use crate::walk::shown;
use crate::{progress, Outcome};

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["images", "manifest"])))]
#[command(after_help = FILES_HELP)]
pub struct ExtractArgs {
    /// A folder of images, one subfolder per class (the folder name is the label), walked
    /// recursively, following links but each folder once.
    #[arg(long, requires = "label_from_dir")]
    images: Option<PathBuf>,
    /// Label each image with its parent folder's name (required with --images).
    #[arg(long)]
    label_from_dir: bool,
    /// A CSV file of `path,label` rows (no header; paths relative to the file's folder).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Output folder (the DATA folder); refused where its files would overwrite an input.
    #[arg(long)]
    out: PathBuf,
    /// Accept truncated JPEGs (data ending before the end-of-image marker), whose missing part
    /// the decoder fills in grey; by default they are skipped as truncated.
    #[arg(long)]
    lenient: bool,
    /// Images per model run [default: by device: 16 on the CPU; on a GPU 256 with 40 GiB of
    /// memory or more, 128 from 16 GiB, else 64].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: Option<u64>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    extractor: ExtractorArgs,
}

/// What `extract` does with odd files (as `index add`, [`crate::walk::FILES_HELP`]) and how it
/// writes the DATA folder, below its options.
const FILES_HELP: &str = "\
Files: --images follows links, but walks each folder once and reads each file once, however many \
links lead to it; a link back into a folder already walked is reported and not followed. Only \
regular files of at most 256 MiB are read: FIFOs, sockets and devices are skipped. A JPEG whose \
data ends before its end-of-image marker is skipped as truncated (unless --lenient), as are files \
other decoders find cut short. Files that cannot be read or decoded (empty, corrupt, truncated, \
not an image, too large, a name that is not valid UTF-8) are skipped and named, and the exit \
status is 3. Keys are the absolute paths, exactly; paths.txt and classes.txt hold one per line, \
with backslashes, line feeds and carriage returns written \\\\, \\n and \\r. Each file of \
the DATA folder is written whole (to a partial file, then renamed) or not at all.";

/// `(path, label)` pairs from the manifest.
fn read_manifest(path: &Path) -> Result<Vec<(PathBuf, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", shown(path)))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((file, label)) = line.rsplit_once(',') else {
            bail!("{}:{}: expected `path,label`", shown(path), number + 1);
        };
        if label.trim().is_empty() {
            bail!("{}:{}: empty label", shown(path), number + 1);
        }
        rows.push((base.join(file.trim()), label.trim().to_string()));
    }
    if rows.is_empty() {
        bail!("{}: no rows", shown(path));
    }
    Ok(rows)
}

pub fn run(args: ExtractArgs) -> Result<Outcome> {
    let mut inputs: Vec<&Path> = args.manifest.iter().map(PathBuf::as_path).collect();
    inputs.extend(args.extractor.model.as_deref());
    for file in [
        FEATURES_FILE,
        LABELS_FILE,
        CLASSES_FILE,
        PATHS_FILE,
        EXTRACTOR_FILE,
    ] {
        crate::outputs::check_output(&args.out.join(file), None, &inputs)?;
    }
    // Folders inside that cannot be listed are named and count as skipped inputs (exit 3).
    let mut unlisted = 0;
    let rows: Vec<(PathBuf, String)> = match (&args.images, &args.manifest) {
        (Some(dir), _) => {
            let walked = crate::walk::walk(std::slice::from_ref(dir), true)?;
            crate::walk::name_skipped(&walked.unlisted);
            unlisted = walked.unlisted.len();
            walked.files
        }
        .into_iter()
        .filter_map(|path| {
            let label = milan::ingest::parent_label(&path)?;
            Some((path, label))
        })
        .collect(),
        (_, Some(manifest)) => read_manifest(manifest)?,
        _ => unreachable!("clap requires a source"),
    };
    if rows.is_empty() {
        bail!("no images found");
    }
    // A path that is not UTF-8 could not be named again by its key: skipped before its folder's
    // name becomes a class.
    let mut failed = unlisted;
    let rows: Vec<(PathBuf, String)> = rows
        .into_iter()
        .filter(|(path, _)| {
            let named = path.to_str().is_some();
            if !named {
                eprintln!("skipped {}: {}", shown(path), SkipReason::NameNotUtf8);
                failed += 1;
            }
            named
        })
        .collect();
    if rows.is_empty() {
        bail!("no image has a name that is valid UTF-8");
    }
    let mut extractor = args.extractor.open(None)?;
    let contract = extractor.contract().clone();
    // Absolute paths, as `index add` stores them: reports can show the images from anywhere.
    let paths: Vec<PathBuf> = rows
        .iter()
        .map(|(path, _)| std::path::absolute(path).unwrap_or_else(|_| path.clone()))
        .collect();
    let classes: Vec<String> = rows
        .iter()
        .map(|(_, label)| label.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let class_index: BTreeMap<&str, i64> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as i64))
        .collect();
    let bar = progress::bar(paths.len() as u64, "extracting", args.quiet);
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut keys = Vec::new();
    let batch_size = args
        .batch_size
        .map_or_else(|| extractor.default_batch_size(), |n| n as usize);
    extract_files(
        &mut extractor,
        &paths,
        batch_size,
        &HashSet::new(),
        &ReadOptions {
            lenient: args.lenient,
        },
        &AtomicBool::new(false),
        |batch| {
            for extracted in batch {
                bar.inc(1);
                match extracted.outcome {
                    FileOutcome::Features { features: row, .. } => {
                        // The pipeline skips paths that are not UTF-8; keys are the paths exactly.
                        let Some(key) = extracted.path.to_str() else {
                            bar.suspend(|| {
                                eprintln!(
                                    "skipped {}: {}",
                                    shown(&extracted.path),
                                    SkipReason::NameNotUtf8
                                )
                            });
                            failed += 1;
                            continue;
                        };
                        features.extend_from_slice(&row);
                        labels.push(class_index[rows[extracted.position].1.as_str()]);
                        keys.push(key.to_string());
                    }
                    FileOutcome::Failed(reason) => {
                        bar.suspend(|| {
                            eprintln!(
                                "skipped {}: {}",
                                shown(&extracted.path),
                                for_terminal(&reason.to_string())
                            )
                        });
                        failed += 1;
                    }
                    FileOutcome::Known { .. } => unreachable!("nothing is known"),
                }
            }
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    if keys.is_empty() {
        bail!("no image could be decoded");
    }
    let dim = contract.dim as usize;
    let written = keys.len();
    let dataset = Dataset {
        features: Array2::from_shape_vec((written, dim), features)?,
        labels,
        classes: classes.clone(),
        keys,
        extractor: Some(contract),
    };
    dataset.save(&args.out)?;
    outln!(
        "wrote {written} feature vectors ({dim} values, {} classes) to {} on {}; {failed} images skipped",
        classes.len(),
        shown(&args.out),
        extractor.device()
    )?;
    Ok(if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}
