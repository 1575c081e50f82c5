//! The library API as a new user meets it: what an open does with builder settings, error types
//! and messages (no command-line advice), `Code` conversions, search ties, the CLI's hints.

use std::path::{Path, PathBuf};
#[cfg(feature = "cli")]
use std::process::Command;

#[cfg(feature = "images")]
use crate::util::fake_contract;
use milan::format::DATABASE_FILE;
#[cfg(feature = "train")]
use milan::train::{Recipe, TrainConfig};
#[cfg(feature = "train")]
use milan::TrainError;
use milan::{Code, Error, Index, Item};
use milan::{CodeError, OpenError, WriteError};
#[cfg(feature = "images")]
use milan::{ExtractError, HashHead};

fn index_of(dir: &Path, bits: u32, substrings: u32, codes: &[Code]) {
    let index = Index::builder(bits)
        .substrings(substrings)
        .create(dir)
        .unwrap();
    let mut writer = index.writer().unwrap();
    for code in codes {
        writer.add(code, Item::default()).unwrap();
    }
    writer.commit().unwrap();
}

#[test]
fn an_open_refuses_a_code_length_or_substrings_other_than_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    index_of(&dir, 64, 4, &[Code::from(1u64), Code::from(3u64)]);
    let file = dir.join(DATABASE_FILE);

    for read_only in [false, true] {
        let before = std::fs::read(&file).unwrap();
        let open = |builder: milan::IndexBuilder| {
            if read_only {
                builder.open_read_only(&dir)
            } else {
                builder.open(&dir)
            }
        };
        let err = open(Index::builder(128)).unwrap_err();
        assert!(
            matches!(&err, Error::Open(OpenError::BitsMismatch { path, stored: 64, requested: 128 }) if *path == dir),
            "{err:?}"
        );
        let said = err.to_string();
        assert!(
            said.contains("64-bit") && said.contains("128 bits"),
            "{said}"
        );

        let err = open(Index::builder(64).substrings(8)).unwrap_err();
        assert!(
            matches!(&err, Error::Open(OpenError::SubstringsMismatch { path, stored: 4, requested: 8 }) if *path == dir),
            "{err:?}"
        );
        let said = err.to_string();
        assert!(
            said.contains("4 substrings") && said.contains("the 8 asked for"),
            "{said}"
        );
        assert!(said.contains("Index::optimize"), "{said}");
        assert!(!said.contains("milan index"), "{said}");
        assert!(
            std::fs::read(&file).unwrap() == before,
            "a refused open wrote to the file"
        );

        // Matching settings open; expected_len only sizes a new index and is ignored here.
        let index = open(
            Index::builder(64)
                .substrings(4)
                .expected_len(10)
                .cache_size(1 << 20),
        )
        .unwrap();
        assert_eq!((index.bits(), index.substrings(), index.len()), (64, 4, 2));
        drop(index);
        let index = open(Index::builder(64)).unwrap();
        assert_eq!(index.substrings(), 4);
        drop(index);

        // An image binding belongs to create: an open with one is refused, not silently ignored.
        #[cfg(feature = "images")]
        {
            let head = HashHead::lsh(64, 3, 1, None, None).unwrap();
            let err = open(Index::builder(64).images(fake_contract(3), head)).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
            assert!(err.to_string().contains("create only"), "{err}");
        }
    }

    // Index::open takes whatever is stored, whatever its length.
    let other = tmp.path().join("idx16");
    index_of(&other, 16, 2, &[Code::from([1u8, 2])]);
    assert_eq!(Index::open(&other).unwrap().bits(), 16);
    assert_eq!(Index::open_read_only(&other).unwrap().bits(), 16);
    // A refused open wrote nothing: the index still opens and holds its codes.
    assert_eq!(Index::open(&dir).unwrap().len(), 2);
}

