//! Items by key: the key lookup through adds, deletes, updates, upserts, imports, reopens,
//! other handles and processes, the structural check; and re-coding through a shared handle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use milan::{Code, Error, HashHead, Index, Item};
use milan::{CodeError, ExtractError, WriteError};
use milan::{ExtractorContract, InputLayout, PixelRange};

use crate::util::*;

fn keyed(key: &str) -> Item {
    Item {
        key: Some(key.into()),
        ..Item::default()
    }
}

/// What each key should hold, checked against a reader's lookups (every key of `expected`,
/// each list increasing) and against the items themselves.
fn assert_keys(index: &Index, expected: &BTreeMap<String, Vec<u64>>) {
    let reader = index.reader().unwrap();
    for (key, ids) in expected {
        assert_eq!(&reader.ids_with_key(key).unwrap(), ids, "key {key:?}");
        for &id in ids {
            let item = reader.item(id).unwrap().expect("a live id");
            assert_eq!(item.key.as_deref(), Some(key.as_str()));
        }
    }
}

#[test]
fn keys_follow_adds_deletes_updates_and_upserts_and_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let index = Index::builder(32).create(&dir).unwrap();
    let mut rng = rng(11);
    let mut code = || random_code(&mut rng, 32);

    let mut writer = index.writer().unwrap();
    let a0 = writer.add(&code(), keyed("a.png")).unwrap();
    let a1 = writer.add(&code(), keyed("a.png")).unwrap(); // keys need not be unique
    let b = writer.add(&code(), keyed("b.png")).unwrap();
    let none = writer.add(&code(), Item::default()).unwrap();
    let empty = writer.add(&code(), keyed("")).unwrap();
    // The writer sees its own adds by key before the commit.
    assert_eq!(writer.ids_with_key("a.png").unwrap(), [a0, a1]);
    writer.commit().unwrap();
    let mut expected = BTreeMap::from([
        ("a.png".to_string(), vec![a0, a1]),
        ("b.png".to_string(), vec![b]),
        ("".to_string(), vec![empty]),
        ("c.png".to_string(), vec![]),
    ]);
    assert_keys(&index, &expected);
    assert!(index.reader().unwrap().contains(none));

    // A delete by id leaves the key's other item; an update moves the item to its new key.
    let mut writer = index.writer().unwrap();
    assert!(writer.delete(a0).unwrap());
    assert!(writer.update_item(b, keyed("c.png")).unwrap());
    assert_eq!(writer.ids_with_key("a.png").unwrap(), [a1]);
    assert!(writer.ids_with_key("b.png").unwrap().is_empty());
    assert_eq!(writer.ids_with_key("c.png").unwrap(), [b]);
    writer.commit().unwrap();
    expected.insert("a.png".into(), vec![a1]);
    expected.insert("b.png".into(), vec![]);
    expected.insert("c.png".into(), vec![b]);
    assert_keys(&index, &expected);

    // An upsert replaces every item of its key, committed or added in the same transaction.
    let mut writer = index.writer().unwrap();
    let pending = writer.add(&code(), keyed("a.png")).unwrap();
    let new_a_code = code();
    let upserted = writer.upsert(&new_a_code, keyed("a.png")).unwrap();
    assert_eq!(upserted.replaced, [a1, pending]);
    // A new key: nothing replaced.
    let d = writer.upsert(&code(), keyed("d.png")).unwrap();
    assert!(d.replaced.is_empty());
    // Refused upserts change nothing: no key, or a code of the wrong length.
    assert!(matches!(
        writer.upsert(&code(), Item::default()),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        writer.upsert(&Code::from(1u64), keyed("c.png")),
        Err(Error::Code(CodeError::CodeLength { .. }))
    ));
    assert_eq!(writer.ids_with_key("c.png").unwrap(), [b]);
    writer.commit().unwrap();
    expected.insert("a.png".into(), vec![upserted.id]);
    expected.insert("d.png".into(), vec![d.id]);
    assert_keys(&index, &expected);
    assert_eq!(
        index.reader().unwrap().code(upserted.id),
        Some(new_a_code.clone())
    );
    assert!(!index.reader().unwrap().contains(a1));

    // delete_key, including an update made in the same transaction, and a key with nothing.
    let mut writer = index.writer().unwrap();
    assert!(writer.update_item(d.id, keyed("c.png")).unwrap());
    assert_eq!(writer.delete_key("c.png").unwrap(), [b, d.id]);
    assert!(writer.delete_key("c.png").unwrap().is_empty());
    assert!(writer.delete_key("nothing here").unwrap().is_empty());
    writer.commit().unwrap();
    expected.insert("c.png".into(), vec![]);
    expected.insert("d.png".into(), vec![]);
    assert_keys(&index, &expected);

    // A dropped writer's changes leave the lookup as it was.
    let mut writer = index.writer().unwrap();
    writer.upsert(&code(), keyed("a.png")).unwrap();
    writer.delete_key("").unwrap();
    drop(writer);
    assert_keys(&index, &expected);

    // A long key (a mebibyte) is a key like any other.
    let long = "k".repeat(1 << 20);
    let mut writer = index.writer().unwrap();
    let long_id = writer.upsert(&code(), keyed(&long)).unwrap().id;
    writer.commit().unwrap();
    expected.insert(long.clone(), vec![long_id]);
    assert_keys(&index, &expected);
    assert!(index.verify().unwrap().is_ok());
    drop(index);

    for writable in [true, false] {
        let index = if writable {
            Index::open(&dir).unwrap()
        } else {
            Index::open_read_only(&dir).unwrap()
        };
        assert_keys(&index, &expected);
        assert!(index.verify().unwrap().is_ok());
    }
}

