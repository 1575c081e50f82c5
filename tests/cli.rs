//! The `milan` binary end to end: exit statuses, JSON output, import and export round trips, and
//! refusals of bad input that leave the index as it was.

use std::path::Path;
use std::process::Command;

use milan::OpenError;
use milan::{Code, Index};
use ndarray::Array2;

use crate::util::*;

#[test]
fn create_import_query_export_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, codes_path, keys_path) = (
        tmp.path().join("idx"),
        tmp.path().join("c.npy"),
        tmp.path().join("k.txt"),
    );
    let codes = clustered(&mut rng(4), 64, 3000, 30, 0.1);
    write_codes(&codes_path, &codes);
    let keys: String = (0..codes.len()).map(|i| format!("img/{i}.png\n")).collect();
    std::fs::write(&keys_path, &keys).unwrap();
    assert!(ok(&[
        "index",
        "create",
        s(&dir),
        "--bits",
        "64",
        "--substrings",
        "4"
    ])
    .contains("4 substrings"));
    ok(&[
        "index",
        "import",
        s(&dir),
        "--codes",
        s(&codes_path),
        "--keys",
        s(&keys_path),
        "--batch-size",
        "700",
    ]);
    assert_eq!(len_of(&dir), 3000);
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));

    let live: Vec<(u64, Code)> = codes
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, c)| (i as u64, c))
        .collect();
    let out = ok(&[
        "query",
        s(&dir),
        "--code",
        &codes[5].to_hex(),
        "--top-k",
        "7",
        "--json",
    ]);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["query"], 0);
    let expected = brute_top_k(&live, &codes[5], 7);
    let results = line["results"].as_array().unwrap();
    assert_eq!(results.len(), 7);
    for (got, want) in results.iter().zip(&expected) {
        assert_eq!(got["id"].as_u64().unwrap(), want.id);
        assert_eq!(got["distance"].as_u64().unwrap(), u64::from(want.distance));
        assert_eq!(got["key"].as_str().unwrap(), format!("img/{}.png", want.id));
    }

    let queries_path = tmp.path().join("q.npy");
    write_codes(&queries_path, &codes[100..110]);
    let out = ok(&[
        "query",
        s(&dir),
        "--codes",
        s(&queries_path),
        "--radius",
        "6",
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["query"].as_u64().unwrap(), i as u64);
        let ids: Vec<u64> = line["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = brute_radius(&live, &codes[100 + i], 6)
            .iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(ids, want);
    }
    let by_id = ok(&["query", s(&dir), "--id", "42", "--top-k", "1", "--json"]);
    assert!(by_id.contains("\"id\":42,\"distance\":0"), "{by_id}");
    assert!(ok(&["query", s(&dir), "--id", "42", "--top-k", "2"]).contains("img/42.png"));

    ok(&[
        "index",
        "delete",
        s(&dir),
        "--id",
        "1",
        "--id",
        "2",
        "--id",
        "1",
    ]);
    assert_eq!(len_of(&dir), 2998);
    let err = fails(&["index", "delete", s(&dir), "--id", "3", "--id", "1"], 1);
    assert!(
        err.contains("no item with id 1") && err.contains("nothing deleted"),
        "{err}"
    );
    assert_eq!(len_of(&dir), 2998);

    let (out_codes, out_keys) = (tmp.path().join("out.npy"), tmp.path().join("out.txt"));
    ok(&[
        "index",
        "export",
        s(&dir),
        "--codes",
        s(&out_codes),
        "--keys",
        s(&out_keys),
    ]);
    let copy = tmp.path().join("copy");
    ok(&["index", "create", s(&copy), "--bits", "64"]);
    ok(&[
        "index",
        "import",
        s(&copy),
        "--codes",
        s(&out_codes),
        "--keys",
        s(&out_keys),
    ]);
    let (again_codes, again_keys) = (tmp.path().join("again.npy"), tmp.path().join("again.txt"));
    ok(&[
        "index",
        "export",
        s(&copy),
        "--codes",
        s(&again_codes),
        "--keys",
        s(&again_keys),
    ]);
    assert_eq!(
        std::fs::read(&out_codes).unwrap(),
        std::fs::read(&again_codes).unwrap()
    );
    assert_eq!(
        std::fs::read(&out_keys).unwrap(),
        std::fs::read(&again_keys).unwrap()
    );
    assert!(!std::fs::read_to_string(&out_keys)
        .unwrap()
        .contains("img/1.png\n"));

    assert!(ok(&["index", "optimize", s(&dir), "--substrings", "3"]).contains("4 -> 3 substrings"));
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["index", "info", s(&dir), "--json"])).unwrap();
    assert_eq!(info["substrings"], 3);
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1_naming_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    fails(&["index", "create", s(tmp.path())], 2);
    fails(&["query", s(tmp.path()), "--top-k", "3"], 2);
    fails(
        &[
            "query",
            s(tmp.path()),
            "--code",
            "00",
            "--id",
            "1",
            "--top-k",
            "3",
        ],
        2,
    );
    let missing = tmp.path().join("missing");
    let err = fails(&["index", "info", s(&missing)], 1);
    assert!(
        err.contains("no such directory") && err.contains("missing"),
        "{err}"
    );
    let err = fails(&["index", "check", s(tmp.path())], 1);
    assert!(err.contains("not a milan index"), "{err}");
    for sub in [
        "create", "import", "export", "info", "check", "delete", "optimize",
    ] {
        assert!(ok(&["index", sub, "--help"]).contains("Usage"));
    }
    assert!(ok(&["query", "--help"]).contains("--radius"));
    assert!(ok(&["bench", "search", "--help"]).contains("--top-k"));
}

