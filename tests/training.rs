//! Training and evaluation: the gradient, learning, determinism, checkpoints, the metric, bad input.

use std::sync::atomic::AtomicBool;

use milan::eval::{
    euclidean_retrieval, evaluate, hamming_retrieval, map_at_k, select, select_rows,
    split_from_lists, split_per_class, EvalOptions, PackedCodes,
};
use milan::train::{
    BalanceMode, Layer, LossSpec, Network, Recipe, Sampling, TrainConfig, TrainData, Trainer,
    TripletMode,
};
use milan::{Code, Error, HashHead};
use milan::{CodeError, ExtractError, TrainError};
use ndarray::{Array2, ArrayView2};
use rand::RngExt;

use crate::util::*;

/// Central finite differences of the whole loss against the backward pass, every parameter.
fn check_gradient(spec: LossSpec, labels: &[usize]) {
    let mut rng = rng(11);
    let network = Network::<f64>::init(&[6, 5, 4, 8], 0.2, &mut rng);
    let x = Array2::from_shape_simple_fn((labels.len(), 6), || rng.random::<f64>() * 2.0 - 1.0);
    let mut grads: Vec<Layer<f64>> = network.layers.iter().map(Layer::zeros_like).collect();
    let parts = network.loss_and_gradients(x.view(), labels, &spec, &mut grads);
    assert!(parts.active > 0, "{spec:?}: some triplet must be active");
    assert!(parts.push > 0.0 && parts.balance > 0.0);
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    for (l, grad) in grads.iter().enumerate() {
        let (rows, cols) = network.layers[l].weights.dim();
        let mut params: Vec<(Option<(usize, usize)>, usize)> = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                params.push((Some((r, c)), 0));
            }
            params.push((None, r));
        }
        for (weight, b) in params {
            let loss_at = |delta: f64| {
                let mut shifted = network.clone();
                match weight {
                    Some(rc) => shifted.layers[l].weights[rc] += delta,
                    None => shifted.layers[l].bias[b] += delta,
                }
                shifted.loss(x.view(), labels, &spec).total
            };
            let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * h);
            let analytic = match weight {
                Some(rc) => grad.weights[rc],
                None => grad.bias[b],
            };
            let error = (numeric - analytic).abs() / (numeric.abs() + analytic.abs()).max(1e-4);
            worst = worst.max(error);
            assert!(
                error < 1e-5,
                "{spec:?} layer {l} {weight:?}/{b}: numeric {numeric:e} analytic {analytic:e}"
            );
        }
    }
    assert!(worst < 1e-5);
}

#[test]
fn the_backward_pass_matches_finite_differences() {
    // The papers' loss, with a larger push weight so that every term shows.
    let thirds = LossSpec {
        beta: 0.5,
        ..LossSpec::milan()
    };
    let labels = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1];
    check_gradient(thirds, &labels);
    let mixed: Vec<usize> = (0..12).map(|i| i % 3).collect();
    for triplets in [TripletMode::BatchAll, TripletMode::SemiHard] {
        let spec = LossSpec {
            beta: 0.5,
            gamma: 2.0,
            balance: BalanceMode::PerBit,
            triplets,
            ..LossSpec::milan()
        };
        check_gradient(spec, &mixed);
    }
}

#[test]
fn initialisation_is_the_references() {
    let network = Network::<f32>::init(&[30, 10, 8], 0.2, &mut rng(1));
    for (layer, (fan_in, fan_out)) in network.layers.iter().zip([(30, 10), (10, 8)]) {
        let limit = (3.0f32).sqrt() * (4.0 / (fan_in + fan_out) as f32).sqrt();
        assert_eq!(layer.weights.dim(), (fan_out, fan_in));
        assert!(layer.weights.iter().all(|w| w.abs() <= limit));
        // Uniform: the largest weight is near the limit.
        let largest = layer.weights.iter().fold(0f32, |m, w| m.max(w.abs()));
        assert!(largest > 0.8 * limit, "{largest} vs {limit}");
        assert!(layer.bias.iter().all(|&b| b == 0.0));
    }
}

fn small_config(recipe: Recipe, iters: u64) -> TrainConfig {
    TrainConfig {
        bits: 16,
        iters,
        batch: 30,
        hidden: vec![48, 32],
        lr: 1e-3,
        seed: 3,
        threads: 1,
        sampling: match recipe {
            Recipe::MilanPaper => Sampling::TwoClasses,
            _ => Sampling::PerClass { per_class: 5 },
        },
        ..TrainConfig::new(recipe, 16)
    }
}

