//! `milan eval`: a head's retrieval quality by the papers' protocol, against LSH and float
//! features (docs/training.md, "Evaluation protocol").

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use milan::dataset::{
    Dataset, SplitSpec, CLASSES_FILE, EXTRACTOR_FILE, FEATURES_FILE, LABELS_FILE, PATHS_FILE,
};
use milan::eval::{evaluate, select, select_rows, EvalOptions, EvalReport, PackedCodes};
use milan::format::DATABASE_FILE;
use milan::report::{eval_page, write_atomically, write_atomically_with, QueryRow, Tile};
use milan::text::{escape_line, for_terminal};
use milan::HashHead;
use ndarray::Array1;
use ndarray_npy::WriteNpyExt;

use crate::codes_file::write_codes;
use crate::split_args::SplitArgs;
use crate::walk::shown;
use crate::Outcome;

/// Results shown per sample query in the HTML report, as in the papers' figures.
const GRID_RESULTS: usize = 19;

#[derive(Args)]
pub struct EvalArgs {
    /// Labelled features: a folder written by `milan extract`, or an index built with
    /// --keep-features and --label-from-dir.
    #[arg(long)]
    data: PathBuf,
    /// The head to evaluate.
    #[arg(long)]
    head: PathBuf,
    /// The k of mAP@k.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    k: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write an HTML report: metrics, plots and retrieval grids (thumbnails of regular files up
    /// to 256 MiB only). Written whole or not at all; refused over an input or inside an index.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Sample queries in the HTML report (the first test item of each class, in turn).
    #[arg(long, default_value_t = 10)]
    grid_queries: usize,
    /// Write the test split's codes (DIR/codes.npy, uint8 packed as `milan index import` reads),
    /// labels (DIR/labels.npy, int64) and paths (DIR/paths.txt, one per line, `\`, line feeds
    /// and carriage returns escaped as `\\`, `\n`, `\r`), in evaluation order. Refused where
    /// a file would overwrite an input or land inside an index.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Seed of the LSH baseline's hyperplanes.
    #[arg(long, default_value_t = 0)]
    lsh_seed: u64,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    split: SplitArgs,
}

/// The split the head was trained with, from its provenance.
fn recorded_split(head: &HashHead) -> Option<SplitSpec> {
    let provenance: serde_json::Value = serde_json::from_str(head.provenance()).ok()?;
    serde_json::from_value(provenance.get("data")?.get("split")?.clone()).ok()
}

