//! The hash head as a trainable network: a hand-written forward and backward pass on ndarray.
//!
//! Dense layers (`y = x W^T + b`, `W` stored `[outputs, inputs]` as in the head file), LeakyReLU
//! between them, a sigmoid on the last layer's output `s`, then MiLaN's loss on `s` and on the
//! L2-normalised `e = s / ||s||`. Generic over `f32` (training) and `f64` (gradient checks).

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis, NdFloat, Zip};
use rand::RngExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// One dense layer: `weights` `[outputs, inputs]`, `bias` `[outputs]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer<F> {
    /// Row-major `[outputs, inputs]`.
    pub weights: Array2<F>,
    /// `[outputs]`.
    pub bias: Array1<F>,
}

impl<F: NdFloat> Layer<F> {
    /// A layer of zeros with the shape of `self` (gradient and moment buffers).
    pub fn zeros_like(&self) -> Layer<F> {
        Layer {
            weights: Array2::zeros(self.weights.raw_dim()),
            bias: Array1::zeros(self.bias.raw_dim()),
        }
    }
}

/// How the balance term averages: MiLaN's per code, or per bit over the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceMode {
    /// `mean_rows (mean_bits(s) - 0.5)^2`: each code has half its bits on (the papers).
    PerCode,
    /// `mean_bits (mean_rows(s) - 0.5)^2`: each bit is on for half the batch.
    PerBit,
}

/// Which triplets of the batch the triplet term sums over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TripletMode {
    /// The batch is anchors | positives | negatives in thirds; triplet `i` is rows
    /// `(i, T + i, 2T + i)` (the papers).
    Thirds,
    /// Every valid `(anchor, positive, negative)` of the batch by label; the mean over the
    /// triplets whose hinge is active ("batch all").
    BatchAll,
    /// For each `(anchor, positive)` pair of the batch, the closest negative farther than the
    /// positive (semi-hard), or the farthest negative when none is; the mean over pairs.
    SemiHard,
}

/// The loss: `triplet - beta * push / K + gamma * balance`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossSpec {
    /// Triplet margin.
    pub alpha: f64,
    /// Weight of the push term (towards 0 or 1).
    pub beta: f64,
    /// Weight of the balance term.
    pub gamma: f64,
    /// How the balance term averages.
    pub balance: BalanceMode,
    /// Which triplets.
    pub triplets: TripletMode,
}

impl LossSpec {
    /// MiLaN's loss with the papers' weights (alpha 0.2, beta 0.001, gamma 1).
    pub fn milan() -> LossSpec {
        LossSpec {
            alpha: 0.2,
            beta: 0.001,
            gamma: 1.0,
            balance: BalanceMode::PerCode,
            triplets: TripletMode::Thirds,
        }
    }
}

/// The loss of one batch and its terms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossParts {
    /// `triplet - beta * push / K + gamma * balance`.
    pub total: f64,
    /// The triplet term.
    pub triplet: f64,
    /// `mean_rows sum_bits (s - 0.5)^2`.
    pub push: f64,
    /// The balance term.
    pub balance: f64,
    /// Triplets whose hinge is active.
    pub active: usize,
    /// Triplets considered.
    pub triplets: usize,
}

/// The hash head network.
#[derive(Debug, Clone, PartialEq)]
pub struct Network<F> {
    /// First to last.
    pub layers: Vec<Layer<F>>,
    /// LeakyReLU negative slope.
    pub slope: F,
}

/// Activations kept by the forward pass for the backward pass.
pub(crate) struct Activations<F> {
    /// Output of each hidden layer, after LeakyReLU.
    hidden: Vec<Array2<F>>,
    /// Sigmoid of the last layer.
    pub(crate) sigmoid: Array2<F>,
}

fn cast<F: NdFloat>(x: f64) -> F {
    F::from(x).expect("a float converts")
}

