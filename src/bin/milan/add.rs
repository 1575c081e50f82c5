//! `milan index add`: images (files, or folders with --recursive) into an image index.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use milan::ingest::{add_images, IngestOptions};
use milan::Index;

use crate::extractor_args::ExtractorArgs;
use crate::{progress, Outcome};

/// File extensions taken when walking folders; files named explicitly are always tried.
const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "tif", "tiff", "webp", "bmp", "gif", "jfif",
];

#[derive(Args)]
pub struct AddArgs {
    /// The index directory.
    dir: PathBuf,
    /// Image files or folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Walk folders recursively (otherwise only the images directly inside).
    #[arg(long, short)]
    recursive: bool,
    /// Label each image with its parent folder's name.
    #[arg(long)]
    label_from_dir: bool,
    /// Keep each image's feature vector, so that a new head can re-code the index later.
    #[arg(long)]
    keep_features: bool,
    /// Images per model run.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: u64,
    /// Images per commit: an interrupted run loses at most this many.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    commit_every: u64,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    extractor: ExtractorArgs,
}

/// The image files under `paths`, sorted within each folder, each file once.
pub fn collect(paths: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    for path in paths {
        let metadata =
            std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
        if metadata.is_dir() {
            walk(path, recursive, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    files.retain(|file| seen.insert(std::path::absolute(file).unwrap_or_else(|_| file.clone())));
    Ok(files)
}

fn walk(dir: &Path, recursive: bool, files: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            if recursive {
                walk(&entry, recursive, files)?;
            }
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            files.push(entry);
        }
    }
    Ok(())
}

pub fn run(args: AddArgs) -> Result<Outcome> {
    let index = Index::open(&args.dir)?;
    let Some(model) = index.model().cloned() else {
        bail!(
            "{} stores codes only; create an image index with `milan index create DIR --model M.onnx --head H`",
            args.dir.display()
        );
    };
    let files: Vec<PathBuf> = collect(&args.paths, args.recursive)?
        .into_iter()
        .map(|file| std::path::absolute(&file).unwrap_or(file))
        .collect();
    let mut extractor = args.extractor.open(Some(&model))?;
    if !args.quiet && !args.json {
        eprintln!("running {} on {}", model.path, extractor.device());
    }
    // Ctrl-C stops after the batch in hand; what was done is committed.
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let bar = progress::bar(files.len() as u64, "adding", args.quiet || args.json);
    let options = IngestOptions {
        batch_size: args.batch_size as usize,
        commit_every: args.commit_every as usize,
        label_from_dir: args.label_from_dir,
        keep_features: args.keep_features,
    };
    let report = add_images(
        &index,
        &mut extractor,
        &files,
        &options,
        &mut |done, _| bar.set_position(done as u64),
        &cancel,
    )?;
    bar.finish_and_clear();
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        for failed in &report.failed {
            eprintln!("skipped {}: {}", failed.path.display(), failed.detail);
        }
        let rate = report.added as f64 / report.seconds.max(1e-9);
        outln!(
            "added {} images to {} in {:.1} s ({rate:.1} images/s on {}); {} already indexed, {} duplicates, {} failed",
            report.added,
            args.dir.display(),
            report.seconds,
            report.device,
            report.already_indexed,
            report.duplicates,
            report.failed.len()
        )?;
        for (reason, count) in &report.failed_by_reason {
            outln!("  {count} {reason}")?;
        }
        if report.cancelled {
            outln!("interrupted: everything added so far is committed; run the same command again to finish")?;
        }
    }
    Ok(if report.failed.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}
