//! Train/test splits per class, as the MiLaN papers make them.

use std::collections::HashMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, TrainError};

/// Row numbers of the training and test items, each list ascending (data-set order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Training rows.
    pub train: Vec<usize>,
    /// Test rows, ascending: the evaluation order (database order for tie-breaking).
    pub test: Vec<usize>,
}

/// Per class, the first `round(fraction * n_class)` items train and the rest test.
///
/// "First" is in the order of the keys (byte-wise ascending, ties by row) when `seed` is `None`;
/// with a seed, each class's key-sorted items are shuffled by Fisher-Yates with a ChaCha8 generator
/// seeded from `seed` (`j = rng.random_range(0..=i)` for `i` from the last position down to 1),
/// classes in ascending label order sharing one generator. `round` is half away from zero.
pub fn split_per_class<K: AsRef<str>>(
    labels: &[i64],
    keys: &[K],
    fraction: f64,
    seed: Option<u64>,
) -> Result<Split> {
    if keys.len() != labels.len() {
        return Err(Error::InvalidArgument {
            detail: format!(
                "{} keys (paths) for {} labels; give exactly one key per item",
                keys.len(),
                labels.len()
            ),
        });
    }
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::InvalidArgument {
            detail: format!("train fraction {fraction} is not between 0 and 1"),
        });
    }
    if labels.is_empty() {
        return Err(Error::Train(TrainError::EmptyData {
            what: "the data set (no items to split)".into(),
        }));
    }
    let mut by_class: Vec<(i64, Vec<usize>)> = {
        let mut map: HashMap<i64, Vec<usize>> = HashMap::new();
        for (row, &label) in labels.iter().enumerate() {
            map.entry(label).or_default().push(row);
        }
        map.into_iter().collect()
    };
    by_class.sort_unstable_by_key(|(label, _)| *label);
    let mut rng = seed.map(ChaCha8Rng::seed_from_u64);
    let mut split = Split {
        train: Vec::new(),
        test: Vec::new(),
    };
    for (_, mut rows) in by_class {
        rows.sort_by(|&a, &b| keys[a].as_ref().cmp(keys[b].as_ref()).then(a.cmp(&b)));
        if let Some(rng) = rng.as_mut() {
            for i in (1..rows.len()).rev() {
                let j = rng.random_range(0..=i);
                rows.swap(i, j);
            }
        }
        let n_train = (fraction * rows.len() as f64).round() as usize;
        split.train.extend_from_slice(&rows[..n_train]);
        split.test.extend_from_slice(&rows[n_train..]);
    }
    split.train.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

/// A split from explicit lists of keys (as published for UC Merced). Items in neither list are
/// left out; a listed key that names no item, or an item in both lists, is an error.
pub fn split_from_lists<K: AsRef<str>, L: AsRef<str>>(
    keys: &[K],
    train: &[L],
    test: &[L],
) -> Result<Split> {
    let mut rows: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
    for (row, key) in keys.iter().enumerate() {
        if rows.insert(key.as_ref(), row).is_some() {
            return Err(Error::InvalidArgument {
                detail: format!(
                    "key {:?} names two items; split lists need unique keys",
                    key.as_ref()
                ),
            });
        }
    }
    let mut in_train = vec![false; keys.len()];
    let mut resolve = |list: &[L], which: &str, mark: bool| -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(list.len());
        for key in list {
            let key = key.as_ref();
            let &row = rows.get(key).ok_or_else(|| Error::InvalidArgument {
                detail: format!("{which} split lists {key:?}, which is not in the data"),
            })?;
            if mark {
                in_train[row] = true;
            } else if in_train[row] {
                return Err(Error::InvalidArgument {
                    detail: format!("{key:?} is in both the train and the test split"),
                });
            }
            out.push(row);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    };
    let train = resolve(train, "the train", true)?;
    let test = resolve(test, "the test", false)?;
    Ok(Split { train, test })
}
