//! What is committed survives reopening, read-write and read-only, and a checked-in index of each
//! format version still opens and answers.

use std::path::Path;

use milan::{Code, Index, Item};

use crate::util::*;

#[test]
fn commits_survive_reopen_and_uncommitted_work_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rng(5);
    let codes = clustered(&mut rng, 64, 500, 5, 0.1);
    {
        let index = Index::builder(64).create(dir.path()).unwrap();
        let mut writer = index.writer().unwrap();
        for (i, code) in codes.iter().enumerate() {
            let item = Item {
                key: Some(format!("k{i}")),
                ..Item::default()
            };
            writer.add(code, item).unwrap();
        }
        writer.commit().unwrap();
        let mut writer = index.writer().unwrap();
        writer.delete(3).unwrap();
        writer.commit().unwrap();
        let mut writer = index.writer().unwrap();
        writer.add(&codes[0], Item::default()).unwrap();
        writer.delete(4).unwrap();
        // Dropped without commit: neither the add nor the delete may survive.
    }
    let index = Index::open_read_only(dir.path()).unwrap();
    assert_eq!(index.len(), 499);
    let reader = index.reader().unwrap();
    assert!(!reader.contains(3) && reader.contains(4) && !reader.contains(500));
    assert_eq!(reader.code(7).unwrap(), codes[7]);
    assert_eq!(reader.item(7).unwrap().unwrap().key.as_deref(), Some("k7"));
    drop(reader);
    drop(index);
    let index = Index::open(dir.path()).unwrap();
    let mut writer = index.writer().unwrap();
    assert_eq!(writer.add(&codes[0], Item::default()).unwrap(), 500);
    writer.commit().unwrap();
}

#[test]
fn read_only_handles_share_and_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    Index::builder(16).create(dir.path()).unwrap();
    let first = Index::open_read_only(dir.path()).unwrap();
    let second = Index::open_read_only(dir.path()).unwrap();
    assert!(matches!(first.writer(), Err(milan::Error::ReadOnly { .. })));
    assert!(matches!(
        second.optimize(None),
        Err(milan::Error::ReadOnly { .. })
    ));
}

/// The checked-in index of each format version, with the text listing of what it holds.
fn fixture(version: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("index-format/fixtures/v{version}"));
    (root.join("index"), root.join("contents.txt"))
}

/// One line per live item: `id hex key label`.
fn listing(index: &Index) -> String {
    let reader = index.reader().unwrap();
    let mut out = String::new();
    for id in reader.ids() {
        let item = reader.item(id).unwrap().unwrap();
        out.push_str(&format!(
            "{id} {} {} {}\n",
            reader.code(id).unwrap(),
            item.key.unwrap_or_default(),
            item.label.unwrap_or_default()
        ));
    }
    out
}

#[test]
fn golden_index_of_format_version_1_opens_and_answers() {
    let (dir, contents) = fixture(1);
    // Copied, so that the checked-in file is never opened for writing.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join(milan::format::DATABASE_FILE),
        copy.path().join(milan::format::DATABASE_FILE),
    )
    .unwrap();
    let mut index = Index::open(copy.path()).unwrap();
    assert_eq!(index.info().format_version, 1);
    let expected = std::fs::read_to_string(contents).unwrap();
    assert_eq!(listing(&index), expected);
    assert!(index.verify().unwrap().is_ok());
    let live: Vec<(u64, Code)> = expected
        .lines()
        .map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next().unwrap().parse().unwrap();
            (id, Code::from_hex(fields.next().unwrap()).unwrap())
        })
        .collect();
    let reader = index.reader().unwrap();
    let mut rng = rng(1);
    for _ in 0..20 {
        let query = random_code(&mut rng, 32);
        assert_eq!(
            reader.search(&query).unwrap().top_k(10).unwrap(),
            brute_top_k(&live, &query, 10)
        );
        assert_eq!(
            reader.search(&query).unwrap().within(9).unwrap(),
            brute_radius(&live, &query, 9)
        );
    }
}

/// Regenerates the version-1 fixture: `MILAN_WRITE_FIXTURE=1 cargo test write_fixture`. Only ever
/// run while version 1 is the current format; later versions add a fixture of their own.
#[test]
fn write_fixture() {
    if std::env::var_os("MILAN_WRITE_FIXTURE").is_none() {
        return;
    }
    assert_eq!(milan::format::FORMAT_VERSION, 1);
    let (dir, contents) = fixture(1);
    let _ = std::fs::remove_dir_all(&dir);
    let index = Index::builder(32).substrings(2).create(&dir).unwrap();
    let mut rng = rng(2024);
    let codes = clustered(&mut rng, 32, 300, 6, 0.08);
    for (batch, chunk) in codes.chunks(120).enumerate() {
        let mut writer = index.writer().unwrap();
        for (i, code) in chunk.iter().enumerate() {
            let n = batch * 120 + i;
            let item = Item {
                key: Some(format!("images/{n:03}.png")),
                content_hash: Some([n as u8; 32]),
                label: Some(format!("class{}", n % 6)),
                metadata: Some(vec![n as u8]),
            };
            writer.add(code, item).unwrap();
        }
        for id in (batch as u64 * 50..).step_by(17).take(3) {
            writer.delete(id).unwrap();
        }
        writer.commit().unwrap();
    }
    std::fs::write(contents, listing(&index)).unwrap();
}
