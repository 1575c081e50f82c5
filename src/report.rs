//! Self-contained HTML pages of retrieval results, in the style of the MiLaN papers' figures: per
//! query, the query image framed blue and its results in rank order with distance and label,
//! results of another label than the query's framed red. Thumbnails are embedded as data URIs, so
//! the page is one file that opens anywhere.
//!
//! The duplicates page ([`duplicates_page`]) shows one row per group of near-duplicates.
//!
//! Pages and other outputs are written with [`write_atomically`]: whole or not at all.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{Error, Result};
#[cfg(feature = "train")]
use crate::eval::EvalReport;
use crate::extract::read_image;

/// Writes `bytes` to `path` whole or not at all: see [`write_atomically_with`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(path, |out| out.write_all(bytes))
}

/// Writes `path` whole or not at all, with what `write` writes: into `PATH.partial` beside it,
/// flushed to disk, then renamed over `path`. When anything fails, the partial file is removed
/// and `path`, old content or absent, is left as it was.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let fail = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(&partial).map_err(fail)?;
    let mut out = BufWriter::new(file);
    let written = write(&mut out)
        .and_then(|()| out.into_inner().map_err(|err| err.into_error()))
        .and_then(|file| file.sync_all())
        .and_then(|()| std::fs::rename(&partial, path));
    written.map_err(|source| {
        let _ = std::fs::remove_file(&partial);
        fail(source)
    })
}

/// Longest side of an embedded thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 160;

/// One picture on the page.
#[derive(Debug, Clone, Default)]
pub struct Tile {
    /// Caption: the key, or the id.
    pub caption: String,
    /// Class label, when known.
    pub label: Option<String>,
    /// Hamming distance to the query (none for the query itself).
    pub distance: Option<u32>,
    /// The image file, when there is one to show.
    pub image: Option<std::path::PathBuf>,
}

/// One query and its ranked results.
#[derive(Debug, Clone, Default)]
pub struct QueryRow {
    /// The query.
    pub query: Tile,
    /// The results, best first.
    pub results: Vec<Tile>,
}

