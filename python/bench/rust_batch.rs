//! The Rust batch figure that `search_bench.py` sets Python's batch search against: what
//! `Index.search(queries, k)` runs, from Rust, with nothing of Python around it.
//!
//! Each run takes a fresh reader (as every Python call does), searches every query of the
//! codes file as one batch on every core (the crate's thread pool) and collects the top k; the
//! times of all runs are printed as one JSON object.
//!
//! ```sh
//! cargo run --release --manifest-path python/Cargo.toml --example rust_batch -- INDEX QUERIES.npy K RUNS
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
    let mut seconds = Vec::with_capacity(runs);
    let mut answered = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let reader = index.reader()?;
        let answers = reader.search_batch(&queries)?.top_k(k)?;
        seconds.push(started.elapsed().as_secs_f64());
        answered = answers.iter().filter(|hits| hits.len() == k).count();
    }
    println!(
        "{{\"queries\": {}, \"k\": {k}, \"full_answers\": {answered}, \"threads\": {}, \"seconds\": {seconds:?}}}",
        queries.len(),
        rayon::current_num_threads()
    );
    Ok(())
}
