//! The training workflow through the command line: extract -> train -> eval -> index create ->
//! add -> query -> rehash on generated images, interrupted training resumed, and each bad input
//! of training, evaluation and re-coding named.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use milan::dataset::Dataset;
use milan::eval::{map_at_k, PackedCodes};
use milan::Code;
use milan::{ExtractorContract, InputLayout, PixelRange};

use crate::images::{
    create_image_index, lsh_head, lsh_image_index, render_in_browser, temp_image_set, tiny_model,
    write_image_set,
};
use crate::util::*;

/// Writes a DATA folder of clustered features: `classes` classes of `per_class` items.
fn clustered_data(dir: &Path, classes: usize, per_class: usize) -> Dataset {
    let (features, labels) = clustered_features(11, classes, per_class, 16, 4, 0.3, 1.0);
    let labels: Vec<i64> = labels.iter().map(|l| l - 100).collect();
    let dataset = Dataset {
        keys: (0..labels.len()).map(|i| format!("item{i:04}")).collect(),
        classes: (0..classes).map(|c| format!("class-{c}")).collect(),
        features,
        labels,
        extractor: None,
    };
    dataset.save(dir).unwrap();
    dataset
}

fn fake_model(fingerprint: u8) -> ExtractorContract {
    ExtractorContract {
        fingerprint: [fingerprint; 32],
        path: "model.onnx".into(),
        input: "x".into(),
        layout: InputLayout::Nchw,
        size: 32,
        pixel_range: PixelRange::ZeroOne,
        output: "features".into(),
        dim: 16,
    }
}

/// Fast training flags for the tiny data sets here.
const QUICK: [&str; 10] = [
    "--hidden",
    "32",
    "--batch",
    "18",
    "--lr",
    "0.001",
    "--threads",
    "1",
    "--seed",
    "1",
];

fn train(data: &Path, out: &Path, bits: &str, iters: &str) -> String {
    let mut args = vec![
        "train",
        "--data",
        s(data),
        "--bits",
        bits,
        "--iters",
        iters,
        "--out",
        s(out),
        "--quiet",
    ];
    args.extend(QUICK);
    ok(&args)
}

