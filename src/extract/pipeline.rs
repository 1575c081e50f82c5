//! Batched extraction over many files: a producer thread reads, hashes, decodes and scales one
//! batch of images in parallel (rayon) while the model runs the previous batch, so that decoding
//! hides behind inference.
//!
//! Files are read as [`read_image_with`](super::read_image_with) reads them: regular files only,
//! at most [`MAX_FILE_BYTES`](super::MAX_FILE_BYTES), truncated JPEGs refused unless
//! [`ReadOptions::lenient`]. A path that is
//! not valid UTF-8 is skipped unread ([`SkipReason::NameNotUtf8`]): its key could not name the
//! file again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;

use rayon::prelude::*;

use super::image::{decode_with, read_file, write_input};
use super::image::{ReadOptions, SkipReason};
use super::Extractor;
use crate::error::{Error, Result};

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
    input: Vec<f32>,
    /// Per file: `Ok(slot in input)` or what became of it instead.
    slots: Vec<std::result::Result<(usize, [u8; 32]), FileOutcome>>,
    decoded: usize,
}

/// Extracts features from `paths` in batches of `batch_size`, calling `sink` with each batch's
/// outcomes in input order. Files whose content hash is in `known` are not decoded; `read` says
/// how the others are. Stops early, without error, when `cancel` is set; stops with the error
/// when `sink` fails.
pub fn extract_files(
    extractor: &mut Extractor,
    paths: &[PathBuf],
    batch_size: usize,
    known: &HashSet<[u8; 32]>,
    read: &ReadOptions,
    cancel: &AtomicBool,
    mut sink: impl FnMut(Vec<Extracted>) -> Result<()>,
) -> Result<()> {
    let batch_size = batch_size.max(1);
    let len = extractor.input_len();
    let contract = extractor.contract().clone();
    std::thread::scope(|scope| {
        // One batch in flight beside the one in the model: enough to hide decoding, bounded memory.
        let (sender, receiver) = sync_channel::<Prepared>(1);
        scope.spawn(move || {
            for (number, chunk) in paths.chunks(batch_size).enumerate() {
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
                let mut input = vec![0.0f32; chunk.len() * len];
                let outcomes: Vec<std::result::Result<[u8; 32], FileOutcome>> = input
                    .par_chunks_mut(len)
                    .zip(chunk.par_iter())
                    .map(|(slot, path)| {
                        if path.to_str().is_none() {
                            return Err(FileOutcome::Failed(SkipReason::NameNotUtf8));
                        }
                        let bytes = read_file(path).map_err(FileOutcome::Failed)?;
                        let content_hash = *blake3::hash(&bytes).as_bytes();
                        if known.contains(&content_hash) {
                            return Err(FileOutcome::Known { content_hash });
                        }
                        let image = decode_with(&bytes, read).map_err(FileOutcome::Failed)?;
                        drop(bytes);
                        write_input(
                            &image,
                            contract.size,
                            contract.layout,
                            contract.pixel_range,
                            slot,
                        );
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
                    input,
                    slots,
                    decoded,
                };
                if sender.send(batch).is_err() {
                    break;
                }
            }
        });
        for batch in receiver {
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            let features = if batch.decoded > 0 {
                Some(extractor.run(&batch.input, batch.decoded)?)
            } else {
                None
            };
            let extracted = batch
                .slots
                .into_iter()
                .enumerate()
                .map(|(i, slot)| {
                    let position = batch.first + i;
                    let outcome = match slot {
                        Ok((row, content_hash)) => FileOutcome::Features {
                            features: features
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
                .collect();
            sink(extracted)?;
        }
        Ok::<(), Error>(())
    })
}
