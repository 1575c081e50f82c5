//! `milan index duplicates`: every pair of live items within a Hamming radius (an exact self-join,
//! [`milan::Reader::pairs_within`]), joined into groups (connected components), with items of the
//! same file content reported as their own groups.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use milan::report::{duplicates_page, write_atomically, GroupRow, Tile};
use milan::text::for_terminal;
use milan::Reader;
use serde::Serialize;

use crate::Outcome;

/// Items shown per group on the HTML page; the rest are counted.
const PAGE_ITEMS_PER_GROUP: usize = 40;
/// Groups on the HTML page when `--limit` is not given.
const PAGE_GROUPS: usize = 200;

#[derive(Args)]
pub struct DuplicatesArgs {
    /// The index directory.
    dir: PathBuf,
    /// Items within this Hamming distance of each other are near-duplicates; groups are the
    /// connected components of those pairs, so two items of a group may be farther apart.
    #[arg(long)]
    radius: u32,
    /// Report only groups of at least this many items (2 or more).
    #[arg(long, default_value_t = 2)]
    min_group: usize,
    /// Print at most this many groups of each kind (same content, near), the largest first; the
    /// summary still counts every group.
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object per line per group: {"group", "kind": "same-content" or "near",
    /// "items": [{"id", "key", "label", "distance"}]}, distances to the group's first item.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with one row of thumbnails per group (of regular
    /// files up to 256 MiB only; others show as missing): the groups --limit allows, 200 when it
    /// is not given, and up to 40 items of each. Written whole or not at all; refused inside the
    /// index directory.
    #[arg(long)]
    html: Option<PathBuf>,
}

/// What a group holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    /// Items stored with the same content hash: copies of one file.
    SameContent,
    /// Items whose codes are linked by pairs within the radius.
    Near,
}

/// One group, its ids in increasing order.
struct Group {
    kind: Kind,
    ids: Vec<u64>,
}

#[derive(Serialize)]
struct JsonItem<'a> {
    id: u64,
    key: Option<&'a str>,
    label: Option<&'a str>,
    distance: u32,
}

#[derive(Serialize)]
struct JsonGroup<'a> {
    group: usize,
    kind: Kind,
    items: Vec<JsonItem<'a>>,
}

pub fn run(args: DuplicatesArgs) -> Result<Outcome> {
    if let Some(html) = &args.html {
        crate::outputs::check_output(html, Some(&args.dir), &[])?;
    }
    if args.min_group < 2 {
        bail!(
            "--min-group {}: a group has at least 2 items",
            args.min_group
        );
    }
    let index = crate::open::read_only(&args.dir)?;
    let reader = index.reader()?;
    let started = Instant::now();
    let content = reader.content_hash_groups()?;
    let (near, pairs) = near_groups(&reader, &content, args.radius)?;
    let seconds = started.elapsed().as_secs_f64();
    let keep = |groups: Vec<Vec<u64>>, kind| -> Vec<Group> {
        let mut groups: Vec<Group> = groups
            .into_iter()
            .filter(|ids| ids.len() >= args.min_group)
            .map(|ids| Group { kind, ids })
            .collect();
        // Largest first, then by first id: the same order on every run.
        groups.sort_by(|x, y| y.ids.len().cmp(&x.ids.len()).then(x.ids.cmp(&y.ids)));
        groups
    };
    let content = keep(content, Kind::SameContent);
    let near = keep(near, Kind::Near);
    let items = |groups: &[Group]| groups.iter().map(|g| g.ids.len()).sum::<usize>();
    let summary = format!(
        "{} items, radius {}: {} pairs within the radius; {} groups of near-duplicates ({} items); \
         {} groups of items with the same content ({} items); {:.2} s",
        reader.len(),
        args.radius,
        pairs,
        near.len(),
        items(&near),
        content.len(),
        items(&content),
        seconds
    );
    let limit = args.limit.unwrap_or(usize::MAX);
    let shown: Vec<&Group> = content
        .iter()
        .take(limit)
        .chain(near.iter().take(limit))
        .collect();
    print_groups(&reader, &shown, &summary, args.json)?;
    if let Some(path) = &args.html {
        let on_page = args.limit.unwrap_or(PAGE_GROUPS);
        let paged: Vec<&Group> = content
            .iter()
            .take(on_page)
            .chain(near.iter().take(on_page))
            .collect();
        write_html(&reader, &paged, &summary, path)?;
    }
    Ok(Outcome::Success)
}

