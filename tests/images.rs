//! Images end to end with the tiny test models in tests/data: every supported format, every kind
//! of bad file, re-runs, kills, model and head mismatches, and query by image.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, Rgb, RgbImage};
use milan::extract::{Extractor, ExtractorOptions};
use milan::ExtractError;
use milan::InputLayout;
use rand::RngExt;

use crate::util::*;

pub fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_extractor.onnx")
}

fn tiny_nhwc_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_extractor_nhwc.onnx")
}

/// `milan head init --lsh --bits BITS` into `out`, with `source` (`--model M` or `--dim D`, and
/// any further flags such as `--seed`).
pub fn lsh_head(out: &Path, bits: &str, source: &[&str]) {
    let mut args = vec!["head", "init", "--lsh", "--bits", bits, "--out", s(out)];
    args.extend(source);
    ok(&args);
}

/// Under `root`, a 16-bit LSH head for the tiny model and an image index coded by it holding
/// `images`, added recursively with `add_flags`. Returns the head file and the index.
pub fn lsh_image_index(root: &Path, images: &Path, add_flags: &[&str]) -> (PathBuf, PathBuf) {
    let (head, index) = (root.join("lsh.head"), root.join("idx"));
    lsh_head(&head, "16", &["--model", s(&tiny_model())]);
    create_image_index(&index, &head, images, add_flags);
    (head, index)
}

/// `index`, created for the tiny model and `head`, holding `images` added recursively with
/// `add_flags`.
pub fn create_image_index(index: &Path, head: &Path, images: &Path, add_flags: &[&str]) {
    ok(&[
        "index",
        "create",
        s(index),
        "--model",
        s(&tiny_model()),
        "--head",
        s(head),
    ]);
    let mut args = vec!["index", "add", s(index), s(images), "-r", "--quiet"];
    args.extend(add_flags);
    ok(&args);
}

/// A noisy image of one of two classes: reddish with horizontal stripes, or bluish with vertical.
fn class_image(class: usize, seed: u64, width: u32, height: u32) -> RgbImage {
    let mut rng = rng(seed);
    RgbImage::from_fn(width, height, |x, y| {
        let stripe = if class == 0 { y / 4 % 2 } else { x / 4 % 2 } as u8;
        let noise: u8 = rng.random_range(0..40);
        match class {
            0 => Rgb([200 + noise / 2, 30 + noise + 60 * stripe, 30]),
            _ => Rgb([30, 40 + noise + 60 * stripe, 190 + noise / 2]),
        }
    })
}

/// Writes two class folders with images in every supported format; returns the good files.
pub fn write_image_set(root: &Path, per_class: usize) -> Vec<PathBuf> {
    let formats = ["png", "jpg", "tif", "webp", "bmp", "gif"];
    let mut files = Vec::new();
    for (class, name) in ["red", "blue"].iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let format = formats[i % formats.len()];
            let path = dir.join(format!("{name}{i:03}.{format}"));
            let image = class_image(
                class,
                (class * 1000 + i) as u64,
                40 + (i as u32 % 3) * 12,
                36,
            );
            image.save(&path).unwrap();
            files.push(path);
        }
    }
    files
}

/// A temporary folder whose `images` subfolder holds a `write_image_set` of `per_class` images a
/// class; returns the folder, `images` and the good files.
pub fn temp_image_set(per_class: usize) -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let files = write_image_set(&images, per_class);
    (tmp, images, files)
}

