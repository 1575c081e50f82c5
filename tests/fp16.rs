//! The fp16 variant of the tiny test model (`tests/data/tiny_extractor_fp16.onnx`, written by
//! scripts/model/make_tiny_model.py through scripts/model/to_fp16.py): the float32 model's
//! contract with its own fingerprint, features close to the float32 ones but not equal, and an
//! index bound to one variant refusing the other.

use std::path::{Path, PathBuf};

use milan::extract::{read_image, write_input, Device, Extractor, ExtractorOptions};

use crate::images::{create_image_index, lsh_head, tiny_model, write_image_set};
use crate::util::*;

/// Largest relative L2 error of the fp16 variant's features allowed here. make_tiny_model.py
/// measures 2e-4 to 5e-4 on its own test images; float16 keeps about 3 decimal digits.
const TOLERANCE: f32 = 1e-2;

fn tiny_fp16_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_extractor_fp16.onnx")
}

fn open_cpu(model: PathBuf) -> Extractor {
    Extractor::open(&ExtractorOptions {
        device: Device::Cpu,
        ..ExtractorOptions::new(model)
    })
    .unwrap()
}

#[test]
fn the_fp16_variant_has_the_same_contract_and_another_fingerprint() {
    let (fp32, fp16) = (open_cpu(tiny_model()), open_cpu(tiny_fp16_model()));
    let (fp32, fp16) = (fp32.contract(), fp16.contract());
    assert_eq!(
        fp16.fingerprint,
        *blake3::hash(&std::fs::read(tiny_fp16_model()).unwrap()).as_bytes()
    );
    assert_ne!(fp16.fingerprint, fp32.fingerprint);
    // Input name and float32 feeding, layout, size, pixel range, output and dimension: all as
    // the float32 model's, so the same images go in and the same shape comes out.
    let same = milan::ExtractorContract {
        fingerprint: fp32.fingerprint,
        path: fp32.path.clone(),
        ..fp16.clone()
    };
    assert_eq!(&same, fp32);
    assert_eq!((fp16.output.as_str(), fp16.dim), ("features", 16));
}

#[test]
fn fp16_features_are_close_to_the_float32_ones_but_not_equal() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_image_set(tmp.path(), 3);
    let (mut fp32, mut fp16) = (open_cpu(tiny_model()), open_cpu(tiny_fp16_model()));
    let contract = fp32.contract().clone();
    let mut input = vec![0.0f32; files.len() * fp32.input_len()];
    for (file, out) in files.iter().zip(input.chunks_mut(fp32.input_len())) {
        let image = read_image(file).unwrap().image;
        write_input(
            &image,
            contract.size,
            contract.layout,
            contract.pixel_range,
            out,
        );
    }
    let (a, b) = (
        fp32.run(&input, files.len()).unwrap(),
        fp16.run(&input, files.len()).unwrap(),
    );
    let mut worst = 0.0f32;
    for (file, (x, y)) in files.iter().zip(a.rows().into_iter().zip(b.rows())) {
        let norm = x.dot(&x).sqrt();
        let error = (&x - &y).mapv(|d| d * d).sum().sqrt() / norm;
        assert!(
            norm > 0.0 && error < TOLERANCE,
            "{file:?}: relative error {error}"
        );
        worst = worst.max(error);
    }
    // Bit-identical features would mean the file is not the fp16 variant at all.
    assert!(
        worst > 0.0,
        "the fp16 model gives exactly the float32 features"
    );
}

#[test]
fn an_index_of_one_variant_refuses_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    write_image_set(&images, 2);
    let (head, index) = (tmp.path().join("lsh.head"), tmp.path().join("idx"));
    lsh_head(&head, "16", &["--model", s(&tiny_model())]);
    create_image_index(&index, &head, &images, &[]);
    let fp16 = tiny_fp16_model();
    let err = fails(
        &[
            "index",
            "add",
            s(&index),
            s(&images.join("red")),
            "--model",
            s(&fp16),
        ],
        1,
    );
    let short = |model: &Path| {
        let bytes = std::fs::read(model).unwrap();
        blake3::hash(&bytes).to_hex()[..16].to_string()
    };
    assert!(
        err.contains("was built with model")
            && err.contains("tiny_extractor_fp16.onnx")
            && err.contains(&short(&tiny_model()))
            && err.contains(&short(&fp16)),
        "{err}"
    );
    // A head made for the float32 model is refused for the fp16 one, too.
    let err = fails(
        &[
            "index",
            "create",
            s(&tmp.path().join("idx16")),
            "--model",
            s(&fp16),
            "--head",
            s(&head),
        ],
        1,
    );
    assert!(err.contains("made for another extractor"), "{err}");
}