/// The connected components of the pairs within `radius`, each copy of a file content standing
/// for all of its copies (so that a near group lists distinct contents), and the number of pairs.
fn near_groups(reader: &Reader, content: &[Vec<u64>], radius: u32) -> Result<(Vec<Vec<u64>>, u64)> {
    let slots = reader.ids().last().map_or(0, |id| id as usize + 1);
    let mut sets = DisjointSets::new(slots);
    // Every copy of a content points at its first copy, which stands for them all.
    let mut stands_for: HashMap<u64, u64> = HashMap::new();
    for ids in content {
        for &id in &ids[1..] {
            stands_for.insert(id, ids[0]);
        }
    }
    let mut pairs = 0u64;
    for batch in reader.pairs_within(radius)? {
        pairs += batch.len() as u64;
        for pair in batch {
            let a = stands_for.get(&pair.a).copied().unwrap_or(pair.a);
            let b = stands_for.get(&pair.b).copied().unwrap_or(pair.b);
            if a != b {
                sets.union(a as usize, b as usize);
            }
        }
    }
    let mut by_root: HashMap<usize, Vec<u64>> = HashMap::new();
    for id in reader.ids() {
        if stands_for.contains_key(&id) {
            continue;
        }
        let root = sets.find(id as usize);
        if sets.size(root) > 1 {
            by_root.entry(root).or_default().push(id);
        }
    }
    Ok((by_root.into_values().collect(), pairs))
}

/// Union-find over slots, by size with path halving.
struct DisjointSets {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl DisjointSets {
    fn new(n: usize) -> DisjointSets {
        DisjointSets {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] as usize != x {
            let grandparent = self.parent[self.parent[x] as usize];
            self.parent[x] = grandparent;
            x = grandparent as usize;
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a as u32;
        self.size[a] += self.size[b];
    }

    fn size(&self, root: usize) -> u32 {
        self.size[root]
    }
}

/// A group's items with their distance to its first item's code.
fn members(reader: &Reader, group: &Group) -> Result<Vec<(u64, milan::Item, u32)>> {
    let first = group.ids.first().and_then(|&id| reader.code(id));
    group
        .ids
        .iter()
        .map(|&id| {
            let item = reader.item(id)?.unwrap_or_default();
            let distance = match (&first, reader.code(id)) {
                (Some(first), Some(code)) => first.distance(&code)?,
                _ => 0,
            };
            Ok((id, item, distance))
        })
        .collect()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::SameContent => "same content",
        Kind::Near => "near-duplicates",
    }
}

fn print_groups(reader: &Reader, groups: &[&Group], summary: &str, json: bool) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !json {
        writeln!(out, "{summary}")?;
    }
    for (n, group) in groups.iter().enumerate() {
        let members = members(reader, group)?;
        if json {
            let line = JsonGroup {
                group: n + 1,
                kind: group.kind,
                items: members
                    .iter()
                    .map(|(id, item, distance)| JsonItem {
                        id: *id,
                        key: item.key.as_deref(),
                        label: item.label.as_deref(),
                        distance: *distance,
                    })
                    .collect(),
            };
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
            continue;
        }
        writeln!(
            out,
            "group {} ({}, {} items)",
            n + 1,
            kind_name(group.kind),
            members.len()
        )?;
        for (id, item, distance) in &members {
            writeln!(
                out,
                "  id {id:>10}  distance {distance:>4}  {:<12}  {}",
                for_terminal(item.label.as_deref().unwrap_or("-")),
                for_terminal(item.key.as_deref().unwrap_or(""))
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

fn write_html(reader: &Reader, groups: &[&Group], summary: &str, path: &Path) -> Result<()> {
    let mut rows = Vec::new();
    for (n, group) in groups.iter().enumerate() {
        let members = members(reader, group)?;
        let tiles = members
            .iter()
            .take(PAGE_ITEMS_PER_GROUP)
            .map(|(id, item, distance)| Tile {
                caption: item.key.clone().unwrap_or_else(|| format!("id {id}")),
                label: item.label.clone(),
                distance: Some(*distance),
                // Only regular files become thumbnails (the thumbnailer refuses the rest too).
                image: item
                    .key
                    .as_deref()
                    .map(PathBuf::from)
                    .filter(|path| path.is_file()),
            })
            .collect();
        rows.push(GroupRow {
            heading: format!(
                "group {}: {} items, {}",
                n + 1,
                members.len(),
                kind_name(group.kind)
            ),
            tiles,
            more: members.len().saturating_sub(PAGE_ITEMS_PER_GROUP),
        });
    }
    let page = duplicates_page("milan near-duplicates", summary, &rows);
    write_atomically(path, page.as_bytes())?;
    eprintln!("wrote {}", for_terminal(&path.to_string_lossy()));
    Ok(())
}
