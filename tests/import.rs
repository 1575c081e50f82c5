//! `milan index import` and `index export` as users meet them: lying .npy headers, bad keys,
//! interrupted and repeated imports, keys that are not plain text, outputs aimed at the index.

use std::path::Path;
use std::process::Command;

use milan::{Index, Item};

use crate::util::*;

/// A v1 .npy header for `shape` (as numpy writes it), followed by `data`.
fn npy_with_shape(shape: &str, data: &[u8]) -> Vec<u8> {
    let mut dict = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out.extend(data);
    out
}

fn import_args<'a>(dir: &'a Path, codes: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["index", "import", s(dir), "--codes", s(codes)];
    args.extend(extra);
    args
}

#[test]
fn a_lying_npy_header_is_refused_before_anything_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    // The file: 192 bytes whose header claims 2^37 rows of 8 bytes (1 TiB).
    let liar = tmp.path().join("liar.npy");
    let bytes = npy_with_shape("(137438953472, 8)", &[0; 64]);
    assert_eq!(bytes.len(), 192);
    std::fs::write(&liar, bytes).unwrap();
    let err = fails(&import_args(&dir, &liar, &[]), 1);
    assert!(
        err.contains("liar.npy") && err.contains("137438953472 rows") && err.contains("truncated"),
        "{err}"
    );
    let err = fails(&["query", s(&dir), "--codes", s(&liar), "--top-k", "1"], 1);
    assert!(
        err.contains("liar.npy") && err.contains("truncated"),
        "{err}"
    );
    // A header longer than the file.
    let long = tmp.path().join("long.npy");
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend(u32::MAX.to_le_bytes());
    std::fs::write(&long, bytes).unwrap();
    let err = fails(&import_args(&dir, &long, &[]), 1);
    assert!(err.contains("long.npy") && err.contains("header"), "{err}");
    // Nothing was opened for writing, so nothing needs recovery and a read-only open works.
    assert_eq!(len_of(&dir), 0);
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
}

#[test]
fn every_key_is_checked_before_the_first_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    ok(&["index", "create", s(&dir), "--bits", "32"]);
    let codes_path = tmp.path().join("c.npy");
    write_codes(&codes_path, &clustered(&mut rng(4), 32, 120, 3, 0.1));
    // Row 60 holds a key of 17 MiB, more than an item holds: with batches of 50, the first batch
    // must not be committed before the key is found.
    let keys = tmp.path().join("k.txt");
    let mut text: String = (0..59).map(|i| format!("k{i}\n")).collect();
    text.push_str(&"x".repeat(17 << 20));
    text.push('\n');
    text.extend((60..120).map(|i| format!("k{i}\n")));
    std::fs::write(&keys, text).unwrap();
    let err = fails(
        &import_args(
            &dir,
            &codes_path,
            &["--keys", s(&keys), "--batch-size", "50"],
        ),
        1,
    );
    assert!(err.contains("k.txt") && err.contains("line 60"), "{err}");
    assert_eq!(len_of(&dir), 0);
    // A line that is not UTF-8 is named the same way.
    let mut bytes: Vec<u8> = (0..120)
        .flat_map(|i| format!("k{i}\n").into_bytes())
        .collect();
    bytes[4] = 0xff;
    std::fs::write(&keys, bytes).unwrap();
    let err = fails(&import_args(&dir, &codes_path, &["--keys", s(&keys)]), 1);
    assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");
    assert_eq!(len_of(&dir), 0);
}

#[test]
fn an_interrupted_import_resumes_and_a_finished_one_is_not_repeated() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, codes_path) = (tmp.path().join("idx"), tmp.path().join("c.npy"));
    let codes = clustered(&mut rng(8), 64, 60_000, 50, 0.1);
    write_codes(&codes_path, &codes);
    let keys_path = tmp.path().join("k.txt");
    let keys: Vec<String> = (0..codes.len()).map(|i| format!("row {i}")).collect();
    std::fs::write(&keys_path, keys.join("\n")).unwrap();
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    let args = import_args(
        &dir,
        &codes_path,
        &["--keys", s(&keys_path), "--batch-size", "1000", "--quiet"],
    );
    // A file size limit stops the import partway, at a commit's write: the write fails (EFBIG)
    // as on a full disk, after some batches committed.
    let stopped = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1500; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_milan"))
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "{err}");
    let partial = Index::open(&dir).unwrap().len();
    assert!(
        partial > 0 && partial < codes.len() as u64 && partial.is_multiple_of(1000),
        "{partial}: {err}"
    );

    // Another import in between takes the next ids, so the resumed rows' ids start after them.
    let other = tmp.path().join("other.npy");
    write_codes(&other, &clustered(&mut rng(9), 64, 5, 1, 0.1));
    ok(&import_args(&dir, &other, &[]));

    let out = milan(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "resuming the import of {} at row {partial}",
            s(&codes_path)
        )),
        "{stderr}"
    );
    let total = codes.len() as u64 + 5;
    assert!(
        stdout.contains(&format!("(ids {}..={})", partial + 5, total - 1))
            && stdout.contains(&format!(
                "rows 0..{partial} were imported before, the first as id 0"
            )),
        "{stdout}"
    );
    let index = Index::open(&dir).unwrap();
    assert_eq!(index.len(), total, "{stderr}");
    assert!(index.verify().unwrap().is_ok());
    let reader = index.reader().unwrap();
    for row in (0..codes.len() as u64).step_by(499) {
        let id = if row < partial { row } else { row + 5 };
        assert_eq!(reader.code(id).unwrap(), codes[row as usize], "row {row}");
        assert_eq!(
            reader.item(id).unwrap().unwrap().key.as_deref(),
            Some(keys[row as usize].as_str())
        );
    }
    drop(reader);
    drop(index);

    // Once finished, the same import is not repeated; --again repeats it on purpose.
    let stdout = ok(&args);
    assert!(
        stdout.contains("60000 rows, the first as id 0") && stdout.contains("nothing to do"),
        "{stdout}"
    );
    assert_eq!(len_of(&dir), total);
    let mut again = args.clone();
    again.push("--again");
    ok(&again);
    assert_eq!(len_of(&dir), total + codes.len() as u64);
}

