//! Bad input gets a clear, typed error and changes nothing.

use milan::format::{MetaRecord, DATABASE_FILE, META_KEY};
use milan::{Code, Error, Index, Item};
use redb::{ReadableTable, TableDefinition};

use crate::util::*;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BUCKETS: TableDefinition<&[u8; 14], &[u8]> = TableDefinition::new("buckets");

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
    (dir, codes)
}

#[test]
fn impossible_layouts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bits in [0, 4, 12, 1032] {
        let err = Index::builder(bits)
            .create(dir.path().join("x"))
            .unwrap_err();
        assert!(matches!(err, Error::Layout(_)), "{bits}: {err}");
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
        matches!(Index::open(&missing), Err(Error::MissingDirectory { path }) if path == missing)
    );
    assert!(matches!(
        Index::open_read_only(dir.path()),
        Err(Error::NotAnIndex { .. })
    ));
    // A redb file that is not a milan index.
    let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
    drop(db);
    let err = Index::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotAnIndex { .. }), "{err}");
    // A file that is not a database at all.
    std::fs::write(dir.path().join(DATABASE_FILE), b"hello, not a database").unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    assert!(err.to_string().contains(DATABASE_FILE), "{err}");
    let err = Index::builder(64).create(dir.path()).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
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
            meta.format_version = 2;
            table.insert(META_KEY, meta.encode().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooNew {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade milan"), "{err}");
    assert!(matches!(
        Index::open_read_only(dir.path()),
        Err(Error::TooNew { .. })
    ));
    assert!(
        std::fs::read(&path).unwrap() == before,
        "a refused open wrote to the file"
    );
}

#[test]
fn a_second_writer_handle_gets_a_lock_error_naming_the_file() {
    let (dir, _) = sample_index();
    let _writer = Index::open(dir.path()).unwrap();
    for err in [
        Index::open(dir.path()).unwrap_err(),
        Index::open_read_only(dir.path()).unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::Locked { path } if path.ends_with(DATABASE_FILE)),
            "{err}"
        );
    }
}

#[test]
fn a_missing_bucket_entry_is_refused_at_open_and_listed_by_check() {
    let (dir, _) = sample_index();
    let path = dir.path().join(DATABASE_FILE);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(BUCKETS).unwrap();
            let key = *table.first().unwrap().unwrap().0.value();
            table.remove(&key).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Index::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    assert!(err.to_string().contains("milan index check"), "{err}");
}

#[test]
fn check_lists_every_damaged_record() {
    let (dir, _) = sample_index();
    let path = dir.path().join(DATABASE_FILE);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut buckets = txn.open_table(BUCKETS).unwrap();
            let (key, ids) = {
                let first = buckets.first().unwrap().unwrap();
                (*first.0.value(), first.1.value().to_vec())
            };
            // Drop the first id of the first chunk, and file a dangling id.
            buckets.insert(&key, &ids[8..]).unwrap();
            let mut dangling = key;
            dangling[13] = 0xff;
            buckets
                .insert(&dangling, 99_999u64.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(Index::open(dir.path()).is_err());
    let report = Index::verify_dir(dir.path()).unwrap();
    assert!(!report.is_ok());
    let problems = report.problems.join("\n");
    assert!(problems.contains("is missing from bucket"), "{problems}");
    assert!(problems.contains("which has no code"), "{problems}");
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
        Err(Error::CodeLength {
            expected: 64,
            got: 16
        })
    ));
    let search = reader.search(&codes[0]).unwrap();
    assert!(matches!(search.top_k(0), Err(Error::ZeroK)));
    let err = search.within(65).unwrap_err();
    assert!(matches!(
        err,
        Error::RadiusTooLarge {
            radius: 65,
            bits: 64
        }
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
        Err(Error::CodeLength { .. })
    ));
    let huge = Item {
        metadata: Some(vec![0; 1 << 24]),
        ..Item::default()
    };
    assert!(matches!(
        writer.add(&codes[0], huge),
        Err(Error::ItemTooLarge { .. })
    ));
    writer.commit().unwrap();
    assert_eq!(index.len(), 300);
    assert!(Code::from_hex("xyz").is_err());
}