#[test]
fn keys_survive_import_optimize_and_compact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let mut rng = rng(5);
    let codes: Vec<Code> = (0..5000).map(|_| random_code(&mut rng, 32)).collect();
    let codes_file = tmp.path().join("codes.npy");
    write_codes(&codes_file, &codes);
    // Every tenth row shares its key with the row before; the rest are unique.
    let keys: Vec<String> = (0..codes.len())
        .map(|i| format!("img/{}.png", i - usize::from(i % 10 == 9)))
        .collect();
    let keys_file = tmp.path().join("keys.txt");
    std::fs::write(&keys_file, keys.join("\n") + "\n").unwrap();
    ok(&["index", "create", s(&dir), "--bits", "32"]);
    // Small batches: several commits, the hash tables built once by the last.
    ok(&[
        "index",
        "import",
        s(&dir),
        "--codes",
        s(&codes_file),
        "--keys",
        s(&keys_file),
        "--batch-size",
        "1500",
    ]);
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (id, key) in keys.iter().enumerate() {
        expected.entry(key.clone()).or_default().push(id as u64);
    }
    let check = |expected: &BTreeMap<String, Vec<u64>>| {
        let index = Index::open_read_only(&dir).unwrap();
        assert_keys(&index, expected);
        assert!(index.verify().unwrap().is_ok());
    };
    check(&expected);
    assert_eq!(expected["img/8.png"], [8, 9]);

    // Deleting by key from the command line: every item of each key, one commit.
    let out = ok(&[
        "index",
        "delete",
        s(&dir),
        "--key",
        "img/8.png",
        "img/100.png",
    ]);
    assert!(out.contains("deleted 3 codes"), "{out}");
    expected.insert("img/8.png".into(), vec![]);
    expected.insert("img/100.png".into(), vec![]);
    check(&expected);
    // A key with no item deletes nothing, not even the keys and ids given with it.
    let err = fails(
        &[
            "index",
            "delete",
            s(&dir),
            "--key",
            "img/7.png",
            "--key",
            "missing.png",
        ],
        1,
    );
    assert!(
        err.contains("missing.png") && err.contains("nothing deleted"),
        "{err}"
    );
    let err = fails(&["index", "delete", s(&dir), "--key", "img/8.png"], 1);
    assert!(err.contains("img/8.png"), "{err}");
    check(&expected);
    // Ids and keys together; a key whose items an --id took counts as found.
    let out = ok(&[
        "index",
        "delete",
        s(&dir),
        "--id",
        "7",
        "--key",
        "img/7.png",
        "img/6.png",
    ]);
    assert!(out.contains("deleted 2 codes"), "{out}");
    expected.insert("img/6.png".into(), vec![]);
    expected.insert("img/7.png".into(), vec![]);
    check(&expected);

    // Rebuilding the tables and compacting leave the lookup as it was.
    ok(&["index", "optimize", s(&dir), "--substrings", "3"]);
    check(&expected);
    ok(&["index", "compact", s(&dir)]);
    check(&expected);
}

