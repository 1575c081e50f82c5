//! What is committed survives reopening, read-write and read-only, and a checked-in index of each
//! format version still opens and answers.

use std::path::Path;

use milan::format::TablesRecord;
use milan::WriteError;
use milan::{Code, ImportProgress, Index, Item};

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
    assert!(matches!(
        first.writer(),
        Err(milan::Error::Write(WriteError::ReadOnly { .. }))
    ));
    assert!(matches!(
        second.optimize(None),
        Err(milan::Error::Write(WriteError::ReadOnly { .. }))
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

/// A copy of the fixture of `version` in a temporary directory, so that the checked-in file is
/// never opened for writing.
fn fixture_copy(version: u32) -> tempfile::TempDir {
    let (dir, _) = fixture(version);
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join(milan::format::DATABASE_FILE),
        copy.path().join(milan::format::DATABASE_FILE),
    )
    .unwrap();
    copy
}

/// Checks that `index` holds exactly the fixture's listing and answers searches like brute force.
fn assert_fixture_contents(index: &Index, version: u32) {
    let (_, contents) = fixture(version);
    let expected = std::fs::read_to_string(contents).unwrap();
    assert_eq!(listing(index), expected);
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

/// Checks that `index` finds the items of every key the fixture lists (each key names one live
/// item there), and none under the keys of its deleted items.
fn assert_fixture_keys(index: &Index, version: u32) {
    let (_, contents) = fixture(version);
    let expected = std::fs::read_to_string(contents).unwrap();
    let reader = index.reader().unwrap();
    let mut keyed = 0;
    for line in expected.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let id: u64 = fields[0].parse().unwrap();
        if !fields[2].is_empty() {
            assert_eq!(reader.ids_with_key(fields[2]).unwrap(), [id], "{line}");
            keyed += 1;
        }
    }
    assert!(keyed > 250, "the fixture lists its keys");
    // The keys of deleted items hold nothing any more.
    let mut gone = 0;
    for n in 0..304 {
        let key = format!("images/{n:03}.png");
        if !expected.contains(&format!(" {key} ")) {
            assert!(reader.ids_with_key(&key).unwrap().is_empty(), "{key}");
            gone += 1;
        }
    }
    assert!(gone >= 9, "the fixture deleted keyed items");
    assert!(reader.ids_with_key("no such key").unwrap().is_empty());
}

#[test]
fn golden_index_of_format_version_1_opens_and_answers() {
    let copy = fixture_copy(1);
    let before = std::fs::read(copy.path().join(milan::format::DATABASE_FILE)).unwrap();
    // Read-only, it stays a version-1 index: no imports table, so no progress.
    {
        let index = Index::open_read_only(copy.path()).unwrap();
        assert_eq!(index.info().format_version, 1);
        assert_fixture_contents(&index, 1);
        assert_eq!(index.import_progress(&[0; 32]).unwrap(), None);
    }
    assert!(
        std::fs::read(copy.path().join(milan::format::DATABASE_FILE)).unwrap() == before,
        "a read-only open changed the file"
    );
    // Writable, it is upgraded in place to the current version, contents unchanged.
    let index = Index::open(copy.path()).unwrap();
    assert_eq!(index.upgraded_from(), Some(1));
    assert_eq!(index.info().format_version, milan::format::FORMAT_VERSION);
    assert_fixture_contents(&index, 1);
    assert_fixture_keys(&index, 1);
    assert!(index.verify().unwrap().is_ok());
    assert_eq!(index.import_progress(&[0; 32]).unwrap(), None);
    let progress = ImportProgress {
        source: [1; 32],
        rows: 5,
        committed: 5,
        first_id: Some(300),
    };
    let mut writer = index.writer().unwrap();
    for code in clustered(&mut rng(3), 32, 5, 1, 0.1) {
        writer.add(&code, Item::default()).unwrap();
    }
    writer.set_import_progress(progress.clone());
    writer.commit().unwrap();
    drop(index);
    let index = Index::open_read_only(copy.path()).unwrap();
    assert_eq!(index.info().format_version, milan::format::FORMAT_VERSION);
    assert_eq!(index.import_progress(&[1; 32]).unwrap(), Some(progress));
    assert_eq!(index.len(), 296);
}

/// The import progress recorded in the fixture of `version` (2 or later), as listed in its
/// `imports.txt` (`source-hex rows committed first-id`, `-` for none).
fn fixture_imports(version: u32) -> Vec<ImportProgress> {
    let (dir, _) = fixture(version);
    let text = std::fs::read_to_string(dir.parent().unwrap().join("imports.txt")).unwrap();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let source: Vec<u8> = (0..32)
                .map(|i| u8::from_str_radix(&fields[0][2 * i..2 * i + 2], 16).unwrap())
                .collect();
            ImportProgress {
                source: source.try_into().unwrap(),
                rows: fields[1].parse().unwrap(),
                committed: fields[2].parse().unwrap(),
                first_id: fields[3].parse().ok(),
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an index's database file holds, read straight from redb (read-only): the names of its
/// tables, the hash tables' record (format version 3), the slots of each code block, the parts of
/// the hash tables and the item records.
struct Stored {
    tables: Vec<String>,
    next_id: u64,
    record: Option<TablesRecord>,
    blocks: Vec<usize>,
    parts: u64,
    items: u64,
    /// The generation (format version 4; 0 before).
    generation: u64,
    /// The commit log's records (format version 4): generation and record.
    commits: Vec<(u64, milan::format::CommitRecord)>,
    /// The key table's entries (format version 5; `None` without the table), in key order.
    keys: Option<Vec<(String, u64)>>,
}

impl Stored {
    fn has(&self, table: &str) -> bool {
        self.tables.iter().any(|name| name == table)
    }
}

fn stored(dir: &Path) -> Stored {
    use milan::format::*;
    use redb::{
        ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    };
    let db = redb::ReadOnlyDatabase::open(dir.join(DATABASE_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let mut tables: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|table| table.name().to_string())
        .collect();
    tables.sort();
    let meta = txn
        .open_table(TableDefinition::<&str, &[u8]>::new(META_TABLE))
        .unwrap();
    let meta_record = MetaRecord::decode(meta.get(META_KEY).unwrap().unwrap().value()).unwrap();
    let record = meta
        .get(TABLES_KEY)
        .unwrap()
        .map(|bytes| TablesRecord::decode(bytes.value()).unwrap());
    let mut blocks = Vec::new();
    if tables.iter().any(|name| name == CODE_BLOCKS_TABLE) {
        let table = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(CODE_BLOCKS_TABLE))
            .unwrap();
        for (expected, entry) in table.iter().unwrap().enumerate() {
            let (key, value) = entry.unwrap();
            assert_eq!(key.value(), expected as u64);
            let block = CodeBlock::decode(value.value(), meta_record.layout().bytes()).unwrap();
            blocks.push(block.slots());
        }
    }
    let parts = if tables.iter().any(|name| name == HASH_TABLES_TABLE) {
        txn.open_table(TableDefinition::<&[u8; PART_KEY_BYTES], &[u8]>::new(
            HASH_TABLES_TABLE,
        ))
        .unwrap()
        .len()
        .unwrap()
    } else {
        0
    };
    let items = txn
        .open_table(TableDefinition::<u64, &[u8]>::new(ITEMS_TABLE))
        .unwrap()
        .len()
        .unwrap();
    let generation = meta
        .get(GENERATION_KEY)
        .unwrap()
        .map_or(0, |bytes| decode_generation(bytes.value()).unwrap());
    let mut commits = Vec::new();
    if tables.iter().any(|name| name == COMMITS_TABLE) {
        let table = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(COMMITS_TABLE))
            .unwrap();
        for entry in table.iter().unwrap() {
            let (key, value) = entry.unwrap();
            commits.push((key.value(), CommitRecord::decode(value.value()).unwrap()));
        }
    }
    let has_keys = txn
        .list_multimap_tables()
        .unwrap()
        .any(|table| redb::MultimapTableHandle::name(&table) == KEYS_TABLE);
    let keys = has_keys.then(|| {
        use redb::ReadableMultimapTable;
        let table = txn
            .open_multimap_table(redb::MultimapTableDefinition::<&str, u64>::new(KEYS_TABLE))
            .unwrap();
        let mut keys = Vec::new();
        for entry in table.iter().unwrap() {
            let (key, ids) = entry.unwrap();
            for id in ids {
                keys.push((key.value().to_string(), id.unwrap().value()));
            }
        }
        keys
    });
    Stored {
        keys,
        tables,
        next_id: meta_record.next_id,
        record,
        blocks,
        parts,
        items,
        generation,
        commits,
    }
}

/// Checks that `index` reports each of `imports` as its progress.
/// Opens the copied fixture of `version` in `dir` read-only (it stays that version, its file
/// untouched), then writable (it is upgraded to the current version); both answer with the
/// fixture's codes, keys and imports and pass the full check. Returns the live codes.
fn read_only_then_upgraded(dir: &Path, version: u32, imports: &[ImportProgress]) -> u64 {
    use milan::format::{DATABASE_FILE, FORMAT_VERSION};
    let file = dir.join(DATABASE_FILE);
    let before = std::fs::read(&file).unwrap();
    let live = {
        let index = Index::open_read_only(dir).unwrap();
        assert_eq!(index.info().format_version, version);
        assert_eq!(index.upgraded_from(), None);
        assert_fixture_contents(&index, version);
        assert_fixture_keys(&index, version);
        assert_imports(&index, imports);
        assert!(index.verify().unwrap().is_ok());
        index.len()
    };
    assert!(
        std::fs::read(&file).unwrap() == before,
        "a read-only open changed the file"
    );
    let index = Index::open(dir).unwrap();
    assert_eq!(index.upgraded_from(), Some(version));
    assert_eq!(index.info().format_version, FORMAT_VERSION);
    assert_fixture_contents(&index, version);
    assert_fixture_keys(&index, version);
    assert_imports(&index, imports);
    assert!(index.verify().unwrap().is_ok());
    live
}

/// Opens the upgraded copy of the fixture of `version` in `dir` both ways: it is upgraded
/// already, and answers with the fixture's codes and keys.
fn reopens_upgraded(dir: &Path, version: u32) {
    for writable in [false, true] {
        let index = if writable {
            Index::open(dir).unwrap()
        } else {
            Index::open_read_only(dir).unwrap()
        };
        assert_eq!(index.upgraded_from(), None);
        assert_fixture_contents(&index, version);
        assert_fixture_keys(&index, version);
    }
}

fn assert_imports(index: &Index, imports: &[ImportProgress]) {
    for progress in imports {
        assert_eq!(
            index.import_progress(&progress.source).unwrap().as_ref(),
            Some(progress)
        );
    }
}

#[test]
fn golden_index_of_format_version_2_opens_and_answers() {
    use milan::format::{
        BUCKETS_TABLE, CODES_TABLE, CODE_BLOCKS_TABLE, DATABASE_FILE, FORMAT_VERSION,
        HASH_TABLES_TABLE,
    };
    let copy = fixture_copy(2);
    let file = copy.path().join(DATABASE_FILE);
    let before = std::fs::read(&file).unwrap();
    let imports = fixture_imports(2);
    assert_eq!(imports.len(), 2);
    // Read-only, it stays a version-2 index (codes and bucket chunks), and the file is untouched.
    {
        let index = Index::open_read_only(copy.path()).unwrap();
        assert_eq!(index.info().format_version, 2);
        assert_eq!(index.upgraded_from(), None);
        assert_fixture_contents(&index, 2);
        assert_imports(&index, &imports);
        assert!(index.verify().unwrap().is_ok());
    }
    assert!(
        std::fs::read(&file).unwrap() == before,
        "a read-only open changed the file"
    );
    let old = stored(copy.path());
    assert!(old.has(CODES_TABLE) && old.has(BUCKETS_TABLE));
    assert!(!old.has(CODE_BLOCKS_TABLE) && old.record.is_none());
    // Writable, it is upgraded in place to the current version: contents, searches and import
    // progress unchanged.
    {
        let index = Index::open(copy.path()).unwrap();
        assert_eq!(index.upgraded_from(), Some(2));
        assert_eq!(index.info().format_version, FORMAT_VERSION);
        assert_fixture_contents(&index, 2);
        assert_imports(&index, &imports);
        assert!(index.verify().unwrap().is_ok());
    }
    // The old tables are gone; the codes are in blocks and every one is filed in stored tables.
    let new = stored(copy.path());
    assert!(!new.has(CODES_TABLE) && !new.has(BUCKETS_TABLE));
    assert!(new.has(CODE_BLOCKS_TABLE) && new.has(HASH_TABLES_TABLE));
    assert_eq!(new.blocks, vec![300]);
    let record = new.record.expect("the upgrade stores the hash tables");
    assert_eq!((record.slots, record.tables.len()), (300, 2));
    assert!(new.parts > 0);
    assert_eq!(new.items, old.items);
    // Reopened, it is an index of the current version like any other.
    for writable in [false, true] {
        let index = if writable {
            Index::open(copy.path()).unwrap()
        } else {
            Index::open_read_only(copy.path()).unwrap()
        };
        assert_eq!(index.upgraded_from(), None);
        assert_eq!(index.info().format_version, FORMAT_VERSION);
        assert_fixture_contents(&index, 2);
        assert_imports(&index, &imports);
        assert!(index.verify().unwrap().is_ok());
    }
}

#[test]
fn golden_index_of_format_version_3_opens_and_answers() {
    use milan::format::{BUCKETS_TABLE, CODES_TABLE, COMMITS_TABLE};
    let copy = fixture_copy(3);
    // What the fixture is there to exercise: hash tables stored over the first 300 ids, a delta
    // of later ids past them, code blocks, live ids without item records, and no table of the
    // earlier versions.
    let layout = stored(copy.path());
    assert!(!layout.has(CODES_TABLE) && !layout.has(BUCKETS_TABLE));
    assert!(!layout.has(COMMITS_TABLE) && layout.generation == 0);
    let record = layout
        .record
        .as_ref()
        .expect("the fixture stores its hash tables");
    assert_eq!((record.slots, record.tables.len()), (300, 2));
    assert!(!record.sample.is_empty());
    assert!(layout.next_id > record.slots);
    assert_eq!(layout.blocks, vec![layout.next_id as usize]);
    assert!(layout.parts > 0);
    let imports = fixture_imports(3);
    assert_eq!(imports.len(), 2);
    // Read-only, it stays a version-3 index, the file untouched; writable, it is converted to
    // the current version in one commit that changes nothing else: generation 1, logged as no
    // change.
    let live = read_only_then_upgraded(copy.path(), 3, &imports);
    assert!(layout.items < live);
    let upgraded = stored(copy.path());
    assert_eq!(upgraded.generation, 1);
    assert_eq!(upgraded.commits.len(), 1);
    let (generation, commit) = &upgraded.commits[0];
    assert_eq!((*generation, commit.next_id), (1, layout.next_id));
    assert!(!commit.reload && commit.deleted.is_empty());
    assert_eq!(
        (upgraded.record, upgraded.items),
        (layout.record, layout.items)
    );
    reopens_upgraded(copy.path(), 3);
}

/// The stored layout of the version-4 fixture and its successors: the version-3 fixture's
/// (tables over 300 ids, a delta past them), plus the generation and the log of the five
/// commits that made it: three batches with deletes, the tables' build, the late commit with
/// its delete of id 200.
fn assert_fixture_log(layout: &Stored) {
    let record = layout.record.as_ref().expect("stored hash tables");
    assert_eq!((record.slots, record.tables.len()), (300, 2));
    assert!(layout.next_id > record.slots);
    assert_eq!(layout.generation, 5);
    let generations: Vec<u64> = layout.commits.iter().map(|(g, _)| *g).collect();
    assert_eq!(generations, [1, 2, 3, 4, 5]);
    let commits: Vec<&milan::format::CommitRecord> =
        layout.commits.iter().map(|(_, c)| c).collect();
    // The first batch deleted ids it had added itself (never stored, so not logged).
    assert!(commits[0].deleted.is_empty());
    assert_eq!(commits[1].deleted, [50, 67, 84]);
    assert!(commits[3].reload, "the tables' build is read in full");
    assert_eq!(
        (commits[4].next_id, commits[4].deleted.as_slice()),
        (304, &[200][..])
    );
}

#[test]
fn golden_index_of_format_version_4_opens_and_answers() {
    let copy = fixture_copy(4);
    let layout = stored(copy.path());
    assert_fixture_log(&layout);
    assert!(layout.keys.is_none());
    let imports = fixture_imports(4);
    assert_eq!(imports.len(), 2);
    // Read-only, it stays a version-4 index, the file untouched, and key lookups read the
    // items; writable, it is converted in one commit that fills the key table from the items
    // and changes nothing else: logged as no change.
    read_only_then_upgraded(copy.path(), 4, &imports);
    let upgraded = stored(copy.path());
    assert_eq!(upgraded.generation, 6);
    let (generation, commit) = upgraded.commits.last().unwrap();
    assert_eq!((*generation, commit.next_id), (6, layout.next_id));
    assert!(!commit.reload && commit.deleted.is_empty());
    // Every item with a key has its entry: the 296 stored batch items less the deleted, plus
    // the late commit's two keyed items.
    let keys = upgraded.keys.expect("the upgrade creates the key table");
    let listed = std::fs::read_to_string(fixture(4).1).unwrap();
    let keyed = listed
        .lines()
        .filter(|line| !line.split(' ').nth(2).unwrap().is_empty());
    assert_eq!(keys.len(), keyed.count());
    assert_eq!(
        (upgraded.record, upgraded.items),
        (layout.record, layout.items)
    );
    reopens_upgraded(copy.path(), 4);
}

#[test]
fn golden_index_of_format_version_5_opens_and_answers() {
    use milan::format::{DATABASE_FILE, FORMAT_VERSION};
    let copy = fixture_copy(5);
    let file = copy.path().join(DATABASE_FILE);
    let before = std::fs::read(&file).unwrap();
    let layout = stored(copy.path());
    assert_fixture_log(&layout);
    let keys = layout.keys.as_ref().expect("the key table");
    assert!(keys.contains(&("images/001.png".to_string(), 1)));
    assert!(!keys.iter().any(|(_, id)| *id == 200));
    let imports = fixture_imports(5);
    assert_eq!(imports.len(), 2);
    for writable in [false, true] {
        {
            let index = if writable {
                Index::open(copy.path()).unwrap()
            } else {
                Index::open_read_only(copy.path()).unwrap()
            };
            assert_eq!(index.info().format_version, 5);
            assert_eq!(index.upgraded_from(), None);
            assert_fixture_contents(&index, 5);
            assert_fixture_keys(&index, 5);
            assert_imports(&index, &imports);
            assert!(index.verify().unwrap().is_ok());
        }
        if !writable {
            assert!(
                std::fs::read(&file).unwrap() == before,
                "a read-only open changed the file"
            );
        }
    }
    assert_eq!(FORMAT_VERSION, 5, "a newer version adds its own fixture");
}

/// Regenerates the fixture of the current format version: `MILAN_WRITE_FIXTURE=1 cargo test
/// --test tests write_fixture`. Only ever run while that version is the current format; the
/// fixtures of older versions stay as they were written, and a new version adds a fixture of its
/// own.
#[test]
fn write_fixture() {
    if std::env::var_os("MILAN_WRITE_FIXTURE").is_none() {
        return;
    }
    let version = milan::format::FORMAT_VERSION;
    assert_eq!(version, 5, "write the fixture of the new version here");
    let (dir, contents) = fixture(version);
    let _ = std::fs::remove_dir_all(&dir);
    let index = Index::builder(32).substrings(2).create(&dir).unwrap();
    let mut rng = rng(2024);
    // The same items as the version-1 and version-2 fixtures (codes, keys, labels, deletes).
    let codes = clustered(&mut rng, 32, 300, 6, 0.08);
    let source = *blake3::hash(b"fixture source").as_bytes();
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
        // Since version 2: each batch records how far the import of its source has come.
        writer.set_import_progress(ImportProgress {
            source,
            rows: codes.len() as u64,
            committed: (batch * 120 + chunk.len()) as u64,
            first_id: Some(0),
        });
        if batch == 0 {
            writer.set_import_progress(ImportProgress {
                source: [0xee; 32],
                rows: 1000,
                committed: 0,
                first_id: None,
            });
        }
        writer.commit().unwrap();
    }
    // Version 3: the hash tables are stored (a small index's commits leave its codes in the
    // delta until then) ...
    index.optimize(Some(2)).unwrap();
    // ... then a commit past them: ids the tables do not cover (a delta that searches scan),
    // two of them with the empty item (no item record), and a delete of a code the tables file
    // (its entries stay until the next build).
    let late = clustered(&mut rng, 32, 4, 2, 0.08);
    let mut writer = index.writer().unwrap();
    for (i, code) in late.iter().enumerate() {
        let item = if i % 2 == 0 {
            Item::default()
        } else {
            Item {
                key: Some(format!("images/{:03}.png", 300 + i)),
                label: Some("late".into()),
                ..Item::default()
            }
        };
        writer.add(code, item).unwrap();
    }
    assert!(writer.delete(200).unwrap());
    writer.commit().unwrap();
    assert_eq!(index.info().format_version, version);
    // The space the earlier commits' pages took goes back: a smaller file to check in.
    let index = index;
    index.compact().unwrap();
    drop(index);
    let layout = stored(&dir);
    assert_eq!(layout.record.map(|record| record.slots), Some(300));
    assert_eq!(layout.next_id, 304);

    let index = Index::open_read_only(&dir).unwrap();
    std::fs::write(contents, listing(&index)).unwrap();
    let mut imports = String::new();
    for source in [source, [0xee; 32]] {
        let progress = index.import_progress(&source).unwrap().unwrap();
        let first = progress
            .first_id
            .map_or("-".to_string(), |id| id.to_string());
        imports.push_str(&format!(
            "{} {} {} {first}\n",
            hex(&source),
            progress.rows,
            progress.committed
        ));
    }
    std::fs::write(dir.parent().unwrap().join("imports.txt"), imports).unwrap();
    // The writers' lock files hold no index data: only the database is checked in.
    for name in [
        milan::format::WRITER_LOCK_FILE,
        milan::format::WRITER_QUEUE_FILE,
    ] {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
}

#[test]
fn import_progress_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let codes = clustered(&mut rng(6), 64, 50, 3, 0.1);
    let (a, b) = ([0xa1; 32], [0xb2; 32]);
    {
        let index = Index::builder(64).create(dir.path()).unwrap();
        assert_eq!(index.import_progress(&a).unwrap(), None);
        let mut writer = index.writer().unwrap();
        let first = writer.add(&codes[0], Item::default()).unwrap();
        for code in &codes[1..20] {
            writer.add(code, Item::default()).unwrap();
        }
        writer.set_import_progress(ImportProgress {
            source: a,
            rows: 50,
            committed: 10,
            first_id: Some(first),
        });
        // A later call for the same source replaces the earlier one.
        writer.set_import_progress(ImportProgress {
            source: a,
            rows: 50,
            committed: 20,
            first_id: Some(first),
        });
        writer.set_import_progress(ImportProgress {
            source: b,
            rows: 7,
            committed: 0,
            first_id: None,
        });
        // Not visible before the commit.
        assert_eq!(index.import_progress(&a).unwrap(), None);
        writer.commit().unwrap();
        assert_eq!(index.import_progress(&a).unwrap().unwrap().committed, 20);
    }
    let index = Index::open_read_only(dir.path()).unwrap();
    assert_eq!(index.info().format_version, milan::format::FORMAT_VERSION);
    assert_eq!(
        index.import_progress(&a).unwrap(),
        Some(ImportProgress {
            source: a,
            rows: 50,
            committed: 20,
            first_id: Some(0),
        })
    );
    assert_eq!(index.import_progress(&b).unwrap().unwrap().rows, 7);
    assert_eq!(index.import_progress(&[0; 32]).unwrap(), None);
    assert_eq!(index.len(), 20);
}

#[test]
fn a_dropped_writer_leaves_the_previous_import_progress() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(16).create(dir.path()).unwrap();
    let code = Code::from_hex("abcd").unwrap();
    let source = [7; 32];
    let committed = ImportProgress {
        source,
        rows: 3,
        committed: 1,
        first_id: Some(0),
    };
    let mut writer = index.writer().unwrap();
    writer.add(&code, Item::default()).unwrap();
    writer.set_import_progress(committed.clone());
    writer.commit().unwrap();
    {
        // A batch that dies before its commit (an error, a kill): neither its rows nor its
        // progress may survive, so a re-run resumes at row 1 and adds no duplicate.
        let mut writer = index.writer().unwrap();
        writer.add(&code, Item::default()).unwrap();
        writer.add(&code, Item::default()).unwrap();
        writer.set_import_progress(ImportProgress {
            committed: 3,
            ..committed.clone()
        });
    }
    let mut writer = index.writer().unwrap();
    writer.add(&code, Item::default()).unwrap();
    writer.set_import_progress(ImportProgress {
        committed: 3,
        ..committed.clone()
    });
    writer.abort();
    assert_eq!(
        index.import_progress(&source).unwrap(),
        Some(committed.clone())
    );
    assert_eq!(index.len(), 1);
    drop(index);
    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.import_progress(&source).unwrap(), Some(committed));
    assert_eq!(index.len(), 1);
}

