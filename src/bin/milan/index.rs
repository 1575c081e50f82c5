//! `milan index ...`: create, import, export, info, check, delete, optimize.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use milan::report::write_atomically;
use milan::text::{escape_line, for_terminal};
use milan::WriteError;
use milan::{HashHead, Index};

use crate::add::AddArgs;
use crate::codes_file::write_codes;
use crate::extractor_args::ExtractorArgs;
use crate::import::ImportArgs;
use crate::outputs::check_output;
use crate::Outcome;

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Create an empty index: for codes of a given length, or for images with a model and a head.
    Create(CreateArgs),
    /// Add images (files or folders) through the index's model and hash head.
    Add(AddArgs),
    /// Add codes from a numpy file (uint8 [n, bits/8], numpy.packbits order), with optional keys.
    Import(ImportArgs),
    /// Merge the shards of a sharded ingest (`python -m milan.ray ingest`) into an image index
    /// created with the same model and head; shards imported before are skipped.
    ImportShards(crate::shards::ImportShardsArgs),
    /// Write every live code (and key) out, in id order; `import` reads the result back.
    Export(ExportArgs),
    /// Show the index's layout, size and versions.
    Info(InfoArgs),
    /// Verify every invariant of the stored index; exit 0 only when all hold.
    Check(DirArgs),
    /// Convert an index of an older format version to the current one, in one transaction (any
    /// command that writes to an index does the same first).
    Upgrade(DirArgs),
    /// Delete codes by id or by key (every id and key must be found, or nothing is deleted).
    Delete(DeleteArgs),
    /// Rebuild the hash tables for a better number of substrings, in one transaction.
    Optimize(OptimizeArgs),
    /// Give the space that earlier commits freed back to the file system (needs no reader open,
    /// in any process).
    Compact(DirArgs),
    /// Re-code every image from its kept features with a new hash head, in one transaction.
    Rehash(RehashArgs),
    /// Find near-duplicate images or codes: every pair within a Hamming radius, in groups.
    Duplicates(crate::duplicates::DuplicatesArgs),
    /// Bring an image index in line with folders: add new files, delete gone ones, re-key moved
    /// ones, re-code changed ones.
    Sync(crate::sync::SyncArgs),
}

#[derive(Args)]
pub struct RehashArgs {
    /// The index directory (its images must have been added with --keep-features).
    dir: PathBuf,
    /// The new hash head (from `milan train`), made for the index's extractor.
    #[arg(long)]
    head: PathBuf,
}

#[derive(Args)]
pub struct DirArgs {
    /// The index directory.
    pub dir: PathBuf,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["bits", "head"])))]
pub struct CreateArgs {
    /// The index directory (created if missing).
    dir: PathBuf,
    /// Code length in bits, for a code-only index: a multiple of 8 from 8 to 1024.
    #[arg(long)]
    bits: Option<u32>,
    /// The hash head file, for an image index (needs --model; the head sets the code length).
    #[arg(long, requires = "model")]
    head: Option<PathBuf>,
    #[command(flatten)]
    extractor: ExtractorArgs,
    /// Multi-index-hashing substrings [default: about bits / log2(expected size)].
    #[arg(long)]
    substrings: Option<u32>,
    /// Number of codes expected, which sets the default number of substrings.
    #[arg(long, default_value_t = milan::DEFAULT_EXPECTED_LEN)]
    expected_size: u64,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The index directory.
    dir: PathBuf,
    /// Output codes file (.npy).
    #[arg(long)]
    codes: PathBuf,
    /// Output keys file, one line per code: an empty line where a code has no key; a key's
    /// backslash, line feed and carriage return written `\\`, `\n` and `\r`.
    #[arg(long)]
    keys: Option<PathBuf>,
}

#[derive(Args)]
pub struct InfoArgs {
    /// The index directory.
    dir: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["ids", "keys"])))]
pub struct DeleteArgs {
    /// The index directory.
    dir: PathBuf,
    /// Ids to delete.
    #[arg(long = "id", num_args = 1..)]
    ids: Vec<u64>,
    /// Keys whose items to delete (every item stored under each key; keys need not be unique).
    #[arg(long = "key", num_args = 1..)]
    keys: Vec<String>,
}

#[derive(Args)]
pub struct OptimizeArgs {
    /// The index directory.
    dir: PathBuf,
    /// Substrings to rebuild for [default: the recommended number for the current size].
    #[arg(long)]
    substrings: Option<u32>,
}

