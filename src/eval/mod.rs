//! Evaluation as the MiLaN papers do it (the protocol: docs/method.md; the command: docs/training.md).
//!
//! - [`split_per_class`] / [`split_from_lists`]: the train/test split;
//! - [`hamming_retrieval`]: mAP@k, precision@k and precision-recall over Hamming radius, the test
//!   set querying itself with each query left out, ties in database order;
//! - [`euclidean_retrieval`]: the same on float features;
//! - [`evaluate`]: a head against both baselines (LSH on train-mean-centred features, float
//!   features), as an [`EvalReport`] that serialises to JSON.

mod metrics;
mod split;

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

pub use metrics::{
    euclidean_retrieval, hamming_retrieval, map_at_k, PackedCodes, PrPoint, RetrievalMetrics,
};
pub use split::{split_from_lists, split_per_class, Split};

pub(crate) use metrics::first_non_finite;

use crate::error::{Error, ExtractError, Result, TrainError};
use crate::head::HashHead;

/// Settings of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// The k of mAP@k (20 in the papers).
    pub k: usize,
    /// Precision is reported at cutoffs `1..=max_cutoff` (100).
    pub max_cutoff: usize,
    /// Seed of the LSH baseline's hyperplanes.
    pub lsh_seed: u64,
}

impl Default for EvalOptions {
    fn default() -> EvalOptions {
        EvalOptions {
            k: 20,
            max_cutoff: 100,
            lsh_seed: 0,
        }
    }
}

/// mAP@k of the baselines, as fractions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    /// Random hyperplanes through the training mean, same number of bits.
    pub lsh: f64,
    /// The float features themselves, Euclidean distance.
    pub float_euclidean: f64,
}

/// The full metrics of each baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineDetails {
    /// LSH.
    pub lsh: RetrievalMetrics,
    /// Float features.
    pub float_euclidean: RetrievalMetrics,
}

/// The result of [`evaluate`]; every mAP and precision is a fraction (0..1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The k of mAP@k.
    pub k: usize,
    /// Code length.
    pub bits: u32,
    /// The head's mAP@k.
    pub map_at_k: f64,
    /// The baselines' mAP@k.
    pub baselines: Baselines,
    /// The head's precision at cutoffs `1..=max_cutoff`.
    pub precision_at_k: Vec<f64>,
    /// The head's precision-recall over Hamming radius `0..=bits`.
    pub pr_curve: Vec<PrPoint>,
    /// Test items (each one a query against the others).
    pub queries: usize,
    /// Training items (the LSH mean).
    pub train_items: usize,
    /// The LSH seed.
    pub lsh_seed: u64,
    /// Precision@k and precision-recall of the baselines.
    pub baseline_details: BaselineDetails,
}

/// Evaluates `head` on the test set, with the LSH baseline centred on the training features'
/// mean and the float-feature baseline.
pub fn evaluate(
    head: &HashHead,
    train_features: ArrayView2<'_, f32>,
    test_features: ArrayView2<'_, f32>,
    test_labels: &[i64],
    options: &EvalOptions,
) -> Result<EvalReport> {
    let dim = head.input_dim();
    for features in [train_features, test_features] {
        if features.ncols() != dim as usize {
            return Err(Error::Extract(ExtractError::FeatureDim {
                expected: dim,
                got: features.ncols() as u32,
            }));
        }
        if let Some((row, column)) = metrics::first_non_finite(features) {
            return Err(Error::Train(TrainError::NonFiniteFeature { row, column }));
        }
    }
    if test_features.nrows() != test_labels.len() {
        return Err(Error::Train(TrainError::LengthMismatch {
            features: test_features.nrows(),
            labels: test_labels.len(),
        }));
    }
    if train_features.nrows() == 0 {
        return Err(Error::Train(TrainError::EmptyData {
            what: "the training split (the LSH baseline is centred on its mean)".into(),
        }));
    }
    let (k, cutoff) = (options.k, options.max_cutoff);
    let codes = PackedCodes::from_head(head, test_features)?;
    let trained = hamming_retrieval(&codes, test_labels, k, cutoff)?;

    let mean = train_features.mean_axis(Axis(0)).expect("rows > 0");
    let lsh_head = HashHead::lsh(
        head.bits(),
        dim,
        options.lsh_seed,
        Some(mean.as_slice().expect("contiguous")),
        None,
    )?;
    let lsh = hamming_retrieval(
        &PackedCodes::from_head(&lsh_head, test_features)?,
        test_labels,
        k,
        cutoff,
    )?;
    let float = euclidean_retrieval(test_features, test_labels, k, cutoff)?;
    Ok(EvalReport {
        k,
        bits: head.bits(),
        map_at_k: trained.map_at_k,
        baselines: Baselines {
            lsh: lsh.map_at_k,
            float_euclidean: float.map_at_k,
        },
        precision_at_k: trained.precision_at_k,
        pr_curve: trained.pr_curve,
        queries: test_features.nrows(),
        train_items: train_features.nrows(),
        lsh_seed: options.lsh_seed,
        baseline_details: BaselineDetails {
            lsh,
            float_euclidean: float,
        },
    })
}

/// The rows `rows` of `features`, in that order.
pub fn select_rows(features: ArrayView2<'_, f32>, rows: &[usize]) -> Array2<f32> {
    features.select(Axis(0), rows)
}

/// The entries `rows` of `values`, in that order.
pub fn select<T: Clone>(values: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&r| values[r].clone()).collect()
}
