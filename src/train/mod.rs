//! Training hash heads: MiLaN (the method: docs/method.md) on ndarray, and milan's own recipe.
//!
//! The network is the hash head of [`HashHead`]: dense layers with LeakyReLU(0.2), a sigmoid on
//! the last layer, bit `i` set where the sigmoid is above 0.5. [`Trainer`] draws batches
//! ([`Sampling`]), runs one optimisation step per batch through a [`TrainingBackend`] (the
//! hand-written ndarray backend: backward pass and Adam), reports progress through a callback,
//! validates every N steps keeping the best head, checkpoints to bytes and resumes bit-exactly.
//! Nothing here prints. docs/training.md has the method, the recipes and the checkpoint layout.

mod adam;
mod backend;
mod checkpoint;
mod net;
mod sampler;

use std::sync::atomic::{AtomicBool, Ordering};

use milan_index_format::{DenseLayer, HeadFile, HEAD_MAGIC, HEAD_VERSION, MAX_BITS, MIN_BITS};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use adam::{Adam, AdamConfig};
pub use backend::{Batch, TrainingBackend};
pub use net::{BalanceMode, Layer, LossParts, LossSpec, Network, TripletMode};
// Driven directly by the benchmarks (benches/): not a stable API.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub use backend::NdarrayBackend;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub use checkpoint::{CHECKPOINT_MAGIC, CHECKPOINT_VERSION};
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub use net::loss_and_sigmoid_gradient;
pub use sampler::Sampling;

use crate::error::{CodeError, Error, ExtractError, Result, SearchError, TrainError};
use crate::eval::{map_at_k, PackedCodes};
use crate::head::{ExtractorBinding, HashHead};
use checkpoint::{ByteReader, ByteWriter};
use sampler::Classes;

/// A training recipe: the defaults of every setting of [`TrainConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// MiLaN exactly as in the papers and the authors' code: two classes per batch in thirds,
    /// balance per code, Adam(1e-4, 0.5, 0.9), 10,000 steps.
    MilanPaper,
    /// milan's recipe (docs/training.md has each change's measured effect): batches of many
    /// classes, semi-hard negatives mined in the batch, 2,000 steps.
    #[default]
    MilanPlus,
}

impl Recipe {
    /// Every recipe.
    pub const ALL: [Recipe; 2] = [Recipe::MilanPaper, Recipe::MilanPlus];

    /// The recipe's name: the head file's `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::MilanPaper => "milan-paper",
            Recipe::MilanPlus => "milan-plus",
        }
    }

    /// The recipe called `name`.
    pub fn from_name(name: &str) -> Option<Recipe> {
        Recipe::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every setting of a training run. [`TrainConfig::new`] fills in a recipe's defaults; the fields
/// can then be changed (the head's provenance records them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The recipe (the head's `kind`).
    pub recipe: Recipe,
    /// Code length K: a multiple of 8 from 8 to 1024.
    pub bits: u32,
    /// Optimisation steps.
    pub iters: u64,
    /// Batch size B (a multiple of 3 for [`Sampling::TwoClasses`]).
    pub batch: usize,
    /// Hidden layer widths (1024, 512).
    pub hidden: Vec<usize>,
    /// LeakyReLU negative slope.
    pub slope: f64,
    /// Triplet margin.
    pub alpha: f64,
    /// Push term weight.
    pub beta: f64,
    /// Balance term weight.
    pub gamma: f64,
    /// How the balance term averages.
    pub balance: BalanceMode,
    /// Which triplets of a batch count.
    pub triplets: TripletMode,
    /// How batches are drawn.
    pub sampling: Sampling,
    /// Adam's learning rate.
    pub lr: f64,
    /// Adam's first-moment decay.
    pub beta1: f64,
    /// Adam's second-moment decay.
    pub beta2: f64,
    /// Adam's epsilon.
    pub eps: f64,
    /// Decoupled weight decay (AdamW).
    pub weight_decay: f64,
    /// Seed of the initialisation and of batch drawing.
    pub seed: u64,
    /// Worker threads; 0 = one per core.
    pub threads: usize,
    /// Validate every this many steps when a validation set is given (0: never).
    pub validate_every: u64,
    /// The k of the validation mAP@k.
    pub validate_k: usize,
    /// Stop when this many validations in a row did not improve on the best (0: never stop early).
    pub patience: u64,
    /// Make the head from the parameters that scored best on validation rather than the last
    /// ones. Validate on data held out of the training split, never on the test split.
    #[serde(default)]
    pub keep_best: bool,
    /// Train on features centred on the training mean and divided by one global scale (the root
    /// of the mean per-dimension variance); the head folds both into its first layer, so it
    /// still takes raw features.
    #[serde(default)]
    pub normalize_input: bool,
}

