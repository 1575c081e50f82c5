//! [`Extractor`]: an ONNX image model run by ONNX Runtime, on the CPU or a CUDA GPU, behind the
//! extractor contract (input name, layout, size, pixel range, output name, dimension).
//!
//! The contract comes from the model's own metadata (`milan.*` keys, written by the project's
//! converters), overridden by explicit options; what neither gives is inferred from the model's
//! input and output shapes where that is unambiguous, and otherwise asked for by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::contract::{ExtractorContract, InputLayout, PixelRange, UnknownName};
use ndarray::{s, Array2, ArrayViewD, Axis, Ix2, Ix4};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;
use ort::session::{HasSelectedOutputs, IoBinding, OutputSelector, RunOptions, SessionOutputs};
use ort::value::{Tensor, TensorRef};

use super::gpu;
use super::runtime;
use crate::error::{Error, ExtractError, ExtractorSetting, Result};

/// Which device runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA when the CUDA build of ONNX Runtime and a GPU are there, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA GPU with this index.
    Cuda(i32),
}

impl FromStr for Device {
    type Err = UnknownName;
    fn from_str(text: &str) -> std::result::Result<Device, UnknownName> {
        match text {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| UnknownName {
                    what: "device",
                    text: text.to_owned(),
                    expected: "auto, cpu, cuda or cuda:N",
                }),
        }
    }
}

/// How to open an extractor. Unset contract fields come from the model's metadata.
#[derive(Debug, Clone, Default)]
pub struct ExtractorOptions {
    /// The ONNX model file.
    pub model: PathBuf,
    /// Input height and width.
    pub input_size: Option<u32>,
    /// Input layout.
    pub layout: Option<InputLayout>,
    /// Pixel scaling.
    pub pixel_range: Option<PixelRange>,
    /// Output tensor name.
    pub output: Option<String>,
    /// Device to run on. Default: auto.
    pub device: Device,
    /// ONNX Runtime intra-op threads. Default: all cores on the CPU; 2 on a GPU, whose session
    /// runs only a few nodes on the CPU, so that the cores are left to decoding.
    pub threads: Option<usize>,
    /// The ONNX Runtime library, when not found by the usual search.
    pub ort_library: Option<PathBuf>,
    /// Input batches in pinned (page-locked) host memory from ONNX Runtime's CUDA allocator, so
    /// that the copy to the GPU is one fast transfer. Default: on a GPU. On the CPU, memory from
    /// ONNX Runtime's CPU allocator takes its place through the same code, which tests it there.
    pub pinned_memory: Option<bool>,
    /// Run batches through an I/O binding (the input copied to the device as it is bound, the
    /// output copied back to host memory once per batch) instead of plain runs. Default: off:
    /// on the H200 it was measured no faster than plain runs from pinned memory (docs/gpu.md).
    pub io_binding: Option<bool>,
}

impl ExtractorOptions {
    /// Options for `model` with everything else from its metadata.
    pub fn new(model: impl Into<PathBuf>) -> ExtractorOptions {
        ExtractorOptions {
            model: model.into(),
            ..ExtractorOptions::default()
        }
    }
}

/// A loaded feature extractor.
pub struct Extractor {
    session: Session,
    contract: ExtractorContract,
    device: String,
    /// The CUDA device index, when the model runs on a GPU.
    cuda_device: Option<i32>,
    run_options: RunOptions<HasSelectedOutputs>,
    /// Where input batches live when not in ordinary memory: ONNX Runtime's pinned allocator on
    /// a GPU, its CPU allocator otherwise ([`ExtractorOptions::pinned_memory`]).
    buffers: Option<Allocator>,
    /// Batches given back by [`recycle`](Extractor::recycle), for reuse: pinned memory takes
    /// long to allocate (about a quarter of a second for 256 images of 299 x 299 pixels).
    spare: Vec<InputBatch>,
    /// Set when batches run through an I/O binding.
    binding: Option<Binding>,
    /// Every batch runs at its buffer's full size (the rows past the images are ignored), so that
    /// a GPU sees one input shape and tunes its convolutions once, not again for a last, short
    /// batch or one with skipped files.
    full_batches: bool,
}

