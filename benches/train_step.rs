//! Median time of one training step of the hash head (K = 64, batch 90, 2048-d input) and of one
//! full evaluation (10,000 queries against 10,000 codes).
//!
//! `cargo bench --bench train_step -- [THREADS] [STEPS]` (defaults: 2 threads, 200 steps).

use std::time::{Duration, Instant};

use milan::eval::{hamming_retrieval, PackedCodes};
use milan::train::{Batch, NdarrayBackend, Network, Recipe, TrainConfig, TrainingBackend};
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let threads: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    let steps: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (dim, batch, bits) = (2048, 90, 64);
    // Non-negative like pooled CNN features.
    let features = Array2::from_shape_simple_fn((batch, dim), || rng.random::<f32>() * 0.8);
    println!("threads {threads}, {steps} timed steps after 20 warm-up steps; K {bits}, batch {batch}, input {dim}");
    for recipe in Recipe::ALL {
        let config = TrainConfig::new(recipe, bits);
        let labels: Vec<usize> = match recipe {
            Recipe::MilanPaper => (0..batch).map(|i| usize::from(i >= 60)).collect(),
            _ => (0..batch).map(|i| i / 9).collect(),
        };
        let network = Network::<f32>::init(&config.dims(dim), config.slope, &mut rng);
        let mut backend = NdarrayBackend::new(network, config.loss(), config.adam());
        let mut times = Vec::with_capacity(steps);
        pool.install(|| {
            for i in 0..steps + 20 {
                let start = Instant::now();
                backend
                    .step(Batch {
                        features: features.view(),
                        labels: &labels,
                    })
                    .unwrap();
                if i >= 20 {
                    times.push(start.elapsed());
                }
            }
        });
        times.sort();
        println!(
            "train step {:<12} median {:6.2} ms  (p10 {:6.2}, p90 {:6.2})",
            recipe.name(),
            percentile(&times, 0.5),
            percentile(&times, 0.1),
            percentile(&times, 0.9)
        );
    }

    // Evaluation: 10,000 random 64-bit codes in 10 classes, each querying all the others.
    let n = 10_000;
    let logits = Array2::from_shape_simple_fn((n, bits as usize), || rng.random::<f32>() - 0.5);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
    let codes = PackedCodes::from_logits(logits.view());
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let metrics = pool.install(|| hamming_retrieval(&codes, &labels, 20, 100).unwrap());
        times.push(start.elapsed());
        std::hint::black_box(metrics);
    }
    times.sort();
    println!(
        "evaluation of {n} queries x {n} codes (mAP@20, precision@1..100, PR over radius): median {:.0} ms",
        percentile(&times, 0.5)
    );
}
