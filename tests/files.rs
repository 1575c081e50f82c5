//! Files as a hostile or unlucky user leaves them: link loops, FIFOs, devices, truncated images,
//! odd names, outputs aimed at the index or an input, and writes that fail halfway.

#![cfg(unix)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use image::{DynamicImage, Rgb, RgbImage};
use milan::dataset::Dataset;

use crate::images::{lsh_head, lsh_image_index, temp_image_set, tiny_model, write_image_set};
use crate::util::*;

/// Runs `milan` and fails the test, instead of hanging it, when the command does not finish
/// within `seconds`.
fn milan_within(args: &[&str], seconds: u64) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_milan"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(Duration::from_secs(seconds)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // Only the process this test started, by its id.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("milan {args:?} did not finish within {seconds} s");
        }
    }
}

/// Runs `milan` within 60 seconds and checks that it exits with `status`.
fn milan_exits(args: &[&str], status: i32) -> Output {
    let output = milan_within(args, 60);
    assert_eq!(output.status.code(), Some(status), "{}", stderr(&output));
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// A 320 x 240 picture with detail everywhere, so that a third of its file is a third of its
/// pixels.
fn detailed(seed: u32) -> RgbImage {
    RgbImage::from_fn(320, 240, |x, y| {
        Rgb([
            ((x * 7 + seed) % 256) as u8,
            ((y * 5 + seed * 3) % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    })
}

/// `image` saved as `path` (format by extension), and the file's bytes.
fn save(image: &RgbImage, path: &Path) -> Vec<u8> {
    DynamicImage::ImageRgb8(image.clone()).save(path).unwrap();
    std::fs::read(path).unwrap()
}

/// A new folder `root/name` holding `file`, a `detailed(seed)` picture.
fn picture_folder(root: &Path, name: &str, file: &str, seed: u32) -> PathBuf {
    let folder = root.join(name);
    std::fs::create_dir(&folder).unwrap();
    save(&detailed(seed), &folder.join(file));
    folder
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// A 16-bit LSH head for the tiny model and an empty image index, under `root`.
fn empty_image_index(root: &Path) -> PathBuf {
    let (head, index) = (root.join("lsh.head"), root.join("idx"));
    lsh_head(&head, "16", &["--model", s(&tiny_model())]);
    ok(&[
        "index",
        "create",
        s(&index),
        "--model",
        s(&tiny_model()),
        "--head",
        s(&head),
    ]);
    index
}

/// Every stored key of the index at `dir`.
fn keys(dir: &Path) -> Vec<String> {
    let index = milan::Index::open_read_only(dir).unwrap();
    let reader = index.reader().unwrap();
    let ids: Vec<u64> = reader.ids().collect();
    ids.into_iter()
        .filter_map(|id| reader.item(id).unwrap().and_then(|item| item.key))
        .collect()
}

/// The user nobody, whom the permission tests run `milan` as when they run as root.
const NOBODY: u32 = 65534;

/// Runs `milan` with `args` as a user whom file permissions bind. Root reads every folder
/// whatever its mode, so as root the command runs as nobody (through `setpriv`, after `tree`,
/// which holds everything it reads and writes, is given to nobody); otherwise as this user.
/// `None` (the test is skipped, and says so) when running as root without `setpriv`.
pub(crate) fn milan_unprivileged(tree: &Path, args: &[&str]) -> Option<Output> {
    // SAFETY: geteuid only reads the calling process's effective user id.
    let as_root = unsafe { libc::geteuid() } == 0;
    let mut command = if as_root {
        let setpriv = Command::new("setpriv").arg("--version").output();
        if !setpriv.is_ok_and(|output| output.status.success()) {
            eprintln!("skipped: running as root, and setpriv is missing to run as another user");
            return None;
        }
        give_to_nobody(tree);
        let mut command = Command::new("setpriv");
        command.args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
        ]);
        command.arg(env!("CARGO_BIN_EXE_milan"));
        command
    } else {
        Command::new(env!("CARGO_BIN_EXE_milan"))
    };
    Some(command.args(args).stdin(Stdio::null()).output().unwrap())
}

/// Gives `root` and everything under it to nobody (links themselves, not their targets).
fn give_to_nobody(root: &Path) {
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        std::os::unix::fs::lchown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
}

/// A folder that nobody but root can list or enter (mode 000) while this lives; its mode is
/// given back when dropped, so that the temporary tree can be removed.
pub(crate) struct Unlistable(PathBuf);

impl Unlistable {
    pub(crate) fn new(folder: &Path) -> Unlistable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o000)).unwrap();
        Unlistable(folder.to_path_buf())
    }
}

