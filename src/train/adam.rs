//! Adam with torch's and TensorFlow's semantics (bias-corrected moments), and optional decoupled
//! weight decay (AdamW).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::net::Layer;

/// Adam's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay (AdamW): `p *= 1 - lr * weight_decay` before each update.
    pub weight_decay: f64,
}

impl AdamConfig {
    /// MiLaN's settings: lr 1e-4, beta1 0.5, beta2 0.9, eps 1e-8, no weight decay.
    pub fn milan() -> AdamConfig {
        AdamConfig {
            lr: 1e-4,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Adam's state: the step count and both moments of every parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    /// Hyper-parameters.
    pub config: AdamConfig,
    /// Updates done.
    pub step: u64,
    /// First moments, shaped like the layers.
    pub m: Vec<Layer<f32>>,
    /// Second moments.
    pub v: Vec<Layer<f32>>,
}

const CHUNK: usize = 1 << 14;

impl Adam {
    /// Fresh state for `layers`.
    pub fn new(config: AdamConfig, layers: &[Layer<f32>]) -> Adam {
        Adam {
            config,
            step: 0,
            m: layers.iter().map(Layer::zeros_like).collect(),
            v: layers.iter().map(Layer::zeros_like).collect(),
        }
    }

    /// One update, as torch does it:
    /// `m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;`
    /// `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
    pub fn update(&mut self, params: &mut [Layer<f32>], grads: &[Layer<f32>]) {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let step_size = (c.lr / (1.0 - c.beta1.powi(t))) as f32;
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt() as f32;
        let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
        let decay = (1.0 - c.lr * c.weight_decay) as f32;
        let apply = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                if decay != 1.0 {
                    *p *= decay;
                }
                *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
            }
        };
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            let tensors = [
                (
                    p.weights.as_slice_mut(),
                    g.weights.as_slice(),
                    m.weights.as_slice_mut(),
                    v.weights.as_slice_mut(),
                ),
                (
                    p.bias.as_slice_mut(),
                    g.bias.as_slice(),
                    m.bias.as_slice_mut(),
                    v.bias.as_slice_mut(),
                ),
            ];
            for (p, g, m, v) in tensors {
                let (p, g, m, v) = (
                    p.expect("standard layout"),
                    g.expect("standard layout"),
                    m.expect("standard layout"),
                    v.expect("standard layout"),
                );
                if p.len() <= CHUNK || rayon::current_num_threads() <= 1 {
                    apply(p, g, m, v);
                } else {
                    p.par_chunks_mut(CHUNK)
                        .zip(g.par_chunks(CHUNK))
                        .zip(m.par_chunks_mut(CHUNK))
                        .zip(v.par_chunks_mut(CHUNK))
                        .for_each(|(((p, g), m), v)| apply(p, g, m, v));
                }
            }
        }
    }
}
