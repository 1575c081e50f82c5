//! `milan index import-shards`: the shards of a sharded ingest (docs/shards.md) merged into one
//! image index through the bulk-import path.
//!
//! - The index must be bound to the manifest's model and head; another is refused, both named.
//! - Every shard not imported yet is checked whole (each file's BLAKE3 against `shard.json`, each
//!   array's type and shape) before the index is written to, so a damaged shard changes nothing.
//! - Each commit carries import progress keyed by the shard's fingerprint: a shard imported before
//!   is skipped and a killed import resumes after its last commit.
//! - Content the index holds, or that an earlier row added, is skipped as `index add` skips it.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use milan::ingest::{keeps_features, FailedFile, Failures};
use milan::npy::{read_array_header, CodesReader};
use milan::text::for_terminal;
use milan::{Code, ImportProgress, Index, Item};
use serde::Deserialize;

use crate::import::KeyLines;
use crate::{progress, Outcome};

#[derive(Args)]
pub struct ImportShardsArgs {
    /// The index directory: an image index created with the shards' model and head.
    dir: PathBuf,
    /// The shards folder (a manifest.json and shard-NNNNNN folders, as `python -m milan.ray
    /// ingest` writes them).
    shards: PathBuf,
    /// Rows per commit: a stopped import keeps every committed batch, and the same command run
    /// again resumes after the last one.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub const MANIFEST: &str = "manifest.json";
const SHARD_FILE: &str = "shard.json";
const CODES: &str = "codes.npy";
const KEYS: &str = "keys.txt";
const HASHES: &str = "content_hashes.npy";
const LABELS: &str = "labels.txt";
const FEATURES: &str = "features.npy";
/// The files a shard must have, and those it may have.
const REQUIRED: [&str; 3] = [CODES, KEYS, HASHES];
const OPTIONAL: [&str; 2] = [LABELS, FEATURES];
/// `shard.json` is a few kilobytes plus its failures; anything far larger is not one.
const MAX_SHARD_JSON: u64 = 256 << 20;

#[derive(Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    bits: u32,
    head: HeadEntry,
    model: ModelEntry,
    shards: u64,
}

#[derive(Deserialize)]
struct HeadEntry {
    fingerprint: String,
}

#[derive(Deserialize)]
struct ModelEntry {
    model: String,
    fingerprint: String,
    input: String,
    layout: String,
    size: u32,
    pixel_range: String,
    output: String,
    dim: u32,
}

#[derive(Deserialize)]
struct ShardFile {
    format: String,
    version: u32,
    shard: u64,
    rows: u64,
    bits: u32,
    head: String,
    model: String,
    files: BTreeMap<String, String>,
    #[serde(default)]
    failed: Vec<FailedEntry>,
}

#[derive(Deserialize)]
struct FailedEntry {
    path: String,
    reason: String,
    #[serde(default)]
    detail: String,
}

/// A shard folder found, its `shard.json` read and its fingerprint taken.
struct Shard {
    number: u64,
    dir: PathBuf,
    file: ShardFile,
    /// The key of its import progress: BLAKE3 of `shard.json`, which holds every file's hash.
    source: [u8; 32],
}

impl Shard {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn has(&self, name: &str) -> bool {
        self.file.files.contains_key(name)
    }
}

#[derive(Default, serde::Serialize)]
struct Report {
    /// Shard folders found.
    shards: u64,
    /// Shards the manifest plans.
    planned: u64,
    /// Shards imported by this run (resumed ones included).
    imported: u64,
    /// Shards this run resumed after an earlier run stopped.
    resumed: u64,
    /// Shards imported by earlier runs.
    imported_before: u64,
    /// Rows added.
    added: u64,
    /// Rows whose content the index already held.
    already_indexed: u64,
    /// Rows whose content an earlier row of the import added.
    duplicates: u64,
    ids: Option<(u64, u64)>,
    /// Images the ingest could not code, from every shard found.
    #[serde(flatten)]
    failures: Failures,
    seconds: f64,
    /// Codes in the index afterwards.
    len: u64,
}