#[test]
fn keys_that_are_not_plain_text_round_trip_through_export_and_import() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let keys = [
        Some("plain.png"),
        Some("two\nlines.png"),
        None,
        Some("C:\\photos\\a.png"),
        Some("a \\n that is text, and a\r\nbreak"),
        Some("\u{1b}[2Jclear.png"),
    ];
    let codes = clustered(&mut rng(2), 16, keys.len(), 2, 0.2);
    {
        let index = Index::builder(16).create(&source).unwrap();
        let mut writer = index.writer().unwrap();
        for (code, key) in codes.iter().zip(keys) {
            let item = Item {
                key: key.map(str::to_string),
                ..Item::default()
            };
            writer.add(code, item).unwrap();
        }
        writer.commit().unwrap();
    }
    let (codes_out, keys_out) = (tmp.path().join("c.npy"), tmp.path().join("k.txt"));
    ok(&[
        "index",
        "export",
        s(&source),
        "--codes",
        s(&codes_out),
        "--keys",
        s(&keys_out),
    ]);
    assert_eq!(
        std::fs::read_to_string(&keys_out).unwrap().lines().count(),
        keys.len()
    );
    let copy = tmp.path().join("copy");
    ok(&["index", "create", s(&copy), "--bits", "16"]);
    ok(&import_args(&copy, &codes_out, &["--keys", s(&keys_out)]));
    let index = Index::open_read_only(&copy).unwrap();
    let reader = index.reader().unwrap();
    for (id, (code, key)) in codes.iter().zip(keys).enumerate() {
        assert_eq!(&reader.code(id as u64).unwrap(), code);
        assert_eq!(
            reader
                .item(id as u64)
                .unwrap()
                .unwrap_or_default()
                .key
                .as_deref(),
            key,
            "id {id}"
        );
    }
}

#[test]
fn outputs_aimed_at_the_index_or_an_input_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, codes_path) = (tmp.path().join("idx"), tmp.path().join("c.npy"));
    write_codes(&codes_path, &clustered(&mut rng(5), 32, 50, 2, 0.1));
    ok(&["index", "create", s(&dir), "--bits", "32"]);
    ok(&import_args(&dir, &codes_path, &[]));
    let db = dir.join(milan::format::DATABASE_FILE);
    let sneaky = tmp.path().join("elsewhere/../idx/milan.redb");
    for output in [&db, &sneaky, &dir.join("new.npy")] {
        let err = fails(&["index", "export", s(&dir), "--codes", s(output)], 1);
        assert!(err.contains("inside the index directory"), "{err}");
    }
    let ok_codes = tmp.path().join("ok.npy");
    let export = |codes: &Path, keys: &Path| {
        fails(
            &[
                "index",
                "export",
                s(&dir),
                "--codes",
                s(codes),
                "--keys",
                s(keys),
            ],
            1,
        )
    };
    // A keys file inside the index, directly or through a link whose target does not exist yet
    // (writing through it would create the file inside the index).
    let err = export(&ok_codes, &db);
    assert!(err.contains("inside the index directory"), "{err}");
    let dangling = tmp.path().join("dangling.txt");
    std::os::unix::fs::symlink(dir.join("planted.txt"), &dangling).unwrap();
    let err = export(&ok_codes, &dangling);
    assert!(err.contains("inside the index directory"), "{err}");
    assert!(!dir.join("planted.txt").exists());
    // One path for both outputs would keep only the keys.
    let err = export(&ok_codes, &ok_codes);
    assert!(err.contains("would overwrite the input"), "{err}");
    // Refused before anything was written.
    assert!(!ok_codes.exists());
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
    assert_eq!(len_of(&dir), 50);
}
