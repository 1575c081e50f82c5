//! The flags that choose and describe a feature extractor, shared by the commands that run one.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use milan::extract::{Device, Extractor, ExtractorOptions};
use milan::{ExtractorContract, InputLayout, PixelRange};

#[derive(Args, Clone, Default)]
pub struct ExtractorArgs {
    /// The ONNX image model [default: the one the index was built with].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Input height and width in pixels [default: from the model's metadata].
    #[arg(long)]
    pub input_size: Option<u32>,
    /// Input layout: nchw or nhwc [default: from the model's metadata or input shape].
    #[arg(long)]
    pub layout: Option<InputLayout>,
    /// Pixel scaling: 0..1, -1..1 or imagenet [default: from the model's metadata].
    #[arg(long, allow_hyphen_values = true)]
    pub pixel_range: Option<PixelRange>,
    /// The model output to use as features [default: from the model's metadata, else its first].
    #[arg(long)]
    pub output: Option<String>,
    /// Where the model runs: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// ONNX Runtime threads [default: all cores on the CPU, 2 when the model runs on a GPU].
    #[arg(long)]
    pub threads: Option<usize>,
    /// The ONNX Runtime library (libonnxruntime.so) [default: MILAN_ORT_LIB, ORT_DYLIB_PATH,
    /// beside the executable, or .onnxruntime/{cpu,gpu} beside it or in the project of a cargo
    /// build].
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
}

impl ExtractorArgs {
    /// Opens the extractor; for an index already bound to one (and no other --model given),
    /// unset flags take the index's settings.
    pub fn open(&self, bound: Option<&ExtractorContract>) -> Result<Extractor> {
        self.open_with(bound, None, None)
    }

    /// As [`open`](Self::open), with pinned input memory and the I/O binding chosen (`None`:
    /// by device).
    pub fn open_with(
        &self,
        bound: Option<&ExtractorContract>,
        pinned_memory: Option<bool>,
        io_binding: Option<bool>,
    ) -> Result<Extractor> {
        // Another model's settings come from that model, and the index then refuses it by name.
        let bound = if self.model.is_some() { None } else { bound };
        let model = match (&self.model, bound) {
            (Some(path), _) => path.clone(),
            (None, Some(record)) => PathBuf::from(&record.path),
            (None, None) => {
                anyhow::bail!("--model is required: the ONNX image model to extract features with")
            }
        };
        let options = ExtractorOptions {
            model: model.clone(),
            input_size: self.input_size.or(bound.map(|r| r.size)),
            layout: self.layout.or(bound.map(|r| r.layout)),
            pixel_range: self.pixel_range.or(bound.map(|r| r.pixel_range)),
            output: self.output.clone().or(bound.map(|r| r.output.clone())),
            device: self.device,
            threads: self.threads,
            ort_library: self.ort_lib.clone(),
            pinned_memory,
            io_binding,
        };
        let extractor = Extractor::open(&options).with_context(|| {
            if self.model.is_none() && bound.is_some() {
                format!(
                    "opening the model the index was built with ({}); pass --model if it moved",
                    model.display()
                )
            } else {
                format!("opening {}", model.display())
            }
        })?;
        Ok(extractor)
    }
}