struct Data {
    train_x: Array2<f32>,
    train_y: Vec<i64>,
    test_x: Array2<f32>,
    test_y: Vec<i64>,
}

fn clustered_split() -> Data {
    let (x, y) = clustered_features(5, 6, 100, 24, 4, 0.35, 1.5);
    let keys: Vec<String> = (0..y.len()).map(|i| format!("img{i:04}")).collect();
    let split = split_per_class(&y, &keys, 0.6, None).unwrap();
    Data {
        train_x: select_rows(x.view(), &split.train),
        train_y: select(&y, &split.train),
        test_x: select_rows(x.view(), &split.test),
        test_y: select(&y, &split.test),
    }
}

fn data(x: &Array2<f32>, y: &[i64]) -> TrainData<'static> {
    // Leaked for the test's convenience: TrainData borrows.
    let x: &'static Array2<f32> = Box::leak(Box::new(x.clone()));
    let y: &'static [i64] = Box::leak(y.to_vec().into_boxed_slice());
    TrainData {
        features: x.view(),
        labels: y,
    }
}

#[test]
fn training_lowers_the_loss_and_separates_classes() {
    let d = clustered_split();
    let lsh_mean = d.train_x.mean_axis(ndarray::Axis(0)).unwrap();
    let lsh = HashHead::lsh(16, 24, 9, Some(lsh_mean.as_slice().unwrap()), None).unwrap();
    let lsh_map = map_at_k(
        &PackedCodes::from_head(&lsh, d.test_x.view()).unwrap(),
        &d.test_y,
        20,
    )
    .unwrap();
    for recipe in Recipe::ALL {
        let mut losses = Vec::new();
        let mut trainer = Trainer::new(
            small_config(recipe, 600),
            data(&d.train_x, &d.train_y),
            None,
        )
        .unwrap();
        trainer
            .run(&mut |p| losses.push(p.loss.total), &AtomicBool::new(false))
            .unwrap();
        assert_eq!(losses.len(), 600);
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
        let (first, last) = (mean(&losses[..100]), mean(&losses[500..]));
        assert!(last < 0.5 * first, "{recipe}: loss {first} -> {last}");
        let head = trainer
            .head(None, serde_json::json!({"test": true}))
            .unwrap();
        assert_eq!(head.kind(), recipe.name());
        assert_eq!(head.bits(), 16);
        let map = map_at_k(
            &PackedCodes::from_head(&head, d.test_x.view()).unwrap(),
            &d.test_y,
            20,
        )
        .unwrap();
        assert!(
            map > lsh_map + 0.25 && map > 0.6,
            "{recipe}: mAP@20 {map} vs LSH {lsh_map}"
        );
        let provenance: serde_json::Value = serde_json::from_str(head.provenance()).unwrap();
        assert_eq!(provenance["config"]["batch"], 30);
        assert_eq!(provenance["data"]["test"], true);
        assert_eq!(provenance["train_items"], d.train_y.len());
    }
}

