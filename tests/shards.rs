//! `milan index import-shards`: shards written here by hand, as docs/shards.md specifies them,
//! merged into a real image index (the tiny test model, an LSH head) and read back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use milan::text::escape_line;
use milan::{Code, Index};
use ndarray::Array2;
use rand::RngExt;

use crate::images::{lsh_head, tiny_model};
use crate::util::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One shard's rows, as an ingest would have coded them.
#[derive(Clone)]
struct Rows {
    codes: Vec<Code>,
    hashes: Vec<[u8; 32]>,
    keys: Vec<String>,
    labels: Option<Vec<String>>,
    features: Option<Array2<f32>>,
    failed: Vec<(String, String)>,
}

/// `n` rows of 16-bit codes drawn from `seed`, with distinct content hashes (from `seed` too).
fn rows(seed: u64, n: usize, dim: Option<usize>) -> Rows {
    let mut rng = rng(seed);
    Rows {
        codes: (0..n).map(|_| random_code(&mut rng, 16)).collect(),
        hashes: (0..n).map(|_| rng.random::<[u8; 32]>()).collect(),
        // A key with a line break and a backslash, escaped in keys.txt.
        keys: (0..n)
            .map(|i| {
                format!(
                    "/photos/s{seed}/{i}{}.png",
                    if i == 1 { "\nb\\c" } else { "" }
                )
            })
            .collect(),
        labels: Some((0..n).map(|i| format!("class{}", i % 3)).collect()),
        features: dim.map(|dim| {
            Array2::from_shape_fn((n, dim), |(i, j)| (seed as f32) + i as f32 * 0.5 - j as f32)
        }),
        failed: Vec::new(),
    }
}

/// The fingerprints and contract of an image index, as a shards manifest records them.
struct Binding {
    head: String,
    model: serde_json::Value,
    dim: usize,
}

fn binding(index: &Path) -> Binding {
    let index = Index::open_read_only(index).unwrap();
    let model = index.model().unwrap();
    Binding {
        head: hex(&index.head().unwrap().fingerprint()),
        model: serde_json::json!({
            "model": model.path,
            "fingerprint": hex(&model.fingerprint),
            "input": model.input,
            "layout": model.layout.name(),
            "size": model.size,
            "pixel_range": model.pixel_range.name(),
            "output": model.output,
            "dim": model.dim,
        }),
        dim: model.dim as usize,
    }
}

fn write_manifest(shards: &Path, binding: &Binding, planned: u64) {
    std::fs::create_dir_all(shards).unwrap();
    let manifest = serde_json::json!({
        "format": "milan-shards",
        "version": 1,
        "bits": 16,
        "head": {"fingerprint": binding.head, "kind": "lsh", "bits": 16},
        "model": binding.model,
        "sources": {"file": "sources.txt", "count": 0, "fingerprint": hex(blake3::hash(b"").as_bytes())},
        "shard_size": 100,
        "shards": planned,
        "done": [],
        "label_from_dir": true,
        "features": false,
    });
    std::fs::write(shards.join("manifest.json"), manifest.to_string()).unwrap();
    std::fs::write(shards.join("sources.txt"), b"").unwrap();
}

fn lines(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("{}\n", escape_line(item)))
        .collect()
}