#[test]
fn a_plain_file_given_as_the_index_is_not_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let errors = [
        Index::open(&file).unwrap_err(),
        Index::open_read_only(&file).unwrap_err(),
        Index::verify_dir(&file).unwrap_err(),
        Index::builder(64).create(&file).unwrap_err(),
    ];
    for err in errors {
        assert!(
            matches!(&err, Error::Open(OpenError::NotADirectory { path }) if *path == file),
            "{err:?}"
        );
        let said = err.to_string();
        assert!(said.contains("not a directory"), "{said}");
        assert!(!said.contains("no such"), "{said}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    let missing = tmp.path().join("missing");
    assert!(matches!(
        Index::open(&missing),
        Err(Error::Open(OpenError::MissingDirectory { .. }))
    ));
}

#[test]
fn library_errors_name_library_calls_not_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let mut said = Vec::new();

    let err = Index::open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, Error::Open(OpenError::NotAnIndex { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("Index::builder"), "{err}");
    said.push(err.to_string());

    std::fs::write(tmp.path().join(DATABASE_FILE), b"not a database").unwrap();
    let err = Index::open(tmp.path()).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err:?}");
    assert!(err.to_string().contains("Index::verify_dir"), "{err}");
    said.push(err.to_string());

    let recovery = Error::Open(OpenError::NeedsRecovery {
        path: PathBuf::from("idx"),
    });
    assert!(recovery.to_string().contains("Index::open"), "{recovery}");
    said.push(recovery.to_string());

    // Two handles in one process take turns writing: a write that waits past its timeout
    // says so, naming the index, the setting, and the holder (this process).
    let dir = tmp.path().join("idx");
    index_of(&dir, 16, 2, &[]);
    let first = Index::open(&dir).unwrap();
    let writing = first.writer().unwrap();
    let err = Index::builder(16)
        .lock_timeout(std::time::Duration::from_millis(50))
        .open(&dir)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Write(WriteError::LockTimeout { path, holder: Some(holder), .. })
            if *path == dir && holder.contains(&std::process::id().to_string())),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("IndexBuilder::lock_timeout"),
        "{err}"
    );
    said.push(err.to_string());
    drop(writing);

    let err = Code::from([1u8])
        .distance(&Code::from([1u8, 2]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Code(CodeError::CodeLengthsDiffer { left: 8, right: 16 })
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("index"), "{err}");
    said.push(err.to_string());

    // A folder that is no DATA names the library's way of making one, not `milan extract`.
    #[cfg(feature = "train")]
    {
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = milan::dataset::Dataset::load(&empty).unwrap_err();
        assert!(
            matches!(err, Error::Train(TrainError::BadData { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("IngestOptions::keep_features"),
            "{err}"
        );
        said.push(err.to_string());
    }

    for message in said {
        assert!(
            !message.contains("`milan")
                && !message.contains("--")
                && !message.contains("milan index create")
                && !message.contains("milan index check"),
            "{message}"
        );
    }
}

#[test]
fn a_bad_code_length_is_one_error_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    for bits in [0, 12, 1032] {
        #[allow(unused_mut)] // training adds its own error with the `train` feature
        let mut errors = vec![
            Index::builder(bits)
                .create(tmp.path().join("idx"))
                .unwrap_err(),
            Code::from_fn(bits, |_| true).unwrap_err(),
        ];
        #[cfg(feature = "train")]
        errors.push(
            TrainConfig::new(Recipe::default(), bits)
                .check()
                .unwrap_err(),
        );
        for err in errors {
            assert!(
                matches!(err, Error::Code(CodeError::InvalidBits { bits: b }) if b == bits),
                "{bits}: {err:?}"
            );
            assert!(err.to_string().contains("multiple of 8"), "{err}");
        }
    }
    // A bad number of substrings is still its own error.
    let err = Index::builder(64)
        .substrings(40)
        .create(tmp.path().join("idx"))
        .unwrap_err();
    assert!(matches!(err, Error::Code(CodeError::Layout(_))), "{err:?}");
}

#[test]
fn code_conversions_agree_with_hex() {
    let value = 0x8001_fe7f_00ff_1042_u64;
    let code = Code::from(value);
    assert_eq!(code, Code::from_hex("8001fe7f00ff1042").unwrap());
    assert_eq!(code, "8001fe7f00ff1042".parse().unwrap());
    assert_eq!(code, Code::from(value.to_be_bytes()));
    assert!(code.as_bitslice()[0], "the most significant bit is bit 0");
    assert_eq!(code.to_string(), "8001fe7f00ff1042");
    assert_eq!(format!("{code}").parse::<Code>().unwrap(), code);
    assert_eq!(u64::try_from(&code).unwrap(), value);
    assert!(u64::try_from(&Code::from([0u8; 16])).is_err());
    assert_eq!(Code::from([0xffu8; 32]).bits(), 256);
    assert!(matches!(
        "0g".parse::<Code>(),
        Err(Error::Code(CodeError::InvalidCode { .. }))
    ));
}

#[test]
fn search_id_orders_ties_by_id_without_favouring_the_query() {
    let tmp = tempfile::tempdir().unwrap();
    let same = Code::from(0x0ff0_0ff0_0ff0_0ff0_u64);
    index_of(tmp.path(), 64, 4, &vec![same; 20]);
    let index = Index::open_read_only(tmp.path()).unwrap();
    let reader = index.reader().unwrap();
    let ids = |hits: Vec<milan::Hit>| hits.iter().map(|hit| hit.id).collect::<Vec<_>>();
    assert_eq!(
        ids(reader.search_id(15).unwrap().top_k(5).unwrap()),
        [0, 1, 2, 3, 4]
    );
    assert!(ids(reader.search_id(15).unwrap().within(0).unwrap()).contains(&15));
    assert_eq!(reader.search_id(15).unwrap().top_k(20).unwrap().len(), 20);
}

/// Runs the command line; its standard error.
#[cfg(feature = "cli")]
fn milan_fails(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_milan"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
#[cfg(feature = "cli")]
fn the_command_line_adds_its_own_advice_to_library_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let said = milan_fails(&["index", "info", dir]);
    assert!(said.contains("not a milan index"), "{said}");
    assert!(
        said.lines()
            .any(|line| line.starts_with("hint: ") && line.contains("milan index create")),
        "{said}"
    );
    std::fs::write(tmp.path().join(DATABASE_FILE), b"not a database").unwrap();
    let said = milan_fails(&["index", "info", dir]);
    assert!(said.contains("damaged"), "{said}");
    assert!(
        said.lines()
            .any(|line| line.starts_with("hint: ") && line.contains("milan index check")),
        "{said}"
    );
}

#[test]
fn a_reader_outlives_its_index_whole() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(64).create(dir.path()).unwrap();
    let mut writer = index.writer().unwrap();
    let code = Code::from_hex("00000000000000ff").unwrap();
    let item = Item {
        key: Some("a.png".into()),
        label: Some("cats".into()),
        ..Item::default()
    };
    let id = writer.add(&code, item.clone()).unwrap();
    writer.commit().unwrap();
    let reader = index.reader().unwrap();
    drop(index);
    // Searches and stored items both still answer from the snapshot.
    let hits = reader.search(&code).unwrap().within(0).unwrap();
    assert_eq!(hits.iter().map(|hit| hit.id).collect::<Vec<_>>(), [id]);
    assert_eq!(reader.item(id).unwrap(), Some(item));
    // Other handles open and write while the reader lives; its snapshot stays as it was.
    let other = Index::open(dir.path()).unwrap();
    let mut writer = other.writer().unwrap();
    assert!(writer.delete(id).unwrap());
    writer.commit().unwrap();
    assert_eq!(reader.len(), 1);
    assert_eq!(
        reader.item(id).unwrap().unwrap().key.as_deref(),
        Some("a.png")
    );
    drop(reader);
    assert_eq!(Index::open(dir.path()).unwrap().len(), 0);
}

/// The live codes of `index` by id, read through a fresh reader.
fn live_codes(index: &Index) -> Vec<(u64, Code)> {
    let reader = index.reader().unwrap();
    reader
        .ids()
        .map(|id| (id, reader.code(id).unwrap()))
        .collect()
}

/// Every query's top-k through `index` equals brute force over `live`.
fn assert_answers(index: &Index, live: &[(u64, Code)], bits: u32) {
    let reader = index.reader().unwrap();
    assert_eq!(reader.len(), live.len() as u64);
    let mut rng = crate::util::rng(17);
    for _ in 0..10 {
        let query = crate::util::random_code(&mut rng, bits);
        assert_eq!(
            reader.search(&query).unwrap().top_k(20).unwrap(),
            crate::util::brute_top_k(live, &query, 20)
        );
    }
}

#[test]
fn handles_catch_up_with_each_others_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = crate::util::rng(5);
    let codes = crate::util::clustered(&mut rng, 32, 6000, 5, 0.1);
    let a = Index::builder(32).substrings(2).create(dir.path()).unwrap();
    let b = Index::open(dir.path()).unwrap();
    let c = Index::open_read_only(dir.path()).unwrap();
    let mut live: Vec<(u64, Code)> = Vec::new();
    // Adds that stay in the scanned delta, then deletes: applied from the commit log.
    let mut writer = a.writer().unwrap();
    for code in &codes[..300] {
        live.push((writer.add(code, Item::default()).unwrap(), code.clone()));
    }
    writer.commit().unwrap();
    let before = c.reader().unwrap();
    let mut writer = a.writer().unwrap();
    for id in [3, 50, 299] {
        assert!(writer.delete(id).unwrap());
    }
    writer.commit().unwrap();
    live.retain(|(id, _)| ![3, 50, 299].contains(id));
    for handle in [&a, &b, &c] {
        assert_answers(handle, &live, 32);
    }
    // A reader keeps its commit.
    assert!(before.contains(50) && before.len() == 300);
    // Writes through the other handle continue the ids; a commit past the delta's limit
    // rebuilds the tables, which the other handles read whole.
    let mut writer = b.writer().unwrap();
    for code in &codes[300..] {
        live.push((writer.add(code, Item::default()).unwrap(), code.clone()));
    }
    writer.commit().unwrap();
    assert_eq!(live.last().unwrap().0, 5999);
    for handle in [&a, &b, &c] {
        assert_answers(handle, &live, 32);
    }
    // A new layout from another handle: the others follow it.
    a.optimize(Some(3)).unwrap();
    assert_eq!((b.substrings(), c.substrings()), (3, 3));
    assert_eq!(live_codes(&c), live);
    assert_answers(&b, &live, 32);
}