/// Writes one file of each kind of bad input into `dir`.
fn write_bad_files(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    std::fs::write(dir.join("notes.png"), b"these are notes, not pixels").unwrap();
    let mut png = Vec::new();
    class_image(0, 9, 64, 64)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(dir.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    // Whole, but damaged inside: the pixel data's checksum fails.
    let mut damaged = png.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xFF;
    std::fs::write(dir.join("damaged.png"), damaged).unwrap();
    // A valid PNG whose header claims 100000 x 100000 pixels: a decompression bomb.
    let mut bomb = png.clone();
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32fast::hash(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(dir.join("bomb.png"), bomb).unwrap();
}

#[test]
fn the_extractor_follows_the_model_contract() {
    let mut extractor = Extractor::open(&ExtractorOptions::new(tiny_model())).unwrap();
    let contract = extractor.contract().clone();
    assert_eq!(
        (contract.size, contract.layout, contract.dim),
        (32, InputLayout::Nchw, 16)
    );
    assert_eq!(
        contract.fingerprint,
        *blake3::hash(&std::fs::read(tiny_model()).unwrap()).as_bytes()
    );
    assert_eq!(extractor.device(), "cpu");
    // The 4-D output, pooled here, equals the model's own pooled output.
    let mut fmap = Extractor::open(&ExtractorOptions {
        output: Some("fmap".into()),
        ..ExtractorOptions::new(tiny_model())
    })
    .unwrap();
    assert_eq!(fmap.contract().dim, 16);
    let input: Vec<f32> = (0..2 * extractor.input_len())
        .map(|i| ((i % 97) as f32 / 97.0) - 0.5)
        .collect();
    let a = extractor.run(&input, 2).unwrap();
    let b = fmap.run(&input, 2).unwrap();
    assert_eq!(a.dim(), (2, 16));
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() < 1e-4 * (1.0 + x.abs()), "{x} vs {y}");
    }
    assert!(
        a.row(0) != a.row(1),
        "different images give different features"
    );
    let nhwc = Extractor::open(&ExtractorOptions::new(tiny_nhwc_model())).unwrap();
    assert_eq!(nhwc.contract().layout, InputLayout::Nhwc);
    let wrong = Extractor::open(&ExtractorOptions {
        output: Some("logits".into()),
        ..ExtractorOptions::new(tiny_model())
    })
    .unwrap_err();
    assert!(wrong.to_string().contains("features, fmap"), "{wrong}");
}