/// An I/O binding for the contract's output, copied back into host memory once per batch.
struct Binding {
    binding: IoBinding,
    output_memory: MemoryInfo<'static>,
    /// The rows of the last run: the bound output keeps its shape, so another size rebinds it.
    last_rows: Option<usize>,
}

/// Host memory for one batch of model inputs, made by [`Extractor::input_batch`] and reused
/// from batch to batch: images are written into it in place, and the model reads it from there.
pub struct InputBatch {
    memory: BatchMemory,
    capacity: usize,
}

enum BatchMemory {
    Plain(Vec<f32>),
    /// From the binding's allocator: pinned host memory when the model runs on a GPU.
    Tensor(Tensor<f32>),
}

impl InputBatch {
    /// How many images it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The images back to back, in the extractor's input layout.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        match &mut self.memory {
            BatchMemory::Plain(values) => values,
            BatchMemory::Tensor(tensor) => tensor.extract_tensor_mut().1,
        }
    }

    fn as_slice(&self) -> &[f32] {
        match &self.memory {
            BatchMemory::Plain(values) => values,
            BatchMemory::Tensor(tensor) => tensor.extract_tensor().1,
        }
    }
}

impl std::fmt::Debug for InputBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputBatch")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl std::fmt::Debug for Extractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extractor")
            .field("contract", &self.contract)
            .field("device", &self.device)
            .finish()
    }
}

fn model_error(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::Extract(ExtractError::Model {
        path: path.to_path_buf(),
        detail: detail.to_string(),
        setting: None,
    })
}

/// Why the contract cannot be resolved, and which option would settle it.
#[derive(Debug)]
struct Unresolved {
    detail: String,
    setting: Option<ExtractorSetting>,
}

impl Unresolved {
    fn needs(setting: ExtractorSetting, detail: impl Into<String>) -> Unresolved {
        Unresolved {
            detail: detail.into(),
            setting: Some(setting),
        }
    }
}

impl From<String> for Unresolved {
    fn from(detail: String) -> Unresolved {
        Unresolved {
            detail,
            setting: None,
        }
    }
}

impl From<&str> for Unresolved {
    fn from(detail: &str) -> Unresolved {
        Unresolved::from(detail.to_string())
    }
}

/// What the session says about its input and outputs, for contract resolution.
struct Signature {
    inputs: Vec<(String, Vec<i64>)>,
    outputs: Vec<String>,
}