/// A JPEG thumbnail of `path` as a data URI, or `None` when the file cannot be decoded.
pub fn thumbnail(path: &Path) -> Option<String> {
    let decoded = read_image(path).ok()?;
    let small =
        image::DynamicImage::ImageRgb8(decoded.image).thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE);
    let mut jpeg = Vec::new();
    small
        .to_rgb8()
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .ok()?;
    Some(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(jpeg)
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn tile_html(out: &mut String, tile: &Tile, class: &str, rank: Option<usize>) {
    let picture = match tile.image.as_deref().and_then(thumbnail) {
        Some(uri) => format!("<img src=\"{uri}\" alt=\"{}\">", escape(&tile.caption)),
        None => "<div class=\"missing\">no image</div>".to_string(),
    };
    let mut facts = Vec::new();
    if let Some(rank) = rank {
        facts.push(format!("#{rank}"));
    }
    if let Some(distance) = tile.distance {
        facts.push(format!("d={distance}"));
    }
    if let Some(label) = &tile.label {
        facts.push(escape(label));
    }
    let _ = write!(
        out,
        "<figure class=\"{class}\">{picture}<figcaption><b>{}</b><br>{}</figcaption></figure>",
        facts.join(" · "),
        escape(&tile.caption)
    );
}

/// The whole page of query results.
pub fn results_page(title: &str, rows: &[QueryRow]) -> String {
    page(title, "", rows)
}

/// The evaluation report of `milan eval`: the metric table, the precision-recall and
/// precision@k plots, and the retrieval grids of `rows`.
#[cfg(feature = "train")]
pub fn eval_page(title: &str, head_name: &str, report: &EvalReport, rows: &[QueryRow]) -> String {
    let mut body = String::new();
    let at = |curve: &[f64], cutoff: usize| {
        curve
            .get(cutoff - 1)
            .map_or("-".into(), |p| format!("{p:.4}"))
    };
    let _ = write!(
        body,
        "<h2>mAP@{k} on {queries} test queries ({train} training items), {bits} bits</h2>\
         <table><tr><th>codes</th><th>mAP@{k}</th><th>P@1</th><th>P@10</th><th>P@20</th>\
         <th>P@50</th><th>P@100</th></tr>",
        k = report.k,
        queries = report.queries,
        train = report.train_items,
        bits = report.bits
    );
    let lines = [
        (escape(head_name), report.map_at_k, &report.precision_at_k),
        (
            format!("LSH ({} bits)", report.bits),
            report.baselines.lsh,
            &report.baseline_details.lsh.precision_at_k,
        ),
        (
            "float features, Euclidean".into(),
            report.baselines.float_euclidean,
            &report.baseline_details.float_euclidean.precision_at_k,
        ),
    ];
    for (name, map, precision) in &lines {
        let _ = write!(
            body,
            "<tr><td>{name}</td><td><b>{map:.4}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            at(precision, 1),
            at(precision, 10),
            at(precision, 20),
            at(precision, 50),
            at(precision, 100)
        );
    }
    body.push_str("</table><div class=\"plots\">");
    let pr = |points: &[crate::eval::PrPoint]| -> Vec<(f64, f64)> {
        points.iter().map(|p| (p.recall, p.precision)).collect()
    };
    body.push_str(&line_chart(
        "Precision-recall over Hamming radius",
        "recall",
        "precision",
        (1.0, 1.0),
        &[
            (head_name, HEAD_COLOUR, pr(&report.pr_curve)),
            ("LSH", LSH_COLOUR, pr(&report.baseline_details.lsh.pr_curve)),
        ],
    ));
    let by_cutoff = |precision: &[f64]| -> Vec<(f64, f64)> {
        precision
            .iter()
            .enumerate()
            .map(|(i, &p)| ((i + 1) as f64, p))
            .collect()
    };
    body.push_str(&line_chart(
        "Precision at k",
        "k",
        "precision",
        (report.precision_at_k.len().max(1) as f64, 1.0),
        &[
            (head_name, HEAD_COLOUR, by_cutoff(&report.precision_at_k)),
            (
                "LSH",
                LSH_COLOUR,
                by_cutoff(&report.baseline_details.lsh.precision_at_k),
            ),
            (
                "float",
                FLOAT_COLOUR,
                by_cutoff(&report.baseline_details.float_euclidean.precision_at_k),
            ),
        ],
    ));
    body.push_str("</div><h2>Sample queries</h2>");
    page(title, &body, rows)
}

/// One line of a chart: its name, its colour and its points.
#[cfg(feature = "train")]
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

#[cfg(feature = "train")]
const HEAD_COLOUR: &str = "#1f5fd6";
#[cfg(feature = "train")]
const LSH_COLOUR: &str = "#d68a1f";
#[cfg(feature = "train")]
const FLOAT_COLOUR: &str = "#3a9a3a";

/// An inline SVG line chart of `series` (name, colour, points) on `[0, x_max] x [0, y_max]`.
#[cfg(feature = "train")]
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    (x_max, y_max): (f64, f64),
    series: &[Series<'_>],
) -> String {
    const W: f64 = 420.0;
    const H: f64 = 300.0;
    const LEFT: f64 = 50.0;
    const BOTTOM: f64 = 40.0;
    const TOP: f64 = 30.0;
    const RIGHT: f64 = 10.0;
    let x = |v: f64| LEFT + v / x_max * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - v / y_max * (H - BOTTOM - TOP);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\">\
         <text x=\"{cx}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">{t}</text>\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>",
        t = escape(title),
        cx = W / 2.0,
        pw = W - LEFT - RIGHT,
        ph = H - BOTTOM - TOP
    );
    for tick in 0..=4 {
        let f = f64::from(tick) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{:.2}</text>",
            x(f * x_max),
            H - BOTTOM + 14.0,
            trim_number(f * x_max),
            LEFT - 4.0,
            y(f * y_max) + 3.0,
            f * y_max
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\
         <text x=\"12\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 12 {:.1})\">{}</text>",
        (LEFT + W - RIGHT) / 2.0,
        H - 6.0,
        escape(x_label),
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        escape(y_label)
    );
    for (i, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|&(a, b)| {
                format!(
                    "{:.1},{:.1}",
                    x(a.clamp(0.0, x_max)),
                    y(b.clamp(0.0, y_max))
                )
            })
            .collect();
        if !path.is_empty() {
            let _ = write!(
                svg,
                "<polyline class=\"series\" data-name=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                escape(name),
                path.join(" ")
            );
        }
        let ly = TOP + 14.0 + 14.0 * i as f64;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            W - RIGHT - 130.0,
            ly - 4.0,
            W - RIGHT - 116.0,
            ly,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `1` for 1.0, `0.25` for 0.25: axis labels without trailing zeros.
#[cfg(feature = "train")]
fn trim_number(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn page(title: &str, preamble: &str, rows: &[QueryRow]) -> String {
    let mut out = page_head(title);
    out.push_str(preamble);
    out.push_str(
        "<p>Query framed blue; results in rank order with their Hamming distance; results whose \
         label differs from the query's framed red.</p>",
    );
    for row in rows {
        out.push_str("<div class=\"row\">");
        tile_html(&mut out, &row.query, "query", None);
        for (rank, result) in row.results.iter().enumerate() {
            let wrong = matches!((&row.query.label, &result.label), (Some(q), Some(r)) if q != r);
            tile_html(
                &mut out,
                result,
                if wrong { "wrong" } else { "result" },
                Some(rank + 1),
            );
        }
        out.push_str("</div>");
    }
    page_foot(&mut out);
    out
}

/// One group of near-duplicates (or of items with the same content) on the duplicates page.
#[derive(Debug, Clone, Default)]
pub struct GroupRow {
    /// What the group is, shown above its row (such as "group 3: 4 near-duplicates").
    pub heading: String,
    /// The items shown, the group's first item (the one distances are measured from) first.
    pub tiles: Vec<Tile>,
    /// Items of the group left out of `tiles`.
    pub more: usize,
}

/// The page of `milan index duplicates`: `summary` (a line of text), then one row of thumbnails
/// per group, its first item framed blue and the others, with their distance to it, framed red
/// where their label differs from its label.
pub fn duplicates_page(title: &str, summary: &str, groups: &[GroupRow]) -> String {
    let mut out = page_head(title);
    let _ = write!(
        out,
        "<p>{}</p><p>Each row is one group; its first item framed blue, the others with their \
         Hamming distance to it, framed red where their label differs from its label.</p>",
        escape(summary)
    );
    for group in groups {
        let _ = write!(
            out,
            "<h3>{}</h3><div class=\"row group\">",
            escape(&group.heading)
        );
        let first_label = group.tiles.first().and_then(|tile| tile.label.as_ref());
        for (i, tile) in group.tiles.iter().enumerate() {
            let wrong = matches!((first_label, &tile.label), (Some(f), Some(l)) if f != l);
            let class = match (i, wrong) {
                (0, _) => "query",
                (_, true) => "wrong",
                _ => "result",
            };
            tile_html(&mut out, tile, class, None);
        }
        if group.more > 0 {
            let _ = write!(out, "<p class=\"more\">and {} more</p>", group.more);
        }
        out.push_str("</div>");
    }
    page_foot(&mut out);
    out
}

/// The start of every page: the document head with its style, and the title.
fn page_head(title: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:sans-serif;margin:1em;background:#fafafa}}\
         .row{{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:1.5em;align-items:flex-start}}\
         figure{{margin:0;width:{side}px;border:4px solid #ccc;background:#fff}}\
         figure.query{{border-color:#1f5fd6}} figure.wrong{{border-color:#d62a1f}}\
         figure img{{width:100%;display:block}} .missing{{height:80px;color:#999;text-align:center}}\
         figcaption{{font-size:11px;padding:2px;overflow-wrap:anywhere}}\
         table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}} .plots{{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}}\
         svg{{background:#fff}} h3{{font-size:14px;margin:0.5em 0 0.2em}} .more{{align-self:center;color:#666}}\
         </style></head><body><h1>{title}</h1>",
        title = escape(title),
        side = THUMBNAIL_SIDE
    );
    out
}

/// The end of every page: a script that records whether every picture decoded.
fn page_foot(out: &mut String) {
    // Lets a headless browser (and the tests) tell whether every picture decoded.
    out.push_str(
        "<script>window.addEventListener('load',function(){var all=document.images,ok=0;\
         for(var i=0;i<all.length;i++){if(all[i].complete&&all[i].naturalWidth>0)ok++;}\
         document.body.setAttribute('data-images-loaded',ok+'/'+all.length);});</script>\
         </body></html>",
    );
}
