//! Search time over whole passes of queries, median of several passes: a steadier measure than
//! one pass of `milan bench search` for comparing two builds of the engine on one index.
//!
//! ```text
//! cargo bench --bench search_passes -- INDEX QUERIES.npy [PASSES] [--warm]
//! ```
//! Before each timed pass, unless `--warm`, 100 scanning top-20 searches push the index out of the
//! processor caches, as the answer checks of `milan bench search` do. Set `R=2,4` to time only
//! those radii (999 stands for top-20; default `2,4,8,999`).

use std::time::Instant;

use milan::{Code, Index, Strategy};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(index), Some(queries)) = (args.first(), args.get(1)) else {
        eprintln!("usage: search_passes INDEX QUERIES.npy [PASSES] [--warm]");
        std::process::exit(2);
    };
    let passes: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(7);
    let warm = args.iter().any(|a| a == "--warm");
    let index = Index::open_read_only(index).expect("an index");
    let rows: ndarray::Array2<u8> = ndarray_npy::read_npy(queries).expect("uint8 [n, bytes] codes");
    let codes: Vec<Code> = rows
        .rows()
        .into_iter()
        .map(|row| Code::from_bytes(row.as_slice().expect("contiguous")).expect("a code"))
        .collect();
    let reader = index.reader().expect("a reader");
    let radii: Vec<u32> = std::env::var("R")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![2, 4, 8, 999]);
    for r in radii {
        let mut means = Vec::with_capacity(passes);
        for _ in 0..passes {
            for code in codes.iter().take(if warm { 0 } else { 100 }) {
                let scan = reader.search(code).unwrap().strategy(Strategy::Scan);
                std::hint::black_box(scan.top_k(20).unwrap());
            }
            let mut total = 0.0;
            for code in &codes {
                let started = Instant::now();
                let search = reader.search(code).unwrap();
                let hits = if r == 999 {
                    search.top_k(20).unwrap()
                } else {
                    search.within(r).unwrap()
                };
                total += started.elapsed().as_secs_f64() * 1e6;
                std::hint::black_box(hits);
            }
            means.push(total / codes.len() as f64);
        }
        means.sort_by(f64::total_cmp);
        let name = if r == 999 {
            "top-20".to_string()
        } else {
            format!("radius {r}")
        };
        println!(
            "{name}: median of {passes} passes {:.3} µs per query (fastest pass {:.3})",
            means[passes / 2],
            means[0]
        );
    }
}