#[test]
fn impossible_import_progress_is_refused_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(16).create(dir.path()).unwrap();
    let code = Code::from_hex("abcd").unwrap();
    for (bad, expected) in [
        (
            ImportProgress {
                source: [1; 32],
                rows: 2,
                committed: 3,
                first_id: Some(0),
            },
            "3 rows committed of a source of 2 rows",
        ),
        (
            ImportProgress {
                source: [1; 32],
                rows: 2,
                committed: 1,
                first_id: Some(1),
            },
            "first id 1 has not been handed out",
        ),
    ] {
        let mut writer = index.writer().unwrap();
        writer.add(&code, Item::default()).unwrap();
        writer.set_import_progress(bad);
        let err = writer.commit().unwrap_err();
        assert!(matches!(err, milan::Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
        assert!(err.to_string().contains(&hex(&[1; 32])), "{err}");
        assert_eq!(index.len(), 0);
        assert_eq!(index.import_progress(&[1; 32]).unwrap(), None);
    }
}

#[test]
#[cfg(feature = "cli")]
fn index_upgrade_converts_an_old_index_once_and_says_so() {
    for version in [1, 2] {
        let copy = fixture_copy(version);
        let out = ok(&["index", "upgrade", s(copy.path())]);
        assert!(
            out.contains(&format!(
                "from index format version {version} to {}",
                milan::format::FORMAT_VERSION
            )),
            "{out}"
        );
        let index = Index::open_read_only(copy.path()).unwrap();
        assert_eq!(index.info().format_version, milan::format::FORMAT_VERSION);
        assert_fixture_contents(&index, version);
        drop(index);
        let out = ok(&["index", "upgrade", s(copy.path())]);
        assert!(out.contains("already; nothing to do"), "{out}");
    }
    // A writing command upgrades first, and says so on standard error.
    let copy = fixture_copy(1);
    let output = milan(&["index", "delete", s(copy.path()), "--id", "1"]);
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("upgraded") && stderr.contains("from index format version 1"),
        "{stderr}"
    );
}

