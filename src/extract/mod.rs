//! Feature extraction: images in, feature vectors out.
//!
//! - [`Extractor`] (`session.rs`): an ONNX model run by ONNX Runtime behind the extractor contract.
//! - `runtime.rs`: finding and loading the ONNX Runtime library.
//! - [`gpu`]: the GPU's memory, from the CUDA runtime ONNX Runtime loaded.
//! - `image.rs`: decoding with limits, RGB conversion, resizing and pixel scaling.
//! - [`pipeline`]: decoding batches in parallel while the previous batch runs in the model.

pub mod gpu;
pub(crate) mod image;
pub mod pipeline;
pub(crate) mod runtime;
mod session;

pub use image::{
    read_file, read_image, read_image_with, write_input, Decoded, ReadOptions, SkipReason,
    MAX_FILE_BYTES,
};
pub use runtime::library_candidates;
pub use session::{Device, Extractor, ExtractorOptions, InputBatch};
