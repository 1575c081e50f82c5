//! Indexes the images of a folder through an ONNX feature extractor and a hash head, then shows
//! the images most like the first one.
//!
//! ```sh
//! make demo    # builds target/models/inception_v3.onnx, target/demo/lsh64.head and demo images
//! cargo run --release --example index_folder -- \
//!     target/models/inception_v3.onnx target/demo/lsh64.head target/demo/images/0 /tmp/shirts.milan
//! ```
//!
//! A second run on the same index adds only the images it does not hold yet.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use milan::extract::{Extractor, ExtractorOptions};
use milan::ingest::{add_images, code_image, IngestOptions};
use milan::{HashHead, Index};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [model, head, folder, dir] = args.as_slice() else {
        eprintln!("usage: index_folder MODEL.onnx HEAD FOLDER INDEX_DIR");
        std::process::exit(2);
    };
    let head = HashHead::read(head)?;
    let mut extractor = Extractor::open(&ExtractorOptions::new(model))?;
    let index = if dir.exists() {
        Index::open(dir)?
    } else {
        Index::builder(head.bits())
            .images(extractor.contract().clone(), head)
            .create(dir)?
    };

    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    let report = add_images(
        &index,
        &mut extractor,
        &paths,
        &IngestOptions::default(),
        &mut |done, total| eprint!("\r{done}/{total} images"),
        &AtomicBool::new(false),
    )?;
    eprintln!();
    println!(
        "added {} images ({} already there, {} skipped) on {} in {:.1} s; {} in the index",
        report.added,
        report.already_indexed,
        report.failures.len(),
        report.device,
        report.seconds,
        index.len()
    );

    let Some(first) = paths.first() else {
        return Ok(());
    };
    let query = code_image(&index, &mut extractor, first)?;
    let reader = index.reader()?;
    println!("most like {}:", first.display());
    for hit in reader.search(&query.code)?.top_k(5)? {
        let key = reader.item(hit.id)?.and_then(|item| item.key);
        println!("  {:>3}  {}", hit.distance, key.unwrap_or_default());
    }
    Ok(())
}