pub fn run(command: IndexCommand) -> Result<Outcome> {
    match command {
        IndexCommand::Create(args) => create(args),
        IndexCommand::Add(args) => crate::add::run(args),
        IndexCommand::Import(args) => crate::import::run(args),
        IndexCommand::ImportShards(args) => crate::shards::run(args),
        IndexCommand::Export(args) => export(args),
        IndexCommand::Info(args) => info(args),
        IndexCommand::Check(args) => check(args),
        IndexCommand::Upgrade(args) => upgrade(args),
        IndexCommand::Delete(args) => delete(args),
        IndexCommand::Optimize(args) => optimize(args),
        IndexCommand::Compact(args) => compact(args),
        IndexCommand::Rehash(args) => rehash(args),
        IndexCommand::Duplicates(args) => crate::duplicates::run(args),
        IndexCommand::Sync(args) => crate::sync::run(args),
    }
}

fn create(args: CreateArgs) -> Result<Outcome> {
    let (bits, images) = match &args.head {
        Some(head_path) => {
            let head = HashHead::read(head_path)?;
            let extractor = args.extractor.open(None)?;
            let mut model = extractor.contract().clone();
            model.path = std::path::absolute(&model.path)
                .unwrap_or_else(|_| model.path.clone().into())
                .display()
                .to_string();
            (
                head.bits(),
                Some((model, head, extractor.device().to_string())),
            )
        }
        None => (args.bits.expect("clap requires --bits or --head"), None),
    };
    let mut builder = Index::builder(bits).expected_len(args.expected_size);
    if let Some((model, head, _)) = &images {
        builder = builder.images(model.clone(), head.clone());
    }
    if let Some(m) = args.substrings {
        builder = builder.substrings(m);
    }
    let index = crate::open::settings(builder).create(&args.dir)?;
    outln!(
        "created {} for {}-bit codes with {} substrings",
        args.dir.display(),
        index.bits(),
        index.substrings()
    )?;
    if let (Some(model), Some(head)) = (index.model(), index.head()) {
        outln!(
            "images go through {} (output {:?}, {} features, {}x{} {} input, pixels {}) and a {} head",
            model.path,
            model.output,
            model.dim,
            model.size,
            model.size,
            model.layout,
            model.pixel_range,
            head.kind()
        )?;
    }
    Ok(Outcome::Success)
}

fn export(args: ExportArgs) -> Result<Outcome> {
    check_output(&args.codes, Some(&args.dir), &[])?;
    if let Some(keys) = &args.keys {
        // The codes file counts as an input here, so that one path for both is refused.
        check_output(keys, Some(&args.dir), &[&args.codes])?;
    }
    let index = crate::open::read_only(&args.dir)?;
    let reader = index.reader()?;
    let bytes_per_code = reader.bits() as usize / 8;
    let mut codes = Vec::with_capacity(reader.len() as usize * bytes_per_code);
    let mut keys = String::new();
    for id in reader.ids() {
        let code = reader.code(id).expect("live id");
        codes.extend_from_slice(code.as_bytes());
        if args.keys.is_some() {
            if let Some(key) = reader.item(id)?.and_then(|item| item.key) {
                keys.push_str(&escape_line(&key));
            }
            keys.push('\n');
        }
    }
    write_codes(&args.codes, bytes_per_code, &codes)?;
    if let Some(path) = &args.keys {
        write_atomically(path, keys.as_bytes())?;
    }
    outln!(
        "exported {} codes to {}",
        reader.len(),
        args.codes.display()
    )?;
    Ok(Outcome::Success)
}

fn info(args: InfoArgs) -> Result<Outcome> {
    let index = crate::open::read_only(&args.dir)?;
    let info = index.info();
    if args.json {
        outln!("{}", serde_json::to_string(&info)?)?;
        return Ok(Outcome::Success);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "index:          {}", info.path.display())?;
    writeln!(out, "format version: {}", info.format_version)?;
    writeln!(out, "code length:    {} bits", info.bits)?;
    writeln!(
        out,
        "substrings:     {} (recommended for this size: {})",
        info.substrings, info.recommended_substrings
    )?;
    writeln!(
        out,
        "codes:          {} (next id {})",
        info.len, info.next_id
    )?;
    writeln!(out, "file size:      {} bytes", info.file_bytes)?;
    writeln!(out, "memory:         {} bytes", info.memory_bytes)?;
    writeln!(out, "created by:     milan {}", info.created_by)?;
    writeln!(out, "written by:     milan {}", info.written_by)?;
    Ok(Outcome::Success)
}