impl TrainConfig {
    /// The recipe's settings for `bits`-bit codes, seed 0.
    pub fn new(recipe: Recipe, bits: u32) -> TrainConfig {
        let paper = TrainConfig {
            recipe,
            bits,
            iters: 10_000,
            batch: 90,
            hidden: vec![1024, 512],
            slope: 0.2,
            alpha: 0.2,
            beta: 0.001,
            gamma: 1.0,
            balance: BalanceMode::PerCode,
            triplets: TripletMode::Thirds,
            sampling: Sampling::TwoClasses,
            lr: 1e-4,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
            seed: 0,
            threads: 0,
            validate_every: 0,
            validate_k: 20,
            patience: 0,
            keep_best: false,
            normalize_input: false,
        };
        match recipe {
            Recipe::MilanPaper => paper,
            Recipe::MilanPlus => TrainConfig {
                iters: 2000,
                triplets: TripletMode::SemiHard,
                sampling: Sampling::PerClass { per_class: 9 },
                validate_every: 500,
                ..paper
            },
        }
    }

    /// The loss settings.
    pub fn loss(&self) -> LossSpec {
        LossSpec {
            alpha: self.alpha,
            beta: self.beta,
            gamma: self.gamma,
            balance: self.balance,
            triplets: self.triplets,
        }
    }

    /// Adam's settings.
    pub fn adam(&self) -> AdamConfig {
        AdamConfig {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    /// Checks the settings on their own.
    pub fn check(&self) -> Result<()> {
        if !(MIN_BITS..=MAX_BITS).contains(&self.bits) || !self.bits.is_multiple_of(8) {
            return Err(Error::Code(CodeError::InvalidBits { bits: self.bits }));
        }
        let invalid = |detail: String| Err(Error::InvalidArgument { detail });
        if self.iters == 0 {
            return invalid("iters must be at least 1".into());
        }
        match self.sampling {
            Sampling::TwoClasses if self.batch < 3 || !self.batch.is_multiple_of(3) => {
                return invalid(format!(
                    "batch {} is not a positive multiple of 3 (anchors, positives, negatives)",
                    self.batch
                ));
            }
            Sampling::PerClass { per_class } if per_class < 2 || self.batch < 2 * per_class => {
                return invalid(format!(
                    "batch {} with {per_class} items per class: need at least 2 per class and 2 classes",
                    self.batch
                ));
            }
            _ => {}
        }
        if self.triplets == TripletMode::Thirds && self.sampling != Sampling::TwoClasses {
            return invalid("triplets in thirds need two-class sampling".into());
        }
        if self.hidden.contains(&0) {
            return invalid("hidden layers need at least 1 unit".into());
        }
        let finite = [
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("gamma", self.gamma),
            ("slope", self.slope),
            ("weight decay", self.weight_decay),
        ];
        for (name, value) in finite {
            if !value.is_finite() || value < 0.0 {
                return invalid(format!("{name} {value} must be a finite number >= 0"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return invalid(format!("learning rate {} must be positive", self.lr));
        }
        for (name, value) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return invalid(format!("Adam {name} {value} must be in [0, 1)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return invalid(format!("Adam eps {} must be positive", self.eps));
        }
        if self.validate_k == 0 {
            return Err(Error::Search(SearchError::ZeroK));
        }
        Ok(())
    }

    /// Layer widths: `input_dim`, hidden..., bits.
    pub fn dims(&self, input_dim: usize) -> Vec<usize> {
        let mut dims = vec![input_dim];
        dims.extend(&self.hidden);
        dims.push(self.bits as usize);
        dims
    }
}

/// Labelled feature vectors: `features` `[n, d]`, `labels` one per row.
#[derive(Debug, Clone, Copy)]
pub struct TrainData<'a> {
    /// `[n, d]`.
    pub features: ArrayView2<'a, f32>,
    /// The class of each row.
    pub labels: &'a [i64],
}

impl TrainData<'_> {
    /// Checks lengths, emptiness and finiteness.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.features.nrows() != self.labels.len() {
            return Err(Error::Train(TrainError::LengthMismatch {
                features: self.features.nrows(),
                labels: self.labels.len(),
            }));
        }
        if self.features.nrows() == 0 || self.features.ncols() == 0 {
            return Err(Error::Train(TrainError::EmptyData {
                what: format!(
                    "the {what} data ({} rows of {} features)",
                    self.features.nrows(),
                    self.features.ncols()
                ),
            }));
        }
        if let Some((row, column)) = crate::eval::first_non_finite(self.features) {
            return Err(Error::Train(TrainError::NonFiniteFeature { row, column }));
        }
        Ok(())
    }

    /// BLAKE3 of the features (`f32` little-endian, row-major) followed by the labels
    /// (`i64` little-endian).
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        let mut row_bytes = Vec::with_capacity(self.features.ncols() * 4);
        for row in self.features.axis_iter(Axis(0)) {
            row_bytes.clear();
            row_bytes.extend(row.iter().flat_map(|v| v.to_le_bytes()));
            hasher.update(&row_bytes);
        }
        for label in self.labels {
            hasher.update(&label.to_le_bytes());
        }
        *hasher.finalize().as_bytes()
    }
}

/// What the progress callback receives after each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainProgress {
    /// Steps done (1 after the first).
    pub step: u64,
    /// Steps in the run.
    pub iters: u64,
    /// The loss of this step's batch (before its update).
    pub loss: LossParts,
    /// The validation mAP@k, on steps that validate.
    pub val_map: Option<f64>,
    /// The best validation mAP@k so far, and its step.
    pub best: Option<(u64, f64)>,
}

