//! `milan bench extract` and `milan bench images`: the image side of the benchmarks.
//!
//! `extract` times the bare model (one batch of real images, decoded once, run again and again
//! through the same path as ingest) against a whole `index add` into a scratch index, and says
//! where the pipeline's time went. `images` writes test images of a chosen size from a few
//! sources, each file distinct, so that a benchmark decodes realistic files that ingest does not
//! skip as duplicates.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use image::imageops::FilterType;
use milan::Index;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::Outcome;

#[derive(Args)]
pub struct ExtractBenchArgs {
    /// A folder of images (walked recursively).
    #[arg(long)]
    images: PathBuf,
    /// Use at most this many images.
    #[arg(long, default_value_t = 256)]
    count: usize,
    /// Images per model run [default: by device, as for `index add`].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: Option<u64>,
    /// Input batches in ordinary (pageable) memory instead of pinned memory on a GPU, to measure
    /// what pinning brings.
    #[arg(long)]
    plain_memory: bool,
    /// Run batches through an I/O binding instead of plain runs.
    #[arg(long)]
    io_binding: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    extractor: crate::extractor_args::ExtractorArgs,
}

pub fn extract(args: ExtractBenchArgs) -> Result<Outcome> {
    let mut paths = crate::walk::collect(std::slice::from_ref(&args.images), true)?;
    paths.truncate(args.count);
    if paths.is_empty() {
        bail!("{}: no images", args.images.display());
    }
    let mut extractor = args.extractor.open_with(
        None,
        args.plain_memory.then_some(false),
        Some(args.io_binding),
    )?;
    let batch = args
        .batch_size
        .map_or_else(|| extractor.default_batch_size(), |n| n as usize);
    let contract = extractor.contract().clone();
    // The bare model: one batch of real images, decoded once, run as often as the images need.
    let len = extractor.input_len();
    let mut input = extractor.input_batch(batch)?;
    for (slot, path) in input
        .as_mut_slice()
        .chunks_mut(len)
        .zip(paths.iter().cycle())
    {
        let decoded = milan::extract::read_image(path)
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
        milan::extract::write_input(
            &decoded.image,
            contract.size,
            contract.layout,
            contract.pixel_range,
            slot,
        );
    }
    // The first run of a shape tunes the GPU's convolutions: not part of the steady state.
    let warming = Instant::now();
    extractor.run_batch(&mut input, batch)?;
    let warm_up = warming.elapsed().as_secs_f64();
    let runs = paths.len().div_ceil(batch);
    let started = Instant::now();
    for _ in 0..runs {
        extractor.run_batch(&mut input, batch)?;
    }
    let bare = (runs * batch) as f64 / started.elapsed().as_secs_f64();
    // The pipeline's input buffers, made before it is timed (pinned memory is slow to allocate,
    // once per process): `index add` on a large folder reuses them for every batch.
    extractor.recycle(input);
    let reserving = Instant::now();
    let buffers = (0..milan::extract::pipeline::BUFFERS)
        .map(|_| extractor.input_batch(batch))
        .collect::<milan::Result<Vec<_>>>()?;
    buffers
        .into_iter()
        .for_each(|buffer| extractor.recycle(buffer));
    let buffers_s = reserving.elapsed().as_secs_f64();
    // The whole pipeline into a scratch index.
    let scratch = tempfile::tempdir()?;
    let head = milan::HashHead::lsh(64, contract.dim, 1, None, None)?;
    let index = Index::builder(64)
        .images(contract.clone(), head)
        .create(scratch.path())?;
    let options = milan::ingest::IngestOptions {
        batch_size: batch,
        ..Default::default()
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let report = milan::ingest::add_images(
        &index,
        &mut extractor,
        &paths,
        &options,
        &mut |_, _| {},
        &cancel,
    )?;
    let end_to_end = report.added as f64 / report.seconds;
    let gpu_memory = extractor.gpu_memory();
    let result = serde_json::json!({
        "images": paths.len(),
        "added": report.added,
        "batch_size": batch,
        "device": extractor.device(),
        "io_binding": extractor.io_binding(),
        "pinned_memory": extractor.pinned_memory(),
        "model": contract.path,
        "output": contract.output,
        "warm_up_s": warm_up,
        "buffers_s": buffers_s,
        "bare_model_images_per_s": bare,
        "index_add_images_per_s": end_to_end,
        "ratio": end_to_end / bare,
        "index_add_s": report.seconds,
        "stages_s": report.stages,
        "gpu_memory_used_bytes": gpu_memory.map(|m| m.used()),
        "gpu_memory_total_bytes": gpu_memory.map(|m| m.total),
    });
    if args.json {
        outln!("{result}")?;
    } else {
        let stages = &report.stages;
        outln!(
            "{} images, batch {batch}, on {}{}{}: bare model {bare:.1} images/s, index add {end_to_end:.1} images/s, ratio {:.2}",
            paths.len(),
            extractor.device(),
            if extractor.pinned_memory() { ", input buffers from ONNX Runtime" } else { "" },
            if extractor.io_binding() { ", I/O binding" } else { "" },
            end_to_end / bare
        )?;
        outln!(
            "  thread-seconds: read {:.2}, decode {:.2}, resize {:.2}; wall seconds: model {:.2} (waiting for input {:.2}), head {:.3}, commit {:.3}, in all {:.2}",
            stages.read, stages.decode, stages.resize, stages.model, stages.model_waiting,
            stages.head, stages.commit, report.seconds
        )?;
        if let Some(memory) = gpu_memory {
            outln!(
                "  GPU memory in use: {:.1} GiB of {:.1} GiB",
                memory.used() as f64 / f64::from(1u32 << 30),
                memory.total as f64 / f64::from(1u32 << 30)
            )?;
        }
    }
    Ok(Outcome::Success)
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jpeg,
    Png,
}

#[derive(Args)]
pub struct ImagesArgs {
    /// A folder of source images (walked recursively); their parent folders' names become the
    /// written images' class folders.
    sources: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// How many images to write (the sources are used in turn).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Width and height in pixels.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(8..=8192))]
    size: u32,
    /// File format.
    #[arg(long, value_enum, default_value = "jpeg")]
    format: Format,
    /// JPEG quality.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    /// Noise amplitude in 8-bit levels: each image gets its own seeded noise, so that every file
    /// differs (ingest skips repeated content) and compresses like a photograph.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(1..=64))]
    noise: u8,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn images(args: ImagesArgs) -> Result<Outcome> {
    let sources = crate::walk::collect(std::slice::from_ref(&args.sources), true)?;
    if sources.is_empty() {
        bail!("{}: no images", args.sources.display());
    }
    let decoded: Vec<(String, image::RgbImage)> = sources
        .par_iter()
        .map(|path| {
            let image = milan::extract::read_image(path)
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?
                .image;
            let resized =
                image::imageops::resize(&image, args.size, args.size, FilterType::Triangle);
            Ok((class_of(path), resized))
        })
        .collect::<Result<_>>()?;
    let extension = match args.format {
        Format::Jpeg => "jpg",
        Format::Png => "png",
    };
    (0..args.count).into_par_iter().try_for_each(|i| {
        let (class, source) = &decoded[i % decoded.len()];
        let mut rng =
            ChaCha8Rng::seed_from_u64(args.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let amplitude = i16::from(args.noise);
        let mut image = source.clone();
        for value in image.iter_mut() {
            let noise = rng.random_range(-amplitude..=amplitude);
            *value = (i16::from(*value) + noise).clamp(0, 255) as u8;
        }
        let folder = args.out.join(class);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let path = folder.join(format!("{i:07}.{extension}"));
        write_image(&path, &image, args.format, args.quality)
    })?;
    outln!(
        "wrote {} {}x{} {extension} images to {}",
        args.count,
        args.size,
        args.size,
        args.out.display()
    )?;
    Ok(Outcome::Success)
}

/// The class `--label-from-dir` gives `path` (its parent folder's name), or `images`.
fn class_of(path: &Path) -> String {
    milan::ingest::parent_label(path).unwrap_or_else(|| "images".to_string())
}

fn write_image(path: &Path, image: &image::RgbImage, format: Format, quality: u8) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let written = match format {
        Format::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .encode_image(image),
        Format::Png => image.write_to(&mut out, image::ImageFormat::Png),
    };
    written.with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