/// Writes shard `number` under `shards` as an ingest does: files into a temporary folder, then
/// the folder renamed into place.
fn write_shard(shards: &Path, number: u64, binding: &Binding, rows: &Rows) -> PathBuf {
    let tmp = shards.join(format!(".shard-{number:06}.tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    let n = rows.codes.len();
    let code_bytes: Vec<u8> = rows
        .codes
        .iter()
        .flat_map(|c| c.as_bytes().to_vec())
        .collect();
    ndarray_npy::write_npy(
        tmp.join("codes.npy"),
        &Array2::from_shape_vec((n, 2), code_bytes).unwrap(),
    )
    .unwrap();
    ndarray_npy::write_npy(
        tmp.join("content_hashes.npy"),
        &Array2::from_shape_vec((n, 32), rows.hashes.concat()).unwrap(),
    )
    .unwrap();
    std::fs::write(tmp.join("keys.txt"), lines(&rows.keys)).unwrap();
    let mut names = vec!["codes.npy", "content_hashes.npy", "keys.txt"];
    if let Some(labels) = &rows.labels {
        std::fs::write(tmp.join("labels.txt"), lines(labels)).unwrap();
        names.push("labels.txt");
    }
    if let Some(features) = &rows.features {
        ndarray_npy::write_npy(tmp.join("features.npy"), features).unwrap();
        names.push("features.npy");
    }
    let files: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .map(|name| {
            let bytes = std::fs::read(tmp.join(name)).unwrap();
            (
                name.to_string(),
                hex(blake3::hash(&bytes).as_bytes()).into(),
            )
        })
        .collect();
    let failed: Vec<serde_json::Value> = rows
        .failed
        .iter()
        .map(|(path, reason)| serde_json::json!({"path": path, "reason": reason, "detail": "not an image"}))
        .collect();
    let shard = serde_json::json!({
        "format": "milan-shard",
        "version": 1,
        "shard": number,
        "first_source": number * 100,
        "sources": n + failed.len(),
        "rows": n,
        "bits": 16,
        "head": binding.head,
        "model": binding.model["fingerprint"],
        "files": files,
        "failed": failed,
    });
    std::fs::write(tmp.join("shard.json"), shard.to_string()).unwrap();
    let dir = shards.join(format!("shard-{number:06}"));
    std::fs::rename(&tmp, &dir).unwrap();
    dir
}

/// An image index for the tiny model and a 16-bit LSH head (seed `seed`) under `root`.
fn image_index(root: &Path, name: &str, seed: &str) -> PathBuf {
    let head = root.join(format!("{name}.head"));
    lsh_head(&head, "16", &["--model", s(&tiny_model()), "--seed", seed]);
    let dir = root.join(name);
    ok(&[
        "index",
        "create",
        s(&dir),
        "--model",
        s(&tiny_model()),
        "--head",
        s(&head),
    ]);
    dir
}

fn import_json(dir: &Path, shards: &Path, status: i32) -> serde_json::Value {
    let args = ["index", "import-shards", s(dir), s(shards), "--json"];
    json_output(&args, &milan(&args), status)
}

/// A stored item: code, key, label, content hash.
type Stored = (Code, Option<String>, Option<String>, Option<[u8; 32]>);

/// Every live item of `dir` in id order.
fn items(dir: &Path) -> Vec<Stored> {
    let index = Index::open_read_only(dir).unwrap();
    let reader = index.reader().unwrap();
    reader
        .ids()
        .map(|id| {
            let item = reader.item(id).unwrap().unwrap();
            (
                reader.code(id).unwrap(),
                item.key,
                item.label,
                item.content_hash,
            )
        })
        .collect()
}

#[test]
fn shards_merge_with_keys_labels_and_hashes_and_a_rerun_skips_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = image_index(tmp.path(), "idx", "1");
    let binding = binding(&dir);
    let shards = tmp.path().join("shards");
    write_manifest(&shards, &binding, 3);
    let (a, mut b, c) = (rows(1, 50, None), rows(2, 40, None), rows(3, 30, None));
    // One image in shard 1 has the same content as one in shard 0: indexed once, at its first.
    b.hashes[7] = a.hashes[3];
    write_shard(&shards, 0, &binding, &a);
    write_shard(&shards, 1, &binding, &b);
    // A shard still being written (a temporary name) is not a shard yet.
    std::fs::create_dir_all(shards.join(".shard-000002.tmp-99")).unwrap();

    // Two of three planned shards: they are imported, and the plan is reported unfinished.
    let args = ["index", "import-shards", s(&dir), s(&shards)];
    let output = milan(&args);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("2 of the 3 shards"));
    assert_eq!(len_of(&dir), 89);

    write_shard(&shards, 2, &binding, &c);
    let report = import_json(&dir, &shards, 0);
    assert_eq!(report["imported"], 1, "{report}");
    assert_eq!(report["imported_before"], 2, "{report}");
    assert_eq!(report["added"], 30, "{report}");

    let mut expected = Vec::new();
    for (shard, rows) in [&a, &b, &c].into_iter().enumerate() {
        for i in 0..rows.codes.len() {
            if shard == 1 && i == 7 {
                continue;
            }
            expected.push((
                rows.codes[i].clone(),
                Some(rows.keys[i].clone()),
                Some(rows.labels.as_ref().unwrap()[i].clone()),
                Some(rows.hashes[i]),
            ));
        }
    }
    assert_eq!(items(&dir), expected);
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));

    // Everything imported: a re-run adds nothing.
    let report = import_json(&dir, &shards, 0);
    assert_eq!(
        (
            report["imported"].as_u64(),
            report["imported_before"].as_u64(),
            report["added"].as_u64()
        ),
        (Some(0), Some(3), Some(0)),
        "{report}"
    );
    assert_eq!(items(&dir), expected);

    // The same shards into another index that already holds some of their content: skipped.
    let other = image_index(tmp.path(), "other", "1");
    let index = Index::open(&other).unwrap();
    let mut writer = index.writer().unwrap();
    writer
        .add(
            &a.codes[0],
            milan::Item {
                content_hash: Some(a.hashes[0]),
                ..milan::Item::default()
            },
        )
        .unwrap();
    writer.commit().unwrap();
    drop(index);
    let report = import_json(&other, &shards, 0);
    assert_eq!(
        (
            report["added"].as_u64(),
            report["already_indexed"].as_u64(),
            report["duplicates"].as_u64()
        ),
        (Some(118), Some(1), Some(1)),
        "{report}"
    );
}