/// The input normalisation: `(x - mean) / scale`.
#[derive(Debug, Clone)]
struct InputNorm {
    mean: ndarray::Array1<f32>,
    scale: f32,
}

impl InputNorm {
    fn of(features: ArrayView2<'_, f32>) -> InputNorm {
        let n = features.nrows() as f64;
        let mut mean = vec![0f64; features.ncols()];
        for row in features.axis_iter(Axis(0)) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = 0f64;
        for row in features.axis_iter(Axis(0)) {
            for (m, &x) in mean.iter().zip(row) {
                var += (f64::from(x) - m).powi(2);
            }
        }
        let var = var / (n * features.ncols() as f64);
        let scale = if var > 1e-24 { var.sqrt() } else { 1.0 };
        InputNorm {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            scale: scale as f32,
        }
    }

    /// The first layer applied to raw features: `W' = W / scale`, `b' = b - W' mean`.
    fn fold(&self, layers: &mut [Layer<f32>]) {
        let first = &mut layers[0];
        first.weights.mapv_inplace(|w| w / self.scale);
        let shift = first.weights.dot(&self.mean);
        first.bias -= &shift;
    }
}

/// The parameters that scored best on validation.
#[derive(Debug, Clone)]
struct Best {
    step: u64,
    map: f64,
    layers: Vec<Layer<f32>>,
}

/// A training run in progress.
pub struct Trainer<'a> {
    config: TrainConfig,
    data: TrainData<'a>,
    classes: Classes,
    data_fingerprint: [u8; 32],
    validation: Option<TrainData<'a>>,
    validation_fingerprint: [u8; 32],
    backend: Box<dyn TrainingBackend + 'a>,
    rng: ChaCha8Rng,
    step: u64,
    best: Option<Best>,
    norm: Option<InputNorm>,
    stale_validations: u64,
    last_loss: f64,
    pool: std::sync::Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("step", &self.step)
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