/// Fills the contract from overrides, then metadata, then the signature.
fn resolve(
    options: &ExtractorOptions,
    metadata: &HashMap<String, String>,
    signature: &Signature,
) -> std::result::Result<ExtractorContract, Unresolved> {
    let meta = |key: &str| metadata.get(&format!("milan.{key}")).cloned();
    let input = match meta("input") {
        Some(name) => name,
        None if signature.inputs.len() == 1 => signature.inputs[0].0.clone(),
        None => return Err("the model has several inputs and no milan.input metadata".into()),
    };
    let shape = signature
        .inputs
        .iter()
        .find(|(name, _)| *name == input)
        .map(|(_, shape)| shape.clone())
        .ok_or_else(|| format!("the model has no input named {input:?}"))?;
    if shape.len() != 4 {
        return Err(format!(
            "input {input:?} has rank {}, not an image batch of rank 4",
            shape.len()
        )
        .into());
    }
    let layout = match options.layout {
        Some(layout) => layout,
        None => match meta("layout") {
            Some(text) => text
                .parse()
                .map_err(|err: UnknownName| format!("milan.layout metadata: {err}"))?,
            None if shape[1] == 3 => InputLayout::Nchw,
            None if shape[3] == 3 => InputLayout::Nhwc,
            None => {
                return Err(Unresolved::needs(
                    ExtractorSetting::Layout,
                    "cannot tell the input layout: set ExtractorOptions::layout (NCHW or NHWC)",
                ))
            }
        },
    };
    let spatial = match layout {
        InputLayout::Nchw => (shape[2], shape[3]),
        InputLayout::Nhwc => (shape[1], shape[2]),
    };
    let size = match options.input_size {
        Some(size) => size,
        None => match meta("size") {
            Some(text) => text
                .parse()
                .map_err(|_| format!("bad milan.size metadata {text:?}"))?,
            None if spatial.0 > 0 && spatial.0 == spatial.1 => spatial.0 as u32,
            None => {
                return Err(Unresolved::needs(
                    ExtractorSetting::InputSize,
                    "cannot tell the input size: set ExtractorOptions::input_size",
                ))
            }
        },
    };
    if !(8..=4096).contains(&size) || (spatial.0 > 0 && spatial.0 != i64::from(size)) {
        return Err(Unresolved::needs(
            ExtractorSetting::InputSize,
            format!("input size {size} does not fit the model's input shape {shape:?}"),
        ));
    }
    let pixel_range = match options.pixel_range {
        Some(range) => range,
        None => match meta("pixel_range") {
            Some(text) => text.parse().map_err(|err: UnknownName| format!("milan.pixel_range metadata: {err}"))?,
            None => {
                return Err(Unresolved::needs(
                    ExtractorSetting::PixelRange,
                    "the model does not say how to scale pixels: set ExtractorOptions::pixel_range (0..1, -1..1 or ImageNet)",
                ))
            }
        },
    };
    let output = match options.output.clone().or_else(|| meta("output")) {
        Some(name) => name,
        None => signature
            .outputs
            .first()
            .cloned()
            .ok_or("the model has no outputs")?,
    };
    if !signature.outputs.contains(&output) {
        return Err(Unresolved::needs(
            ExtractorSetting::Output,
            format!(
                "the model has no output named {output:?}; it has {}",
                signature.outputs.join(", ")
            ),
        ));
    }
    Ok(ExtractorContract {
        fingerprint: [0; 32],
        path: options.model.display().to_string(),
        input,
        layout,
        size,
        pixel_range,
        output,
        dim: 0,
    })
}

impl Extractor {
    /// Loads the model, resolves its contract and checks it by running one blank image.
    pub fn open(options: &ExtractorOptions) -> Result<Extractor> {
        let path = &options.model;
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let prefer_gpu = options.device != Device::Cpu;
        let runtime = runtime::runtime(options.ort_library.as_deref(), prefer_gpu)?;
        let (session, cuda_device) = build_session(runtime, options, &bytes)?;
        let device = cuda_device.map_or("cpu".to_string(), |n| format!("cuda:{n}"));
        let metadata = read_metadata(&session).map_err(|err| model_error(path, err))?;
        let signature = Signature {
            inputs: session
                .inputs()
                .iter()
                .map(|outlet| {
                    let shape = outlet
                        .dtype()
                        .tensor_shape()
                        .map(|s| s.to_vec())
                        .unwrap_or_default();
                    (outlet.name().to_string(), shape)
                })
                .collect(),
            outputs: session
                .outputs()
                .iter()
                .map(|o| o.name().to_string())
                .collect(),
        };
        let mut contract = resolve(options, &metadata, &signature).map_err(|unresolved| {
            Error::Extract(ExtractError::Model {
                path: path.to_path_buf(),
                detail: unresolved.detail,
                setting: unresolved.setting,
            })
        })?;
        contract.fingerprint = *blake3::hash(&bytes).as_bytes();
        let run_options = RunOptions::new()
            .map_err(|err| model_error(path, err))?
            .with_outputs(OutputSelector::no_default().with(contract.output.clone()));
        let on_gpu = cuda_device.is_some();
        let buffers = match options.pinned_memory.unwrap_or(on_gpu) {
            false => None,
            true => Some(
                host_allocator(&session, cuda_device)
                    .map_err(|err| model_error(path, format!("cannot make input memory: {err}")))?,
            ),
        };
        let binding =
            match options.io_binding.unwrap_or(false) {
                false => None,
                true => Some(bind(&session).map_err(|err| {
                    model_error(path, format!("cannot make an I/O binding: {err}"))
                })?),
            };
        let mut extractor = Extractor {
            session,
            contract,
            device,
            cuda_device,
            run_options,
            buffers,
            spare: Vec::new(),
            binding,
            full_batches: on_gpu,
        };
        // One blank image through the path batches take (pinned memory, the binding).
        let probe = extractor
            .input_batch(1)
            .and_then(|mut blank| extractor.run_batch(&mut blank, 1))
            .map_err(|err| match err {
                Error::Extract(ExtractError::Model {
                    detail, setting, ..
                }) => Error::Extract(ExtractError::Model {
                    path: path.to_path_buf(),
                    detail: format!("a test run failed: {detail}"),
                    setting,
                }),
                other => other,
            })?;
        extractor.contract.dim = probe.ncols() as u32;
        Ok(extractor)
    }

