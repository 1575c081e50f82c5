//! Near-duplicates: `Reader::pairs_within` against a brute-force self-join on random, clustered and
//! duplicate-heavy codes of every length, and `milan index duplicates` (groups, same-content
//! groups, JSON, text, refusals, the HTML page in a real browser).

use std::collections::BTreeSet;
use std::path::Path;

use milan::SearchError;
use milan::{Code, Index, Item, Pair};
use rand::RngExt;

use crate::images::{lsh_image_index, render_in_browser, temp_image_set};
use crate::util::*;

/// Every pair of `live` within `radius`, by comparing all of them.
fn brute_pairs(live: &[(u64, Code)], radius: u32) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for (i, (a, code_a)) in live.iter().enumerate() {
        for (b, code_b) in &live[i + 1..] {
            let distance = code_a.distance(code_b).unwrap();
            if distance <= radius {
                pairs.push(Pair {
                    a: *a,
                    b: *b,
                    distance,
                });
            }
        }
    }
    pairs
}

/// Codes of one of three kinds: uniform, clustered, or a few codes repeated many times with a
/// few bits flipped in some copies.
fn codes_of_kind(kind: usize, seed: u64, bits: u32, n: usize) -> Vec<Code> {
    let mut rng = rng(seed);
    match kind {
        0 => (0..n).map(|_| random_code(&mut rng, bits)).collect(),
        1 => clustered(&mut rng, bits, n, 8, 0.04),
        _ => {
            let originals: Vec<Code> = (0..5).map(|_| random_code(&mut rng, bits)).collect();
            (0..n)
                .map(|_| {
                    let original = &originals[rng.random_range(0..originals.len())];
                    if rng.random_bool(0.5) {
                        original.clone()
                    } else {
                        near(&mut rng, original, 1.5 / f64::from(bits))
                    }
                })
                .collect()
        }
    }
}

/// An index holding `codes` as stored by a reopen (in the hash tables, some deleted) and then up
/// to 3,500 more added since (in the delta); returns it with its live `(id, code)`s.
fn index_with_delta(dir: &Path, codes: &[Code]) -> (Index, Vec<(u64, Code)>) {
    let bits = codes[0].bits();
    // Past 4,096 added codes (or a thirty-second of the tables) the tables are rebuilt, leaving
    // no delta: stay below.
    let split = codes.len() - (codes.len() / 5).min(3500);
    {
        let index = Index::builder(bits).create(dir).unwrap();
        let mut writer = index.writer().unwrap();
        for code in &codes[..split] {
            writer.add(code, Item::default()).unwrap();
        }
        writer.commit().unwrap();
        let mut writer = index.writer().unwrap();
        for id in (0..split as u64).step_by(9) {
            assert!(writer.delete(id).unwrap());
        }
        writer.commit().unwrap();
    }
    let index = Index::open(dir).unwrap();
    let mut writer = index.writer().unwrap();
    for code in &codes[split..] {
        writer.add(code, Item::default()).unwrap();
    }
    writer.commit().unwrap();
    let live = codes
        .iter()
        .enumerate()
        .map(|(id, code)| (id as u64, code.clone()))
        .filter(|(id, _)| *id >= split as u64 || id % 9 != 0)
        .collect();
    (index, live)
}

fn joined(index: &Index, radius: u32) -> Vec<Pair> {
    let batches: Vec<Vec<Pair>> = index
        .reader()
        .unwrap()
        .pairs_within(radius)
        .unwrap()
        .collect();
    assert!(batches.iter().all(|batch| !batch.is_empty()));
    batches.into_iter().flatten().collect()
}

#[test]
fn pairs_within_equals_brute_force_on_every_code_length() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nonempty = 0;
    for bits in (8..=1024).step_by(8) {
        let kind = (bits / 8) as usize % 3;
        let codes = codes_of_kind(kind, u64::from(bits), bits, 160);
        let dir = tmp.path().join(format!("idx{bits}"));
        let (index, live) = index_with_delta(&dir, &codes);
        // A small radius, and one that reaches into the clusters.
        for radius in [0, bits / 8, bits / 4] {
            let truth = brute_pairs(&live, radius);
            nonempty += usize::from(!truth.is_empty());
            assert_eq!(
                joined(&index, radius),
                truth,
                "{bits} bits, kind {kind}, radius {radius}"
            );
        }
        drop(index);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(nonempty > 150, "only {nonempty} of the checks found pairs");
}