#[test]
fn not_a_model_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("fake.onnx");
    std::fs::write(&fake, b"not a protobuf").unwrap();
    let err = Extractor::open(&ExtractorOptions::new(&fake)).unwrap_err();
    assert!(
        matches!(err, milan::Error::Extract(ExtractError::Model { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("fake.onnx"), "{err}");
}

#[test]
fn add_and_query_images_end_to_end() {
    let (tmp, images, good) = temp_image_set(12);
    write_bad_files(&images.join("bad"));
    // Formats the encoder above does not cover: 16-bit greyscale and transparent RGBA.
    DynamicImage::ImageLuma16(ImageBuffer::from_fn(30, 30, |x, _| {
        image::Luma([(x * 2000) as u16])
    }))
    .save(images.join("red/grey16.png"))
    .unwrap();
    DynamicImage::ImageRgba8(ImageBuffer::from_fn(30, 30, |x, _| {
        image::Rgba([200, 20, 20, (x * 8) as u8])
    }))
    .save(images.join("red/alpha.png"))
    .unwrap();
    let (head, index) = (tmp.path().join("h.head"), tmp.path().join("idx"));
    let model = tiny_model();
    ok(&[
        "head",
        "init",
        "--lsh",
        "--bits",
        "32",
        "--model",
        s(&model),
        "--out",
        s(&head),
        "--seed",
        "3",
    ]);
    ok(&[
        "index",
        "create",
        s(&index),
        "--model",
        s(&model),
        "--head",
        s(&head),
    ]);
    let args = [
        "index",
        "add",
        s(&index),
        s(&images),
        "--recursive",
        "--label-from-dir",
        "--json",
        "--batch-size",
        "5",
    ];
    let report = json_output(&args, &milan(&args), 3);
    assert_eq!(report["added"], good.len() + 2, "{report}");
    for reason in ["empty", "unsupported", "truncated", "corrupt", "too_large"] {
        assert_eq!(report["failed_by_reason"][reason], 1, "{reason}: {report}");
    }
    assert_eq!(report["device"], "cpu");
    assert!(ok(&["index", "check", s(&index)]).contains("ok"));

    // A second run adds nothing: every file's content is already there.
    let again = milan(&[
        "index",
        "add",
        s(&index),
        s(&images.join("red")),
        s(&images.join("blue")),
        "--json",
    ]);
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (again["added"].as_u64(), again["already_indexed"].as_u64()),
        (Some(0), Some(good.len() as u64 + 2))
    );

    let query = &good[3];
    let out = ok(&[
        "query",
        s(&index),
        "--image",
        s(query),
        "--top-k",
        "5",
        "--json",
    ]);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // An untrained head gives many images the same code: the query is among those at distance 0.
    let results = line["results"].as_array().unwrap();
    assert_eq!(results[0]["distance"], 0);
    let own = ok(&[
        "query",
        s(&index),
        "--image",
        s(query),
        "--radius",
        "0",
        "--json",
    ]);
    assert!(own.contains("red003.webp\""), "{own}");

    // The head is LSH on a random network: still, same-class images should mostly come first.
    let tops = ok(&[
        "query",
        s(&index),
        "--image",
        s(&good[0]),
        "--top-k",
        "8",
        "--json",
    ]);
    let line: serde_json::Value = serde_json::from_str(tops.trim()).unwrap();
    let red = line["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["key"].as_str().unwrap().contains("/red/"))
        .count();
    assert!(red >= 5, "{line}");

    let err = fails(
        &[
            "query",
            s(&index),
            "--image",
            s(&images.join("bad/notes.png")),
            "--top-k",
            "3",
        ],
        1,
    );
    assert!(
        err.contains("notes.png") && err.contains("not an image"),
        "{err}"
    );
}

#[test]
fn mismatched_models_and_heads_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, other) = (tiny_model(), tiny_nhwc_model());
    let (head, other_head) = (tmp.path().join("a.head"), tmp.path().join("b.head"));
    ok(&[
        "head",
        "init",
        "--lsh",
        "--bits",
        "16",
        "--model",
        s(&model),
        "--out",
        s(&head),
    ]);
    ok(&[
        "head",
        "init",
        "--lsh",
        "--bits",
        "16",
        "--model",
        s(&other),
        "--out",
        s(&other_head),
    ]);
    let err = fails(
        &[
            "index",
            "create",
            s(&tmp.path().join("x")),
            "--model",
            s(&model),
            "--head",
            s(&other_head),
        ],
        1,
    );
    assert!(err.contains("made for another extractor"), "{err}");
    let wide = tmp.path().join("wide.head");
    ok(&[
        "head",
        "init",
        "--lsh",
        "--bits",
        "16",
        "--dim",
        "99",
        "--out",
        s(&wide),
    ]);
    let err = fails(
        &[
            "index",
            "create",
            s(&tmp.path().join("y")),
            "--model",
            s(&model),
            "--head",
            s(&wide),
        ],
        1,
    );
    assert!(err.contains("99-dimensional"), "{err}");
    let index = tmp.path().join("idx");
    ok(&[
        "index",
        "create",
        s(&index),
        "--model",
        s(&model),
        "--head",
        s(&head),
    ]);
    let images = tmp.path().join("images");
    write_image_set(&images, 2);
    let err = fails(
        &[
            "index",
            "add",
            s(&index),
            s(&images.join("red")),
            "--model",
            s(&other),
        ],
        1,
    );
    assert!(err.contains("was built with model"), "{err}");
    let err = fails(
        &[
            "query",
            s(&index),
            "--image",
            s(&images.join("red/red000.png")),
            "--top-k",
            "1",
            "--model",
            s(&other),
        ],
        1,
    );
    assert!(err.contains("was built with model"), "{err}");
    let codes_only = tmp.path().join("codes");
    ok(&["index", "create", s(&codes_only), "--bits", "16"]);
    let err = fails(&["index", "add", s(&codes_only), s(&images)], 1);
    assert!(
        err.contains("stores codes only") && err.contains("--model"),
        "{err}"
    );
    let garbage = tmp.path().join("garbage.head");
    std::fs::write(&garbage, b"MILANHD\0garbage").unwrap();
    let err = fails(
        &[
            "index",
            "create",
            s(&tmp.path().join("z")),
            "--model",
            s(&model),
            "--head",
            s(&garbage),
        ],
        1,
    );
    assert!(
        err.contains("garbage.head") && err.contains("not a usable hash head"),
        "{err}"
    );
    // Nothing but the database (and the writers' lock files) in the index directory.
    let files = std::fs::read_dir(&index)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with("writer."))
        .collect::<Vec<_>>();
    assert_eq!(files, [milan::format::DATABASE_FILE]);
}

