//! Many processes on one index: reads that run through a large import and through a writer
//! killed mid-import, two image adds racing over the same files, handles of this process held
//! open while the command line writes, and writers of this process and of the command line
//! taking turns.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use milan::{Code, Hit, Index, Item};
use rand::RngExt;

use crate::images::{lsh_head, tiny_model, write_image_set};
use crate::util::*;

/// A `milan` process running in the background; killed if the test ends before it does.
struct Background {
    child: Option<Child>,
    args: Vec<String>,
}

impl Background {
    /// Starts `milan args`, its standard output and error piped.
    fn start(args: &[&str]) -> Background {
        let child = Command::new(env!("CARGO_BIN_EXE_milan"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Background {
            child: Some(child),
            args: args.iter().map(|arg| arg.to_string()).collect(),
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    fn running(&mut self) -> bool {
        self.child().try_wait().unwrap().is_none()
    }

    /// Kills the process with SIGKILL.
    fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits for the process to end, whatever its exit status.
    fn output(mut self) -> Output {
        self.child.take().unwrap().wait_with_output().unwrap()
    }

    /// Waits for the process to end; checks that it exited with 0.
    fn finish(self) -> Output {
        let args = self.args.clone();
        let output = self.output();
        assert_eq!(
            output.status.code(),
            Some(0),
            "milan {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Calls `ready` until it holds, failing the test after `seconds`.
fn wait_for(what: &str, seconds: u64, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !ready() {
        assert!(Instant::now() < deadline, "waited {seconds} s for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The radius of the import tests' query.
const RADIUS: u32 = 2;

/// `n` random 64-bit codes, every 50th of them within [`RADIUS`] of `query`: the answer of a
/// radius query then tells which rows a snapshot holds.
fn planted_codes(seed: u64, n: usize, query: u64) -> Vec<Code> {
    let mut rng = rng(seed);
    (0..n)
        .map(|row| {
            if row % 50 == 25 {
                let (a, b) = (rng.random_range(0..64), rng.random_range(0..64));
                Code::from(query ^ (1u64 << a) ^ (1u64 << b))
            } else {
                Code::from(rng.random::<u64>())
            }
        })
        .collect()
}

/// Under `tmp`, an index `idx` holding `initial` codes planted around a query, and a codes file
/// of `big` more planted codes for an import in batches of `batch`: returns the index, the file,
/// the query and what the index holds after each of that import's commits. Seeds `seed` (the
/// query), `seed + 1` and `seed + 2` (the codes).
fn planted_index(
    tmp: &Path,
    seed: u64,
    initial: usize,
    big: usize,
    batch: u64,
) -> (PathBuf, PathBuf, u64, Commits) {
    let dir = tmp.join("idx");
    let query = rng(seed).random::<u64>();
    let first = planted_codes(seed + 1, initial, query);
    let rows = planted_codes(seed + 2, big, query);
    let (first_path, rows_path) = (tmp.join("first.npy"), tmp.join("rows.npy"));
    write_codes(&first_path, &first);
    write_codes(&rows_path, &rows);
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    ok(&["index", "import", s(&dir), "--codes", s(&first_path)]);
    let commits = Commits::new([first, rows].concat(), query, initial, batch);
    (dir, rows_path, query, commits)
}

/// What an index fed by one import holds after each of its commits: `initial` codes, then the
/// import's rows in batches of `batch` (id `i` holds `codes[i]`).
struct Commits {
    codes: Vec<Code>,
    query: Code,
    /// Every code within [`RADIUS`] of the query, by distance then id.
    within: Vec<Hit>,
    initial: u64,
    batch: u64,
}

impl Commits {
    fn new(codes: Vec<Code>, query: u64, initial: usize, batch: u64) -> Commits {
        let live: Vec<(u64, Code)> = codes
            .iter()
            .cloned()
            .enumerate()
            .map(|(id, code)| (id as u64, code))
            .collect();
        let query = Code::from(query);
        let within = brute_radius(&live, &query, RADIUS);
        Commits {
            codes,
            query,
            within,
            initial: initial as u64,
            batch,
        }
    }

    fn total(&self) -> u64 {
        self.codes.len() as u64
    }

    /// The number of codes after each commit, the initial ones first.
    fn boundaries(&self) -> impl Iterator<Item = u64> + '_ {
        (self.initial..self.total())
            .step_by(self.batch as usize)
            .chain([self.total()])
    }

    #[track_caller]
    fn assert_boundary(&self, len: u64, what: &str) {
        assert!(
            self.boundaries().any(|n| n == len),
            "{what}: {len} codes is not a commit of the import ({} + a multiple of {})",
            self.initial,
            self.batch
        );
    }

    /// Which commit a radius query's answer belongs to: the number of codes that snapshot held.
    #[track_caller]
    fn commit_of_hits(&self, hits: &[Hit]) -> u64 {
        let hits_of = |len: u64| -> Vec<Hit> {
            self.within
                .iter()
                .filter(|hit| hit.id < len)
                .copied()
                .collect()
        };
        self.boundaries()
            .find(|&len| hits_of(len) == hits)
            .unwrap_or_else(|| panic!("{hits:?} is the answer of no commit"))
    }

    /// `milan query DIR --code Q --radius RADIUS --json`.
    fn query_args(&self, dir: &Path) -> Vec<String> {
        [
            "query",
            s(dir),
            "--code",
            &self.query.to_hex(),
            "--radius",
            &RADIUS.to_string(),
            "--json",
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// Runs the radius query; checks that it succeeded and answered from one whole commit;
    /// returns that commit's number of codes.
    #[track_caller]
    fn query(&self, dir: &Path) -> u64 {
        let args = self.query_args(dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.commit_of_query(&args, &milan(&args))
    }

    #[track_caller]
    fn commit_of_query(&self, args: &[&str], output: &Output) -> u64 {
        let line = json_output(args, output, 0);
        let hits: Vec<Hit> = line["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|hit| Hit {
                id: hit["id"].as_u64().unwrap(),
                distance: hit["distance"].as_u64().unwrap() as u32,
            })
            .collect();
        self.commit_of_hits(&hits)
    }

    /// Exports the index to `out`; checks that it holds the codes of one whole commit, in id
    /// order; returns their number.
    #[track_caller]
    fn export(&self, dir: &Path, out: &Path) -> u64 {
        ok(&["index", "export", s(dir), "--codes", s(out)]);
        let exported: ndarray::Array2<u8> = ndarray_npy::read_npy(out).unwrap();
        let len = exported.nrows() as u64;
        self.assert_boundary(len, "index export");
        for (id, row) in exported.rows().into_iter().enumerate() {
            assert_eq!(
                row.as_slice().unwrap(),
                self.codes[id].as_bytes(),
                "exported id {id}"
            );
        }
        len
    }
}

/// The `len` that `milan index info --json` reports.
fn info_len(dir: &Path) -> u64 {
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["index", "info", s(dir), "--json"])).unwrap();
    info["len"].as_u64().unwrap()
}

#[test]
fn reads_during_a_large_import_see_whole_commits_in_order() {
    // Queries, info, export and bench run again and again while another process imports
    // 200,000 codes in commits of 1,000: each succeeds and sees one whole commit, never a part
    // of one, and never an older commit than the read before it saw.
    let tmp = tempfile::tempdir().unwrap();
    let (initial, big, batch) = (3_000, 200_000, 1_000);
    let (dir, rows_path, query, commits) = planted_index(tmp.path(), 11, initial, big, batch);
    let queries_path = tmp.path().join("queries.npy");
    write_codes(&queries_path, &planted_codes(14, 10, query));
    let export_path = tmp.path().join("export.npy");
    let bench = [
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

    let mut import = Background::start(&[
        "index",
        "import",
        s(&dir),
        "--codes",
        s(&rows_path),
        "--batch-size",
        &batch.to_string(),
        "--quiet",
    ]);
    let (mut seen, mut rounds, mut during, mut benched) = (initial as u64, 0, 0, false);
    while import.running() {
        let len = match rounds % 4 {
            0 => info_len(&dir),
            2 => commits.export(&dir, &export_path),
            _ => commits.query(&dir),
        };
        commits.assert_boundary(len, "a read during the import");
        assert!(len >= seen, "a read saw {len} codes after one saw {seen}");
        seen = len;
        if len > initial as u64 && len < commits.total() {
            during += 1;
            if !benched {
                // Every search checked against a linear scan of the same snapshot.
                let report = json_output(&bench, &milan(&bench), 0);
                let codes = report["codes"].as_u64().unwrap();
                commits.assert_boundary(codes, "bench search");
                assert!(codes >= seen, "bench search saw {codes} codes after {seen}");
                assert_eq!(report["top_k"]["recall"], 1.0, "{report}");
                assert_eq!(report["radius"][0]["recall"], 1.0, "{report}");
                seen = codes;
                benched = true;
            }
        }
        rounds += 1;
    }
    let output = import.finish();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("imported {big} codes")),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // The import commits 200 times: reads that never met one of its commits would prove nothing.
    assert!(
        during > 0,
        "none of {rounds} reads ran between the import's first and last commits"
    );

    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
    assert_eq!(info_len(&dir), commits.total());
    assert_eq!(commits.query(&dir), commits.total());
    assert_eq!(commits.export(&dir, &export_path), commits.total());
}

/// `n` 24 x 24 PNG pictures of noise drawn from `seed` in `dir`.
fn noise_pictures(dir: &Path, seed: u64, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rng(seed);
    (0..n)
        .map(|i| {
            let path = dir.join(format!("noise{i:03}.png"));
            image::RgbImage::from_fn(24, 24, |_, _| image::Rgb(rng.random::<[u8; 3]>()))
                .save(&path)
                .unwrap();
            path
        })
        .collect()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn content_hash(path: &Path) -> [u8; 32] {
    *blake3::hash(&std::fs::read(path).unwrap()).as_bytes()
}

#[test]
fn two_adds_over_the_same_images_index_each_content_once() {
    // Two `index add` runs at once, committing every 4 images, over folders that share files
    // and contents: both succeed, every distinct content is indexed exactly once (the run that
    // commits it second counts it as already indexed), and the index checks.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let shared = root.join("shared");
    write_image_set(&shared, 15);
    let (a, b) = (root.join("a"), root.join("b"));
    let a_files = noise_pictures(&a, 1, 12);
    noise_pictures(&b, 2, 12);
    // The same contents under other paths: some of a's pictures, and shared's first pictures
    // drawn again (the set draws the same pictures for the same numbers).
    std::fs::create_dir(b.join("from_a")).unwrap();
    for file in &a_files[..4] {
        std::fs::copy(file, b.join("from_a").join(file.file_name().unwrap())).unwrap();
    }
    write_image_set(&b.join("again"), 3);
    let given = |folder: &Path| files_under(&shared).len() + files_under(folder).len();
    let distinct: HashSet<[u8; 32]> = [&shared, &a, &b]
        .into_iter()
        .flat_map(|folder| files_under(folder))
        .map(|file| content_hash(&file))
        .collect();
    // 64 files, 10 of them copies.
    assert_eq!(
        (files_under(root).len(), distinct.len()),
        (64, 54),
        "the copies differ"
    );

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
    let add = |folder: &Path| {
        Background::start(&[
            "index",
            "add",
            s(&index),
            s(&shared),
            s(folder),
            "-r",
            "--json",
            "--quiet",
            "--batch-size",
            "4",
            "--commit-every",
            "4",
            "--threads",
            "1",
        ])
    };
    let (first, second) = (add(&a), add(&b));
    let reports = [(first.finish(), &a), (second.finish(), &b)].map(|(output, folder)| {
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let count = |field: &str| report[field].as_u64().unwrap() as usize;
        // Each file given is added, or skipped as indexed already or met before in the run.
        assert_eq!(
            count("added") + count("already_indexed") + count("duplicates"),
            given(folder),
            "{report}"
        );
        assert_eq!(report["failed"].as_array().unwrap().len(), 0, "{report}");
        count("added")
    });
    assert_eq!(reports[0] + reports[1], distinct.len(), "{reports:?}");

    let opened = Index::open_read_only(&index).unwrap();
    assert_eq!(opened.len(), distinct.len() as u64);
    let reader = opened.reader().unwrap();
    assert_eq!(reader.content_hashes().unwrap(), distinct);
    assert_eq!(
        reader.content_hash_groups().unwrap(),
        Vec::<Vec<u64>>::new()
    );
    // Each item's key names a file of its content.
    let mut keys = HashSet::new();
    for id in reader.ids() {
        let item = reader.item(id).unwrap().unwrap();
        let key = item.key.unwrap();
        assert_eq!(
            item.content_hash,
            Some(content_hash(Path::new(&key))),
            "{key}"
        );
        assert!(keys.insert(key));
    }
    drop(reader);
    assert!(opened.verify().unwrap().is_ok());
    assert!(ok(&["index", "check", s(&index)]).contains("ok"));
}

/// Whether the storage engine refuses a plain read-only open of the database at `path`, which
/// a killed writer left to recover.
fn left_to_recover(path: &Path) -> bool {
    let mut builder = redb::Builder::new();
    builder.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
    match builder.open_read_only(path) {
        Ok(_) => false,
        Err(redb::DatabaseError::RepairAborted) => true,
        Err(err) => panic!("{}: {err}", path.display()),
    }
}

#[test]
fn reads_go_on_through_a_writer_killed_mid_import() {
    // A loop of read-only queries runs while an import is killed with SIGKILL between its
    // commits: every query succeeds and sees a whole commit, before the kill and after it.
    // Killed again with nothing reading, the file needs recovery, which a read-only query does
    // itself, with no writable command first. The index checks and the import resumes.
    let tmp = tempfile::tempdir().unwrap();
    let (initial, big, batch) = (2_000, 300_000, 1_000);
    let (dir, rows_path, _, commits) = planted_index(tmp.path(), 31, initial, big, batch);
    let commits = Arc::new(commits);
    let import_args = [
        "index",
        "import",
        s(&dir),
        "--codes",
        s(&rows_path),
        "--batch-size",
        "1000",
        "--quiet",
    ];
    // Starts the import and kills it once it has committed `batches` batches past `len`
    // codes.
    let kill_import = |len: u64, batches: u64| {
        let mut import = Background::start(&import_args);
        wait_for("the import's commits", 60, || {
            info_len(&dir) >= len + batches * batch
        });
        assert!(import.running(), "the import finished before it was killed");
        import.kill();
    };

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let reads = std::thread::spawn({
        let (stop, done, commits) = (stop.clone(), done.clone(), commits.clone());
        let args = commits.query_args(&dir);
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut outputs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                outputs.push(milan(&args));
                done.fetch_add(1, Ordering::Relaxed);
            }
            (
                args.iter().map(|arg| arg.to_string()).collect::<Vec<_>>(),
                outputs,
            )
        }
    });
    wait_for("the first query", 60, || done.load(Ordering::Relaxed) > 0);
    kill_import(initial as u64, 3);
    let killed_at = info_len(&dir);
    // Reads after the kill: the first of them (the count above) found the file as the killed
    // writer left it.
    let after_kill = done.load(Ordering::Relaxed);
    wait_for("queries after the kill", 60, || {
        done.load(Ordering::Relaxed) >= after_kill + 3
    });
    stop.store(true, Ordering::Relaxed);
    let (args, outputs) = reads.join().unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut seen = initial as u64;
    for output in &outputs {
        let len = commits.commit_of_query(&args, output);
        assert!(len >= seen, "a query saw {len} codes after one saw {seen}");
        seen = len;
    }
    assert_eq!(seen, killed_at);
    assert!(killed_at < commits.total());

    // Killed again with no reader about: the storage engine alone would refuse to read the
    // file, but a read-only command recovers it first.
    let db = dir.join(milan::format::DATABASE_FILE);
    kill_import(killed_at, 2);
    assert!(
        left_to_recover(&db),
        "the killed import left nothing to recover"
    );
    let (before, killed_at) = (killed_at, commits.query(&dir));
    assert!(killed_at >= before + 2 * batch && killed_at < commits.total());
    assert!(!left_to_recover(&db));
    let opened = Index::open_read_only(&dir).unwrap();
    assert_eq!(opened.len(), killed_at);
    drop(opened);
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
    assert_eq!(
        assert_whole_batches(&mut Index::open(&dir).unwrap(), &commits.codes, batch),
        killed_at
    );

    // The same import run again resumes after the last commit and ends with every row once.
    let output = milan(&import_args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "resuming the import of {} at row {}",
            s(&rows_path),
            killed_at - initial as u64
        )),
        "{stderr}"
    );
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
    assert_eq!(commits.query(&dir), commits.total());
    let mut index = Index::open(&dir).unwrap();
    assert_eq!(
        assert_whole_batches(&mut index, &commits.codes, batch),
        commits.total()
    );
}

/// Checks every answer of `reader` against a brute-force scan of `live`.
#[track_caller]
fn assert_reader(reader: &milan::Reader, live: &[(u64, Code)], queries: &[Code]) {
    assert_eq!(reader.len(), live.len() as u64);
    assert!(reader.ids().eq(live.iter().map(|(id, _)| *id)));
    for (id, code) in live.iter().step_by(97) {
        assert_eq!(reader.code(*id).as_ref(), Some(code), "id {id}");
    }
    for query in queries {
        let search = reader.search(query).unwrap();
        assert_eq!(search.top_k(10).unwrap(), brute_top_k(live, query, 10));
        assert_eq!(search.within(6).unwrap(), brute_radius(live, query, 6));
    }
}

/// Checks that `index` is at the last commit, `live`: its length, and a new reader's answers.
#[track_caller]
fn assert_caught_up(index: &Index, live: &[(u64, Code)], queries: &[Code]) {
    assert_eq!(index.len(), live.len() as u64);
    assert_reader(&index.reader().unwrap(), live, queries);
}

#[test]
fn handles_held_open_follow_the_command_lines_commits() {
    // A read-only and a writable handle stay open in this process while the command line
    // imports, deletes and rebuilds the tables: none of it waits for them, each handle's next
    // reader and length show exactly those commits, readers taken before keep their snapshot,
    // and the writable handle's next add takes the id after the command line's.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let codes = clustered(&mut rng(41), 64, 5_000, 40, 0.08);
    let files = |name: &str, codes: &[Code], from: usize| {
        let (codes_path, keys_path) = (
            tmp.path().join(format!("{name}.npy")),
            tmp.path().join(format!("{name}.txt")),
        );
        write_codes(&codes_path, codes);
        let keys: String = (from..from + codes.len())
            .map(|row| format!("row {row}\n"))
            .collect();
        std::fs::write(&keys_path, keys).unwrap();
        (codes_path, keys_path)
    };
    let first = files("first", &codes[..3_000], 0);
    let second = files("second", &codes[3_000..], 3_000);
    let import = |(codes, keys): &(PathBuf, PathBuf), batch: &str| {
        ok(&[
            "--lock-timeout",
            "5",
            "index",
            "import",
            s(&dir),
            "--codes",
            s(codes),
            "--keys",
            s(keys),
            "--batch-size",
            batch,
        ]);
    };
    ok(&[
        "index",
        "create",
        s(&dir),
        "--bits",
        "64",
        "--substrings",
        "4",
    ]);
    import(&first, "1000");
    let mut live: Vec<(u64, Code)> = codes[..3_000]
        .iter()
        .cloned()
        .enumerate()
        .map(|(id, code)| (id as u64, code))
        .collect();
    let before = live.clone();
    let mut queries = vec![
        codes[10].clone(),
        codes[3_500].clone(),
        codes[4_999].clone(),
    ];
    let mut rng = rng(42);
    for _ in 0..3 {
        let centre = &codes[rng.random_range(0..5_000)];
        queries.push(near(&mut rng, centre, 0.05));
    }

    let read_only = Index::open_read_only(&dir).unwrap();
    let writable = Index::open(&dir).unwrap();
    let (old_read_only, old_writable) = (read_only.reader().unwrap(), writable.reader().unwrap());
    import(&second, "700");
    ok(&[
        "--lock-timeout",
        "5",
        "index",
        "delete",
        s(&dir),
        "--id",
        "7",
        "--id",
        "3001",
        "--id",
        "4999",
    ]);
    live.extend(
        codes[3_000..]
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, code)| (3_000 + i as u64, code)),
    );
    live.retain(|(id, _)| ![7, 3001, 4999].contains(id));
    for index in [&read_only, &writable] {
        assert_caught_up(index, &live, &queries);
        let reader = index.reader().unwrap();
        assert_eq!(
            reader.item(3_500).unwrap().unwrap().key.as_deref(),
            Some("row 3500")
        );
        assert!(!reader.contains(7) && !reader.contains(4_999));
    }
    // The readers taken before still answer from the snapshot they were taken at.
    for old in [&old_read_only, &old_writable] {
        assert_reader(old, &before, &queries);
        assert_eq!(old.item(7).unwrap().unwrap().key.as_deref(), Some("row 7"));
        assert!(old.item(3_500).unwrap().is_none());
    }

    // The writable handle writes after the command line, with the next id.
    let mine = near(&mut rng, &codes[0], 0.05);
    let mut writer = writable.writer().unwrap();
    let id = writer.add(&mine, Item::default()).unwrap();
    writer.commit().unwrap();
    assert_eq!(id, 5_000);
    live.push((id, mine));
    queries.push(live.last().unwrap().1.clone());
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["index", "info", s(&dir), "--json"])).unwrap();
    assert_eq!(
        (info["len"].as_u64(), info["next_id"].as_u64()),
        (Some(4_998), Some(5_001))
    );
    assert_caught_up(&read_only, &live, &queries);
    for old in [&old_read_only, &old_writable] {
        assert_reader(old, &before, &queries);
    }
    drop((old_read_only, old_writable));

    // Tables rebuilt by another process: the handles read the index again in full.
    ok(&["index", "optimize", s(&dir), "--substrings", "2"]);
    for index in [&read_only, &writable] {
        assert_caught_up(index, &live, &queries);
        assert_eq!(index.substrings(), 2);
    }
    let mut writer = writable.writer().unwrap();
    assert!(writer.delete(3_500).unwrap());
    let id = writer.add(&codes[7], Item::default()).unwrap();
    writer.commit().unwrap();
    assert_eq!(id, 5_001);
    live.retain(|(id, _)| *id != 3_500);
    live.push((id, codes[7].clone()));
    assert_caught_up(&read_only, &live, &queries);
    drop((read_only, writable));
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
    assert_eq!(len_of(&dir), live.len() as u64);
}

#[test]
fn a_command_waits_for_this_processs_writer_and_then_finishes() {
    // While this process holds a write transaction, `index import` says it waits for this
    // process by id; once the transaction commits, the import goes on and takes the ids after
    // it, and the index holds both.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let codes = clustered(&mut rng(51), 64, 2_503, 20, 0.1);
    let (first_path, rows_path) = (tmp.path().join("first.npy"), tmp.path().join("rows.npy"));
    write_codes(&first_path, &codes[..500]);
    write_codes(&rows_path, &codes[503..]);
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    ok(&["index", "import", s(&dir), "--codes", s(&first_path)]);

    let index = Index::open(&dir).unwrap();
    let mut writer = index.writer().unwrap();
    for code in &codes[500..503] {
        writer.add(code, Item::default()).unwrap();
    }
    let mut import = Background::start(&[
        "--lock-timeout",
        "10",
        "index",
        "import",
        s(&dir),
        "--codes",
        s(&rows_path),
        "--batch-size",
        "500",
        "--quiet",
    ]);
    let (lines, said) = mpsc::channel();
    let stderr = BufReader::new(import.child().stderr.take().unwrap());
    let reading = std::thread::spawn(move || {
        for line in stderr.lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    let mut stderr = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match said.recv_timeout(left) {
            Ok(line) if line.contains("waiting for another writer") => break line,
            Ok(line) => stderr.push(line),
            Err(_) => panic!("the import never said it waits: {stderr:?}"),
        }
    };
    assert!(
        waiting.contains(&format!("(process {} (", std::process::id()))
            && waiting.contains(&format!("to finish with {}", s(&dir)))
            && waiting.contains("up to 10 s (--lock-timeout)"),
        "{waiting}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(import.running(), "the import did not wait for the writer");
    writer.commit().unwrap();

    let output = import.finish();
    reading.join().unwrap();
    stderr.extend(said.try_iter());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("(ids 503..=2502)"), "{stdout} {stderr:?}");
    assert_eq!(index.len(), 2_503);
    let reader = index.reader().unwrap();
    for (id, code) in codes.iter().enumerate() {
        assert_eq!(reader.code(id as u64).as_ref(), Some(code), "id {id}");
    }
    drop(reader);
    drop(index);
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
}

#[test]
fn optimize_succeeds_while_another_process_holds_a_reader() {
    // Readers never hold writers back: a reader held open in this process must not make the
    // command line's optimize fail. It commits the rebuilt tables and leaves the compaction,
    // which needs no reader open, for later, saying so; `index compact` does it then.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let codes = clustered(&mut rng(61), 64, 3_000, 30, 0.08);
    let codes_path = tmp.path().join("c.npy");
    write_codes(&codes_path, &codes);
    ok(&[
        "index",
        "create",
        s(&dir),
        "--bits",
        "64",
        "--substrings",
        "4",
    ]);
    ok(&["index", "import", s(&dir), "--codes", s(&codes_path)]);
    let live: Vec<(u64, Code)> = codes
        .iter()
        .cloned()
        .enumerate()
        .map(|(id, code)| (id as u64, code))
        .collect();
    let queries = &codes[..5];
    let held = Index::open_read_only(&dir).unwrap();
    let reader = held.reader().unwrap();
    let args = ["index", "optimize", s(&dir), "--substrings", "2"];
    let output = milan(&args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "milan {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("readers are open"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_reader(&reader, &live, queries);
    let err = fails(&["index", "compact", s(&dir)], 1);
    assert!(err.contains("readers are open"), "{err}");
    drop(reader);
    assert_caught_up(&held, &live, queries);
    assert_eq!(held.substrings(), 2);
    assert!(ok(&["index", "compact", s(&dir)]).contains("compacted"));
    assert_caught_up(&held, &live, queries);
}

/// Imports `rows` (written to `rows_path`) into the index in `dir` in batches of 1,000 in
/// another process, while this process adds `ours` in one transaction after the import's third
/// commit; returns the import's output and the id of our first code.
fn write_between_import_commits(
    dir: &Path,
    rows_path: &Path,
    rows: &[Code],
    ours: &[Code],
) -> (Output, u64) {
    write_codes(rows_path, rows);
    let import = Background::start(&[
        "index",
        "import",
        s(dir),
        "--codes",
        s(rows_path),
        "--batch-size",
        "1000",
        "--quiet",
    ]);
    let index = Index::open(dir).unwrap();
    wait_for("the import's commits", 60, || index.len() >= 3_000);
    let mut writer = index.writer().unwrap();
    let ids: Vec<u64> = ours
        .iter()
        .map(|code| writer.add(code, Item::default()).unwrap())
        .collect();
    writer.commit().unwrap();
    let first = ids[0];
    assert_eq!(ids, (first..first + ours.len() as u64).collect::<Vec<_>>());
    (import.finish(), first)
}

#[test]
fn a_writer_here_takes_its_turn_between_an_imports_commits() {
    // While another process imports in commits of 1,000, this process's writer gets its turn
    // between two of them: its adds take the ids after the import's last commit, the import's
    // next commits take the ids after them, and no id is handed out twice.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    let mut rng = rng(71);
    let rows: Vec<Code> = (0..200_000)
        .map(|_| Code::from(rng.random::<u64>()))
        .collect();
    let ours: Vec<Code> = (0..3).map(|_| Code::from(rng.random::<u64>())).collect();
    let (_, first) = write_between_import_commits(&dir, &tmp.path().join("rows.npy"), &rows, &ours);
    assert!(
        first.is_multiple_of(1_000) && first >= 3_000 && first < rows.len() as u64,
        "our adds took id {first}: not between two of the import's commits"
    );
    let index = Index::open(&dir).unwrap();
    assert_eq!(index.len(), rows.len() as u64 + 3);
    let reader = index.reader().unwrap();
    for (row, code) in rows.iter().enumerate().step_by(101) {
        let row = row as u64;
        let id = if row < first { row } else { row + 3 };
        assert_eq!(reader.code(id).as_ref(), Some(code), "row {row}");
    }
    for (id, code) in (first..).zip(&ours) {
        assert_eq!(reader.code(id).as_ref(), Some(code), "id {id}");
    }
    drop(reader);
    assert!(index.verify().unwrap().is_ok());
}

#[test]
fn an_import_interleaved_with_another_writer_reports_the_ids_it_took() {
    // The import's summary names the ids it took; with another writer's adds between its
    // commits, they are not the contiguous range it prints.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    let mut rng = rng(81);
    let rows: Vec<Code> = (0..100_000)
        .map(|_| Code::from(rng.random::<u64>()))
        .collect();
    let ours = [Code::from(rng.random::<u64>())];
    let (output, first) =
        write_between_import_commits(&dir, &tmp.path().join("rows.npy"), &rows, &ours);
    assert!(first < rows.len() as u64, "the import ended before our add");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let claimed = format!("(ids 0..={})", rows.len() - 1);
    // The last row took id 100,000: the printed range claims our id and leaves out that one.
    assert!(
        !stdout.contains(&claimed),
        "our add took id {first}, yet the import says: {stdout}"
    );
}

#[test]
fn an_import_stops_when_another_moves_its_progress() {
    // Another process importing the same codes file moves the import's progress record between
    // two of its commits: the import stops with a message saying so, keeping its whole
    // batches, rather than add rows that the other import may add too.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    ok(&["index", "create", s(&dir), "--bits", "64"]);
    let mut rng = rng(91);
    let rows: Vec<Code> = (0..200_000)
        .map(|_| Code::from(rng.random::<u64>()))
        .collect();
    let rows_path = tmp.path().join("rows.npy");
    write_codes(&rows_path, &rows);
    // The source's fingerprint, as `index import` computes it.
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"milan index import\0");
    let bytes = std::fs::read(&rows_path).unwrap();
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(&bytes);
    let source = *hasher.finalize().as_bytes();
    let import = Background::start(&[
        "index",
        "import",
        s(&dir),
        "--codes",
        s(&rows_path),
        "--batch-size",
        "1000",
        "--quiet",
    ]);
    let index = Index::open(&dir).unwrap();
    wait_for("the import's commits", 60, || index.len() >= 3_000);
    let mut writer = index.writer().unwrap();
    let stored = writer
        .import_progress(&source)
        .unwrap()
        .expect("the import records its progress");
    assert!(stored.committed < stored.rows, "the import ended first");
    writer.set_import_progress(milan::ImportProgress {
        committed: stored.committed + 1,
        ..stored
    });
    writer.commit().unwrap();
    let output = import.output();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another process is importing") && err.contains(s(&rows_path)),
        "{err}"
    );
    let len = index.len();
    assert!(
        len.is_multiple_of(1_000) && len < rows.len() as u64,
        "{len}"
    );
    assert!(ok(&["index", "check", s(&dir)]).contains("ok"));
}
