//! Search equals a brute-force scan, whatever the sizes, code lengths, radii, k, deletes and
//! strategy; writes are transactional.

use milan::{Code, Index, Item, Strategy};
use milan::{SearchError, WriteError};
use proptest::prelude::*;
use rand::RngExt;

use crate::util::*;

const STRATEGIES: [Strategy; 3] = [Strategy::Auto, Strategy::MultiIndex, Strategy::Scan];

/// Builds an index from `codes` over several commits, deleting some ids on the way; returns the
/// live `(id, code)` pairs.
fn build(index: &Index, codes: &[Code], commits: usize, delete_every: usize) -> Vec<(u64, Code)> {
    let mut live: Vec<(u64, Code)> = Vec::new();
    let per_commit = codes.len().div_ceil(commits.max(1)).max(1);
    for batch in codes.chunks(per_commit) {
        let mut writer = index.writer().unwrap();
        for code in batch {
            let id = writer.add(code, Item::default()).unwrap();
            live.push((id, code.clone()));
        }
        if delete_every > 0 {
            let doomed: Vec<u64> = live
                .iter()
                .map(|(id, _)| *id)
                .step_by(delete_every)
                .collect();
            for id in &doomed {
                assert!(writer.delete(*id).unwrap());
            }
            live.retain(|(id, _)| !doomed.contains(id));
        }
        writer.commit().unwrap();
    }
    live
}