#[test]
fn bad_imports_and_queries_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    ok(&["index", "create", s(&dir), "--bits", "32"]);
    let floats = tmp.path().join("f.npy");
    ndarray_npy::write_npy(&floats, &Array2::<f32>::zeros((4, 4))).unwrap();
    let err = fails(&["index", "import", s(&dir), "--codes", s(&floats)], 1);
    assert!(err.contains("f.npy") && err.contains("uint8"), "{err}");
    let rank3 = tmp.path().join("r.npy");
    ndarray_npy::write_npy(&rank3, &ndarray::Array3::<u8>::zeros((2, 2, 4))).unwrap();
    let err = fails(&["index", "import", s(&dir), "--codes", s(&rank3)], 1);
    assert!(err.contains("r.npy"), "{err}");
    let wide = tmp.path().join("w.npy");
    write_codes(&wide, &clustered(&mut rng(1), 64, 5, 1, 0.1));
    let err = fails(&["index", "import", s(&dir), "--codes", s(&wide)], 1);
    assert!(
        err.contains("64-bit codes") && err.contains("32-bit"),
        "{err}"
    );
    let good = tmp.path().join("g.npy");
    write_codes(&good, &clustered(&mut rng(1), 32, 5, 1, 0.1));
    let keys = tmp.path().join("k.txt");
    std::fs::write(&keys, "a\nb\n").unwrap();
    let err = fails(
        &[
            "index",
            "import",
            s(&dir),
            "--codes",
            s(&good),
            "--keys",
            s(&keys),
        ],
        1,
    );
    assert!(
        err.contains("has 2 lines") && err.contains("5 codes"),
        "{err}"
    );
    assert_eq!(len_of(&dir), 0);

    ok(&["index", "import", s(&dir), "--codes", s(&good)]);
    let err = fails(
        &["query", s(&dir), "--code", "00112233", "--radius", "33"],
        1,
    );
    assert!(err.contains("larger than the code length"), "{err}");
    let err = fails(&["query", s(&dir), "--code", "00112233", "--top-k", "0"], 1);
    assert!(err.contains("k must be at least 1"), "{err}");
    let err = fails(&["query", s(&dir), "--code", "0011", "--top-k", "1"], 1);
    assert!(err.contains("16 bits") && err.contains("32-bit"), "{err}");
    let err = fails(&["query", s(&dir), "--id", "77", "--top-k", "1"], 1);
    assert!(err.contains("no item with id 77"), "{err}");
    let err = fails(&["index", "create", s(&dir), "--bits", "32"], 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(len_of(&dir), 5);
}