impl<F: NdFloat> Network<F> {
    /// The reference initialisation: layer weights uniform in
    /// `+-sqrt(3) * sqrt(4 / (fan_in + fan_out))`, zero biases; `dims` is input, hidden..., bits.
    ///
    /// Each weight is `(2u - 1) * limit` with `u = rng.random::<f64>()`, drawn layer by layer in
    /// row-major order.
    pub fn init(dims: &[usize], slope: f64, rng: &mut impl rand::Rng) -> Network<F> {
        let layers = dims
            .windows(2)
            .map(|pair| {
                let (fan_in, fan_out) = (pair[0], pair[1]);
                let limit = 3f64.sqrt() * (4.0 / (fan_in + fan_out) as f64).sqrt();
                let weights = Array2::from_shape_simple_fn((fan_out, fan_in), || {
                    cast((2.0 * rng.random::<f64>() - 1.0) * limit)
                });
                Layer {
                    weights,
                    bias: Array1::zeros(fan_out),
                }
            })
            .collect();
        Network {
            layers,
            slope: cast(slope),
        }
    }

    /// Input dimension.
    pub fn input_dim(&self) -> usize {
        self.layers[0].weights.ncols()
    }

    /// Code length: outputs of the last layer.
    pub fn bits(&self) -> usize {
        self.layers.last().expect("a layer").weights.nrows()
    }

    /// The last layer's outputs (before the sigmoid); bit `i` is `logits[i] > 0`.
    pub fn logits(&self, x: ArrayView2<'_, F>) -> Array2<F> {
        let mut current: Option<Array2<F>> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let input = current.as_ref().map_or(x, |h| h.view());
            let mut z = self.dense(input, layer);
            if i + 1 < self.layers.len() {
                leaky_relu(&mut z, self.slope);
            }
            current = Some(z);
        }
        current.expect("a layer")
    }

    fn dense(&self, input: ArrayView2<'_, F>, layer: &Layer<F>) -> Array2<F> {
        let mut z = Array2::zeros((input.nrows(), layer.weights.nrows()));
        matmul(input, layer.weights.t(), z.view_mut());
        z += &layer.bias;
        z
    }

    /// The forward pass, keeping what the backward pass needs.
    pub(crate) fn forward(&self, x: ArrayView2<'_, F>) -> Activations<F> {
        let mut hidden: Vec<Array2<F>> = Vec::with_capacity(self.layers.len() - 1);
        let last = self.layers.len() - 1;
        for layer in &self.layers[..last] {
            let input = hidden.last().map_or(x, |h| h.view());
            let mut z = self.dense(input, layer);
            leaky_relu(&mut z, self.slope);
            hidden.push(z);
        }
        let input = hidden.last().map_or(x, |h| h.view());
        let mut s = self.dense(input, &self.layers[last]);
        s.mapv_inplace(|z| F::one() / (F::one() + (-z).exp()));
        Activations { hidden, sigmoid: s }
    }

    /// The loss of batch `x` and its gradient with respect to every weight and bias, written into
    /// `grads` (shaped like `self.layers`). `labels` are the batch rows' classes (used by the
    /// mining modes; [`TripletMode::Thirds`] ignores them).
    pub fn loss_and_gradients(
        &self,
        x: ArrayView2<'_, F>,
        labels: &[usize],
        spec: &LossSpec,
        grads: &mut [Layer<F>],
    ) -> LossParts {
        let acts = self.forward(x);
        let (parts, ds) = loss_and_sigmoid_gradient(acts.sigmoid.view(), labels, spec);
        // Through the sigmoid: dz = ds * s (1 - s).
        let mut delta = ds;
        Zip::from(&mut delta)
            .and(&acts.sigmoid)
            .for_each(|d, &s| *d = *d * s * (F::one() - s));
        for l in (0..self.layers.len()).rev() {
            let input = if l == 0 { x } else { acts.hidden[l - 1].view() };
            matmul(delta.t(), input, grads[l].weights.view_mut());
            grads[l].bias.assign(&delta.sum_axis(Axis(0)));
            if l > 0 {
                let mut dh = Array2::zeros((delta.nrows(), self.layers[l].weights.ncols()));
                matmul(delta.view(), self.layers[l].weights.view(), dh.view_mut());
                // LeakyReLU': h > 0 exactly where its input was (the slope is positive).
                let slope = self.slope;
                Zip::from(&mut dh)
                    .and(&acts.hidden[l - 1])
                    .for_each(|d, &h| {
                        if h <= F::zero() {
                            *d *= slope
                        }
                    });
                delta = dh;
            }
        }
        parts
    }

    /// The loss of batch `x` alone (no gradient).
    pub fn loss(&self, x: ArrayView2<'_, F>, labels: &[usize], spec: &LossSpec) -> LossParts {
        let acts = self.forward(x);
        loss_and_sigmoid_gradient(acts.sigmoid.view(), labels, spec).0
    }
}