fn check(args: DirArgs) -> Result<Outcome> {
    let report = crate::open::settings(milan::IndexBuilder::default()).verify_dir(&args.dir)?;
    if report.storage_ok == Some(false) {
        outln!("storage: redb found structural damage and repaired it")?;
    }
    for problem in &report.problems {
        outln!("problem: {problem}")?;
    }
    if report.unlisted > 0 {
        outln!("... and {} more problems", report.unlisted)?;
    }
    if report.is_ok() {
        outln!(
            "{}: ok ({} codes, {} hash table parts)",
            args.dir.display(),
            report.codes,
            report.chunks
        )?;
        Ok(Outcome::Success)
    } else {
        outln!("{}: damaged", args.dir.display())?;
        Ok(Outcome::Failed)
    }
}

fn delete(mut args: DeleteArgs) -> Result<Outcome> {
    args.ids.sort_unstable();
    args.ids.dedup();
    args.keys.sort_unstable();
    args.keys.dedup();
    let index = crate::open::writable(&args.dir)?;
    let mut writer = index.writer()?;
    let mut deleted = 0;
    for &id in &args.ids {
        if !writer.delete(id)? {
            bail!(
                "no item with id {id} in {}; nothing deleted",
                args.dir.display()
            );
        }
        deleted += 1;
    }
    for key in &args.keys {
        // A key whose items an --id above deleted already counts as found.
        let ids = writer.delete_key(key)?;
        if ids.is_empty() && !was_deleted_by_id(&index, key, &args.ids)? {
            bail!(
                "no item with key {:?} in {}; nothing deleted",
                for_terminal(key),
                args.dir.display()
            );
        }
        deleted += ids.len();
    }
    writer.commit()?;
    outln!("deleted {deleted} codes; {} remain", index.len())?;
    Ok(Outcome::Success)
}

/// Whether an item stored under `key` is among `ids` (all deleted by the same command).
fn was_deleted_by_id(index: &Index, key: &str, ids: &[u64]) -> Result<bool> {
    let stored = index.reader()?.ids_with_key(key)?;
    Ok(stored.iter().any(|id| ids.binary_search(id).is_ok()))
}

fn upgrade(args: DirArgs) -> Result<Outcome> {
    let index = crate::open::settings(milan::IndexBuilder::default()).open(&args.dir)?;
    let version = index.info().format_version;
    match index.upgraded_from() {
        Some(old) => outln!(
            "upgraded {} from index format version {old} to {version}",
            args.dir.display()
        )?,
        None => outln!(
            "{} is at index format version {version} already; nothing to do",
            args.dir.display()
        )?,
    }
    Ok(Outcome::Success)
}

fn compact(args: DirArgs) -> Result<Outcome> {
    let index = crate::open::writable(&args.dir)?;
    let before = index.info().file_bytes;
    index.compact()?;
    outln!(
        "compacted {}: file {} -> {} bytes",
        args.dir.display(),
        before,
        index.info().file_bytes
    )?;
    Ok(Outcome::Success)
}

/// Gives the space a rebuild freed back to the file system, unless readers (of another process)
/// are open, which a rebuild does not wait for: their pages are reused by later commits anyway.
fn compact_if_unread(index: &Index) -> Result<()> {
    match index.compact() {
        Ok(_) => Ok(()),
        Err(milan::Error::Write(WriteError::ReadersOpen { .. })) => {
            eprintln!(
                "note: readers are open on {}, so the file keeps the space the rebuild freed (later commits reuse it); `milan index compact {}` returns it when none is open",
                index.path().display(),
                index.path().display()
            );
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

fn optimize(args: OptimizeArgs) -> Result<Outcome> {
    let index = crate::open::writable(&args.dir)?;
    let started = Instant::now();
    let before = index.info().file_bytes;
    let report = index.optimize(args.substrings)?;
    compact_if_unread(&index)?;
    outln!(
        "rebuilt the hash tables of {}: {} -> {} substrings, file {} -> {} bytes, in {:.2} s",
        args.dir.display(),
        report.old_substrings,
        report.new_substrings,
        before,
        index.info().file_bytes,
        started.elapsed().as_secs_f64()
    )?;
    Ok(Outcome::Success)
}

fn rehash(args: RehashArgs) -> Result<Outcome> {
    let head = HashHead::read(&args.head)?;
    let index = crate::open::writable(&args.dir)?;
    let started = Instant::now();
    let report = index.rehash(head)?;
    compact_if_unread(&index)?;
    outln!(
        "re-coded {} items of {} with {} ({} -> {} bits, {} substrings): {} codes changed, in {:.2} s",
        report.items,
        args.dir.display(),
        args.head.display(),
        report.old_bits,
        report.new_bits,
        report.substrings,
        report.changed,
        started.elapsed().as_secs_f64()
    )?;
    Ok(Outcome::Success)
}