fn assert_search_matches(
    index: &Index,
    live: &[(u64, Code)],
    queries: &[Code],
    radii: &[u32],
    ks: &[usize],
) {
    let reader = index.reader().unwrap();
    assert_eq!(reader.len(), live.len() as u64);
    // A forced multi-index search may always probe 2^20 buckets, which covers every value of
    // every table when substrings are at most 16 bits wide (13 tables of 16 bits for 200-bit
    // codes, the most here): then it must answer. Wider ones may be refused, as too costly.
    let layout = milan::format::CodeLayout::new(index.bits(), index.substrings()).unwrap();
    let widest = (0..layout.substrings())
        .map(|j| layout.substring_width(j))
        .max()
        .unwrap();
    let check = |got: milan::Result<Vec<milan::Hit>>, want: Vec<milan::Hit>, what: String| match got
    {
        Err(milan::Error::Search(SearchError::MultiIndexTooCostly { .. })) if widest > 16 => {
            assert!(what.contains("MultiIndex"), "{what} refused")
        }
        got => assert_eq!(got.unwrap(), want, "{what}"),
    };
    for query in queries {
        for strategy in STRATEGIES {
            let search = reader.search(query).unwrap().strategy(strategy);
            for &k in ks {
                let what = format!("top {k} {strategy:?} {query:?}");
                check(search.top_k(k), brute_top_k(live, query, k), what);
            }
            for &r in radii {
                let what = format!("radius {r} {strategy:?} {query:?}");
                check(search.within(r), brute_radius(live, query, r), what);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn search_equals_linear_scan(
        seed in any::<u64>(),
        bits in prop::sample::select(vec![8u32, 16, 24, 40, 64, 72, 128, 136, 200]),
        n in 0usize..2500,
        centres in 1usize..40,
        flip in 0.0f64..0.3,
        commits in 1usize..4,
        delete_every in prop::sample::select(vec![0usize, 3, 7]),
        substring_pick in 0u32..1000,
    ) {
        let mut rng = rng(seed);
        // Substrings no wider than 20 bits, so forced multi-index search stays quick (and is
        // refused only now and then, on substrings wider than 16 bits).
        let (min, max) = milan::format::CodeLayout::substring_range(bits);
        let min = min.max(bits.div_ceil(20));
        let substrings = min + substring_pick % (max - min + 1);
        let dir = tempfile::tempdir().unwrap();
        let index = Index::builder(bits).substrings(substrings).create(dir.path()).unwrap();
        let codes = clustered(&mut rng, bits, n, centres, flip);
        let live = build(&index, &codes, commits, delete_every);
        let mut queries: Vec<Code> = (0..4).map(|_| random_code(&mut rng, bits)).collect();
        queries.extend(codes.iter().take(3).map(|c| near(&mut rng, c, 0.05)));
        let radii = [0, 1, 3, bits / 8, bits / 4];
        let ks = [1, 7, 60, n + 5];
        // Fresh commits are searched from the scanned delta; a reopened index from hash tables
        // loaded from the stored buckets.
        assert_search_matches(&index, &live, &queries, &radii, &ks);
        drop(index);
        let index = Index::open(dir.path()).unwrap();
        assert_search_matches(&index, &live, &queries, &radii, &ks);
    }
}

#[test]
fn hash_tables_rebuilt_after_many_adds_still_match() {
    let mut rng = rng(7);
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(64).substrings(4).create(dir.path()).unwrap();
    // Enough codes in later commits to push the scanned delta over its rebuild threshold.
    let codes = clustered(&mut rng, 64, 12_000, 50, 0.1);
    let live = build(&index, &codes, 3, 11);
    let queries: Vec<Code> = codes
        .iter()
        .step_by(1500)
        .map(|c| near(&mut rng, c, 0.05))
        .collect();
    assert_search_matches(&index, &live, &queries, &[0, 4, 9], &[1, 20, 300]);
}

#[test]
fn batch_search_equals_single_searches() {
    let mut rng = rng(3);
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(32).create(dir.path()).unwrap();
    let codes = clustered(&mut rng, 32, 3000, 10, 0.1);
    build(&index, &codes, 1, 0);
    let reader = index.reader().unwrap();
    let queries: Vec<Code> = (0..20).map(|_| random_code(&mut rng, 32)).collect();
    let batch = reader.search_batch(&queries).unwrap();
    let tops = batch.top_k(9).unwrap();
    let rings = batch.within(6).unwrap();
    for (i, query) in queries.iter().enumerate() {
        assert_eq!(tops[i], reader.search(query).unwrap().top_k(9).unwrap());
        assert_eq!(rings[i], reader.search(query).unwrap().within(6).unwrap());
    }
}

#[test]
fn dropped_writer_changes_nothing_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(16).create(dir.path()).unwrap();
    let code = Code::from_hex("1234").unwrap();
    {
        let mut writer = index.writer().unwrap();
        writer.add(&code, Item::default()).unwrap();
    }
    assert_eq!(index.len(), 0);
    let mut writer = index.writer().unwrap();
    assert_eq!(writer.add(&code, Item::default()).unwrap(), 0);
    assert_eq!(writer.add(&code, Item::default()).unwrap(), 1);
    writer.commit().unwrap();
    let mut writer = index.writer().unwrap();
    assert!(writer.delete(1).unwrap());
    assert!(!writer.delete(1).unwrap());
    assert!(!writer.delete(99).unwrap());
    writer.commit().unwrap();
    let mut writer = index.writer().unwrap();
    assert_eq!(writer.add(&code, Item::default()).unwrap(), 2);
    writer.abort();
    let mut writer = index.writer().unwrap();
    // The aborted id 2 was never committed, so it is handed out again; 1 stays retired.
    assert_eq!(writer.add(&code, Item::default()).unwrap(), 2);
    writer.commit().unwrap();
    let ids: Vec<u64> = index.reader().unwrap().ids().collect();
    assert_eq!(ids, vec![0, 2]);
}

#[test]
fn a_reader_keeps_its_snapshot_across_commits() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(16).create(dir.path()).unwrap();
    let code = Code::from_hex("00ff").unwrap();
    let mut writer = index.writer().unwrap();
    writer
        .add(
            &code,
            Item {
                key: Some("first".into()),
                ..Item::default()
            },
        )
        .unwrap();
    writer.commit().unwrap();
    let before = index.reader().unwrap();
    let mut writer = index.writer().unwrap();
    writer.delete(0).unwrap();
    writer
        .add(
            &code,
            Item {
                key: Some("second".into()),
                ..Item::default()
            },
        )
        .unwrap();
    writer.commit().unwrap();
    let after = index.reader().unwrap();
    let old_hits = before.search(&code).unwrap().within(0).unwrap();
    assert_eq!(old_hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![0]);
    assert_eq!(
        before.item(0).unwrap().unwrap().key.as_deref(),
        Some("first")
    );
    let new_hits = after.search(&code).unwrap().within(0).unwrap();
    assert_eq!(new_hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1]);
    assert!(after.item(0).unwrap().is_none());
    assert_eq!(
        after.item(1).unwrap().unwrap().key.as_deref(),
        Some("second")
    );
}

