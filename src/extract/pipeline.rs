//! Batched extraction over many files, in three stages on their own threads, so that each hides
//! behind the others:
//!
//! 1. a producer reads, hashes, decodes and resizes one batch of images on every core (rayon),
//!    writing them straight into an [`InputBatch`] (pinned host memory on a GPU);
//! 2. a model thread runs each batch and hands the buffer back for reuse;
//! 3. the caller's thread takes each batch's features (`sink`: the hash head and the commits).
//!
//! A few buffers circulate between the first two stages ([`BUFFERS`]), so memory stays bounded
//! whatever the number of files. [`StageTimes`] says where the time went.
//!
//! Files are read as [`read_image_with`](super::read_image_with) reads them: regular files only,
//! at most [`MAX_FILE_BYTES`](super::MAX_FILE_BYTES), truncated JPEGs refused unless
//! [`ReadOptions::lenient`]. A path that is
//! not valid UTF-8 is skipped unread ([`SkipReason::NameNotUtf8`]): its key could not name the
//! file again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use ndarray::Array2;
use rayon::prelude::*;

use super::image::{decode_with, read_file, write_input};
use super::image::{ReadOptions, SkipReason};
use super::{Extractor, InputBatch};
use crate::contract::ExtractorContract;
use crate::error::Result;

/// Input buffers in circulation: one being filled, one in the model, one ready in between, so
/// that neither stage waits for the other while both keep pace. They are taken from the
/// extractor and given back at the end, so that the next run reuses them.
pub const BUFFERS: usize = 3;

/// Where a run's time went, in seconds.
///
/// Reading, decoding and resizing run on every core at once: their figures are thread-seconds,
/// summed over the cores. The others are wall-clock time on their own thread: `model` for the
/// model runs (with the copies to and from a GPU), `model_waiting` for the model thread waiting
/// for decoded images (large when decoding is the bottleneck), and, filled in by ingest, `head`
/// for coding features and `commit` for writing to the index.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StageTimes {
    /// Reading files and hashing their bytes (thread-seconds).
    pub read: f64,
    /// Decoding images to RGB (thread-seconds).
    pub decode: f64,
    /// Resizing and scaling pixels into the model's input (thread-seconds).
    pub resize: f64,
    /// Running the model (wall-clock).
    pub model: f64,
    /// The model thread waiting for a decoded batch (wall-clock).
    pub model_waiting: f64,
    /// Coding features with the hash head (wall-clock).
    pub head: f64,
    /// Committing to the index (wall-clock).
    pub commit: f64,
}

/// Thread-seconds of the parallel stages, added to by every decoding thread.
#[derive(Default)]
struct Clocks {
    read: AtomicU64,
    decode: AtomicU64,
    resize: AtomicU64,
}

impl Clocks {
    /// Runs `work`, adding its duration to `clock`.
    fn time<T>(clock: &AtomicU64, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = work();
        clock.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }

    fn seconds(clock: &AtomicU64) -> f64 {
        Duration::from_nanos(clock.load(Ordering::Relaxed)).as_secs_f64()
    }
}

/// What became of one file.
#[derive(Debug, Clone)]
pub enum FileOutcome {
    /// Decoded and run through the model.
    Features {
        /// The feature vector.
        features: Vec<f32>,
        /// BLAKE3 of the file.
        content_hash: [u8; 32],
    },
    /// Its content hash is in the `known` set: not decoded.
    Known {
        /// BLAKE3 of the file.
        content_hash: [u8; 32],
    },
    /// Could not be read or decoded.
    Failed(SkipReason),
}

/// One file's outcome, with its position in the input list.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// Position in the `paths` given.
    pub position: usize,
    /// The file.
    pub path: PathBuf,
    /// What became of it.
    pub outcome: FileOutcome,
}

/// A decoded batch on its way to the model.
struct Prepared {
    first: usize,
    batch: InputBatch,
    /// Per file: `Ok(slot in the batch)` or what became of it instead.
    slots: Vec<std::result::Result<(usize, [u8; 32]), FileOutcome>>,
    decoded: usize,
}

/// A batch's features on their way to the sink.
struct Ran {
    first: usize,
    slots: Vec<std::result::Result<(usize, [u8; 32]), FileOutcome>>,
    features: Option<Array2<f32>>,
}

