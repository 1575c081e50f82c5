//! `milan index import`: codes from a numpy file, with optional keys, in commits that a re-run
//! resumes.
//!
//! Guarantees, in order of what can go wrong:
//! - Bad input changes nothing: the codes file's header is checked against its length, and every
//!   key line is read and checked, before the index is opened for writing.
//! - Memory stays bounded whatever the file size: codes and keys are streamed in batches.
//! - Each batch commits together with a progress record keyed by the hash of the input files, so a
//!   run that stops (an error, Ctrl-C, a kill, a full disk) keeps whole batches, and running the
//!   same command again resumes after the last committed row instead of adding rows twice.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use milan::npy::CodesReader;
use milan::text::unescape_line;
use milan::{ImportProgress, Item};

use crate::{progress, Outcome};

#[derive(Args)]
pub struct ImportArgs {
    /// The index directory.
    dir: PathBuf,
    /// Codes: a numpy uint8 array [n, bits / 8] (numpy.packbits order); read in batches.
    #[arg(long)]
    codes: PathBuf,
    /// Keys, one line per code, in row order; an empty line means no key. A key's backslash,
    /// line feed and carriage return are written `\\`, `\n` and `\r` (as `index export` writes
    /// them).
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Codes per commit: a stopped import keeps every committed batch, and the same command run
    /// again resumes after the last one.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Import the files again as new codes even if the index already holds them from an earlier
    /// import (by default a finished import is not repeated and an unfinished one resumes).
    #[arg(long)]
    again: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// The longest key line read (the longest key an item can hold, escaped, and its line break).
const MAX_KEY_LINE: usize = 2 * milan::MAX_ITEM_BYTES + 2;

pub fn run(args: ImportArgs) -> Result<Outcome> {
    let started = Instant::now();
    // Everything about the input is checked before the index is opened for writing.
    let mut codes = CodesReader::open(&args.codes)?;
    let rows = codes.rows();
    if let Some(keys) = &args.keys {
        let mut lines = KeyLines::open(keys)?;
        let mut count = 0u64;
        while lines.next_key()?.is_some() {
            count += 1;
        }
        if count != rows {
            bail!(
                "{} has {count} lines but {} has {rows} codes: give one key per code, in row order",
                keys.display(),
                args.codes.display()
            );
        }
    }
    let source = source_hash(&args.codes, args.keys.as_deref())?;
    let index = crate::open::writable(&args.dir)?;
    codes.expect_bits(index.bits())?;

    // One read gives both where this run resumes and what it expects to find stored at its
    // first commit, so that another import committing in between is always noticed.
    let stored = index.import_progress(&source)?;
    let mut expected = stored.as_ref().map(|stored| stored.committed);
    let earlier = stored.filter(|_| !args.again);
    let (resume_at, mut first_id) = match &earlier {
        Some(done) if done.committed >= done.rows => {
            let first = done
                .first_id
                .map_or(String::new(), |id| format!(", the first as id {id}"));
            outln!(
                "{} was imported into {} before ({} rows{first}); nothing to do (--again imports it again)",
                args.codes.display(),
                args.dir.display(),
                done.rows
            )?;
            return Ok(Outcome::Success);
        }
        Some(partial) => {
            eprintln!(
                "resuming the import of {} at row {} of {rows}",
                args.codes.display(),
                partial.committed
            );
            (partial.committed, partial.first_id)
        }
        None => (0, None),
    };
    codes.skip(resume_at)?;
    let mut keys = match &args.keys {
        Some(path) => {
            let mut lines = KeyLines::open(path)?;
            for _ in 0..resume_at {
                lines.next_key()?;
            }
            Some(lines)
        }
        None => None,
    };

    let bar = progress::bar(rows, "importing", args.quiet);
    bar.set_position(resume_at);
    let mut committed = resume_at;
    // `expected` is the progress this run expects to find stored at each commit: another process
    // importing the same source moves it, and this run then stops rather than add rows twice.
    // This run's first and last ids, and whether they are contiguous: other processes may
    // commit between its batches.
    let mut run_ids: Option<(u64, u64)> = None;
    let mut contiguous = true;
    loop {
        let batch = codes.read(args.batch_size as usize)?;
        if batch.is_empty() {
            break;
        }
        let done = committed + batch.len() as u64;
        let mut writer = index.writer()?;
        let stored = writer
            .import_progress(&source)?
            .map(|stored| stored.committed);
        if stored != expected {
            bail!(
                "another process is importing {} into {} at the same time (its progress is at \
                 row {} of {rows}); this run stopped after row {committed}; run it again once \
                 the other has finished, to resume",
                args.codes.display(),
                args.dir.display(),
                stored.unwrap_or(0)
            );
        }
        // Batches wait in the scanned delta, so that each costs what it adds; the last commits
        // as any other, filing them all in new hash tables in one pass when the delta has
        // passed its limit (a small import into a large index stays in the delta).
        if done < rows {
            writer.defer_merge();
        }
        for code in &batch {
            let key = match &mut keys {
                Some(lines) => lines.next_key()?.flatten(),
                None => None,
            };
            let id = writer.add(
                code,
                Item {
                    key,
                    ..Item::default()
                },
            )?;
            first_id.get_or_insert(id);
            run_ids = Some(match run_ids {
                None => (id, id),
                Some((first, last)) => {
                    contiguous &= id == last + 1;
                    (first, id)
                }
            });
        }
        writer.set_import_progress(ImportProgress {
            source,
            rows,
            committed: done,
            first_id,
        });
        writer.commit().with_context(|| {
            format!(
                "committing rows {committed}..{done} of {}",
                args.codes.display()
            )
        })?;
        committed = done;
        expected = Some(done);
        bar.set_position(committed);
    }
    bar.finish_and_clear();
    // A run stopped before its last batch leaves the others waiting in the delta: the next
    // writable open, or this command run again, files them.
    let info = index.info();
    if rows == 0 {
        outln!("{} holds no codes; nothing imported", args.codes.display())?;
    } else {
        let added = committed - resume_at;
        let ids = match run_ids {
            Some((first, last)) if contiguous => format!("ids {first}..={last}"),
            Some((first, last)) => {
                format!("ids {first} to {last}, between other writers' commits")
            }
            None => "no ids".into(),
        };
        let earlier = match (resume_at, first_id) {
            (0, _) | (_, None) => String::new(),
            (rows, Some(first)) => {
                format!("; rows 0..{rows} were imported before, the first as id {first}")
            }
        };
        outln!(
            "imported {added} codes into {} ({ids}) in {:.2} s{earlier}; {} codes in the index",
            args.dir.display(),
            started.elapsed().as_secs_f64(),
            info.len
        )?;
    }
    // Below this size every query scans, so the number of substrings does not matter.
    if info.len >= 65_536 && info.recommended_substrings != info.substrings {
        eprintln!(
            "hint: {} substrings suit {} codes better than {}; run `milan index optimize {}`",
            info.recommended_substrings,
            info.len,
            info.substrings,
            args.dir.display()
        );
    }
    Ok(Outcome::Success)
}

/// What identifies an import: the BLAKE3 hash of the codes file and of the keys file (if any).
fn source_hash(codes: &Path, keys: Option<&Path>) -> Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"milan index import\0");
    for path in std::iter::once(codes).chain(keys) {
        let file = File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let bytes = file
            .metadata()
            .with_context(|| format!("{}: cannot read", path.display()))?
            .len();
        hasher.update(&bytes.to_le_bytes());
        hasher
            .update_reader(file)
            .with_context(|| format!("{}: cannot read", path.display()))?;
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Keys read one line at a time, each line bounded, so that a file without line breaks cannot
/// make a key of unbounded size.
pub(crate) struct KeyLines {
    path: PathBuf,
    reader: BufReader<File>,
    line: Vec<u8>,
    number: u64,
}

impl KeyLines {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let metadata =
            std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
        if !metadata.is_file() {
            bail!("{}: not a regular file", path.display());
        }
        let file = File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Ok(KeyLines {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            line: Vec::new(),
            number: 0,
        })
    }

    /// The next line's key (`Some(None)` for an empty line), or `None` at the end of the file.
    pub(crate) fn next_key(&mut self) -> Result<Option<Option<String>>> {
        self.line.clear();
        let read = (&mut self.reader)
            .take(MAX_KEY_LINE as u64 + 1)
            .read_until(b'\n', &mut self.line)
            .with_context(|| format!("{}: cannot read", self.path.display()))?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        if self.line.len() > MAX_KEY_LINE {
            bail!(
                "{}: line {} is longer than {MAX_KEY_LINE} bytes, more than a key can hold",
                self.path.display(),
                self.number
            );
        }
        let mut text = self.line.as_slice();
        text = text.strip_suffix(b"\n").unwrap_or(text);
        text = text.strip_suffix(b"\r").unwrap_or(text);
        let text = std::str::from_utf8(text).map_err(|_| {
            anyhow::anyhow!(
                "{}: line {} is not valid UTF-8; keys are text",
                self.path.display(),
                self.number
            )
        })?;
        if text.is_empty() {
            return Ok(Some(None));
        }
        let key = unescape_line(text).into_owned();
        if key.len() > milan::MAX_ITEM_BYTES {
            bail!(
                "{}: the key on line {} is {} bytes; a key holds at most {} bytes",
                self.path.display(),
                self.number,
                key.len(),
                milan::MAX_ITEM_BYTES
            );
        }
        Ok(Some(Some(key)))
    }
}