impl Drop for Unlistable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn a_folder_that_cannot_be_listed_is_skipped_by_name_and_the_walk_goes_on() {
    let (tmp, images, files) = temp_image_set(2);
    let locked = images.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::copy(&files[0], locked.join("inside.png")).unwrap();
    let index = empty_image_index(tmp.path());
    let data = tmp.path().join("data");
    let _locked = Unlistable::new(&locked);

    // index add -r: the folder is named and counted (exit 3); the other images are added.
    let args = [
        "index",
        "add",
        s(&index),
        s(&images),
        "-r",
        "--json",
        "--quiet",
    ];
    let Some(output) = milan_unprivileged(tmp.path(), &args) else {
        return;
    };
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["added"], 4, "{report}");
    assert_eq!(
        report["failed_by_reason"]["unlistable_folder"], 1,
        "{report}"
    );
    assert_eq!(report["failed"][0]["path"], s(&locked), "{report}");
    assert_eq!(report["failed"].as_array().unwrap().len(), 1, "{report}");
    let mut stored = keys(&index);
    stored.sort();
    let mut expected: Vec<&str> = files.iter().map(|file| s(file)).collect();
    expected.sort();
    assert_eq!(stored, expected);

    // In text, the folder is named with why.
    let args = ["index", "add", s(&index), s(&images), "-r", "--quiet"];
    let output = milan_unprivileged(tmp.path(), &args).unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let said = stderr(&output);
    assert!(
        said.contains(&format!("skipped {}: cannot list the folder", s(&locked))),
        "{said}"
    );

    // extract --images names it, goes on, and counts it as skipped.
    let model = tiny_model();
    let args = extract_args(&model, &images, &data);
    let output = milan_unprivileged(tmp.path(), &args).unwrap();
    let said = stderr(&output);
    assert!(matches!(output.status.code(), Some(3)), "{said}");
    assert!(said.contains(s(&locked)), "{said}");
    assert_eq!(Dataset::load(&data).unwrap().keys.len(), 4);
}

#[test]
fn link_loops_are_walked_once_and_each_file_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = picture_folder(tmp.path(), "d", "x.png", 1);
    symlink(".", d.join("a")).unwrap();
    symlink(".", d.join("b")).unwrap();
    symlink(".", d.join("self")).unwrap();
    // A link to another file and a link to a folder kept elsewhere: followed, each file once.
    symlink("x.png", d.join("y.png")).unwrap();
    let elsewhere = picture_folder(tmp.path(), "elsewhere", "z.png", 2);
    symlink(&elsewhere, d.join("photos")).unwrap();
    symlink(&elsewhere, d.join("photos-again")).unwrap();
    let index = empty_image_index(tmp.path());

    let output = milan_exits(&["index", "add", s(&index), s(&d), "-r", "--json"], 0);
    let report = json(&output);
    assert_eq!(report["added"], 2, "{report}");
    // The link to x.png is the same file: not read a second time, so not even a duplicate.
    assert_eq!(report["duplicates"], 0, "{report}");
    let said = stderr(&output);
    for link in ["/a:", "/b:", "/self:"] {
        assert_eq!(said.matches(link).count(), 1, "{link}: {said}");
    }
    assert_eq!(said.matches("a loop of links").count(), 3, "{said}");
    assert!(
        said.contains("photos-again") && said.contains("already walked"),
        "{said}"
    );
    let mut stored = keys(&index);
    stored.sort();
    assert_eq!(
        stored,
        [s(&d.join("photos/z.png")), s(&d.join("x.png"))],
        "{said}"
    );

    // extract --images walks the same way.
    let data = tmp.path().join("data");
    milan_exits(&extract_args(&tiny_model(), &d, &data), 0);
    assert_eq!(Dataset::load(&data).unwrap().keys.len(), 2);
}