    /// The resolved contract, with the model's fingerprint and feature dimension.
    pub fn contract(&self) -> &ExtractorContract {
        &self.contract
    }

    /// The device the model runs on (`cpu` or `cuda:N`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Floats in one image's input.
    pub fn input_len(&self) -> usize {
        self.contract.input_len()
    }

    /// Whether batches run through an I/O binding ([`ExtractorOptions::io_binding`]).
    pub fn io_binding(&self) -> bool {
        self.binding.is_some()
    }

    /// Whether input batches are in memory from ONNX Runtime's allocator: pinned on a GPU
    /// ([`ExtractorOptions::pinned_memory`]).
    pub fn pinned_memory(&self) -> bool {
        self.buffers.is_some()
    }

    /// Images per model run when the caller does not choose: on a GPU, by its memory (256 on one
    /// with 40 GiB or more, 128 from 16 GiB, else 64); on the CPU 16, where larger batches are
    /// no faster.
    pub fn default_batch_size(&self) -> usize {
        match self.cuda_device {
            None => 16,
            Some(device) => match gpu::memory(device) {
                Some(memory) if memory.total >= 40 << 30 => 256,
                Some(memory) if memory.total >= 16 << 30 => 128,
                _ => 64,
            },
        }
    }

    /// The GPU's memory as its driver reports it now (all processes), when the model runs on one.
    pub fn gpu_memory(&self) -> Option<gpu::GpuMemory> {
        self.cuda_device.and_then(gpu::memory)
    }

    /// Host memory for `capacity` images, for [`run_batch`](Self::run_batch): pinned memory
    /// when the model runs on a GPU. A batch of the same capacity given back by
    /// [`recycle`](Self::recycle) is reused (its contents are left as they were).
    pub fn input_batch(&mut self, capacity: usize) -> Result<InputBatch> {
        let capacity = capacity.max(1);
        if let Some(at) = self
            .spare
            .iter()
            .position(|batch| batch.capacity == capacity)
        {
            return Ok(self.spare.swap_remove(at));
        }
        let memory = match &self.buffers {
            None => BatchMemory::Plain(vec![0.0; capacity * self.input_len()]),
            Some(allocator) => BatchMemory::Tensor(
                Tensor::new(allocator, input_shape(&self.contract, capacity)).map_err(|err| {
                    model_error(
                        Path::new(&self.contract.path),
                        format!("cannot allocate input memory for {capacity} images: {err}"),
                    )
                })?,
            ),
        };
        Ok(InputBatch { memory, capacity })
    }

    /// Keeps `batch` for a later [`input_batch`](Self::input_batch) of the same capacity. At most
    /// [`pipeline::BUFFERS`](crate::extract::pipeline::BUFFERS) are kept (as many as a run keeps
    /// in circulation); batches of another capacity make way for newer ones.
    pub fn recycle(&mut self, batch: InputBatch) {
        self.spare.retain(|spare| spare.capacity == batch.capacity);
        if self.spare.len() < super::pipeline::BUFFERS {
            self.spare.push(batch);
        }
    }