#[test]
fn kept_features_and_failed_images_come_through() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = image_index(tmp.path(), "idx", "1");
    let binding = binding(&dir);
    let shards = tmp.path().join("shards");
    write_manifest(&shards, &binding, 1);
    let mut a = rows(4, 20, Some(binding.dim));
    a.labels = None;
    a.failed = vec![("/photos/broken\n.png".into(), "corrupt".into())];
    write_shard(&shards, 0, &binding, &a);
    let report = import_json(&dir, &shards, 3);
    assert_eq!(report["added"], 20, "{report}");
    assert_eq!(
        report["failed"][0]["path"], "/photos/broken\n.png",
        "{report}"
    );
    assert_eq!(report["failed_by_reason"]["corrupt"], 1, "{report}");
    let text =
        String::from_utf8(milan(&["index", "import-shards", s(&dir), s(&shards)]).stdout).unwrap();
    assert!(text.contains("/photos/broken\\n.png: corrupt"), "{text}");

    let index = Index::open_read_only(&dir).unwrap();
    let reader = index.reader().unwrap();
    let features = a.features.as_ref().unwrap();
    for id in reader.ids() {
        let kept = reader.features(id, binding.dim as u32).unwrap().unwrap();
        assert_eq!(kept, features.row(id as usize).to_vec());
        assert_eq!(reader.item(id).unwrap().unwrap().label, None);
    }
    // The index keeps features now, so it can be re-coded from them.
    let head = tmp.path().join("other.head");
    lsh_head(&head, "16", &["--model", s(&tiny_model()), "--seed", "9"]);
    ok(&["index", "rehash", s(&dir), "--head", s(&head)]);
}

#[test]
fn another_head_or_model_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = image_index(tmp.path(), "idx", "1");
    let other = image_index(tmp.path(), "other", "2");
    let shards = tmp.path().join("shards");
    let made_with = binding(&dir);
    write_manifest(&shards, &made_with, 1);
    write_shard(&shards, 0, &made_with, &rows(5, 10, None));

    let err = fails(&["index", "import-shards", s(&other), s(&shards)], 1);
    let theirs = &made_with.head[..16];
    let ours = &binding(&other).head[..16];
    assert!(err.contains(theirs) && err.contains(ours), "{err}");
    assert!(err.contains("head"), "{err}");
    assert_eq!(len_of(&other), 0);

    // A manifest for another model (another fingerprint) is refused the same way.
    let mut wrong = binding(&dir);
    wrong.model["fingerprint"] = hex(&[7u8; 32]).into();
    write_manifest(&shards, &wrong, 1);
    let err = fails(&["index", "import-shards", s(&dir), s(&shards)], 1);
    assert!(
        err.contains("0707070707070707") && err.contains("model"),
        "{err}"
    );

    // A code-only index, and a folder that is not one of shards, are refused by name.
    let codes = tmp.path().join("codes");
    ok(&["index", "create", s(&codes), "--bits", "16"]);
    write_manifest(&shards, &made_with, 1);
    let err = fails(&["index", "import-shards", s(&codes), s(&shards)], 1);
    assert!(err.contains("stores codes only"), "{err}");
    let err = fails(&["index", "import-shards", s(&dir), s(tmp.path())], 1);
    assert!(err.contains("manifest.json"), "{err}");
    assert_eq!(len_of(&dir), 0);
}

