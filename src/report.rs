//! Self-contained HTML pages of retrieval results, in the style of the MiLaN papers' figures: per
//! query, the query image framed blue and its results in rank order with distance and label,
//! results of another label than the query's framed red. Thumbnails are embedded as data URIs, so
//! the page is one file that opens anywhere.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;

use crate::extract::read_image;

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

/// The whole page.
pub fn results_page(title: &str, rows: &[QueryRow]) -> String {
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
         </style></head><body><h1>{title}</h1>\
         <p>Query framed blue; results in rank order with their Hamming distance; results whose \
         label differs from the query's framed red.</p>",
        title = escape(title),
        side = THUMBNAIL_SIDE
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
    // Lets a headless browser (and the tests) tell whether every picture decoded.
    out.push_str(
        "<script>window.addEventListener('load',function(){var all=document.images,ok=0;\
         for(var i=0;i<all.length;i++){if(all[i].complete&&all[i].naturalWidth>0)ok++;}\
         document.body.setAttribute('data-images-loaded',ok+'/'+all.length);});</script>\
         </body></html>",
    );
    out
}