    /// Runs the first `count` images of `batch`; returns `[count, dim]` features as
    /// [`run`](Self::run) does.
    pub fn run_batch(&mut self, batch: &mut InputBatch, count: usize) -> Result<Array2<f32>> {
        let count = count.min(batch.capacity);
        let rows = if self.full_batches {
            batch.capacity
        } else {
            count
        };
        let len = self.input_len();
        let features = match self.binding.is_some() {
            // The buffer is seen as host memory: a GPU session copies it to the device as it
            // runs, in one transfer when the buffer is pinned.
            false => self.run(&batch.as_slice()[..rows * len], rows)?,
            true => self.run_bound(batch, rows)?,
        };
        Ok(if features.nrows() == count {
            features
        } else {
            features.slice(s![..count, ..]).to_owned()
        })
    }

    /// Runs the first `rows` images of `batch` through the I/O binding.
    fn run_bound(&mut self, batch: &mut InputBatch, rows: usize) -> Result<Array2<f32>> {
        let path = Path::new(&self.contract.path);
        let len = self.input_len();
        let shape = input_shape(&self.contract, rows);
        let input = self.contract.input.as_str();
        let binding = self
            .binding
            .as_mut()
            .expect("run_bound runs with a binding");
        let bound = if self.cuda_device.is_some() {
            // Host memory bound to a GPU session is copied to the device here, as it is bound.
            TensorRef::from_array_view((shape, &batch.as_slice()[..rows * len]))
                .and_then(|view| binding.binding.bind_input(input, &*view))
        } else {
            // On the CPU a borrowed tensor would be copied by the binding, and ort's copy of one
            // never returns: an owned one is bound instead.
            match &batch.memory {
                BatchMemory::Tensor(tensor) if rows == batch.capacity => {
                    binding.binding.bind_input(input, tensor)
                }
                _ => Tensor::<f32>::from_array((shape, batch.as_slice()[..rows * len].to_vec()))
                    .and_then(|owned| binding.binding.bind_input(input, &owned)),
            }
        };
        bound.map_err(|err| model_error(path, format!("cannot bind the input: {err}")))?;
        if binding.last_rows != Some(rows) {
            binding.binding.clear_outputs();
            binding
                .binding
                .bind_output_to_device(self.contract.output.as_str(), &binding.output_memory)
                .map_err(|err| model_error(path, format!("cannot bind the output: {err}")))?;
            binding.last_rows = Some(rows);
        }
        let outputs = self
            .session
            .run_binding(&binding.binding)
            .map_err(|err| model_error(path, format!("inference failed: {err}")))?;
        features_of(&outputs, &self.contract)
    }

    /// Runs `count` images laid out back to back in `input`; returns `[count, dim]` features,
    /// a 4-D output averaged over its spatial axes.
    pub fn run(&mut self, input: &[f32], count: usize) -> Result<Array2<f32>> {
        let path = PathBuf::from(&self.contract.path);
        let shape = input_shape(&self.contract, count);
        let tensor = TensorRef::from_array_view((shape, &input[..count * self.input_len()]))
            .map_err(|err| model_error(&path, err))?;
        let outputs = self
            .session
            .run_with_options(
                ort::inputs![self.contract.input.as_str() => tensor],
                &self.run_options,
            )
            .map_err(|err| model_error(&path, format!("inference failed: {err}")))?;
        features_of(&outputs, &self.contract)
    }
}

/// The contract's output of a run, as `[count, dim]` features (a 4-D map pooled).
fn features_of(outputs: &SessionOutputs<'_>, contract: &ExtractorContract) -> Result<Array2<f32>> {
    let path = Path::new(&contract.path);
    let value = &outputs[contract.output.as_str()];
    let array: ArrayViewD<'_, f32> = value.try_extract_array::<f32>().map_err(|err| {
        model_error(
            path,
            format!("output {:?} is not float32: {err}", contract.output),
        )
    })?;
    pool(array, contract.layout).map_err(|detail| model_error(path, detail))
}