#[test]
fn fifos_sockets_and_devices_are_skipped_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = picture_folder(tmp.path(), "images", "a.png", 3);
    mkfifo(&folder.join("b.png"));
    let _socket = std::os::unix::net::UnixListener::bind(folder.join("c.png")).unwrap();
    symlink("/dev/zero", folder.join("zero.jpg")).unwrap();
    let index = empty_image_index(tmp.path());

    let output = milan_exits(&["index", "add", s(&index), s(&folder), "--json"], 3);
    let report = json(&output);
    assert_eq!(report["added"], 1, "{report}");
    assert_eq!(report["failed_by_reason"]["not_a_file"], 3, "{report}");
    let failed = report["failed"].to_string();
    for what in ["a FIFO", "a socket", "a character device"] {
        assert!(failed.contains(what), "{what}: {failed}");
    }

    // Named on the command line, a FIFO is skipped all the same, by name and reason.
    let fifo = tmp.path().join("named.png");
    mkfifo(&fifo);
    let output = milan_exits(&["index", "add", s(&index), s(&fifo)], 3);
    let said = stderr(&output);
    assert!(
        said.contains("named.png") && said.contains("not a regular file (a FIFO)"),
        "{said}"
    );
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("1 not_a_file"), "{out}");
    // As a query image, it is refused by name.
    let output = milan_exits(
        &["query", s(&index), "--image", s(&fifo), "--top-k", "1"],
        1,
    );
    assert!(stderr(&output).contains("named.png"), "{}", stderr(&output));
}

#[test]
fn keys_naming_devices_or_fifos_show_no_picture() {
    let (tmp, images, _) = temp_image_set(2);
    let (_, index) = lsh_image_index(tmp.path(), &images, &[]);
    let fifo = tmp.path().join("fifo.png");
    mkfifo(&fifo);
    let odd = ["/dev/zero", "/dev/urandom", s(&fifo)];
    let first = {
        let opened = milan::Index::open(&index).unwrap();
        let code = opened.reader().unwrap().code(0).unwrap();
        let mut writer = opened.writer().unwrap();
        let mut ids = Vec::new();
        for key in odd {
            let item = milan::Item {
                key: Some(key.to_string()),
                ..Default::default()
            };
            ids.push(writer.add(&code, item).unwrap());
        }
        writer.commit().unwrap();
        ids[0]
    };
    let page = tmp.path().join("r.html");
    milan_exits(
        &[
            "query",
            s(&index),
            "--id",
            &first.to_string(),
            "--radius",
            "0",
            "--html",
            s(&page),
        ],
        0,
    );
    let html = std::fs::read_to_string(&page).unwrap();
    // The query and its three odd results (at distance 0 of themselves) show no picture.
    assert!(html.matches("no image").count() >= 4, "{html}");

    // The same keys in a DATA folder's evaluation report.
    let (features, labels) = clustered_features(5, 2, 6, 16, 4, 0.3, 1.0);
    // The odd keys sort last in their class, so that they fall in the test split.
    let keys: Vec<String> = (0..labels.len())
        .map(|i| match odd.get(i) {
            Some(key) => key.to_string(),
            None => format!("/0missing{i:02}"),
        })
        .collect();
    let data = tmp.path().join("data");
    Dataset {
        features,
        labels: labels.iter().map(|l| l - 100).collect(),
        classes: vec!["a".into(), "b".into()],
        keys,
        extractor: None,
    }
    .save(&data)
    .unwrap();
    let dim_head = tmp.path().join("dim.head");
    lsh_head(&dim_head, "16", &["--dim", "16"]);
    let report = tmp.path().join("eval.html");
    milan_exits(
        &[
            "eval",
            "--data",
            s(&data),
            "--head",
            s(&dim_head),
            "--train-fraction",
            "0.5",
            "--html",
            s(&report),
        ],
        0,
    );
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("no image"));
}