#[test]
fn a_killed_add_keeps_its_commits_and_a_rerun_finishes() {
    let (tmp, images, good) = temp_image_set(400);
    let (head, index) = (tmp.path().join("h.head"), tmp.path().join("idx"));
    let model = tiny_model();
    ok(&[
        "head",
        "init",
        "--lsh",
        "--bits",
        "16",
        "--dim",
        "16",
        "--out",
        s(&head),
    ]);
    ok(&[
        "index",
        "create",
        s(&index),
        "--model",
        s(&model),
        "--head",
        s(&head),
    ]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_milan"))
        .args([
            "index",
            "add",
            s(&index),
            s(&images),
            "-r",
            "--quiet",
            "--batch-size",
            "10",
            "--commit-every",
            "50",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    let opened = milan::Index::open(&index).unwrap();
    let len = opened.len();
    assert!(len.is_multiple_of(50) || len == good.len() as u64, "{len}");
    assert!(opened.verify().unwrap().is_ok());
    drop(opened);
    ok(&["index", "add", s(&index), s(&images), "-r", "--quiet"]);
    let reopened = milan::Index::open_read_only(&index).unwrap();
    assert_eq!(reopened.len(), good.len() as u64);
}

#[test]
fn the_results_page_shows_every_image_in_a_real_browser() {
    let (tmp, images, good) = temp_image_set(6);
    let page = tmp.path().join("page.html");
    let (_, index) = lsh_image_index(tmp.path(), &images, &["--label-from-dir"]);
    ok(&[
        "query",
        s(&index),
        "--top-k",
        "9",
        "--html",
        s(&page),
        "--image",
        s(&good[0]),
        "--image",
        s(&good[7]),
    ]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("class=\"query\"").count(), 2);
    // Two queries with 9 results each, every picture embedded: nothing refers to the disk.
    assert_eq!(
        html.matches("<img src=\"data:image/jpeg;base64,").count(),
        20
    );
    // Each query shares its label with 6 images; the rest of its top 9 are the other class.
    assert!(
        html.matches("class=\"wrong\"").count() >= 6,
        "wrong-label results framed red"
    );

    let dom = render_in_browser(&page, &tmp.path().join("profile"));
    assert!(
        dom.contains("data-images-loaded=\"20/20\""),
        "not every image loaded: {}",
        &dom[dom.len().saturating_sub(300)..]
    );
}

/// The DOM of `page` after headless Chromium loaded it (the pages set `data-images-loaded`).
pub fn render_in_browser(page: &Path, profile: &Path) -> String {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect("Chromium is needed for this test: `make test-deps` installs Debian's package");
    let output = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn extract_writes_features_labels_and_the_contract() {
    let (tmp, images, good) = temp_image_set(5);
    std::fs::write(images.join("blue/broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let data = tmp.path().join("data");
    let model = tiny_model();
    let output = milan(&extract_args(&model, &images, &data));
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("broken.png"));
    let features: ndarray::Array2<f32> = ndarray_npy::read_npy(data.join("features.npy")).unwrap();
    let labels: ndarray::Array1<i64> = ndarray_npy::read_npy(data.join("labels.npy")).unwrap();
    assert_eq!(features.dim(), (good.len(), 16));
    let classes = std::fs::read_to_string(data.join("classes.txt")).unwrap();
    assert_eq!(classes, "blue\nred\n");
    let paths = std::fs::read_to_string(data.join("paths.txt")).unwrap();
    for (path, label) in paths.lines().zip(labels.iter()) {
        let expected = if path.contains("/red/") { 1 } else { 0 };
        assert_eq!(*label, expected, "{path}");
    }
    // The same image extracted alone gives the same row.
    let mut extractor = Extractor::open(&ExtractorOptions::new(&model)).unwrap();
    let first = paths.lines().next().unwrap();
    let index = milan::Index::builder(16)
        .images(
            extractor.contract().clone(),
            milan::HashHead::lsh(16, 16, 1, None, None).unwrap(),
        )
        .create(tmp.path().join("idx"))
        .unwrap();
    let row = milan::ingest::code_image(&index, &mut extractor, Path::new(first))
        .unwrap()
        .features;
    for (a, b) in row.iter().zip(features.row(0)) {
        assert!((a - b).abs() < 1e-5);
    }
    let about: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("extractor.json")).unwrap())
            .unwrap();
    assert_eq!(about["dim"], 16);
    assert_eq!(about["layout"], "nchw");
    let manifest = tmp.path().join("m.csv");
    std::fs::write(
        &manifest,
        format!("{},x\nimages/blue/blue000.png,y\n", s(&good[0])),
    )
    .unwrap();
    ok(&[
        "extract",
        "--model",
        s(&model),
        "--manifest",
        s(&manifest),
        "--out",
        s(&tmp.path().join("d2")),
        "--quiet",
    ]);
}

#[test]
fn kept_features_follow_their_codes() {
    let (tmp, images, good) = temp_image_set(3);
    let (_, index_dir) = lsh_image_index(tmp.path(), &images, &["--keep-features"]);
    let index = milan::Index::open(&index_dir).unwrap();
    let reader = index.reader().unwrap();
    let kept = reader.features(0, 16).unwrap().expect("features kept");
    // The kept features re-code to the stored code.
    let code = index
        .head()
        .unwrap()
        .codes(ndarray::ArrayView2::from_shape((1, 16), &kept).unwrap())
        .unwrap();
    assert_eq!(code[0], reader.code(0).unwrap());
    drop(reader);
    let mut writer = index.writer().unwrap();
    writer.delete(0).unwrap();
    assert!(matches!(
        writer.add_with_features(&code[0], milan::Item::default(), vec![0.0; 3]),
        Err(milan::Error::Extract(ExtractError::FeatureDim {
            expected: 16,
            got: 3
        }))
    ));
    writer.commit().unwrap();
    assert!(index.reader().unwrap().features(0, 16).unwrap().is_none());
    assert!(index.verify().unwrap().is_ok());
    assert_eq!(index.len(), good.len() as u64 - 1);
}

#[test]
fn a_file_that_is_not_onnx_runtime_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    // A fresh process: the runtime is loaded once per process.
    let err = fails(
        &[
            "head",
            "init",
            "--lsh",
            "--bits",
            "8",
            "--model",
            s(&tiny_model()),
            "--ort-lib",
            s(&fake),
            "--out",
            s(&tmp.path().join("h")),
        ],
        1,
    );
    assert!(
        err.contains("libonnxruntime.so") && err.contains("cannot load ONNX Runtime"),
        "{err}"
    );
    let err = fails(
        &[
            "index",
            "create",
            s(&tmp.path().join("i")),
            "--model",
            s(&tiny_model()),
            "--head",
            s(&tmp.path().join("missing.head")),
        ],
        1,
    );
    assert!(err.contains("missing.head"), "{err}");
}

#[test]
fn a_handle_stops_coding_images_once_another_replaced_the_head() {
    let (tmp, images, _) = temp_image_set(2);
    let (_, index_dir) = lsh_image_index(tmp.path(), &images, &["--keep-features"]);
    let mut extractor = Extractor::open(&ExtractorOptions::new(tiny_model())).unwrap();
    let image = images.join("red/red000.png");
    // Two handles on one index, as two processes would hold it.
    let held = milan::Index::open(&index_dir).unwrap();
    assert!(milan::ingest::code_image(&held, &mut extractor, &image).is_ok());
    let other = milan::Index::open(&index_dir).unwrap();
    let new_head = tmp.path().join("new.head");
    lsh_head(
        &new_head,
        "16",
        &["--model", s(&tiny_model()), "--seed", "7"],
    );
    other
        .rehash(milan::HashHead::read(&new_head).unwrap())
        .unwrap();
    // The held handle's head no longer makes the index's codes: it refuses to code images (and
    // to add them) with it, at once, and reads the re-coded index.
    let err = milan::ingest::code_image(&held, &mut extractor, &image).unwrap_err();
    assert!(
        matches!(
            &err,
            milan::Error::Extract(ExtractError::Mismatch {
                reason: milan::Mismatch::HeadReplaced,
                ..
            })
        ),
        "{err}"
    );
    let reader = held.reader().unwrap();
    assert_eq!(
        reader.code(0).unwrap(),
        other.reader().unwrap().code(0).unwrap()
    );
    // A fresh open codes with the new head: the image's stored code again.
    let reopened = milan::Index::open_read_only(&index_dir).unwrap();
    let coded = milan::ingest::code_image(&reopened, &mut extractor, &image).unwrap();
    let id = reader
        .ids()
        .find(|&id| {
            let key = reader.item(id).unwrap().unwrap().key.unwrap();
            key.ends_with("red000.png")
        })
        .unwrap();
    assert_eq!(Some(coded.code), reader.code(id));
}