pub fn run(args: ImportShardsArgs) -> Result<Outcome> {
    let started = Instant::now();
    let manifest = read_manifest(&args.shards)?;
    let mut shards = list_shards(&args.shards)?;
    let index = crate::open::writable(&args.dir)?;
    check_binding(&index, &manifest, &args.dir, &args.shards)?;
    let head_fingerprint = hex(&index.head().expect("checked").fingerprint());
    let model_fingerprint = hex(&index.model().expect("checked").fingerprint);

    let mut report = Report {
        shards: shards.len() as u64,
        planned: manifest.shards,
        ..Report::default()
    };
    // What is left of each shard, and the progress expected at its first commit.
    let mut pending: Vec<(usize, u64, Option<ImportProgress>)> = Vec::new();
    for (position, shard) in shards.iter_mut().enumerate() {
        check_shard_file(shard, &manifest, &head_fingerprint, &model_fingerprint)?;
        for failed in &shard.file.failed {
            report.failures.push(FailedFile {
                path: PathBuf::from(&failed.path),
                reason: failed.reason.clone(),
                detail: failed.detail.clone(),
            });
        }
        match index.import_progress(&shard.source)? {
            Some(done) if done.committed >= done.rows => report.imported_before += 1,
            stored => {
                let at = stored.as_ref().map_or(0, |stored| stored.committed);
                check_shard_data(shard, index.model().expect("checked").dim)?;
                pending.push((position, at, stored));
            }
        }
    }
    if !pending.is_empty()
        && !shards.iter().any(|shard| shard.has(FEATURES))
        && keeps_features(&index)?
    {
        eprintln!(
            "note: {} keeps feature vectors but these shards hold none; `index rehash` cannot re-code the images they add",
            args.dir.display()
        );
    }

    let rows: u64 = pending
        .iter()
        .map(|&(position, at, _)| shards[position].file.rows - at)
        .sum();
    let bar = progress::bar(rows, "importing shards", args.quiet || args.json);
    let mut added_here: HashSet<[u8; 32]> = HashSet::new();
    let last = pending.len().saturating_sub(1);
    for (turn, (position, at, stored)) in pending.into_iter().enumerate() {
        if at > 0 {
            report.resumed += 1;
        }
        import_shard(
            &index,
            &shards[position],
            at,
            stored,
            args.batch_size,
            turn == last,
            &mut added_here,
            &mut report,
            &mut |rows| bar.inc(rows),
        )?;
        report.imported += 1;
    }
    bar.finish_and_clear();
    report.len = index.info().len;
    report.seconds = started.elapsed().as_secs_f64();

    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        let ids = match report.ids {
            Some((first, last)) => format!(" (ids {first}..={last})"),
            None => String::new(),
        };
        outln!(
            "imported {} of {} shards into {} in {:.2} s: {} images added{ids}, {} already indexed, {} duplicates; {} shards imported before; {} codes in the index",
            report.imported,
            report.shards,
            args.dir.display(),
            report.seconds,
            report.added,
            report.already_indexed,
            report.duplicates,
            report.imported_before,
            report.len
        )?;
        if !report.failures.is_empty() {
            outln!(
                "{} images could not be coded at the ingest:",
                report.failures.len()
            )?;
            for failed in &report.failures.failed {
                outln!(
                    "  {}: {} ({})",
                    for_terminal(&failed.path.to_string_lossy()),
                    failed.reason,
                    for_terminal(&failed.detail)
                )?;
            }
        }
    }
    if report.shards < report.planned {
        eprintln!(
            "{} holds {} of the {} shards its manifest plans: the ingest has not finished; run it again, then this command again",
            args.shards.display(),
            report.shards,
            report.planned
        );
    }
    Ok(
        if report.failures.is_empty() && report.shards >= report.planned {
            Outcome::Success
        } else {
            Outcome::Partial
        },
    )
}

fn read_manifest(shards: &Path) -> Result<Manifest> {
    let path = shards.join(MANIFEST);
    if !shards.is_dir() {
        bail!("{}: not a folder of shards", shards.display());
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "{}: no {MANIFEST}; give the folder that `python -m milan.ray ingest --out` wrote",
            shards.display()
        ),
        Err(err) => return Err(err).with_context(|| format!("{}: cannot read", path.display())),
    };
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a shards manifest (docs/shards.md)", path.display()))?;
    if manifest.format != "milan-shards" || manifest.version != 1 {
        bail!(
            "{}: format {:?} version {}; this milan reads \"milan-shards\" version 1",
            path.display(),
            manifest.format,
            manifest.version
        );
    }
    Ok(manifest)
}

