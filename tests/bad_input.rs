//! Bad input gets a clear, typed error and changes nothing.

use milan::format::{MetaRecord, DATABASE_FILE, FORMAT_VERSION, META_KEY};
use milan::{Code, Error, Index, Item};
use milan::{CodeError, OpenError, SearchError, WriteError};
use redb::{ReadableTable, TableDefinition};

use crate::util::*;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HASH_TABLES: TableDefinition<&[u8; 7], &[u8]> = TableDefinition::new("hash_tables");
const CODE_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("code_blocks");
const IMPORTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("imports");

/// An index of 300 clustered 64-bit codes; returns its directory and codes.
fn sample_index() -> (tempfile::TempDir, Vec<Code>) {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(64).substrings(4).create(dir.path()).unwrap();
    let codes = clustered(&mut rng(9), 64, 300, 4, 0.1);
    let mut writer = index.writer().unwrap();
    for code in &codes {
        writer.add(code, Item::default()).unwrap();
    }
    writer.commit().unwrap();
    // Files them in stored hash tables (300 codes would otherwise wait in the scanned delta).
    index.optimize(Some(4)).unwrap();
    (dir, codes)
}

/// The key of part `part` of the entries of hash table `table`.
fn entries_part(table: u16, part: u32) -> [u8; 7] {
    milan::format::PartKey {
        substring: table,
        kind: milan::format::PartKind::Entries,
        part,
    }
    .encode()
}

#[test]
fn impossible_layouts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bits in [0, 4, 12, 1032] {
        let err = Index::builder(bits)
            .create(dir.path().join("x"))
            .unwrap_err();
        assert!(
            matches!(err, Error::Code(CodeError::InvalidBits { .. })),
            "{bits}: {err}"
        );
        assert!(err.to_string().contains("multiple of 8"), "{err}");
    }
    let err = Index::builder(64)
        .substrings(40)
        .create(dir.path().join("y"))
        .unwrap_err();
    assert!(err.to_string().contains("use 2 to 16"), "{err}");
    assert!(!dir.path().join("x").join(DATABASE_FILE).exists());
}

#[test]
fn missing_and_foreign_directories_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    assert!(
        matches!(Index::open(&missing), Err(Error::Open(OpenError::MissingDirectory { path })) if path == missing)
    );
    assert!(matches!(
        Index::open_read_only(dir.path()),
        Err(Error::Open(OpenError::NotAnIndex { .. }))
    ));
    // A redb file that is not a milan index.
    let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
    drop(db);
    let err = Index::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Open(OpenError::NotAnIndex { .. })),
        "{err}"
    );
    // A file that is not a database at all.
    std::fs::write(dir.path().join(DATABASE_FILE), b"hello, not a database").unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    assert!(err.to_string().contains(DATABASE_FILE), "{err}");
    let err = Index::builder(64).create(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Open(OpenError::AlreadyExists { .. })),
        "{err}"
    );
}

#[test]
fn an_index_of_a_newer_format_is_refused_untouched() {
    let (dir, _) = sample_index();
    let path = dir.path().join(DATABASE_FILE);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(META).unwrap();
            let mut meta =
                MetaRecord::decode(table.get(META_KEY).unwrap().unwrap().value()).unwrap();
            meta.format_version = FORMAT_VERSION + 1;
            table.insert(META_KEY, meta.encode().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Open(OpenError::TooNew {
                found,
                supported: FORMAT_VERSION,
                ..
            }) if found == FORMAT_VERSION + 1
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade milan"), "{err}");
    assert!(matches!(
        Index::open_read_only(dir.path()),
        Err(Error::Open(OpenError::TooNew { .. }))
    ));
    assert!(
        std::fs::read(&path).unwrap() == before,
        "a refused open wrote to the file"
    );
}

#[test]
fn a_second_writer_waits_for_its_turn_and_times_out_naming_the_holder() {
    let (dir, codes) = sample_index();
    let first = Index::open(dir.path()).unwrap();
    let mut writing = first.writer().unwrap();
    writing.add(&codes[0], Item::default()).unwrap();
    let short = || Index::builder(64).lock_timeout(std::time::Duration::from_millis(100));
    let waits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = waits.clone();
    let err = short()
        .on_lock_wait(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .open(dir.path())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Write(WriteError::LockTimeout { path, holder: Some(holder), .. })
            if path == dir.path() && holder.contains(&std::process::id().to_string())),
        "{err:?}"
    );
    assert_eq!(waits.load(std::sync::atomic::Ordering::Relaxed), 1);
    // Reads do not wait: a read-only handle opens and answers from the last commit.
    let reader = Index::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.len(), 300);
    // Once the first writer commits, the second handle gets its turn and sees that commit.
    writing.commit().unwrap();
    let second = short().open(dir.path()).unwrap();
    let mut writer = second.writer().unwrap();
    writer.add(&codes[1], Item::default()).unwrap();
    writer.commit().unwrap();
    assert_eq!((second.len(), first.len(), reader.len()), (302, 302, 302));
}

