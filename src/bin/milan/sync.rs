//! `milan index sync`: brings an image index in line with folders (adds, deletes, re-keys moved
//! files, re-codes changed ones), or with --dry-run shows what it would do.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use milan::ingest::IngestOptions;
use milan::sync::{RemovalReason, SyncPlan, SyncReport};
use milan::text::for_terminal;
use milan::Index;

use crate::extractor_args::ExtractorArgs;
use crate::walk::{collect, shown, FILES_HELP};
use crate::{progress, Outcome};

/// How sync decides, below the options.
const SYNC_HELP: &str = "\
Sync: only items whose keys are paths inside the folders are touched; the folders are walked \
recursively and every file hashed (BLAKE3). An item whose file is unchanged is left alone. When \
an item's file is gone and its content turns up at a path no item holds, the item is re-keyed to \
that path (same id and code, no model run). A file whose content changed is coded again (its old \
item deleted, its label and metadata kept). A new file is added. An item whose file is gone is \
deleted. Content is indexed once, as with `index add`: a file whose content is already indexed \
under another path (a copy under a second name) is counted as a duplicate and not added. A file \
that exists but cannot be read keeps its item. A folder that is missing is an error, never taken \
for an empty one. Deletes and re-keys commit first, then new codes every --commit-every files \
(each changed file's old item deleted in the same transaction): an interrupted sync keeps whole \
transactions, and running it again finishes the job.";

#[derive(Args)]
#[command(after_help = format!("{SYNC_HELP}\n\n{FILES_HELP}"))]
pub struct SyncArgs {
    /// The index directory (an image index).
    dir: PathBuf,
    /// The folders to sync with, walked recursively; items outside them are never touched.
    #[arg(required = true)]
    folders: Vec<PathBuf>,
    /// Show what would change, and change nothing (the index is opened read-only and no model
    /// runs).
    #[arg(long)]
    dry_run: bool,
    /// Label added, re-coded and moved images with their parent folder's name (otherwise added
    /// images get no label and the others keep theirs).
    #[arg(long)]
    label_from_dir: bool,
    /// Keep the feature vectors of the images coded, so that a new head can re-code them later.
    #[arg(long)]
    keep_features: bool,
    /// Accept truncated JPEGs (data ending before the end-of-image marker), whose missing part
    /// the decoder fills in grey; by default they are skipped as truncated.
    #[arg(long)]
    lenient: bool,
    /// Images per model run.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: u64,
    /// Changes per commit (deletes and re-keys, then added images): an interrupted run loses at
    /// most this many.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    commit_every: u64,
    /// Print a JSON summary instead of text (counts by action; skipped files under `failed`,
    /// counted by reason under `failed_by_reason`; with --dry-run, the whole plan under `plan`).
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    extractor: ExtractorArgs,
}

