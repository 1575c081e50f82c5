//! `milan query`: exact top-k or radius search by code, by a file of codes, or by stored id.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgGroup, Args};
use milan::{Code, Hit, Index, Reader};
use serde::Serialize;

use crate::codes_file::{read_codes, rows_to_codes};
use crate::Outcome;

#[derive(Args)]
#[command(group(ArgGroup::new("query").required(true).args(["code", "codes", "id"])))]
#[command(group(ArgGroup::new("mode").required(true).args(["top_k", "radius"])))]
pub struct QueryArgs {
    /// The index directory.
    dir: PathBuf,
    /// One query code in hex (two digits per byte, first bit most significant).
    #[arg(long)]
    code: Option<String>,
    /// Query codes: a numpy uint8 array [n, bits / 8].
    #[arg(long)]
    codes: Option<PathBuf>,
    /// Query by the code stored under this id.
    #[arg(long)]
    id: Option<u64>,
    /// The k nearest codes.
    #[arg(long)]
    top_k: Option<usize>,
    /// Every code within this Hamming distance.
    #[arg(long)]
    radius: Option<u32>,
    /// One JSON object per line per query: {"query": i, "results": [{"id", "distance", "key"}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct JsonHit<'a> {
    id: u64,
    distance: u32,
    key: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonQuery<'a> {
    query: usize,
    results: Vec<JsonHit<'a>>,
}

pub fn run(args: QueryArgs) -> Result<Outcome> {
    let index = Index::open_read_only(&args.dir)?;
    let reader = index.reader()?;
    let results: Vec<Vec<Hit>> = if let Some(id) = args.id {
        let search = reader.search_id(id)?;
        vec![search_one(&search, &args)?]
    } else {
        let queries = match (&args.code, &args.codes) {
            (Some(hex), _) => vec![Code::from_hex(hex)?],
            (_, Some(path)) => rows_to_codes(&read_codes(path, Some(reader.bits()))?)?,
            _ => unreachable!("clap requires one query source"),
        };
        let batch = reader.search_batch(&queries)?;
        match (args.top_k, args.radius) {
            (Some(k), _) => batch.top_k(k)?,
            (_, Some(r)) => batch.within(r)?,
            _ => unreachable!("clap requires one mode"),
        }
    };
    print_results(&reader, &results, args.json)?;
    Ok(Outcome::Success)
}

fn search_one(search: &milan::Search<'_>, args: &QueryArgs) -> Result<Vec<Hit>> {
    Ok(match (args.top_k, args.radius) {
        (Some(k), _) => search.top_k(k)?,
        (_, Some(r)) => search.within(r)?,
        _ => unreachable!("clap requires one mode"),
    })
}

fn print_results(reader: &Reader, results: &[Vec<Hit>], json: bool) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (query, hits) in results.iter().enumerate() {
        let items = hits
            .iter()
            .map(|hit| reader.item(hit.id))
            .collect::<milan::Result<Vec<_>>>()?;
        let keys: Vec<Option<&str>> = items
            .iter()
            .map(|item| item.as_ref().and_then(|item| item.key.as_deref()))
            .collect();
        if json {
            let line = JsonQuery {
                query,
                results: hits
                    .iter()
                    .zip(&keys)
                    .map(|(hit, key)| JsonHit {
                        id: hit.id,
                        distance: hit.distance,
                        key: *key,
                    })
                    .collect(),
            };
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
        } else {
            writeln!(out, "query {query}: {} results", hits.len())?;
            for (rank, (hit, key)) in hits.iter().zip(&keys).enumerate() {
                writeln!(
                    out,
                    "{:>5}  id {:>10}  distance {:>4}  {}",
                    rank + 1,
                    hit.id,
                    hit.distance,
                    key.unwrap_or("")
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
