//! The Rust batch figure that `search_bench.py` sets Python's batch search against: what
//! `Index.search(queries, k)` runs, from Rust, with nothing of Python around it.
//!
//! After one untimed warm-up run, each run takes a fresh reader (as every Python call does),
//! searches every query of the codes file as one batch on every core (the crate's thread pool)
//! and collects the top k; the wall-clock and CPU times (all threads of the process) of all runs
//! are printed as one JSON object. CPU time moves less than wall-clock time on a machine whose
//! cores other jobs share.
//!
//! ```sh
//! PYO3_BUILD_EXTENSION_MODULE=1 cargo run --release --manifest-path python/Cargo.toml \
//!     --example rust_batch -- INDEX QUERIES.npy K RUNS
//! ```

use std::time::Instant;

use milan::npy::CodesReader;
use milan::Index;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, index, queries, k, runs] = args.as_slice() else {
        return Err("usage: rust_batch INDEX QUERIES.npy K RUNS".into());
    };
    let (k, runs): (usize, usize) = (k.parse()?, runs.parse()?);
    let index = Index::open_read_only(index)?;
    let queries = CodesReader::open(queries)?.read_all()?;
    // One untimed run first: the Python process it is set against searched its index before.
    index.reader()?.search_batch(&queries)?.top_k(k)?;
    let (mut seconds, mut cpu_seconds) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut answered = 0;
    for _ in 0..runs {
        let (started, cpu_started) = (Instant::now(), process_cpu_seconds());
        let reader = index.reader()?;
        let answers = reader.search_batch(&queries)?.top_k(k)?;
        seconds.push(started.elapsed().as_secs_f64());
        cpu_seconds.push(process_cpu_seconds() - cpu_started);
        answered = answers.iter().filter(|hits| hits.len() == k).count();
    }
    println!(
        "{{\"queries\": {}, \"k\": {k}, \"full_answers\": {answered}, \"threads\": {}, \"seconds\": {seconds:?}, \"cpu_seconds\": {cpu_seconds:?}}}",
        queries.len(),
        rayon::current_num_threads()
    );
    Ok(())
}

/// CPU time of every thread of the process so far (what Python's `time.process_time` reads).
fn process_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}