#[test]
#[cfg(feature = "cli")]
fn an_import_rebuilds_the_stored_tables_only_when_its_delta_passes_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let codes = clustered(&mut rng(42), 64, 27_000, 30, 0.1);
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    let covered = |dir: &Path| stored(dir).record.map(|record| record.slots);
    let import = |range: std::ops::Range<usize>, name: &str| {
        let path = tmp.path().join(name);
        write_codes(&path, &codes[range]);
        ok(&["index", "import", s(&dir), "--codes", s(&path), "--quiet"]);
    };
    // A first import files all its codes; 1,000 more wait in the delta (its limit is 4,096
    // codes here), and 6,000 more pass it, so that import files everything again.
    import(0..20_000, "a.npy");
    assert_eq!(covered(&dir), Some(20_000));
    import(20_000..21_000, "b.npy");
    assert_eq!(covered(&dir), Some(20_000));
    import(21_000..27_000, "c.npy");
    assert_eq!(covered(&dir), Some(27_000));
    let index = Index::open_read_only(&dir).unwrap();
    let live: Vec<(u64, Code)> = (0..).zip(codes.iter().cloned()).collect();
    let reader = index.reader().unwrap();
    for (_, code) in live.iter().step_by(4001) {
        assert_eq!(
            reader.search(code).unwrap().top_k(10).unwrap(),
            brute_top_k(&live, code, 10)
        );
    }
}