#[test]
fn images_to_a_trained_index_end_to_end() {
    let (tmp, images, _) = temp_image_set(10);
    let model = tiny_model();
    let (data, head, report, export, index) = (
        tmp.path().join("data"),
        tmp.path().join("h16.head"),
        tmp.path().join("report.html"),
        tmp.path().join("export"),
        tmp.path().join("idx"),
    );
    ok(&extract_args(&model, &images, &data));
    let said = train(&data, &head, "16", "150");
    assert!(said.contains("16-bit milan-plus head, 150 steps"), "{said}");
    let trained = milan::HashHead::read(&head).unwrap();
    let provenance: serde_json::Value = serde_json::from_str(trained.provenance()).unwrap();
    assert_eq!(provenance["data"]["items"], 20);
    assert_eq!(provenance["data"]["split"]["train_fraction"], 0.6);
    assert_eq!(provenance["config"]["hidden"], serde_json::json!([32]));
    assert!(trained.extractor().is_some(), "bound to the tiny extractor");

    let json = ok(&[
        "eval",
        "--data",
        s(&data),
        "--head",
        s(&head),
        "--json",
        "--html",
        s(&report),
        "--export",
        s(&export),
    ]);
    let result: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(result["k"], 20);
    assert_eq!(result["bits"], 16);
    assert_eq!(result["queries"], 8, "40% of 10 per class, 2 classes");
    let map = result["map_at_k"].as_f64().unwrap();
    assert!(map > 0.9, "red and blue images separate: {map}");
    for baseline in ["lsh", "float_euclidean"] {
        let value = result["baselines"][baseline].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&value), "{baseline} {value}");
    }
    assert_eq!(result["precision_at_k"].as_array().unwrap().len(), 100);
    assert_eq!(result["pr_curve"].as_array().unwrap().len(), 17);

    // The exported codes and labels give the same mAP, and are the head's codes.
    let codes: ndarray::Array2<u8> = ndarray_npy::read_npy(export.join("codes.npy")).unwrap();
    let labels: ndarray::Array1<i64> = ndarray_npy::read_npy(export.join("labels.npy")).unwrap();
    assert_eq!(codes.dim(), (8, 2));
    let codes: Vec<Code> = codes
        .rows()
        .into_iter()
        .map(|row| Code::from_bytes(row.as_slice().unwrap()).unwrap())
        .collect();
    let recomputed = map_at_k(
        &PackedCodes::from_codes(&codes).unwrap(),
        labels.as_slice().unwrap(),
        20,
    )
    .unwrap();
    assert_eq!(recomputed, map);
    let paths = std::fs::read_to_string(export.join("paths.txt")).unwrap();
    let first = paths.lines().next().unwrap();
    let dataset = Dataset::load(&data).unwrap();
    let row = dataset.keys.iter().position(|k| k == first).unwrap();
    let direct = trained
        .codes(dataset.features.slice(ndarray::s![row..row + 1, ..]))
        .unwrap();
    assert_eq!(direct[0], codes[0]);

    // The report: the table, both plots, one grid row per class, every result with a picture.
    let page = std::fs::read_to_string(&report).unwrap();
    assert!(page.contains("mAP@20"));
    assert_eq!(page.matches("<svg").count(), 2);
    assert_eq!(page.matches("class=\"series\"").count(), 5);
    assert_eq!(page.matches("<figure class=\"query\"").count(), 2);
    assert_eq!(
        page.matches("<img ").count(),
        2 * 8,
        "each query and its 7 others"
    );
    // The 7 others of each query are the whole test split: its 4 items of the other class are
    // framed red.
    assert_eq!(page.matches("class=\"wrong\"").count(), 2 * 4);
    let dom = render_in_browser(&report, &tmp.path().join("profile"));
    assert!(
        dom.contains("data-images-loaded=\"16/16\""),
        "not every image loaded: {}",
        &dom[dom.len().saturating_sub(300)..]
    );

    // The trained head codes an image index; a query by image finds its own class first.
    create_image_index(
        &index,
        &head,
        &images,
        &["--keep-features", "--label-from-dir"],
    );
    let query = images.join("red/red006.png");
    let answer = ok(&[
        "query",
        s(&index),
        "--image",
        s(&query),
        "--top-k",
        "5",
        "--json",
    ]);
    let answer: serde_json::Value = serde_json::from_str(answer.lines().next().unwrap()).unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["distance"], 0);
    for result in results {
        assert!(
            result["key"].as_str().unwrap().contains("/red/"),
            "{answer}"
        );
    }

    // The index serves as DATA; a 24-bit head trained on it re-codes the index in place.
    let head24 = tmp.path().join("h24.head");
    train(&index, &head24, "24", "60");
    let said = ok(&["index", "rehash", s(&index), "--head", s(&head24)]);
    assert!(said.contains("re-coded 20 items"), "{said}");
    assert!(said.contains("16 -> 24 bits"), "{said}");
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["index", "info", s(&index), "--json"])).unwrap();
    assert_eq!(info["bits"], 24);
    ok(&["index", "check", s(&index)]);
    let reopened = milan::Index::open_read_only(&index).unwrap();
    assert_eq!(
        reopened.head().unwrap().fingerprint(),
        milan::HashHead::read(&head24).unwrap().fingerprint()
    );
    let reader = reopened.reader().unwrap();
    let new_head = reopened.head().unwrap();
    for id in reader.ids() {
        let features = reader.features(id, 16).unwrap().unwrap();
        let code = new_head
            .codes(ndarray::ArrayView2::from_shape((1, 16), &features).unwrap())
            .unwrap();
        assert_eq!(reader.code(id).unwrap(), code[0], "item {id}");
    }
    let answer = ok(&[
        "query",
        s(&index),
        "--image",
        s(&query),
        "--top-k",
        "1",
        "--json",
    ]);
    assert!(answer.contains("\"distance\":0"), "{answer}");
}