/// The input tensor's shape for `count` images.
fn input_shape(contract: &ExtractorContract, count: usize) -> [usize; 4] {
    let size = contract.size as usize;
    match contract.layout {
        InputLayout::Nchw => [count, 3, size, size],
        InputLayout::Nhwc => [count, size, size, 3],
    }
}

/// The allocator for input batches: pinned host memory on CUDA device `cuda`, the CPU's own
/// memory otherwise.
fn host_allocator(session: &Session, cuda: Option<i32>) -> ort::Result<Allocator> {
    match cuda {
        Some(device) => Allocator::new(
            session,
            MemoryInfo::new(
                AllocationDevice::CUDA_PINNED,
                device,
                AllocatorType::Device,
                MemoryType::CPUInput,
            )?,
        ),
        None => Ok(Allocator::default()),
    }
}

/// A binding whose output goes to ordinary host memory, once per batch; `run_bound` binds it
/// for each new batch size, the first included.
fn bind(session: &Session) -> ort::Result<Binding> {
    Ok(Binding {
        binding: session.create_binding()?,
        output_memory: MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )?,
        last_rows: None,
    })
}

/// `[n, d]` as is; `[n, c, h, w]` (or `[n, h, w, c]` for NHWC models) averaged over h and w.
fn pool(
    array: ArrayViewD<'_, f32>,
    layout: InputLayout,
) -> std::result::Result<Array2<f32>, String> {
    match array.ndim() {
        2 => Ok(array
            .into_dimensionality::<Ix2>()
            .expect("rank 2")
            .to_owned()),
        4 => {
            let array = array.into_dimensionality::<Ix4>().expect("rank 4");
            let (first, second) = match layout {
                InputLayout::Nchw => (Axis(3), Axis(2)),
                InputLayout::Nhwc => (Axis(2), Axis(1)),
            };
            let pooled = array
                .mean_axis(first)
                .and_then(|a| a.mean_axis(second))
                .ok_or("the output has an empty spatial axis")?;
            Ok(pooled)
        }
        rank => Err(format!(
            "the output has rank {rank}; features must be [batch, dim] or a 4-D map"
        )),
    }
}

fn read_metadata(session: &Session) -> ort::Result<HashMap<String, String>> {
    let metadata = session.metadata()?;
    let mut map = HashMap::new();
    for key in metadata.custom_keys()? {
        if let Some(value) = metadata.custom(&key) {
            map.insert(key, value);
        }
    }
    Ok(map)
}

fn build_session(
    runtime: &runtime::Runtime,
    options: &ExtractorOptions,
    bytes: &[u8],
) -> Result<(Session, Option<i32>)> {
    let path = &options.model;
    let cuda_device = match options.device {
        Device::Cpu => None,
        Device::Cuda(n) => Some(n),
        Device::Auto if runtime.gpu_build => Some(0),
        Device::Auto => None,
    };
    let builder =
        |default_threads: Option<usize>| -> Result<ort::session::builder::SessionBuilder> {
            let mut builder =
                Session::builder(&runtime.environment).map_err(|err| model_error(path, err))?;
            if let Some(threads) = options.threads.or(default_threads) {
                builder = builder
                    .with_intra_threads(threads)
                    .map_err(|err| model_error(path, err))?;
            }
            Ok(builder)
        };
    if let Some(device) = cuda_device {
        let cuda = ort::ep::CUDA::default()
            .with_device_id(device)
            .build()
            .error_on_failure();
        // On a GPU the CPU's cores decode images: ONNX Runtime's own threads, which run only the
        // few nodes left on the CPU, are kept to two instead of one per core.
        let attempt = preload_cuda_libraries(&runtime.library)
            .and_then(|()| builder(Some(2)).map_err(|err| err.to_string()))
            .and_then(|b| {
                b.with_execution_providers([cuda])
                    .map_err(|err| err.to_string())
            })
            .and_then(|mut b| b.commit_from_memory(bytes).map_err(|err| err.to_string()));
        match attempt {
            Ok(session) => return Ok((session, Some(device))),
            Err(detail) if options.device == Device::Auto => {
                let _ = detail; // no usable GPU: the CPU serves, and `device()` says so
            }
            Err(detail) => {
                return Err(Error::Extract(ExtractError::Runtime {
                    setting: Some(ExtractorSetting::Device),
                    detail: format!(
                        "CUDA device {device} is not usable with {} ({detail}); it needs the CUDA build of ONNX Runtime with CUDA 13 and cuDNN 9 beside it, or set ExtractorOptions::device to Device::Cpu",
                        runtime.library.display()
                    ),
                }))
            }
        }
    }
    let session = builder(None)?
        .commit_from_memory(bytes)
        .map_err(|err| model_error(path, format!("not a loadable ONNX model: {err}")))?;
    Ok((session, None))
}

