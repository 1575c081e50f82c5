//! `milan query`: exact top-k or radius search by code, by a file of codes, or by stored id.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{ArgGroup, Args};
use milan::{Code, Hit, Reader};
use serde::Serialize;

use milan::report::{results_page, write_atomically, QueryRow, Tile};
use milan::text::for_terminal;

use crate::codes_file::read_codes;
use crate::extractor_args::ExtractorArgs;
use crate::Outcome;

#[derive(Args)]
#[command(group(ArgGroup::new("query").required(true).args(["code", "codes", "id", "image"])))]
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
    /// Query by images (repeat the flag for several), coded with the index's model and head.
    /// Each must be a regular file of at most 256 MiB; a truncated JPEG is refused.
    #[arg(long, num_args = 1..)]
    image: Vec<PathBuf>,
    /// The k nearest codes.
    #[arg(long)]
    top_k: Option<usize>,
    /// Every code within this Hamming distance.
    #[arg(long)]
    radius: Option<u32>,
    /// One JSON object per line per query: {"query": i, "results": [{"id", "distance", "key"}]}.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page of the results, with thumbnails (of regular files
    /// up to 256 MiB only; others show as missing). Written whole or not at all; refused inside
    /// the index directory or over an input.
    #[arg(long)]
    html: Option<PathBuf>,
    #[command(flatten)]
    extractor: ExtractorArgs,
}

/// What the HTML page shows for a query.
#[derive(Default)]
struct QueryInfo {
    caption: String,
    image: Option<PathBuf>,
    label: Option<String>,
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
    if let Some(html) = &args.html {
        let mut inputs: Vec<&Path> = args.image.iter().map(PathBuf::as_path).collect();
        inputs.extend(args.codes.as_deref());
        inputs.extend(args.extractor.model.as_deref());
        crate::outputs::check_output(html, Some(&args.dir), &inputs)?;
    }
    let index = crate::open::read_only(&args.dir)?;
    let reader = index.reader()?;
    let mut infos = Vec::new();
    let results: Vec<Vec<Hit>> = if let Some(id) = args.id {
        let search = reader.search_id(id)?;
        let item = reader.item(id)?.unwrap_or_default();
        infos.push(QueryInfo {
            caption: item.key.clone().unwrap_or_else(|| format!("id {id}")),
            image: item.key.map(PathBuf::from).filter(|p| p.is_file()),
            label: item.label,
        });
        vec![search_one(&search, &args)?]
    } else if !args.image.is_empty() {
        let mut extractor = args.extractor.open(index.model())?;
        let mut results = Vec::new();
        for image in &args.image {
            let coded = milan::ingest::code_image(&index, &mut extractor, image)?;
            // An image already in the index lends the query its stored label.
            let label = match reader.ids_with_content_hash(&coded.content_hash)?.first() {
                Some(&id) => reader.item(id)?.and_then(|item| item.label),
                None => None,
            };
            infos.push(QueryInfo {
                caption: image.to_string_lossy().into_owned(),
                image: Some(image.clone()),
                label,
            });
            results.push(search_one(&reader.search(&coded.code)?, &args)?);
        }
        results
    } else {
        let queries = match (&args.code, &args.codes) {
            (Some(hex), _) => vec![Code::from_hex(hex)?],
            (_, Some(path)) => read_codes(path, reader.bits())?,
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
    if let Some(path) = &args.html {
        write_html(&reader, &results, infos, path)?;
    }
    Ok(Outcome::Success)
}

fn write_html(
    reader: &Reader,
    results: &[Vec<Hit>],
    mut infos: Vec<QueryInfo>,
    path: &Path,
) -> Result<()> {
    infos.resize_with(results.len(), QueryInfo::default);
    let mut rows = Vec::new();
    for (i, (hits, info)) in results.iter().zip(infos).enumerate() {
        let caption = if info.caption.is_empty() {
            format!("query {i}")
        } else {
            info.caption
        };
        let mut row = QueryRow {
            query: Tile {
                caption,
                label: info.label,
                distance: None,
                image: info.image,
            },
            results: Vec::new(),
        };
        for hit in hits {
            let item = reader.item(hit.id)?.unwrap_or_default();
            row.results.push(Tile {
                caption: item.key.clone().unwrap_or_else(|| format!("id {}", hit.id)),
                label: item.label,
                distance: Some(hit.distance),
                image: item.key.map(PathBuf::from).filter(|p| p.is_file()),
            });
        }
        rows.push(row);
    }
    let page = results_page("milan query results", &rows);
    write_atomically(path, page.as_bytes())?;
    eprintln!("wrote {}", for_terminal(&path.to_string_lossy()));
    Ok(())
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
                    for_terminal(key.unwrap_or(""))
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