#[test]
fn search_by_id_and_items_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(24).create(dir.path()).unwrap();
    let mut writer = index.writer().unwrap();
    let item = Item {
        key: Some("dir/a.tif".into()),
        content_hash: Some([9; 32]),
        label: Some("forest".into()),
        metadata: Some(b"{\"x\":1}".to_vec()),
    };
    writer
        .add(&Code::from_hex("abcdef").unwrap(), item.clone())
        .unwrap();
    writer
        .add(&Code::from_hex("abcdee").unwrap(), Item::default())
        .unwrap();
    writer.commit().unwrap();
    let reader = index.reader().unwrap();
    assert_eq!(reader.item(0).unwrap(), Some(item));
    assert_eq!(reader.ids_with_content_hash(&[9; 32]).unwrap(), vec![0]);
    let hits = reader.search_id(1).unwrap().top_k(5).unwrap();
    assert_eq!(
        hits.iter().map(|h| (h.id, h.distance)).collect::<Vec<_>>(),
        vec![(1, 0), (0, 1)]
    );
    assert_eq!(reader.code(0).unwrap().to_hex(), "abcdef");
    assert!(matches!(
        reader.search_id(7),
        Err(milan::Error::UnknownId { id: 7 })
    ));
}

#[test]
fn optimize_changes_substrings_and_keeps_answers() {
    let mut rng = rng(11);
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(64).substrings(8).create(dir.path()).unwrap();
    let codes = clustered(&mut rng, 64, 3000, 20, 0.1);
    // Many small commits leave many small bucket chunks for optimize to merge.
    let live = build(&index, &codes, 30, 13);
    let report = index.optimize(Some(3)).unwrap();
    assert_eq!((report.old_substrings, report.new_substrings), (8, 3));
    assert_eq!(index.substrings(), 3);
    let queries: Vec<Code> = codes
        .iter()
        .step_by(500)
        .map(|c| near(&mut rng, c, 0.05))
        .collect();
    assert_search_matches(&index, &live, &queries, &[0, 5, 12], &[1, 10]);
    assert!(index.verify().unwrap().is_ok());
    drop(index);
    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.substrings(), 3);
    assert_search_matches(&index, &live, &queries, &[5], &[10]);
    let default = index.optimize(None).unwrap();
    assert_eq!(
        default.new_substrings,
        Index::recommended_substrings(64, live.len() as u64)
    );
    let _ = rng.random::<u8>();
}

#[test]
fn top_k_beyond_the_live_count_returns_every_code() {
    // k = usize::MAX once overflowed the top-k pruning threshold (`4 * k + 64`): a panic in
    // debug builds, and in release a prune after every hit, quadratic in the index size. Any k at
    // or above the live count means "all of them".
    let mut rng = rng(21);
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(64).substrings(4).create(dir.path()).unwrap();
    let codes = clustered(&mut rng, 64, 6000, 30, 0.1);
    let live = build(&index, &codes, 2, 9);
    drop(index);
    // Reopened, so that the codes sit in hash tables loaded from storage, not in the delta.
    let index = Index::open(dir.path()).unwrap();
    let reader = index.reader().unwrap();
    let queries = [random_code(&mut rng, 64), near(&mut rng, &codes[17], 0.05)];
    for query in &queries {
        let all = brute_force(&live, query);
        for strategy in STRATEGIES {
            let search = reader.search(query).unwrap().strategy(strategy);
            for k in [usize::MAX, usize::MAX / 4 + 1, live.len() + 1, live.len()] {
                assert_eq!(search.top_k(k).unwrap(), all, "top {k} {strategy:?}");
            }
            assert_eq!(
                search.top_k(live.len() - 1).unwrap(),
                all[..live.len() - 1],
                "{strategy:?}"
            );
        }
    }
    let batch = reader
        .search_batch(&queries)
        .unwrap()
        .top_k(usize::MAX)
        .unwrap();
    assert_eq!(batch[1], brute_force(&live, &queries[1]));
    let by_id = reader
        .search_id(live[0].0)
        .unwrap()
        .top_k(usize::MAX)
        .unwrap();
    assert_eq!(by_id.len(), live.len());
}

/// Whether `err` is the refusal of a forced multi-index search, with its numbers consistent.
fn refused(result: milan::Result<Vec<milan::Hit>>, codes: u64) -> bool {
    match result {
        Err(err @ milan::Error::Search(SearchError::MultiIndexTooCostly { .. })) => {
            let milan::Error::Search(SearchError::MultiIndexTooCostly {
                probes,
                budget,
                codes: found,
            }) = err
            else {
                unreachable!()
            };
            let message = err.to_string();
            probes > budget
                && budget >= 1 << 20
                && found == codes
                && message.contains(&probes.to_string())
                && message.contains("auto or scan strategy")
        }
        _ => false,
    }
}