/// Runs `milan train` until its first checkpoint is written, then interrupts it as Ctrl-C does.
fn interrupt_after_first_checkpoint(args: &[&str], checkpoint: &Path) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_milan"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !checkpoint.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "interrupted runs fail");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn an_interrupted_training_resumes_to_the_same_head() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    clustered_data(&data, 3, 30);
    let (whole, resumed, checkpoint) = (
        tmp.path().join("whole.head"),
        tmp.path().join("resumed.head"),
        tmp.path().join("run.ckpt"),
    );
    let common = [
        "train",
        "--data",
        s(&data),
        "--bits",
        "16",
        "--iters",
        "1500",
        "--hidden",
        "256,256",
        "--batch",
        "18",
        "--threads",
        "1",
        "--validate-every",
        "100",
        "--quiet",
    ];
    let mut args = common.to_vec();
    args.extend(["--out", s(&whole)]);
    ok(&args);

    let mut args = common.to_vec();
    args.extend([
        "--out",
        s(&resumed),
        "--checkpoint",
        s(&checkpoint),
        "--checkpoint-every",
        "20",
    ]);
    let said = interrupt_after_first_checkpoint(&args, &checkpoint);
    assert!(said.contains("continue with --resume"), "{said}");
    assert!(!resumed.exists(), "no head from an interrupted run");
    // Resuming takes the settings from the checkpoint; other training data is refused.
    let other = tmp.path().join("other");
    clustered_data(&other, 3, 31);
    let refused = fails(
        &[
            "train",
            "--data",
            s(&other),
            "--out",
            s(&resumed),
            "--resume",
            s(&checkpoint),
        ],
        1,
    );
    assert!(refused.contains("other training data"), "{refused}");
    // Settings come from the checkpoint: a training flag beside --resume is a usage error.
    for (flag, value) in [("--bits", "32"), ("--seed", "7")] {
        let refused = fails(
            &[
                "train",
                "--data",
                s(&data),
                "--out",
                s(&resumed),
                "--resume",
                s(&checkpoint),
                flag,
                value,
            ],
            2,
        );
        assert!(refused.contains(flag), "{refused}");
    }
    ok(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&resumed),
        "--resume",
        s(&checkpoint),
        "--quiet",
    ]);
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&resumed).unwrap(),
        "an interrupted and resumed run ends with the uninterrupted run's head"
    );
}

fn train_fails(data: &Path, extra: &[&str]) -> String {
    let out = data.with_extension("head");
    let mut args = vec![
        "train",
        "--data",
        s(data),
        "--out",
        s(&out),
        "--iters",
        "5",
        "--quiet",
    ];
    args.extend(extra);
    let said = fails(&args, 1);
    assert!(!out.exists(), "no head written");
    said
}

#[test]
fn bad_training_and_evaluation_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dataset = clustered_data(&data, 3, 20);
    let bits16 = ["--bits", "16"];

    let said = train_fails(&data, &["--bits", "12"]);
    assert!(said.contains("multiple of 8"), "{said}");
    let said = train_fails(&tmp.path().join("nowhere"), &bits16);
    assert!(said.contains("no such directory"), "{said}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let said = train_fails(&empty, &bits16);
    assert!(
        said.contains("features.npy") && said.contains("missing"),
        "{said}"
    );

    // Labels of another length than the features.
    let short = tmp.path().join("short");
    dataset.save(&short).unwrap();
    ndarray_npy::write_npy(
        short.join("labels.npy"),
        &ndarray::Array1::from(dataset.labels[..10].to_vec()),
    )
    .unwrap();
    let said = train_fails(&short, &bits16);
    assert!(said.contains("10 labels for 60 feature rows"), "{said}");

    // A NaN feature.
    let nan = tmp.path().join("nan");
    let mut broken = dataset.clone();
    broken.features[[7, 3]] = f32::NAN;
    broken.save(&nan).unwrap();
    let said = train_fails(&nan, &bits16);
    assert!(
        said.contains("NaN or infinite") && said.contains("row 7 (item0007)"),
        "{said}"
    );

    // A class too small for the paper's batches, named.
    let said = train_fails(&data, &["--bits", "16", "--recipe", "milan-paper"]);
    assert!(
        said.contains("\"class-0\"")
            && said.contains("TrainConfig::batch")
            && said.contains("hint: lower --batch"),
        "{said}"
    );
    // One class only.
    let single = tmp.path().join("single");
    let mut one = dataset.clone();
    one.labels.iter_mut().for_each(|l| *l = 0);
    one.save(&single).unwrap();
    let said = train_fails(&single, &bits16);
    assert!(said.contains("at least 2 classes"), "{said}");
    // Impossible arguments.
    let said = train_fails(&data, &["--bits", "16", "--holdout", "1.5"]);
    assert!(said.contains("--holdout 1.5"), "{said}");
    let said = train_fails(&data, &["--bits", "16", "--holdout", "0.04"]);
    assert!(
        said.contains("holds out 0 of the 36 training items"),
        "{said}"
    );
    let said = fails(
        &[
            "train",
            "--data",
            s(&data),
            "--bits",
            "16",
            "--out",
            "/no/such/folder/h.head",
        ],
        1,
    );
    assert!(said.contains("does not exist"), "{said}");
    let said = train_fails(&data, &["--bits", "16", "--train-fraction", "0"]);
    assert!(said.contains("training split is empty"), "{said}");

    // Evaluation: a head for another dimension, another extractor, an empty test split.
    let head = tmp.path().join("h.head");
    train(&data, &head, "16", "30");
    let other_dim = tmp.path().join("dim8.head");
    lsh_head(&other_dim, "16", &["--dim", "8"]);
    let said = fails(&["eval", "--data", s(&data), "--head", s(&other_dim)], 1);
    assert!(said.contains("8-dimensional features"), "{said}");
    let said = fails(
        &[
            "eval",
            "--data",
            s(&data),
            "--head",
            s(&head),
            "--train-fraction",
            "1",
        ],
        1,
    );
    assert!(said.contains("test split has 0 items"), "{said}");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut bound = dataset.clone();
    bound.extractor = Some(fake_model(1));
    bound.save(&a).unwrap();
    bound.extractor = Some(fake_model(2));
    bound.save(&b).unwrap();
    let head_a = tmp.path().join("a.head");
    train(&a, &head_a, "16", "10");
    assert_eq!(
        milan::HashHead::read(&head_a)
            .unwrap()
            .extractor()
            .unwrap()
            .fingerprint,
        [1; 32]
    );
    let said = fails(&["eval", "--data", s(&b), "--head", s(&head_a)], 1);
    assert!(said.contains("another extractor"), "{said}");
    // A damaged extractor.json is named.
    std::fs::write(b.join("extractor.json"), "{\"model\": 3}").unwrap();
    let said = fails(&["eval", "--data", s(&b), "--head", s(&head_a)], 1);
    assert!(said.contains("extractor.json"), "{said}");
}