#[test]
fn a_missing_table_part_is_refused_at_open_and_listed_by_check() {
    let (dir, _) = sample_index();
    let path = dir.path().join(DATABASE_FILE);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(HASH_TABLES)
            .unwrap()
            .remove(&entries_part(1, 0))
            .unwrap()
            .unwrap();
        txn.commit().unwrap();
    }
    for err in [
        Index::open(dir.path()).unwrap_err(),
        Index::open_read_only(dir.path()).unwrap_err(),
    ] {
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        assert!(err.to_string().contains("hash table 1"), "{err}");
        assert!(err.to_string().contains("Index::verify_dir"), "{err}");
    }
    let report = Index::verify_dir(dir.path()).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("hash table 1")),
        "{report:?}"
    );
}

#[test]
fn check_lists_every_damaged_record() {
    let (dir, codes) = sample_index();
    let path = dir.path().join(DATABASE_FILE);
    let (first, last) = {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let ids = {
            let mut parts = txn.open_table(HASH_TABLES).unwrap();
            let mut entries = parts
                .get(&entries_part(0, 0))
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let id = |at: usize| u32::from_le_bytes(entries[at..at + 4].try_into().unwrap());
            let (first, last) = (id(0), id(entries.len() - 7));
            // The first entry now names the last one's id: that id is filed twice, the first
            // id is missing, and (the two lying in different buckets) filed where it is not.
            let copy: Vec<u8> = entries[entries.len() - 7..entries.len() - 3].to_vec();
            entries[..4].copy_from_slice(&copy);
            parts
                .insert(&entries_part(0, 0), entries.as_slice())
                .unwrap();
            (first, last)
        };
        txn.commit().unwrap();
        ids
    };
    // Nothing out of bounds: the open takes it, and only the full check can tell.
    let index = Index::open_read_only(dir.path()).unwrap();
    assert_eq!(index.len(), codes.len() as u64);
    drop(index);
    let report = Index::verify_dir(dir.path()).unwrap();
    assert!(!report.is_ok());
    let problems = report.problems.join("\n");
    assert!(
        problems.contains(&format!("id {last} is filed twice in hash table 0")),
        "{problems}"
    );
    assert!(
        problems.contains(&format!("id {first} is missing from hash table 0")),
        "{problems}"
    );
    assert!(
        problems.contains(&format!("id {last} is filed under the wrong bucket 0:")),
        "{problems}"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_milan"))
        .args(["index", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("damaged"), "{text}");
}

#[test]
fn bad_queries_and_codes_are_typed_errors_that_change_nothing() {
    let (dir, codes) = sample_index();
    let index = Index::open(dir.path()).unwrap();
    let reader = index.reader().unwrap();
    let short = Code::from_hex("abcd").unwrap();
    assert!(matches!(
        reader.search(&short),
        Err(Error::Code(CodeError::CodeLength {
            expected: 64,
            got: 16
        }))
    ));
    let search = reader.search(&codes[0]).unwrap();
    assert!(matches!(
        search.top_k(0),
        Err(Error::Search(SearchError::ZeroK))
    ));
    let err = search.within(65).unwrap_err();
    assert!(matches!(
        err,
        Error::Search(SearchError::RadiusTooLarge {
            radius: 65,
            bits: 64
        })
    ));
    assert!(err.to_string().contains("use 0 to 64"));
    assert_eq!(search.within(64).unwrap().len(), 300);
    assert!(matches!(
        reader.search_id(300),
        Err(Error::UnknownId { id: 300 })
    ));
    let mut writer = index.writer().unwrap();
    assert!(matches!(
        writer.add(&short, Item::default()),
        Err(Error::Code(CodeError::CodeLength { .. }))
    ));
    let huge = Item {
        metadata: Some(vec![0; 1 << 24]),
        ..Item::default()
    };
    assert!(matches!(
        writer.add(&codes[0], huge),
        Err(Error::Write(WriteError::ItemTooLarge { .. }))
    ));
    writer.commit().unwrap();
    assert_eq!(index.len(), 300);
    assert!(Code::from_hex("xyz").is_err());
}

/// Rewrites the meta record of the index in `dir` through redb directly.
fn rewrite_meta(dir: &std::path::Path, change: impl FnOnce(&mut MetaRecord)) {
    let db = redb::Database::open(dir.join(DATABASE_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(META).unwrap();
        let mut meta = MetaRecord::decode(table.get(META_KEY).unwrap().unwrap().value()).unwrap();
        change(&mut meta);
        table.insert(META_KEY, meta.encode().as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_crafted_meta_record_cannot_make_open_allocate_past_the_file() {
    // 1024-bit codes, one of them moved to id 2^32 - 2 and the meta record claiming about 2^32
    // live codes: the open used to trust that count and allocate a slot of 128 bytes per id up
    // to the largest, 512 GiB, aborting the process. Slots are now bounded by what the file can
    // hold, so the open is refused before allocating anything of that size.
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(1024)
        .substrings(32)
        .create(dir.path())
        .unwrap();
    let mut rng = rng(12);
    let codes: Vec<Code> = (0..8).map(|_| random_code(&mut rng, 1024)).collect();
    let mut writer = index.writer().unwrap();
    for code in &codes {
        writer.add(code, Item::default()).unwrap();
    }
    writer.commit().unwrap();
    drop(index);
    // A copy of block 0 far past it, and the meta record counting ids up to there.
    let far = u64::from(u32::MAX) - 2;
    let far_block = far / milan::format::block_ids(128) as u64;
    {
        let db = redb::Database::open(dir.path().join(DATABASE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(CODE_BLOCKS).unwrap();
            let bytes = table.get(0).unwrap().unwrap().value().to_vec();
            table.insert(far_block, bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    rewrite_meta(dir.path(), |meta| {
        meta.next_id = far + 1;
        meta.live_count = far;
    });
    let started = std::time::Instant::now();
    for err in [
        Index::open_read_only(dir.path()).unwrap_err(),
        Index::open(dir.path()).unwrap_err(),
    ] {
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("code block {far_block} follows block 0")),
            "{text}"
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The full check reads what is there and names the count that does not match.
    let report = Index::verify_dir(dir.path()).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("8 codes stored but the meta record counts")),
        "{report:?}"
    );
}

#[test]
fn a_churned_index_whose_ids_ran_far_ahead_of_its_codes_opens() {
    // Ids are never reused: every sync re-code and every add deleted again takes a new one, so an
    // index can hold a few codes under ids far past 64 per code plus 2^24, which the open used to
    // refuse as corrupted. Here 2^24 + 2^16 ids are handed out and dropped again in one
    // transaction (an add deleted before its commit still uses up its id), then four codes added.
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(64).substrings(4).create(dir.path()).unwrap();
    let codes = clustered(&mut rng(21), 64, 4, 2, 0.1);
    let churned = (1u64 << 24) + (1 << 16);
    let mut writer = index.writer().unwrap();
    for _ in 0..churned {
        let id = writer.add(&codes[0], Item::default()).unwrap();
        assert!(writer.delete(id).unwrap());
    }
    let ids: Vec<u64> = codes
        .iter()
        .map(|code| writer.add(code, Item::default()).unwrap())
        .collect();
    writer.commit().unwrap();
    assert_eq!(ids[0], churned);
    drop(index);

    for writable in [false, true] {
        let index = if writable {
            Index::open(dir.path()).unwrap()
        } else {
            Index::open_read_only(dir.path()).unwrap()
        };
        assert_eq!(index.len(), 4);
        let reader = index.reader().unwrap();
        assert_eq!(reader.ids().collect::<Vec<_>>(), ids);
        let hits = reader.search(&codes[3]).unwrap().top_k(1).unwrap();
        assert_eq!(hits[0].distance, 0);
    }
    assert!(Index::verify_dir(dir.path()).unwrap().is_ok());
}

#[test]
fn a_huge_top_k_on_the_command_line_returns_every_code() {
    let (dir, codes) = sample_index();
    let live: Vec<(u64, Code)> = codes
        .iter()
        .cloned()
        .zip(0..)
        .map(|(c, i)| (i, c))
        .collect();
    let out = ok(&[
        "query",
        s(dir.path()),
        "--code",
        &codes[3].to_hex(),
        "--top-k",
        "18446744073709551615",
        "--json",
    ]);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let got: Vec<(u64, u64)> = line["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), r["distance"].as_u64().unwrap()))
        .collect();
    let want: Vec<(u64, u64)> = brute_force(&live, &codes[3])
        .iter()
        .map(|h| (h.id, u64::from(h.distance)))
        .collect();
    assert_eq!(got, want);
    // One past usize::MAX is not a number clap accepts: a usage error, not a search.
    let output = milan(&[
        "query",
        s(dir.path()),
        "--code",
        &codes[3].to_hex(),
        "--top-k",
        "18446744073709551616",
    ]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn bench_with_a_forced_multi_index_search_that_cannot_finish_fails_at_once() {
    // The report: forced multi-index on 1,000 uniform 1024-bit codes (default substrings),
    // top-5 and radius 200, did not finish in 20 s (a quarter of a second per top-5 query in a
    // release build, where a scan takes microseconds). Now the first query is refused.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let index = Index::builder(1024).create(&dir).unwrap();
    let mut rng = rng(8);
    let mut writer = index.writer().unwrap();
    for _ in 0..1000 {
        writer
            .add(&random_code(&mut rng, 1024), Item::default())
            .unwrap();
    }
    writer.commit().unwrap();
    drop(index);
    let queries = tmp.path().join("q.npy");
    write_codes(
        &queries,
        &[random_code(&mut rng, 1024), random_code(&mut rng, 1024)],
    );
    // The same top-5, radius-200 bench over the queries, with `strategy`.
    let bench = |strategy| {
        [
            "bench",
            "search",
            s(&dir),
            "--codes",
            s(&queries),
            "--top-k",
            "5",
            "--radius",
            "200",
            "--strategy",
            strategy,
        ]
    };
    let started = std::time::Instant::now();
    let output = milan(&bench("multi-index"));
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("multi-index hashing would probe"), "{err}");
    assert!(err.contains("auto or scan"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // The scan answers the same queries.
    ok(&bench("scan"));
}

#[test]
fn io_and_storage_errors_print_their_cause_once() {
    // An index directory below a regular file cannot be created: a real I/O error.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let err = Index::builder(64).create(file.join("idx")).unwrap_err();
    let Error::Io { source, .. } = &err else {
        panic!("{err:?}");
    };
    let cause = source.to_string();
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(chain.matches(&cause).count(), 1, "{chain}");
    assert!(chain.contains("plain"), "{chain}");

    let io = std::io::Error::other("disk on fire");
    let storage = Error::Storage {
        path: tmp.path().join(DATABASE_FILE),
        source: Box::new(redb::Error::Io(io)),
    };
    let chain = format!("{:#}", anyhow::Error::from(storage));
    assert_eq!(chain.matches("disk on fire").count(), 1, "{chain}");
    assert!(
        chain.contains("storage error") && chain.contains(DATABASE_FILE),
        "{chain}"
    );
}

#[test]
fn check_lists_a_damaged_import_record() {
    let (dir, _) = sample_index();
    {
        let index = Index::open(dir.path()).unwrap();
        let mut writer = index.writer().unwrap();
        writer.set_import_progress(milan::ImportProgress {
            source: [3; 32],
            rows: 10,
            committed: 4,
            first_id: Some(0),
        });
        writer.commit().unwrap();
    }
    {
        let db = redb::Database::open(dir.path().join(DATABASE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(IMPORTS).unwrap();
            // More rows committed than the source holds, and a record cut short.
            let mut over = 10u64.to_le_bytes().to_vec();
            over.extend(11u64.to_le_bytes());
            over.push(0);
            table.insert(&[3; 32], over.as_slice()).unwrap();
            table.insert(&[4; 32], [1u8, 2, 3].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let report = Index::verify_dir(dir.path()).unwrap();
    let problems = report.problems.join("\n");
    assert!(
        problems.contains(&format!("import {}", "03".repeat(32))),
        "{problems}"
    );
    assert!(
        problems.contains("11 rows committed of a source of 10 rows"),
        "{problems}"
    );
    assert!(
        problems.contains(&format!("import {}", "04".repeat(32))),
        "{problems}"
    );
    let index = Index::open_read_only(dir.path()).unwrap();
    let err = index.import_progress(&[3; 32]).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    assert_eq!(index.import_progress(&[5; 32]).unwrap(), None);
}