fn leaky_relu<F: NdFloat>(z: &mut Array2<F>, slope: F) {
    z.mapv_inplace(|v| if v > F::zero() { v } else { slope * v });
}

/// `c = a b`, overwriting `c`; the larger dimension of `c` is split across the current rayon
/// pool's threads. Every element is computed by the same kernel whatever the split, so the result
/// does not depend on the number of threads.
pub(crate) fn matmul<F: NdFloat>(
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    mut c: ArrayViewMut2<'_, F>,
) {
    let threads = rayon::current_num_threads();
    let work = a.nrows() * a.ncols() * b.ncols();
    if threads <= 1 || work < 1 << 20 {
        general_mat_mul(F::one(), &a, &b, F::zero(), &mut c);
        return;
    }
    if c.nrows() >= c.ncols() {
        let chunk = c.nrows().div_ceil(threads).next_multiple_of(8);
        let pieces: Vec<_> = c
            .axis_chunks_iter_mut(Axis(0), chunk)
            .zip(a.axis_chunks_iter(Axis(0), chunk))
            .collect();
        pieces
            .into_par_iter()
            .for_each(|(mut c, a)| general_mat_mul(F::one(), &a, &b, F::zero(), &mut c));
    } else {
        let chunk = c.ncols().div_ceil(threads).next_multiple_of(8);
        let pieces: Vec<_> = c
            .axis_chunks_iter_mut(Axis(1), chunk)
            .zip(b.axis_chunks_iter(Axis(1), chunk))
            .collect();
        pieces
            .into_par_iter()
            .for_each(|(mut c, b)| general_mat_mul(F::one(), &a, &b, F::zero(), &mut c));
    }
}