#[test]
fn a_killed_import_keeps_whole_batches_and_stays_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, codes_path) = (tmp.path().join("idx"), tmp.path().join("c.npy"));
    let codes = clustered(&mut rng(8), 64, 60_000, 50, 0.1);
    write_codes(&codes_path, &codes);
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    let import = [
        "index",
        "import",
        s(&dir),
        "--codes",
        s(&codes_path),
        "--batch-size",
        "1000",
        "--quiet",
    ];
    // Let some batches commit; wherever the kill lands, only whole batches may remain.
    kill_after(&import, std::time::Duration::from_millis(400));
    // A read-only open cannot recover a killed writer's file, and says so; a writable one does.
    if let Err(err) = Index::open_read_only(&dir) {
        assert!(
            matches!(err, milan::Error::Open(OpenError::NeedsRecovery { .. })),
            "{err}"
        );
    }
    assert_whole_batches(&mut Index::open(&dir).unwrap(), &codes, 1000);
    // The same command again finishes the job: every row once, in row order.
    ok(&import);
    let index = Index::open_read_only(&dir).unwrap();
    assert_eq!(index.len(), codes.len() as u64);
    let reader = index.reader().unwrap();
    for id in (0..codes.len() as u64).step_by(997) {
        assert_eq!(reader.code(id).unwrap(), codes[id as usize]);
    }
}

#[test]
fn a_closed_output_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, codes_path) = (tmp.path().join("idx"), tmp.path().join("c.npy"));
    write_codes(&codes_path, &clustered(&mut rng(2), 16, 500, 3, 0.1));
    ok(&["index", "create", s(&dir), "--bits", "16"]);
    ok(&["index", "import", s(&dir), "--codes", s(&codes_path)]);
    // Text, and JSON lines (written through serde_json, whose error wraps the I/O error).
    for args in [
        vec!["index", "check", s(&dir)],
        vec![
            "query",
            s(&dir),
            "--code",
            "0000",
            "--top-k",
            "500",
            "--json",
        ],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_milan"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn another_process_writing_the_index_is_named_and_nothing_breaks() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, codes_path) = (tmp.path().join("idx"), tmp.path().join("c.npy"));
    write_codes(&codes_path, &clustered(&mut rng(3), 32, 100, 3, 0.1));
    ok(&["index", "create", s(&dir), "--bits", "32"]);
    ok(&["index", "import", s(&dir), "--codes", s(&codes_path)]);
    // This process holds a write transaction with adds in it.
    let index = Index::open(&dir).unwrap();
    let mut writer = index.writer().unwrap();
    writer
        .add(&Code::from_hex("0000ffff").unwrap(), milan::Item::default())
        .unwrap();
    // Reads answer from the last commit without waiting.
    let hits = ok(&["query", s(&dir), "--code", "00000000", "--top-k", "200"]);
    assert!(hits.starts_with("query 0: 100 results"), "{hits}");
    // Writes wait for their turn, say so and whom they wait for, and give up at the timeout.
    let pid = std::process::id().to_string();
    for args in [
        vec!["index", "import", s(&dir), "--codes", s(&codes_path)],
        vec!["index", "check", s(&dir)],
        vec!["index", "delete", s(&dir), "--id", "0"],
    ] {
        let args = [vec!["--lock-timeout", "0.3"], args].concat();
        let err = fails(&args, 1);
        assert!(
            err.contains("waiting for another writer")
                && err.contains(&pid)
                && err.contains("waited 0.3 s")
                && err.contains("--lock-timeout"),
            "{args:?}: {err}"
        );
    }
    let err = fails(&["index", "check", s(&dir), "--lock-timeout=-1"], 2);
    assert!(err.contains("--lock-timeout -1"), "{err}");
    drop(writer);
    assert_eq!(len_of(&dir), 100);
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
}