#[test]
fn the_same_seed_gives_the_same_head() {
    let d = clustered_split();
    let run = |seed: u64| {
        let config = TrainConfig {
            seed,
            ..small_config(Recipe::MilanPlus, 30)
        };
        milan::train::train(
            config,
            data(&d.train_x, &d.train_y),
            None,
            None,
            serde_json::Value::Null,
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap()
    };
    assert_eq!(run(1).as_bytes(), run(1).as_bytes());
    assert_ne!(run(1).as_bytes(), run(2).as_bytes());
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let d = clustered_split();
    let train = data(&d.train_x, &d.train_y);
    let validation = data(&d.test_x, &d.test_y);
    let config = TrainConfig {
        validate_every: 10,
        normalize_input: true,
        keep_best: true,
        ..small_config(Recipe::MilanPlus, 45)
    };
    let never = AtomicBool::new(false);
    let mut whole = Trainer::new(config.clone(), train, Some(validation)).unwrap();
    let mut validations = 0;
    whole
        .run(
            &mut |p| validations += usize::from(p.val_map.is_some()),
            &never,
        )
        .unwrap();
    // Steps 10, 20, 30, 40 and the last.
    assert_eq!(validations, 5);
    let expected = whole.head(None, serde_json::Value::Null).unwrap();

    let mut first = Trainer::new(config, train, Some(validation)).unwrap();
    first.run_until(17, &mut |_| {}, &never).unwrap();
    assert_eq!(first.step(), 17);
    let saved = first.checkpoint();
    drop(first);
    let mut resumed = Trainer::resume(&saved, train, Some(validation), None).unwrap();
    assert_eq!(resumed.step(), 17);
    resumed.run(&mut |_| {}, &never).unwrap();
    let head = resumed.head(None, serde_json::Value::Null).unwrap();
    assert_eq!(head.as_bytes(), expected.as_bytes());
    assert_eq!(resumed.best(), whole.best());

    // A cancelled run stops between steps and can be saved.
    let cancel = AtomicBool::new(false);
    let mut cancelled = Trainer::resume(&saved, train, Some(validation), Some(1)).unwrap();
    let result = cancelled.run(
        &mut |p| {
            if p.step == 20 {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed)
            }
        },
        &cancel,
    );
    assert!(matches!(result, Err(Error::Cancelled)));
    assert_eq!(cancelled.step(), 20);

    // Damaged checkpoints and other data are refused.
    let mut damaged = saved.clone();
    damaged[100] ^= 1;
    let err = Trainer::resume(&damaged, train, Some(validation), None).unwrap_err();
    assert!(
        matches!(err, Error::Train(TrainError::BadCheckpoint { .. })),
        "{err}"
    );
    let err =
        Trainer::resume(&saved[..saved.len() - 1], train, Some(validation), None).unwrap_err();
    assert!(
        matches!(err, Error::Train(TrainError::BadCheckpoint { .. })),
        "{err}"
    );
    let other = data(&(&d.train_x * 2.0), &d.train_y);
    let err = Trainer::resume(&saved, other, Some(validation), None).unwrap_err();
    assert!(err.to_string().contains("other training data"), "{err}");
    let err = Trainer::resume(&saved, train, None, None).unwrap_err();
    assert!(
        matches!(err, Error::Train(TrainError::BadCheckpoint { .. })),
        "{err}"
    );
}

fn codes(hex: &[&str]) -> PackedCodes {
    let codes: Vec<Code> = hex.iter().map(|h| Code::from_hex(h).unwrap()).collect();
    PackedCodes::from_codes(&codes).unwrap()
}

#[test]
fn map_at_k_matches_a_hand_computed_example() {
    // Five 8-bit codes; distances from item 0: 1, 1, 2, 8.
    let codes = codes(&["00", "01", "02", "03", "ff"]);
    let labels = [1, 2, 1, 1, 2]; // A B A A B
                                  // Query 0: ranking 1(B) 2(A) [tie at distance 1, database order] 3(A) 4(B).
                                  //   k=2: hit at rank 2 -> 1/2, one hit in the top 2 -> AP 0.5 (not 0.25: the denominator is
                                  //   the hits in the top k, not all relevant items). k=3: (1/2 + 2/3) / 2.
                                  // Query 1 (B): ranking 0(A) 3(A) 2(A) 4(B): AP@2 = AP@3 = 0 (no hit).
                                  // Query 2 (A): ranking 0(A) 3(A) 1(B) 4(B): AP 1.
                                  // Query 3 (A): ranking 1(B) 2(A) 0(A) 4(B): AP@2 0.5, AP@3 (1/2 + 2/3) / 2.
                                  // Query 4 (B): ranking 3(A) 1(B) 2(A) 0(A): AP 0.5.
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(map_at_k(&codes, &labels, 2).unwrap(), 2.5 / 5.0));
    let ap3 = (0.5 + 2.0 / 3.0) / 2.0;
    assert!(close(
        map_at_k(&codes, &labels, 3).unwrap(),
        (ap3 + 0.0 + 1.0 + ap3 + 0.5) / 5.0
    ));
    let metrics = hamming_retrieval(&codes, &labels, 2, 6).unwrap();
    assert_eq!(metrics.precision_at_k.len(), 6);
    assert!(close(metrics.precision_at_k[0], 1.0 / 5.0));
    assert!(close(
        metrics.precision_at_k[1],
        (0.5 + 0.0 + 1.0 + 0.5 + 0.5) / 5.0
    ));
    // Cutoffs 4, 5, 6: the whole database of 4 other items.
    for c in 3..6 {
        assert!(close(metrics.precision_at_k[c], 2.0 / 5.0), "{c}");
    }
    let pr = &metrics.pr_curve;
    assert_eq!(pr.len(), 9);
    // Radius 0 retrieves nothing; radius 1: queries 0-3 retrieve two items each, query 4 none.
    assert_eq!((pr[0].precision, pr[0].recall), (0.0, 0.0));
    assert!(close(pr[1].precision, (0.5 + 0.0 + 1.0 + 0.5) / 4.0));
    assert!(close(pr[1].recall, (0.5 + 0.0 + 1.0 + 0.5 + 0.0) / 5.0));
    assert!(close(pr[8].precision, 2.0 / 5.0) && close(pr[8].recall, 1.0));

    // The same ranking rules on floats: query 0 ties 1 (B) and 2 (A) at distance 1.
    let x = ndarray::arr2(&[[0.0f32], [-1.0], [1.0]]);
    let float = euclidean_retrieval(x.view(), &[1, 2, 1], 1, 2).unwrap();
    // Query 0: 1(B) first -> AP@1 0; query 1: 0(A) -> 0; query 2: 0(A) -> 1.
    assert!(close(float.map_at_k, 1.0 / 3.0));
    assert!(float.pr_curve.is_empty());
}

