//! The extraction pipeline on the CPU: input buffers from ONNX Runtime's allocator (pinned memory
//! on a GPU) and the I/O binding give the plain path's features, whole batches or short ones,
//! with skipped files in between; the stage clocks run; and `bench images` writes distinct files
//! that ingest decodes.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use milan::extract::pipeline::{extract_files, FileOutcome};
use milan::extract::{Extractor, ExtractorOptions, ReadOptions};

use crate::images::{temp_image_set, tiny_model};
use crate::util::*;

fn open(pinned_memory: Option<bool>, io_binding: Option<bool>) -> Extractor {
    Extractor::open(&ExtractorOptions {
        pinned_memory,
        io_binding,
        threads: Some(1),
        ..ExtractorOptions::new(tiny_model())
    })
    .unwrap()
}

/// Every file's features (or `None` when skipped), and the run's stage times.
fn features_of(
    extractor: &mut Extractor,
    paths: &[PathBuf],
    batch_size: usize,
) -> (Vec<Option<Vec<f32>>>, milan::extract::pipeline::StageTimes) {
    let mut features = vec![None; paths.len()];
    let times = extract_files(
        extractor,
        paths,
        batch_size,
        &HashSet::new(),
        &ReadOptions::default(),
        &AtomicBool::new(false),
        |batch| {
            for extracted in batch {
                if let FileOutcome::Features { features: row, .. } = extracted.outcome {
                    features[extracted.position] = Some(row);
                }
            }
            Ok(())
        },
    )
    .unwrap();
    (features, times)
}

#[test]
fn every_batch_path_gives_the_plain_paths_features() {
    let (tmp, _, mut files) = temp_image_set(7);
    // A file that fails in the middle of a batch: the batch is compacted around it.
    let broken = tmp.path().join("broken.png");
    std::fs::write(&broken, b"not an image").unwrap();
    files.insert(5, broken);
    let mut plain = open(Some(false), Some(false));
    assert!(!plain.pinned_memory() && !plain.io_binding());
    // Batches of 4 over 15 files: whole batches, one with a gap, and a short last one.
    let (expected, _) = features_of(&mut plain, &files, 4);
    assert!(expected[5].is_none());
    assert_eq!(expected.iter().filter(|f| f.is_some()).count(), 14);
    let len = plain.input_len();
    let mut plain_batch = plain.input_batch(3).unwrap();
    fill(plain_batch.as_mut_slice());
    assert_eq!(plain_batch.as_mut_slice().len(), 3 * len);
    for (pinned, binding) in [(true, false), (false, true), (true, true)] {
        let mut other = open(Some(pinned), Some(binding));
        assert_eq!(
            (other.pinned_memory(), other.io_binding()),
            (pinned, binding)
        );
        let (got, times) = features_of(&mut other, &files, 4);
        assert_eq!(got, expected, "pinned {pinned}, binding {binding}");
        // The stages were timed.
        assert!(
            times.read > 0.0 && times.decode > 0.0 && times.resize > 0.0,
            "{times:?}"
        );
        assert!(times.model > 0.0, "{times:?}");
        // One batch buffer run directly, whole and short.
        let mut batch = other.input_batch(3).unwrap();
        fill(batch.as_mut_slice());
        for count in [3, 2] {
            let a = plain.run_batch(&mut plain_batch, count).unwrap();
            let b = other.run_batch(&mut batch, count).unwrap();
            assert_eq!(a.nrows(), count);
            assert_eq!(a, b, "pinned {pinned}, binding {binding}, {count} images");
        }
    }
}

fn fill(values: &mut [f32]) {
    for (i, value) in values.iter_mut().enumerate() {
        *value = ((i % 97) as f32 / 97.0) - 0.5;
    }
}

#[test]
fn input_batches_are_reused_once_given_back() {
    let mut extractor = open(Some(true), None);
    let mut batch = extractor.input_batch(2).unwrap();
    batch.as_mut_slice().fill(0.25);
    extractor.recycle(batch);
    // The same capacity gets the same memory back, contents and all; another gets fresh memory.
    assert!(extractor
        .input_batch(3)
        .unwrap()
        .as_mut_slice()
        .iter()
        .all(|&v| v == 0.0));
    let mut again = extractor.input_batch(2).unwrap();
    assert!(again.as_mut_slice().iter().all(|&v| v == 0.25));
    // A pipeline run gives its buffers back: the next batch of that size is one of them.
    extractor.recycle(again);
    let (_tmp, _, files) = temp_image_set(3);
    features_of(&mut extractor, &files, 2);
    let mut reused = extractor.input_batch(2).unwrap();
    assert!(
        reused.as_mut_slice().iter().any(|&v| v != 0.0 && v != 0.25),
        "a decoded image is still there"
    );
}

#[test]
fn the_cpu_chooses_its_batch_size_and_no_binding() {
    let extractor = open(None, None);
    assert!(!extractor.io_binding() && !extractor.pinned_memory());
    assert_eq!(extractor.default_batch_size(), 16);
    assert!(extractor.gpu_memory().is_none());
}

#[test]
fn bench_images_writes_distinct_files_that_ingest_adds() {
    let (tmp, images, _) = temp_image_set(2);
    let out = tmp.path().join("written");
    ok(&[
        "bench",
        "images",
        s(&images),
        "--out",
        s(&out),
        "--count",
        "9",
        "--size",
        "48",
    ]);
    let mut written: Vec<PathBuf> = Vec::new();
    for class in ["red", "blue"] {
        for entry in std::fs::read_dir(out.join(class)).unwrap() {
            written.push(entry.unwrap().path());
        }
    }
    assert_eq!(written.len(), 9);
    let contents: HashSet<Vec<u8>> = written.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(contents.len(), 9, "every file differs");
    let decoded = milan::extract::read_image(&written[0]).unwrap().image;
    assert_eq!((decoded.width(), decoded.height()), (48, 48));
    // The extraction benchmark adds every one of them.
    let model = tiny_model();
    let args = [
        "bench",
        "extract",
        "--images",
        s(&out),
        "--count",
        "9",
        "--batch-size",
        "4",
        "--json",
        "--model",
        s(&model),
    ];
    let report = json_output(&args, &milan(&args), 0);
    assert_eq!(report["added"], 9, "{report}");
    assert_eq!(report["device"], "cpu", "{report}");
    assert!(
        report["stages_s"]["decode"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}