#[test]
fn a_head_too_large_for_its_file_is_refused_by_its_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("h.head");
    for dim in ["70000", "4000000000"] {
        let err = fails(
            &[
                "head",
                "init",
                "--lsh",
                "--bits",
                "1024",
                "--dim",
                dim,
                "--out",
                s(&out),
            ],
            1,
        );
        assert!(
            err.contains(&format!("1024-bit head for {dim}-dimensional"))
                && err.contains("fewer bits"),
            "{err}"
        );
        assert!(!err.contains("error: :"), "{err}");
    }
    assert!(!out.exists());
}

/// `milan head init` for the tiny model: the cheapest command that loads ONNX Runtime.
fn head_init_with(exe: &Path, cwd: &Path, ort_lib: Option<&str>) -> std::process::Output {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_extractor.onnx");
    let mut command = Command::new(exe);
    command
        .current_dir(cwd)
        .env_remove("MILAN_ORT_LIB")
        .env_remove("ORT_DYLIB_PATH")
        .args(["head", "init", "--lsh", "--bits", "16", "--out", "h.head"])
        .args(["--model", s(&model)]);
    if let Some(lib) = ort_lib {
        command.env("MILAN_ORT_LIB", lib);
    }
    // The copied binary is busy ("text file busy") while a child that another test thread
    // forks still holds the copy's write descriptor, until that child execs: try again.
    for _ in 0..50 {
        match command.output() {
            Err(err) if err.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            result => return result.unwrap(),
        }
    }
    command.output().unwrap()
}

