//! One index shared by threads: a writer thread adds codes in commits while reader threads search
//! it, each search answering from one committed snapshot.
//!
//! ```sh
//! cargo run --release --example threads            # in a temporary directory
//! cargo run --release --example threads -- DIR     # or in DIR (created; must not hold an index)
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

use milan::{Code, Index, Item};

/// Codes added, in commits of `BATCH`.
const CODES: u64 = 200_000;
const BATCH: u64 = 10_000;
const READERS: usize = 3;

/// A pseudo-random 64-bit code for `i` (splitmix64), so that the example needs no other crate.
fn code(i: u64) -> Code {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Code::from(z ^ (z >> 31))
}

fn main() -> milan::Result<()> {
    let temporary;
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            temporary = std::env::temp_dir().join(format!("milan-threads-{}", std::process::id()));
            temporary.clone()
        }
    };
    let index = Index::builder(64).expected_len(CODES).create(&dir)?;
    let done = AtomicBool::new(false);

    std::thread::scope(|scope| -> milan::Result<()> {
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (index, done) = (&index, &done);
                scope.spawn(move || -> milan::Result<u64> {
                    let mut searches = 0;
                    let mut query = r as u64;
                    while !done.load(Ordering::Acquire) {
                        // A reader pins one commit: its length, codes and items agree.
                        let reader = index.reader()?;
                        let stored = reader.len();
                        let probe = query % stored.max(1);
                        if stored > 0 {
                            let hits = reader.search_id(probe)?.top_k(10)?;
                            assert!(hits.iter().any(|hit| hit.id == probe && hit.distance == 0));
                            assert!(hits.iter().all(|hit| hit.id < stored));
                            assert!(hits.windows(2).all(|w| w[0] <= w[1]));
                            searches += 1;
                        }
                        query += 7919;
                    }
                    Ok(searches)
                })
            })
            .collect();

        // The writer: one transaction per batch; readers keep searching during each commit.
        for first in (0..CODES).step_by(BATCH as usize) {
            let mut writer = index.writer()?;
            for i in first..first + BATCH {
                let item = Item {
                    key: Some(format!("code-{i}")),
                    ..Item::default()
                };
                writer.add(&code(i), item)?;
            }
            writer.commit()?;
        }
        done.store(true, Ordering::Release);
        for (r, reader) in readers.into_iter().enumerate() {
            let searches = reader.join().expect("a reader thread panicked")?;
            println!("reader {r}: {searches} searches, each within one commit");
        }
        Ok(())
    })?;

    let reader = index.reader()?;
    assert_eq!(reader.len(), CODES);
    let hits = reader.search(&code(42))?.top_k(3)?;
    let key = reader.item(hits[0].id)?.and_then(|item| item.key);
    println!(
        "{} codes in {}; nearest to code 42: id {} ({}) at distance {}",
        reader.len(),
        dir.display(),
        hits[0].id,
        key.unwrap_or_default(),
        hits[0].distance
    );
    drop((reader, index));
    if std::env::args_os().nth(1).is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
