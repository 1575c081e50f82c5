//! Times mih-rs (Norouzi's multi-index hashing) on the .npy files that `milan bench generate`
//! writes, one query at a time on one thread, and checks every answer against a linear scan.
//! Prints one JSON object shaped like `milan bench search --json`, plus build and open times.
//!
//! Usage: milan-compare-mihrs --codes codes.npy --queries queries.npy [--top-k 20]
//!        [--radius 2,4,8] [--blocks M] [--index-file PATH]
//!
//! Memory: the .npy rows are dropped once packed into integers, and the top-k check counts the
//! distances to every code in a histogram instead of sorting them, so a run holds the codes
//! (8 bytes each for 64 bits) and mih-rs's index, not copies of them. `rss_bytes` (resident
//! memory after the index was read back and every query ran, freed heap returned first) and
//! `peak_rss_bytes` (the process's high-water mark, the build included) come from
//! /proc/self/status (Linux; absent elsewhere).
//!
//! With `--join` (no queries), it times the self-join the way mih-rs can do one: a range search
//! around every code, keeping the ids above the code's own, on `--threads` threads (each with its
//! own searcher, over interleaved chunks of codes), `--runs` times per radius, and prints one JSON
//! object shaped like `milan bench duplicates --json`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use mih_rs::{hamdist, ls, CodeInt, Index};
use ndarray::Array2;
use serde::Serialize;

const MIH_RS_VERSION: &str = "0.3.1";

struct Args {
    codes: PathBuf,
    queries: PathBuf,
    top_k: usize,
    radius: Vec<usize>,
    blocks: Option<usize>,
    index_file: Option<PathBuf>,
    join: bool,
    threads: usize,
    runs: usize,
}

fn parse_args() -> Result<Args> {
    let mut codes = None;
    let mut queries = None;
    let mut top_k = 20;
    let mut radius = vec![2, 4, 8];
    let mut blocks = None;
    let mut index_file = None;
    let mut join = false;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runs = 3;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--codes" => codes = Some(PathBuf::from(value()?)),
            "--queries" => queries = Some(PathBuf::from(value()?)),
            "--top-k" => top_k = value()?.parse().context("--top-k")?,
            "--radius" => {
                radius = value()?
                    .split(',')
                    .map(|r| r.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--radius")?
            }
            "--blocks" => blocks = Some(value()?.parse().context("--blocks")?),
            "--index-file" => index_file = Some(PathBuf::from(value()?)),
            "--join" => join = true,
            "--threads" => threads = value()?.parse().context("--threads")?,
            "--runs" => runs = value()?.parse().context("--runs")?,
            other => bail!("unknown argument {other}"),
        }
    }
    if top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    if threads == 0 || runs == 0 {
        bail!("--threads and --runs must be at least 1");
    }
    if join && queries.is_none() {
        queries = codes.clone();
    }
    Ok(Args {
        codes: codes.ok_or_else(|| anyhow!("--codes is required"))?,
        queries: queries.ok_or_else(|| anyhow!("--queries is required"))?,
        top_k,
        radius,
        blocks,
        index_file,
        join,
        threads,
        runs,
    })
}

/// Packs a row of bytes into one integer. The byte order does not matter for Hamming distance,
/// as long as codes and queries use the same one.
trait FromRow: CodeInt {
    fn from_row(row: &[u8]) -> Self;
}

macro_rules! from_row {
    ($($t:ty),*) => {$(
        impl FromRow for $t {
            fn from_row(row: &[u8]) -> Self {
                let mut bytes = [0u8; std::mem::size_of::<$t>()];
                bytes.copy_from_slice(row);
                <$t>::from_be_bytes(bytes)
            }
        }
    )*};
}
from_row!(u8, u16, u32, u64);

#[derive(Serialize)]
struct Timing {
    mean_us: f64,
    median_us: f64,
    p99_us: f64,
}

fn timing(mut micros: Vec<f64>) -> Timing {
    micros.sort_by(f64::total_cmp);
    let n = micros.len().max(1);
    let at = |q: f64| micros.get(((n - 1) as f64 * q).round() as usize).copied().unwrap_or(0.0);
    Timing {
        mean_us: micros.iter().sum::<f64>() / n as f64,
        median_us: at(0.5),
        p99_us: at(0.99),
    }
}