#[test]
fn onnx_runtime_is_found_from_the_executable_and_the_file_checked_is_the_file_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let project_lib =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".onnxruntime/cpu/libonnxruntime.so");
    // A copy of the binary elsewhere looks beside itself, not where it was built.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let copy = bin.join("milan");
    std::fs::copy(env!("CARGO_BIN_EXE_milan"), &copy).unwrap();
    // A library planted in a folder above it (think of /tmp) is not searched.
    let planted = tmp.path().join(".onnxruntime/cpu");
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::write(planted.join("libonnxruntime.so"), b"planted").unwrap();
    let out = head_init_with(&copy, tmp.path(), None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not found") && err.contains(s(&bin)), "{err}");
    // The library names its setting, the CLI's hint the flag.
    assert!(
        err.contains("ExtractorOptions::ort_library") && err.contains("hint: `make setup`"),
        "{err}"
    );
    assert!(err.contains("--ort-lib"), "{err}");
    assert!(
        !err.contains("planted") && !err.contains(s(&planted)),
        "{err}"
    );
    assert!(
        !err.contains(".onnxruntime/cpu/libonnxruntime.so (the project"),
        "{err}"
    );
    assert!(!err.contains(s(project_lib.parent().unwrap())), "{err}");
    // ... and finds a library put beside it.
    std::os::unix::fs::symlink(&project_lib, bin.join("libonnxruntime.so")).unwrap();
    let out = head_init_with(&copy, tmp.path(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A bare relative name is the file in the current directory, both checked and loaded: a file
    // there that is not a library fails by its full path instead of loading another one.
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(cwd.join("libonnxruntime.so"), b"not a library").unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_milan"));
    let out = head_init_with(exe, &cwd, Some("libonnxruntime.so"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}: cannot load ONNX Runtime",
            cwd.join("libonnxruntime.so").display()
        )),
        "{err}"
    );
    std::fs::remove_file(cwd.join("libonnxruntime.so")).unwrap();
    std::os::unix::fs::symlink(&project_lib, cwd.join("libonnxruntime.so")).unwrap();
    let out = head_init_with(exe, &cwd, Some("libonnxruntime.so"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bench_search_reports_tail_latencies_and_resident_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, codes_path, queries_path) = (
        tmp.path().join("idx"),
        tmp.path().join("c.npy"),
        tmp.path().join("q.npy"),
    );
    let codes = clustered(&mut rng(41), 64, 3000, 10, 0.1);
    write_codes(&codes_path, &codes);
    write_codes(&queries_path, &codes[..50]);
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    ok(&[
        "index",
        "import",
        s(&dir),
        "--codes",
        s(&codes_path),
        "--quiet",
    ]);
    let args = [
        "bench",
        "search",
        s(&dir),
        "--codes",
        s(&queries_path),
        "--top-k",
        "5",
        "--radius",
        "2",
        "--json",
    ];
    let report = json_output(&args, &milan(&args), 0);
    for timing in [&report["top_k"], &report["radius"][0]] {
        let (median, p99, max) = (
            timing["median_us"].as_f64().unwrap(),
            timing["p99_us"].as_f64().unwrap(),
            timing["max_us"].as_f64().unwrap(),
        );
        assert!(median <= p99 && p99 <= max, "{timing}");
        assert!(timing["scan_p99_us"].as_f64().unwrap() > 0.0, "{timing}");
    }
    let before = report["rss_before_open_bytes"].as_u64().unwrap();
    let after = report["rss_bytes"].as_u64().unwrap();
    assert!(before > 0 && after >= before, "{before} {after}");
}

#[test]
fn a_write_from_a_command_line_that_is_not_unicode_works() {
    use std::os::unix::ffi::OsStrExt;
    // The writer describes itself from its command line for waiting processes: an argument
    // that is not Unicode must not make the write fail.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(std::ffi::OsStr::from_bytes(b"idx-\xfe"));
    let output = Command::new(env!("CARGO_BIN_EXE_milan"))
        .args(["index", "create"])
        .arg(&dir)
        .args(["--bits", "64"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let holder = std::fs::read_to_string(dir.join(milan::format::WRITER_LOCK_FILE)).unwrap();
    assert!(holder.contains("idx-\u{fffd}"), "{holder}");
}

#[test]
fn bench_search_follow_sees_another_process_import() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name);
    let (dir, ready, stop) = (path("idx"), path("ready"), path("stop"));
    let codes = clustered(&mut rng(43), 64, 8000, 10, 0.1);
    write_codes(&path("base.npy"), &codes[..3000]);
    write_codes(&path("more.npy"), &codes[3000..]);
    write_codes(&path("q.npy"), &codes[..20]);
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    let import = |codes: &str, batch: &str| {
        ok(&[
            "index",
            "import",
            s(&dir),
            "--codes",
            s(&path(codes)),
            "--batch-size",
            batch,
            "--quiet",
        ])
    };
    import("base.npy", "100000");
    let mut child = Command::new(env!("CARGO_BIN_EXE_milan"))
        .args([
            "bench",
            "search",
            s(&dir),
            "--codes",
            s(&path("q.npy")),
            "--top-k",
            "5",
            "--radius",
            "4",
            "--follow",
            "--ready-file",
            s(&ready),
            "--stop-file",
            s(&stop),
            "--duration",
            "120",
            "--latencies",
            s(&path("latencies.tsv")),
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while !ready.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "bench search ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Five commits; the last files all 8,000 codes in new tables (a full reload for readers).
    import("more.npy", "1000");
    std::fs::write(&stop, b"").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let run = &report["run"];
    assert_eq!(run["follow"], true, "{report}");
    // The first query begun after the stop file appeared searched the imported codes too (one
    // reader for the whole run would have kept the 3,000 of the open).
    assert_eq!(run["last_codes"], 8000, "{report}");
    assert!(run["reader"]["max_us"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["top_k"]["recall"], 1.0, "{report}");
    assert_eq!(report["radius"][0]["recall"], 1.0, "{report}");
    // One line per search and per fresh reader.
    let latencies = std::fs::read_to_string(path("latencies.tsv")).unwrap();
    let count = |label: &str| latencies.lines().filter(|l| l.starts_with(label)).count();
    let queries = report["queries"].as_u64().unwrap() as usize;
    assert_eq!(count("top-5\t"), queries, "{latencies}");
    assert_eq!(count("radius-4\t"), queries, "{latencies}");
    assert_eq!(count("reader\t"), 2 * queries, "{latencies}");
}