/// The `shard-NNNNNN` folders under `shards`, by number, each with its `shard.json` read.
/// Other names (a shard being written, under a temporary name) are not shards yet.
fn list_shards(shards: &Path) -> Result<Vec<Shard>> {
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir(shards).with_context(|| format!("{}: cannot list", shards.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot list", shards.display()))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|name| name.strip_prefix("shard-"))
            .filter(|digits| digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        if !dir.is_dir() {
            bail!("{}: a shard is a folder", dir.display());
        }
        found.push((number, dir));
    }
    found.sort();
    let mut out = Vec::with_capacity(found.len());
    for (number, dir) in found {
        let path = dir.join(SHARD_FILE);
        let bytes = read_bounded(&path, MAX_SHARD_JSON)?;
        let file: ShardFile = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{}: not a shard description (docs/shards.md); the shard is damaged: remove its folder and run the ingest again",
                path.display()
            )
        })?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"milan index import-shards\0");
        hasher.update(&bytes);
        out.push(Shard {
            number,
            dir,
            file,
            source: *hasher.finalize().as_bytes(),
        });
    }
    Ok(out)
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!("{}: larger than {limit} bytes", path.display());
    }
    Ok(bytes)
}

/// Refuses an index that is not bound to the manifest's model and head, naming both.
fn check_binding(index: &Index, manifest: &Manifest, dir: &Path, shards: &Path) -> Result<()> {
    let (Some(model), Some(head)) = (index.model(), index.head()) else {
        bail!(
            "{} stores codes only; create an image index with the shards' model and head: `milan index create DIR --model {} --head HEAD`",
            dir.display(),
            manifest.model.model
        );
    };
    let wanted = &manifest.model;
    let ours = (
        hex(&model.fingerprint),
        model.input.as_str(),
        model.layout.name(),
        model.size,
        model.pixel_range.name(),
        model.output.as_str(),
        model.dim,
    );
    let theirs = (
        wanted.fingerprint.to_ascii_lowercase(),
        wanted.input.as_str(),
        wanted.layout.as_str(),
        wanted.size,
        wanted.pixel_range.as_str(),
        wanted.output.as_str(),
        wanted.dim,
    );
    if ours != theirs {
        bail!(
            "{} was made with model {} (fingerprint {}, input {:?} {}x{} {}, pixels {}, output {:?}, {} features) but the shards in {} with model {} (fingerprint {}, input {:?} {}x{} {}, pixels {}, output {:?}, {} features); import them into an index created with the shards' model and head",
            dir.display(),
            model.path,
            &ours.0[..16],
            ours.1,
            ours.3,
            ours.3,
            ours.2,
            ours.4,
            ours.5,
            ours.6,
            shards.display(),
            wanted.model,
            short(&theirs.0),
            theirs.1,
            theirs.3,
            theirs.3,
            theirs.2,
            theirs.4,
            theirs.5,
            theirs.6,
        );
    }
    let ours = hex(&head.fingerprint());
    let theirs = manifest.head.fingerprint.to_ascii_lowercase();
    if ours != theirs || manifest.bits != head.bits() {
        bail!(
            "{} codes with head {} ({}, {} bits) but the shards in {} were coded with head {} ({} bits); import them into an index created with that head (`milan index create DIR --model MODEL --head HEAD`)",
            dir.display(),
            &ours[..16],
            head.kind(),
            head.bits(),
            shards.display(),
            short(&theirs),
            manifest.bits
        );
    }
    Ok(())
}

/// The first 16 characters of a fingerprint given as text (however long it is).
fn short(text: &str) -> &str {
    text.get(..16).unwrap_or(text)
}

/// Checks what `shard.json` says against the manifest and the index.
fn check_shard_file(shard: &Shard, manifest: &Manifest, head: &str, model: &str) -> Result<()> {
    let file = &shard.file;
    let path = shard.path(SHARD_FILE);
    let wrong = |what: String| {
        anyhow!(
            "{}: {what}; the shard does not belong to this ingest: remove its folder and run the ingest again",
            path.display()
        )
    };
    if file.format != "milan-shard" || file.version != 1 {
        return Err(wrong(format!(
            "format {:?} version {}, not \"milan-shard\" version 1",
            file.format, file.version
        )));
    }
    if file.shard != shard.number {
        return Err(wrong(format!(
            "it describes shard {} but its folder is shard {}",
            file.shard, shard.number
        )));
    }
    if shard.number >= manifest.shards {
        return Err(wrong(format!(
            "shard {} is past the {} shards the manifest plans",
            shard.number, manifest.shards
        )));
    }
    if file.head.to_ascii_lowercase() != head || file.model.to_ascii_lowercase() != model {
        return Err(wrong(format!(
            "it was coded with head {} and model {}, not the manifest's {} and {}",
            short(&file.head),
            short(&file.model),
            &head[..16],
            &model[..16]
        )));
    }
    if file.bits != manifest.bits {
        return Err(wrong(format!(
            "{}-bit codes, not the manifest's {}",
            file.bits, manifest.bits
        )));
    }
    for name in REQUIRED {
        if !shard.has(name) {
            return Err(wrong(format!("no {name} listed under \"files\"")));
        }
    }
    if let Some(name) = file
        .files
        .keys()
        .find(|name| !REQUIRED.contains(&name.as_str()) && !OPTIONAL.contains(&name.as_str()))
    {
        return Err(wrong(format!(
            "unknown file {name:?} listed under \"files\""
        )));
    }
    Ok(())
}

