//! `milan bench`: `search` times queries on one thread against the linear scan and checks every
//! answer; `duplicates` times the self-join on every core and checks a sample of its codes;
//! `generate` writes the synthetic workloads the benchmarks use; `extract` and `images`, on the
//! image side, are in `bench_images.rs`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use milan::{Code, Hit, Index, Info, Reader, Strategy};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::codes_file::{read_codes, write_codes};
use crate::Outcome;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time exact top-k and radius queries (one thread) and check each against a linear scan.
    Search(SearchArgs),
    /// Time the self-join (every pair within a radius, as `index duplicates` finds them) on every
    /// core, and check the pairs of a sample of codes against radius searches.
    Duplicates(DuplicatesBenchArgs),
    /// Write synthetic codes: clustered around random centres, or uniform with --centres 0.
    Generate(GenerateArgs),
    /// Images per second: the bare model against a whole `index add` (decode, model, head, writes).
    Extract(crate::bench_images::ExtractBenchArgs),
    /// Write test images: source images resized, made distinct by a little seeded noise, saved as
    /// JPEG or PNG (class folders kept), as many as asked for.
    Images(crate::bench_images::ImagesArgs),
}

#[derive(Args)]
pub struct DuplicatesBenchArgs {
    /// The index directory.
    dir: PathBuf,
    /// Radii, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8")]
    radius: Vec<u32>,
    /// Timed runs per radius; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Codes, evenly spaced over the ids, whose pairs are checked against radius searches.
    #[arg(long, default_value_t = 1000)]
    check: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SearchArgs {
    /// The index directory.
    dir: PathBuf,
    /// Query codes: a numpy uint8 array [n, bits / 8].
    #[arg(long)]
    codes: PathBuf,
    /// k for the top-k queries.
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    /// Radii for the radius queries, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8")]
    radius: Vec<u32>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// How the timed searches run: auto (the planner picks per query), multi-index, or scan.
    /// Multi-index is bounded: a query that would probe more than max(2^20, 64 scans' worth of)
    /// buckets is refused, and the command fails naming the probes it would need (auto and scan
    /// give the same answers at a scan's cost at most).
    #[arg(long, value_enum, default_value_t = StrategyArg::Auto)]
    strategy: StrategyArg,
    /// Take a fresh reader before each search, as a long-lived server would, so that each one
    /// sees the last commit of any process (catching up with it first: that time counts in the
    /// search's time and is also reported alone). Each answer is then checked against a scan of
    /// the same snapshot right after it (see --check-every), and the searches of a query follow
    /// one another (top-k, then each radius). Without it, one reader serves the whole run.
    #[arg(long)]
    follow: bool,
    /// Go round the queries until this many seconds have passed (the first query begun after
    /// that is the last) instead of once. Searches run as with --follow (each checked at once),
    /// with one reader unless --follow is given.
    #[arg(long, value_parser = positive_seconds)]
    duration: Option<f64>,
    /// Go round the queries until this file exists (or --duration ends, if given, first): the
    /// first query begun after it appeared is the last, so the run's last searches see every
    /// commit made before it appeared. Searches run as with --duration.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Create this (empty) file once the index is open and the queries read, just before the
    /// first timed search: another process can wait for it to start what the searches should
    /// overlap.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// With --follow, --duration or --stop-file: write every timed search to this file, one
    /// line each: the search (top-K, radius-R, or reader for a fresh reader's part of the
    /// search after it), the seconds from the first search to its start, and its microseconds,
    /// tab separated. For percentiles over several runs, or over part of one.
    #[arg(long)]
    latencies: Option<PathBuf>,
    /// With --follow, --duration or --stop-file: check the searches of one query in this many
    /// against the scan (the first query's always), so that the scans, which evict the caches,
    /// do not dominate the run. Recall and the scan's times are then over the checked queries.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    check_every: u64,
}

fn positive_seconds(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(seconds),
        _ => Err(format!("{text}: give a positive number of seconds")),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StrategyArg {
    Auto,
    MultiIndex,
    Scan,
}

impl From<StrategyArg> for Strategy {
    fn from(arg: StrategyArg) -> Strategy {
        match arg {
            StrategyArg::Auto => Strategy::Auto,
            StrategyArg::MultiIndex => Strategy::MultiIndex,
            StrategyArg::Scan => Strategy::Scan,
        }
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Code length in bits.
    #[arg(long)]
    bits: u32,
    /// Number of codes.
    #[arg(long)]
    count: usize,
    /// Random centre codes to draw around; 0 for uniform random codes.
    #[arg(long, default_value_t = 1000)]
    centres: usize,
    /// Probability of flipping each bit of the centre.
    #[arg(long, default_value_t = 0.12)]
    flip: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output .npy file for the codes.
    #[arg(long)]
    out: PathBuf,
    /// Also draw this many queries from the same distribution...
    #[arg(long, default_value_t = 0)]
    queries: usize,
    /// ...into this file.
    #[arg(long)]
    queries_out: Option<PathBuf>,
}

pub fn run(command: BenchCommand) -> Result<Outcome> {
    match command {
        BenchCommand::Search(args) => search(args),
        BenchCommand::Duplicates(args) => duplicates(args),
        BenchCommand::Generate(args) => generate(args),
        BenchCommand::Extract(args) => crate::bench_images::extract(args),
        BenchCommand::Images(args) => crate::bench_images::images(args),
    }
}

#[derive(Serialize)]
struct Timing {
    mean_us: f64,
    median_us: f64,
    p99_us: f64,
    max_us: f64,
}

fn timing(mut micros: Vec<f64>) -> Timing {
    micros.sort_by(f64::total_cmp);
    let n = micros.len().max(1);
    let at = |q: f64| {
        micros
            .get(((n - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Timing {
        mean_us: micros.iter().sum::<f64>() / n as f64,
        median_us: at(0.5),
        p99_us: at(0.99),
        max_us: micros.last().copied().unwrap_or(0.0),
    }
}

#[derive(Serialize)]
struct TopKReport {
    k: usize,
    #[serde(flatten)]
    timing: Timing,
    recall: f64,
    scan_mean_us: f64,
    scan_p99_us: f64,
}

#[derive(Serialize)]
struct RadiusReport {
    r: u32,
    #[serde(flatten)]
    timing: Timing,
    mean_hits: f64,
    recall: f64,
    scan_mean_us: f64,
    scan_p99_us: f64,
}

#[derive(Serialize)]
struct ScanReport {
    mean_us: f64,
    median_us: f64,
}

#[derive(Serialize)]
struct Report {
    queries: usize,
    codes: u64,
    bits: u32,
    substrings: u32,
    open_ms: f64,
    memory_bytes_per_code: f64,
    top_k: TopKReport,
    radius: Vec<RadiusReport>,
    linear_scan: ScanReport,
    /// The process's resident memory after the open and every query; `None` (null) where the
    /// system does not tell.
    rss_bytes: Option<u64>,
    /// The same before the open: the difference is what the open index holds resident.
    rss_before_open_bytes: Option<u64>,
    /// How a run with --follow, --duration or --stop-file went; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<RunReport>,
}

/// A run of rounds over the queries (--follow, --duration, --stop-file).
#[derive(Serialize)]
struct RunReport {
    /// Whether each search took a fresh reader.
    follow: bool,
    /// Wall time from the first timed search to the end of the last check.
    seconds: f64,
    /// Passes over the query file begun (the last may be partial).
    rounds: usize,
    /// Queries whose searches were checked against the scan (one in --check-every).
    checked: usize,
    /// The time each fresh reader took (`Index::reader`, with its catch-up); absent without
    /// --follow.
    reader: Option<Timing>,
    /// Live codes in the snapshot of the first and of the last search.
    first_codes: u64,
    last_codes: u64,
    /// How often a search's snapshot held a different number of live codes than the search's
    /// before it: a lower bound on the commits the run saw.
    codes_changes: usize,
}

/// The process's resident memory in bytes (VmRSS in /proc/self/status), where readable.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

/// Times `run` once per query; returns the answers and the times in microseconds.
fn timed(
    queries: &[Code],
    mut run: impl FnMut(&Code) -> milan::Result<Vec<Hit>>,
) -> Result<(Vec<Vec<Hit>>, Vec<f64>)> {
    let mut answers = Vec::with_capacity(queries.len());
    let mut micros = Vec::with_capacity(queries.len());
    for query in queries {
        let started = Instant::now();
        let hits = run(query)?;
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        answers.push(hits);
    }
    Ok((answers, micros))
}

/// The index at `dir`, opened read-only, its info and the milliseconds the open took; fails when
/// a radius is larger than the code length.
fn open_for_radii(dir: &Path, radii: &[u32]) -> Result<(Index, Info, f64)> {
    let started = Instant::now();
    let index = crate::open::read_only(dir)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let info = index.info();
    if let Some(r) = radii.iter().find(|&&r| r > info.bits) {
        bail!(
            "radius {r} is larger than the code length ({} bits)",
            info.bits
        );
    }
    Ok((index, info, open_ms))
}

/// Creates the --ready-file, if one was given.
fn ready(path: Option<&Path>) -> Result<()> {
    if let Some(path) = path {
        std::fs::write(path, b"")
            .map_err(|err| anyhow::anyhow!("{}: cannot create: {err}", path.display()))?;
    }
    Ok(())
}

/// What [`rounds`] measured, as the report's parts.
struct Rounds {
    queries: usize,
    top_k: TopKReport,
    radius: Vec<RadiusReport>,
    scan_median_us: f64,
    report: RunReport,
}

/// One search's times, answers against the scan's, and hits.
#[derive(Default)]
struct Tally {
    micros: Vec<f64>,
    scan_micros: Vec<f64>,
    expected: usize,
    found: usize,
    hits: usize,
}

impl Tally {
    fn recall(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            self.found as f64 / self.expected as f64
        }
    }
}

/// The searches of `--follow`, `--duration` and `--stop-file`: rounds over the queries, each
/// query's top-k and then each radius, the searches of one query in `--check-every` checked at
/// once against a scan of the same snapshot; with --follow a fresh reader for each search (its
/// time counted in the search's), otherwise `reader` throughout.
fn rounds(args: &SearchArgs, index: &Index, reader: Reader, queries: &[Code]) -> Result<Rounds> {
    let strategy = Strategy::from(args.strategy);
    let k = args.top_k;
    // None: the top-k search; Some(r): the radius-r search.
    let searches: Vec<Option<u32>> = std::iter::once(None)
        .chain(args.radius.iter().map(|&r| Some(r)))
        .collect();
    let run = |reader: &Reader, query: &Code, search: Option<u32>, strategy: Strategy| {
        let search_of = reader.search(query)?.strategy(strategy);
        match search {
            None => search_of.top_k(k),
            Some(r) => search_of.within(r),
        }
    };
    let shared = (!args.follow).then_some(reader);
    let mut tallies: Vec<Tally> = searches.iter().map(|_| Tally::default()).collect();
    let mut reader_micros = Vec::new();
    let (mut first_codes, mut last_codes, mut codes_changes) = (None, 0u64, 0usize);
    let (mut done, mut rounds, mut checked) = (0usize, 0usize, 0usize);
    let stop = |started: &Instant| {
        args.duration
            .is_some_and(|limit| started.elapsed().as_secs_f64() >= limit)
            || args.stop_file.as_deref().is_some_and(Path::exists)
    };
    let once = args.duration.is_none() && args.stop_file.is_none();
    let labels: Vec<String> = searches
        .iter()
        .map(|search| match search {
            None => format!("top-{k}"),
            Some(r) => format!("radius-{r}"),
        })
        .collect();
    // (search, or searches.len() for a reader; start; microseconds), written at the end.
    let mut log: Vec<(usize, f64, f64)> = Vec::new();
    let logging = args.latencies.is_some();
    ready(args.ready_file.as_deref())?;
    let started = Instant::now();
    'rounds: loop {
        rounds += 1;
        for query in queries {
            let last = stop(&started);
            let check = (done as u64).is_multiple_of(args.check_every);
            checked += usize::from(check);
            for (at, (&search, tally)) in searches.iter().zip(&mut tallies).enumerate() {
                let begun = Instant::now();
                let fresh;
                let reader = match &shared {
                    Some(reader) => reader,
                    None => {
                        fresh = index.reader()?;
                        reader_micros.push(begun.elapsed().as_secs_f64() * 1e6);
                        &fresh
                    }
                };
                let hits = run(reader, query, search, strategy)?;
                tally.micros.push(begun.elapsed().as_secs_f64() * 1e6);
                if logging {
                    let start = (begun - started).as_secs_f64();
                    if let Some(&micros) = reader_micros.last().filter(|_| shared.is_none()) {
                        log.push((searches.len(), start, micros));
                    }
                    log.push((at, start, *tally.micros.last().expect("just pushed")));
                }
                tally.hits += hits.len();
                if check {
                    let scan_begun = Instant::now();
                    let truth = run(reader, query, search, Strategy::Scan)?;
                    tally
                        .scan_micros
                        .push(scan_begun.elapsed().as_secs_f64() * 1e6);
                    tally.expected += truth.len();
                    tally.found += truth.iter().filter(|hit| hits.contains(hit)).count();
                }
                let codes = reader.len();
                match first_codes {
                    None => first_codes = Some(codes),
                    Some(_) if codes != last_codes => codes_changes += 1,
                    Some(_) => {}
                }
                last_codes = codes;
            }
            done += 1;
            if last {
                break 'rounds;
            }
        }
        if once {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &args.latencies {
        let mut text = String::with_capacity(log.len() * 32);
        for (at, start, micros) in log {
            let label = labels.get(at).map_or("reader", String::as_str);
            text.push_str(&format!("{label}\t{start:.6}\t{micros:.3}\n"));
        }
        std::fs::write(path, text)
            .map_err(|err| anyhow::anyhow!("{}: cannot write: {err}", path.display()))?;
    }
    let mut tallies = tallies.into_iter();
    let top = tallies.next().expect("the top-k search");
    let recall = top.recall();
    let top_scan = timing(top.scan_micros);
    let top_k = TopKReport {
        k,
        recall,
        timing: timing(top.micros),
        scan_mean_us: top_scan.mean_us,
        scan_p99_us: top_scan.p99_us,
    };
    let radius = args
        .radius
        .iter()
        .zip(tallies)
        .map(|(&r, tally)| {
            let recall = tally.recall();
            let scan = timing(tally.scan_micros);
            RadiusReport {
                r,
                mean_hits: tally.hits as f64 / done.max(1) as f64,
                recall,
                timing: timing(tally.micros),
                scan_mean_us: scan.mean_us,
                scan_p99_us: scan.p99_us,
            }
        })
        .collect();
    Ok(Rounds {
        queries: done,
        top_k,
        radius,
        scan_median_us: top_scan.median_us,
        report: RunReport {
            follow: args.follow,
            seconds,
            rounds,
            checked,
            reader: args.follow.then(|| timing(reader_micros)),
            first_codes: first_codes.unwrap_or(0),
            last_codes,
            codes_changes,
        },
    })
}

/// Fraction of the scan's answers also returned, over all queries.
fn recall(answers: &[Vec<Hit>], truth: &[Vec<Hit>]) -> f64 {
    let expected: usize = truth.iter().map(Vec::len).sum();
    if expected == 0 {
        return 1.0;
    }
    let found: usize = answers
        .iter()
        .zip(truth)
        .map(|(a, t)| t.iter().filter(|hit| a.contains(hit)).count())
        .sum();
    found as f64 / expected as f64
}

fn search(args: SearchArgs) -> Result<Outcome> {
    if args.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let rss_before_open_bytes = resident_bytes();
    let (index, info, open_ms) = open_for_radii(&args.dir, &args.radius)?;
    let reader = index.reader()?;
    let queries = read_codes(&args.codes, info.bits)?;
    let k = args.top_k;
    let strategy = Strategy::from(args.strategy);
    if args.follow || args.duration.is_some() || args.stop_file.is_some() {
        if queries.is_empty() {
            bail!("{}: no queries", args.codes.display());
        }
        let run = rounds(&args, &index, reader, &queries)?;
        let report = Report {
            queries: run.queries,
            codes: info.len,
            bits: info.bits,
            substrings: info.substrings,
            open_ms,
            memory_bytes_per_code: info.memory_bytes as f64 / info.len.max(1) as f64,
            linear_scan: ScanReport {
                mean_us: run.top_k.scan_mean_us,
                median_us: run.scan_median_us,
            },
            top_k: run.top_k,
            radius: run.radius,
            rss_bytes: resident_bytes(),
            rss_before_open_bytes,
            run: Some(run.report),
        };
        return print_search(&report, args.json);
    }
    if args.latencies.is_some() || args.check_every != 1 {
        bail!("--latencies and --check-every need --follow, --duration or --stop-file");
    }
    ready(args.ready_file.as_deref())?;
    let (answers, micros) = timed(&queries, |q| reader.search(q)?.strategy(strategy).top_k(k))?;
    let (truth, scan_micros) = timed(&queries, |q| {
        reader.search(q)?.strategy(Strategy::Scan).top_k(k)
    })?;
    let scan = timing(scan_micros);
    let top_k = TopKReport {
        k,
        recall: recall(&answers, &truth),
        timing: timing(micros),
        scan_mean_us: scan.mean_us,
        scan_p99_us: scan.p99_us,
    };
    let mut radius = Vec::new();
    for &r in &args.radius {
        let (answers, micros) =
            timed(&queries, |q| reader.search(q)?.strategy(strategy).within(r))?;
        let (truth, scan_micros) = timed(&queries, |q| {
            reader.search(q)?.strategy(Strategy::Scan).within(r)
        })?;
        let radius_scan = timing(scan_micros);
        radius.push(RadiusReport {
            r,
            mean_hits: answers.iter().map(Vec::len).sum::<usize>() as f64
                / queries.len().max(1) as f64,
            recall: recall(&answers, &truth),
            timing: timing(micros),
            scan_mean_us: radius_scan.mean_us,
            scan_p99_us: radius_scan.p99_us,
        });
    }
    let report = Report {
        queries: queries.len(),
        codes: info.len,
        bits: info.bits,
        substrings: info.substrings,
        open_ms,
        memory_bytes_per_code: info.memory_bytes as f64 / info.len.max(1) as f64,
        top_k,
        radius,
        linear_scan: ScanReport {
            mean_us: scan.mean_us,
            median_us: scan.median_us,
        },
        rss_bytes: resident_bytes(),
        rss_before_open_bytes,
        run: None,
    };
    print_search(&report, args.json)
}

/// Prints a `bench search` report; fails when an answer differed from the scan's.
fn print_search(report: &Report, json: bool) -> Result<Outcome> {
    if json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        outln!(
            "{} queries on {} {}-bit codes, {} substrings; open {:.1} ms; {:.1} bytes per code in memory",
            report.queries, report.codes, report.bits, report.substrings, report.open_ms, report.memory_bytes_per_code
        )?;
        if let (Some(after), Some(before)) = (report.rss_bytes, report.rss_before_open_bytes) {
            outln!(
                "resident memory after the queries: {:.1} MiB ({:.1} bytes per code more than before the open)",
                after as f64 / (1024.0 * 1024.0),
                after.saturating_sub(before) as f64 / report.codes.max(1) as f64
            )?;
        }
        if let Some(run) = &report.run {
            outln!(
                "{} rounds in {:.2} s, {}; live codes {} at the first search, {} at the last ({} changes seen)",
                run.rounds,
                run.seconds,
                if run.follow { "a fresh reader per search" } else { "one reader" },
                run.first_codes,
                run.last_codes,
                run.codes_changes
            )?;
            if let Some(reader) = &run.reader {
                outln!(
                    "fresh reader (counted in each search's time): mean {:.2} µs, median {:.2}, p99 {:.2}, max {:.2}",
                    reader.mean_us, reader.median_us, reader.p99_us, reader.max_us
                )?;
            }
        }
        outln!(
            "{:<12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>8} {:>10}",
            "search",
            "mean µs",
            "median µs",
            "p99 µs",
            "max µs",
            "scan µs",
            "scan p99 µs",
            "recall",
            "mean hits"
        )?;
        let t = &report.top_k;
        outln!(
            "{:<12} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12.2} {:>8.3} {:>10}",
            format!("top-{}", t.k),
            t.timing.mean_us,
            t.timing.median_us,
            t.timing.p99_us,
            t.timing.max_us,
            t.scan_mean_us,
            t.scan_p99_us,
            t.recall,
            "-"
        )?;
        for r in &report.radius {
            outln!(
                "{:<12} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12.2} {:>8.3} {:>10.1}",
                format!("radius {}", r.r),
                r.timing.mean_us,
                r.timing.median_us,
                r.timing.p99_us,
                r.timing.max_us,
                r.scan_mean_us,
                r.scan_p99_us,
                r.recall,
                r.mean_hits
            )?;
        }
    }
    let exact = report.top_k.recall == 1.0 && report.radius.iter().all(|r| r.recall == 1.0);
    Ok(if exact {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

#[derive(Serialize)]
struct JoinReport {
    r: u32,
    pairs: u64,
    /// Every timed run, in seconds.
    seconds: Vec<f64>,
    median_s: f64,
    /// Sampled codes whose pairs (with later ids) equal a radius search's answer.
    checked: usize,
    mismatches: usize,
}

#[derive(Serialize)]
struct DuplicatesReport {
    codes: u64,
    bits: u32,
    substrings: u32,
    threads: usize,
    open_ms: f64,
    joins: Vec<JoinReport>,
}

fn duplicates(args: DuplicatesBenchArgs) -> Result<Outcome> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let (index, info, open_ms) = open_for_radii(&args.dir, &args.radius)?;
    let reader = index.reader()?;
    // Evenly spaced live ids, increasing, so that the pairs (ordered by `a`) meet them in turn.
    let ids: Vec<u64> = reader.ids().collect();
    let step = (ids.len() / args.check.max(1)).max(1);
    let sample: Vec<u64> = if args.check == 0 {
        Vec::new()
    } else {
        ids.iter().step_by(step).take(args.check).copied().collect()
    };
    let mut joins = Vec::new();
    for &r in &args.radius {
        let mut seconds = Vec::new();
        let mut pairs = 0u64;
        let mut found: Vec<Vec<Hit>> = vec![Vec::new(); sample.len()];
        for run in 0..args.runs {
            let mut next = 0usize;
            pairs = 0;
            let started = Instant::now();
            for batch in reader.pairs_within(r)? {
                pairs += batch.len() as u64;
                if run > 0 {
                    continue;
                }
                for pair in batch {
                    while next < sample.len() && sample[next] < pair.a {
                        next += 1;
                    }
                    if next < sample.len() && sample[next] == pair.a {
                        found[next].push(Hit {
                            distance: pair.distance,
                            id: pair.b,
                        });
                    }
                }
            }
            seconds.push(started.elapsed().as_secs_f64());
        }
        let mut mismatches = 0;
        for (&a, pairs_of_a) in sample.iter().zip(&mut found) {
            let mut truth = reader.search_id(a)?.within(r)?;
            truth.retain(|hit| hit.id > a);
            truth.sort_by_key(|hit| hit.id);
            mismatches += usize::from(*pairs_of_a != truth);
        }
        let mut sorted = seconds.clone();
        sorted.sort_by(f64::total_cmp);
        joins.push(JoinReport {
            r,
            pairs,
            median_s: sorted[sorted.len() / 2],
            seconds,
            checked: sample.len(),
            mismatches,
        });
    }
    let report = DuplicatesReport {
        codes: info.len,
        bits: info.bits,
        substrings: info.substrings,
        threads: rayon::current_num_threads(),
        open_ms,
        joins,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        outln!(
            "self-join of {} {}-bit codes, {} substrings, {} threads; open {:.1} ms",
            report.codes,
            report.bits,
            report.substrings,
            report.threads,
            report.open_ms
        )?;
        outln!(
            "{:<10} {:>14} {:>10} {:>26} {:>10}",
            "radius",
            "pairs",
            "median s",
            "runs s",
            "checked"
        )?;
        for join in &report.joins {
            let runs: Vec<String> = join.seconds.iter().map(|s| format!("{s:.3}")).collect();
            outln!(
                "{:<10} {:>14} {:>10.3} {:>26} {:>10}",
                join.r,
                join.pairs,
                join.median_s,
                runs.join(" "),
                format!("{}/{}", join.checked - join.mismatches, join.checked)
            )?;
        }
    }
    Ok(if report.joins.iter().all(|join| join.mismatches == 0) {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

fn generate(args: GenerateArgs) -> Result<Outcome> {
    let layout_ok = args.bits.is_multiple_of(8) && (8..=1024).contains(&args.bits);
    if !layout_ok {
        bail!("--bits {}: use a multiple of 8 from 8 to 1024", args.bits);
    }
    if !(0.0..=1.0).contains(&args.flip) {
        bail!("--flip {}: a probability, from 0 to 1", args.flip);
    }
    if args.queries > 0 && args.queries_out.is_none() {
        bail!("--queries needs --queries-out");
    }
    let bytes = args.bits as usize / 8;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let centres: Vec<Vec<u8>> = (0..args.centres)
        .map(|_| (0..bytes).map(|_| rng.random::<u8>()).collect())
        .collect();
    let draw = |n: usize, rng: &mut ChaCha8Rng| -> Vec<u8> {
        let mut out = Vec::with_capacity(n * bytes);
        for _ in 0..n {
            if centres.is_empty() {
                out.extend((0..bytes).map(|_| rng.random::<u8>()));
                continue;
            }
            let centre = &centres[rng.random_range(0..centres.len())];
            for &byte in centre {
                let mut flips = 0u8;
                for bit in 0..8 {
                    if rng.random_bool(args.flip) {
                        flips |= 1 << bit;
                    }
                }
                out.push(byte ^ flips);
            }
        }
        out
    };
    let codes = draw(args.count, &mut rng);
    write_codes(&args.out, bytes, &codes)?;
    if let Some(path) = &args.queries_out {
        let queries = draw(args.queries, &mut rng);
        write_codes(path, bytes, &queries)?;
    }
    outln!("wrote {} codes to {}", args.count, args.out.display())?;
    Ok(Outcome::Success)
}