/// Refuses a head for features of another dimension or of another extractor.
fn check_head(args: &EvalArgs, head: &HashHead, dataset: &Dataset) -> Result<()> {
    let dim = dataset.features.ncols();
    if head.input_dim() as usize != dim {
        bail!(
            "{}: the head takes {}-dimensional features but {} has {dim}-dimensional ones",
            shown(&args.head),
            head.input_dim(),
            shown(&args.data)
        );
    }
    if let Some(model) = &dataset.extractor {
        head.check_contract(model).map_err(|detail| {
            anyhow!(
                "{}: {detail} (the features of {})",
                shown(&args.head),
                shown(&args.data)
            )
        })?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses outputs that would overwrite an input (the head, the data's files, split lists) or
/// land inside the index the data comes from, before anything is read.
fn check_outputs(args: &EvalArgs) -> Result<()> {
    let data_is_index = args.data.join(DATABASE_FILE).exists();
    let data_files: Vec<PathBuf> = if data_is_index {
        Vec::new()
    } else {
        [
            FEATURES_FILE,
            LABELS_FILE,
            CLASSES_FILE,
            PATHS_FILE,
            EXTRACTOR_FILE,
        ]
        .iter()
        .map(|file| args.data.join(file))
        .collect()
    };
    let lists = match args.split.spec(None) {
        Ok(SplitSpec::Lists { train, test }) => vec![train, test],
        _ => Vec::new(),
    };
    let mut inputs: Vec<&Path> = vec![args.head.as_path()];
    inputs.extend(data_files.iter().map(PathBuf::as_path));
    inputs.extend(lists.iter().map(PathBuf::as_path));
    let index_dir = data_is_index.then_some(args.data.as_path());
    let mut outputs: Vec<PathBuf> = args.html.iter().cloned().collect();
    if let Some(dir) = &args.export {
        outputs.extend(
            ["codes.npy", "labels.npy", "paths.txt"]
                .iter()
                .map(|file| dir.join(file)),
        );
    }
    for output in &outputs {
        crate::outputs::check_output(output, index_dir, &inputs)?;
    }
    Ok(())
}

pub fn run(args: EvalArgs) -> Result<Outcome> {
    check_outputs(&args)?;
    let dataset = Dataset::load(&args.data)?;
    let head = HashHead::read(&args.head)?;
    check_head(&args, &head, &dataset)?;
    let spec = args.split.spec(recorded_split(&head))?;
    let split = dataset.split(&spec)?;
    if split.test.len() < 2 {
        bail!(
            "{}: the test split has {} items; each test item queries the others, so at least 2 are needed (lower --train-fraction)",
            shown(&args.data),
            split.test.len()
        );
    }
    let train_features = select_rows(dataset.features.view(), &split.train);
    let test_features = select_rows(dataset.features.view(), &split.test);
    let test_labels = select(&dataset.labels, &split.test);
    let options = EvalOptions {
        k: args.k as usize,
        lsh_seed: args.lsh_seed,
        ..EvalOptions::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let report = pool.install(|| {
        evaluate(
            &head,
            train_features.view(),
            test_features.view(),
            &test_labels,
            &options,
        )
    })?;
    // The test codes again (one more pass of the head), only for the outputs that show them.
    let codes = (args.export.is_some() || args.html.is_some())
        .then(|| PackedCodes::from_head(&head, test_features.view()))
        .transpose()?;
    if let (Some(dir), Some(codes)) = (&args.export, &codes) {
        export(
            dir,
            codes,
            &test_labels,
            &select(&dataset.keys, &split.test),
        )?;
    }
    if let (Some(path), Some(codes)) = (&args.html, &codes) {
        let rows = grid_rows(&args, &dataset, &split.test, codes);
        let title = format!("milan eval: {}", args.head.display());
        let name = format!("{} head", head.kind());
        write_atomically(path, eval_page(&title, &name, &report, &rows).as_bytes())?;
    }
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["head"] = serde_json::json!({
            "path": args.head,
            "kind": head.kind(),
            "fingerprint": hex(&head.fingerprint()),
        });
        value["data"] = serde_json::json!(args.data);
        value["split"] = serde_json::to_value(&spec)?;
        outln!("{value}")?;
    } else {
        print_summary(&args, &head, &report)?;
    }
    Ok(Outcome::Success)
}

fn print_summary(args: &EvalArgs, head: &HashHead, report: &EvalReport) -> Result<()> {
    let k = report.k;
    outln!(
        "{} test queries against each other ({} training items), {} bits:",
        report.queries,
        report.train_items,
        report.bits
    )?;
    let p = |curve: &[f64], c: usize| curve.get(c - 1).copied().unwrap_or(f64::NAN);
    let line = |name: &str, map: f64, curve: &[f64]| {
        outln!(
            "  {name:<24} mAP@{k} {map:.4}   P@1 {:.4}  P@10 {:.4}  P@100 {:.4}",
            p(curve, 1),
            p(curve, 10),
            p(curve, 100)
        )
    };
    line(
        &format!(
            "{} ({})",
            for_terminal(head.kind()),
            for_terminal(&args.head.to_string_lossy())
        ),
        report.map_at_k,
        &report.precision_at_k,
    )?;
    line(
        "LSH",
        report.baselines.lsh,
        &report.baseline_details.lsh.precision_at_k,
    )?;
    line(
        "float features",
        report.baselines.float_euclidean,
        &report.baseline_details.float_euclidean.precision_at_k,
    )?;
    Ok(())
}

/// DIR/codes.npy, DIR/labels.npy and DIR/paths.txt (keys escaped one per line) of the test
/// split, in evaluation order.
fn export(dir: &Path, codes: &PackedCodes, labels: &[i64], keys: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create", for_terminal(&dir.to_string_lossy())))?;
    let width = (codes.bits() as usize).div_ceil(8);
    write_codes(&dir.join("codes.npy"), width, &codes.to_bytes())?;
    write_atomically_with(&dir.join("labels.npy"), |out| {
        Array1::from(labels.to_vec())
            .write_npy(out)
            .map_err(std::io::Error::other)
    })?;
    let listing: String = keys
        .iter()
        .map(|key| format!("{}\n", escape_line(key)))
        .collect();
    write_atomically(&dir.join("paths.txt"), listing.as_bytes())?;
    Ok(())
}

/// Sample queries for the HTML report: the first test item of each class in turn, with their
/// nearest test items.
fn grid_rows(
    args: &EvalArgs,
    dataset: &Dataset,
    test_rows: &[usize],
    codes: &PackedCodes,
) -> Vec<QueryRow> {
    let mut seen = std::collections::BTreeSet::new();
    let queries: Vec<usize> = (0..test_rows.len())
        .filter(|&q| seen.insert(dataset.labels[test_rows[q]]))
        .take(args.grid_queries)
        .collect();
    let tile = |position: usize, distance: Option<u32>| {
        let row = test_rows[position];
        let key = &dataset.keys[row];
        Tile {
            caption: key.clone(),
            label: Some(dataset.class_name(dataset.labels[row]).to_string()),
            distance,
            // Only regular files are shown: a key naming a device or a FIFO is never opened.
            image: Some(PathBuf::from(key)).filter(|path| path.is_file()),
        }
    };
    queries
        .into_iter()
        .map(|q| QueryRow {
            query: tile(q, None),
            results: codes
                .ranking(q, GRID_RESULTS)
                .into_iter()
                .map(|(i, d)| tile(i, Some(d)))
                .collect(),
        })
        .collect()
}