/// Checks every file of a shard against `shard.json`: its BLAKE3, then its type and shape.
fn check_shard_data(shard: &Shard, dim: u32) -> Result<()> {
    let rows = shard.file.rows;
    let damaged = |path: &Path, what: String| {
        anyhow!(
            "{}: {what}; the shard is damaged: remove its folder and run the ingest again (shards imported before are kept)",
            path.display()
        )
    };
    for (name, expected) in &shard.file.files {
        let path = shard.path(name);
        let metadata = std::fs::metadata(&path).map_err(|err| damaged(&path, err.to_string()))?;
        if !metadata.is_file() {
            return Err(damaged(&path, "not a regular file".into()));
        }
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_reader(File::open(&path)?)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if hex(hasher.finalize().as_bytes()) != expected.to_ascii_lowercase() {
            return Err(damaged(
                &path,
                "its content is not what shard.json records (BLAKE3 differs)".into(),
            ));
        }
    }
    let codes = CodesReader::open(shard.path(CODES))
        .map_err(|err| damaged(&shard.path(CODES), err.to_string()))?;
    if codes.rows() != rows || codes.bits() != shard.file.bits {
        return Err(damaged(
            &shard.path(CODES),
            format!(
                "{} rows of {}-bit codes, where shard.json says {rows} of {}",
                codes.rows(),
                codes.bits(),
                shard.file.bits
            ),
        ));
    }
    let path = shard.path(HASHES);
    let header = read_array_header(&path, 1).map_err(|err| damaged(&path, err.to_string()))?;
    if !is_u8(&header.descr) || header.shape != [rows as usize, 32] {
        return Err(damaged(
            &path,
            format!(
                "dtype {} shape {:?}, where uint8 [{rows}, 32] is expected",
                header.descr, header.shape
            ),
        ));
    }
    if shard.has(FEATURES) {
        let path = shard.path(FEATURES);
        let header = read_array_header(&path, 4).map_err(|err| damaged(&path, err.to_string()))?;
        if !matches!(header.descr.as_str(), "<f4" | "=f4" | "f4")
            || header.shape != [rows as usize, dim as usize]
            || (header.fortran_order && rows > 1 && dim > 1)
        {
            return Err(damaged(
                &path,
                format!(
                    "dtype {} shape {:?}{}, where little-endian float32 [{rows}, {dim}] in C order is expected",
                    header.descr,
                    header.shape,
                    if header.fortran_order { " Fortran order" } else { "" }
                ),
            ));
        }
    }
    for name in [KEYS, LABELS] {
        if !shard.has(name) {
            continue;
        }
        let mut lines = KeyLines::open(&shard.path(name))?;
        let mut count = 0u64;
        while lines.next_key()?.is_some() {
            count += 1;
        }
        if count != rows {
            return Err(damaged(
                &shard.path(name),
                format!("{count} lines, where shard.json says {rows} rows"),
            ));
        }
    }
    Ok(())
}

fn is_u8(descr: &str) -> bool {
    matches!(descr, "|u1" | "<u1" | ">u1" | "u1" | "=u1")
}

/// One row of a shard.
struct Row {
    code: Code,
    hash: [u8; 32],
    key: Option<String>,
    label: Option<String>,
    features: Option<Vec<f32>>,
}

/// Row-wise readers of a shard's files, positioned at its first row not imported.
struct ShardRows {
    codes: CodesReader<std::io::BufReader<File>>,
    hashes: std::io::BufReader<File>,
    features: Option<(std::io::BufReader<File>, usize)>,
    keys: KeyLines,
    labels: Option<KeyLines>,
}