#[test]
fn forced_multi_index_is_refused_where_it_cannot_finish() {
    // The report: 1,000 uniform 1024-bit codes (the default 52 substrings of 19 or 20 bits),
    // top-5 and radius 200, forced to multi-index hashing. The 5th nearest lies about 470 bits
    // away, so the top-5 enumerates some 1.3 * 10^7 substring values (a quarter of a second per
    // query in a release build, while a scan takes microseconds): refused. Radius 200 needs 6 *
    // 10^4 probes: answered. With 32 substrings of 32 bits the top-5 would need some 10^10
    // probes (hours) and radius 200 1.6 * 10^7: both refused, before any probing.
    let mut rng = rng(31);
    let codes: Vec<Code> = (0..1000).map(|_| random_code(&mut rng, 1024)).collect();
    let queries: Vec<Code> = (0..3).map(|_| random_code(&mut rng, 1024)).collect();
    for substrings in [None, Some(32)] {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = Index::builder(1024);
        if let Some(m) = substrings {
            builder = builder.substrings(m);
        }
        let index = builder.create(dir.path()).unwrap();
        let live = build(&index, &codes, 1, 0);
        drop(index);
        // Reopened: the codes are in the hash tables, not in the scanned delta.
        let index = Index::open_read_only(dir.path()).unwrap();
        assert_eq!(index.substrings(), substrings.unwrap_or(52));
        let reader = index.reader().unwrap();
        for query in &queries {
            let started = std::time::Instant::now();
            let forced = reader.search(query).unwrap().strategy(Strategy::MultiIndex);
            assert!(refused(forced.top_k(5), 1000), "{substrings:?}");
            match substrings {
                None => assert_eq!(forced.within(200).unwrap(), brute_radius(&live, query, 200)),
                Some(_) => assert!(refused(forced.within(200), 1000)),
            }
            assert_eq!(forced.within(40).unwrap(), brute_radius(&live, query, 40));
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{substrings:?}: {:?}",
                started.elapsed()
            );
            // The planner and the scan answer what the forced search refused.
            for strategy in [Strategy::Auto, Strategy::Scan] {
                let search = reader.search(query).unwrap().strategy(strategy);
                assert_eq!(search.top_k(5).unwrap(), brute_top_k(&live, query, 5));
                assert_eq!(search.within(200).unwrap(), brute_radius(&live, query, 200));
            }
        }
        let batch = reader
            .search_batch(&queries)
            .unwrap()
            .strategy(Strategy::MultiIndex);
        assert!(matches!(
            batch.top_k(5),
            Err(milan::Error::Search(
                SearchError::MultiIndexTooCostly { .. }
            ))
        ));
    }
}

#[test]
fn a_second_writer_on_the_writers_thread_is_an_error_not_a_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(16).create(dir.path()).unwrap();
    let code = Code::from_hex("1234").unwrap();
    // Run where a regression would hang, and wait for it here with a time limit.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut writer = index.writer().unwrap();
            writer.add(&code, Item::default()).unwrap();
            let busy = |result: milan::Result<()>| {
                matches!(result, Err(milan::Error::Write(WriteError::WriterBusy { path })) if path == dir.path())
            };
            assert!(busy(index.writer().map(drop)));
            assert!(busy(index.try_writer().map(drop)));
            assert!(busy(index.optimize(None).map(drop)));
            let err = index.writer().map(drop).unwrap_err();
            assert!(err.to_string().contains("commit or drop"), "{err}");
            // The refusals changed nothing: the writer commits its add.
            writer.commit().unwrap();
            let mut writer = index.try_writer().unwrap().expect("free again");
            writer.add(&code, Item::default()).unwrap();
            writer.commit().unwrap();
            index.optimize(None).unwrap();
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a second writer on the same thread deadlocked");
    });
    assert_eq!(index.len(), 2);
}

#[test]
fn writers_on_other_threads_wait_or_are_told_the_writer_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::builder(16).create(dir.path()).unwrap();
    let code = Code::from_hex("00ff").unwrap();
    let mut first = index.writer().unwrap();
    first.add(&code, Item::default()).unwrap();
    let (started, waiting) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            // Taken by the main thread: try_writer says so without blocking...
            assert!(index.try_writer().unwrap().is_none());
            started.send(()).unwrap();
            // ...and writer waits for the commit, then sees its add.
            let mut writer = index.writer().unwrap();
            assert_eq!(writer.add(&code, Item::default()).unwrap(), 1);
            writer.commit().unwrap();
        });
        waiting.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !other.is_finished(),
            "the other thread's writer did not wait"
        );
        first.commit().unwrap();
        other.join().unwrap();
    });
    assert_eq!(index.len(), 2);
}