/// An image index of 8 generated images under `root`, coded by an LSH head.
fn image_index(root: &Path, keep_features: bool) -> PathBuf {
    let images = root.join("images");
    write_image_set(&images, 4);
    let flags: &[&str] = if keep_features {
        &["--keep-features"]
    } else {
        &[]
    };
    lsh_image_index(root, &images, flags).1
}

#[test]
fn rehash_refuses_what_it_cannot_recode_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let index = image_index(&tmp.path().join("plain"), false);
    let kept = image_index(&tmp.path().join("kept"), true);
    let exported = |name: &str| {
        let file = tmp.path().join(name);
        ok(&["index", "export", s(&index), "--codes", s(&file)]);
        std::fs::read(file).unwrap()
    };
    let before = exported("before.npy");
    let other_head = tmp.path().join("other.head");
    lsh_head(
        &other_head,
        "32",
        &["--model", s(&tiny_model()), "--seed", "7"],
    );
    let said = fails(&["index", "rehash", s(&index), "--head", s(&other_head)], 1);
    assert!(
        said.contains("no kept features")
            && said.contains("IngestOptions::keep_features")
            && said.contains("hint: only images added with --keep-features"),
        "{said}"
    );
    assert_eq!(
        exported("after.npy"),
        before,
        "a refused rehash changes nothing"
    );
    // A head for another extractor or dimension.
    let unbound = tmp.path().join("dim8.head");
    lsh_head(&unbound, "16", &["--dim", "8"]);
    let said = fails(&["index", "rehash", s(&kept), "--head", s(&unbound)], 1);
    assert!(said.contains("8-dimensional"), "{said}");
    let data = tmp.path().join("data");
    let mut bound = clustered_data(&data, 2, 10);
    bound.extractor = Some(fake_model(9));
    bound.save(&data).unwrap();
    let foreign = tmp.path().join("foreign.head");
    train(&data, &foreign, "16", "5");
    let said = fails(&["index", "rehash", s(&kept), "--head", s(&foreign)], 1);
    assert!(said.contains("another extractor"), "{said}");
    // A code-only index has nothing to re-code.
    let codes_only = tmp.path().join("codes");
    ok(&["index", "create", s(&codes_only), "--bits", "16"]);
    let said = fails(
        &["index", "rehash", s(&codes_only), "--head", s(&other_head)],
        1,
    );
    assert!(said.contains("codes only"), "{said}");
    // The same index re-coded with a 32-bit head: every code changes length, check passes.
    let said = ok(&["index", "rehash", s(&kept), "--head", s(&other_head)]);
    assert!(said.contains("8 codes changed"), "{said}");
    ok(&["index", "check", s(&kept)]);
}