impl ShardRows {
    fn open(shard: &Shard, at: u64, dim: usize) -> Result<ShardRows> {
        let mut codes = CodesReader::open(shard.path(CODES))?;
        codes.skip(at)?;
        let positioned =
            |name: &str, item: usize, width: u64| -> Result<std::io::BufReader<File>> {
                let path = shard.path(name);
                let header = read_array_header(&path, item)?;
                let mut file = File::open(&path)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
                file.seek(SeekFrom::Start(header.data_offset + at * width))?;
                Ok(std::io::BufReader::new(file))
            };
        let hashes = positioned(HASHES, 1, 32)?;
        let features = if shard.has(FEATURES) {
            Some((positioned(FEATURES, 4, 4 * dim as u64)?, dim))
        } else {
            None
        };
        let mut keys = KeyLines::open(&shard.path(KEYS))?;
        let mut labels = if shard.has(LABELS) {
            Some(KeyLines::open(&shard.path(LABELS))?)
        } else {
            None
        };
        for _ in 0..at {
            keys.next_key()?;
            if let Some(labels) = &mut labels {
                labels.next_key()?;
            }
        }
        Ok(ShardRows {
            codes,
            hashes,
            features,
            keys,
            labels,
        })
    }

    /// The next `count` rows.
    fn read(&mut self, count: usize) -> Result<Vec<Row>> {
        let codes = self.codes.read(count)?;
        let mut rows = Vec::with_capacity(codes.len());
        for code in codes {
            let mut hash = [0u8; 32];
            self.hashes.read_exact(&mut hash)?;
            let key = self.keys.next_key()?.flatten();
            let label = match &mut self.labels {
                Some(labels) => labels.next_key()?.flatten(),
                None => None,
            };
            let features = match &mut self.features {
                Some((reader, dim)) => {
                    let mut bytes = vec![0u8; 4 * *dim];
                    reader.read_exact(&mut bytes)?;
                    Some(
                        bytes
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    )
                }
                None => None,
            };
            rows.push(Row {
                code,
                hash,
                key,
                label,
                features,
            });
        }
        Ok(rows)
    }
}

/// Imports one shard from row `at`, in commits of `batch` rows; `last` says whether its last
/// commit is the import's last, which files the codes in new hash tables.
#[allow(clippy::too_many_arguments)]
fn import_shard(
    index: &Index,
    shard: &Shard,
    at: u64,
    stored: Option<ImportProgress>,
    batch: u64,
    last: bool,
    added_here: &mut HashSet<[u8; 32]>,
    report: &mut Report,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let rows = shard.file.rows;
    let dim = index.model().expect("checked").dim as usize;
    let mut reader = ShardRows::open(shard, at, dim).with_context(|| {
        format!(
            "reading shard {} (checked a moment ago: did it change?)",
            shard.dir.display()
        )
    })?;
    let mut expected = stored.as_ref().map(|stored| stored.committed);
    let mut first_id = stored.and_then(|stored| stored.first_id);
    let mut committed = at;
    // An empty shard (every image failed) still records that it was imported.
    while committed < rows || (rows == 0 && expected.is_none()) {
        let chunk = reader.read(batch.min(rows - committed) as usize)?;
        let done = committed + chunk.len() as u64;
        let mut writer = index.writer()?;
        // The shards' codes are the manifest's head's: checked at the start, and again under
        // each writer, since another process may have re-coded the index in between.
        index.check_head_current()?;
        let now = writer.import_progress(&shard.source)?.map(|p| p.committed);
        if now != expected {
            bail!(
                "another process is importing {} into {} at the same time (its progress is at row {} of {rows}); this run stopped; run it again once the other has finished, to resume",
                shard.dir.display(),
                index.path().display(),
                now.unwrap_or(0)
            );
        }
        if !(last && done >= rows) {
            writer.defer_merge();
        }
        let mut batch_hashes = HashSet::new();
        for Row {
            code,
            hash,
            key,
            label,
            features,
        } in chunk
        {
            if !writer.ids_with_content_hash(&hash)?.is_empty() {
                // Indexed before this run, or by this run in an earlier commit.
                if added_here.contains(&hash) {
                    report.duplicates += 1;
                } else {
                    report.already_indexed += 1;
                }
                continue;
            }
            if !batch_hashes.insert(hash) {
                report.duplicates += 1;
                continue;
            }
            let item = Item {
                key,
                label,
                content_hash: Some(hash),
                ..Item::default()
            };
            let id = match features {
                Some(features) => writer.add_with_features(&code, item, features)?,
                None => writer.add(&code, item)?,
            };
            first_id.get_or_insert(id);
            report.added += 1;
            report.ids = Some((report.ids.map_or(id, |(first, _)| first), id));
        }
        writer.set_import_progress(ImportProgress {
            source: shard.source,
            rows,
            committed: done,
            first_id,
        });
        writer.commit().with_context(|| {
            format!(
                "committing rows {committed}..{done} of {}",
                shard.dir.display()
            )
        })?;
        added_here.extend(batch_hashes);
        progress(done - committed);
        committed = done;
        expected = Some(done);
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