#[test]
fn a_handle_the_commit_log_no_longer_reaches_reads_the_index_whole() {
    use milan::format::{COMMIT_LOG_LEN, MAX_LOGGED_DELETES};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = crate::util::rng(8);
    let a = Index::builder(16).create(dir.path()).unwrap();
    let b = Index::open_read_only(dir.path()).unwrap();
    // More single commits than the log keeps.
    let mut live = Vec::new();
    for _ in 0..COMMIT_LOG_LEN + 3 {
        let code = crate::util::random_code(&mut rng, 16);
        let mut writer = a.writer().unwrap();
        live.push((writer.add(&code, Item::default()).unwrap(), code));
        writer.commit().unwrap();
    }
    assert_eq!(live_codes(&b), live);
    // More deletes in one commit than a log record lists.
    let mut writer = a.writer().unwrap();
    for _ in 0..MAX_LOGGED_DELETES + 10 {
        let code = crate::util::random_code(&mut rng, 16);
        live.push((writer.add(&code, Item::default()).unwrap(), code));
    }
    writer.commit().unwrap();
    assert_eq!(b.len(), live.len() as u64);
    let mut writer = a.writer().unwrap();
    let doomed: std::collections::HashSet<u64> = live
        .iter()
        .map(|(id, _)| *id)
        .take(MAX_LOGGED_DELETES + 1)
        .collect();
    for &id in &doomed {
        assert!(writer.delete(id).unwrap());
    }
    writer.commit().unwrap();
    live.retain(|(id, _)| !doomed.contains(id));
    assert_eq!(live_codes(&b), live);
    assert_answers(&b, &live, 16);
}