#[test]
fn pairs_within_equals_brute_force_on_large_indexes() {
    // Large enough for the hash tables to be probed, and a delta large enough for tables of its
    // own; clustered, duplicate-heavy and uniform codes.
    let tmp = tempfile::tempdir().unwrap();
    for (kind, bits, n, radii) in [
        (1, 64, 30_000, [2, 6, 10]),
        (2, 64, 8_000, [0, 1, 3]),
        (0, 32, 30_000, [0, 2, 4]),
        (1, 128, 12_000, [4, 12, 20]),
    ] {
        let codes = codes_of_kind(kind, 99 + bits as u64, bits, n);
        let dir = tmp.path().join(format!("idx{kind}-{bits}"));
        let (index, live) = index_with_delta(&dir, &codes);
        for radius in radii {
            let truth = brute_pairs(&live, radius);
            let found = joined(&index, radius);
            assert!(
                found == truth,
                "kind {kind}, {bits} bits, radius {radius}: {} pairs found, {} expected",
                found.len(),
                truth.len()
            );
        }
    }
}

#[test]
fn pairs_within_refuses_a_radius_past_the_code_length() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Index::builder(16).create(tmp.path().join("idx")).unwrap();
    let reader = index.reader().unwrap();
    assert!(matches!(
        reader.pairs_within(17),
        Err(milan::Error::Search(SearchError::RadiusTooLarge {
            radius: 17,
            bits: 16
        }))
    ));
    assert_eq!(reader.pairs_within(16).unwrap().count(), 0, "empty index");
}

/// A code-only index of 64-bit codes with keys `k{id}`: planted groups (ids 0-2 a chain within 3
/// bits of each other at each step, 3-4 a pair 1 bit apart, 5-8 four copies of one code), and 200
/// uniform codes, far from everything at small radii. Ids 9 and 10 share a content hash with 5.
fn planted_index(dir: &Path) {
    let mut rng = rng(5);
    let flip = |code: &Code, bits: &[usize]| {
        let original = code.as_bitslice();
        Code::from_fn(64, |i| original[i] ^ bits.contains(&i)).unwrap()
    };
    let a = random_code(&mut rng, 64);
    let b = random_code(&mut rng, 64);
    let c = random_code(&mut rng, 64);
    let mut codes = vec![
        a.clone(),
        flip(&a, &[1, 2, 3]),
        flip(&a, &[1, 2, 3, 10, 11, 12]),
        b.clone(),
        flip(&b, &[40]),
        c.clone(),
        c.clone(),
        c.clone(),
        c.clone(),
        flip(&c, &[0, 63]),
        c.clone(),
    ];
    codes.extend((0..200).map(|_| random_code(&mut rng, 64)));
    let index = Index::builder(64).create(dir).unwrap();
    let mut writer = index.writer().unwrap();
    for (id, code) in codes.iter().enumerate() {
        let content_hash = [5, 9, 10].contains(&id).then_some([7u8; 32]);
        let item = Item {
            key: Some(format!("k{id}")),
            label: Some(if id % 2 == 0 { "even" } else { "odd" }.to_string()),
            content_hash,
            ..Item::default()
        };
        writer.add(code, item).unwrap();
    }
    writer.commit().unwrap();
}

/// The groups of `index duplicates --json` as (kind, [(id, distance)]).
fn json_groups(args: &[&str]) -> Vec<(String, Vec<(u64, u64)>)> {
    ok(args)
        .lines()
        .enumerate()
        .map(|(n, line)| {
            let group: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(group["group"], n as u64 + 1);
            let items = group["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| {
                    let id = item["id"].as_u64().unwrap();
                    assert_eq!(item["key"], format!("k{id}"));
                    (id, item["distance"].as_u64().unwrap())
                })
                .collect();
            (group["kind"].as_str().unwrap().to_string(), items)
        })
        .collect()
}