#[test]
fn other_handles_and_processes_see_upserts_and_deletes_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let index = Index::builder(16).create(&dir).unwrap();
    let mut writer = index.writer().unwrap();
    let old = writer
        .add(&Code::from_hex("00ff").unwrap(), keyed("a.png"))
        .unwrap();
    writer
        .add(&Code::from_hex("0f0f").unwrap(), keyed("b.png"))
        .unwrap();
    writer.commit().unwrap();
    // Another handle, held open from before the upsert, as another process holds it.
    let other = Index::open_read_only(&dir).unwrap();
    let held = other.reader().unwrap();

    let mut writer = index.writer().unwrap();
    let upserted = writer
        .upsert(&Code::from_hex("ff00").unwrap(), keyed("a.png"))
        .unwrap();
    writer.commit().unwrap();
    assert_eq!(upserted.replaced, [old]);
    // The reader held before keeps its snapshot; a new one sees the upsert whole.
    assert_eq!(held.ids_with_key("a.png").unwrap(), [old]);
    let reader = other.reader().unwrap();
    assert_eq!(reader.ids_with_key("a.png").unwrap(), [upserted.id]);
    assert!(!reader.contains(old));
    let hits = reader
        .search(&Code::from_hex("ff00").unwrap())
        .unwrap()
        .within(0)
        .unwrap();
    assert_eq!(
        hits.iter().map(|hit| hit.id).collect::<Vec<_>>(),
        [upserted.id]
    );
    drop((held, reader));

    // Another process sees it too: its export lists the new code under the key ...
    let out = tmp.path().join("out.npy");
    let keys = tmp.path().join("keys.txt");
    ok(&[
        "index",
        "export",
        s(&dir),
        "--codes",
        s(&out),
        "--keys",
        s(&keys),
    ]);
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), "b.png\na.png\n");
    // ... and deletes by key there reach both handles here.
    ok(&["index", "delete", s(&dir), "--key", "a.png"]);
    for handle in [&index, &other] {
        let reader = handle.reader().unwrap();
        assert!(reader.ids_with_key("a.png").unwrap().is_empty());
        assert!(!reader.contains(upserted.id));
        assert_eq!(reader.len(), 1);
    }
}

