//! Measures training recipes on real features: the papers' protocol (60/40 split per class in
//! sorted-path order, the test set querying itself, mAP@20 as a fraction), with the LSH and
//! float-feature baselines on the same split. The figures of docs/training.md come from here.
//!
//! ```text
//! cargo bench --bench recipes -- DATA [--bits 32,64] [--recipe milan-paper] [--seeds 1,2,3]
//!     [--iters N] [--holdout 0.2] [--set field=JSON ...] [--threads 2]
//! ```
//! DATA holds `features.npy` (float32 [n, d]), `labels.npy` (int64) and `paths.txt`, as written
//! by `milan extract`. `--set` overrides any field of `TrainConfig` with a JSON value, for example
//! `--set 'triplets="batch-all"'` or `--set 'sampling={"per-class":{"per_class":9}}'`.
//! `--holdout F` trains on 1 - F of the training split and validates on the rest (best head kept).
//! `--curve N` (exploration only) prints the test mAP@20 every N steps; the reported figure is
//! still the final step's.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use milan::eval::{
    euclidean_retrieval, map_at_k, select, select_rows, split_per_class, PackedCodes,
};
use milan::train::{Recipe, TrainConfig, TrainData, Trainer};
use milan::HashHead;
use ndarray::{Array1, Array2, Axis};
use ndarray_npy::read_npy;

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',').filter_map(|x| x.parse().ok()).collect()
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let data = args.next().expect("usage: recipes DATA [options]");
    let (mut bits, mut recipe, mut seeds) = (vec![32u32, 64], Recipe::MilanPaper, vec![1u64, 2, 3]);
    let (mut iters, mut holdout, mut threads) = (None::<u64>, 0.0f64, 2usize);
    let mut curve = 0u64;
    let mut sets: Vec<String> = Vec::new();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bits" => bits = list(&value),
            "--recipe" => recipe = Recipe::from_name(&value).expect("a recipe name"),
            "--seeds" => seeds = list(&value),
            "--iters" => iters = Some(value.parse().unwrap()),
            "--holdout" => holdout = value.parse().unwrap(),
            "--threads" => threads = value.parse().unwrap(),
            "--curve" => curve = value.parse().unwrap(),
            "--set" => sets.push(value),
            other => panic!("unknown option {other}"),
        }
    }
    let features: Array2<f32> = read_npy(format!("{data}/features.npy")).expect("features.npy");
    let labels: Array1<i64> = read_npy(format!("{data}/labels.npy")).expect("labels.npy");
    let labels = labels.to_vec();
    let paths: Vec<String> = std::fs::read_to_string(format!("{data}/paths.txt"))
        .expect("paths.txt")
        .lines()
        .map(str::to_string)
        .collect();
    let split = split_per_class(&labels, &paths, 0.6, None).unwrap();
    let train_x = select_rows(features.view(), &split.train);
    let train_y = select(&labels, &split.train);
    let test_x = select_rows(features.view(), &split.test);
    let test_y = select(&labels, &split.test);
    // The training split again, minus a held-out validation part when asked.
    let train_paths = select(&paths, &split.train);
    let inner = split_per_class(&train_y, &train_paths, 1.0 - holdout, None).unwrap();
    let fit_x = select_rows(train_x.view(), &inner.train);
    let fit_y = select(&train_y, &inner.train);
    let val_x = select_rows(train_x.view(), &inner.test);
    let val_y = select(&train_y, &inner.test);
    let float = euclidean_retrieval(test_x.view(), &test_y, 20, 20)
        .unwrap()
        .map_at_k;
    println!(
        "{data}: {} items, {} dims; train {} (fit {}, validation {}), test {}; float Euclidean mAP@20 {float:.4}",
        labels.len(),
        features.ncols(),
        train_y.len(),
        fit_y.len(),
        val_y.len(),
        test_y.len()
    );
    let mean = train_x.mean_axis(Axis(0)).unwrap();
    for &k in &bits {
        let mut config = TrainConfig::new(recipe, k);
        if let Some(iters) = iters {
            config.iters = iters;
        }
        config.threads = threads;
        let mut json = serde_json::to_value(&config).unwrap();
        for set in &sets {
            let (field, value) = set.split_once('=').expect("--set field=JSON");
            json[field] = serde_json::from_str(value).expect("a JSON value");
        }
        let base: TrainConfig = serde_json::from_value(json).expect("a valid config");
        let (mut maps, mut lshs) = (Vec::new(), Vec::new());
        for &seed in &seeds {
            let mut config = TrainConfig {
                seed,
                ..base.clone()
            };
            let start = Instant::now();
            let mut validation = (!val_y.is_empty()).then_some(TrainData {
                features: val_x.view(),
                labels: &val_y,
            });
            if curve > 0 {
                config.validate_every = curve;
                config.patience = 0;
                validation = Some(TrainData {
                    features: test_x.view(),
                    labels: &test_y,
                });
            }
            let mut points = Vec::new();
            let mut trainer = Trainer::new(
                config,
                TrainData {
                    features: fit_x.view(),
                    labels: &fit_y,
                },
                validation,
            )
            .unwrap();
            trainer
                .run(
                    &mut |p| {
                        if let Some(map) = p.val_map {
                            points.push(format!("{}:{map:.3}", p.step))
                        }
                    },
                    &AtomicBool::new(false),
                )
                .unwrap();
            if curve > 0 {
                println!("    curve (test mAP@20 by step) {}", points.join(" "));
            }
            let head = if curve > 0 {
                milan::train::head_from_layers(&trainer.layers(), 0.2, "final", String::new(), None)
                    .unwrap()
            } else {
                trainer.head(None, serde_json::Value::Null).unwrap()
            };
            let map = map_at_k(
                &PackedCodes::from_head(&head, test_x.view()).unwrap(),
                &test_y,
                20,
            )
            .unwrap();
            let lsh_head = HashHead::lsh(
                k,
                features.ncols() as u32,
                seed,
                Some(mean.as_slice().unwrap()),
                None,
            )
            .unwrap();
            let lsh = map_at_k(
                &PackedCodes::from_head(&lsh_head, test_x.view()).unwrap(),
                &test_y,
                20,
            )
            .unwrap();
            println!(
                "  {k} bits seed {seed}: mAP@20 {map:.4} (LSH {lsh:.4}); steps {} best {:?}; {:.1} s",
                trainer.step(),
                trainer.best(),
                start.elapsed().as_secs_f64()
            );
            maps.push(map);
            lshs.push(lsh);
        }
        let (m, s) = mean_sd(&maps);
        let (lm, ls) = mean_sd(&lshs);
        println!(
            "{} {k} bits {} {}: mAP@20 {m:.3} +- {s:.3}; LSH {lm:.3} +- {ls:.3}; float {float:.3}",
            recipe.name(),
            if sets.is_empty() {
                String::new()
            } else {
                sets.join(" ")
            },
            if holdout > 0.0 {
                format!("holdout {holdout}")
            } else {
                String::new()
            }
        );
    }
}