#[test]
fn duplicates_finds_the_planted_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    planted_index(&dir);
    let d = s(&dir);
    // The groups of `index duplicates --radius RADIUS --json` with `flags`.
    let groups_within = |radius, flags: &[&str]| {
        let mut args = vec!["index", "duplicates", d, "--radius", radius, "--json"];
        args.extend(flags);
        json_groups(&args)
    };
    let groups = groups_within("3", &[]);
    let same = |kind: &str| kind.to_string();
    assert_eq!(
        groups,
        [
            // Copies of one file content first, apart from the near groups.
            (same("same-content"), vec![(5, 0), (9, 2), (10, 0)]),
            // 5 stands for its copies 9 and 10; 6, 7 and 8 are the same code, another content.
            (same("near"), vec![(5, 0), (6, 0), (7, 0), (8, 0)]),
            // A chain: 0-1 and 1-2 are 3 bits apart, 0-2 six.
            (same("near"), vec![(0, 0), (1, 3), (2, 6)]),
            (same("near"), vec![(3, 0), (4, 1)]),
        ]
    );
    // Below the chain's step the chain falls apart; --min-group and --limit cut the list.
    assert_eq!(groups_within("2", &[]).len(), 3);
    let groups = groups_within("3", &["--min-group", "4"]);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].1.len(), 4);
    let groups = groups_within("3", &["--limit", "1"]);
    let kinds: Vec<&str> = groups.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["same-content", "near"], "one of each kind");

    let text = ok(&["index", "duplicates", d, "--radius", "3"]);
    assert!(
        text.starts_with("211 items, radius 3: 18 pairs within the radius; 3 groups of near-duplicates (9 items); 1 groups of items with the same content (3 items)"),
        "{text}"
    );
    assert!(
        text.contains("group 3 (near-duplicates, 3 items)"),
        "{text}"
    );
    assert!(text.contains("distance    6  even"), "{text}");
}

#[test]
fn duplicates_refuses_bad_flags_and_outputs_in_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    planted_index(&dir);
    let d = s(&dir);
    let err = fails(&["index", "duplicates", d, "--radius", "65"], 1);
    assert!(
        err.contains("radius 65 is larger than the code length"),
        "{err}"
    );
    let err = fails(
        &[
            "index",
            "duplicates",
            d,
            "--radius",
            "2",
            "--min-group",
            "1",
        ],
        1,
    );
    assert!(err.contains("--min-group 1"), "{err}");
    let inside = dir.join("page.html");
    let err = fails(
        &[
            "index",
            "duplicates",
            d,
            "--radius",
            "2",
            "--html",
            s(&inside),
        ],
        1,
    );
    assert!(err.contains("inside the index directory"), "{err}");
    assert!(!inside.exists());
    fails(&["index", "duplicates", d], 2);
    let missing = tmp.path().join("missing");
    fails(&["index", "duplicates", s(&missing), "--radius", "2"], 1);
}

#[test]
fn the_duplicates_page_shows_every_group_in_a_real_browser() {
    let (tmp, images, _) = temp_image_set(8);
    let (_, index) = lsh_image_index(tmp.path(), &images, &["--label-from-dir"]);
    let page = tmp.path().join("dups.html");
    let args = ["index", "duplicates", s(&index), "--radius", "2"];
    let groups = json_groups_of_images(&[&args[..], &["--json"]].concat());
    assert!(
        !groups.is_empty(),
        "the 16 images of two classes hold near-duplicates"
    );
    let items: usize = groups.iter().map(BTreeSet::len).sum();
    ok(&[&args[..], &["--html", s(&page)]].concat());
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("class=\"row group\"").count(), groups.len());
    assert_eq!(
        html.matches("<img src=\"data:image/jpeg;base64,").count(),
        items
    );
    let dom = render_in_browser(&page, &tmp.path().join("profile"));
    assert!(
        dom.contains(&format!("data-images-loaded=\"{items}/{items}\"")),
        "not every image loaded: {}",
        &dom[dom.len().saturating_sub(300)..]
    );
}

/// The ids of each group of `index duplicates --json` on an image index (keys are paths).
fn json_groups_of_images(args: &[&str]) -> Vec<BTreeSet<u64>> {
    ok(args)
        .lines()
        .map(|line| {
            let group: serde_json::Value = serde_json::from_str(line).unwrap();
            group["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| {
                    assert!(Path::new(item["key"].as_str().unwrap()).is_file());
                    item["id"].as_u64().unwrap()
                })
                .collect()
        })
        .collect()
}
