//! `milan index sync`: brings an image index in line with folders (adds, deletes, re-keys moved
//! files, re-codes changed ones), or with --dry-run shows what it would do.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use milan::ingest::key_path;
use milan::sync::{RemovalReason, SyncPlan, SyncReport};
use milan::text::for_terminal;

use crate::add::IngestArgs;
use crate::walk::{name_skipped, shown, walk, FILES_HELP};
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
that exists but cannot be read keeps its item, as do the items under a folder inside that cannot \
be listed (it is named, and the exit status is 3). A folder named that is missing is an error, \
never taken for an empty one. Keys holding `..` are matched as the paths they name, and re-keyed \
to the plain spelling `index add` stores. Feature vectors are kept, as by --keep-features, when \
the index keeps them. Deletes and re-keys commit first, then new codes every --commit-every files \
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
    #[command(flatten)]
    ingest: IngestArgs,
}

pub fn run(args: SyncArgs) -> Result<Outcome> {
    let SyncArgs {
        dir,
        folders: named,
        dry_run,
        ingest: args,
    } = args;
    let index = if dry_run {
        crate::open::read_only(&dir)?
    } else {
        crate::open::writable(&dir)?
    };
    let Some(model) = index.model().cloned() else {
        bail!(
            "{} stores codes only; only an image index (`milan index create DIR --model M.onnx --head H`) can be synced with folders",
            shown(&dir)
        );
    };
    let mut folders = Vec::with_capacity(named.len());
    for folder in &named {
        if !std::fs::metadata(folder).is_ok_and(|m| m.is_dir()) {
            bail!(
                "{}: not a folder; sync takes folders (use `milan index add` for single files), and a missing folder is never taken for an empty one",
                shown(folder)
            );
        }
        // Keys are spelled as `index add` spells them.
        folders.push(key_path(folder));
    }
    let mut walked = walk(&folders, true)?;
    let files = std::mem::take(&mut walked.files);
    // The model is opened before hours of hashing could be wasted on a model that will not load.
    let mut extractor = if dry_run {
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

    let mut report = match extractor.as_mut() {
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
            let options = args.options(&index, extractor)?;
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

    walked.report_unlisted(&mut report.failures);

    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if dry_run {
            value["plan"] = serde_json::to_value(&plan)?;
        }
        outln!("{value}")?;
    } else {
        name_skipped(&report.failures.failed);
        if dry_run {
            print_plan(&plan)?;
        }
        print_summary(&dir, &report)?;
    }
    Ok(if report.failures.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
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

fn print_summary(dir: &std::path::Path, report: &SyncReport) -> Result<()> {
    let counts = format!(
        "{} added, {} re-coded, {} moved, {} deleted, {} unchanged, {} duplicates, {} failed",
        report.added,
        report.recoded,
        report.moved,
        report.deleted,
        report.unchanged,
        report.duplicates,
        report.failures.len()
    );
    if report.dry_run {
        outln!(
            "dry run, nothing changed in {}: would be {counts}",
            shown(dir)
        )?;
    } else {
        outln!(
            "synced {} in {:.1} s on {}: {counts}",
            shown(dir),
            report.seconds,
            report.device
        )?;
    }
    for (reason, count) in &report.failures.failed_by_reason {
        outln!("  {count} {reason}")?;
    }
    if report.cancelled {
        outln!("interrupted: everything done so far is committed; run the same command again to finish")?;
    }
    Ok(())
}
