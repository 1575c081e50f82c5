//! The storage of format version 3 under bulk loads, merges and kills: codes in blocks, hash
//! tables written whole, a scanned delta between builds.

#[cfg(feature = "cli")]
use std::time::Duration;

use milan::{Code, Index, Item};

use crate::util::*;

/// Searches of `index` equal brute force over `live` for a few queries near stored codes.
fn assert_answers(index: &Index, live: &[(u64, Code)], seed: u64) {
    let reader = index.reader().unwrap();
    let mut rng = rng(seed);
    for (_, code) in live.iter().step_by(live.len() / 7 + 1) {
        let query = near(&mut rng, code, 0.05);
        assert_eq!(
            reader.search(&query).unwrap().top_k(15).unwrap(),
            brute_top_k(live, &query, 15)
        );
        assert_eq!(
            reader.search(&query).unwrap().within(6).unwrap(),
            brute_radius(live, &query, 6)
        );
    }
}

#[test]
fn commits_past_the_delta_limit_store_tables_that_reopen_identically() {
    let dir = tempfile::tempdir().unwrap();
    let codes = clustered(&mut rng(31), 64, 30_000, 40, 0.1);
    let mut live: Vec<(u64, Code)> = Vec::new();
    {
        let index = Index::builder(64).substrings(4).create(dir.path()).unwrap();
        // Batches of 3,000 pass the 4,096-code delta limit every other commit, so tables are
        // built and stored several times, with deletes in between.
        for (batch, chunk) in codes.chunks(3000).enumerate() {
            let mut writer = index.writer().unwrap();
            for code in chunk {
                let id = writer.add(code, Item::default()).unwrap();
                live.push((id, code.clone()));
            }
            for at in (batch * 7..live.len()).step_by(911).take(3) {
                let (id, _) = live.remove(at);
                assert!(writer.delete(id).unwrap());
            }
            writer.commit().unwrap();
        }
        assert_answers(&index, &live, 1);
    }
    for writable in [false, true] {
        let index = if writable {
            Index::open(dir.path()).unwrap()
        } else {
            Index::open_read_only(dir.path()).unwrap()
        };
        assert_eq!(index.len(), live.len() as u64);
        assert_answers(&index, &live, 2);
        let report = index.verify().unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert!(report.chunks > 0, "no hash table was stored");
    }
}

#[test]
fn a_deferred_bulk_load_is_filed_by_the_next_writable_open() {
    let dir = tempfile::tempdir().unwrap();
    let codes = clustered(&mut rng(32), 32, 20_000, 20, 0.1);
    let live: Vec<(u64, Code)> = (0..).zip(codes.iter().cloned()).collect();
    {
        let index = Index::builder(32).create(dir.path()).unwrap();
        for chunk in codes.chunks(5000) {
            let mut writer = index.writer().unwrap();
            writer.defer_merge();
            for code in chunk {
                writer.add(code, Item::default()).unwrap();
            }
            writer.commit().unwrap();
        }
        // Scanned, but exact all the same.
        assert_answers(&index, &live, 3);
    }
    let stored_tables = |dir: &std::path::Path| Index::verify_dir(dir).unwrap().chunks;
    assert_eq!(stored_tables(dir.path()), 0, "the load deferred its tables");
    // A read-only open files the codes in memory and answers; only a writable one stores them.
    assert_answers(&Index::open_read_only(dir.path()).unwrap(), &live, 4);
    assert_eq!(stored_tables(dir.path()), 0);
    drop(Index::open(dir.path()).unwrap());
    assert!(
        stored_tables(dir.path()) > 0,
        "the writable open stored no tables"
    );
    let index = Index::open_read_only(dir.path()).unwrap();
    assert_answers(&index, &live, 5);
}