#[test]
fn truncated_images_are_reported_unless_lenient() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = picture_folder(tmp.path(), "images", "whole.jpg", 4);
    let jpeg = save(&detailed(5), &folder.join("cut.jpg"));
    std::fs::write(folder.join("cut.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    let png = save(&detailed(6), &folder.join("cut.png"));
    std::fs::write(folder.join("cut.png"), &png[..png.len() / 3]).unwrap();
    let index = empty_image_index(tmp.path());

    let output = milan_exits(&["index", "add", s(&index), s(&folder), "--json"], 3);
    let report = json(&output);
    assert_eq!(report["added"], 1, "{report}");
    assert_eq!(report["failed_by_reason"]["truncated"], 2, "{report}");
    let output = milan_within(&["index", "add", s(&index), s(&folder)], 60);
    let said = stderr(&output);
    assert!(
        said.contains("cut.jpg: truncated image") && said.contains("end-of-image marker"),
        "{said}"
    );
    assert!(said.contains("cut.png: truncated image"), "{said}");

    // --lenient takes the JPEG on purpose; the PNG's decoder cannot decode it either way.
    let output = milan_exits(
        &["index", "add", s(&index), s(&folder), "--json", "--lenient"],
        3,
    );
    let report = json(&output);
    assert_eq!(
        (&report["added"], &report["already_indexed"]),
        (&1.into(), &1.into()),
        "{report}"
    );
    assert_eq!(report["failed_by_reason"]["truncated"], 1, "{report}");

    // extract reports them the same way, and takes --lenient too.
    let class = tmp.path().join("set/one");
    std::fs::create_dir_all(&class).unwrap();
    for file in ["whole.jpg", "cut.jpg", "cut.png"] {
        std::fs::copy(folder.join(file), class.join(file)).unwrap();
    }
    let model = tiny_model();
    let extract = |out: &str, lenient: bool| {
        let out = tmp.path().join(out);
        let mut args = extract_args(&model, class.parent().unwrap(), &out).to_vec();
        if lenient {
            args.push("--lenient");
        }
        let output = milan_exits(&args, 3);
        (Dataset::load(&out).unwrap().keys.len(), stderr(&output))
    };
    let (rows, said) = extract("strict", false);
    assert_eq!(rows, 1, "{said}");
    assert_eq!(said.matches("truncated image").count(), 2, "{said}");
    assert_eq!(extract("lenient", true).0, 2);
}

#[test]
fn keys_round_trip_exactly_and_reach_the_terminal_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let class = tmp.path().join("set/odd");
    std::fs::create_dir_all(&class).unwrap();
    let newline = class.join("two\nlines.png");
    let escape = class.join("\u{1b}[2Jclear.png");
    let backslash = class.join("back\\nslash.png");
    let not_utf8 = class.join(OsStr::from_bytes(b"bad\xff.png"));
    let plain = class.join("plain.png");
    for (i, path) in [&newline, &escape, &backslash, &not_utf8, &plain]
        .iter()
        .enumerate()
    {
        save(&detailed(10 + i as u32), path);
    }
    let index = empty_image_index(tmp.path());

    let output = milan_exits(&["index", "add", s(&index), s(&class), "--json"], 3);
    let report = json(&output);
    assert_eq!(report["added"], 4, "{report}");
    assert_eq!(report["failed_by_reason"]["name_not_utf8"], 1, "{report}");
    let mut stored = keys(&index);
    stored.sort();
    let odd = [s(&newline), s(&escape), s(&backslash)];
    let mut expected = vec![s(&newline), s(&escape), s(&backslash), s(&plain)];
    expected.sort();
    assert_eq!(stored, expected);

    // Text output: control characters escaped, the name that is not UTF-8 shown lossily.
    let output = milan_exits(&["index", "add", s(&index), s(&class)], 3);
    let said = stderr(&output);
    assert!(
        said.contains("bad\u{fffd}.png: file name is not valid UTF-8"),
        "{said}"
    );
    let out = ok(&["query", s(&index), "--id", "0", "--radius", "16"]);
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(out.contains("\\u{1b}[2Jclear.png"), "{out:?}");
    assert!(out.contains("two\\nlines.png"), "{out:?}");
    assert_eq!(out.lines().count(), 5, "{out:?}");
    // JSON output keeps the keys exact.
    let out = ok(&["query", s(&index), "--id", "0", "--radius", "16", "--json"]);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let mut found: Vec<&str> = line["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["key"].as_str().unwrap())
        .collect();
    found.sort();
    assert_eq!(found, expected);

    // A DATA folder holds them one per line and loads back exactly.
    let data = tmp.path().join("data");
    let output = milan_exits(
        &extract_args(&tiny_model(), class.parent().unwrap(), &data),
        3,
    );
    let said = stderr(&output);
    assert!(said.contains("file name is not valid UTF-8"), "{said}");
    assert!(!said.contains('\u{1b}'), "{said:?}");
    let listing = std::fs::read_to_string(data.join("paths.txt")).unwrap();
    assert_eq!(listing.lines().count(), 4, "{listing}");
    let dataset = Dataset::load(&data).unwrap();
    let mut loaded = dataset.keys.clone();
    loaded.sort();
    assert_eq!(loaded, expected);
    // Split lists name them escaped the same way, and evaluation exports them so.
    let (train, test) = (tmp.path().join("train.txt"), tmp.path().join("test.txt"));
    let list = |keys: &[&str]| -> String {
        keys.iter()
            .map(|key| format!("{}\n", milan::text::escape_line(key)))
            .collect()
    };
    std::fs::write(&train, list(&[s(&plain)])).unwrap();
    std::fs::write(&test, list(&odd)).unwrap();
    let head = tmp.path().join("h.head");
    lsh_head(&head, "16", &["--dim", "16"]);
    let export = tmp.path().join("export");
    ok(&[
        "eval",
        "--data",
        s(&data),
        "--head",
        s(&head),
        "--train-split",
        s(&train),
        "--test-split",
        s(&test),
        "--export",
        s(&export),
    ]);
    let exported = std::fs::read_to_string(export.join("paths.txt")).unwrap();
    let mut exported: Vec<String> = exported
        .lines()
        .map(|line| milan::text::unescape_line(line).into_owned())
        .collect();
    exported.sort();
    let mut odd = odd.to_vec();
    odd.sort();
    assert_eq!(exported, odd);
}

#[test]
fn outputs_never_overwrite_the_index_or_an_input() {
    let (tmp, images, good) = temp_image_set(3);
    let (head, index) = lsh_image_index(tmp.path(), &images, &["--label-from-dir"]);
    let database = index.join("milan.redb");
    let before = std::fs::read(&database).unwrap();
    let err = fails(&query_page_args(&index, "3", &database), 1);
    assert!(err.contains("inside the index directory"), "{err}");
    let err = fails(
        &[
            "query",
            s(&index),
            "--image",
            s(&good[0]),
            "--top-k",
            "3",
            "--html",
            s(&good[0]),
        ],
        1,
    );
    assert!(err.contains("would overwrite the input"), "{err}");
    assert_eq!(std::fs::read(&database).unwrap(), before);
    assert!(ok(&["index", "check", s(&index)]).contains("ok"));

    let data = tmp.path().join("data");
    ok(&extract_args(&tiny_model(), &images, &data));
    let dim_head = tmp.path().join("dim.head");
    lsh_head(&dim_head, "16", &["--model", s(&tiny_model())]);
    let labels = std::fs::read(data.join("labels.npy")).unwrap();
    for (flag, target) in [
        ("--html", data.join("features.npy")),
        ("--html", dim_head.clone()),
        ("--export", data.clone()),
    ] {
        let err = fails(
            &[
                "eval",
                "--data",
                s(&data),
                "--head",
                s(&dim_head),
                flag,
                s(&target),
            ],
            1,
        );
        assert!(
            err.contains("would overwrite the input"),
            "{flag} {target:?}: {err}"
        );
    }
    assert_eq!(std::fs::read(data.join("labels.npy")).unwrap(), labels);
    // An index as the data: nothing may be written inside it.
    let err = fails(
        &[
            "eval",
            "--data",
            s(&index),
            "--head",
            s(&head),
            "--html",
            s(&index.join("eval.html")),
        ],
        1,
    );
    assert!(err.contains("inside the index directory"), "{err}");
    // extract: the DATA folder's files over its manifest.
    let manifest = tmp.path().join("listing/paths.txt");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(&manifest, format!("{},red\n", s(&good[0]))).unwrap();
    let err = fails(
        &[
            "extract",
            "--model",
            s(&tiny_model()),
            "--manifest",
            s(&manifest),
            "--out",
            s(manifest.parent().unwrap()),
        ],
        1,
    );
    assert!(err.contains("would overwrite the input"), "{err}");
    assert!(std::fs::read_to_string(&manifest)
        .unwrap()
        .ends_with(",red\n"));
}

/// The arguments of `milan query` for the `top_k` nearest of item 0, as a page at `page`.
fn query_page_args<'a>(index: &'a Path, top_k: &'a str, page: &'a Path) -> [&'a str; 8] {
    [
        "query",
        s(index),
        "--id",
        "0",
        "--top-k",
        top_k,
        "--html",
        s(page),
    ]
}