#[test]
fn multi_word_codes_and_packing_agree() {
    let mut rng = rng(4);
    let codes: Vec<Code> = (0..50).map(|_| random_code(&mut rng, 136)).collect();
    let packed = PackedCodes::from_codes(&codes).unwrap();
    for i in 0..5 {
        for j in 0..50 {
            assert_eq!(packed.distance(i, j), codes[i].distance(&codes[j]).unwrap());
        }
    }
    let bytes: Vec<u8> = codes.iter().flat_map(|c| c.as_bytes().to_vec()).collect();
    assert_eq!(packed.to_bytes(), bytes);
    // Logits pack to the same bits as the codes a head gives.
    let head = HashHead::lsh(24, 5, 2, None, None).unwrap();
    let x = Array2::from_shape_simple_fn((7, 5), || rng.random::<f32>() - 0.5);
    let from_head = PackedCodes::from_codes(&head.codes(x.view()).unwrap()).unwrap();
    assert_eq!(PackedCodes::from_head(&head, x.view()).unwrap(), from_head);
}

#[test]
fn packing_codes_of_two_lengths_names_both_lengths() {
    let mut rng = rng(5);
    let codes = vec![random_code(&mut rng, 16), random_code(&mut rng, 24)];
    let err = PackedCodes::from_codes(&codes).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Code(CodeError::CodeLengthsDiffer {
                left: 16,
                right: 24
            })
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("index"), "{err}");
}

