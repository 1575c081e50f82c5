//! The `milan` command line: one module per subcommand, each with its clap `Args` and a `run`.
//!
//! Exit status: 0 success, 1 error, 2 usage error (from clap), 3 partial failure where a command
//! documents one.

/// `println!` that returns the write error instead of panicking, so that a closed pipe (`milan
/// query ... | head`) ends the program quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

mod add;
mod bench;
mod bench_images;
mod codes_file;
mod duplicates;
mod eval;
mod extract;
mod extractor_args;
mod head;
mod import;
mod index;
mod open;
mod outputs;
mod progress;
mod query;
mod shards;
mod split_args;
mod sync;
mod train;
mod walk;

use milan::{ExtractError, ExtractorSetting, OpenError, TrainError, WriteError};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Embedded content-based image retrieval with binary hash codes.
#[derive(Parser)]
#[command(name = "milan", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How long a write waits for another process writing to the same index (they take turns)
    /// before giving up. Reads never wait.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 30.0)]
    lock_timeout: f64,
}

#[derive(Subcommand)]
enum Command {
    /// Create, fill, inspect and maintain an index directory.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Search an index by code, by a file of codes, or by a stored id.
    Query(query::QueryArgs),
    /// Extract the features of a labelled image set (for training and evaluation).
    Extract(extract::ExtractArgs),
    /// Train a hash head on labelled features (MiLaN's triplet, push and balance losses).
    Train(train::TrainArgs),
    /// Measure a head's retrieval quality by the MiLaN papers' protocol, against LSH and float
    /// features.
    Eval(eval::EvalArgs),
    /// Make hash heads (the networks that turn features into codes).
    #[command(subcommand)]
    Head(head::HeadCommand),
    /// Measure search speed against a linear scan.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// What a subcommand's `run` reports when it did not simply succeed.
pub enum Outcome {
    Success,
    /// Finished, but the check it ran failed (exit 1, the report already printed).
    Failed,
    /// Finished, but some inputs were skipped (exit 3, each named).
    Partial,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = open::set_lock_timeout(cli.lock_timeout) {
        eprintln!("error: {err:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Index(command) => index::run(command),
        Command::Query(args) => query::run(args),
        Command::Bench(command) => bench::run(command),
        Command::Head(command) => head::run(command),
        Command::Extract(args) => extract::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Ok(Outcome::Partial) => ExitCode::from(3),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(hint) = hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(1)
        }
    }
}

/// What to do next on the command line, for the library errors whose fix is a milan command or
/// flag (the library's messages name library calls and settings, not commands or flags).
fn hint(err: &anyhow::Error) -> Option<String> {
    let err = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<milan::Error>())?;
    match err {
        milan::Error::Open(OpenError::NotAnIndex { path }) => Some(format!(
            "make one with `milan index create {}`",
            path.display()
        )),
        milan::Error::Corrupted { .. } => {
            Some("`milan index check INDEX` lists every problem".to_string())
        }
        milan::Error::Open(OpenError::NeedsRecovery { .. }) => Some(
            "`milan index check INDEX` opens it for writing, which recovers it, then checks it"
                .to_string(),
        ),
        milan::Error::Open(OpenError::Locked { .. }) => {
            Some("an older milan or another program has this index open; run this again when it has finished".to_string())
        }
        milan::Error::Write(WriteError::LockTimeout { .. }) => Some(
            "run this again when the other command has finished, or wait longer with --lock-timeout SECONDS"
                .to_string(),
        ),
        // The library names the setting that would settle it; the command line's flag for it.
        milan::Error::Extract(
            ExtractError::Runtime {
                setting: Some(setting),
                ..
            }
            | ExtractError::Model {
                setting: Some(setting),
                ..
            },
        ) => flag_for(*setting).map(str::to_string),
        milan::Error::Train(TrainError::ClassTooSmall { why, .. }) if why.contains("TrainConfig::batch") => {
            Some("lower --batch (a multiple of 3)".to_string())
        }
        milan::Error::Train(TrainError::BadData { detail, .. }) if detail.contains("IngestOptions::keep_features") => {
            Some("`milan extract` writes DATA folders; to train on an index, add its images with --keep-features and --label-from-dir".to_string())
        }
        milan::Error::Extract(ExtractError::Mismatch {
            reason: milan::Mismatch::FeaturesNotKept { .. },
            ..
        }) => {
            Some("only images added with --keep-features (`milan index add`) can be re-coded".to_string())
        }
        _ => None,
    }
}

/// The command line's way to give an extractor setting.
fn flag_for(setting: ExtractorSetting) -> Option<&'static str> {
    Some(match setting {
        ExtractorSetting::Layout => "pass --layout nchw or nhwc",
        ExtractorSetting::InputSize => "pass --input-size",
        ExtractorSetting::PixelRange => "pass --pixel-range 0..1, -1..1 or imagenet",
        ExtractorSetting::Output => "pass --output with one of the model's outputs",
        ExtractorSetting::Device => {
            "`make setup-gpu` installs the CUDA build; --device cpu runs on the CPU"
        }
        ExtractorSetting::OrtLibrary => {
            "`make setup` (or `make setup-gpu`) installs ONNX Runtime; --ort-lib PATH names the library"
        }
        _ => return None,
    })
}

/// Whether the error is a write to a pipe whose reader has gone, which is not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let broken = Some(std::io::ErrorKind::BrokenPipe);
    err.chain().any(|cause| {
        // JSON lines are written by serde_json, whose error wraps the I/O error.
        cause.downcast_ref::<std::io::Error>().map(|io| io.kind()) == broken
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == broken
    })
}