#[derive(Serialize)]
struct TopKReport {
    k: usize,
    #[serde(flatten)]
    timing: Timing,
    /// Tie-aware: returned distinct ids whose distance is at most the exact k-th distance, over k.
    recall: f64,
    /// Fraction of queries whose k-th result is at the exact k-th distance.
    kth_distance_match: f64,
    scan_mean_us: f64,
}

#[derive(Serialize)]
struct RadiusReport {
    r: usize,
    #[serde(flatten)]
    timing: Timing,
    mean_hits: f64,
    exact_mean_hits: f64,
    /// Fraction of the linear scan's answers returned.
    recall: f64,
    /// Returned ids farther than r (should be 0).
    false_hits: usize,
    scan_mean_us: f64,
}

#[derive(Serialize)]
struct ScanReport {
    mean_us: f64,
    median_us: f64,
}

#[derive(Serialize)]
struct Report {
    library: &'static str,
    version: &'static str,
    queries: usize,
    codes: usize,
    bits: usize,
    substrings: usize,
    load_codes_s: f64,
    build_s: f64,
    open_ms: f64,
    serialized_bytes_per_code: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_rss_bytes: Option<u64>,
    top_k: TopKReport,
    radius: Vec<RadiusReport>,
    linear_scan: ScanReport,
}

#[derive(Serialize)]
struct Skipped {
    library: &'static str,
    version: &'static str,
    skipped: String,
}

fn read_rows(path: &PathBuf) -> Result<Array2<u8>> {
    ndarray_npy::read_npy(path).map_err(|err| anyhow!("{}: not a uint8 [n, bytes] .npy array: {err}", path.display()))
}

/// Packs the rows into integers, dropping the rows as soon as they are packed.
fn to_codes<T: FromRow>(rows: Array2<u8>) -> Vec<T> {
    let width = rows.ncols();
    if width == 0 {
        return Vec::new();
    }
    match rows.as_slice() {
        Some(bytes) => bytes.chunks_exact(width).map(T::from_row).collect(),
        None => rows.rows().into_iter().map(|row| T::from_row(&row.to_vec())).collect(),
    }
}

/// A "VmRSS:"-style line of /proc/self/status in bytes; None where there is no such file.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Gives freed heap back to the system, so that the resident memory measured afterwards is
/// what is still in use (glibc keeps small freed blocks otherwise).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only returns unused heap pages to the kernel.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// The distance of the k-th nearest code (k >= 1, k <= codes.len()), from a histogram of the
/// distances to every code: one pass, no buffer of n entries.
fn kth_distance<T: CodeInt>(codes: &[T], q: T, k: usize, counts: &mut Vec<usize>) -> usize {
    counts.clear();
    counts.resize(T::dimensions() + 1, 0);
    for &code in codes {
        counts[hamdist(code, q)] += 1;
    }
    let mut seen = 0;
    for (d, &count) in counts.iter().enumerate() {
        seen += count;
        if seen >= k {
            return d;
        }
    }
    unreachable!("k is at most the number of codes")
}