#[test]
fn the_report_has_the_documented_json_and_beats_lsh_for_a_trained_head() {
    let d = clustered_split();
    let head = milan::train::train(
        small_config(Recipe::MilanPlus, 300),
        data(&d.train_x, &d.train_y),
        None,
        None,
        serde_json::Value::Null,
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let report = evaluate(
        &head,
        d.train_x.view(),
        d.test_x.view(),
        &d.test_y,
        &EvalOptions::default(),
    )
    .unwrap();
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["k"], 20);
    assert_eq!(json["bits"], 16);
    assert_eq!(json["precision_at_k"].as_array().unwrap().len(), 100);
    assert_eq!(json["pr_curve"].as_array().unwrap().len(), 17);
    let lsh = json["baselines"]["lsh"].as_f64().unwrap();
    let float = json["baselines"]["float_euclidean"].as_f64().unwrap();
    assert!(report.map_at_k > lsh + 0.2, "{} vs {lsh}", report.map_at_k);
    assert!((0.0..=1.0).contains(&float));
    assert_eq!(report.queries, d.test_y.len());

    // A head for other features, and an empty test split.
    let wrong = Array2::<f32>::zeros((3, 7));
    assert!(matches!(
        evaluate(
            &head,
            d.train_x.view(),
            wrong.view(),
            &[1, 2, 3],
            &EvalOptions::default()
        ),
        Err(Error::Extract(ExtractError::FeatureDim {
            expected: 24,
            got: 7
        }))
    ));
    let empty = Array2::<f32>::zeros((0, 24));
    let err = evaluate(
        &head,
        d.train_x.view(),
        empty.view(),
        &[],
        &EvalOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Train(TrainError::EmptyData { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("test split"), "{err}");
}

#[test]
fn splits_are_per_class_deterministic_and_explicit_lists_are_checked() {
    let labels = [1, 2, 1, 2, 1, 2, 1, 1, 1];
    let keys = ["e", "b", "d", "a", "c", "c", "b", "a", "f"];
    // Class 1: rows 0 2 4 6 7 8 keyed e d c b a f -> sorted a(7) b(6) c(4) d(2) e(0) f(8);
    // round(0.5 * 6) = 3 train. Class 2: rows 1 3 5 keyed b a c -> a(3) b(1) c(5); round(1.5) = 2.
    let split = split_per_class(&labels, &keys, 0.5, None).unwrap();
    assert_eq!(split.train, vec![1, 3, 4, 6, 7]);
    assert_eq!(split.test, vec![0, 2, 5, 8]);
    let seeded = split_per_class(&labels, &keys, 0.5, Some(7)).unwrap();
    assert_eq!(
        seeded,
        split_per_class(&labels, &keys, 0.5, Some(7)).unwrap()
    );
    assert_eq!(seeded.train.len(), 5);
    assert!(split_per_class(&labels, &keys[1..], 0.5, None).is_err());
    assert!(split_per_class(&labels, &keys, 1.5, None).is_err());

    let explicit = split_from_lists(&keys[..5], &["a", "e"], &["b"]).unwrap();
    assert_eq!((explicit.train, explicit.test), (vec![0, 3], vec![1]));
    let err = split_from_lists(&keys[..5], &["a"], &["zz"]).unwrap_err();
    assert!(err.to_string().contains("zz"), "{err}");
    let err = split_from_lists(&keys[..5], &["a"], &["a"]).unwrap_err();
    assert!(err.to_string().contains("both"), "{err}");
}

#[test]
fn bad_training_input_gets_typed_errors() {
    let (x, y) = clustered_features(1, 3, 40, 8, 2, 0.3, 1.0);
    let config = || TrainConfig {
        hidden: vec![8],
        ..small_config(Recipe::MilanPaper, 5)
    };
    let new = |config: TrainConfig, x: ArrayView2<'_, f32>, y: &[i64]| {
        Trainer::new(
            config,
            TrainData {
                features: x,
                labels: y,
            },
            None,
        )
        .map(|_| ())
    };
    // Features and labels of different lengths.
    let err = new(config(), x.view(), &y[1..]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Train(TrainError::LengthMismatch {
                features: 120,
                labels: 119
            })
        ),
        "{err}"
    );
    // A class with too few items for the paper's triplets (batch 90: 60 anchors and positives).
    let err = new(
        TrainConfig {
            batch: 90,
            ..config()
        },
        x.view(),
        &y,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Train(TrainError::ClassTooSmall {
                items: 40,
                needed: 60,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("TrainConfig::batch"), "{err}");
    assert!(
        !err.to_string().contains("--batch"),
        "no CLI flags in library messages: {err}"
    );
    // K not a multiple of 8, or out of range.
    for bits in [12, 0, 2048] {
        let err = new(TrainConfig { bits, ..config() }, x.view(), &y).unwrap_err();
        assert!(
            matches!(err, Error::Code(CodeError::InvalidBits { .. })),
            "{bits}: {err}"
        );
    }
    // NaN and infinite features, named by position.
    let mut bad = x.clone();
    bad[[17, 3]] = f32::NAN;
    let err = new(config(), bad.view(), &y).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Train(TrainError::NonFiniteFeature { row: 17, column: 3 })
        ),
        "{err}"
    );
    bad[[17, 3]] = f32::INFINITY;
    assert!(new(config(), bad.view(), &y).is_err());
    // Empty data.
    let empty = Array2::<f32>::zeros((0, 8));
    let err = new(config(), empty.view(), &[]).unwrap_err();
    assert!(
        matches!(err, Error::Train(TrainError::EmptyData { .. })),
        "{err}"
    );
    // One class only.
    let one = vec![5i64; 120];
    let err = new(config(), x.view(), &one).unwrap_err();
    assert!(
        matches!(err, Error::Train(TrainError::TooFewClasses { found: 1 })),
        "{err}"
    );
    // A validation set too small to query.
    let err = Trainer::new(
        config(),
        TrainData {
            features: x.view(),
            labels: &y,
        },
        Some(TrainData {
            features: x.slice(ndarray::s![..1, ..]),
            labels: &y[..1],
        }),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Train(TrainError::EmptyData { .. })),
        "{err}"
    );
    // A batch that does not split in thirds.
    let err = new(
        TrainConfig {
            batch: 31,
            ..config()
        },
        x.view(),
        &y,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}
