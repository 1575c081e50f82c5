//! The extraction pipeline on the CPU: the I/O-binding path that a GPU uses gives the plain
//! path's features, whole batches or short ones, with skipped files in between; the stage
//! clocks run; and `bench images` writes distinct files that ingest decodes.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use milan::extract::pipeline::{extract_files, FileOutcome};
use milan::extract::{Extractor, ExtractorOptions, ReadOptions};

use crate::images::{temp_image_set, tiny_model};
use crate::util::*;

fn open(io_binding: Option<bool>) -> Extractor {
    Extractor::open(&ExtractorOptions {
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
fn the_binding_path_gives_the_plain_paths_features() {
    let (tmp, _, mut files) = temp_image_set(7);
    // A file that fails in the middle of a batch: the batch is compacted around it.
    let broken = tmp.path().join("broken.png");
    std::fs::write(&broken, b"not an image").unwrap();
    files.insert(5, broken);
    let mut plain = open(Some(false));
    let mut bound = open(Some(true));
    assert!(!plain.io_binding() && bound.io_binding());
    // Batches of 4 over 15 files: whole batches, one with a gap, and a short last one.
    let (expected, _) = features_of(&mut plain, &files, 4);
    let (got, times) = features_of(&mut bound, &files, 4);
    assert!(expected[5].is_none() && got[5].is_none());
    assert_eq!(expected.iter().filter(|f| f.is_some()).count(), 14);
    assert_eq!(
        got, expected,
        "the binding path must give the same features"
    );
    // The stages were timed.
    assert!(
        times.read > 0.0 && times.decode > 0.0 && times.resize > 0.0,
        "{times:?}"
    );
    assert!(times.model > 0.0, "{times:?}");

    // One batch buffer run directly, whole and short, on both paths.
    let len = bound.input_len();
    let mut plain_batch = plain.input_batch(3).unwrap();
    let mut bound_batch = bound.input_batch(3).unwrap();
    for batch in [&mut plain_batch, &mut bound_batch] {
        for (i, value) in batch.as_mut_slice().iter_mut().enumerate() {
            *value = ((i % 97) as f32 / 97.0) - 0.5;
        }
        assert_eq!(batch.as_mut_slice().len(), 3 * len);
    }
    for count in [3, 2] {
        let a = plain.run_batch(&mut plain_batch, count).unwrap();
        let b = bound.run_batch(&mut bound_batch, count).unwrap();
        assert_eq!(a.nrows(), count);
        assert_eq!(a, b, "{count} images");
    }
    // A buffer from the plain extractor is refused by the bound one, by name.
    let err = bound
        .run_batch(&mut plain_batch, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("input_batch"), "{err}");
}

#[test]
fn the_cpu_chooses_its_batch_size_and_no_binding() {
    let extractor = open(None);
    assert!(!extractor.io_binding());
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