pub fn run(args: SyncArgs) -> Result<Outcome> {
    let index = if args.dry_run {
        Index::open_read_only(&args.dir)?
    } else {
        Index::open(&args.dir)?
    };
    let Some(model) = index.model().cloned() else {
        bail!(
            "{} stores codes only; only an image index (`milan index create DIR --model M.onnx --head H`) can be synced with folders",
            shown(&args.dir)
        );
    };
    let mut folders = Vec::with_capacity(args.folders.len());
    for folder in &args.folders {
        let Some(metadata) = std::fs::metadata(folder).ok().filter(|m| m.is_dir()) else {
            bail!(
                "{}: not a folder; sync takes folders (use `milan index add` for single files), and a missing folder is never taken for an empty one",
                shown(folder)
            );
        };
        folders.push(plain_folder(folder, &metadata));
    }
    let files = collect(&folders, true)?;
    // The model is opened before hours of hashing could be wasted on a model that will not load.
    let mut extractor = if args.dry_run {
        None
    } else {
        Some(args.extractor.open(Some(&model))?)
    };
    // Ctrl-C stops after the step in hand; what was done is committed.
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let quiet = args.quiet || args.json;

    let bar = progress::bar(files.len() as u64, "hashing", quiet);
    let plan = SyncPlan::new(
        &index,
        &folders,
        &files,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
        &cancel,
    )?;
    bar.finish_and_clear();
    if plan.cancelled {
        if !args.json {
            outln!("interrupted while comparing files: nothing was changed")?;
        }
        return Ok(Outcome::Success);
    }

    let report = match extractor.as_mut() {
        None => plan.report(),
        Some(extractor) => {
            if !quiet {
                eprintln!(
                    "running {} on {}",
                    for_terminal(&model.path),
                    extractor.device()
                );
            }
            let coding = plan.recodes.len() + plan.adds.len();
            let bar = progress::bar(coding as u64, "coding", quiet);
            let options = IngestOptions {
                batch_size: args.batch_size as usize,
                commit_every: args.commit_every as usize,
                label_from_dir: args.label_from_dir,
                keep_features: args.keep_features,
                lenient: args.lenient,
            };
            let report = plan.apply(
                &index,
                extractor,
                &options,
                &mut |done, _| bar.set_position(done as u64),
                &cancel,
            )?;
            bar.finish_and_clear();
            report
        }
    };

    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if args.dry_run {
            value["plan"] = serde_json::to_value(&plan)?;
        }
        outln!("{value}")?;
    } else {
        for failed in &report.failed {
            eprintln!(
                "skipped {}: {}",
                shown(&failed.path),
                for_terminal(&failed.detail)
            );
        }
        if args.dry_run {
            print_plan(&plan)?;
        }
        print_summary(&args, &report)?;
    }
    Ok(if report.failed.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

/// `folder` as an absolute path without `.` and `..`, when that names the same folder (a link
/// before a `..` can make it another), so that keys are plain paths; else absolute as given.
fn plain_folder(folder: &Path, metadata: &std::fs::Metadata) -> PathBuf {
    let absolute = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
    let mut plain = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !plain.pop() {
                    return absolute;
                }
            }
            other => plain.push(other),
        }
    }
    if plain != absolute && same_folder(&plain, metadata) {
        plain
    } else {
        absolute
    }
}

#[cfg(unix)]
fn same_folder(path: &Path, metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == (metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn same_folder(_: &Path, _: &std::fs::Metadata) -> bool {
    // No cheap identity to compare: the path stays as given.
    false
}

/// The plan, one line per change, for --dry-run.
fn print_plan(plan: &SyncPlan) -> Result<()> {
    for moved in &plan.moves {
        outln!(
            "move {} -> {}",
            for_terminal(&moved.from),
            for_terminal(&moved.to)
        )?;
    }
    for removal in &plan.deletes {
        let why = match removal.reason {
            RemovalReason::Gone => "file gone",
            RemovalReason::Stale => "its file now holds content indexed elsewhere",
        };
        outln!("delete {} ({why})", for_terminal(&removal.key))?;
    }
    for recode in &plan.recodes {
        outln!("re-code {}", for_terminal(&recode.path))?;
    }
    for add in &plan.adds {
        outln!("add {}", for_terminal(add))?;
    }
    for duplicate in &plan.duplicates {
        match &duplicate.of {
            Some(of) => outln!(
                "duplicate {} (its content is indexed as {})",
                for_terminal(&duplicate.path),
                for_terminal(of)
            )?,
            None => outln!(
                "duplicate {} (its content is indexed)",
                for_terminal(&duplicate.path)
            )?,
        }
    }
    Ok(())
}

fn print_summary(args: &SyncArgs, report: &SyncReport) -> Result<()> {
    let counts = format!(
        "{} added, {} re-coded, {} moved, {} deleted, {} unchanged, {} duplicates, {} failed",
        report.added,
        report.recoded,
        report.moved,
        report.deleted,
        report.unchanged,
        report.duplicates,
        report.failed.len()
    );
    if report.dry_run {
        outln!(
            "dry run, nothing changed in {}: would be {counts}",
            shown(&args.dir)
        )?;
    } else {
        outln!(
            "synced {} in {:.1} s on {}: {counts}",
            shown(&args.dir),
            report.seconds,
            report.device
        )?;
    }
    for (reason, count) in &report.failed_by_reason {
        outln!("  {count} {reason}")?;
    }
    if report.cancelled {
        outln!("interrupted: everything done so far is committed; run the same command again to finish")?;
    }
    Ok(())
}
