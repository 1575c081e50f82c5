//! `milan index add`: images (files, or folders with --recursive) into an image index.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use milan::ingest::{add_images, IngestOptions};
use milan::text::for_terminal;
use milan::Index;

use crate::extractor_args::ExtractorArgs;
use crate::walk::{collect, shown, FILES_HELP};
use crate::{progress, Outcome};

#[derive(Args)]
#[command(after_help = FILES_HELP)]
pub struct AddArgs {
    /// The index directory.
    dir: PathBuf,
    /// Image files or folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Walk folders recursively (otherwise only the images directly inside), following links
    /// but each folder once.
    #[arg(long, short)]
    recursive: bool,
    /// Label each image with its parent folder's name.
    #[arg(long)]
    label_from_dir: bool,
    /// Keep each image's feature vector, so that a new head can re-code the index later.
    #[arg(long)]
    keep_features: bool,
    /// Accept truncated JPEGs (data ending before the end-of-image marker), whose missing part
    /// the decoder fills in grey; by default they are skipped as truncated.
    #[arg(long)]
    lenient: bool,
    /// Images per model run.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: u64,
    /// Images per commit: an interrupted run loses at most this many.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    commit_every: u64,
    /// Print a JSON summary instead of text (skipped files under `failed`, counted by reason
    /// under `failed_by_reason`).
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    extractor: ExtractorArgs,
}

pub fn run(args: AddArgs) -> Result<Outcome> {
    let index = Index::open(&args.dir)?;
    let Some(model) = index.model().cloned() else {
        bail!(
            "{} stores codes only; create an image index with `milan index create DIR --model M.onnx --head H`",
            shown(&args.dir)
        );
    };
    let files: Vec<PathBuf> = collect(&args.paths, args.recursive)?
        .into_iter()
        .map(|file| std::path::absolute(&file).unwrap_or(file))
        .collect();
    let mut extractor = args.extractor.open(Some(&model))?;
    if !args.quiet && !args.json {
        eprintln!(
            "running {} on {}",
            for_terminal(&model.path),
            extractor.device()
        );
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
        lenient: args.lenient,
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
            eprintln!(
                "skipped {}: {}",
                shown(&failed.path),
                for_terminal(&failed.detail)
            );
        }
        let rate = report.added as f64 / report.seconds.max(1e-9);
        outln!(
            "added {} images to {} in {:.1} s ({rate:.1} images/s on {}); {} already indexed, {} duplicates, {} failed",
            report.added,
            shown(&args.dir),
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
