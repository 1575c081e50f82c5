//! Which rows make a training batch.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How a batch is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// The papers: two distinct classes at random; `B/3 + B/3` distinct items of the first
    /// (anchors, then positives) and `B/3` distinct items of the second (negatives).
    TwoClasses,
    /// `P = min(classes, B / per_class)` distinct classes at random, `per_class` distinct items of
    /// each (all of a smaller class), in class-draw order.
    PerClass {
        /// Items drawn from each class.
        per_class: usize,
    },
}

/// The training rows grouped by class.
#[derive(Debug, Clone)]
pub(crate) struct Classes {
    /// The distinct labels, ascending; class `c` is `labels[c]`.
    pub labels: Vec<i64>,
    /// The rows of each class, ascending.
    pub members: Vec<Vec<usize>>,
}

impl Classes {
    pub fn new(labels: &[i64]) -> Classes {
        let mut distinct: Vec<i64> = labels.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let mut members = vec![Vec::new(); distinct.len()];
        for (row, label) in labels.iter().enumerate() {
            let class = distinct.binary_search(label).expect("a listed label");
            members[class].push(row);
        }
        Classes {
            labels: distinct,
            members,
        }
    }

    /// The smallest number of items a class needs under `sampling` with batch `batch`.
    pub fn needed(sampling: Sampling, batch: usize) -> usize {
        match sampling {
            Sampling::TwoClasses => 2 * (batch / 3),
            Sampling::PerClass { .. } => 2,
        }
    }
}

/// `m` distinct items of `pool`: the first `m` of a partial Fisher-Yates shuffle
/// (`j = rng.random_range(i..n)`, swap `i` and `j`, for `i` in `0..m`).
fn choose(pool: &[usize], m: usize, rng: &mut ChaCha8Rng, scratch: &mut Vec<usize>) {
    scratch.clear();
    scratch.extend_from_slice(pool);
    let n = scratch.len();
    for i in 0..m.min(n) {
        let j = rng.random_range(i..n);
        scratch.swap(i, j);
    }
    scratch.truncate(m.min(n));
}

/// Draws one batch: its rows and each row's class.
pub(crate) fn draw(
    sampling: Sampling,
    batch: usize,
    classes: &Classes,
    rng: &mut ChaCha8Rng,
    rows: &mut Vec<usize>,
    labels: &mut Vec<usize>,
) {
    rows.clear();
    labels.clear();
    let n_classes = classes.members.len();
    let mut scratch = Vec::new();
    match sampling {
        Sampling::TwoClasses => {
            let t = batch / 3;
            let first = rng.random_range(0..n_classes);
            let mut second = rng.random_range(0..n_classes - 1);
            if second >= first {
                second += 1;
            }
            choose(&classes.members[first], 2 * t, rng, &mut scratch);
            rows.extend_from_slice(&scratch);
            labels.extend(std::iter::repeat_n(first, scratch.len()));
            choose(&classes.members[second], t, rng, &mut scratch);
            rows.extend_from_slice(&scratch);
            labels.extend(std::iter::repeat_n(second, scratch.len()));
        }
        Sampling::PerClass { per_class } => {
            let per_class = per_class.max(2);
            let p = (batch / per_class).clamp(2, n_classes);
            let all: Vec<usize> = (0..n_classes).collect();
            let mut picked = Vec::new();
            choose(&all, p, rng, &mut picked);
            for &class in &picked {
                choose(&classes.members[class], per_class, rng, &mut scratch);
                rows.extend_from_slice(&scratch);
                labels.extend(std::iter::repeat_n(class, scratch.len()));
            }
        }
    }
}