fn run<T: FromRow>(args: &Args, rows: Array2<u8>, query_rows: Array2<u8>, load_codes_s: f64) -> Result<Report> {
    let bits = rows.ncols() * 8;
    let codes: Vec<T> = to_codes(rows);
    let queries: Vec<T> = to_codes(query_rows);
    if codes.is_empty() {
        bail!("{} holds no codes", args.codes.display());
    }
    let k = args.top_k.min(codes.len());

    let started = Instant::now();
    let built = match args.blocks {
        Some(m) => Index::with_blocks(codes, m)?,
        None => Index::new(codes)?,
    };
    let build_s = started.elapsed().as_secs_f64();

    // "Open": serialize to a file, then time reading it back (mih-rs has no mmap form).
    let index_file = args
        .index_file
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("mihrs-{}.index", std::process::id())));
    {
        let mut out = BufWriter::new(File::create(&index_file).with_context(|| format!("{}", index_file.display()))?);
        built.serialize_into(&mut out)?;
        out.flush()?;
    }
    let serialized_bytes = std::fs::metadata(&index_file)?.len();
    drop(built);
    release_free_memory();
    let started = Instant::now();
    let index = Index::<T>::deserialize_from(BufReader::new(File::open(&index_file)?))?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    if args.index_file.is_none() {
        let _ = std::fs::remove_file(&index_file);
    }
    let codes = index.codes();

    // Top-k: mih-rs, then the exact k-th distance from a linear scan.
    let mut searcher = index.topk_searcher();
    let mut answers: Vec<Vec<u32>> = Vec::with_capacity(queries.len());
    let mut micros = Vec::with_capacity(queries.len());
    for &q in &queries {
        let started = Instant::now();
        let ids = searcher.run(q, k);
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        answers.push(ids.to_vec());
    }
    let mut scan_micros = Vec::with_capacity(queries.len());
    let mut kth_exact = Vec::with_capacity(queries.len());
    let mut counts = Vec::new();
    for &q in &queries {
        let started = Instant::now();
        let kth = kth_distance(codes, q, k, &mut counts);
        scan_micros.push(started.elapsed().as_secs_f64() * 1e6);
        kth_exact.push(kth);
    }
    let mut found = 0usize;
    let mut kth_match = 0usize;
    for ((ids, &q), &kth) in answers.iter().zip(&queries).zip(&kth_exact) {
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        found += distinct.iter().filter(|&&id| hamdist(codes[id as usize], q) <= kth).count().min(k);
        let returned_kth = ids.iter().map(|&id| hamdist(codes[id as usize], q)).max();
        if ids.len() == k && returned_kth == Some(kth) {
            kth_match += 1;
        }
    }
    let nq = queries.len().max(1) as f64;
    let scan = timing(scan_micros);
    let top_k = TopKReport {
        k,
        timing: timing(micros),
        recall: if queries.is_empty() { 1.0 } else { found as f64 / (k as f64 * nq) },
        kth_distance_match: if queries.is_empty() { 1.0 } else { kth_match as f64 / nq },
        scan_mean_us: scan.mean_us,
    };

    // Radius: mih-rs, then ls::range_search as the exact answer.
    let mut radius = Vec::new();
    for &r in &args.radius {
        let mut searcher = index.range_searcher();
        let mut answers: Vec<Vec<u32>> = Vec::with_capacity(queries.len());
        let mut micros = Vec::with_capacity(queries.len());
        for &q in &queries {
            let started = Instant::now();
            let ids = searcher.run(q, r);
            micros.push(started.elapsed().as_secs_f64() * 1e6);
            answers.push(ids.to_vec());
        }
        let mut exact_total = 0usize;
        let mut found = 0usize;
        let mut false_hits = 0usize;
        let mut scan_micros = Vec::with_capacity(queries.len());
        let mut truth = Vec::new();
        for (ids, &q) in answers.iter().zip(&queries) {
            let started = Instant::now();
            ls::range_search_with_buf(codes, q, r, &mut truth);
            scan_micros.push(started.elapsed().as_secs_f64() * 1e6);
            exact_total += truth.len();
            // Both lists are sorted by id.
            found += truth.iter().filter(|id| ids.binary_search(id).is_ok()).count();
            false_hits += ids.iter().filter(|&&id| hamdist(codes[id as usize], q) > r).count();
        }
        radius.push(RadiusReport {
            r,
            timing: timing(micros),
            mean_hits: answers.iter().map(Vec::len).sum::<usize>() as f64 / nq,
            exact_mean_hits: exact_total as f64 / nq,
            recall: if exact_total == 0 { 1.0 } else { found as f64 / exact_total as f64 },
            false_hits,
            scan_mean_us: timing(scan_micros).mean_us,
        });
    }

    release_free_memory();
    let rss_bytes = proc_status_bytes("VmRSS:");
    let peak_rss_bytes = proc_status_bytes("VmHWM:");
    Ok(Report {
        library: "mih-rs",
        version: MIH_RS_VERSION,
        queries: queries.len(),
        codes: codes.len(),
        bits,
        substrings: index.num_blocks(),
        load_codes_s,
        build_s,
        open_ms,
        serialized_bytes_per_code: serialized_bytes as f64 / codes.len() as f64,
        rss_bytes,
        peak_rss_bytes,
        top_k,
        radius,
        linear_scan: ScanReport {
            mean_us: scan.mean_us,
            median_us: scan.median_us,
        },
    })
}