#[test]
fn the_check_finds_a_key_table_out_of_step_with_the_items() {
    use milan::format::{DATABASE_FILE, KEYS_TABLE};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let index = Index::builder(16).create(&dir).unwrap();
    let mut writer = index.writer().unwrap();
    let a = writer
        .add(&Code::from_hex("00ff").unwrap(), keyed("a.png"))
        .unwrap();
    writer.commit().unwrap();
    drop(index);
    assert!(Index::verify_dir(&dir).unwrap().is_ok());
    // Damage as a bug or a foreign writer would leave it: the item's entry moved to a key the
    // item does not have.
    {
        let db = redb::Database::open(dir.join(DATABASE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut keys = txn
                .open_multimap_table(redb::MultimapTableDefinition::<&str, u64>::new(KEYS_TABLE))
                .unwrap();
            assert!(keys.remove("a.png", a).unwrap());
            keys.insert("z.png", a).unwrap();
        }
        txn.commit().unwrap();
    }
    let report = Index::verify_dir(&dir).unwrap();
    assert!(!report.is_ok());
    let problems = report.problems.join("\n");
    assert!(
        problems.contains("\"z.png\"") && problems.contains("matches no item"),
        "{problems}"
    );
    assert!(
        problems.contains("\"a.png\"") && problems.contains("missing from the keys table"),
        "{problems}"
    );
    let output = milan(&["index", "check", s(&dir)]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{output:?}");
    assert!(said.contains("z.png") && said.contains("damaged"), "{said}");
}

fn model_record(dim: u32) -> ExtractorContract {
    ExtractorContract {
        fingerprint: [9; 32],
        path: "model.onnx".into(),
        input: "input".into(),
        layout: InputLayout::Nchw,
        size: 32,
        pixel_range: PixelRange::ZeroOne,
        output: "features".into(),
        dim,
    }
}

/// The top-k ids of `query` among `codes` (by id), as the index answers: by distance, then id.
fn top_ids(codes: &[(u64, Code)], query: &Code, k: usize) -> Vec<u64> {
    brute_top_k(codes, query, k)
        .into_iter()
        .map(|hit| hit.id)
        .collect()
}

#[test]
fn rehash_through_a_shared_handle_while_other_threads_search() {
    const DIM: u32 = 16;
    const N: u64 = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let old_head = HashHead::lsh(32, DIM, 1, None, None).unwrap();
    let new_head = HashHead::lsh(32, DIM, 2, None, None).unwrap();
    let index = Arc::new(
        Index::builder(32)
            .images(model_record(DIM), old_head.clone())
            .create(tmp.path().join("idx"))
            .unwrap(),
    );
    // 10 classes of 300 items.
    let (features, _) = clustered_features(3, 10, 300, DIM as usize, 8, 0.3, 0.3);
    let coded = |head: &HashHead| -> Vec<(u64, Code)> {
        (0..N)
            .zip(head.codes(features.view()).unwrap())
            .collect::<Vec<_>>()
    };
    let (old_codes, new_codes) = (coded(&old_head), coded(&new_head));
    let mut writer = index.writer().unwrap();
    for (id, code) in &old_codes {
        let row = features.row(*id as usize).to_vec();
        let item = keyed(&format!("{id}.png"));
        writer.add_with_features(code, item, row).unwrap();
    }
    writer.commit().unwrap();
    let queries: Vec<Code> = (0..8).map(|i| old_codes[i * 300].1.clone()).collect();
    let answers = |codes: &[(u64, Code)]| -> Vec<Vec<u64>> {
        queries.iter().map(|q| top_ids(codes, q, 10)).collect()
    };
    let (before, after) = (answers(&old_codes), answers(&new_codes));
    assert_ne!(before, after, "the new head codes differently");

    // Readers on other threads search on while the index is re-coded under them: each answers
    // wholly from the old codes or wholly from the new ones, and never goes back.
    let done = Arc::new(AtomicBool::new(false));
    let searchers: Vec<_> = (0..2)
        .map(|_| {
            let (index, done) = (index.clone(), done.clone());
            let (queries, before, after) = (queries.clone(), before.clone(), after.clone());
            std::thread::spawn(move || {
                let (mut saw_old, mut saw_new) = (0, 0);
                while !done.load(Ordering::Relaxed) || saw_new == 0 {
                    let reader = index.reader().unwrap();
                    let got: Vec<Vec<u64>> = queries
                        .iter()
                        .map(|q| {
                            let hits = reader.search(q).unwrap().top_k(10).unwrap();
                            hits.iter().map(|hit| hit.id).collect()
                        })
                        .collect();
                    if got == after {
                        saw_new += 1;
                    } else {
                        assert_eq!(got, before, "a reader saw half a re-coding");
                        assert_eq!(saw_new, 0, "a reader went back to the old codes");
                        saw_old += 1;
                    }
                }
                (saw_old, saw_new)
            })
        })
        .collect();
    // The head handed out before stays usable after the swap.
    let held_head = index.head().unwrap();
    let rehasher = {
        let (index, new_head) = (index.clone(), new_head.clone());
        std::thread::spawn(move || index.rehash(new_head))
    };
    let report = rehasher.join().unwrap().unwrap();
    done.store(true, Ordering::Relaxed);
    for searcher in searchers {
        let (_, saw_new) = searcher.join().unwrap();
        assert!(saw_new > 0);
    }
    assert_eq!(report.items, N);
    assert_eq!(held_head.fingerprint(), old_head.fingerprint());
    assert_eq!(index.head().unwrap().fingerprint(), new_head.fingerprint());
    let reader = index.reader().unwrap();
    for (id, code) in &new_codes {
        assert_eq!(reader.code(*id).as_ref(), Some(code));
    }
    // Re-coding touches no item: the keys still find them.
    assert_eq!(reader.ids_with_key("42.png").unwrap(), [42]);
    drop(reader);
    assert!(index.verify().unwrap().is_ok());

    // The thread that holds this handle's writer is told so instead of waiting for itself.
    let writer = index.writer().unwrap();
    assert!(matches!(
        index.rehash(old_head.clone()),
        Err(Error::Write(WriteError::WriterBusy { .. }))
    ));
    drop(writer);
    index.rehash(old_head).unwrap();
    assert_eq!(
        index.reader().unwrap().code(0).as_ref(),
        Some(&old_codes[0].1)
    );
}

#[test]
fn images_coded_with_a_head_replaced_meanwhile_are_refused_at_their_commit() {
    use crate::images::{lsh_head, lsh_image_index, temp_image_set, tiny_model};
    use milan::extract::{Extractor, ExtractorOptions};
    use milan::ingest::{add_images, IngestOptions};

    let (tmp, images, _) = temp_image_set(6);
    let (_, index_dir) = lsh_image_index(tmp.path(), &images.join("red"), &["--keep-features"]);
    let index = Index::open(&index_dir).unwrap();
    let new_head = tmp.path().join("new.head");
    lsh_head(
        &new_head,
        "16",
        &["--model", s(&tiny_model()), "--seed", "7"],
    );
    let new_head = HashHead::read(&new_head).unwrap();
    let mut extractor = Extractor::open(&ExtractorOptions::new(tiny_model())).unwrap();
    let mut blue: Vec<_> = std::fs::read_dir(images.join("blue"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    blue.sort();
    // Two images a commit; after the first commit, this handle is re-coded (from the same
    // thread, between the add's commits) while the add has coded the next with the old head.
    let options = IngestOptions {
        batch_size: 2,
        commit_every: 2,
        keep_features: true,
        ..IngestOptions::default()
    };
    let mut rehashed = false;
    let mut progress = |_, _| {
        if !rehashed {
            index.rehash(new_head.clone()).unwrap();
            rehashed = true;
        }
    };
    let cancel = AtomicBool::new(false);
    let err = add_images(
        &index,
        &mut extractor,
        &blue,
        &options,
        &mut progress,
        &cancel,
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Extract(ExtractError::Mismatch {
                reason: milan::Mismatch::RecodedMeanwhile,
                ..
            })
        ),
        "{err}"
    );
    // What is stored is coded by the new head alone: the first commit's images re-coded with
    // the rest, none of the old head's codes added after.
    let reader = index.reader().unwrap();
    assert_eq!(reader.len(), 6 + 2);
    for id in reader.ids() {
        let features = reader.features(id, 16).unwrap().expect("kept features");
        let view = ndarray::ArrayView2::from_shape((1, 16), &features).unwrap();
        assert_eq!(
            reader.code(id),
            Some(new_head.codes(view).unwrap().remove(0))
        );
    }
    drop(reader);
    assert!(index.verify().unwrap().is_ok());
    // The same add again, with the handle's new head, adds the rest.
    let report = add_images(
        &index,
        &mut extractor,
        &blue,
        &options,
        &mut |_, _| {},
        &cancel,
    )
    .unwrap();
    assert_eq!((report.added, index.len()), (4, 12));
}