/// The loss of sigmoid outputs `s` (`[B, K]`) and its gradient with respect to `s`.
pub fn loss_and_sigmoid_gradient<F: NdFloat>(
    s: ArrayView2<'_, F>,
    labels: &[usize],
    spec: &LossSpec,
) -> (LossParts, Array2<F>) {
    let (rows, bits) = s.dim();
    let half: F = cast(0.5);
    let two: F = cast(2.0);
    let alpha: F = cast(spec.alpha);
    let kf: F = cast(bits as f64);
    let bf: F = cast(rows as f64);

    // e = s / ||s|| per row (s > 0, so the norm is positive).
    let norms: Array1<F> = s.map_axis(Axis(1), |row| row.dot(&row).sqrt());
    let e = &s / &norms.view().insert_axis(Axis(1));

    // The triplet term as a coefficient matrix: de = C e.
    let mut coef = Array2::<F>::zeros((rows, rows));
    let mut triplet = F::zero();
    let (active, considered) = match spec.triplets {
        TripletMode::Thirds => {
            let t = rows / 3;
            let mut active = 0;
            let w = two / cast(t as f64);
            for i in 0..t {
                let (a, p, n) = (e.row(i), e.row(t + i), e.row(2 * t + i));
                let dap = sq_dist(a, p);
                let dan = sq_dist(a, n);
                let hinge = dap - dan + alpha;
                if hinge > F::zero() {
                    triplet += hinge;
                    active += 1;
                    add_triplet(&mut coef, i, t + i, 2 * t + i, w);
                }
            }
            triplet /= cast(t as f64);
            (active, t)
        }
        TripletMode::BatchAll | TripletMode::SemiHard => {
            // Unit rows: ||x - y||^2 = 2 - 2 x.y.
            let mut gram = Array2::<F>::zeros((rows, rows));
            matmul(e.view(), e.t(), gram.view_mut());
            let dist = gram.mapv(|g| two - two * g);
            let mut chosen: Vec<(usize, usize, usize, F)> = Vec::new();
            let mut considered = 0;
            for a in 0..rows {
                for p in 0..rows {
                    if p == a || labels[p] != labels[a] {
                        continue;
                    }
                    let dap = dist[[a, p]];
                    if spec.triplets == TripletMode::BatchAll {
                        for n in 0..rows {
                            if labels[n] == labels[a] {
                                continue;
                            }
                            considered += 1;
                            let hinge = dap - dist[[a, n]] + alpha;
                            if hinge > F::zero() {
                                chosen.push((a, p, n, hinge));
                            }
                        }
                    } else {
                        let mut semi: Option<(usize, F)> = None;
                        let mut easiest: Option<(usize, F)> = None;
                        for n in 0..rows {
                            if labels[n] == labels[a] {
                                continue;
                            }
                            let dan = dist[[a, n]];
                            if dan > dap && semi.is_none_or(|(_, d)| dan < d) {
                                semi = Some((n, dan));
                            }
                            if easiest.is_none_or(|(_, d)| dan > d) {
                                easiest = Some((n, dan));
                            }
                        }
                        if let Some((n, dan)) = semi.or(easiest) {
                            considered += 1;
                            let hinge = dap - dan + alpha;
                            if hinge > F::zero() {
                                chosen.push((a, p, n, hinge));
                            }
                        }
                    }
                }
            }
            let denominator = match spec.triplets {
                TripletMode::BatchAll => chosen.len(),
                _ => considered,
            };
            if denominator > 0 {
                let w = two / cast(denominator as f64);
                for &(a, p, n, hinge) in &chosen {
                    triplet += hinge;
                    add_triplet(&mut coef, a, p, n, w);
                }
                triplet /= cast(denominator as f64);
            }
            (chosen.len(), considered)
        }
    };
    let de = coef.dot(&e);

    // Through the L2 normalisation: ds = (de - e (e . de)) / ||s||.
    let mut ds = Array2::<F>::zeros((rows, bits));
    for i in 0..rows {
        let (e_i, de_i) = (e.row(i), de.row(i));
        let proj = e_i.dot(&de_i);
        let r = norms[i];
        Zip::from(ds.row_mut(i))
            .and(e_i)
            .and(de_i)
            .for_each(|d, &e, &g| *d = (g - e * proj) / r);
    }

    // push = mean_rows sum_bits (s - 0.5)^2, entering the loss as -beta * push / K.
    let push = s.fold(F::zero(), |acc, &v| acc + (v - half) * (v - half)) / bf;
    let push_scale: F = -cast::<F>(spec.beta) / kf * two / bf;
    Zip::from(&mut ds)
        .and(s)
        .for_each(|d, &v| *d += push_scale * (v - half));

    // balance, entering the loss as gamma * balance.
    let gamma: F = cast(spec.gamma);
    let balance = match spec.balance {
        BalanceMode::PerCode => {
            let means = s.sum_axis(Axis(1)) / kf;
            let scale = gamma * two / (kf * bf);
            for (i, &m) in means.iter().enumerate() {
                ds.row_mut(i).mapv_inplace(|d| d + scale * (m - half));
            }
            means.fold(F::zero(), |acc, &m| acc + (m - half) * (m - half)) / bf
        }
        BalanceMode::PerBit => {
            let means = s.sum_axis(Axis(0)) / bf;
            let scale = gamma * two / (kf * bf);
            for (j, &m) in means.iter().enumerate() {
                ds.column_mut(j).mapv_inplace(|d| d + scale * (m - half));
            }
            means.fold(F::zero(), |acc, &m| acc + (m - half) * (m - half)) / kf
        }
    };

    let total = triplet - cast::<F>(spec.beta) * push / kf + gamma * balance;
    let parts = LossParts {
        total: total.to_f64().unwrap_or(f64::NAN),
        triplet: triplet.to_f64().unwrap_or(f64::NAN),
        push: push.to_f64().unwrap_or(f64::NAN),
        balance: balance.to_f64().unwrap_or(f64::NAN),
        active,
        triplets: considered,
    };
    (parts, ds)
}

fn sq_dist<F: NdFloat>(x: ndarray::ArrayView1<'_, F>, y: ndarray::ArrayView1<'_, F>) -> F {
    x.iter()
        .zip(y)
        .fold(F::zero(), |acc, (&a, &b)| acc + (a - b) * (a - b))
}

/// Adds the gradient of `||a - p||^2 - ||a - n||^2`, scaled by `w / 2`, to `coef`, so that
/// `coef e` is the gradient with respect to `e`:
/// d/da = 2 (n - p), d/dp = 2 (p - a), d/dn = 2 (a - n).
fn add_triplet<F: NdFloat>(coef: &mut Array2<F>, a: usize, p: usize, n: usize, w: F) {
    coef[[a, n]] += w;
    coef[[a, p]] -= w;
    coef[[p, p]] += w;
    coef[[p, a]] -= w;
    coef[[n, a]] += w;
    coef[[n, n]] -= w;
}
