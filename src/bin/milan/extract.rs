//! `milan extract`: features of a labelled image set, for training and evaluation.
//!
//! Writes DATA/features.npy (float32 [n, d]), DATA/labels.npy (int64 [n]), DATA/classes.txt (one
//! class name per line, label i on line i), DATA/paths.txt (one image per line, row order) and
//! DATA/extractor.json (the extractor contract and fingerprint); `milan::dataset` has the layout.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use milan::dataset::Dataset;
use milan::extract::pipeline::{extract_files, FileOutcome};
use ndarray::Array2;

use crate::extractor_args::ExtractorArgs;
use crate::{progress, Outcome};

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["images", "manifest"])))]
pub struct ExtractArgs {
    /// A folder of images, one subfolder per class (the folder name is the label).
    #[arg(long, requires = "label_from_dir")]
    images: Option<PathBuf>,
    /// Label each image with its parent folder's name (required with --images).
    #[arg(long)]
    label_from_dir: bool,
    /// A CSV file of `path,label` rows (no header; paths relative to the file's folder).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Images per model run.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: u64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    extractor: ExtractorArgs,
}

/// `(path, label)` pairs from the manifest.
fn read_manifest(path: &Path) -> Result<Vec<(PathBuf, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((file, label)) = line.rsplit_once(',') else {
            bail!("{}:{}: expected `path,label`", path.display(), number + 1);
        };
        if label.trim().is_empty() {
            bail!("{}:{}: empty label", path.display(), number + 1);
        }
        rows.push((base.join(file.trim()), label.trim().to_string()));
    }
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(rows)
}

pub fn run(args: ExtractArgs) -> Result<Outcome> {
    let rows: Vec<(PathBuf, String)> = match (&args.images, &args.manifest) {
        (Some(dir), _) => crate::add::collect(std::slice::from_ref(dir), true)?
            .into_iter()
            .filter_map(|path| {
                let label = path.parent()?.file_name()?.to_string_lossy().into_owned();
                Some((path, label))
            })
            .collect(),
        (_, Some(manifest)) => read_manifest(manifest)?,
        _ => unreachable!("clap requires a source"),
    };
    if rows.is_empty() {
        bail!("no images found");
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
    let mut kept_paths = Vec::new();
    let mut failed = 0;
    extract_files(
        &mut extractor,
        &paths,
        args.batch_size as usize,
        &HashSet::new(),
        &AtomicBool::new(false),
        |batch| {
            for extracted in batch {
                match extracted.outcome {
                    FileOutcome::Features { features: row, .. } => {
                        features.extend_from_slice(&row);
                        labels.push(class_index[rows[extracted.position].1.as_str()]);
                        kept_paths.push(extracted.path);
                    }
                    FileOutcome::Failed(reason) => {
                        bar.suspend(|| eprintln!("skipped {}: {reason}", extracted.path.display()));
                        failed += 1;
                    }
                    FileOutcome::Known { .. } => unreachable!("nothing is known"),
                }
                bar.inc(1);
            }
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    if kept_paths.is_empty() {
        bail!("no image could be decoded");
    }
    let dim = contract.dim as usize;
    let dataset = Dataset {
        features: Array2::from_shape_vec((kept_paths.len(), dim), features)?,
        labels,
        classes: classes.clone(),
        keys: kept_paths.iter().map(|p| p.display().to_string()).collect(),
        extractor: Some(contract),
    };
    dataset.save(&args.out)?;
    outln!(
        "wrote {} feature vectors ({dim} values, {} classes) to {} on {}; {failed} images skipped",
        kept_paths.len(),
        classes.len(),
        args.out.display(),
        extractor.device()
    )?;
    Ok(if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}
