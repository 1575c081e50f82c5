//! The train/test split flags shared by `milan train` and `milan eval`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use milan::dataset::SplitSpec;

#[derive(Args, Clone, Default)]
pub struct SplitArgs {
    /// Fraction of each class that trains; the rest is the test split [default: 0.6, or for
    /// `milan eval` the split the head was trained with].
    #[arg(long, conflicts_with_all = ["train_split", "test_split"])]
    train_fraction: Option<f64>,
    /// Shuffle each class's items with this seed before splitting (default: sorted by path).
    #[arg(long, conflicts_with_all = ["train_split", "test_split"])]
    split_seed: Option<u64>,
    /// A file listing the training items' paths, one per line (as in DATA/paths.txt).
    #[arg(long, requires = "test_split")]
    train_split: Option<PathBuf>,
    /// A file listing the test items' paths, one per line.
    #[arg(long, requires = "train_split")]
    test_split: Option<PathBuf>,
}

impl SplitArgs {
    /// The split asked for: the flags given, the rest from `recorded` (the split a head was
    /// trained with) when it splits per class, else the defaults.
    pub fn spec(&self, recorded: Option<SplitSpec>) -> Result<SplitSpec> {
        if let (Some(train), Some(test)) = (&self.train_split, &self.test_split) {
            return Ok(SplitSpec::Lists {
                train: std::path::absolute(train).unwrap_or_else(|_| train.clone()),
                test: std::path::absolute(test).unwrap_or_else(|_| test.clone()),
            });
        }
        let (fraction, seed) = match recorded {
            Some(lists @ SplitSpec::Lists { .. })
                if self.train_fraction.is_none() && self.split_seed.is_none() =>
            {
                return Ok(lists)
            }
            Some(SplitSpec::PerClass {
                train_fraction,
                seed,
            }) => (train_fraction, seed),
            _ => (0.6, None),
        };
        let train_fraction = self.train_fraction.unwrap_or(fraction);
        if !(0.0..=1.0).contains(&train_fraction) {
            bail!("--train-fraction {train_fraction}: use a number from 0 to 1");
        }
        Ok(SplitSpec::PerClass {
            train_fraction,
            seed: self.split_seed.or(seed),
        })
    }
}