/// Loads the CUDA 13 and cuDNN 9 libraries that `make setup-gpu` installs beside the GPU build
/// (or that MILAN_CUDA_LIB_DIR and MILAN_CUDNN_LIB_DIR name), so that no LD_LIBRARY_PATH is needed.
/// Without them, the system's search path has to provide the libraries.
fn preload_cuda_libraries(library: &Path) -> std::result::Result<(), String> {
    let nvidia = library
        .parent()
        .unwrap_or(Path::new("."))
        .join("site-packages/nvidia");
    let dir = |variable: &str, fallback: PathBuf| {
        std::env::var_os(variable)
            .map(PathBuf::from)
            .unwrap_or(fallback)
    };
    let cuda = dir("MILAN_CUDA_LIB_DIR", nvidia.join("cu13/lib"));
    let cudnn = dir("MILAN_CUDNN_LIB_DIR", nvidia.join("cudnn/lib"));
    if !cuda.is_dir() || !cudnn.is_dir() {
        return Ok(());
    }
    ort::ep::cuda::preload_dylibs(Some(&cuda), Some(&cudnn)).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature() -> Signature {
        Signature {
            inputs: vec![("x".into(), vec![-1, 3, 32, 32])],
            outputs: vec!["f".into(), "g".into()],
        }
    }

    #[test]
    fn contract_from_metadata_overrides_and_shapes() {
        let options = ExtractorOptions {
            pixel_range: Some(PixelRange::ImageNet),
            ..ExtractorOptions::new("m.onnx")
        };
        let contract = resolve(&options, &HashMap::new(), &signature()).unwrap();
        assert_eq!(
            (contract.layout, contract.size, contract.output.as_str()),
            (InputLayout::Nchw, 32, "f")
        );
        let metadata: HashMap<String, String> =
            [("milan.output", "g"), ("milan.pixel_range", "-1..1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let contract = resolve(&ExtractorOptions::new("m.onnx"), &metadata, &signature()).unwrap();
        assert_eq!(
            (contract.output.as_str(), contract.pixel_range),
            ("g", PixelRange::MinusOneOne)
        );
        let missing = resolve(
            &ExtractorOptions::new("m.onnx"),
            &HashMap::new(),
            &signature(),
        )
        .unwrap_err();
        assert_eq!(missing.setting, Some(ExtractorSetting::PixelRange));
        let missing = missing.detail;
        assert!(
            missing.contains("ExtractorOptions::pixel_range"),
            "{missing}"
        );
        assert!(!missing.contains("--"), "{missing}");
        let wrong = ExtractorOptions {
            output: Some("nope".into()),
            ..options.clone()
        };
        let unresolved = resolve(&wrong, &HashMap::new(), &signature()).unwrap_err();
        assert_eq!(unresolved.setting, Some(ExtractorSetting::Output));
        assert!(unresolved.detail.contains("f, g"), "{}", unresolved.detail);
        let size = ExtractorOptions {
            input_size: Some(64),
            ..options
        };
        assert!(resolve(&size, &HashMap::new(), &signature()).is_err());
        assert_eq!("cuda:2".parse::<Device>(), Ok(Device::Cuda(2)));
        assert!("gpu".parse::<Device>().is_err());
    }
}