/// Runs `milan args` with files limited to 1 block (SIGXFSZ ignored, so that a write past the
/// limit fails with EFBIG instead of killing the process): every output write fails halfway.
fn with_tiny_file_limit(args: &[&str]) -> Output {
    let mut command = vec![
        "trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\"".to_string(),
        env!("CARGO_BIN_EXE_milan").to_string(),
    ];
    command.extend(args.iter().map(|a| a.to_string()));
    Command::new("sh")
        .arg("-c")
        .args(&command)
        .output()
        .unwrap()
}

/// The names in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_failed_write_leaves_the_old_file_and_no_partial_one() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    // Enough images that each file of their DATA folder is over the limit.
    write_image_set(&images, 12);
    let (_, index) = lsh_image_index(tmp.path(), &images, &[]);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let page = out.join("page.html");
    std::fs::write(&page, "old page").unwrap();
    let query = query_page_args(&index, "5", &page);
    let output = with_tiny_file_limit(&query);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("page.html"), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&page).unwrap(), "old page");
    assert_eq!(listing(&out), ["page.html"]);
    // A folder in the way: refused, left as it was.
    let folder = out.join("folder.html");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("inside"), "kept").unwrap();
    let err = fails(&query_page_args(&index, "5", &folder), 1);
    assert!(err.contains("folder.html"), "{err}");
    assert_eq!(listing(&out), ["folder.html", "page.html"]);
    assert_eq!(listing(&folder), ["inside"]);
    // Without the limit, the page replaces the old one.
    ok(&query);
    assert!(std::fs::read_to_string(&page)
        .unwrap()
        .starts_with("<!DOCTYPE html>"));

    // A DATA folder: each file is whole, old or new, never cut.
    let data = tmp.path().join("data");
    let model = tiny_model();
    let extract = extract_args(&model, &images, &data);
    ok(&extract);
    let before: Vec<Vec<u8>> = listing(&data)
        .iter()
        .map(|name| std::fs::read(data.join(name)).unwrap())
        .collect();
    let output = with_tiny_file_limit(&extract);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        listing(&data),
        [
            "classes.txt",
            "extractor.json",
            "features.npy",
            "labels.npy",
            "paths.txt"
        ]
    );
    let after: Vec<Vec<u8>> = listing(&data)
        .iter()
        .map(|name| std::fs::read(data.join(name)).unwrap())
        .collect();
    assert_eq!(before, after);
    Dataset::load(&data).unwrap();
}