#[derive(Serialize)]
struct JoinRadius {
    r: usize,
    pairs: u64,
    seconds: Vec<f64>,
    median_s: f64,
}

#[derive(Serialize)]
struct JoinReport {
    library: &'static str,
    version: &'static str,
    codes: usize,
    bits: usize,
    substrings: usize,
    threads: usize,
    build_s: f64,
    joins: Vec<JoinRadius>,
}

/// Codes per chunk a thread takes in turn: small enough to share the work evenly.
const JOIN_CHUNK: usize = 4096;

fn run_join<T: FromRow + Sync>(args: &Args, rows: Array2<u8>) -> Result<JoinReport> {
    let bits = rows.ncols() * 8;
    let codes: Vec<T> = to_codes(rows);
    if codes.is_empty() {
        bail!("{} holds no codes", args.codes.display());
    }
    let started = Instant::now();
    let index = match args.blocks {
        Some(m) => Index::with_blocks(codes, m)?,
        None => Index::new(codes)?,
    };
    let build_s = started.elapsed().as_secs_f64();
    let codes = index.codes();
    let chunks = codes.len().div_ceil(JOIN_CHUNK);
    let mut joins = Vec::new();
    for &r in &args.radius {
        let mut seconds = Vec::new();
        let mut pairs = 0u64;
        for _ in 0..args.runs {
            let started = Instant::now();
            pairs = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..args.threads)
                    .map(|t| {
                        let index = &index;
                        scope.spawn(move || {
                            let mut searcher = index.range_searcher();
                            let mut pairs = 0u64;
                            for chunk in (t..chunks).step_by(args.threads) {
                                let first = chunk * JOIN_CHUNK;
                                let last = (first + JOIN_CHUNK).min(codes.len());
                                for i in first..last {
                                    let ids = searcher.run(codes[i], r);
                                    pairs += ids.iter().filter(|&&id| id as usize > i).count() as u64;
                                }
                            }
                            pairs
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().expect("worker")).sum()
            });
            seconds.push(started.elapsed().as_secs_f64());
        }
        let mut sorted = seconds.clone();
        sorted.sort_by(f64::total_cmp);
        joins.push(JoinRadius { r, pairs, median_s: sorted[sorted.len() / 2], seconds });
    }
    Ok(JoinReport {
        library: "mih-rs",
        version: MIH_RS_VERSION,
        codes: codes.len(),
        bits,
        substrings: index.num_blocks(),
        threads: args.threads,
        build_s,
        joins,
    })
}

/// Prints why mih-rs cannot take codes of `width` bytes, in place of a report.
fn print_skipped(width: usize) -> Result<()> {
    let skipped = Skipped {
        library: "mih-rs",
        version: MIH_RS_VERSION,
        skipped: format!("mih-rs {MIH_RS_VERSION} takes 8, 16, 32 or 64-bit codes, not {}", width * 8),
    };
    println!("{}", serde_json::to_string(&skipped)?);
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if args.join {
        let rows = read_rows(&args.codes)?;
        let report = match rows.ncols() {
            1 => run_join::<u8>(&args, rows)?,
            2 => run_join::<u16>(&args, rows)?,
            4 => run_join::<u32>(&args, rows)?,
            8 => run_join::<u64>(&args, rows)?,
            width => return print_skipped(width),
        };
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let started = Instant::now();
    let rows = read_rows(&args.codes)?;
    let load_codes_s = started.elapsed().as_secs_f64();
    let query_rows = read_rows(&args.queries)?;
    if rows.ncols() != query_rows.ncols() {
        bail!("codes are {} bytes wide but queries {}", rows.ncols(), query_rows.ncols());
    }
    let report = match rows.ncols() {
        1 => run::<u8>(&args, rows, query_rows, load_codes_s)?,
        2 => run::<u16>(&args, rows, query_rows, load_codes_s)?,
        4 => run::<u32>(&args, rows, query_rows, load_codes_s)?,
        8 => run::<u64>(&args, rows, query_rows, load_codes_s)?,
        width => return print_skipped(width),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