fn check_classes(config: &TrainConfig, classes: &Classes) -> Result<()> {
    if classes.members.len() < 2 {
        return Err(Error::Train(TrainError::TooFewClasses {
            found: classes.members.len(),
        }));
    }
    let needed = Classes::needed(config.sampling, config.batch);
    for (label, members) in classes.labels.iter().zip(&classes.members) {
        if members.len() < needed {
            let why = match config.sampling {
                Sampling::TwoClasses => format!(
                    "the {} recipe draws batch/3 anchors and batch/3 positives ({needed} distinct items) from one class; lower TrainConfig::batch (a multiple of 3) or leave the class out",
                    config.recipe
                ),
                Sampling::PerClass { .. } => {
                    "a triplet needs an anchor and a positive of the class; leave the class out"
                        .into()
                }
            };
            return Err(Error::Train(TrainError::ClassTooSmall {
                label: *label,
                items: members.len(),
                needed,
                why,
            }));
        }
    }
    Ok(())
}

fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("milan-train-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument {
            detail: format!("cannot start {threads} training threads: {e}"),
        })
}

impl<'a> Trainer<'a> {
    /// A new run on `data`, validating on `validation` every `config.validate_every` steps.
    pub fn new(
        config: TrainConfig,
        data: TrainData<'a>,
        validation: Option<TrainData<'a>>,
    ) -> Result<Trainer<'a>> {
        config.check()?;
        Self::check_data(&config, &data, validation.as_ref())?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let network =
            Network::<f32>::init(&config.dims(data.features.ncols()), config.slope, &mut rng);
        let backend = backend::NdarrayBackend::new(network, config.loss(), config.adam());
        Self::assemble(config, data, validation, Box::new(backend), rng)
    }

    /// A new run whose steps are done by `backend` (which holds the initial parameters).
    pub fn with_backend(
        config: TrainConfig,
        data: TrainData<'a>,
        validation: Option<TrainData<'a>>,
        backend: Box<dyn TrainingBackend + 'a>,
    ) -> Result<Trainer<'a>> {
        config.check()?;
        Self::check_data(&config, &data, validation.as_ref())?;
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Self::assemble(config, data, validation, backend, rng)
    }

    fn check_data(
        config: &TrainConfig,
        data: &TrainData<'_>,
        validation: Option<&TrainData<'_>>,
    ) -> Result<()> {
        data.check("training")?;
        if let Some(validation) = validation {
            validation.check("validation")?;
            if validation.labels.len() < 2 {
                return Err(Error::Train(TrainError::EmptyData {
                    what: "the validation set (1 item; retrieval needs a query and another item)"
                        .into(),
                }));
            }
            if validation.features.ncols() != data.features.ncols() {
                return Err(Error::Extract(ExtractError::FeatureDim {
                    expected: data.features.ncols() as u32,
                    got: validation.features.ncols() as u32,
                }));
            }
        }
        check_classes(config, &Classes::new(data.labels))
    }

    fn assemble(
        config: TrainConfig,
        data: TrainData<'a>,
        validation: Option<TrainData<'a>>,
        backend: Box<dyn TrainingBackend + 'a>,
        rng: ChaCha8Rng,
    ) -> Result<Trainer<'a>> {
        let pool = std::sync::Arc::new(thread_pool(config.threads)?);
        let norm = config.normalize_input.then(|| InputNorm::of(data.features));
        Ok(Trainer {
            classes: Classes::new(data.labels),
            data_fingerprint: data.fingerprint(),
            validation_fingerprint: validation.map_or([0; 32], |v| v.fingerprint()),
            config,
            data,
            validation,
            backend,
            rng,
            step: 0,
            best: None,
            norm,
            stale_validations: 0,
            last_loss: f64::NAN,
            pool,
        })
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Steps done.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Whether the run is over: all steps done, or stopped early by validation.
    pub fn finished(&self) -> bool {
        self.step >= self.config.iters || self.stopped_early()
    }

    fn stopped_early(&self) -> bool {
        self.config.patience > 0 && self.stale_validations >= self.config.patience
    }

    /// The best validation mAP@k so far and its step.
    pub fn best(&self) -> Option<(u64, f64)> {
        self.best.as_ref().map(|b| (b.step, b.map))
    }

    /// The current parameters, as a head applies them to raw features (any input
    /// normalisation folded into the first layer).
    pub fn layers(&self) -> Vec<Layer<f32>> {
        self.current_layers()
    }

    fn current_layers(&self) -> Vec<Layer<f32>> {
        let mut layers = self.backend.layers();
        if let Some(norm) = &self.norm {
            norm.fold(&mut layers);
        }
        layers
    }

    /// Runs to the end (see [`Trainer::run_until`]).
    pub fn run(
        &mut self,
        progress: &mut dyn FnMut(&TrainProgress),
        cancel: &AtomicBool,
    ) -> Result<()> {
        self.run_until(self.config.iters, progress, cancel)
    }

    /// Runs steps until `step` steps are done (or the run is finished), calling `progress` after
    /// each. When `cancel` becomes true it stops after the current step with
    /// [`Error::Cancelled`]; the state is then consistent, and [`Trainer::checkpoint`] saves it.
    pub fn run_until(
        &mut self,
        step: u64,
        progress: &mut dyn FnMut(&TrainProgress),
        cancel: &AtomicBool,
    ) -> Result<()> {
        let target = step.min(self.config.iters);
        self.run_steps(target, progress, cancel)
    }

    fn run_steps(
        &mut self,
        target: u64,
        progress: &mut dyn FnMut(&TrainProgress),
        cancel: &AtomicBool,
    ) -> Result<()> {
        let dim = self.data.features.ncols();
        let mut rows = Vec::with_capacity(self.config.batch);
        let mut labels = Vec::with_capacity(self.config.batch);
        let mut batch = Array2::<f32>::zeros((0, dim));
        while self.step < target && !self.stopped_early() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            sampler::draw(
                self.config.sampling,
                self.config.batch,
                &self.classes,
                &mut self.rng,
                &mut rows,
                &mut labels,
            );
            if batch.nrows() != rows.len() {
                batch = Array2::zeros((rows.len(), dim));
            }
            for (mut out, &row) in batch.axis_iter_mut(Axis(0)).zip(&rows) {
                out.assign(&self.data.features.row(row));
                if let Some(norm) = &self.norm {
                    out -= &norm.mean;
                    out /= norm.scale;
                }
            }
            let backend = &mut self.backend;
            let loss = self.pool.install(|| {
                backend.step(Batch {
                    features: batch.view(),
                    labels: &labels,
                })
            })?;
            if !loss.total.is_finite() {
                return Err(Error::InvalidArgument {
                    detail: format!(
                        "the loss became {} at step {}; lower the learning rate or check the features' scale",
                        loss.total,
                        self.step + 1
                    ),
                });
            }
            self.step += 1;
            self.last_loss = loss.total;
            let val_map = self.maybe_validate()?;
            progress(&TrainProgress {
                step: self.step,
                iters: self.config.iters,
                loss,
                val_map,
                best: self.best(),
            });
        }
        Ok(())
    }

    fn maybe_validate(&mut self) -> Result<Option<f64>> {
        let Some(validation) = self.validation else {
            return Ok(None);
        };
        let every = self.config.validate_every;
        if every == 0 || (!self.step.is_multiple_of(every) && self.step != self.config.iters) {
            return Ok(None);
        }
        let layers = self.current_layers();
        let (slope, k) = (self.config.slope, self.config.validate_k);
        let map = self
            .pool
            .install(|| validation_map(&layers, slope, validation, k))?;
        if self.best.as_ref().is_none_or(|b| map > b.map) {
            self.best = Some(Best {
                step: self.step,
                map,
                layers,
            });
            self.stale_validations = 0;
        } else {
            self.stale_validations += 1;
        }
        Ok(Some(map))
    }

    /// The trained head: with `keep_best` and a validation set, the parameters that scored best
    /// on validation, else the current ones. `data` describes the training data for the provenance
    /// (for example the data directory and the split); the trainer adds the counts, the
    /// fingerprint and every setting.
    pub fn head(
        &self,
        extractor: Option<ExtractorBinding>,
        data: serde_json::Value,
    ) -> Result<HashHead> {
        let (layers, chosen_step) = match &self.best {
            Some(best) if self.config.keep_best => (best.layers.clone(), best.step),
            _ => (self.current_layers(), self.step),
        };
        let provenance = serde_json::json!({
            "recipe": self.config.recipe.name(),
            "config": self.config,
            "backend": self.backend.name(),
            "steps_run": self.step,
            "chosen_step": chosen_step,
            "validation_map": self.best.as_ref().map(|b| b.map),
            "data": data,
            "train_items": self.data.labels.len(),
            "train_classes": self.classes.labels.len(),
            "input_dim": self.data.features.ncols(),
            "train_fingerprint": crate::index::hex(&self.data_fingerprint),
            "validation_items": self.validation.map(|v| v.labels.len()),
        });
        head_from_layers(
            &layers,
            self.config.slope as f32,
            self.config.recipe.name(),
            provenance.to_string(),
            extractor,
        )
    }

    /// The complete state as bytes: settings, data fingerprints, step, generator, parameters,
    /// optimiser moments, best-so-far. Layout in docs/training.md.
    pub fn checkpoint(&self) -> Vec<u8> {
        let mut w = ByteWriter::default();
        w.raw(&checkpoint::CHECKPOINT_MAGIC);
        w.u32(checkpoint::CHECKPOINT_VERSION);
        w.blob(
            serde_json::to_string(&self.config)
                .expect("config serialises")
                .as_bytes(),
        );
        w.raw(&self.data_fingerprint);
        w.raw(&self.validation_fingerprint);
        w.u64(self.step);
        w.u64(self.stale_validations);
        w.f64(self.last_loss);
        w.raw(&self.rng.get_seed());
        w.u64(self.rng.get_stream());
        w.u128(self.rng.get_word_pos());
        match &self.best {
            None => w.u8(0),
            Some(best) => {
                w.u8(1);
                w.u64(best.step);
                w.f64(best.map);
                w.layers(&best.layers);
            }
        }
        w.blob(self.backend.name().as_bytes());
        w.blob(&self.backend.save_state());
        let mut bytes = w.into_bytes();
        let checksum = blake3::hash(&bytes);
        bytes.extend_from_slice(checksum.as_bytes());
        bytes
    }

    /// Resumes a run from [`Trainer::checkpoint`]'s bytes, on the same data (checked by
    /// fingerprint). `threads`, when given, replaces the saved thread count.
    pub fn resume(
        bytes: &[u8],
        data: TrainData<'a>,
        validation: Option<TrainData<'a>>,
        threads: Option<usize>,
    ) -> Result<Trainer<'a>> {
        let bad = |detail: String| Error::Train(TrainError::BadCheckpoint { detail });
        if bytes.len() < 44 || bytes[..8] != checkpoint::CHECKPOINT_MAGIC {
            return Err(bad(
                "not a milan training checkpoint (bad magic bytes)".into()
            ));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != checksum {
            return Err(bad(
                "checksum mismatch: the file is damaged or truncated".into()
            ));
        }
        let mut r = ByteReader::new(&body[8..]);
        let parse = |e: String| bad(e);
        let version = r.u32().map_err(parse)?;
        if version != checkpoint::CHECKPOINT_VERSION {
            return Err(bad(format!(
                "checkpoint version {version}; this milan reads version {}",
                checkpoint::CHECKPOINT_VERSION
            )));
        }
        let mut config: TrainConfig = serde_json::from_slice(r.blob().map_err(parse)?)
            .map_err(|e| bad(format!("settings: {e}")))?;
        if let Some(threads) = threads {
            config.threads = threads;
        }
        config.check()?;
        let data_fingerprint: [u8; 32] = r.array().map_err(parse)?;
        let validation_fingerprint: [u8; 32] = r.array().map_err(parse)?;
        Self::check_data(&config, &data, validation.as_ref())?;
        if data.fingerprint() != data_fingerprint {
            return Err(bad(
                "it was made with other training data (features or labels differ)".into(),
            ));
        }
        if validation.map_or([0; 32], |v| v.fingerprint()) != validation_fingerprint {
            return Err(bad(
                "it was made with another validation set (or with none, or with one)".into(),
            ));
        }
        let step = r.u64().map_err(parse)?;
        let stale_validations = r.u64().map_err(parse)?;
        let last_loss = r.f64().map_err(parse)?;
        let seed: [u8; 32] = r.array().map_err(parse)?;
        let stream = r.u64().map_err(parse)?;
        let word_pos = r.u128().map_err(parse)?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(stream);
        rng.set_word_pos(word_pos);
        let best = match r.u8().map_err(parse)? {
            0 => None,
            1 => Some(Best {
                step: r.u64().map_err(parse)?,
                map: r.f64().map_err(parse)?,
                layers: r.layers().map_err(parse)?,
            }),
            other => return Err(bad(format!("best-so-far flag {other}"))),
        };
        let name = r.blob().map_err(parse)?;
        if name != backend::NdarrayBackend::NAME.as_bytes() {
            return Err(bad(format!(
                "saved by backend {:?}, and only {:?} can resume here",
                String::from_utf8_lossy(name),
                backend::NdarrayBackend::NAME
            )));
        }
        let state = r.blob().map_err(parse)?;
        r.finish().map_err(parse)?;
        let backend = backend::NdarrayBackend::load_state(
            state,
            config.slope as f32,
            config.loss(),
            config.adam(),
        )
        .map_err(|e| bad(format!("parameters: {e}")))?;
        let dims = config.dims(data.features.ncols());
        let shapes_match = |layers: &[Layer<f32>]| {
            layers.len() + 1 == dims.len()
                && layers
                    .iter()
                    .zip(dims.windows(2))
                    .all(|(l, d)| l.weights.dim() == (d[1], d[0]) && l.bias.len() == d[1])
        };
        if !shapes_match(&backend.network().layers)
            || best.as_ref().is_some_and(|b| !shapes_match(&b.layers))
        {
            return Err(bad("layer shapes do not match the settings".into()));
        }
        let mut trainer = Self::assemble(config, data, validation, Box::new(backend), rng)?;
        trainer.step = step;
        trainer.best = best;
        trainer.stale_validations = stale_validations;
        trainer.last_loss = last_loss;
        Ok(trainer)
    }
}