#[test]
#[cfg(feature = "cli")]
fn kills_during_a_bulk_import_and_its_table_build_lose_nothing_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, codes_path) = (tmp.path().join("idx"), tmp.path().join("c.npy"));
    let codes = clustered(&mut rng(33), 64, 200_000, 200, 0.1);
    write_codes(&codes_path, &codes);
    let import = [
        "index",
        "import",
        s(&dir),
        "--codes",
        s(&codes_path),
        "--batch-size",
        "100",
        "--quiet",
    ];
    // Each round kills a fresh import a little later: early rounds land among the batch
    // commits, later ones in the table build after the last batch.
    let mut finished_rounds = 0;
    for delay_ms in [100, 300, 600, 1000, 1600, 2400] {
        let _ = std::fs::remove_dir_all(&dir);
        ok(&["index", "create", s(&dir), "--bits", "64"]);
        if kill_after(&import, Duration::from_millis(delay_ms)) {
            finished_rounds += 1;
        }
        assert_whole_batches(&mut Index::open(&dir).unwrap(), &codes, 100);
        // The same command finishes the job.
        ok(&import);
        let index = Index::open_read_only(&dir).unwrap();
        assert_eq!(index.len(), codes.len() as u64);
    }
    assert!(
        finished_rounds < 6,
        "no kill landed before the import ended"
    );
    let live: Vec<(u64, Code)> = (0..).zip(codes.iter().cloned()).collect();
    assert_answers(&Index::open_read_only(&dir).unwrap(), &live, 6);
}

#[test]
#[cfg(feature = "cli")]
fn kills_during_a_table_rebuild_leave_the_old_tables_or_the_new() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, codes_path) = (tmp.path().join("idx"), tmp.path().join("c.npy"));
    let codes = clustered(&mut rng(34), 64, 150_000, 100, 0.1);
    write_codes(&codes_path, &codes);
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    ok(&[
        "index",
        "import",
        s(&dir),
        "--codes",
        s(&codes_path),
        "--quiet",
    ]);
    let live: Vec<(u64, Code)> = (0..).zip(codes.iter().cloned()).collect();
    let mut killed_rounds = 0;
    for (round, delay_ms) in [10, 30, 60, 100, 150].into_iter().enumerate() {
        // Alternate the substrings so that every rebuild writes different tables.
        let substrings = if round % 2 == 0 { "3" } else { "4" };
        let optimize = ["index", "optimize", s(&dir), "--substrings", substrings];
        if !kill_after(&optimize, Duration::from_millis(delay_ms)) {
            killed_rounds += 1;
        }
        let index = Index::open(&dir).unwrap();
        assert_eq!(index.len(), codes.len() as u64);
        let report = index.verify().unwrap();
        assert!(report.is_ok(), "{delay_ms} ms: {report:?}");
        assert_answers(&index, &live, 7 + round as u64);
    }
    assert!(killed_rounds > 0, "every rebuild ended before its kill");
}

#[test]
fn ids_deleted_in_their_own_transaction_across_blocks_reopen() {
    // 64-bit codes: 7,936 ids per block. Deleting, in the transaction that handed them out, the
    // last id of a block, or every id of whole blocks, leaves slots no code reaches storage in:
    // the blocks before later ids must still be stored full.
    for (bits, count, deleted) in [
        (64, 7_937u64, 7_935..7_936u64),
        (1024, 1_500, 400..1_000),
        (64, 20_000, 3_000..19_000),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let codes = clustered(&mut rng(35), bits, count as usize, 10, 0.1);
        let mut live: Vec<(u64, Code)> = Vec::new();
        {
            let index = Index::builder(bits).create(dir.path()).unwrap();
            let mut writer = index.writer().unwrap();
            for (id, code) in (0..).zip(&codes) {
                assert_eq!(writer.add(code, Item::default()).unwrap(), id);
            }
            for id in deleted.clone() {
                assert!(writer.delete(id).unwrap());
            }
            writer.commit().unwrap();
            live.extend(
                (0..)
                    .zip(codes.iter().cloned())
                    .filter(|(id, _)| !deleted.contains(id)),
            );
            assert_answers(&index, &live, 11);
            // A later commit starts past the gap.
            let mut writer = index.writer().unwrap();
            let id = writer.add(&codes[0], Item::default()).unwrap();
            writer.commit().unwrap();
            live.push((id, codes[0].clone()));
        }
        for writable in [false, true] {
            let index = if writable {
                Index::open(dir.path()).unwrap()
            } else {
                Index::open_read_only(dir.path()).unwrap()
            };
            assert_eq!(index.len(), live.len() as u64, "{bits} bits, {deleted:?}");
            assert_answers(&index, &live, 12);
            let report = index.verify().unwrap();
            assert!(report.is_ok(), "{bits} bits, {deleted:?}: {report:?}");
        }
    }
}
