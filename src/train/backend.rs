//! The optimisation step behind a trait, so that another engine (ONNX Runtime's training API,
//! where a build with it exists) can replace the hand-written one. See docs/training.md.

use ndarray::ArrayView2;

use super::adam::{Adam, AdamConfig};
use super::checkpoint::{ByteReader, ByteWriter};
use super::net::{Layer, LossParts, LossSpec, Network};
use crate::error::Result;

/// One training batch: feature rows and each row's class (`0..classes`).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// `[B, input_dim]`.
    pub features: ArrayView2<'a, f32>,
    /// `B` class numbers.
    pub labels: &'a [usize],
}

/// What runs one optimisation step: owns the network's parameters and the optimiser's state.
pub trait TrainingBackend: Send {
    /// A short name, recorded in checkpoints and provenance.
    fn name(&self) -> &'static str;
    /// One step on `batch`: forward, loss, backward, parameter update. Returns the loss of the
    /// batch before the update.
    fn step(&mut self, batch: Batch<'_>) -> Result<LossParts>;
    /// The current parameters, first layer to last.
    fn layers(&self) -> Vec<Layer<f32>>;
    /// The complete state (parameters and optimiser), for checkpoints.
    fn save_state(&self) -> Vec<u8>;
}

/// The hand-written backend: [`Network`]'s backward pass and [`Adam`], on ndarray and rayon.
#[derive(Debug, Clone)]
pub struct NdarrayBackend {
    network: Network<f32>,
    adam: Adam,
    grads: Vec<Layer<f32>>,
    loss: LossSpec,
}

impl NdarrayBackend {
    /// Name in checkpoints.
    pub const NAME: &'static str = "ndarray";

    /// A backend starting from `network`.
    pub fn new(network: Network<f32>, loss: LossSpec, adam: AdamConfig) -> NdarrayBackend {
        let grads = network.layers.iter().map(Layer::zeros_like).collect();
        let adam = Adam::new(adam, &network.layers);
        NdarrayBackend {
            network,
            adam,
            grads,
            loss,
        }
    }

    /// The network.
    pub fn network(&self) -> &Network<f32> {
        &self.network
    }

    /// The optimiser's state.
    #[cfg(feature = "bench-internals")]
    pub fn adam(&self) -> &Adam {
        &self.adam
    }

    /// Restores a backend saved by [`TrainingBackend::save_state`].
    pub(crate) fn load_state(
        bytes: &[u8],
        slope: f32,
        loss: LossSpec,
        adam: AdamConfig,
    ) -> std::result::Result<NdarrayBackend, String> {
        let mut r = ByteReader::new(bytes);
        let step = r.u64()?;
        let count = r.u32()? as usize;
        let mut layers = Vec::with_capacity(count.min(64));
        let mut m = Vec::new();
        let mut v = Vec::new();
        for _ in 0..count {
            let outputs = r.u32()? as usize;
            let inputs = r.u32()? as usize;
            let mut layer = || -> std::result::Result<Layer<f32>, String> {
                Ok(Layer {
                    weights: r.matrix(outputs, inputs)?,
                    bias: r.vector(outputs)?,
                })
            };
            layers.push(layer()?);
            m.push(layer()?);
            v.push(layer()?);
        }
        r.finish()?;
        if layers.is_empty() {
            return Err("no layers".into());
        }
        let network = Network { layers, slope };
        let mut backend = NdarrayBackend::new(network, loss, adam);
        backend.adam.step = step;
        backend.adam.m = m;
        backend.adam.v = v;
        Ok(backend)
    }
}

impl TrainingBackend for NdarrayBackend {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn step(&mut self, batch: Batch<'_>) -> Result<LossParts> {
        let parts = self.network.loss_and_gradients(
            batch.features,
            batch.labels,
            &self.loss,
            &mut self.grads,
        );
        self.adam.update(&mut self.network.layers, &self.grads);
        Ok(parts)
    }

    fn layers(&self) -> Vec<Layer<f32>> {
        self.network.layers.clone()
    }

    /// `u64` Adam step, `u32` layer count, then per layer `u32` outputs, `u32` inputs and six
    /// `f32` arrays: weights, bias, first moments (weights, bias), second moments (weights, bias).
    fn save_state(&self) -> Vec<u8> {
        let mut w = ByteWriter::default();
        w.u64(self.adam.step);
        w.u32(self.network.layers.len() as u32);
        for ((layer, m), v) in self
            .network
            .layers
            .iter()
            .zip(&self.adam.m)
            .zip(&self.adam.v)
        {
            w.u32(layer.weights.nrows() as u32);
            w.u32(layer.weights.ncols() as u32);
            for l in [layer, m, v] {
                w.floats(l.weights.iter());
                w.floats(l.bias.iter());
            }
        }
        w.into_bytes()
    }
}