/// Trains a head from start to end: [`Trainer::new`], [`Trainer::run`], [`Trainer::head`].
pub fn train<'a>(
    config: TrainConfig,
    data: TrainData<'a>,
    validation: Option<TrainData<'a>>,
    extractor: Option<ExtractorBinding>,
    description: serde_json::Value,
    progress: &mut dyn FnMut(&TrainProgress),
    cancel: &AtomicBool,
) -> Result<HashHead> {
    let mut trainer = Trainer::new(config, data, validation)?;
    trainer.run(progress, cancel)?;
    trainer.head(extractor, description)
}

fn validation_map(
    layers: &[Layer<f32>],
    slope: f64,
    validation: TrainData<'_>,
    k: usize,
) -> Result<f64> {
    let network = Network {
        layers: layers.to_vec(),
        slope: slope as f32,
    };
    let logits = network.logits(validation.features);
    map_at_k(
        &PackedCodes::from_logits(logits.view()),
        validation.labels,
        k,
    )
}

/// A head file from trained layers.
pub fn head_from_layers(
    layers: &[Layer<f32>],
    slope: f32,
    kind: &str,
    provenance: String,
    extractor: Option<ExtractorBinding>,
) -> Result<HashHead> {
    let first = layers.first().ok_or_else(|| Error::InvalidArgument {
        detail: "a head needs at least one layer".into(),
    })?;
    let last = layers.last().expect("non-empty");
    let file = HeadFile {
        magic: HEAD_MAGIC,
        version: HEAD_VERSION,
        bits: last.weights.nrows() as u32,
        input_dim: first.weights.ncols() as u32,
        leaky_slope: slope,
        layers: layers
            .iter()
            .map(|l| DenseLayer {
                inputs: l.weights.ncols() as u32,
                outputs: l.weights.nrows() as u32,
                weights: l.weights.iter().copied().collect(),
                bias: l.bias.to_vec(),
            })
            .collect(),
        extractor_fingerprint: extractor.as_ref().map(|e| e.fingerprint),
        extractor_output: extractor.map(|e| e.output),
        kind: kind.into(),
        provenance,
    };
    HashHead::from_file(file)
}

/// The layers of a head file, for further training or inspection.
pub fn layers_of(head: &HashHead) -> Vec<Layer<f32>> {
    head.file()
        .layers
        .iter()
        .map(|l| Layer {
            weights: Array2::from_shape_vec(
                (l.outputs as usize, l.inputs as usize),
                l.weights.clone(),
            )
            .expect("shapes checked at decode"),
            bias: l.bias.clone().into(),
        })
        .collect()
}