#[test]
fn a_writer_moves_between_threads_and_a_waiting_thread_times_out() {
    fn is_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(16)
        .lock_timeout(std::time::Duration::from_millis(200))
        .create(dir.path())
        .unwrap();
    std::thread::scope(|scope| {
        let mut writer = index.writer().unwrap();
        writer.add(&Code::from([1u8, 2]), Item::default()).unwrap();
        is_send(&writer);
        // Another thread waits for this handle's writer, up to the lock timeout.
        let waited = scope
            .spawn(|| index.writer().map(|_| ()).unwrap_err())
            .join()
            .unwrap();
        assert!(
            matches!(&waited, Error::Write(WriteError::LockTimeout { holder: Some(holder), .. })
                if holder.contains("another thread of this process")),
            "{waited:?}"
        );
        assert!(scope
            .spawn(|| index.try_writer().unwrap().is_none())
            .join()
            .unwrap());
        // The writer begun here commits on another thread, which releases the lock.
        scope
            .spawn(move || writer.commit().unwrap())
            .join()
            .unwrap();
    });
    assert_eq!(index.len(), 1);
    let writer = std::thread::scope(|scope| scope.spawn(|| index.writer().is_ok()).join().unwrap());
    assert!(writer);
}

#[test]
fn verify_and_compact_run_through_a_shared_handle() {
    let dir = tempfile::tempdir().unwrap();
    let index = std::sync::Arc::new(Index::builder(16).create(dir.path()).unwrap());
    let mut rng = crate::util::rng(4);
    for _ in 0..3 {
        let mut writer = index.writer().unwrap();
        for _ in 0..500 {
            let code = crate::util::random_code(&mut rng, 16);
            writer.add(&code, Item::default()).unwrap();
        }
        writer.commit().unwrap();
    }
    // A reader of the handle is alive: the structural check and compaction refuse, by name.
    let reader = index.reader().unwrap();
    assert!(matches!(
        index.compact(),
        Err(Error::Write(WriteError::ReadersOpen { .. }))
    ));
    assert!(matches!(
        index.verify(),
        Err(Error::Write(WriteError::ReadersOpen { .. }))
    ));
    drop(reader);
    // From other threads sharing the handle, with no reader alive, both run.
    let shared = index.clone();
    let report = std::thread::spawn(move || shared.verify().unwrap())
        .join()
        .unwrap();
    assert!(
        report.is_ok() && report.storage_ok == Some(true),
        "{report:?}"
    );
    let shared = index.clone();
    std::thread::spawn(move || shared.compact().unwrap())
        .join()
        .unwrap();
    assert_eq!(index.reader().unwrap().len(), 1500);
}

