//! `milan index add`: images (files, or folders with --recursive) into an image index.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use milan::extract::Extractor;
use milan::ingest::{add_images, keeps_features, key_path, IngestOptions};
use milan::text::for_terminal;
use milan::Index;

use crate::extractor_args::ExtractorArgs;
use crate::walk::{name_skipped, shown, walk, FILES_HELP};
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
    #[command(flatten)]
    ingest: IngestArgs,
}

/// How images are coded and reported, shared by `index add` and `index sync`.
#[derive(Args)]
pub struct IngestArgs {
    /// Label each image coded with its parent folder's name (`index sync`: moved images too;
    /// without it, added images get no label and the others keep theirs).
    #[arg(long)]
    pub label_from_dir: bool,
    /// Keep each coded image's feature vector, so that a new head can re-code the index later
    /// (`index rehash`). Implied when the index already keeps features (its latest item has
    /// them), so that one run without the flag cannot leave items rehash refuses.
    #[arg(long)]
    pub keep_features: bool,
    /// Accept truncated JPEGs (data ending before the end-of-image marker), whose missing part
    /// the decoder fills in grey; by default they are skipped as truncated.
    #[arg(long)]
    pub lenient: bool,
    /// Images per model run [default: by device: 16 on the CPU; on a GPU 256 with 40 GiB of
    /// memory or more, 128 from 16 GiB, else 64].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch_size: Option<u64>,
    /// Changes per commit (images added; for `index sync`, first deletes and re-keys, then
    /// images coded): an interrupted run loses at most this many.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_every: u64,
    /// Print a JSON summary instead of text (skipped files, folders that could not be listed
    /// included, under `failed`, counted by reason under `failed_by_reason`; `index sync` counts
    /// by action, and with --dry-run gives the whole plan under `plan`).
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub extractor: ExtractorArgs,
}

impl IngestArgs {
    /// The options for the library, keeping features when asked or when `index` keeps them.
    pub fn options(&self, index: &Index, extractor: &Extractor) -> Result<IngestOptions> {
        Ok(IngestOptions {
            batch_size: self
                .batch_size
                .map_or_else(|| extractor.default_batch_size(), |n| n as usize),
            commit_every: self.commit_every as usize,
            label_from_dir: self.label_from_dir,
            keep_features: self.keep_features || keeps_features(index)?,
            lenient: self.lenient,
        })
    }
}

pub fn run(args: AddArgs) -> Result<Outcome> {
    let AddArgs {
        dir,
        paths,
        recursive,
        ingest: args,
    } = args;
    let index = crate::open::writable(&dir)?;
    let Some(model) = index.model().cloned() else {
        bail!(
            "{} stores codes only; create an image index with `milan index create DIR --model M.onnx --head H`",
            shown(&dir)
        );
    };
    // Keys are spelled as sync spells them: absolute, `..` resolved where it names the same file.
    let roots: Vec<PathBuf> = paths.iter().map(|path| key_path(path)).collect();
    let mut walked = walk(&roots, recursive)?;
    let files = std::mem::take(&mut walked.files);
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
    let options = args.options(&index, &extractor)?;
    let mut report = add_images(
        &index,
        &mut extractor,
        &files,
        &options,
        &mut |done, _| bar.set_position(done as u64),
        &cancel,
    )?;
    bar.finish_and_clear();
    walked.report_unlisted(&mut report.failures);
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        name_skipped(&report.failures.failed);
        let rate = report.added as f64 / report.seconds.max(1e-9);
        outln!(
            "added {} images to {} in {:.1} s ({rate:.1} images/s on {}); {} already indexed, {} duplicates, {} failed",
            report.added,
            shown(&dir),
            report.seconds,
            report.device,
            report.already_indexed,
            report.duplicates,
            report.failures.len()
        )?;
        for (reason, count) in &report.failures.failed_by_reason {
            outln!("  {count} {reason}")?;
        }
        if report.cancelled {
            outln!("interrupted: everything added so far is committed; run the same command again to finish")?;
        }
    }
    Ok(if report.failures.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}