#[test]
fn a_damaged_shard_is_named_and_what_is_stored_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = image_index(tmp.path(), "idx", "1");
    let binding = binding(&dir);
    let shards = tmp.path().join("shards");
    write_manifest(&shards, &binding, 3);
    write_shard(&shards, 0, &binding, &rows(6, 25, None));
    // One of three planned shards: imported, and the run says the plan is unfinished.
    fails(
        &["index", "import-shards", s(&dir), s(&shards), "--quiet"],
        3,
    );
    assert_eq!(len_of(&dir), 25);

    // Shard 1 sound, shard 2 with one flipped byte in its codes: nothing of either is imported.
    write_shard(&shards, 1, &binding, &rows(7, 25, None));
    let damaged = write_shard(&shards, 2, &binding, &rows(8, 25, None));
    let codes = damaged.join("codes.npy");
    let mut bytes = std::fs::read(&codes).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&codes, bytes).unwrap();
    let err = fails(&["index", "import-shards", s(&dir), s(&shards)], 1);
    assert!(
        err.contains("shard-000002/codes.npy") && err.contains("damaged"),
        "{err}"
    );
    assert_eq!(len_of(&dir), 25);

    // A shard.json that does not parse, and one whose keys are a line short.
    std::fs::write(damaged.join("shard.json"), b"{").unwrap();
    let err = fails(&["index", "import-shards", s(&dir), s(&shards)], 1);
    assert!(err.contains("shard-000002/shard.json"), "{err}");
    std::fs::remove_dir_all(&damaged).unwrap();
    let mut short = rows(8, 25, None);
    short.keys.pop();
    write_shard(&shards, 2, &binding, &short);
    let err = fails(&["index", "import-shards", s(&dir), s(&shards)], 1);
    assert!(
        err.contains("shard-000002/keys.txt") && err.contains("24 lines"),
        "{err}"
    );
    assert_eq!(len_of(&dir), 25);

    // Content hashes of the wrong shape, recorded as they are: named with the shape expected.
    std::fs::remove_dir_all(shards.join("shard-000002")).unwrap();
    let dir2 = write_shard(&shards, 2, &binding, &rows(8, 25, None));
    ndarray_npy::write_npy(
        dir2.join("content_hashes.npy"),
        &Array2::<u8>::zeros((25, 16)),
    )
    .unwrap();
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir2.join("shard.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir2.join("content_hashes.npy")).unwrap();
    record["files"]["content_hashes.npy"] = hex(blake3::hash(&bytes).as_bytes()).into();
    std::fs::write(dir2.join("shard.json"), record.to_string()).unwrap();
    let err = fails(&["index", "import-shards", s(&dir), s(&shards)], 1);
    assert!(
        err.contains("shard-000002/content_hashes.npy") && err.contains("uint8 [25, 32]"),
        "{err}"
    );
    assert_eq!(len_of(&dir), 25);

    // Written again, the shard imports, after the rest.
    std::fs::remove_dir_all(shards.join("shard-000002")).unwrap();
    write_shard(&shards, 2, &binding, &rows(8, 25, None));
    let report = import_json(&dir, &shards, 0);
    assert_eq!(
        (report["added"].as_u64(), report["len"].as_u64()),
        (Some(50), Some(75))
    );
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
}

#[test]
fn a_killed_import_keeps_whole_commits_and_a_rerun_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = image_index(tmp.path(), "idx", "1");
    let binding = binding(&dir);
    let shards = tmp.path().join("shards");
    write_manifest(&shards, &binding, 4);
    let parts: Vec<Rows> = (0..4).map(|i| rows(20 + i, 15_000, None)).collect();
    for (i, part) in parts.iter().enumerate() {
        write_shard(&shards, i as u64, &binding, part);
    }
    let all: Vec<Code> = parts.iter().flat_map(|p| p.codes.clone()).collect();
    let import = [
        "index",
        "import-shards",
        s(&dir),
        s(&shards),
        "--batch-size",
        "100",
        "--quiet",
    ];
    let mut interrupted = 0;
    for delay_ms in [300, 900, 1800] {
        if !kill_after(&import, Duration::from_millis(delay_ms)) {
            interrupted += 1;
        }
        // Whole commits only, in order: every row a commit of 100 or a shard's end.
        let index = Index::open(&dir).unwrap();
        let len = index.len();
        assert_eq!(len % 100, 0, "{len} codes: a partial commit survived");
        assert!(index.verify().unwrap().is_ok());
        let reader = index.reader().unwrap();
        for id in (0..len).step_by(7) {
            assert_eq!(reader.code(id).unwrap(), all[id as usize]);
        }
    }
    assert!(interrupted > 0, "no kill landed before the import ended");
    ok(&import);
    let got = items(&dir);
    assert_eq!(got.len(), all.len());
    assert!(got.iter().zip(&all).all(|(item, code)| item.0 == *code));
    let report = import_json(&dir, &shards, 0);
    assert_eq!(report["imported_before"], 4, "{report}");
}