#[test]
#[cfg(feature = "images")]
fn the_extractor_contract_and_items_round_trip_through_the_index_as_milan_types() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    let mut contract = fake_contract(3);
    contract.layout = "nhwc".parse().unwrap();
    contract.pixel_range = "-1..1".parse().unwrap();
    let head = HashHead::lsh(16, 3, 1, None, None).unwrap();
    let index = Index::builder(16)
        .images(contract.clone(), head)
        .create(&dir)
        .unwrap();
    let item = Item {
        key: Some("a.png".into()),
        content_hash: Some([9; 32]),
        label: Some("beach".into()),
        metadata: Some(vec![1, 2, 3]),
    };
    let mut writer = index.writer().unwrap();
    let id = writer.add(&Code::from([1u8, 2]), item.clone()).unwrap();
    writer.commit().unwrap();
    drop(index);

    let index = Index::open_read_only(&dir).unwrap();
    assert_eq!(index.model(), Some(&contract));
    assert_eq!(index.reader().unwrap().item(id).unwrap(), Some(item));
    let summary = contract.to_string();
    assert!(
        summary.contains("nhwc") && summary.contains("-1..1"),
        "{summary}"
    );
}

#[test]
#[cfg(feature = "images")]
fn a_head_that_cannot_code_a_contract_says_why_in_fields() {
    let head = HashHead::lsh(16, 8, 1, None, None).unwrap();
    match head.check_contract(&fake_contract(3)) {
        Err(milan::HeadMismatch::Dimension {
            head,
            model,
            output,
        }) => {
            assert_eq!((head, model, output.as_str()), (8, 3, "features"));
        }
        other => panic!("expected a dimension mismatch, got {other:?}"),
    }
    assert_eq!(head.check_contract(&fake_contract(8)), Ok(()));
    // An index refuses the pair by the same reason.
    let tmp = tempfile::tempdir().unwrap();
    let err = Index::builder(16)
        .images(fake_contract(3), head)
        .create(tmp.path().join("idx"))
        .unwrap_err();
    assert!(
        matches!(err, Error::Extract(ExtractError::Mismatch { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("8-dimensional"), "{err}");
}

#[test]
#[cfg(feature = "images")]
fn a_handle_tells_when_another_re_coded_the_index_with_another_head() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    let old_head = HashHead::lsh(16, 4, 1, None, None).unwrap();
    let index = Index::builder(16)
        .images(fake_contract(4), old_head.clone())
        .create(&dir)
        .unwrap();
    let mut writer = index.writer().unwrap();
    for i in 0..5 {
        let features = vec![i as f32, 1.0, -1.0, 0.5];
        let code = old_head
            .codes(
                ndarray::Array2::from_shape_vec((1, 4), features.clone())
                    .unwrap()
                    .view(),
            )
            .unwrap()
            .remove(0);
        writer
            .add_with_features(&code, Item::default(), features)
            .unwrap();
    }
    writer.commit().unwrap();
    assert!(index.check_head_current().is_ok());

    // Another handle (as another process would) re-codes the index with a new head.
    let other = Index::open(&dir).unwrap();
    other
        .rehash(HashHead::lsh(16, 4, 2, None, None).unwrap())
        .unwrap();
    drop(other);

    // This handle's head is the old one: it finds out under its next writer, before a commit.
    let writer = index.writer().unwrap();
    let err = index.check_head_current().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Extract(ExtractError::Mismatch {
                reason: milan::Mismatch::HeadReplaced,
                ..
            })
        ),
        "{err:?}"
    );
    drop(writer);
}