#[test]
fn eval_uses_the_split_the_head_was_trained_with_unless_told() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dataset = clustered_data(&data, 3, 20);
    let queries = |head: &Path, extra: &[&str]| {
        let mut args = vec!["eval", "--data", s(&data), "--head", s(head), "--json"];
        args.extend(extra);
        let report: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        report["queries"].as_u64().unwrap()
    };
    let half = tmp.path().join("half.head");
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--bits",
        "16",
        "--iters",
        "5",
        "--train-fraction",
        "0.5",
        "--out",
        s(&half),
        "--quiet",
    ];
    args.extend(QUICK);
    ok(&args);
    assert_eq!(queries(&half, &[]), 30, "the recorded split: half of 60");
    assert_eq!(queries(&half, &["--train-fraction", "0.6"]), 24);

    // A seeded split takes other items than the sorted one.
    let exported = |extra: &[&str], dir: &str| {
        let out = tmp.path().join(dir);
        let mut args = vec![
            "eval",
            "--data",
            s(&data),
            "--head",
            s(&half),
            "--export",
            s(&out),
        ];
        args.extend(extra);
        ok(&args);
        std::fs::read_to_string(out.join("paths.txt")).unwrap()
    };
    let sorted = exported(&[], "sorted");
    let seeded = exported(&["--split-seed", "3"], "seeded");
    assert_eq!(sorted.lines().count(), seeded.lines().count());
    assert_ne!(sorted, seeded);

    // Explicit lists of keys; a key that names no item is named.
    let (train_list, test_list) = (tmp.path().join("train.txt"), tmp.path().join("test.txt"));
    std::fs::write(&train_list, dataset.keys[..40].join("\n")).unwrap();
    std::fs::write(&test_list, dataset.keys[40..].join("\n")).unwrap();
    let listed = tmp.path().join("listed.head");
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--bits",
        "16",
        "--iters",
        "5",
        "--train-split",
        s(&train_list),
        "--test-split",
        s(&test_list),
        "--out",
        s(&listed),
        "--quiet",
    ];
    args.extend(QUICK);
    ok(&args);
    assert_eq!(queries(&listed, &[]), 20);
    std::fs::write(&test_list, "item0041\nno-such-item\n").unwrap();
    let said = fails(
        &[
            "eval",
            "--data",
            s(&data),
            "--head",
            s(&listed),
            "--train-split",
            s(&train_list),
            "--test-split",
            s(&test_list),
        ],
        1,
    );
    assert!(
        said.contains("no-such-item") && said.contains("test.txt") && said.contains("paths.txt"),
        "{said}"
    );
}

#[test]
fn training_reports_validation_and_which_head_it_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dataset = clustered_data(&data, 3, 20);
    let head = tmp.path().join("h.head");
    let common = [
        "train",
        "--data",
        s(&data),
        "--bits",
        "16",
        "--iters",
        "20",
        "--validate-every",
        "10",
        "--out",
        s(&head),
        "--hidden",
        "16",
        "--batch",
        "18",
    ];
    // Without a terminal, each validation is a line on standard error.
    let output = milan(&common);
    assert!(output.status.success());
    let said = String::from_utf8(output.stderr).unwrap();
    for step in ["step 10/20", "step 20/20"] {
        assert!(
            said.contains(step) && said.contains("test mAP@20"),
            "{said}"
        );
    }
    // The test split is only watched: the last head is kept. A holdout keeps the best.
    let mut args = common.to_vec();
    args.push("--json");
    let summary: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(summary["kept"], "last");
    assert_eq!(summary["validation"], "test");
    args.extend(["--holdout", "0.25"]);
    let summary: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(summary["kept"], "best");
    assert_eq!(summary["validation"], "held-out");
    assert!(summary["best_validation"]["map"].as_f64().is_some());

    // Saving DATA without an extractor removes an older contract left in the folder.
    let mut bound = dataset.clone();
    bound.extractor = Some(fake_model(3));
    bound.save(&data).unwrap();
    assert!(data.join("extractor.json").exists());
    dataset.save(&data).unwrap();
    assert!(!data.join("extractor.json").exists());
    assert!(Dataset::load(&data).unwrap().extractor.is_none());
}