/// Extracts features from `paths` in batches of `batch_size`, calling `sink` with each batch's
/// outcomes in input order, and says where the time went. Files whose content hash is in
/// `known` are not decoded; `read` says how the others are. Stops early, without error, when
/// `cancel` is set; stops with the error when the model or `sink` fails.
pub fn extract_files(
    extractor: &mut Extractor,
    paths: &[PathBuf],
    batch_size: usize,
    known: &HashSet<[u8; 32]>,
    read: &ReadOptions,
    cancel: &AtomicBool,
    mut sink: impl FnMut(Vec<Extracted>) -> Result<()>,
) -> Result<StageTimes> {
    let batch_size = batch_size.max(1).min(paths.len().max(1));
    let contract = extractor.contract().clone();
    let clocks = Clocks::default();
    let mut times = StageTimes::default();
    // Buffers are made before the threads start, so that an allocation failure is an error here.
    let (free_sender, free) = sync_channel::<InputBatch>(BUFFERS);
    for _ in 0..BUFFERS.min(paths.len().div_ceil(batch_size)) {
        free_sender
            .send(extractor.input_batch(batch_size)?)
            .expect("the channel holds every buffer");
    }
    let result = std::thread::scope(|scope| {
        let extractor = &mut *extractor;
        let (prepared_sender, prepared) = sync_channel::<Prepared>(1);
        let (ran_sender, ran) = sync_channel::<Result<Ran>>(1);
        let clocks = &clocks;
        let contract = &contract;
        // The producer gives the buffers' channel back, so that they outlive the run.
        let producer = scope.spawn(move || {
            decode_batches(
                paths,
                batch_size,
                contract,
                known,
                read,
                cancel,
                clocks,
                &free,
                prepared_sender,
            );
            free
        });
        let model =
            scope.spawn(move || run_batches(extractor, prepared, free_sender, ran_sender, cancel));
        let mut sunk = Ok(());
        for batch in ran {
            let batch = match batch {
                Ok(batch) => batch,
                Err(err) => {
                    sunk = Err(err);
                    break;
                }
            };
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            if let Err(err) = sink(outcomes(paths, batch)) {
                sunk = Err(err);
                break;
            }
        }
        // Leaving the loop drops the receiver: the model thread, then the producer, stop.
        let (model, model_waiting) = model.join().expect("the model thread does not panic");
        times.model = model;
        times.model_waiting = model_waiting;
        let free = producer.join().expect("the producer does not panic");
        sunk.map(|()| free)
    });
    times.read = Clocks::seconds(&clocks.read);
    times.decode = Clocks::seconds(&clocks.decode);
    times.resize = Clocks::seconds(&clocks.resize);
    let free = result?;
    for batch in free.try_iter() {
        extractor.recycle(batch);
    }
    Ok(times)
}

/// The producer: fills free buffers with decoded batches and sends them on, until the files run
/// out, the run is cancelled, or the model thread has gone.
#[allow(clippy::too_many_arguments)]
fn decode_batches(
    paths: &[PathBuf],
    batch_size: usize,
    contract: &ExtractorContract,
    known: &HashSet<[u8; 32]>,
    read: &ReadOptions,
    cancel: &AtomicBool,
    clocks: &Clocks,
    free: &Receiver<InputBatch>,
    prepared: SyncSender<Prepared>,
) {
    let len = contract.input_len();
    for (number, chunk) in paths.chunks(batch_size).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let Ok(mut batch) = free.recv() else {
            break;
        };
        let input = batch.as_mut_slice();
        let outcomes: Vec<std::result::Result<[u8; 32], FileOutcome>> = input[..chunk.len() * len]
            .par_chunks_mut(len)
            .zip(chunk.par_iter())
            .map(|(slot, path)| {
                if path.to_str().is_none() {
                    return Err(FileOutcome::Failed(SkipReason::NameNotUtf8));
                }
                let (bytes, content_hash) = Clocks::time(&clocks.read, || {
                    read_file(path).map(|bytes| {
                        let hash = *blake3::hash(&bytes).as_bytes();
                        (bytes, hash)
                    })
                })
                .map_err(FileOutcome::Failed)?;
                if known.contains(&content_hash) {
                    return Err(FileOutcome::Known { content_hash });
                }
                let image = Clocks::time(&clocks.decode, || decode_with(&bytes, read))
                    .map_err(FileOutcome::Failed)?;
                drop(bytes);
                Clocks::time(&clocks.resize, || {
                    write_input(
                        &image,
                        contract.size,
                        contract.layout,
                        contract.pixel_range,
                        slot,
                    )
                });
                Ok(content_hash)
            })
            .collect();
        // Close the gaps left by skipped files, so the model sees only decoded images.
        let mut slots = Vec::with_capacity(chunk.len());
        let mut decoded = 0;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            slots.push(outcome.map(|hash| {
                if decoded != i {
                    input.copy_within(i * len..(i + 1) * len, decoded * len);
                }
                decoded += 1;
                (decoded - 1, hash)
            }));
        }
        let batch = Prepared {
            first: number * batch_size,
            batch,
            slots,
            decoded,
        };
        if prepared.send(batch).is_err() {
            break;
        }
    }
}

/// The model thread: runs each decoded batch, returns its buffer for reuse and sends the
/// features on. Returns the seconds spent in the model and waiting for input.
fn run_batches(
    extractor: &mut Extractor,
    prepared: Receiver<Prepared>,
    free: SyncSender<InputBatch>,
    ran: SyncSender<Result<Ran>>,
    cancel: &AtomicBool,
) -> (f64, f64) {
    let (mut model, mut waiting) = (Duration::ZERO, Duration::ZERO);
    loop {
        let asked = Instant::now();
        let Ok(mut batch) = prepared.recv() else {
            break;
        };
        waiting += asked.elapsed();
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        let features = match batch.decoded {
            0 => Ok(None),
            count => extractor.run_batch(&mut batch.batch, count).map(Some),
        };
        model += started.elapsed();
        // The producer may have stopped already: then the buffer is simply dropped.
        let _ = free.send(batch.batch);
        let failed = features.is_err();
        let message = features.map(|features| Ran {
            first: batch.first,
            slots: batch.slots,
            features,
        });
        if ran.send(message).is_err() || failed {
            break;
        }
    }
    (model.as_secs_f64(), waiting.as_secs_f64())
}

/// A batch's outcomes in input order.
fn outcomes(paths: &[PathBuf], batch: Ran) -> Vec<Extracted> {
    batch
        .slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| {
            let position = batch.first + i;
            let outcome = match slot {
                Ok((row, content_hash)) => FileOutcome::Features {
                    features: batch
                        .features
                        .as_ref()
                        .expect("decoded images ran")
                        .row(row)
                        .to_vec(),
                    content_hash,
                },
                Err(outcome) => outcome,
            };
            Extracted {
                position,
                path: paths[position].clone(),
                outcome,
            }
        })
        .collect()
}
